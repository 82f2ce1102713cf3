/*
 * Time windows: tumbling boundaries (an event at a window's end belongs
 * to the next), timestamp order inside a window, sliding overlap, the
 * allowed lateness, late events dropped or handed to the hook, windows
 * closing on time with no new event, stop's complete and partial
 * windows, offsets, pattern and filter, slot events, argument errors,
 * allocation failure, and a real-clock run with concurrent publishers.
 *
 * Most tests install the fake heartbeat clock (evs_test.h), which the
 * windower also reads as its wall clock, and stamp events by hand, so
 * "now" and event time are the same fake milliseconds.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "evs_internal.h"
#include "evstream.h"
#include "evs_test.h"
#include "heartbeat.h"

#define MS 1000000LL

/* ------------------------------------------------------------------ */
/* What fn saw: each window's bounds, flag and event ids, in order.    */

#define MAX_WINDOWS 4096
#define MAX_IN_WINDOW 256

typedef struct win {
    int64_t  start, end;
    bool     partial;
    size_t   n;
    uint64_t ids[MAX_IN_WINDOW];
    int64_t  ts[MAX_IN_WINDOW];
} win;

typedef struct seen {
    pthread_mutex_t mu;
    win     *w;
    size_t   nw;
    uint64_t total;       /* events over all windows (may exceed MAX_IN_WINDOW) */
    bool     in_fn, overlap;
    int      fn_rc;       /* what fn returns */
    evs_windower *self;   /* for the EDEADLK check */
    int      stop_rc;
    /* on_late */
    uint64_t late_ids[64];
    size_t   nlate;
    int      late_rc;
} seen;

static void seen_init(seen *s)
{
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    s->w = calloc(MAX_WINDOWS, sizeof(win));
    cr_assert_not_null(s->w);
    s->stop_rc = 1;
}

static void seen_fini(seen *s)
{
    free(s->w);
    pthread_mutex_destroy(&s->mu);
}

static size_t seen_windows(seen *s)
{
    pthread_mutex_lock(&s->mu);
    size_t n = s->nw;
    pthread_mutex_unlock(&s->mu);
    return n;
}

static int collect(const evs_window *w, const evs_event *const *events, size_t n, void *user)
{
    seen *s = user;
    pthread_mutex_lock(&s->mu);
    if (s->in_fn)
        s->overlap = true;
    s->in_fn = true;
    cr_assert_lt(s->nw, MAX_WINDOWS);
    cr_assert_geq(n, 1, "an empty window was handed over");
    win *x = &s->w[s->nw++];
    x->start = w->start_ns;
    x->end = w->end_ns;
    x->partial = w->partial;
    x->n = n;
    s->total += n;
    for (size_t i = 0; i < n && i < MAX_IN_WINDOW; i++) {
        x->ids[i] = evs_event_id(events[i]);
        x->ts[i] = evs_event_timestamp(events[i]);
    }
    pthread_mutex_unlock(&s->mu);
    if (s->self != NULL)
        s->stop_rc = evs_window_stop(s->self);
    pthread_mutex_lock(&s->mu);
    s->in_fn = false;
    pthread_mutex_unlock(&s->mu);
    return s->fn_rc;
}

static int late_hook(const evs_event *ev, void *user)
{
    seen *s = user;
    pthread_mutex_lock(&s->mu);
    if (s->nlate < 64)
        s->late_ids[s->nlate] = evs_event_id(ev);
    s->nlate++;
    pthread_mutex_unlock(&s->mu);
    return s->late_rc;
}

static evs_stream *mk_stream(const evs_stream_opts *o)
{
    evs_stream *s;
    ASSERT_RC(evs_stream_create(&s, o), 0);
    return s;
}

/* Publish an event stamped `ts_ms` (fake ms) on topic `topic`; wait
 * until the windower has taken it; return its id. */
static uint64_t publish_at_on(evs_stream *s, int64_t ts_ms, const char *topic)
{
    evs_event *ev = event_of(EVS_TYPE_MESSAGE, NULL, topic, EVS_CONTENT_BINARY, NULL, 0,
                             NULL, 0, 0, ts_ms * MS);
    uint64_t id;
    ASSERT_RC(evs_stream_publish_id(s, ev, &id), 0);
    evs_event_unref(ev);
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    return id;
}

static uint64_t publish_at(evs_stream *s, int64_t ts_ms)
{
    return publish_at_on(s, ts_ms, "t");
}

static void fake_clock_on(void)
{
    evs_store_release(fake_ns_cell(), 0);
    ASSERT_RC(evs__hb_set_clock(&fake_clock), 0);
}

