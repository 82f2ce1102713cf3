/*
 * StreamProcessor: filter and map stages, sinks, errors, start/stop.
 */
#include "evs_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* Events carry a decimal number as text data. */
static long num_of(const evs_event *ev)
{
    size_t n;
    const char *d = evs_event_data(ev, &n);
    char tmp[32];
    snprintf(tmp, sizeof(tmp), "%.*s", (int)n, d);
    return strtol(tmp, NULL, 10);
}

static void publish_num(evs_stream *s, const char *topic, long v)
{
    char tmp[32];
    int n = snprintf(tmp, sizeof(tmp), "%ld", v);
    evs_event *ev;
    ASSERT_RC(evs_event_create(&ev, EVS_TYPE_MESSAGE, topic, tmp, (size_t)n), 0);
    ASSERT_RC(evs_stream_publish_move(s, ev, NULL), 0);
}

/* What a sink callback saw. */
typedef struct seen {
    pthread_mutex_t mu;
    long            v[4096];
    uint64_t        ids[4096];
    size_t          n;
} seen;

static seen *seen_new(void)
{
    seen *s = calloc(1, sizeof(*s));
    pthread_mutex_init(&s->mu, NULL);
    return s;
}

static void seen_free(seen *s)
{
    pthread_mutex_destroy(&s->mu);
    free(s);
}

static int record(const evs_event *ev, void *user)
{
    seen *s = user;
    pthread_mutex_lock(&s->mu);
    if (s->n < 4096) {
        s->ids[s->n] = evs_event_id(ev);
        s->v[s->n++] = num_of(ev);
    }
    pthread_mutex_unlock(&s->mu);
    return 0;
}

static bool is_even(const evs_event *ev, void *user)
{
    (void)user;
    return num_of(ev) % 2 == 0;
}

/* Replace with a new event holding ten times the number. */
static int times_ten(const evs_event *in, evs_event **out, void *user)
{
    (void)user;
    char tmp[32];
    int n = snprintf(tmp, sizeof(tmp), "%ld", num_of(in) * 10);
    return evs_event_create(out, EVS_TYPE_MESSAGE, evs_event_topic(in), tmp, (size_t)n);
}

/* Drop multiples of three, pass the rest unchanged. */
static int drop_threes(const evs_event *in, evs_event **out, void *user)
{
    (void)user;
    if (num_of(in) % 3 == 0)
        *out = NULL;
    return 0;
}

static evs_stream *stream_new(void)
{
    evs_stream *s;
    ASSERT_RC(evs_stream_create(&s, NULL), 0);
    return s;
}

Test(processor, filter_map_sink_stream_in_order)
{
    evs_stream *src = stream_new(), *dst = stream_new();
    seen *out = seen_new();
    evs_sub *sub;
    ASSERT_RC(evs_subscribe(&sub, dst, NULL, record, NULL, out, NULL), 0);
    evs_processor *p;
    ASSERT_RC(evs_processor_create(&p, src, NULL), 0);
    ASSERT_RC(evs_processor_filter(p, "even", is_even, NULL), 0);
    ASSERT_RC(evs_processor_map(p, "x10", times_ten, NULL), 0);
    ASSERT_RC(evs_processor_sink(p, dst), 0);
    ASSERT_RC(evs_processor_start(p), 0);
    for (long i = 1; i <= 100; i++)
        publish_num(src, "n", i);
    ASSERT_RC(evs_stream_flush(src, EVS_FOREVER, NULL), 0);
    ASSERT_RC(evs_stream_flush(dst, EVS_FOREVER, NULL), 0);
    cr_assert_eq(out->n, 50);
    for (size_t i = 0; i < out->n; i++) {
        cr_assert_eq(out->v[i], (long)(i + 1) * 20, "event %zu: %ld", i, out->v[i]);
        cr_assert_eq(out->ids[i], i + 1, "the sink numbers its own events");
    }
    evs_processor_stats st;
    ASSERT_RC(evs_processor_stats_get(p, &st), 0);
    cr_assert_eq(st.received, 100);
    cr_assert_eq(st.emitted, 50);
    cr_assert_eq(st.dropped, 50);
    cr_assert_eq(st.errors, 0);
    cr_assert_eq(st.stages, 3);
    cr_assert(st.running);
    evs_stage_stats ss;
    ASSERT_RC(evs_processor_stage_stats_get(p, 0, &ss), 0);
    cr_assert_str_eq(ss.name, "even");
    cr_assert_eq(ss.in, 100);
    cr_assert_eq(ss.out, 50);
    cr_assert_eq(ss.dropped, 50);
    ASSERT_RC(evs_processor_stage_stats_get(p, 1, &ss), 0);
    cr_assert_eq(ss.in, 50);
    cr_assert_eq(ss.replaced, 50);
    ASSERT_RC(evs_processor_stage_stats_get(p, 2, &ss), 0);
    cr_assert_str_eq(ss.name, "sink");
    cr_assert_eq(ss.out, 50);
    ASSERT_RC(evs_processor_stage_stats_get(p, 3, &ss), EVS_EINVAL);
    ASSERT_RC(evs_processor_destroy(p), 0);
    evs_stream_destroy(src);
    evs_stream_destroy(dst);
    seen_free(out);
}

