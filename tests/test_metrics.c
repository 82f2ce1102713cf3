/*
 * Metrics: the handler-time histogram, the throughput window, handler
 * timing in streams, and the Prometheus text exposition.
 */
#include "evs_test.h"
#include "metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* ------------------------------------------------------------------ */
/* Histogram                                                           */
/* ------------------------------------------------------------------ */

static void assert_near(uint64_t got, uint64_t want, const char *what)
{
    double err = got > want ? (double)(got - want) : (double)(want - got);
    cr_assert(err <= want / 16.0 + 1, "%s: %llu, want %llu within 6.25%%", what,
              (unsigned long long)got, (unsigned long long)want);
}

Test(metrics_hist, quantiles_are_within_a_sixteenth_and_count_sum_max_exact)
{
    evs__hist *h = calloc(1, sizeof(*h));
    uint64_t sum = 0;
    for (uint64_t v = 1; v <= 100000; v++) {
        evs__hist_add(h, v);
        sum += v;
    }
    evs_latency l;
    evs__hist_read(h, &l);
    cr_assert_eq(l.count, 100000);
    cr_assert_eq(l.sum_ns, sum);
    cr_assert_eq(l.max_ns, 100000);
    assert_near(l.p50_ns, 50000, "p50");
    assert_near(l.p90_ns, 90000, "p90");
    assert_near(l.p99_ns, 99000, "p99");
    free(h);
}

Test(metrics_hist, small_values_are_exact)
{
    evs__hist *h = calloc(1, sizeof(*h));
    for (int i = 0; i < 10; i++)
        evs__hist_add(h, 3);
    evs__hist_add(h, 7);
    evs_latency l;
    evs__hist_read(h, &l);
    cr_assert_eq(l.p50_ns, 3);
    cr_assert_eq(l.p90_ns, 3);
    cr_assert_eq(l.p99_ns, 7);
    cr_assert_eq(l.max_ns, 7);
    free(h);
}

Test(metrics_hist, huge_values_share_the_last_bucket_and_never_pass_the_max)
{
    evs__hist *h = calloc(1, sizeof(*h));
    evs__hist_add(h, (uint64_t)1 << 40);
    evs__hist_add(h, UINT64_MAX / 4);
    evs_latency l;
    evs__hist_read(h, &l);
    cr_assert_eq(l.count, 2);
    cr_assert_eq(l.max_ns, UINT64_MAX / 4);
    cr_assert(l.p99_ns <= l.max_ns);
    cr_assert(l.p50_ns >= (uint64_t)1 << 36);
    free(h);
}

Test(metrics_hist, empty_and_null_read_as_zeros)
{
    evs__hist *h = calloc(1, sizeof(*h));
    evs_latency l;
    memset(&l, 0xff, sizeof(l));
    evs__hist_read(h, &l);
    cr_assert_eq(l.count + l.p50_ns + l.p99_ns + l.max_ns + l.sum_ns, 0);
    memset(&l, 0xff, sizeof(l));
    evs__hist_read(NULL, &l);
    cr_assert_eq(l.count + l.p50_ns + l.p99_ns + l.max_ns + l.sum_ns, 0);
    free(h);
}

typedef struct adder {
    evs__hist *h;
    int        n;
} adder;

static void *add_many(void *arg)
{
    adder *a = arg;
    for (int i = 1; i <= a->n; i++)
        evs__hist_add(a->h, (uint64_t)i);
    return NULL;
}

Test(metrics_hist, concurrent_adds_lose_nothing)
{
    evs__hist *h = calloc(1, sizeof(*h));
    adder a = {h, 50000};
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, add_many, &a);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    evs_latency l;
    evs__hist_read(h, &l);
    cr_assert_eq(l.count, 200000);
    cr_assert_eq(l.sum_ns, 4ull * 50000 * 50001 / 2);
    cr_assert_eq(l.max_ns, 50000);
    free(h);
}