static void fake_clock_off(void)
{
    ASSERT_RC(evs__hb_sync(), 0);
    ASSERT_RC(evs__hb_set_clock(NULL), 0);
}

/* The setup most tests share: the fake clock, a stream `s`, a collector
 * `c` and a windower `w` subscribed with options `o` = {the arguments}. */
#define WINDOW_SETUP(...)                                                    \
    fake_clock_on();                                                         \
    evs_stream *s = mk_stream(NULL);                                         \
    seen c;                                                                  \
    seen_init(&c);                                                           \
    evs_windower *w;                                                         \
    evs_window_opts o = {__VA_ARGS__};                                       \
    ASSERT_RC(evs_window_subscribe(&w, s, NULL, collect, NULL, &c, &o), 0)

/* ... and its end, after evs_window_stop(w). */
#define WINDOW_TEARDOWN()                                                    \
    do {                                                                     \
        ASSERT_RC(evs_stream_destroy(s), 0);                                 \
        fake_clock_off();                                                    \
        seen_fini(&c);                                                       \
    } while (0)

/* Window i is [start_ms, start_ms + size) holding exactly `ids`. */
static void assert_window(seen *s, size_t i, int64_t start_ms, int64_t size_ms, bool partial,
                          const uint64_t *ids, size_t n)
{
    cr_assert_lt(i, s->nw, "window %zu was not handed over", i);
    win *x = &s->w[i];
    cr_assert_eq(x->start, start_ms * MS, "window %zu starts at %lld ms, want %lld", i,
                 (long long)(x->start / MS), (long long)start_ms);
    cr_assert_eq(x->end, (start_ms + size_ms) * MS, "window %zu end", i);
    cr_assert_eq(x->partial, partial, "window %zu partial flag", i);
    cr_assert_eq(x->n, n, "window %zu holds %zu events, want %zu", i, x->n, n);
    for (size_t k = 0; k < n; k++)
        cr_assert_eq(x->ids[k], ids[k], "window %zu, event %zu: id %llu, want %llu", i, k,
                     (unsigned long long)x->ids[k], (unsigned long long)ids[k]);
}

/* ------------------------------------------------------------------ */
/* Tumbling windows                                                    */

Test(window, an_event_at_a_windows_end_belongs_to_the_next, .timeout = 30)
{
    WINDOW_SETUP(.size_ms = 1000);
    uint64_t a = publish_at(s, 0);
    uint64_t b = publish_at(s, 999);
    uint64_t d = publish_at(s, 1000); /* exactly the first window's end */
    uint64_t e = publish_at(s, 1999);
    uint64_t f = publish_at(s, 2000);
    clock_at_ms(999);
    cr_assert_eq(seen_windows(&c), 0, "[0, 1000) is open until 1000 ms");
    clock_at_ms(1000);
    cr_assert_eq(seen_windows(&c), 1);
    assert_window(&c, 0, 0, 1000, false, (uint64_t[]){a, b}, 2);
    clock_at_ms(2000);
    assert_window(&c, 1, 1000, 1000, false, (uint64_t[]){d, e}, 2);
    ASSERT_RC(evs_window_stop(w), 0);
    cr_assert_eq(c.nw, 3);
    assert_window(&c, 2, 2000, 1000, true, (uint64_t[]){f}, 1);
    cr_assert_not(c.overlap);
    WINDOW_TEARDOWN();
}

Test(window, events_come_in_timestamp_order_ties_in_arrival_order, .timeout = 30)
{
    WINDOW_SETUP(.size_ms = 1000);
    uint64_t t500 = publish_at(s, 500);
    uint64_t t100a = publish_at(s, 100);
    uint64_t t300 = publish_at(s, 300);
    uint64_t t100b = publish_at(s, 100);
    uint64_t t999 = publish_at(s, 999);
    uint64_t t0 = publish_at(s, 0);
    clock_at_ms(1000);
    assert_window(&c, 0, 0, 1000, false, (uint64_t[]){t0, t100a, t100b, t300, t500, t999}, 6);
    for (size_t i = 1; i < 6; i++)
        cr_assert_leq(c.w[0].ts[i - 1], c.w[0].ts[i]);
    ASSERT_RC(evs_window_stop(w), 0);
    cr_assert_eq(c.nw, 1);
    WINDOW_TEARDOWN();
}