Test(processor, map_may_pass_or_drop_and_every_sink_gets_each_event)
{
    evs_stream *src = stream_new();
    seen *a = seen_new(), *b = seen_new();
    evs_processor *p;
    ASSERT_RC(evs_processor_create(&p, src, NULL), 0);
    ASSERT_RC(evs_processor_sink_fn(p, "a", record, a), 0); /* sinks before stages */
    ASSERT_RC(evs_processor_map(p, NULL, drop_threes, NULL), 0);
    ASSERT_RC(evs_processor_sink_fn(p, "b", record, b), 0);
    ASSERT_RC(evs_processor_start(p), 0);
    for (long i = 1; i <= 30; i++)
        publish_num(src, "n", i);
    ASSERT_RC(evs_stream_flush(src, EVS_FOREVER, NULL), 0);
    cr_assert_eq(a->n, 20);
    cr_assert_eq(b->n, 20);
    for (size_t i = 0; i < a->n; i++) {
        cr_assert_neq(a->v[i] % 3, 0);
        cr_assert_eq(a->v[i], b->v[i]);
        cr_assert_eq(a->ids[i], (uint64_t)a->v[i], "passed unchanged: the source's id");
    }
    evs_stage_stats ss;
    ASSERT_RC(evs_processor_stage_stats_get(p, 1, &ss), 0);
    cr_assert_str_eq(ss.name, "map");
    cr_assert_eq(ss.dropped, 10);
    cr_assert_eq(ss.replaced, 0);
    ASSERT_RC(evs_processor_destroy(p), 0);
    evs_stream_destroy(src);
    seen_free(a);
    seen_free(b);
}

/* Errors on multiples of five; replaces first so the release is tested. */
static int fail_fives(const evs_event *in, evs_event **out, void *user)
{
    (void)user;
    if (num_of(in) % 5 != 0)
        return 0;
    evs_event_create(out, EVS_TYPE_MESSAGE, "junk", "x", 1); /* released by the processor */
    return EVS_EBADMSG;
}

typedef struct err_log {
    pthread_mutex_t mu;
    int             n;
    char            stage[32];
    size_t          index;
    int             code;
    long            last;
} err_log;

static void on_err(const char *stage, size_t index, const evs_event *ev, int code, void *user)
{
    err_log *l = user;
    pthread_mutex_lock(&l->mu);
    l->n++;
    snprintf(l->stage, sizeof(l->stage), "%s", stage);
    l->index = index;
    l->code = code;
    l->last = num_of(ev);
    pthread_mutex_unlock(&l->mu);
}