/* ------------------------------------------------------------------ */
/* Throughput window                                                   */
/* ------------------------------------------------------------------ */

Test(metrics_rate, rate_is_over_the_last_completed_interval)
{
    evs__rate r;
    evs__rate_init(&r);
    const int64_t sec = 1000000000;
    uint64_t c[EVS__RATE_COUNTERS] = {0, 0};
    double out[EVS__RATE_COUNTERS];
    evs__rate_sample(&r, 10 * sec, sec, c, out); /* first sample */
    cr_assert_eq(out[0], 0.0);
    c[0] = 500;
    c[1] = 50;
    evs__rate_sample(&r, 10 * sec + sec / 2, sec, c, out); /* too soon: since the first */
    cr_assert_float_eq(out[0], 1000.0, 1e-9);
    cr_assert_float_eq(out[1], 100.0, 1e-9);
    c[0] = 2000;
    evs__rate_sample(&r, 12 * sec, sec, c, out); /* new sample: 2000 over 2 s */
    cr_assert_float_eq(out[0], 1000.0, 1e-9);
    c[0] = 9000;
    evs__rate_sample(&r, 12 * sec + 1, sec, c, out); /* within the interval: unchanged */
    cr_assert_float_eq(out[0], 1000.0, 1e-9);
    evs__rate_sample(&r, 13 * sec, sec, c, out); /* 7000 in the last second */
    cr_assert_float_eq(out[0], 7000.0, 1e-9);
    evs__rate_sample(&r, 14 * sec, sec, c, out); /* idle second */
    cr_assert_float_eq(out[0], 0.0, 1e-9);
    evs__rate_destroy(&r);
}

/* ------------------------------------------------------------------ */
/* Streams                                                             */
/* ------------------------------------------------------------------ */

static int busy_handler(const evs_event *ev, void *user)
{
    (void)ev;
    (void)user;
    int64_t end = evs__now_mono_ns() + 2000; /* 2 us of work */
    while (evs__now_mono_ns() < end) {
    }
    return 0;
}

static void publish_n(evs_stream *s, int n)
{
    for (int i = 0; i < n; i++) {
        evs_event *ev;
        ASSERT_RC(evs_event_create(&ev, EVS_TYPE_MESSAGE, "m", "x", 1), 0);
        ASSERT_RC(evs_stream_publish_move(s, ev, NULL), 0);
    }
}

Test(metrics_stream, handler_time_is_measured_per_stream_and_subscription)
{
    evs_stream_opts o = {.metrics = EVS_METRICS_SUBS};
    evs_stream *s;
    ASSERT_RC(evs_stream_create(&s, &o), 0);
    evs_sub *a, *b;
    ASSERT_RC(evs_subscribe(&a, s, NULL, busy_handler, NULL, NULL, NULL), 0);
    ASSERT_RC(evs_subscribe(&b, s, NULL, busy_handler, NULL, NULL, NULL), 0);
    publish_n(s, 200);
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    evs_stream_stats st;
    ASSERT_RC(evs_stream_stats_get(s, &st), 0);
    cr_assert_eq(st.handler.count, 400);
    cr_assert(st.handler.p50_ns >= 2000 * 15 / 16, "p50 %llu", (unsigned long long)st.handler.p50_ns);
    cr_assert(st.handler.p50_ns <= st.handler.p90_ns);
    cr_assert(st.handler.p90_ns <= st.handler.p99_ns);
    cr_assert(st.handler.p99_ns <= st.handler.max_ns);
    cr_assert(st.handler.sum_ns >= 400 * 2000);
    evs_sub_stats ss;
    ASSERT_RC(evs_sub_stats_get(a, &ss), 0);
    cr_assert_eq(ss.handler.count, 200);
    cr_assert_eq(ss.delivered, 200);
    cr_assert(ss.handler.p50_ns >= 2000 * 15 / 16);
    evs_stream_destroy(s);
}