Test(window, windows_close_on_time_with_no_new_event, .timeout = 30)
{
    WINDOW_SETUP(.size_ms = 1000, .lateness_ms = 500);
    uint64_t a = publish_at(s, 100);
    /* Nothing is published from here on: only the timer can close it. */
    clock_at_ms(1499);
    cr_assert_eq(seen_windows(&c), 0, "end + lateness is 1500 ms");
    clock_at_ms(1500);
    cr_assert_eq(seen_windows(&c), 1);
    assert_window(&c, 0, 0, 1000, false, (uint64_t[]){a}, 1);
    evs_window_stats st;
    ASSERT_RC(evs_window_stats_get(w, &st), 0);
    cr_assert_eq(st.held, 0);
    cr_assert_eq(st.windows, 1);
    cr_assert_eq(st.late_before_ns, 1000 * MS, "[0, 1000) closed: earlier stamps are late");
    /* A long silence: nothing more, and empty windows cost nothing. */
    clock_at_ms(1000000);
    cr_assert_eq(seen_windows(&c), 1);
    ASSERT_RC(evs_window_stats_get(w, &st), 0);
    cr_assert_eq(st.late_before_ns, 999000 * MS, "windows closed while empty");
    ASSERT_RC(evs_window_stop(w), 0);
    cr_assert_eq(c.nw, 1, "nothing left for stop");
    WINDOW_TEARDOWN();
}

Test(window, empty_windows_between_events_are_skipped, .timeout = 30)
{
    WINDOW_SETUP(.size_ms = 10);
    uint64_t a = publish_at(s, 5);
    uint64_t b = publish_at(s, 100000005); /* ten million windows later */
    clock_at_ms(200000000);
    cr_assert_eq(seen_windows(&c), 2);
    assert_window(&c, 0, 0, 10, false, (uint64_t[]){a}, 1);
    assert_window(&c, 1, 100000000, 10, false, (uint64_t[]){b}, 1);
    ASSERT_RC(evs_window_stop(w), 0);
    WINDOW_TEARDOWN();
}

Test(window, offset_shifts_every_boundary, .timeout = 30)
{
    WINDOW_SETUP(.size_ms = 1000, .offset_ms = 250);
    uint64_t a = publish_at(s, 249);  /* [-750, 250) */
    uint64_t b = publish_at(s, 250);  /* [250, 1250) */
    uint64_t d = publish_at(s, 1249);
    uint64_t e = publish_at(s, 1250); /* [1250, 2250) */
    clock_at_ms(250);
    assert_window(&c, 0, -750, 1000, false, (uint64_t[]){a}, 1);
    clock_at_ms(1250);
    assert_window(&c, 1, 250, 1000, false, (uint64_t[]){b, d}, 2);
    ASSERT_RC(evs_window_stop(w), 0);
    assert_window(&c, 2, 1250, 1000, true, (uint64_t[]){e}, 1);
    WINDOW_TEARDOWN();
}

/* ------------------------------------------------------------------ */
/* Sliding windows                                                     */

Test(window, a_sliding_event_is_in_size_over_slide_windows, .timeout = 30)
{
    WINDOW_SETUP(.size_ms = 1000, .slide_ms = 250);
    uint64_t x = publish_at(s, 400);  /* windows starting -500, -250, 0, 250 */
    uint64_t y = publish_at(s, 1100); /* windows starting 250, 500, 750, 1000 */
    uint64_t z = publish_at(s, 1250); /* exactly 250's end: 500 .. 1250 */
    clock_at_ms(499);
    cr_assert_eq(seen_windows(&c), 0);
    clock_at_ms(2250);
    cr_assert_eq(seen_windows(&c), 8);
    assert_window(&c, 0, -500, 1000, false, (uint64_t[]){x}, 1);
    assert_window(&c, 1, -250, 1000, false, (uint64_t[]){x}, 1);
    assert_window(&c, 2, 0, 1000, false, (uint64_t[]){x}, 1);
    assert_window(&c, 3, 250, 1000, false, (uint64_t[]){x, y}, 2);
    assert_window(&c, 4, 500, 1000, false, (uint64_t[]){y, z}, 2);
    assert_window(&c, 5, 750, 1000, false, (uint64_t[]){y, z}, 2);
    assert_window(&c, 6, 1000, 1000, false, (uint64_t[]){y, z}, 2);
    assert_window(&c, 7, 1250, 1000, false, (uint64_t[]){z}, 1);
    ASSERT_RC(evs_window_stop(w), 0);
    cr_assert_eq(c.nw, 8);
    WINDOW_TEARDOWN();
}