Test(processor, stage_error_goes_to_the_hook_and_the_pipeline_goes_on)
{
    evs_stream *src = stream_new();
    seen *out = seen_new();
    err_log log = {.mu = PTHREAD_MUTEX_INITIALIZER};
    evs_processor_opts o = {.on_error = on_err, .on_error_user = &log};
    evs_processor *p;
    ASSERT_RC(evs_processor_create(&p, src, &o), 0);
    ASSERT_RC(evs_processor_map(p, "validate", fail_fives, NULL), 0);
    ASSERT_RC(evs_processor_sink_fn(p, "out", record, out), 0);
    ASSERT_RC(evs_processor_start(p), 0);
    for (long i = 1; i <= 20; i++)
        publish_num(src, "n", i);
    ASSERT_RC(evs_stream_flush(src, EVS_FOREVER, NULL), 0);
    cr_assert_eq(log.n, 4);
    cr_assert_str_eq(log.stage, "validate");
    cr_assert_eq(log.index, 0);
    ASSERT_RC(log.code, EVS_EBADMSG);
    cr_assert_eq(log.last, 20);
    cr_assert_eq(out->n, 16);
    evs_processor_stats st;
    ASSERT_RC(evs_processor_stats_get(p, &st), 0);
    cr_assert_eq(st.errors, 4);
    cr_assert_eq(st.dropped, 4);
    cr_assert_eq(st.emitted, 16);
    ASSERT_RC(evs_processor_destroy(p), 0);
    evs_stream_destroy(src);
    seen_free(out);
}

static int refuse(const evs_event *ev, void *user)
{
    (void)ev;
    (void)user;
    return EVS_EFULL;
}

Test(processor, a_failing_sink_is_reported_and_the_others_still_get_the_event)
{
    evs_stream *src = stream_new(), *closed = stream_new();
    ASSERT_RC(evs_stream_close(closed, 0, NULL), 0);
    seen *out = seen_new();
    err_log log = {.mu = PTHREAD_MUTEX_INITIALIZER};
    evs_processor_opts o = {.on_error = on_err, .on_error_user = &log};
    evs_processor *p;
    ASSERT_RC(evs_processor_create(&p, src, &o), 0);
    ASSERT_RC(evs_processor_sink(p, closed), 0);
    ASSERT_RC(evs_processor_sink_fn(p, "refuser", refuse, NULL), 0);
    ASSERT_RC(evs_processor_sink_fn(p, "good", record, out), 0);
    ASSERT_RC(evs_processor_start(p), 0);
    publish_num(src, "n", 7);
    ASSERT_RC(evs_stream_flush(src, EVS_FOREVER, NULL), 0);
    cr_assert_eq(out->n, 1);
    cr_assert_eq(log.n, 2);
    cr_assert_str_eq(log.stage, "refuser");
    ASSERT_RC(log.code, EVS_EFULL);
    evs_stage_stats ss;
    ASSERT_RC(evs_processor_stage_stats_get(p, 0, &ss), 0);
    cr_assert_eq(ss.errors, 1);
    evs_processor_stats st;
    ASSERT_RC(evs_processor_stats_get(p, &st), 0);
    cr_assert_eq(st.emitted, 1); /* one sink took it */
    cr_assert_eq(st.errors, 2);
    ASSERT_RC(evs_processor_destroy(p), 0);
    evs_stream_destroy(src);
    evs_stream_destroy(closed);
    seen_free(out);
}

Test(processor, stages_are_frozen_while_running_and_start_is_once)
{
    evs_stream *src = stream_new();
    evs_processor *p;
    ASSERT_RC(evs_processor_create(&p, src, NULL), 0);
    ASSERT_RC(evs_processor_start(p), 0);
    ASSERT_RC(evs_processor_start(p), EVS_EBUSY);
    ASSERT_RC(evs_processor_filter(p, NULL, is_even, NULL), EVS_EBUSY);
    ASSERT_RC(evs_processor_map(p, NULL, times_ten, NULL), EVS_EBUSY);
    ASSERT_RC(evs_processor_sink_fn(p, NULL, record, NULL), EVS_EBUSY);
    ASSERT_RC(evs_processor_stop(p), 0);
    ASSERT_RC(evs_processor_stop(p), 0); /* idempotent */
    ASSERT_RC(evs_processor_filter(p, NULL, is_even, NULL), 0);
    evs_processor_stats st;
    ASSERT_RC(evs_processor_stats_get(p, &st), 0);
    cr_assert(!st.running);
    cr_assert_eq(st.stages, 1);
    ASSERT_RC(evs_processor_destroy(p), 0);
    evs_stream_destroy(src);
}