Test(metrics_stream, without_metrics_handler_time_is_zero)
{
    evs_stream *s;
    ASSERT_RC(evs_stream_create(&s, NULL), 0);
    evs_sub *a;
    ASSERT_RC(evs_subscribe(&a, s, NULL, busy_handler, NULL, NULL, NULL), 0);
    publish_n(s, 10);
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    evs_stream_stats st;
    ASSERT_RC(evs_stream_stats_get(s, &st), 0);
    cr_assert_eq(st.delivered, 10);
    cr_assert_eq(st.handler.count, 0);
    cr_assert_eq(st.handler.max_ns, 0);
    evs_sub_stats ss;
    ASSERT_RC(evs_sub_stats_get(a, &ss), 0);
    cr_assert_eq(ss.handler.count, 0);
    cr_assert_eq(ss.delivered_per_s, 0.0);
    evs_stream_destroy(s);
}

Test(metrics_stream, inline_delivery_is_timed_too)
{
    evs_stream_opts o = {.metrics = EVS_METRICS_SUBS, .delivery = EVS_DELIVERY_INLINE};
    evs_stream *s;
    ASSERT_RC(evs_stream_create(&s, &o), 0);
    evs_sub *a;
    ASSERT_RC(evs_subscribe(&a, s, NULL, busy_handler, NULL, NULL, NULL), 0);
    publish_n(s, 25);
    evs_sub_stats ss;
    ASSERT_RC(evs_sub_stats_get(a, &ss), 0);
    cr_assert_eq(ss.handler.count, 25);
    evs_stream_destroy(s);
}

Test(metrics_stream, throughput_over_the_last_interval)
{
    evs_stream_opts o = {.metrics = EVS_METRICS_SUBS, .metrics_interval_ms = 50};
    evs_stream *s;
    ASSERT_RC(evs_stream_create(&s, &o), 0);
    evs_sub *a;
    ASSERT_RC(evs_subscribe(&a, s, NULL, busy_handler, NULL, NULL, NULL), 0);
    evs_stream_stats st;
    evs_sub_stats ss;
    ASSERT_RC(evs_stream_stats_get(s, &st), 0); /* first samples */
    ASSERT_RC(evs_sub_stats_get(a, &ss), 0);
    publish_n(s, 100);
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    usleep(60 * 1000);
    ASSERT_RC(evs_stream_stats_get(s, &st), 0);
    ASSERT_RC(evs_sub_stats_get(a, &ss), 0);
    /* 100 events in at least 50 ms: positive, at most 2000/s. */
    cr_assert(st.published_per_s > 0 && st.published_per_s <= 2000.0 + 1e-6, "%f",
              st.published_per_s);
    cr_assert(st.delivered_per_s > 0 && st.delivered_per_s <= 2000.0 + 1e-6);
    cr_assert(ss.delivered_per_s > 0 && ss.delivered_per_s <= 2000.0 + 1e-6);
    usleep(60 * 1000); /* an idle interval */
    ASSERT_RC(evs_stream_stats_get(s, &st), 0);
    cr_assert_eq(st.published_per_s, 0.0);
    cr_assert_eq(st.delivered_per_s, 0.0);
    evs_stream_destroy(s);
}

Test(metrics_stream, negative_interval_and_unknown_levels_are_einval)
{
    evs_stream_opts o = {.metrics_interval_ms = -1};
    evs_stream *s;
    ASSERT_RC(evs_stream_create(&s, &o), EVS_EINVAL);
    o = (evs_stream_opts){.metrics = 3};
    ASSERT_RC(evs_stream_create(&s, &o), EVS_EINVAL);
    o = (evs_stream_opts){.metrics = -1};
    ASSERT_RC(evs_stream_create(&s, &o), EVS_EINVAL);
}