Test(window, sliding_windows_close_one_by_one_as_time_passes, .timeout = 30)
{
    WINDOW_SETUP(.size_ms = 1000, .slide_ms = 500);
    uint64_t a = publish_at(s, 600); /* [0, 1000) and [500, 1500) */
    clock_at_ms(999);
    cr_assert_eq(seen_windows(&c), 0);
    clock_at_ms(1000);
    cr_assert_eq(seen_windows(&c), 1);
    assert_window(&c, 0, 0, 1000, false, (uint64_t[]){a}, 1);
    clock_at_ms(1499);
    cr_assert_eq(seen_windows(&c), 1);
    clock_at_ms(1500);
    assert_window(&c, 1, 500, 1000, false, (uint64_t[]){a}, 1);
    ASSERT_RC(evs_window_stop(w), 0);
    cr_assert_eq(c.nw, 2);
    WINDOW_TEARDOWN();
}

Test(window, an_event_whose_first_windows_closed_joins_the_open_ones, .timeout = 30)
{
    WINDOW_SETUP(.size_ms = 1000, .slide_ms = 500);
    uint64_t a = publish_at(s, 100); /* [-500, 500) and [0, 1000) */
    clock_at_ms(500);
    assert_window(&c, 0, -500, 1000, false, (uint64_t[]){a}, 1);
    uint64_t b = publish_at(s, 200); /* [-500, 500) has closed; [0, 1000) has not */
    clock_at_ms(1000);
    assert_window(&c, 1, 0, 1000, false, (uint64_t[]){a, b}, 2);
    evs_window_stats st;
    ASSERT_RC(evs_window_stats_get(w, &st), 0);
    cr_assert_eq(st.late, 0, "it reached a window: not late");
    cr_assert_eq(st.events, 2);
    ASSERT_RC(evs_window_stop(w), 0);
    WINDOW_TEARDOWN();
}

/* ------------------------------------------------------------------ */
/* Lateness and late events                                            */

Test(window, lateness_keeps_a_window_open_past_its_end, .timeout = 30)
{
    WINDOW_SETUP(.size_ms = 1000, .lateness_ms = 300);
    uint64_t a = publish_at(s, 100);
    clock_at_ms(1200);
    uint64_t b = publish_at(s, 900); /* 300 ms after its stamp's window ended */
    clock_at_ms(1299);
    cr_assert_eq(seen_windows(&c), 0);
    clock_at_ms(1300);
    assert_window(&c, 0, 0, 1000, false, (uint64_t[]){a, b}, 2);
    publish_at(s, 950); /* now it is late */
    evs_window_stats st;
    ASSERT_RC(evs_window_stats_get(w, &st), 0);
    cr_assert_eq(st.late, 1);
    ASSERT_RC(evs_window_stop(w), 0);
    cr_assert_eq(c.nw, 1);
    WINDOW_TEARDOWN();
}

Test(window, late_events_are_dropped_and_counted, .timeout = 30)
{
    WINDOW_SETUP(.size_ms = 1000);
    uint64_t a = publish_at(s, 100);
    clock_at_ms(1000);
    assert_window(&c, 0, 0, 1000, false, (uint64_t[]){a}, 1);
    publish_at(s, 500);  /* its only window has closed */
    publish_at(s, -5);   /* before the windower existed */
    uint64_t b = publish_at(s, 1200);
    evs_window_stats st;
    ASSERT_RC(evs_window_stats_get(w, &st), 0);
    cr_assert_eq(st.late, 2);
    cr_assert_eq(st.events, 2);
    cr_assert_eq(st.held, 1);
    ASSERT_RC(evs_window_stop(w), 0);
    cr_assert_eq(c.nw, 2);
    assert_window(&c, 1, 1000, 1000, true, (uint64_t[]){b}, 1);
    cr_assert_eq(c.nlate, 0, "no hook: dropped");
    evs_stream_stats ss;
    ASSERT_RC(evs_stream_stats_get(s, &ss), 0);
    cr_assert_eq(ss.handler_errors, 0, "a dropped late event is not an error");
    WINDOW_TEARDOWN();
}

Test(window, lateness_does_not_depend_on_a_timer_having_run, .timeout = 30)
{
    WINDOW_SETUP(.size_ms = 1000);
    /* Idle: the timer is parked, so no fire runs while time passes. */
    clock_at_ms(5000);
    publish_at(s, 2500); /* [2000, 3000) closed at 3000, empty */
    publish_at(s, 4999); /* [4000, 5000) closed at 5000, empty */
    uint64_t a = publish_at(s, 5000);
    evs_window_stats st;
    ASSERT_RC(evs_window_stats_get(w, &st), 0);
    cr_assert_eq(st.late, 2);
    cr_assert_eq(st.late_before_ns, 5000 * MS);
    ASSERT_RC(evs_window_stop(w), 0);
    cr_assert_eq(c.nw, 1);
    assert_window(&c, 0, 5000, 1000, true, (uint64_t[]){a}, 1);
    WINDOW_TEARDOWN();
}

