/*
 * InMemoryStream: publish, subscribe, delivery modes, overflow policies,
 * close/flush/destroy, history, stats and allocation failure.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>

#include "evs_internal.h"
#include "evstream.h"
#include "evs_test.h"



/* Records what a subscription saw. */
typedef struct seen {
    atomic_ulong count;
    atomic_ulong last_id;
    atomic_bool  out_of_order;
    pthread_t    thread;
    gate        *gate; /* if set, the first call waits here */
    atomic_int   rc;   /* handler's return value */
    uint64_t     ids[64];
} seen;

static int record(const evs_event *ev, void *user)
{
    seen *s = user;
    unsigned long n = atomic_load(&s->count);
    uint64_t id = evs_event_id(ev);
    if (id <= atomic_load(&s->last_id))
        atomic_store(&s->out_of_order, true);
    atomic_store(&s->last_id, id);
    if (n < 64)
        s->ids[n] = id;
    s->thread = pthread_self();
    atomic_store(&s->count, n + 1);
    if (s->gate != NULL && n == 0)
        gate_pass(s->gate);
    return atomic_load(&s->rc);
}

static evs_event *mk(const char *topic, const char *text)
{
    evs_event *ev;
    ASSERT_RC(evs_event_create(&ev, EVS_TYPE_MESSAGE, topic, text, strlen(text)), 0);
    return ev;
}

static int publish_text(evs_stream *s, const char *text)
{
    evs_event *ev = mk("t", text);
    int rc = evs_stream_publish(s, ev);
    evs_event_unref(ev);
    return rc;
}

static evs_stream *mk_stream(const evs_stream_opts *o)
{
    evs_stream *s;
    ASSERT_RC(evs_stream_create(&s, o), 0);
    cr_assert_not_null(s);
    return s;
}