Test(metrics_stream, stream_level_times_the_stream_but_not_each_subscription)
{
    evs_stream_opts o = {.metrics = EVS_METRICS_STREAM};
    evs_stream *s;
    ASSERT_RC(evs_stream_create(&s, &o), 0);
    evs_sub *a;
    ASSERT_RC(evs_subscribe(&a, s, NULL, busy_handler, NULL, NULL, NULL), 0);
    publish_n(s, 20);
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    evs_stream_stats st;
    ASSERT_RC(evs_stream_stats_get(s, &st), 0);
    cr_assert_eq(st.handler.count, 20);
    evs_sub_stats ss;
    ASSERT_RC(evs_sub_stats_get(a, &ss), 0);
    cr_assert_eq(ss.delivered, 20);
    cr_assert_eq(ss.handler.count, 0);
    cr_assert_eq(ss.delivered_per_s, 0.0);
    evs_stream_destroy(s);
}

Test(metrics_stream, subscribe_with_metrics_fails_cleanly_without_memory)
{
    evs_stream_opts o = {.metrics = EVS_METRICS_SUBS};
    evs_stream *s;
    ASSERT_RC(evs_stream_create(&s, &o), 0);
    evs_sub *a;
    int rc = EVS_ENOMEM;
    for (long k = 0; rc == EVS_ENOMEM && k < 20; k++) {
        evs__alloc_fail_after(k);
        rc = evs_subscribe(&a, s, NULL, busy_handler, NULL, NULL, NULL);
        evs__alloc_fail_after(-1);
    }
    ASSERT_RC(rc, 0);
    publish_n(s, 3);
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    evs_sub_stats ss;
    ASSERT_RC(evs_sub_stats_get(a, &ss), 0);
    cr_assert_eq(ss.handler.count, 3);
    evs_stream_destroy(s);
}

/* ------------------------------------------------------------------ */
/* Prometheus text                                                     */
/* ------------------------------------------------------------------ */

static bool has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)) != NULL; p++)
        if ((p == text || p[-1] == '\n') && (p[n] == '\n' || p[n] == '\0'))
            return true;
    return false;
}