Test(window, late_events_go_to_the_late_hook_with_late_user, .timeout = 30)
{
    fake_clock_on();
    evs_stream *s = mk_stream(NULL);
    seen c, l;
    seen_init(&c);
    seen_init(&l);
    l.late_rc = 7;
    evs_windower *w;
    evs_window_opts o = {.size_ms = 1000, .on_late = late_hook, .late_user = &l};
    ASSERT_RC(evs_window_subscribe(&w, s, NULL, collect, NULL, &c, &o), 0);
    publish_at(s, 100);
    clock_at_ms(1000);
    uint64_t late1 = publish_at(s, 999);
    uint64_t late2 = publish_at(s, 0);
    uint64_t ok = publish_at(s, 1000);
    cr_assert_eq(l.nlate, 2);
    cr_assert_eq(l.late_ids[0], late1);
    cr_assert_eq(l.late_ids[1], late2);
    cr_assert_eq(c.nlate, 0, "the hook gets late_user, not user");
    evs_window_stats st;
    ASSERT_RC(evs_window_stats_get(w, &st), 0);
    cr_assert_eq(st.late, 2, "hooked late events are counted too");
    evs_stream_stats ss;
    ASSERT_RC(evs_stream_stats_get(s, &ss), 0);
    cr_assert_eq(ss.handler_errors, 2, "the hook's non-zero returns are handler errors");
    ASSERT_RC(evs_window_stop(w), 0);
    assert_window(&c, 1, 1000, 1000, true, (uint64_t[]){ok}, 1);
    ASSERT_RC(evs_stream_destroy(s), 0);
    fake_clock_off();
    seen_fini(&l);
    seen_fini(&c);
}

Test(window, timestamps_out_of_range_are_handled_as_late, .timeout = 30)
{
    WINDOW_SETUP(.size_ms = 1000, .on_late = late_hook);
    evs_event *ev = event_of(EVS_TYPE_MESSAGE, NULL, "t", EVS_CONTENT_BINARY, NULL, 0, NULL, 0,
                             0, INT64_MAX);
    ASSERT_RC(evs_stream_publish(s, ev), 0);
    evs_event_unref(ev);
    ev = event_of(EVS_TYPE_MESSAGE, NULL, "t", EVS_CONTENT_BINARY, NULL, 0, NULL, 0, 0,
                  INT64_MIN);
    ASSERT_RC(evs_stream_publish(s, ev), 0);
    evs_event_unref(ev);
    ev = event_of(EVS_TYPE_MESSAGE, NULL, "t", EVS_CONTENT_BINARY, NULL, 0, NULL, 0, 0,
                  EVS_WINDOW_MAX_TS);
    ASSERT_RC(evs_stream_publish(s, ev), 0);
    evs_event_unref(ev);
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    evs_window_stats st;
    ASSERT_RC(evs_window_stats_get(w, &st), 0);
    cr_assert_eq(st.out_of_range, 2);
    cr_assert_eq(st.late, 0);
    cr_assert_eq(st.events, 1, "the largest timestamp in range is taken");
    cr_assert_eq(c.nlate, 2);
    ASSERT_RC(evs_window_stop(w), 0);
    cr_assert_eq(c.nw, 1);
    cr_assert(c.w[0].partial);
    cr_assert_leq(c.w[0].start, EVS_WINDOW_MAX_TS);
    cr_assert_gt(c.w[0].end, EVS_WINDOW_MAX_TS);
    WINDOW_TEARDOWN();
}

/* ------------------------------------------------------------------ */
/* Stop                                                                */

Test(window, stop_hands_over_closed_windows_then_partial_ones_in_order, .timeout = 30)
{
    WINDOW_SETUP(.size_ms = 1000);
    uint64_t a = publish_at(s, 2100);
    uint64_t b = publish_at(s, 100);
    uint64_t d = publish_at(s, 1100);
    /* Move the clock without waking the service: [0, 1000) is closed by
     * the clock but may not have been handed over yet; stop must hand it
     * over as complete either way. */
    evs_store_release(fake_ns_cell(), 1500 * MS);
    ASSERT_RC(evs_window_stop(w), 0);
    cr_assert_eq(c.nw, 3);
    assert_window(&c, 0, 0, 1000, false, (uint64_t[]){b}, 1);
    assert_window(&c, 1, 1000, 1000, true, (uint64_t[]){d}, 1);
    assert_window(&c, 2, 2000, 1000, true, (uint64_t[]){a}, 1);
    /* After stop nothing is called. */
    publish_at(s, 2200);
    clock_at_ms(10000);
    cr_assert_eq(c.nw, 3);
    WINDOW_TEARDOWN();
}