Test(processor, restart_sees_only_events_after_it)
{
    evs_stream *src = stream_new();
    seen *out = seen_new();
    evs_processor *p;
    ASSERT_RC(evs_processor_create(&p, src, NULL), 0);
    ASSERT_RC(evs_processor_sink_fn(p, NULL, record, out), 0);
    ASSERT_RC(evs_processor_start(p), 0);
    publish_num(src, "n", 1);
    ASSERT_RC(evs_stream_flush(src, EVS_FOREVER, NULL), 0);
    ASSERT_RC(evs_processor_stop(p), 0);
    publish_num(src, "n", 2);
    ASSERT_RC(evs_stream_flush(src, EVS_FOREVER, NULL), 0);
    ASSERT_RC(evs_processor_start(p), 0);
    publish_num(src, "n", 3);
    ASSERT_RC(evs_stream_flush(src, EVS_FOREVER, NULL), 0);
    cr_assert_eq(out->n, 2);
    cr_assert_eq(out->v[0], 1);
    cr_assert_eq(out->v[1], 3);
    ASSERT_RC(evs_processor_destroy(p), 0);
    evs_stream_destroy(src);
    seen_free(out);
}

Test(processor, pattern_selects_topics_of_a_topic_stream)
{
    evs_stream_opts so = {.topics = true};
    evs_stream *src;
    ASSERT_RC(evs_stream_create(&src, &so), 0);
    seen *out = seen_new();
    evs_processor_opts o = {.pattern = "orders.*.paid"};
    evs_processor *p;
    ASSERT_RC(evs_processor_create(&p, src, &o), 0);
    ASSERT_RC(evs_processor_sink_fn(p, NULL, record, out), 0);
    ASSERT_RC(evs_processor_start(p), 0);
    publish_num(src, "orders.eu.paid", 1);
    publish_num(src, "orders.eu.new", 2);
    publish_num(src, "orders.us.paid", 3);
    ASSERT_RC(evs_stream_flush(src, EVS_FOREVER, NULL), 0);
    cr_assert_eq(out->n, 2);
    cr_assert_eq(out->v[1], 3);
    ASSERT_RC(evs_processor_destroy(p), 0);
    evs_processor_opts bad = {.pattern = "orders..x"};
    ASSERT_RC(evs_processor_create(&p, src, &bad), 0);
    ASSERT_RC(evs_processor_start(p), EVS_EINVAL);
    ASSERT_RC(evs_processor_destroy(p), 0);
    evs_stream_destroy(src);
    seen_free(out);
}

/* A map that blocks at a gate: stop from another thread must wait. */
typedef struct blocker {
    gate gate;
    int  done; /* set (atomically) when the map returns */
} blocker;

static int block_map(const evs_event *in, evs_event **out, void *user)
{
    (void)in;
    (void)out;
    blocker *b = user;
    gate_pass(&b->gate);
    usleep(20 * 1000);
    evs_store_release(&b->done, 1);
    return 0;
}

Test(processor, stop_waits_for_the_event_in_flight)
{
    evs_stream *src = stream_new();
    blocker b = {.done = 0};
    gate_init(&b.gate);
    evs_processor *p;
    ASSERT_RC(evs_processor_create(&p, src, NULL), 0);
    ASSERT_RC(evs_processor_map(p, "slow", block_map, &b), 0);
    ASSERT_RC(evs_processor_start(p), 0);
    publish_num(src, "n", 1);
    gate_wait_blocked(&b.gate);
    gate_open(&b.gate);
    ASSERT_RC(evs_processor_stop(p), 0);
    cr_assert_eq(evs_load_acquire(&b.done), 1, "stop returned while the map ran");
    ASSERT_RC(evs_processor_destroy(p), 0);
    evs_stream_destroy(src);
    gate_destroy(&b.gate);
}

/* A sink that stops (and tries to destroy) its own processor. */
typedef struct self_stop {
    evs_processor *p;
    int            calls, destroy_rc;
} self_stop;