Test(stream, create_with_null_opts_uses_defaults)
{
    evs_stream *s = mk_stream(NULL);
    evs_stream_stats st;
    ASSERT_RC(evs_stream_stats_get(s, &st), 0);
    cr_assert_eq(st.published, 0);
    cr_assert_eq(st.subscribers, 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

Test(stream, create_rejects_bad_options)
{
    evs_stream *s = (evs_stream *)1;
    evs_stream_opts bad[] = {
        {.capacity = 3},
        {.capacity = 1},
        {.capacity = EVS_MAX_CAPACITY * 2},
        {.overflow = (evs_overflow)99},
        {.block_timeout_ms = -5},
        {.delivery = (evs_delivery)7},
        {.wait = (evs_wait)9},
        {.history = EVS_MAX_CAPACITY + 1},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ASSERT_RC(evs_stream_create(&s, &bad[i]), EVS_EINVAL);
        cr_assert_null(s, "case %zu left an object", i);
    }
    ASSERT_RC(evs_stream_create(NULL, NULL), EVS_EINVAL);
    ASSERT_RC(evs_stream_create(&s, &bad[0]), EVS_EINVAL);
    cr_assert_str_eq(evs_last_error(), "capacity 3 is not a power of two in 2..16777216",
                     "got \"%s\"", evs_last_error());
}

/* The timer thread publishes heartbeats: on a single-publisher ring it
 * would be a second publisher, and the two would overwrite each other's
 * claims, losing accepted events silently. Refused. */
Test(stream, single_publisher_with_heartbeats_is_refused)
{
    evs_stream *s = (evs_stream *)1;
    evs_stream_opts o = {.single_publisher = true, .heartbeat_ms = 1000};
    ASSERT_RC(evs_stream_create(&s, &o), EVS_EINVAL);
    cr_assert_null(s);
    cr_assert(strstr(evs_last_error(), "single_publisher cannot be combined with heartbeat_ms"),
              "got \"%s\"", evs_last_error());
    /* Inline delivery has no ring: heartbeats publish like anyone. */
    o.delivery = EVS_DELIVERY_INLINE;
    ASSERT_RC(evs_stream_create(&s, &o), 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
    /* Either one alone is fine. */
    evs_stream_opts sp = {.single_publisher = true}, hb = {.heartbeat_ms = 1000};
    ASSERT_RC(evs_stream_create(&s, &sp), 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
    ASSERT_RC(evs_stream_create(&s, &hb), 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

Test(stream, publish_delivers_on_the_dispatcher_thread_in_id_order, .timeout = 30)
{
    evs_stream *s = mk_stream(NULL);
    seen rec = {0};
    evs_sub *sub;
    ASSERT_RC(evs_subscribe(&sub, s, NULL, record, NULL, &rec, NULL), 0);
    for (int i = 0; i < 10; i++)
        ASSERT_RC(publish_text(s, "x"), 0);
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    cr_assert_eq(atomic_load(&rec.count), 10);
    cr_assert(!atomic_load(&rec.out_of_order));
    cr_assert_eq(rec.ids[0], 1, "ids start at 1");
    cr_assert_eq(rec.ids[9], 10);
    cr_assert(!pthread_equal(rec.thread, pthread_self()), "ran on the publisher");
    ASSERT_RC(evs_stream_destroy(s), 0);
}

Test(stream, inline_delivery_runs_on_the_publishing_thread)
{
    evs_stream_opts o = {.delivery = EVS_DELIVERY_INLINE};
    evs_stream *s = mk_stream(&o);
    seen rec = {0};
    evs_sub *sub;
    ASSERT_RC(evs_subscribe(&sub, s, "a.b", record, NULL, &rec, NULL), 0);
    uint64_t id = 0;
    evs_event *ev = mk("t", "y");
    ASSERT_RC(evs_stream_publish_id(s, ev, &id), 0);
    evs_event_unref(ev);
    /* Inline: delivered before publish returned, no flush needed. */
    cr_assert_eq(atomic_load(&rec.count), 1);
    cr_assert_eq(id, 1);
    cr_assert(pthread_equal(rec.thread, pthread_self()));
    cr_assert_str_eq(evs_sub_pattern(sub), "a.b");
    ASSERT_RC(evs_stream_close(s, EVS_FOREVER, NULL), 0);
    ASSERT_RC(publish_text(s, "z"), EVS_ECLOSED);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

Test(stream, publish_rejects_null_arguments)
{
    evs_stream *s = mk_stream(NULL);
    evs_event *ev = mk("t", "x");
    ASSERT_RC(evs_stream_publish(NULL, ev), EVS_EINVAL);
    ASSERT_RC(evs_stream_publish(s, NULL), EVS_EINVAL);
    evs_event_unref(ev);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

Test(stream, publish_after_close_is_eclosed)
{
    evs_stream *s = mk_stream(NULL);
    ASSERT_RC(evs_stream_close(s, EVS_FOREVER, NULL), 0);
    ASSERT_RC(evs_stream_close(s, 0, NULL), 0); /* idempotent */
    ASSERT_RC(publish_text(s, "late"), EVS_ECLOSED);
    evs_sub *sub = (evs_sub *)1;
    seen rec = {0};
    ASSERT_RC(evs_subscribe(&sub, s, NULL, record, NULL, &rec, NULL), EVS_ECLOSED);
    cr_assert_null(sub);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

Test(stream, subscribe_rejects_bad_arguments)
{
    evs_stream *s = mk_stream(NULL);
    evs_sub *sub;
    seen rec = {0};
    ASSERT_RC(evs_subscribe(&sub, s, NULL, NULL, NULL, &rec, NULL), EVS_EINVAL);
    ASSERT_RC(evs_subscribe(NULL, s, NULL, record, NULL, &rec, NULL), EVS_EINVAL);
    ASSERT_RC(evs_subscribe(&sub, NULL, NULL, record, NULL, &rec, NULL), EVS_EINVAL);
    evs_sub_opts so = {.max_concurrent = EVS_MAX_CONCURRENT + 1};
    ASSERT_RC(evs_subscribe(&sub, s, NULL, record, NULL, &rec, &so), EVS_EINVAL);
    ASSERT_RC(evs_unsubscribe(NULL), EVS_EINVAL);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

Test(stream, subscription_gets_only_events_accepted_after_it, .timeout = 30)
{
    evs_stream *s = mk_stream(NULL);
    for (int i = 0; i < 5; i++)
        ASSERT_RC(publish_text(s, "before"), 0);
    seen rec = {0};
    evs_sub *sub;
    ASSERT_RC(evs_subscribe(&sub, s, NULL, record, NULL, &rec, NULL), 0);
    for (int i = 0; i < 5; i++)
        ASSERT_RC(publish_text(s, "after"), 0);
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    cr_assert_eq(atomic_load(&rec.count), 5);
    cr_assert_eq(rec.ids[0], 6);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

static bool only_even(const evs_event *ev, void *user)
{
    (void)user;
    return evs_event_id(ev) % 2 == 0;
}

Test(stream, filter_keeps_events_from_the_handler_and_counts_them, .timeout = 30)
{
    evs_stream *s = mk_stream(NULL);
    seen rec = {0};
    evs_sub *sub;
    ASSERT_RC(evs_subscribe(&sub, s, NULL, record, only_even, &rec, NULL), 0);
    for (int i = 0; i < 10; i++)
        ASSERT_RC(publish_text(s, "x"), 0);
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    cr_assert_eq(atomic_load(&rec.count), 5);
    evs_sub_stats ss;
    ASSERT_RC(evs_sub_stats_get(sub, &ss), 0);
    cr_assert_eq(ss.delivered, 5);
    cr_assert_eq(ss.filtered, 5);
    evs_stream_stats st;
    ASSERT_RC(evs_stream_stats_get(s, &st), 0);
    cr_assert_eq(st.filtered, 5);
    cr_assert_eq(st.delivered, 5);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

typedef struct hook_log {
    atomic_int calls;
    int        last_rc;
    uint64_t   last_id;
    evs_sub   *last_sub;
} hook_log;

static void on_error(evs_sub *sub, const evs_event *ev, int rc, void *user)
{
    hook_log *h = user;
    h->last_rc = rc;
    h->last_id = evs_event_id(ev);
    h->last_sub = sub;
    atomic_fetch_add(&h->calls, 1);
}

Test(stream, handler_errors_are_counted_and_reported_without_stopping_others, .timeout = 30)
{
    hook_log h = {0};
    evs_stream_opts o = {.on_error = on_error, .on_error_user = &h};
    evs_stream *s = mk_stream(&o);
    seen failing = {0}, fine = {0};
    atomic_store(&failing.rc, 42);
    evs_sub *a, *b;
    ASSERT_RC(evs_subscribe(&a, s, NULL, record, NULL, &failing, NULL), 0);
    ASSERT_RC(evs_subscribe(&b, s, NULL, record, NULL, &fine, NULL), 0);
    for (int i = 0; i < 3; i++)
        ASSERT_RC(publish_text(s, "x"), 0);
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    cr_assert_eq(atomic_load(&fine.count), 3);
    cr_assert_eq(atomic_load(&failing.count), 3);
    cr_assert_eq(atomic_load(&h.calls), 3);
    cr_assert_eq(h.last_rc, 42);
    cr_assert_eq(h.last_id, 3);
    cr_assert_eq(h.last_sub, a);
    evs_sub_stats ss;
    ASSERT_RC(evs_sub_stats_get(a, &ss), 0);
    cr_assert_eq(ss.handler_errors, 3);
    ASSERT_RC(evs_sub_stats_get(b, &ss), 0);
    cr_assert_eq(ss.handler_errors, 0);
    evs_stream_stats st;
    ASSERT_RC(evs_stream_stats_get(s, &st), 0);
    cr_assert_eq(st.handler_errors, 3);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

Test(stream, unsubscribe_stops_delivery, .timeout = 30)
{
    evs_stream *s = mk_stream(NULL);
    seen rec = {0};
    evs_sub *sub;
    ASSERT_RC(evs_subscribe(&sub, s, NULL, record, NULL, &rec, NULL), 0);
    ASSERT_RC(publish_text(s, "1"), 0);
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    ASSERT_RC(evs_unsubscribe(sub), 0);
    ASSERT_RC(publish_text(s, "2"), 0);
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    cr_assert_eq(atomic_load(&rec.count), 1);
    evs_stream_stats st;
    ASSERT_RC(evs_stream_stats_get(s, &st), 0);
    cr_assert_eq(st.subscribers, 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

typedef struct self_unsub {
    evs_sub   *sub;
    evs_sub   *other; /* unsubscribed by our first call, if set */
    atomic_int calls;
} self_unsub;

static int unsub_self(const evs_event *ev, void *user)
{
    (void)ev;
    self_unsub *u = user;
    if (atomic_fetch_add(&u->calls, 1) == 0) {
        cr_assert_eq(evs_unsubscribe(u->other ? u->other : u->sub), 0);
    }
    return 0;
}

Test(stream, handler_that_unsubscribes_itself_is_not_called_again, .timeout = 30)
{
    evs_stream *s = mk_stream(NULL);
    self_unsub u = {0};
    ASSERT_RC(evs_subscribe(&u.sub, s, NULL, unsub_self, NULL, &u, NULL), 0);
    for (int i = 0; i < 20; i++)
        ASSERT_RC(publish_text(s, "x"), 0);
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    cr_assert_eq(atomic_load(&u.calls), 1);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

Test(stream, handler_may_unsubscribe_another_subscription, .timeout = 30)
{
    evs_stream *s = mk_stream(NULL);
    seen victim = {0};
    self_unsub u = {0};
    ASSERT_RC(evs_subscribe(&u.sub, s, NULL, unsub_self, NULL, &u, NULL), 0);
    ASSERT_RC(evs_subscribe(&u.other, s, NULL, record, NULL, &victim, NULL), 0);
    for (int i = 0; i < 20; i++)
        ASSERT_RC(publish_text(s, "x"), 0);
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    cr_assert_eq(atomic_load(&u.calls), 20);
    /* Unsubscribed during the first event's delivery, before its turn. */
    cr_assert_eq(atomic_load(&victim.count), 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

typedef struct unsub_race {
    evs_sub   *sub;
    atomic_int returned;
} unsub_race;

static void *unsub_thread(void *arg)
{
    unsub_race *r = arg;
    cr_assert_eq(evs_unsubscribe(r->sub), 0);
    atomic_store(&r->returned, 1);
    return NULL;
}

Test(stream, unsubscribe_waits_for_a_running_handler, .timeout = 30)
{
    evs_stream *s = mk_stream(NULL);
    gate g;
    gate_init(&g);
    seen rec = {.gate = &g};
    unsub_race r = {0};
    ASSERT_RC(evs_subscribe(&r.sub, s, NULL, record, NULL, &rec, NULL), 0);
    ASSERT_RC(publish_text(s, "x"), 0);
    gate_wait_blocked(&g);
    pthread_t t;
    pthread_create(&t, NULL, unsub_thread, &r);
    /* The handler is still blocked, so unsubscribe must not return. Give
     * it a fair chance to return wrongly by flushing a second event
     * through nothing: we simply check the flag before opening. */
    for (int i = 0; i < 1000; i++)
        sched_yield();
    cr_assert_eq(atomic_load(&r.returned), 0, "unsubscribe returned while the handler ran");
    gate_open(&g);
    pthread_join(t, NULL);
    cr_assert_eq(atomic_load(&r.returned), 1);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

/* A stream whose only subscriber is blocked at a gate on its first
 * event, so the queue fills deterministically. */
static evs_stream *blocked_stream(evs_overflow policy, size_t cap, gate *g, seen *rec,
                                  evs_sub **sub)
{
    evs_stream_opts o = {.capacity = cap, .overflow = policy, .block_timeout_ms = 20};
    evs_stream *s = mk_stream(&o);
    gate_init(g);
    rec->gate = g;
    ASSERT_RC(evs_subscribe(sub, s, NULL, record, NULL, rec, NULL), 0);
    ASSERT_RC(publish_text(s, "first"), 0);
    gate_wait_blocked(g);
    return s;
}

Test(stream, drop_newest_discards_and_counts_what_does_not_fit, .timeout = 30)
{
    gate g;
    seen rec = {0};
    evs_sub *sub;
    evs_stream *s = blocked_stream(EVS_OVERFLOW_DROP_NEWEST, 4, &g, &rec, &sub);
    for (int i = 0; i < 10; i++)
        ASSERT_RC(publish_text(s, "x"), 0); /* dropped still answers 0 */
    evs_stream_stats st;
    ASSERT_RC(evs_stream_stats_get(s, &st), 0);
    cr_assert_eq(st.published, 5, "first + 4 queued, got %lu", (unsigned long)st.published);
    cr_assert_eq(st.dropped_newest, 6);
    gate_open(&g);
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    cr_assert_eq(atomic_load(&rec.count), 5);
    evs_sub_stats ss;
    ASSERT_RC(evs_sub_stats_get(sub, &ss), 0);
    cr_assert_eq(ss.dropped, 6);
    cr_assert_eq(rec.ids[4], 5, "the oldest survive under DROP_NEWEST");
    ASSERT_RC(evs_stream_destroy(s), 0);
}

Test(stream, drop_oldest_keeps_the_newest_and_counts_the_rest, .timeout = 30)
{
    gate g;
    seen rec = {0};
    evs_sub *sub;
    evs_stream *s = blocked_stream(EVS_OVERFLOW_DROP_OLDEST, 4, &g, &rec, &sub);
    for (int i = 0; i < 10; i++)
        ASSERT_RC(publish_text(s, "x"), 0);
    evs_stream_stats st;
    ASSERT_RC(evs_stream_stats_get(s, &st), 0);
    cr_assert_eq(st.published, 11);
    cr_assert_eq(st.dropped_oldest, 6);
    gate_open(&g);
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    cr_assert_eq(atomic_load(&rec.count), 5);
    cr_assert_eq(rec.ids[0], 1);
    cr_assert_eq(rec.ids[1], 8, "the newest four survive");
    cr_assert_eq(rec.ids[4], 11);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

Test(stream, fail_policy_returns_efull_and_counts_it, .timeout = 30)
{
    gate g;
    seen rec = {0};
    evs_sub *sub;
    evs_stream *s = blocked_stream(EVS_OVERFLOW_FAIL, 2, &g, &rec, &sub);
    ASSERT_RC(publish_text(s, "a"), 0);
    ASSERT_RC(publish_text(s, "b"), 0);
    ASSERT_RC(publish_text(s, "c"), EVS_EFULL);
    evs_stream_stats st;
    ASSERT_RC(evs_stream_stats_get(s, &st), 0);
    cr_assert_eq(st.rejected_full, 1);
    cr_assert_eq(st.queued, 3, "first in flight + 2 queued");
    cr_assert_geq(st.queue_hwm, 1);
    gate_open(&g);
    ASSERT_RC(evs_stream_destroy(s), 0);
    cr_assert_eq(atomic_load(&rec.count), 3);
}

Test(stream, block_policy_times_out_with_etimedout, .timeout = 30)
{
    gate g;
    seen rec = {0};
    evs_sub *sub;
    evs_stream *s = blocked_stream(EVS_OVERFLOW_BLOCK, 2, &g, &rec, &sub);
    ASSERT_RC(publish_text(s, "a"), 0);
    ASSERT_RC(publish_text(s, "b"), 0);
    ASSERT_RC(publish_text(s, "c"), EVS_ETIMEDOUT);
    evs_stream_stats st;
    ASSERT_RC(evs_stream_stats_get(s, &st), 0);
    cr_assert_eq(st.timed_out, 1);
    gate_open(&g);
    ASSERT_RC(evs_stream_destroy(s), 0);
    cr_assert_eq(atomic_load(&rec.count), 3);
}

typedef struct publisher_arg {
    evs_stream *s;
    int         n;
    int         rc;
} publisher_arg;

static void *publish_n(void *arg)
{
    publisher_arg *p = arg;
    for (int i = 0; i < p->n; i++)
        if ((p->rc = publish_text(p->s, "x")) != 0)
            break;
    return NULL;
}

Test(stream, blocked_publisher_resumes_when_room_frees, .timeout = 30)
{
    evs_stream_opts o = {.capacity = 2};
    evs_stream *s = mk_stream(&o);
    gate g;
    gate_init(&g);
    seen rec = {.gate = &g};
    evs_sub *sub;
    ASSERT_RC(evs_subscribe(&sub, s, NULL, record, NULL, &rec, NULL), 0);
    publisher_arg p = {.s = s, .n = 50};
    pthread_t t;
    pthread_create(&t, NULL, publish_n, &p);
    gate_wait_blocked(&g);
    gate_open(&g);
    pthread_join(t, NULL);
    ASSERT_RC(p.rc, 0);
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    cr_assert_eq(atomic_load(&rec.count), 50);
    cr_assert(!atomic_load(&rec.out_of_order));
    ASSERT_RC(evs_stream_destroy(s), 0);
}

typedef struct reentrant {
    evs_stream *s;
    atomic_int  publish_rc, flush_rc, destroy_rc, close_rc;
    atomic_int  calls;
    atomic_int  finished;
} reentrant;

static int reenter(const evs_event *ev, void *user)
{
    (void)ev;
    reentrant *r = user;
    if (atomic_fetch_add(&r->calls, 1) == 0) {
        /* Capacity 2: fill the queue, then one more must not wait for
         * this very thread. */
        publish_text(r->s, "1");
        publish_text(r->s, "2");
        atomic_store(&r->publish_rc, publish_text(r->s, "3"));
        atomic_store(&r->flush_rc, evs_stream_flush(r->s, EVS_FOREVER, NULL));
        atomic_store(&r->destroy_rc, evs_stream_destroy(r->s));
        uint64_t left = 0;
        atomic_store(&r->close_rc, evs_stream_close(r->s, EVS_FOREVER, &left));
        atomic_store(&r->finished, 1);
    }
    return 0;
}

Test(stream, waits_for_the_calling_dispatcher_are_refused, .timeout = 30)
{
    evs_stream_opts o = {.capacity = 2};
    evs_stream *s = mk_stream(&o);
    reentrant r = {.s = s};
    evs_sub *sub;
    ASSERT_RC(evs_subscribe(&sub, s, NULL, reenter, NULL, &r, NULL), 0);
    ASSERT_RC(publish_text(s, "go"), 0);
    /* The handler closes the stream itself; wait (bounded) for it. */
    int64_t deadline = evs__now_mono_ns() + 10 * 1000000000LL;
    while (!atomic_load(&r.finished) && evs__now_mono_ns() < deadline)
        sched_yield();
    cr_assert(atomic_load(&r.finished), "handler never finished");
    ASSERT_RC(evs_stream_destroy(s), 0);
    ASSERT_RC(atomic_load(&r.publish_rc), EVS_EDEADLK);
    ASSERT_RC(atomic_load(&r.flush_rc), EVS_EDEADLK);
    ASSERT_RC(atomic_load(&r.destroy_rc), EVS_EDEADLK);
    ASSERT_RC(atomic_load(&r.close_rc), EVS_ETIMEDOUT);
    cr_assert_eq(atomic_load(&r.calls), 3, "go + the two that fit");
}

Test(stream, close_delivers_everything_accepted, .timeout = 30)
{
    evs_stream *s = mk_stream(NULL);
    seen rec = {0};
    evs_sub *sub;
    ASSERT_RC(evs_subscribe(&sub, s, NULL, record, NULL, &rec, NULL), 0);
    for (int i = 0; i < 1000; i++)
        ASSERT_RC(publish_text(s, "x"), 0);
    uint64_t left = 99;
    ASSERT_RC(evs_stream_close(s, EVS_FOREVER, &left), 0);
    cr_assert_eq(left, 0);
    cr_assert_eq(atomic_load(&rec.count), 1000);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

Test(stream, close_timeout_reports_what_is_left, .timeout = 30)
{
    gate g;
    seen rec = {0};
    evs_sub *sub;
    evs_stream *s = blocked_stream(EVS_OVERFLOW_BLOCK, 8, &g, &rec, &sub);
    ASSERT_RC(publish_text(s, "a"), 0);
    ASSERT_RC(publish_text(s, "b"), 0);
    uint64_t left = 0;
    ASSERT_RC(evs_stream_close(s, 10, &left), EVS_ETIMEDOUT);
    cr_assert_eq(left, 3, "the blocked one and two queued, got %lu", (unsigned long)left);
    ASSERT_RC(publish_text(s, "c"), EVS_ECLOSED);
    gate_open(&g);
    ASSERT_RC(evs_stream_close(s, EVS_FOREVER, &left), 0);
    cr_assert_eq(left, 0);
    cr_assert_eq(atomic_load(&rec.count), 3);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

Test(stream, recent_returns_history_newest_last, .timeout = 30)
{
    evs_stream_opts o = {.history = 3};
    evs_stream *s = mk_stream(&o);
    for (int i = 0; i < 5; i++)
        ASSERT_RC(publish_text(s, "x"), 0);
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    const evs_event *out[8];
    int n = evs_stream_recent(s, out, 8);
    cr_assert_eq(n, 3);
    cr_assert_eq(evs_event_id(out[0]), 3);
    cr_assert_eq(evs_event_id(out[2]), 5);
    for (int i = 0; i < n; i++)
        evs_event_unref(out[i]);
    n = evs_stream_recent(s, out, 2);
    cr_assert_eq(n, 2);
    cr_assert_eq(evs_event_id(out[0]), 4, "the newest two");
    for (int i = 0; i < n; i++)
        evs_event_unref(out[i]);
    ASSERT_RC(evs_stream_recent(NULL, out, 2), EVS_EINVAL);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

Test(stream, history_none_keeps_nothing, .timeout = 30)
{
    evs_stream_opts o = {.history = EVS_HISTORY_NONE};
    evs_stream *s = mk_stream(&o);
    ASSERT_RC(publish_text(s, "x"), 0);
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    const evs_event *out[2];
    cr_assert_eq(evs_stream_recent(s, out, 2), 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

Test(stream, republished_event_shares_payload_under_a_new_id, .timeout = 30)
{
    evs_stream_opts o = {.delivery = EVS_DELIVERY_INLINE};
    evs_stream *a = mk_stream(&o);
    evs_stream *b = mk_stream(NULL);
    ASSERT_RC(publish_text(b, "warm"), 0); /* so b's next id is 2 */
    evs_event *ev = mk("orders", "payload");
    uint64_t ida, idb;
    ASSERT_RC(evs_stream_publish_id(a, ev, &ida), 0);
    ASSERT_RC(evs_stream_publish_id(b, ev, &idb), 0);
    cr_assert_eq(ida, 1);
    cr_assert_eq(idb, 2);
    cr_assert_eq(evs_event_id(ev), 1, "the original keeps its first id");
    cr_assert(evs_event_published(ev));
    ASSERT_RC(evs_event_meta_set_str(ev, "k", "v"), EVS_ESEALED);
    ASSERT_RC(evs_stream_flush(b, EVS_FOREVER, NULL), 0);
    const evs_event *got[1];
    cr_assert_eq(evs_stream_recent(b, got, 1), 1);
    size_t l1, l2;
    cr_assert_eq(evs_event_data(got[0], &l1), evs_event_data(ev, &l2), "payload copied");
    cr_assert_eq(evs_event_id(got[0]), 2);
    cr_assert_str_eq(evs_event_topic(got[0]), "orders");
    evs_event_unref(got[0]);
    evs_event_unref(ev);
    ASSERT_RC(evs_stream_destroy(a), 0);
    ASSERT_RC(evs_stream_destroy(b), 0);
}

Test(stream, every_wait_strategy_delivers, .timeout = 30)
{
    evs_wait modes[] = {EVS_WAIT_PARK, EVS_WAIT_YIELD, EVS_WAIT_SPIN};
    for (size_t m = 0; m < 3; m++) {
        evs_stream_opts o = {.wait = modes[m]};
        evs_stream *s = mk_stream(&o);
        seen rec = {0};
        evs_sub *sub;
        ASSERT_RC(evs_subscribe(&sub, s, NULL, record, NULL, &rec, NULL), 0);
        for (int i = 0; i < 100; i++)
            ASSERT_RC(publish_text(s, "x"), 0);
        ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
        cr_assert_eq(atomic_load(&rec.count), 100, "mode %zu", m);
        ASSERT_RC(evs_stream_destroy(s), 0);
    }
}

Test(stream, stats_count_published_and_delivered, .timeout = 30)
{
    evs_stream *s = mk_stream(NULL);
    seen r1 = {0}, r2 = {0};
    evs_sub *a, *b;
    ASSERT_RC(evs_subscribe(&a, s, NULL, record, NULL, &r1, NULL), 0);
    ASSERT_RC(evs_subscribe(&b, s, NULL, record, NULL, &r2, NULL), 0);
    for (int i = 0; i < 7; i++)
        ASSERT_RC(publish_text(s, "x"), 0);
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    evs_stream_stats st;
    ASSERT_RC(evs_stream_stats_get(s, &st), 0);
    cr_assert_eq(st.published, 7);
    cr_assert_eq(st.delivered, 14);
    cr_assert_eq(st.subscribers, 2);
    cr_assert_eq(st.queued, 0);
    cr_assert_geq(st.queue_hwm, 1);
    cr_assert_eq(st.dropped_newest + st.dropped_oldest + st.rejected_full + st.timed_out, 0);
    ASSERT_RC(evs_stream_stats_get(NULL, &st), EVS_EINVAL);
    evs_sub_stats ss;
    ASSERT_RC(evs_sub_stats_get(a, &ss), 0);
    cr_assert_eq(ss.delivered, 7);
    ASSERT_RC(evs_sub_stats_get(NULL, &ss), EVS_EINVAL);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

Test(stream, destroy_accepts_null)
{
    ASSERT_RC(evs_stream_destroy(NULL), 0);
}

/* For k = 0, 1, 2, ... fail the k-th allocation until the call succeeds:
 * every failure is EVS_ENOMEM and leaves nothing behind (ASan checks). */
Test(stream, create_and_subscribe_survive_allocation_failure, .timeout = 60)
{
    int rc;
    long k = 0;
    evs_stream *s;
    do {
        evs__alloc_fail_after(k++);
        rc = evs_stream_create(&s, NULL);
        evs__alloc_fail_after(-1);
        if (rc != 0) {
            ASSERT_RC(rc, EVS_ENOMEM);
            cr_assert_null(s);
        }
    } while (rc != 0);
    cr_assert_gt(k, 1, "no allocation was failed");

    seen rec = {0};
    evs_sub *sub;
    k = 0;
    do {
        evs__alloc_fail_after(k++);
        rc = evs_subscribe(&sub, s, "p", record, NULL, &rec, NULL);
        evs__alloc_fail_after(-1);
        if (rc != 0)
            ASSERT_RC(rc, EVS_ENOMEM);
    } while (rc != 0);

    /* Publishing an already-published event needs an alias. */
    evs_event *ev = mk("t", "x");
    ASSERT_RC(evs_stream_publish(s, ev), 0);
    k = 0;
    do {
        evs__alloc_fail_after(k++);
        rc = evs_stream_publish(s, ev);
        evs__alloc_fail_after(-1);
        if (rc != 0)
            ASSERT_RC(rc, EVS_ENOMEM);
    } while (rc != 0);
    evs_event_unref(ev);

    /* The stream is still usable. */
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    cr_assert_eq(atomic_load(&rec.count), 2);
    ASSERT_RC(evs_unsubscribe(sub), 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

Test(stream, publish_move_takes_the_callers_reference, .timeout = 30)
{
    evs_stream *s = mk_stream(NULL);
    seen rec = {0};
    evs_sub *sub;
    ASSERT_RC(evs_subscribe(&sub, s, NULL, record, NULL, &rec, NULL), 0);
    uint64_t id = 0;
    ASSERT_RC(evs_stream_publish_move(s, mk("t", "moved"), &id), 0);
    cr_assert_eq(id, 1);
    ASSERT_RC(evs_stream_publish_move(s, mk("t", "no id wanted"), NULL), 0);
    /* An already-published event moves in as an alias; our reference to
     * the original is dropped by the call (ASan reports a leak if not). */
    evs_event *ev = mk("t", "again");
    ASSERT_RC(evs_stream_publish(s, ev), 0);
    ASSERT_RC(evs_stream_publish_move(s, ev, &id), 0);
    cr_assert_eq(id, 4);
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    cr_assert_eq(atomic_load(&rec.count), 4);
    /* Failures consume the reference too. */
    ASSERT_RC(evs_stream_publish_move(NULL, mk("t", "x"), &id), EVS_EINVAL);
    cr_assert_eq(id, 0);
    ASSERT_RC(evs_stream_close(s, EVS_FOREVER, NULL), 0);
    ASSERT_RC(evs_stream_publish_move(s, mk("t", "late"), NULL), EVS_ECLOSED);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

Test(stream, inline_publish_move_takes_the_callers_reference)
{
    evs_stream_opts o = {.delivery = EVS_DELIVERY_INLINE};
    evs_stream *s = mk_stream(&o);
    seen rec = {0};
    evs_sub *sub;
    ASSERT_RC(evs_subscribe(&sub, s, NULL, record, NULL, &rec, NULL), 0);
    ASSERT_RC(evs_stream_publish_move(s, mk("t", "a"), NULL), 0);
    cr_assert_eq(atomic_load(&rec.count), 1);
    ASSERT_RC(evs_stream_close(s, 0, NULL), 0);
    ASSERT_RC(evs_stream_publish_move(s, mk("t", "b"), NULL), EVS_ECLOSED);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

Test(stream, single_publisher_stream_delivers_in_order_and_closes, .timeout = 60)
{
    evs_stream_opts o = {.single_publisher = true, .capacity = 64};
    evs_stream *s = mk_stream(&o);
    seen rec = {0};
    evs_sub *sub;
    ASSERT_RC(evs_subscribe(&sub, s, NULL, record, NULL, &rec, NULL), 0);
    for (int i = 0; i < 100000; i++)
        ASSERT_RC(evs_stream_publish_move(s, mk("t", "x"), NULL), 0);
    uint64_t left = 1;
    ASSERT_RC(evs_stream_close(s, EVS_FOREVER, &left), 0);
    cr_assert_eq(left, 0);
    cr_assert_eq(atomic_load(&rec.count), 100000);
    cr_assert(!atomic_load(&rec.out_of_order));
    ASSERT_RC(publish_text(s, "late"), EVS_ECLOSED);
    evs_stream_stats st;
    ASSERT_RC(evs_stream_stats_get(s, &st), 0);
    cr_assert_eq(st.published, 100000);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

/* A parked dispatcher must wake for a single publisher's event: publish
 * one event at a time and wait for each, so the dispatcher parks between
 * them every time. */
Test(stream, parked_dispatcher_wakes_for_each_event, .timeout = 60)
{
    bool sp[] = {false, true};
    for (int k = 0; k < 2; k++) {
        evs_stream_opts o = {.single_publisher = sp[k]};
        evs_stream *s = mk_stream(&o);
        seen rec = {0};
        evs_sub *sub;
        ASSERT_RC(evs_subscribe(&sub, s, NULL, record, NULL, &rec, NULL), 0);
        for (unsigned long i = 1; i <= 200; i++) {
            ASSERT_RC(publish_text(s, "tick"), 0);
            int64_t deadline = evs__now_mono_ns() + 10 * 1000000000LL;
            while (atomic_load(&rec.count) < i && evs__now_mono_ns() < deadline)
                ; /* spin: no sleep, so the dispatcher races us to park */
            cr_assert_eq(atomic_load(&rec.count), i, "event %lu stranded (sp=%d)", i, sp[k]);
        }
        ASSERT_RC(evs_stream_destroy(s), 0);
    }
}

/* ------------------------------------------------------------------ */
/* Slot storage: evs_stream_claim / evs_stream_commit                  */

static evs_stream *slot_stream(size_t slot_bytes, size_t cap, evs_overflow pol)
{
    evs_stream_opts o = {.slot_bytes = slot_bytes, .capacity = cap, .overflow = pol,
                         .block_timeout_ms = 20};
    return mk_stream(&o);
}

static int claim_text(evs_stream *s, const char *topic, const char *text)
{
    evs_event *ev;
    void *data;
    int rc = evs_stream_claim(s, EVS_TYPE_MESSAGE, topic, strlen(text), &ev, &data);
    if (rc != 0)
        return rc;
    memcpy(data, text, strlen(text));
    return evs_stream_commit(s, ev);
}

Test(stream, slot_options_are_validated)
{
    evs_stream *s;
    evs_stream_opts bad[] = {
        {.slot_bytes = EVS_MAX_SLOT_BYTES + 1},
        {.slot_bytes = 64, .overflow = EVS_OVERFLOW_DROP_OLDEST},
        {.slot_bytes = 64, .delivery = EVS_DELIVERY_INLINE},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ASSERT_RC(evs_stream_create(&s, &bad[i]), EVS_EINVAL);
}

Test(stream, claim_needs_slot_storage_and_room)
{
    evs_stream *plain = mk_stream(NULL);
    evs_event *ev = (evs_event *)1;
    void *data = (void *)1;
    ASSERT_RC(evs_stream_claim(plain, EVS_TYPE_MESSAGE, "t", 1, &ev, &data), EVS_EINVAL);
    cr_assert_null(ev);
    cr_assert_null(data);
    ASSERT_RC(evs_stream_destroy(plain), 0);

    /* 32 bytes: the topic and its NUL take 16 (data is 16-aligned). */
    evs_stream *s = slot_stream(32, 0, EVS_OVERFLOW_BLOCK);
    ASSERT_RC(evs_stream_claim(s, EVS_TYPE_CUSTOM, "t", 1, &ev, &data), EVS_EINVAL);
    ASSERT_RC(evs_stream_claim(s, EVS_TYPE_MESSAGE, "t", 1, NULL, &data), EVS_EINVAL);
    ASSERT_RC(evs_stream_claim(s, EVS_TYPE_MESSAGE, "t", 17, &ev, &data), EVS_ETOOBIG);
    ASSERT_RC(evs_stream_claim(s, EVS_TYPE_MESSAGE, NULL, 33, &ev, &data), EVS_ETOOBIG);
    /* 16 topic bytes + NUL round up to 32: no room left for data. */
    ASSERT_RC(evs_stream_claim(s, EVS_TYPE_MESSAGE, "sixteen-bytes-xx", 1, &ev, &data),
              EVS_ETOOBIG);
    ASSERT_RC(evs_stream_claim(s, EVS_TYPE_MESSAGE, "t", 16, &ev, &data), 0);
    cr_assert_eq((uintptr_t)data % 16, 0, "slot data is 16-aligned");
    ASSERT_RC(evs_stream_commit(s, ev), 0);
    ASSERT_RC(evs_stream_commit(s, ev), EVS_EINVAL); /* twice */
    evs_event *heap = mk("t", "x");
    ASSERT_RC(evs_stream_commit(s, heap), EVS_EINVAL);
    evs_event_unref(heap);
    ASSERT_RC(evs_stream_commit(NULL, ev), EVS_EINVAL);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

typedef struct slot_seen {
    atomic_ulong count;
    const evs_event *kept[4]; /* references taken in the handler */
    char meta_seen[16];
} slot_seen;

static int keep_first(const evs_event *ev, void *user)
{
    slot_seen *ss = user;
    unsigned long n = atomic_load(&ss->count);
    if (n < 4)
        ss->kept[n] = evs_event_ref(ev);
    const char *v;
    size_t len;
    if (n == 0 && evs_event_meta_get_str(ev, "k", &v, &len) == 0 && len < sizeof(ss->meta_seen))
        memcpy(ss->meta_seen, v, len);
    atomic_store(&ss->count, n + 1);
    return 0;
}

Test(stream, claimed_events_are_delivered_and_refs_are_copies, .timeout = 30)
{
    evs_stream *s = slot_stream(64, 4, EVS_OVERFLOW_BLOCK);
    slot_seen ss = {0};
    evs_sub *sub;
    ASSERT_RC(evs_subscribe(&sub, s, NULL, keep_first, NULL, &ss, NULL), 0);

    evs_event *ev;
    void *data;
    ASSERT_RC(evs_stream_claim(s, EVS_TYPE_MESSAGE, "a.b", 5, &ev, &data), 0);
    cr_assert_eq(evs_event_id(ev), 1, "the id is known at claim time");
    memcpy(data, "hello", 5);
    ASSERT_RC(evs_event_set_content(ev, EVS_CONTENT_TEXT), 0);
    ASSERT_RC(evs_event_meta_set_str(ev, "k", "v1"), 0);
    ASSERT_RC(evs_stream_commit(s, ev), 0);
    /* Wrap the 4-slot ring several times; each lap reuses the slots. */
    for (int i = 0; i < 20; i++)
        ASSERT_RC(claim_text(s, "a.b", "again"), 0);
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    cr_assert_eq(atomic_load(&ss.count), 21);
    cr_assert_str_eq(ss.meta_seen, "v1");

    /* The kept references are copies that survived the slot reuse. */
    const evs_event *k = ss.kept[0];
    cr_assert_not_null(k);
    cr_assert_eq(evs_event_id(k), 1);
    size_t len;
    const char *d = evs_event_data(k, &len);
    cr_assert_eq(len, 5);
    cr_assert_eq(memcmp(d, "hello", 5), 0);
    cr_assert_str_eq(evs_event_topic(k), "a.b");
    cr_assert_eq(evs_event_content(k), EVS_CONTENT_TEXT);
    cr_assert(evs_event_published(k));
    for (int i = 0; i < 4; i++)
        evs_event_unref(ss.kept[i]);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

Test(stream, slot_stream_history_holds_copies, .timeout = 30)
{
    evs_stream_opts o = {.slot_bytes = 32, .capacity = 2, .history = 3};
    evs_stream *s = mk_stream(&o);
    for (int i = 0; i < 6; i++)
        ASSERT_RC(claim_text(s, "h", "x"), 0);
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    const evs_event *out[3];
    cr_assert_eq(evs_stream_recent(s, out, 3), 3);
    cr_assert_eq(evs_event_id(out[0]), 4);
    cr_assert_eq(evs_event_id(out[2]), 6);
    for (int i = 0; i < 3; i++)
        evs_event_unref(out[i]);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

typedef struct forwarder {
    evs_stream *to;
    atomic_int  rc;
} forwarder;

static int forward(const evs_event *ev, void *user)
{
    forwarder *f = user;
    atomic_store(&f->rc, evs_stream_publish(f->to, ev));
    return 0;
}

Test(stream, a_slot_event_forwarded_from_a_handler_is_copied, .timeout = 30)
{
    evs_stream *src = slot_stream(32, 2, EVS_OVERFLOW_BLOCK);
    evs_stream *dst = mk_stream(NULL);
    forwarder f = {.to = dst};
    evs_sub *sub;
    ASSERT_RC(evs_subscribe(&sub, src, NULL, forward, NULL, &f, NULL), 0);
    ASSERT_RC(claim_text(src, "fw", "payload"), 0);
    for (int i = 0; i < 5; i++)
        ASSERT_RC(claim_text(src, "fw", "other"), 0); /* reuse the slots */
    ASSERT_RC(evs_stream_flush(src, EVS_FOREVER, NULL), 0);
    ASSERT_RC(atomic_load(&f.rc), 0);
    ASSERT_RC(evs_stream_flush(dst, EVS_FOREVER, NULL), 0);
    const evs_event *got[6];
    cr_assert_eq(evs_stream_recent(dst, got, 6), 6);
    size_t len;
    const char *d = evs_event_data(got[0], &len);
    cr_assert_eq(len, 7);
    cr_assert_eq(memcmp(d, "payload", 7), 0);
    cr_assert_eq(evs_event_id(got[0]), 1, "dst numbers it");
    for (int i = 0; i < 6; i++)
        evs_event_unref(got[i]);
    ASSERT_RC(evs_stream_destroy(src), 0);
    ASSERT_RC(evs_stream_destroy(dst), 0);
}

Test(stream, claim_on_a_full_ring_follows_the_policy, .timeout = 30)
{
    evs_overflow pol[] = {EVS_OVERFLOW_FAIL, EVS_OVERFLOW_DROP_NEWEST, EVS_OVERFLOW_BLOCK};
    int want[] = {EVS_EFULL, EVS_EFULL, EVS_ETIMEDOUT};
    for (int k = 0; k < 3; k++) {
        evs_stream *s = slot_stream(32, 2, pol[k]);
        gate g;
        gate_init(&g);
        seen rec = {.gate = &g};
        evs_sub *sub;
        ASSERT_RC(evs_subscribe(&sub, s, NULL, record, NULL, &rec, NULL), 0);
        ASSERT_RC(claim_text(s, "t", "first"), 0);
        gate_wait_blocked(&g);
        /* The first is being delivered and still holds its slot. */
        ASSERT_RC(claim_text(s, "t", "second"), 0);
        ASSERT_RC(claim_text(s, "t", "third"), want[k]);
        evs_stream_stats st;
        ASSERT_RC(evs_stream_stats_get(s, &st), 0);
        cr_assert_eq(st.rejected_full + st.dropped_newest + st.timed_out, 1, "policy %d", k);
        gate_open(&g);
        ASSERT_RC(evs_stream_destroy(s), 0);
        cr_assert_eq(atomic_load(&rec.count), 2);
    }
}

/* ------------------------------------------------------------------ */
/* Heartbeats, on a fake clock (heartbeat.h)                           */

#include "heartbeat.h"


typedef struct beats {
    atomic_ulong heartbeats, others;
} beats;

static int count_beats(const evs_event *ev, void *user)
{
    beats *b = user;
    if (evs_event_type(ev) == EVS_TYPE_HEARTBEAT)
        atomic_fetch_add(&b->heartbeats, 1);
    else
        atomic_fetch_add(&b->others, 1);
    return 0;
}

static evs_stream *beating_stream(bool topics, evs_delivery delivery, beats *b)
{
    ASSERT_RC(evs__hb_set_clock(&fake_clock), 0);
    evs_stream_opts o = {.heartbeat_ms = 1000, .topics = topics, .delivery = delivery};
    evs_stream *s = mk_stream(&o);
    evs_sub *sub;
    ASSERT_RC(evs_subscribe(&sub, s, topics ? "only.this" : NULL, count_beats, NULL, b, NULL), 0);
    return s;
}

Test(stream, idle_stream_gets_a_heartbeat_each_interval, .timeout = 30)
{
    beats b = {0};
    evs_stream *s = beating_stream(false, EVS_DELIVERY_DISPATCHER, &b);
    clock_at_ms(999);
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    cr_assert_eq(atomic_load(&b.heartbeats), 0, "not before the interval");
    clock_at_ms(1000);
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    cr_assert_eq(atomic_load(&b.heartbeats), 1);
    clock_at_ms(2000);
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    cr_assert_eq(atomic_load(&b.heartbeats), 2);
    evs_stream_stats st;
    ASSERT_RC(evs_stream_stats_get(s, &st), 0);
    cr_assert_eq(st.heartbeats, 2);
    ASSERT_RC(evs_stream_destroy(s), 0);
    ASSERT_RC(evs__hb_set_clock(NULL), 0);
}

Test(stream, activity_postpones_the_heartbeat, .timeout = 30)
{
    beats b = {0};
    evs_stream *s = beating_stream(false, EVS_DELIVERY_DISPATCHER, &b);
    clock_at_ms(500);
    ASSERT_RC(publish_text(s, "busy"), 0);
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    clock_at_ms(1000);
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    cr_assert_eq(atomic_load(&b.heartbeats), 0, "the stream was not idle for 1 s");
    clock_at_ms(2600);
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    cr_assert_eq(atomic_load(&b.heartbeats), 1);
    cr_assert_eq(atomic_load(&b.others), 1);
    ASSERT_RC(evs_stream_destroy(s), 0);
    ASSERT_RC(evs__hb_set_clock(NULL), 0);
}

Test(stream, heartbeats_reach_every_topic_subscription_and_inline_streams, .timeout = 30)
{
    beats b = {0}, c = {0};
    evs_stream *s = beating_stream(true, EVS_DELIVERY_DISPATCHER, &b);
    evs_stream_opts o = {.heartbeat_ms = 1000, .delivery = EVS_DELIVERY_INLINE};
    evs_stream *t = mk_stream(&o);
    evs_sub *sub;
    ASSERT_RC(evs_subscribe(&sub, t, NULL, count_beats, NULL, &c, NULL), 0);
    clock_at_ms(1000);
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    cr_assert_eq(atomic_load(&b.heartbeats), 1, "a pattern does not filter heartbeats");
    cr_assert_eq(atomic_load(&c.heartbeats), 1, "inline: delivered on the heartbeat thread");
    ASSERT_RC(evs_stream_destroy(s), 0);
    ASSERT_RC(evs_stream_destroy(t), 0);
    ASSERT_RC(evs__hb_set_clock(NULL), 0);
}

Test(stream, negative_heartbeat_interval_is_einval)
{
    evs_stream_opts o = {.heartbeat_ms = -1};
    evs_stream *s;
    ASSERT_RC(evs_stream_create(&s, &o), EVS_EINVAL);
}

Test(stream, backpressure_threshold_applies_the_policy_before_the_ring_is_full, .timeout = 30)
{
    evs_stream_opts o = {.capacity = 8, .overflow = EVS_OVERFLOW_FAIL, .backpressure_pct = 50};
    evs_stream *s = mk_stream(&o);
    gate g;
    gate_init(&g);
    seen rec = {.gate = &g};
    evs_sub *sub;
    ASSERT_RC(evs_subscribe(&sub, s, NULL, record, NULL, &rec, NULL), 0);
    ASSERT_RC(publish_text(s, "first"), 0);
    gate_wait_blocked(&g); /* the first is being delivered, off the ring */
    for (int i = 0; i < 4; i++)
        ASSERT_RC(publish_text(s, "queued"), 0); /* 50% of 8 */
    ASSERT_RC(publish_text(s, "over"), EVS_EFULL);
    evs_stream_stats st;
    ASSERT_RC(evs_stream_stats_get(s, &st), 0);
    cr_assert_eq(st.rejected_full, 1);
    cr_assert_eq(st.queued, 5, "the one in delivery + 4 queued");
    gate_open(&g);
    ASSERT_RC(evs_stream_destroy(s), 0);
    cr_assert_eq(atomic_load(&rec.count), 5);
}

Test(stream, backpressure_percentage_is_validated)
{
    evs_stream *s;
    evs_stream_opts bad[] = {{.backpressure_pct = -1}, {.backpressure_pct = 101}};
    for (int i = 0; i < 2; i++)
        ASSERT_RC(evs_stream_create(&s, &bad[i]), EVS_EINVAL);
    evs_stream_opts ok = {.backpressure_pct = 100};
    ASSERT_RC(evs_stream_create(&s, &ok), 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

/* Per subscription, every accepted event it matches is delivered,
 * filtered or dropped: drops count only where they would have landed. */
typedef struct held {
    gate g;
    atomic_ulong seen;
} held;

static int hold_first(const evs_event *ev, void *user)
{
    held *h = user;
    (void)ev;
    if (atomic_fetch_add(&h->seen, 1) == 0)
        gate_pass(&h->g);
    return 0;
}

static void per_sub_drops_under(evs_overflow policy)
{
    evs_stream_opts o = {.topics = true, .capacity = 4, .overflow = policy};
    evs_stream *s = mk_stream(&o);
    held a = {0}, b = {0};
    gate_init(&a.g);
    gate_init(&b.g);
    gate_open(&b.g);
    evs_sub *sa, *sb;
    ASSERT_RC(evs_subscribe(&sa, s, "a.>", hold_first, NULL, &a, NULL), 0);
    ASSERT_RC(evs_subscribe(&sb, s, "b.>", hold_first, NULL, &b, NULL), 0);
    evs_event *ea = mk("a.x", "1"), *eb = mk("b.x", "2");
    /* The first a.x holds the dispatcher: the rest queue, then drop. */
    ASSERT_RC(evs_stream_publish(s, ea), 0);
    gate_wait_blocked(&a.g);
    const int n = 20;
    for (int i = 1; i < n; i++)
        ASSERT_RC(evs_stream_publish(s, ea), 0);
    ASSERT_RC(evs_stream_publish(s, eb), 0); /* dropped too: the ring is full */
    gate_open(&a.g);
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    evs_sub_stats st_a, st_b;
    ASSERT_RC(evs_sub_stats_get(sa, &st_a), 0);
    ASSERT_RC(evs_sub_stats_get(sb, &st_b), 0);
    cr_assert_gt(st_a.dropped, 0);
    cr_assert_eq(st_a.delivered + st_a.filtered + st_a.dropped, (uint64_t)n,
                 "a: %llu delivered + %llu dropped != %d", (unsigned long long)st_a.delivered,
                 (unsigned long long)st_a.dropped, n);
    cr_assert_eq(st_b.delivered + st_b.dropped, 1, "b: %llu delivered + %llu dropped != 1",
                 (unsigned long long)st_b.delivered, (unsigned long long)st_b.dropped);
    evs_stream_stats st;
    ASSERT_RC(evs_stream_stats_get(s, &st), 0);
    cr_assert_eq(st.dropped_newest + st.dropped_oldest, st_a.dropped + st_b.dropped);
    evs_event_unref(ea);
    evs_event_unref(eb);
    ASSERT_RC(evs_stream_destroy(s), 0);
    gate_destroy(&a.g);
    gate_destroy(&b.g);
}

Test(stream, subscription_drops_count_only_its_own_events_drop_newest, .timeout = 30)
{
    per_sub_drops_under(EVS_OVERFLOW_DROP_NEWEST);
}

Test(stream, subscription_drops_count_only_its_own_events_drop_oldest, .timeout = 30)
{
    per_sub_drops_under(EVS_OVERFLOW_DROP_OLDEST);
}

static int count_calls(const evs_event *ev, void *user)
{
    (void)ev;
    atomic_fetch_add((atomic_ulong *)user, 1);
    return 0;
}

/* Events queued before a subscription and evicted after it was made
 * were never its to miss. */
Test(stream, evicting_events_older_than_a_subscription_is_not_its_drop, .timeout = 30)
{
    evs_stream_opts o = {.capacity = 4, .overflow = EVS_OVERFLOW_DROP_OLDEST};
    evs_stream *s = mk_stream(&o);
    held first = {0};
    gate_init(&first.g);
    evs_sub *hold, *late;
    ASSERT_RC(evs_subscribe(&hold, s, NULL, hold_first, NULL, &first, NULL), 0);
    evs_event *ev = mk("t", "x");
    ASSERT_RC(evs_stream_publish(s, ev), 0);
    gate_wait_blocked(&first.g);
    for (int i = 0; i < 4; i++) /* fill the ring behind the held one */
        ASSERT_RC(evs_stream_publish(s, ev), 0);
    atomic_ulong late_seen = 0;
    ASSERT_RC(evs_subscribe(&late, s, NULL, count_calls, NULL, &late_seen, NULL), 0);
    for (int i = 0; i < 3; i++) /* each evicts one queued before `late` */
        ASSERT_RC(evs_stream_publish(s, ev), 0);
    gate_open(&first.g);
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    evs_sub_stats st;
    ASSERT_RC(evs_sub_stats_get(late, &st), 0);
    cr_assert_eq(st.dropped, 0, "late counted %llu drops of older events",
                 (unsigned long long)st.dropped);
    cr_assert_eq(st.delivered, 3);
    evs_event_unref(ev);
    ASSERT_RC(evs_stream_destroy(s), 0);
    gate_destroy(&first.g);
}