Test(window, stop_includes_events_accepted_before_it, .timeout = 30)
{
    WINDOW_SETUP(.size_ms = 1000, .slide_ms = 500);
    /* Published, not flushed: stop flushes the stream first. */
    for (int i = 0; i < 100; i++) {
        evs_event *ev = event_of(EVS_TYPE_MESSAGE, NULL, "t", EVS_CONTENT_BINARY, NULL, 0,
                                 NULL, 0, 0, (int64_t)i * 10 * MS);
        ASSERT_RC(evs_stream_publish(s, ev), 0);
        evs_event_unref(ev);
    }
    ASSERT_RC(evs_window_stop(w), 0);
    /* Each event is in two windows: [-500, 500), [0, 1000), [500, 1500). */
    cr_assert_eq(c.nw, 3);
    cr_assert_eq(c.total, 200);
    cr_assert_eq(c.w[0].n, 50);
    cr_assert_eq(c.w[1].n, 100);
    cr_assert_eq(c.w[2].n, 50);
    WINDOW_TEARDOWN();
}

Test(window, stop_inside_fn_is_edeadlk_and_stop_accepts_null, .timeout = 30)
{
    WINDOW_SETUP(.size_ms = 1000);
    c.self = w;
    publish_at(s, 10);
    clock_at_ms(1000);
    cr_assert_eq(c.nw, 1);
    cr_assert_eq(c.stop_rc, EVS_EDEADLK, "got %s", evs_errname(c.stop_rc));
    c.self = NULL;
    ASSERT_RC(evs_window_stop(w), 0);
    ASSERT_RC(evs_window_stop(NULL), 0);
    WINDOW_TEARDOWN();
}

Test(window, fn_errors_are_counted, .timeout = 30)
{
    WINDOW_SETUP(.size_ms = 1000);
    c.fn_rc = -1;
    publish_at(s, 10);
    publish_at(s, 1010);
    clock_at_ms(2000);
    evs_window_stats st;
    ASSERT_RC(evs_window_stats_get(w, &st), 0);
    cr_assert_eq(st.windows, 2);
    cr_assert_eq(st.errors, 2);
    cr_assert_eq(st.partial, 0);
    ASSERT_RC(evs_window_stop(w), 0);
    WINDOW_TEARDOWN();
}

Test(window, max_held_bounds_memory_and_counts_what_it_refuses, .timeout = 30)
{
    WINDOW_SETUP(.size_ms = 1000, .max_held = 3);
    uint64_t a = publish_at(s, 1), b = publish_at(s, 2), d = publish_at(s, 3);
    publish_at(s, 4); /* refused: three are held */
    evs_window_stats st;
    ASSERT_RC(evs_window_stats_get(w, &st), 0);
    cr_assert_eq(st.overflow, 1);
    cr_assert_eq(st.held, 3);
    evs_stream_stats ss;
    ASSERT_RC(evs_stream_stats_get(s, &ss), 0);
    cr_assert_eq(ss.handler_errors, 1, "the refusal is the stream's handler error");
    clock_at_ms(1000); /* the window is handed over: room again */
    assert_window(&c, 0, 0, 1000, false, (uint64_t[]){a, b, d}, 3);
    uint64_t e = publish_at(s, 1001);
    ASSERT_RC(evs_window_stop(w), 0);
    assert_window(&c, 1, 1000, 1000, true, (uint64_t[]){e}, 1);
    WINDOW_TEARDOWN();
}

/* ------------------------------------------------------------------ */
/* Pattern, filter, slot events                                        */

static bool not_ignored(const evs_event *ev, void *user)
{
    cr_assert_eq(*(int *)user, 42, "the filter gets filter_user");
    return strcmp(evs_event_topic(ev), "orders.ignored") != 0;
}

Test(window, pattern_and_filter_are_honoured, .timeout = 30)
{
    fake_clock_on();
    evs_stream_opts so = {.topics = true};
    evs_stream *s = mk_stream(&so);
    seen c;
    seen_init(&c);
    int fu = 42;
    evs_windower *w;
    evs_window_opts o = {.size_ms = 1000, .filter_user = &fu};
    ASSERT_RC(evs_window_subscribe(&w, s, "orders.>", collect, not_ignored, &c, &o), 0);
    uint64_t a = publish_at_on(s, 10, "orders.eu");
    publish_at_on(s, 20, "users.eu");
    publish_at_on(s, 30, "orders.ignored");
    uint64_t b = publish_at_on(s, 40, "orders.us");
    clock_at_ms(1000);
    assert_window(&c, 0, 0, 1000, false, (uint64_t[]){a, b}, 2);
    ASSERT_RC(evs_window_stop(w), 0);
    WINDOW_TEARDOWN();
}