static size_t count_of(const char *text, const char *needle)
{
    size_t k = 0;
    for (const char *p = text; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        k++;
    return k;
}

static evs_stream_stats sample_stream_stats(void)
{
    evs_stream_stats st;
    memset(&st, 0, sizeof(st));
    st.published = 7;
    st.delivered = 6;
    st.dropped_newest = 1;
    st.queued = 2;
    st.queue_hwm = 5;
    st.subscribers = 3;
    st.published_per_s = 12.5;
    st.handler = (evs_latency){.count = 4, .sum_ns = 4000, .p50_ns = 900, .p90_ns = 1000,
                               .p99_ns = 1100, .max_ns = 1200};
    return st;
}

Test(metrics_prom, stream_and_subscription_series_with_help_and_type_once)
{
    evs_stream_stats a = sample_stream_stats(), b = sample_stream_stats();
    b.published = 9;
    evs_sub_stats sub;
    memset(&sub, 0, sizeof(sub));
    sub.delivered = 6;
    sub.dropped = 1;
    evs_metrics_item items[] = {
        {.stream = "orders", .stream_stats = &a},
        {.stream = "orders", .sub = "audit", .sub_stats = &sub},
        {.stream = "ticks", .stream_stats = &b},
    };
    evs_buf out = {0};
    ASSERT_RC(evs_metrics_prometheus(items, 3, &out), 0);
    const char *t = out.data;
    cr_assert(has_line(t, "# TYPE evs_stream_published_total counter"), "%s", t);
    cr_assert(has_line(t, "evs_stream_published_total{stream=\"orders\"} 7"));
    cr_assert(has_line(t, "evs_stream_published_total{stream=\"ticks\"} 9"));
    cr_assert(has_line(t, "evs_stream_dropped_total{stream=\"orders\",reason=\"newest\"} 1"));
    cr_assert(has_line(t, "evs_stream_dropped_total{stream=\"orders\",reason=\"nomem\"} 0"));
    cr_assert(has_line(t, "evs_stream_queue_depth{stream=\"orders\"} 2"));
    cr_assert(has_line(t, "evs_stream_queue_depth_max{stream=\"orders\"} 5"));
    cr_assert(has_line(t, "evs_stream_published_per_second{stream=\"orders\"} 12.5"));
    cr_assert(has_line(t, "# TYPE evs_stream_handler_seconds summary"));
    cr_assert(has_line(t, "evs_stream_handler_seconds{stream=\"orders\",quantile=\"0.99\"} 1.1e-06"));
    cr_assert(has_line(t, "evs_stream_handler_seconds_count{stream=\"orders\"} 4"));
    cr_assert(has_line(t, "evs_stream_handler_seconds_sum{stream=\"orders\"} 4e-06"));
    cr_assert(has_line(t, "evs_stream_handler_seconds_max{stream=\"orders\"} 1.2e-06"));
    cr_assert(has_line(t, "evs_sub_delivered_total{stream=\"orders\",sub=\"audit\"} 6"));
    cr_assert(has_line(t, "evs_sub_dropped_total{stream=\"orders\",sub=\"audit\"} 1"));
    cr_assert_eq(count_of(t, "# HELP evs_stream_published_total "), 1);
    cr_assert_eq(count_of(t, "# TYPE evs_sub_delivered_total "), 1);
    /* Subscription series never appear under stream families. */
    cr_assert_eq(count_of(t, "evs_stream_published_total{stream=\"orders\",sub"), 0);
    /* Series of one family are grouped: both streams' published lines
     * come before the next family's HELP. */
    const char *f1 = strstr(t, "evs_stream_published_total{stream=\"ticks\"}");
    const char *f2 = strstr(t, "# HELP evs_stream_delivered_total");
    cr_assert(f1 != NULL && f2 != NULL && f1 < f2);
    evs_buf_free(&out);
}

Test(metrics_prom, label_values_are_escaped)
{
    evs_stream_stats a = sample_stream_stats();
    evs_metrics_item it = {.stream = "a\"b\\c\nd", .stream_stats = &a};
    evs_buf out = {0};
    ASSERT_RC(evs_metrics_prometheus(&it, 1, &out), 0);
    cr_assert(has_line(out.data, "evs_stream_published_total{stream=\"a\\\"b\\\\c\\nd\"} 7"),
              "%s", out.data);
    evs_buf_free(&out);
}

Test(metrics_prom, every_sample_line_is_well_formed)
{
    evs_stream_stats a = sample_stream_stats();
    evs_sub_stats sub;
    memset(&sub, 0, sizeof(sub));
    evs_metrics_item items[] = {{.stream = "s", .stream_stats = &a},
                                {.stream = "s", .sub = "x", .sub_stats = &sub}};
    evs_buf out = {0};
    ASSERT_RC(evs_metrics_prometheus(items, 2, &out), 0);
    char *copy = strdup(out.data);
    size_t samples = 0;
    for (char *line = strtok(copy, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        if (line[0] == '#') {
            cr_assert(strncmp(line, "# HELP evs_", 11) == 0 || strncmp(line, "# TYPE evs_", 11) == 0,
                      "%s", line);
            continue;
        }
        /* name{labels} value */
        char *brace = strchr(line, '{'), *close = strrchr(line, '}');
        cr_assert(brace != NULL && close != NULL && close > brace && close[1] == ' ', "%s", line);
        char *end;
        strtod(close + 2, &end);
        cr_assert(*end == '\0' && end > close + 2, "value in %s", line);
        samples++;
    }
    cr_assert(samples > 20);
    free(copy);
    evs_buf_free(&out);
}

Test(metrics_prom, bad_items_are_einval_and_leave_the_buffer)
{
    evs_buf out = {0};
    ASSERT_RC(evs_buf_append(&out, "x", 1), 0);
    evs_metrics_item bad = {.stream = "s"}; /* neither stats */
    ASSERT_RC(evs_metrics_prometheus(&bad, 1, &out), EVS_EINVAL);
    evs_sub_stats sub = {0};
    evs_metrics_item bad2 = {.stream = "s", .sub_stats = &sub}; /* stats of a sub, no sub */
    ASSERT_RC(evs_metrics_prometheus(&bad2, 1, &out), EVS_EINVAL);
    ASSERT_RC(evs_metrics_prometheus(NULL, 1, &out), EVS_EINVAL);
    ASSERT_RC(evs_metrics_prometheus(NULL, 0, NULL), EVS_EINVAL);
    cr_assert_eq(out.len, 1);
    ASSERT_RC(evs_metrics_prometheus(NULL, 0, &out), 0); /* nothing to say */
    cr_assert_eq(out.len, 1);
    evs_buf_free(&out);
}

Test(metrics_prom, enomem_leaves_the_buffer_as_it_was)
{
    evs_stream_stats a = sample_stream_stats();
    evs_metrics_item it = {.stream = "s", .stream_stats = &a};
    evs_buf out = {0};
    ASSERT_RC(evs_buf_append(&out, "keep", 4), 0);
    int rc = EVS_ENOMEM;
    for (long k = 0; rc == EVS_ENOMEM; k++) {
        evs__alloc_fail_after(k);
        rc = evs_metrics_prometheus(&it, 1, &out);
        evs__alloc_fail_after(-1);
        if (rc == EVS_ENOMEM) {
            cr_assert_eq(out.len, 4);
            cr_assert_eq(memcmp(out.data, "keep", 5), 0);
        }
    }
    ASSERT_RC(rc, 0);
    cr_assert(strncmp(out.data, "keep# HELP", 10) == 0);
    evs_buf_free(&out);
}

Test(metrics_prom, stream_prometheus_reads_a_live_stream)
{
    evs_stream *s;
    ASSERT_RC(evs_stream_create(&s, NULL), 0);
    publish_n(s, 4);
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    evs_buf out = {0};
    ASSERT_RC(evs_stream_prometheus(s, "live", &out), 0);
    cr_assert(has_line(out.data, "evs_stream_published_total{stream=\"live\"} 4"), "%s", out.data);
    cr_assert_null(strstr(out.data, "evs_sub_"), "no subscription families on a stream's page");
    ASSERT_RC(evs_stream_prometheus(NULL, "x", &out), EVS_EINVAL);
    ASSERT_RC(evs_stream_prometheus(s, NULL, &out), EVS_EINVAL);
    evs_buf_free(&out);
    evs_stream_destroy(s);
}

Test(metrics_stream, a_pooled_subscription_times_the_calls_on_its_workers)
{
    evs_stream_opts o = {.metrics = EVS_METRICS_SUBS};
    evs_stream *s;
    ASSERT_RC(evs_stream_create(&s, &o), 0);
    evs_sub *a;
    evs_sub_opts so = {.max_concurrent = 2};
    ASSERT_RC(evs_subscribe(&a, s, NULL, busy_handler, NULL, NULL, &so), 0);
    publish_n(s, 50);
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    evs_sub_stats ss;
    ASSERT_RC(evs_sub_stats_get(a, &ss), 0);
    cr_assert_eq(ss.handler.count, 50);
    /* The real 2 us calls, not the time to queue them. */
    cr_assert(ss.handler.p50_ns >= 2000 * 15 / 16, "p50 %llu",
              (unsigned long long)ss.handler.p50_ns);
    evs_stream_stats st;
    ASSERT_RC(evs_stream_stats_get(s, &st), 0);
    cr_assert_eq(st.handler.count, 50);
    evs_stream_destroy(s);
}