static int stop_self(const evs_event *ev, void *user)
{
    (void)ev;
    self_stop *s = user;
    s->calls++;
    s->destroy_rc = evs_processor_destroy(s->p);
    ASSERT_RC(evs_processor_stop(s->p), 0);
    return 0;
}

Test(processor, stop_inside_the_chain_makes_that_event_the_last)
{
    evs_stream *src = stream_new();
    self_stop ss = {0};
    ASSERT_RC(evs_processor_create(&ss.p, src, NULL), 0);
    ASSERT_RC(evs_processor_sink_fn(ss.p, NULL, stop_self, &ss), 0);
    ASSERT_RC(evs_processor_start(ss.p), 0);
    for (long i = 0; i < 5; i++)
        publish_num(src, "n", i);
    ASSERT_RC(evs_stream_flush(src, EVS_FOREVER, NULL), 0);
    cr_assert_eq(ss.calls, 1);
    ASSERT_RC(ss.destroy_rc, EVS_EDEADLK);
    ASSERT_RC(evs_processor_destroy(ss.p), 0);
    evs_stream_destroy(src);
}

Test(processor, bad_arguments_are_einval)
{
    evs_stream *src = stream_new();
    evs_processor *p;
    ASSERT_RC(evs_processor_create(NULL, src, NULL), EVS_EINVAL);
    ASSERT_RC(evs_processor_create(&p, NULL, NULL), EVS_EINVAL);
    cr_assert_null(p);
    ASSERT_RC(evs_processor_create(&p, src, NULL), 0);
    ASSERT_RC(evs_processor_filter(p, NULL, NULL, NULL), EVS_EINVAL);
    ASSERT_RC(evs_processor_map(p, NULL, NULL, NULL), EVS_EINVAL);
    ASSERT_RC(evs_processor_sink_fn(p, NULL, NULL, NULL), EVS_EINVAL);
    ASSERT_RC(evs_processor_sink(p, NULL), EVS_EINVAL);
    ASSERT_RC(evs_processor_sink(p, src), EVS_EINVAL); /* would feed itself */
    ASSERT_RC(evs_processor_filter(NULL, NULL, is_even, NULL), EVS_EINVAL);
    ASSERT_RC(evs_processor_start(NULL), EVS_EINVAL);
    ASSERT_RC(evs_processor_stop(NULL), EVS_EINVAL);
    ASSERT_RC(evs_processor_stats_get(p, NULL), EVS_EINVAL);
    ASSERT_RC(evs_processor_destroy(NULL), 0);
    ASSERT_RC(evs_processor_destroy(p), 0);
    evs_stream_destroy(src);
}

Test(processor, allocation_failures_leave_it_usable)
{
    evs_stream *src = stream_new();
    evs_processor *p = NULL;
    int rc = EVS_ENOMEM;
    for (long k = 0; rc == EVS_ENOMEM; k++) {
        evs__alloc_fail_after(k);
        rc = evs_processor_create(&p, src, NULL);
        evs__alloc_fail_after(-1);
    }
    ASSERT_RC(rc, 0);
    seen *out = seen_new();
    for (int stage = 0; stage < 6; stage++) { /* grows the array past 4 */
        rc = EVS_ENOMEM;
        for (long k = 0; rc == EVS_ENOMEM; k++) {
            evs__alloc_fail_after(k);
            rc = evs_processor_filter(p, "keep-all", is_even, NULL);
            evs__alloc_fail_after(-1);
        }
        ASSERT_RC(rc, 0);
    }
    ASSERT_RC(evs_processor_sink_fn(p, NULL, record, out), 0);
    evs_processor_stats st;
    ASSERT_RC(evs_processor_stats_get(p, &st), 0);
    cr_assert_eq(st.stages, 7);
    ASSERT_RC(evs_processor_start(p), 0);
    publish_num(src, "n", 4);
    ASSERT_RC(evs_stream_flush(src, EVS_FOREVER, NULL), 0);
    cr_assert_eq(out->n, 1);
    ASSERT_RC(evs_processor_destroy(p), 0);
    evs_stream_destroy(src);
    seen_free(out);
}