/* fn for slot events: check the data survived the slot's reuse. */
static int check_slot_data(const evs_window *w, const evs_event *const *events, size_t n,
                           void *user)
{
    atomic_int *count = user;
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const char *d = evs_event_data(events[i], &len);
        cr_assert_eq(len, 8);
        char want[9];
        snprintf(want, sizeof want, "%08llu", (unsigned long long)evs_event_id(events[i]));
        cr_assert_arr_eq(d, want, 8);
        atomic_fetch_add(count, 1);
    }
    return 0;
}

Test(window, slot_events_are_copied_into_windows, .timeout = 30)
{
    evs_stream_opts so = {.slot_bytes = 64, .capacity = 4};
    evs_stream *s = mk_stream(&so);
    atomic_int count = 0;
    evs_windower *w;
    evs_window_opts o = {.size_ms = 60000};
    ASSERT_RC(evs_window_subscribe(&w, s, NULL, check_slot_data, NULL, &count, &o), 0);
    for (int i = 0; i < 40; i++) {
        evs_event *ev;
        void *data;
        ASSERT_RC(evs_stream_claim(s, EVS_TYPE_MESSAGE, "t", 8, &ev, &data), 0);
        char buf[9];
        snprintf(buf, sizeof buf, "%08llu", (unsigned long long)evs_event_id(ev));
        memcpy(data, buf, 8);
        ASSERT_RC(evs_stream_commit(s, ev), 0);
    }
    ASSERT_RC(evs_window_stop(w), 0);
    cr_assert_eq(atomic_load(&count), 40, "every slot event, copied, in a window");
    ASSERT_RC(evs_stream_destroy(s), 0);
}

/* ------------------------------------------------------------------ */
/* Errors                                                              */

Test(window, bad_arguments_and_options_are_einval, .timeout = 30)
{
    evs_stream *s = mk_stream(NULL);
    seen c;
    seen_init(&c);
    evs_windower *w = (evs_windower *)1;
    evs_window_opts ok = {.size_ms = 1000};
    ASSERT_RC(evs_window_subscribe(NULL, s, NULL, collect, NULL, &c, &ok), EVS_EINVAL);
    ASSERT_RC(evs_window_subscribe(&w, NULL, NULL, collect, NULL, &c, &ok), EVS_EINVAL);
    cr_assert_null(w);
    w = (evs_windower *)1;
    ASSERT_RC(evs_window_subscribe(&w, s, NULL, NULL, NULL, &c, &ok), EVS_EINVAL);
    cr_assert_null(w);
    ASSERT_RC(evs_window_subscribe(&w, s, NULL, collect, NULL, &c, NULL), EVS_EINVAL);
    const evs_window_opts bad[] = {
        {.size_ms = 0},
        {.size_ms = -1},
        {.size_ms = EVS_WINDOW_MAX_MS + 1},
        {.size_ms = 1000, .slide_ms = 1001},
        {.size_ms = 1000, .slide_ms = -1},
        {.size_ms = 1000, .offset_ms = 1000},
        {.size_ms = 1000, .slide_ms = 100, .offset_ms = 100},
        {.size_ms = 1000, .offset_ms = -1},
        {.size_ms = 1000, .lateness_ms = -1},
        {.size_ms = 1000, .lateness_ms = EVS_WINDOW_MAX_MS + 1},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        w = (evs_windower *)1;
        int rc = evs_window_subscribe(&w, s, NULL, collect, NULL, &c, &bad[i]);
        cr_assert_eq(rc, EVS_EINVAL, "case %zu: got %s", i, evs_errname(rc));
        cr_assert_null(w, "case %zu", i);
    }
    /* The extremes that are allowed. */
    const evs_window_opts good[] = {
        {.size_ms = EVS_WINDOW_MAX_MS, .slide_ms = 1, .offset_ms = 0,
         .lateness_ms = EVS_WINDOW_MAX_MS},
        {.size_ms = 1, .slide_ms = 1},
        {.size_ms = 1000, .slide_ms = 1000, .offset_ms = 999},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        ASSERT_RC(evs_window_subscribe(&w, s, NULL, collect, NULL, &c, &good[i]), 0);
        ASSERT_RC(evs_window_stop(w), 0);
    }
    ASSERT_RC(evs_window_stats_get(NULL, &(evs_window_stats){0}), EVS_EINVAL);
    ASSERT_RC(evs_stream_close(s, EVS_FOREVER, NULL), 0);
    w = (evs_windower *)1;
    ASSERT_RC(evs_window_subscribe(&w, s, NULL, collect, NULL, &c, &ok), EVS_ECLOSED);
    cr_assert_null(w);
    cr_assert_eq(evs__hb_thread_running(), 0, "a failed subscribe left its timer");
    ASSERT_RC(evs_stream_destroy(s), 0);
    seen_fini(&c);
}

Test(window, subscribe_survives_allocation_failure, .timeout = 30)
{
    evs_stream *s = mk_stream(NULL);
    seen c;
    seen_init(&c);
    evs_windower *w = NULL;
    evs_window_opts o = {.size_ms = 1000};
    int rc;
    for (long k = 0;; k++) {
        evs__alloc_fail_after(k);
        rc = evs_window_subscribe(&w, s, "x", collect, NULL, &c, &o);
        evs__alloc_fail_after(-1);
        if (rc == 0)
            break;
        cr_assert_eq(rc, EVS_ENOMEM, "k=%ld: got %s", k, evs_errname(rc));
        cr_assert_null(w);
    }
    ASSERT_RC(evs_window_stop(w), 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
    seen_fini(&c);
}

/* ------------------------------------------------------------------ */
/* Real clock, concurrent inline publishers: every event taken is in   */
/* exactly one tumbling window, windows come in order, none twice.     */

typedef struct racer {
    evs_stream *s;
    int n;
} racer;

static void *race_publisher(void *arg)
{
    racer *r = arg;
    for (int i = 0; i < r->n; i++) {
        evs_event *ev;
        ASSERT_RC(evs_event_create(&ev, EVS_TYPE_MESSAGE, "t", NULL, 0), 0);
        ASSERT_RC(evs_stream_publish(r->s, ev), 0);
        evs_event_unref(ev);
        if (i % 64 == 0)
            sched_yield();
    }
    return NULL;
}

typedef struct tally {
    pthread_mutex_t mu;
    int64_t last_start;
    uint64_t events, windows;
    uint8_t *seen_id; /* by id */
    size_t max_id;
    bool bad_order, dup, outside;
} tally;

static int count_window(const evs_window *w, const evs_event *const *events, size_t n,
                        void *user)
{
    tally *t = user;
    pthread_mutex_lock(&t->mu);
    if (t->windows > 0 && w->start_ns <= t->last_start)
        t->bad_order = true;
    t->last_start = w->start_ns;
    t->windows++;
    for (size_t i = 0; i < n; i++) {
        uint64_t id = evs_event_id(events[i]);
        int64_t ts = evs_event_timestamp(events[i]);
        if (ts < w->start_ns || ts >= w->end_ns)
            t->outside = true;
        if (id <= t->max_id && t->seen_id[id]++)
            t->dup = true;
        t->events++;
    }
    pthread_mutex_unlock(&t->mu);
    return 0;
}

static void race(evs_delivery delivery)
{
    evs_stream_opts so = {.delivery = delivery};
    evs_stream *s = mk_stream(&so);
    enum { PUBS = 2, PER = 5000 };
    tally t = {.max_id = PUBS * PER};
    pthread_mutex_init(&t.mu, NULL);
    t.seen_id = calloc(t.max_id + 1, 1);
    evs_windower *w;
    evs_window_opts o = {.size_ms = 2, .lateness_ms = 1};
    ASSERT_RC(evs_window_subscribe(&w, s, NULL, count_window, NULL, &t, &o), 0);
    racer r = {.s = s, .n = PER};
    pthread_t th[PUBS];
    for (int i = 0; i < PUBS; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, race_publisher, &r), 0);
    for (int i = 0; i < PUBS; i++)
        pthread_join(th[i], NULL);
    evs_window_stats st;
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    /* Delivery is over: the counts are final; stop hands over the rest. */
    ASSERT_RC(evs_window_stats_get(w, &st), 0);
    ASSERT_RC(evs_window_stop(w), 0);
    cr_assert_not(t.bad_order, "windows out of order or repeated");
    cr_assert_not(t.dup, "an event in two tumbling windows");
    cr_assert_not(t.outside, "an event outside its window's bounds");
    cr_assert_eq(t.events + st.late, (uint64_t)PUBS * PER, "taken %llu + late %llu",
                 (unsigned long long)t.events, (unsigned long long)st.late);
    cr_assert_eq(st.events, t.events);
    ASSERT_RC(evs_stream_destroy(s), 0);
    free(t.seen_id);
    pthread_mutex_destroy(&t.mu);
}

Test(window, real_clock_concurrent_publishers_lose_and_repeat_nothing, .timeout = 60)
{
    race(EVS_DELIVERY_DISPATCHER);
}

Test(window, real_clock_concurrent_inline_publishers_lose_and_repeat_nothing, .timeout = 60)
{
    race(EVS_DELIVERY_INLINE);
}
