/*
 * Bounded concurrent handlers (evs_sub_opts.max_concurrent): never more
 * than K calls in flight and exactly K reached under load, K = 1 in
 * order, per-key order (same key never overlaps, in id order; different
 * keys overlap), unsubscribe/flush/close/destroy waiting for queued and
 * running calls, unsubscribe from inside a call, backpressure without
 * loss, handler errors, slot events, a worker delivering to its own full
 * pool, option errors, allocation failure, and a stress run with
 * churning pooled subscriptions (also under TSan: make tsan).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "evs_internal.h"
#include "evstream.h"
#include "evs_test.h"

/* ------------------------------------------------------------------ */
/* Helpers                                                             */

static evs_stream *mk_stream(const evs_stream_opts *o)
{
    evs_stream *s;
    ASSERT_RC(evs_stream_create(&s, o), 0);
    return s;
}

static uint64_t publish_on(evs_stream *s, const char *topic)
{
    evs_event *ev;
    ASSERT_RC(evs_event_create(&ev, EVS_TYPE_MESSAGE, topic, "x", 1), 0);
    uint64_t id;
    ASSERT_RC(evs_stream_publish_id(s, ev, &id), 0);
    evs_event_unref(ev);
    return id;
}

static uint64_t publish(evs_stream *s) { return publish_on(s, "t"); }

/* Spin for a few microseconds of "work" without sleeping. */
static void work(int rounds)
{
    for (int i = 0; i < rounds; i++)
        sched_yield();
}

/* Wait (at most 10 s) until *v reaches want. */
static void wait_at_least(atomic_int *v, int want, const char *what)
{
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (atomic_load(v) < want) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        cr_assert_lt(now.tv_sec - t0.tv_sec, 10, "timed out waiting for %s (%d of %d)", what,
                     atomic_load(v), want);
        sched_yield();
    }
}

/* Wait (at most 10 s) until the gate holds `n` callbacks. */
static void gate_wait_n(gate *g, int n)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 10;
    pthread_mutex_lock(&g->mu);
    while (g->waiting < n) {
        int rc = pthread_cond_timedwait(&g->cv, &g->mu, &dl);
        cr_assert_neq(rc, ETIMEDOUT, "only %d of %d callbacks reached the gate", g->waiting, n);
    }
    pthread_mutex_unlock(&g->mu);
}

static evs_pool_stats pool_stats(const evs_sub *sub)
{
    evs_pool_stats st;
    ASSERT_RC(evs_sub_pool_stats_get(sub, &st), 0);
    return st;
}

/* ------------------------------------------------------------------ */
/* The in-flight meter: a handler that counts calls in flight, keeps   */
/* the maximum, and records ids in the order calls started.            */

#define MAX_IDS (1u << 16)

typedef struct meter {
    atomic_int in_flight, max_in_flight, calls;
    gate *gate;            /* if set, every call passes it first */
    int work;              /* yields per call */
    int rc_every;          /* > 0: return 5 for ids divisible by it */
    pthread_mutex_t mu;
    uint64_t ids[MAX_IDS]; /* start order */
    size_t nids;
} meter;

static void meter_init(meter *m)
{
    memset(m, 0, sizeof *m);
    pthread_mutex_init(&m->mu, NULL);
}

static int metered(const evs_event *ev, void *user)
{
    meter *m = user;
    int now = atomic_fetch_add(&m->in_flight, 1) + 1;
    int max = atomic_load(&m->max_in_flight);
    while (now > max && !atomic_compare_exchange_weak(&m->max_in_flight, &max, now))
        ;
    pthread_mutex_lock(&m->mu);
    if (m->nids < MAX_IDS)
        m->ids[m->nids++] = evs_event_id(ev);
    pthread_mutex_unlock(&m->mu);
    if (m->gate != NULL)
        gate_pass(m->gate);
    work(m->work);
    atomic_fetch_sub(&m->in_flight, 1);
    atomic_fetch_add(&m->calls, 1);
    if (m->rc_every > 0 && evs_event_id(ev) % (uint64_t)m->rc_every == 0)
        return 5;
    return 0;
}

/* ------------------------------------------------------------------ */
/* The bound                                                           */

Test(workers, never_more_than_k_calls_in_flight_and_k_is_reached, .timeout = 60)
{
    evs_stream *s = mk_stream(NULL);
    enum { K = 4, N = 400 };
    meter m;
    meter_init(&m);
    gate g;
    gate_init(&g);
    m.gate = &g;
    m.work = 20;
    evs_sub *sub;
    evs_sub_opts o = {.max_concurrent = K};
    ASSERT_RC(evs_subscribe(&sub, s, NULL, metered, NULL, &m, &o), 0);
    for (int i = 0; i < N; i++)
        publish(s);
    /* K calls hold at the gate: the pool is full and no (K+1)th starts. */
    gate_wait_n(&g, K);
    work(1000);
    evs_pool_stats st = pool_stats(sub);
    cr_assert_eq(st.in_flight, K);
    cr_assert_eq(atomic_load(&m.in_flight), K);
    cr_assert_eq(st.max_concurrent, K);
    gate_open(&g);
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    cr_assert_eq(atomic_load(&m.calls), N, "flush returned before every pooled call ended");
    cr_assert_eq(atomic_load(&m.max_in_flight), K);
    st = pool_stats(sub);
    cr_assert_eq(st.in_flight_hwm, K);
    cr_assert_eq(st.completed, N);
    cr_assert_eq(st.queued, 0);
    cr_assert_eq(st.in_flight, 0);
    evs_sub_stats ss;
    ASSERT_RC(evs_sub_stats_get(sub, &ss), 0);
    cr_assert_eq(ss.delivered, N, "delivered counts events handed to the pool");
    ASSERT_RC(evs_unsubscribe(sub), 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
    gate_destroy(&g);
}

Test(workers, k_of_one_runs_calls_one_at_a_time_in_id_order, .timeout = 60)
{
    evs_stream *s = mk_stream(NULL);
    enum { N = 2000 };
    meter m;
    meter_init(&m);
    evs_sub *sub;
    evs_sub_opts o = {.max_concurrent = 1, .queue = 8};
    ASSERT_RC(evs_subscribe(&sub, s, NULL, metered, NULL, &m, &o), 0);
    uint64_t first = publish(s);
    for (int i = 1; i < N; i++)
        publish(s);
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    cr_assert_eq(atomic_load(&m.max_in_flight), 1);
    cr_assert_eq(m.nids, N);
    for (size_t i = 0; i < m.nids; i++)
        cr_assert_eq(m.ids[i], first + i, "position %zu", i);
    evs_pool_stats st = pool_stats(sub);
    cr_assert_leq(st.queued_hwm, 8);
    ASSERT_RC(evs_unsubscribe(sub), 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

/* ------------------------------------------------------------------ */
/* Per-key order                                                       */

#define NKEYS 8

typedef struct keyed {
    atomic_int busy[NKEYS];     /* calls of each key in flight */
    atomic_int in_flight, max_in_flight, calls, overlap;
    atomic_uint_fast64_t last[NKEYS];
    atomic_int out_of_order;
} keyed;

static int key_index(const evs_event *ev) { return evs_event_topic(ev)[1] - '0'; }

static uint64_t key_of_topic_digit(const evs_event *ev, void *user)
{
    (void)user;
    return (uint64_t)key_index(ev);
}

static int keyed_handler(const evs_event *ev, void *user)
{
    keyed *k = user;
    int i = key_index(ev);
    if (atomic_fetch_add(&k->busy[i], 1) != 0)
        atomic_fetch_add(&k->overlap, 1);
    int now = atomic_fetch_add(&k->in_flight, 1) + 1;
    int max = atomic_load(&k->max_in_flight);
    while (now > max && !atomic_compare_exchange_weak(&k->max_in_flight, &max, now))
        ;
    uint64_t id = evs_event_id(ev);
    if (atomic_exchange(&k->last[i], id) >= id)
        atomic_fetch_add(&k->out_of_order, 1);
    work(5);
    atomic_fetch_sub(&k->in_flight, 1);
    atomic_fetch_sub(&k->busy[i], 1);
    atomic_fetch_add(&k->calls, 1);
    return 0;
}

static void per_key_order(evs_key_fn key, evs_delivery delivery)
{
    evs_stream_opts so = {.delivery = delivery};
    evs_stream *s = mk_stream(&so);
    enum { N = 4000 };
    keyed *k = calloc(1, sizeof *k);
    evs_sub *sub;
    evs_sub_opts o = {.max_concurrent = 4, .key = key, .queue = 64};
    ASSERT_RC(evs_subscribe(&sub, s, NULL, keyed_handler, NULL, k, &o), 0);
    char topic[3] = "k0";
    for (int i = 0; i < N; i++) {
        topic[1] = (char)('0' + (i * 7 + i / 3) % NKEYS);
        publish_on(s, topic);
    }
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    cr_assert_eq(atomic_load(&k->calls), N);
    cr_assert_eq(atomic_load(&k->overlap), 0, "two calls of one key ran at once");
    cr_assert_eq(atomic_load(&k->out_of_order), 0, "a key's events ran out of id order");
    cr_assert_leq(atomic_load(&k->max_in_flight), 4);
    ASSERT_RC(evs_unsubscribe(sub), 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
    free(k);
}

Test(workers, events_of_one_key_never_overlap_and_run_in_id_order, .timeout = 60)
{
    per_key_order(key_of_topic_digit, EVS_DELIVERY_DISPATCHER);
}

Test(workers, key_by_topic_keeps_per_topic_order, .timeout = 60)
{
    per_key_order(evs_key_topic, EVS_DELIVERY_DISPATCHER);
}

/* Key A's first call blocks at a gate: key B must still run, and A's
 * second event must wait for A's first. */
typedef struct ab {
    gate *g;
    atomic_int a_calls, b_done, a2_started;
} ab;

static int ab_handler(const evs_event *ev, void *user)
{
    ab *x = user;
    if (evs_event_topic(ev)[0] == 'A') {
        if (atomic_fetch_add(&x->a_calls, 1) == 0)
            gate_pass(x->g);
        else
            atomic_store(&x->a2_started, 1);
    } else {
        atomic_fetch_add(&x->b_done, 1);
    }
    return 0;
}

Test(workers, different_keys_run_concurrently_and_a_busy_key_waits, .timeout = 30)
{
    evs_stream *s = mk_stream(NULL);
    gate g;
    gate_init(&g);
    ab x = {.g = &g};
    evs_sub *sub;
    evs_sub_opts o = {.max_concurrent = 2, .key = evs_key_topic};
    ASSERT_RC(evs_subscribe(&sub, s, NULL, ab_handler, NULL, &x, &o), 0);
    publish_on(s, "A");
    gate_wait_blocked(&g);
    publish_on(s, "A");
    publish_on(s, "B");
    publish_on(s, "B");
    wait_at_least(&x.b_done, 2, "key B while key A is busy");
    work(1000);
    cr_assert_eq(atomic_load(&x.a2_started), 0, "A's second event overtook its first");
    evs_pool_stats st = pool_stats(sub);
    cr_assert_eq(st.in_flight, 1);
    cr_assert_eq(st.queued, 1, "A's second event waits in its lane");
    gate_open(&g);
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    cr_assert_eq(atomic_load(&x.a2_started), 1);
    ASSERT_RC(evs_unsubscribe(sub), 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
    gate_destroy(&g);
}

/* ------------------------------------------------------------------ */
/* Waiting: unsubscribe, flush, close, destroy                         */

typedef struct unsub_race {
    evs_sub *sub;
    atomic_int returned;
} unsub_race;

static void *unsub_thread(void *arg)
{
    unsub_race *r = arg;
    cr_assert_eq(evs_unsubscribe(r->sub), 0);
    atomic_store(&r->returned, 1);
    return NULL;
}

Test(workers, unsubscribe_waits_for_running_and_queued_calls, .timeout = 30)
{
    evs_stream *s = mk_stream(NULL);
    meter m;
    meter_init(&m);
    gate g;
    gate_init(&g);
    m.gate = &g;
    unsub_race r = {0};
    evs_sub_opts o = {.max_concurrent = 2};
    ASSERT_RC(evs_subscribe(&r.sub, s, NULL, metered, NULL, &m, &o), 0);
    for (int i = 0; i < 6; i++)
        publish(s);
    gate_wait_n(&g, 2);
    /* All six handed to the pool (2 running, 4 queued) before we end it:
     * what the dispatcher has not delivered yet would not arrive. */
    while (pool_stats(r.sub).queued != 4)
        sched_yield();
    pthread_t t;
    pthread_create(&t, NULL, unsub_thread, &r);
    work(2000);
    cr_assert_eq(atomic_load(&r.returned), 0, "unsubscribe returned while calls ran");
    gate_open(&g);
    pthread_join(t, NULL);
    cr_assert_eq(atomic_load(&m.calls), 6, "the queued events ran before unsubscribe returned");
    cr_assert_eq(atomic_load(&m.in_flight), 0);
    /* And nothing runs afterwards. */
    for (int i = 0; i < 10; i++)
        publish(s);
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    cr_assert_eq(atomic_load(&m.calls), 6);
    ASSERT_RC(evs_stream_destroy(s), 0);
    gate_destroy(&g);
}

typedef struct flusher {
    evs_stream *s;
    atomic_int returned;
    int rc;
    bool close;
} flusher;

static void *flush_thread(void *arg)
{
    flusher *f = arg;
    f->rc = f->close ? evs_stream_close(f->s, EVS_FOREVER, NULL)
                     : evs_stream_flush(f->s, EVS_FOREVER, NULL);
    atomic_store(&f->returned, 1);
    return NULL;
}

static void flush_or_close_waits(bool close)
{
    evs_stream *s = mk_stream(NULL);
    meter m;
    meter_init(&m);
    gate g;
    gate_init(&g);
    m.gate = &g;
    evs_sub *sub;
    evs_sub_opts o = {.max_concurrent = 2};
    ASSERT_RC(evs_subscribe(&sub, s, NULL, metered, NULL, &m, &o), 0);
    for (int i = 0; i < 5; i++)
        publish(s);
    gate_wait_n(&g, 2);
    /* Let the dispatcher finish its run: 3 queued, nothing in the ring. */
    for (;;) {
        evs_stream_stats ss;
        ASSERT_RC(evs_stream_stats_get(s, &ss), 0);
        if (ss.queued == 0 && pool_stats(sub).queued == 3)
            break;
        sched_yield();
    }
    /* Time up at once: the pooled calls are counted as left. */
    uint64_t left = 0;
    ASSERT_RC(evs_stream_flush(s, 0, &left), EVS_ETIMEDOUT);
    cr_assert_eq(left, 5, "2 running + 3 queued, got %llu", (unsigned long long)left);
    ASSERT_RC(evs_stream_flush(s, 20, &left), EVS_ETIMEDOUT);
    cr_assert_eq(left, 5);
    flusher f = {.s = s, .close = close};
    pthread_t t;
    pthread_create(&t, NULL, flush_thread, &f);
    work(2000);
    cr_assert_eq(atomic_load(&f.returned), 0, "returned while pooled calls ran");
    gate_open(&g);
    pthread_join(t, NULL);
    ASSERT_RC(f.rc, 0);
    cr_assert_eq(atomic_load(&m.calls), 5);
    if (!close)
        ASSERT_RC(evs_unsubscribe(sub), 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
    gate_destroy(&g);
}

Test(workers, flush_waits_for_pooled_calls, .timeout = 30) { flush_or_close_waits(false); }

Test(workers, close_waits_for_pooled_calls, .timeout = 30) { flush_or_close_waits(true); }

Test(workers, destroy_runs_every_queued_call_first, .timeout = 60)
{
    for (int d = 0; d < 2; d++) {
        evs_stream_opts so = {.delivery = d ? EVS_DELIVERY_INLINE : EVS_DELIVERY_DISPATCHER};
        evs_stream *s = mk_stream(&so);
        meter m;
        meter_init(&m);
        m.work = 2;
        evs_sub *sub[3];
        evs_sub_opts o = {.max_concurrent = 3, .queue = 4};
        for (int i = 0; i < 3; i++)
            ASSERT_RC(evs_subscribe(&sub[i], s, NULL, metered, NULL, &m, &o), 0);
        for (int i = 0; i < 300; i++)
            publish(s);
        ASSERT_RC(evs_stream_destroy(s), 0); /* no flush first */
        cr_assert_eq(atomic_load(&m.calls), 900);
        cr_assert_eq(atomic_load(&m.in_flight), 0);
    }
}

/* ------------------------------------------------------------------ */
/* Inside a call                                                       */

typedef struct selfish {
    evs_sub *sub;
    evs_stream *s;
    gate *g;
    atomic_int calls, in_flight, others_running_at_return, first_done;
    int unsub_rc, flush_rc, destroy_rc, close_rc;
    uint64_t close_left;
} selfish;

/* The first call waits until the rest are queued, then unsubscribes. */
static int unsub_inside(const evs_event *ev, void *user)
{
    selfish *x = user;
    atomic_fetch_add(&x->in_flight, 1);
    int n = atomic_fetch_add(&x->calls, 1);
    if (n == 0) {
        gate_pass(x->g);
        x->flush_rc = evs_stream_flush(x->s, EVS_FOREVER, NULL);
        x->destroy_rc = evs_stream_destroy(x->s);
        x->close_rc = evs_stream_close(x->s, EVS_FOREVER, &x->close_left);
        x->unsub_rc = evs_unsubscribe(x->sub);
        atomic_store(&x->others_running_at_return, atomic_load(&x->in_flight) - 1);
        atomic_store(&x->first_done, 1);
    } else {
        work(200);
    }
    atomic_fetch_sub(&x->in_flight, 1);
    return 0;
}

Test(workers, unsubscribe_inside_a_call_drops_the_queue_and_returns, .timeout = 30)
{
    evs_stream_opts so = {.delivery = EVS_DELIVERY_INLINE};
    evs_stream *s = mk_stream(&so);
    gate g;
    gate_init(&g);
    selfish x = {.s = s, .g = &g};
    evs_sub_opts o = {.max_concurrent = 3};
    ASSERT_RC(evs_subscribe(&x.sub, s, NULL, unsub_inside, NULL, &x, &o), 0);
    publish(s);
    gate_wait_blocked(&g);
    for (int i = 0; i < 50; i++)
        publish(s);
    evs_pool_stats st = pool_stats(x.sub);
    cr_assert_gt(st.queued, 0, "nothing queued to discard");
    gate_open(&g);
    wait_at_least(&x.first_done, 1, "the unsubscribing call");
    /* The handler's own waits on the stream are refused or do not wait. */
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    ASSERT_RC(x.unsub_rc, 0);
    cr_assert_eq(x.flush_rc, EVS_EDEADLK, "flush in a worker: got %s", evs_errname(x.flush_rc));
    cr_assert_eq(x.destroy_rc, EVS_EDEADLK);
    cr_assert_eq(x.close_rc, EVS_ETIMEDOUT, "close in a worker does not wait");
    cr_assert_gt(x.close_left, 0);
    cr_assert_eq(atomic_load(&x.others_running_at_return), 0,
                 "unsubscribe returned while other calls ran");
    int calls = atomic_load(&x.calls);
    cr_assert_lt(calls, 51, "the queue was not dropped");
    ASSERT_RC(evs_stream_destroy(s), 0);
    cr_assert_eq(atomic_load(&x.calls), calls, "a call ran after unsubscribe");
    gate_destroy(&g);
}

/* A worker's handler publishes to its own inline stream: the pool's own
 * worker must not wait for room in its full queue. */
typedef struct loopback {
    evs_stream *s;
    atomic_int calls;
    int rc[2];
} loopback;

static int publish_back(const evs_event *ev, void *user)
{
    loopback *l = user;
    if (atomic_fetch_add(&l->calls, 1) == 0) {
        for (int i = 0; i < 2; i++) {
            evs_event *e;
            ASSERT_RC(evs_event_create(&e, EVS_TYPE_MESSAGE, "t", NULL, 0), 0);
            l->rc[i] = evs_stream_publish(l->s, e);
            evs_event_unref(e);
        }
    }
    return 0;
}

static atomic_int deadlk_reports;

static void count_deadlk(evs_sub *sub, const evs_event *ev, int rc, void *user)
{
    if (rc == EVS_EDEADLK)
        atomic_fetch_add(&deadlk_reports, 1);
}

Test(workers, a_worker_delivering_to_its_own_full_pool_is_refused_and_counted, .timeout = 30)
{
    evs_stream_opts so = {.delivery = EVS_DELIVERY_INLINE, .on_error = count_deadlk};
    evs_stream *s = mk_stream(&so);
    loopback l = {.s = s};
    evs_sub *sub;
    evs_sub_opts o = {.max_concurrent = 1, .queue = 1};
    ASSERT_RC(evs_subscribe(&sub, s, NULL, publish_back, NULL, &l, &o), 0);
    publish(s);
    /* The first flush covers the first event, whose call publishes the
     * others; the second covers those. */
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    ASSERT_RC(l.rc[0], 0);
    ASSERT_RC(l.rc[1], 0);
    cr_assert_eq(atomic_load(&l.calls), 2, "the first event and the one that fitted");
    evs_pool_stats st = pool_stats(sub);
    cr_assert_eq(st.rejected, 1);
    evs_sub_stats ss;
    ASSERT_RC(evs_sub_stats_get(sub, &ss), 0);
    cr_assert_eq(ss.handler_errors, 1);
    cr_assert_eq(atomic_load(&deadlk_reports), 1);
    ASSERT_RC(evs_unsubscribe(sub), 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

/* ------------------------------------------------------------------ */
/* Backpressure, errors, filters, slot events                          */

typedef struct pubber {
    evs_stream *s;
    int n;
} pubber;

static void *pub_thread(void *arg)
{
    pubber *p = arg;
    for (int i = 0; i < p->n; i++)
        publish(p->s);
    return NULL;
}

Test(workers, a_full_queue_holds_back_the_stream_and_loses_nothing, .timeout = 60)
{
    evs_stream_opts so = {.capacity = 16};
    evs_stream *s = mk_stream(&so);
    meter m;
    meter_init(&m);
    gate g;
    gate_init(&g);
    m.gate = &g;
    evs_sub *sub;
    evs_sub_opts o = {.max_concurrent = 1, .queue = 4};
    ASSERT_RC(evs_subscribe(&sub, s, NULL, metered, NULL, &m, &o), 0);
    pubber p = {.s = s, .n = 500};
    pthread_t t;
    pthread_create(&t, NULL, pub_thread, &p);
    gate_wait_blocked(&g);
    /* The worker is stuck: the queue fills, the dispatcher waits, the
     * ring fills, the publisher blocks (EVS_OVERFLOW_BLOCK). */
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        evs_stream_stats ss;
        ASSERT_RC(evs_stream_stats_get(s, &ss), 0);
        /* The ring is full (16) behind the run the dispatcher holds. */
        evs_pool_stats ps = pool_stats(sub);
        if (ss.queued >= 16 && ps.waits >= 1 && ps.queued == 4)
            break;
        clock_gettime(CLOCK_MONOTONIC, &now);
        cr_assert_lt(now.tv_sec - t0.tv_sec, 10,
                     "the stream never backed up: queued %llu, waits %llu, pool queued %llu",
                     (unsigned long long)ss.queued, (unsigned long long)ps.waits,
                     (unsigned long long)ps.queued);
        sched_yield();
    }
    evs_pool_stats st = pool_stats(sub);
    cr_assert_eq(st.in_flight, 1);
    evs_stream_stats held;
    ASSERT_RC(evs_stream_stats_get(s, &held), 0);
    cr_assert_lt(held.published, 500, "the publisher should be held back");
    gate_open(&g);
    pthread_join(t, NULL);
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    cr_assert_eq(atomic_load(&m.calls), 500);
    st = pool_stats(sub);
    cr_assert_eq(st.completed, 500);
    cr_assert_eq(st.queued_hwm, 4);
    cr_assert_eq(st.discarded + st.rejected + st.nomem, 0);
    evs_stream_stats ss;
    ASSERT_RC(evs_stream_stats_get(s, &ss), 0);
    cr_assert_eq(ss.dropped_newest + ss.dropped_oldest + ss.rejected_full + ss.timed_out, 0);
    ASSERT_RC(evs_unsubscribe(sub), 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
    gate_destroy(&g);
}

static atomic_int error_reports;

static void count_errors(evs_sub *sub, const evs_event *ev, int rc, void *user)
{
    cr_assert_eq(rc, 5);
    cr_assert_eq(evs_event_id(ev) % 3, 0);
    atomic_fetch_add(&error_reports, 1);
}

static const meter *filter_expect;

static bool every_other(const evs_event *ev, void *user)
{
    cr_assert_eq(user, filter_expect, "the filter gets the user pointer, not the pool");
    return evs_event_id(ev) % 2 == 1;
}

Test(workers, handler_errors_are_counted_and_reported_and_the_filter_runs_first, .timeout = 30)
{
    evs_stream_opts so = {.on_error = count_errors};
    evs_stream *s = mk_stream(&so);
    meter m;
    meter_init(&m);
    m.rc_every = 3;
    filter_expect = &m;
    evs_sub *sub;
    evs_sub_opts o = {.max_concurrent = 3};
    ASSERT_RC(evs_subscribe(&sub, s, NULL, metered, every_other, &m, &o), 0);
    for (int i = 0; i < 600; i++) /* ids 1..600 */
        publish(s);
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    /* Odd ids pass the filter: 300; of those, multiples of 3: 100. */
    cr_assert_eq(atomic_load(&m.calls), 300);
    cr_assert_eq(atomic_load(&error_reports), 100);
    evs_sub_stats ss;
    ASSERT_RC(evs_sub_stats_get(sub, &ss), 0);
    cr_assert_eq(ss.handler_errors, 100);
    cr_assert_eq(ss.filtered, 300);
    cr_assert_eq(ss.delivered, 300);
    evs_stream_stats st;
    ASSERT_RC(evs_stream_stats_get(s, &st), 0);
    cr_assert_eq(st.handler_errors, 100);
    cr_assert_eq(pool_stats(sub).errors, 100);
    ASSERT_RC(evs_unsubscribe(sub), 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

static int check_slot(const evs_event *ev, void *user)
{
    atomic_int *n = user;
    size_t len;
    const char *d = evs_event_data(ev, &len);
    char want[9];
    snprintf(want, sizeof want, "%08llu", (unsigned long long)evs_event_id(ev));
    cr_assert_eq(len, 8);
    cr_assert_arr_eq(d, want, 8, "a queued slot event was overwritten");
    work(3);
    atomic_fetch_add(n, 1);
    return 0;
}

Test(workers, queued_slot_events_are_copies, .timeout = 30)
{
    evs_stream_opts so = {.slot_bytes = 64, .capacity = 4};
    evs_stream *s = mk_stream(&so);
    atomic_int n = 0;
    evs_sub *sub;
    evs_sub_opts o = {.max_concurrent = 2, .queue = 64};
    ASSERT_RC(evs_subscribe(&sub, s, NULL, check_slot, NULL, &n, &o), 0);
    for (int i = 0; i < 200; i++) {
        evs_event *ev;
        void *data;
        ASSERT_RC(evs_stream_claim(s, EVS_TYPE_MESSAGE, "t", 8, &ev, &data), 0);
        char buf[9];
        snprintf(buf, sizeof buf, "%08llu", (unsigned long long)evs_event_id(ev));
        memcpy(data, buf, 8);
        ASSERT_RC(evs_stream_commit(s, ev), 0);
    }
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    cr_assert_eq(atomic_load(&n), 200);
    ASSERT_RC(evs_unsubscribe(sub), 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

Test(workers, key_topic_is_equal_for_equal_topics, .timeout = 30)
{
    evs_event *a, *b, *c, *e;
    ASSERT_RC(evs_event_create(&a, EVS_TYPE_MESSAGE, "orders.eu", NULL, 0), 0);
    ASSERT_RC(evs_event_create(&b, EVS_TYPE_MESSAGE, "orders.eu", "x", 1), 0);
    ASSERT_RC(evs_event_create(&c, EVS_TYPE_MESSAGE, "orders.us", NULL, 0), 0);
    ASSERT_RC(evs_event_create(&e, EVS_TYPE_MESSAGE, NULL, NULL, 0), 0);
    cr_assert_eq(evs_key_topic(a, NULL), evs_key_topic(b, NULL));
    cr_assert_neq(evs_key_topic(a, NULL), evs_key_topic(c, NULL));
    cr_assert_eq(evs_key_topic(e, NULL), 0xcbf29ce484222325ULL, "FNV-1a of \"\"");
    evs_event_unref(a);
    evs_event_unref(b);
    evs_event_unref(c);
    evs_event_unref(e);
}

/* ------------------------------------------------------------------ */
/* Errors                                                              */

static uint64_t zero_key(const evs_event *ev, void *user) { return 0; }

Test(workers, bad_pool_options_are_einval, .timeout = 30)
{
    evs_stream *s = mk_stream(NULL);
    meter m;
    meter_init(&m);
    int x;
    const evs_sub_opts bad[] = {
        {.max_concurrent = EVS_MAX_CONCURRENT + 1},
        {.key = zero_key},               /* pool options without a pool */
        {.key_user = &x},
        {.queue = 8},
        {.max_concurrent = 2, .queue = EVS_MAX_POOL_QUEUE + 1},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        evs_sub *sub = (evs_sub *)1;
        int rc = evs_subscribe(&sub, s, NULL, metered, NULL, &m, &bad[i]);
        cr_assert_eq(rc, EVS_EINVAL, "case %zu: got %s", i, evs_errname(rc));
        cr_assert_null(sub, "case %zu", i);
    }
    /* The extremes that are allowed. */
    evs_sub *sub;
    evs_sub_opts good = {.max_concurrent = 1, .queue = 1, .key = zero_key, .key_user = &x};
    ASSERT_RC(evs_subscribe(&sub, s, NULL, metered, NULL, &m, &good), 0);
    ASSERT_RC(evs_unsubscribe(sub), 0);
    /* Stats of a subscription without a pool, and NULLs. */
    ASSERT_RC(evs_subscribe(&sub, s, NULL, metered, NULL, &m, NULL), 0);
    evs_pool_stats st;
    ASSERT_RC(evs_sub_pool_stats_get(sub, &st), EVS_EINVAL);
    ASSERT_RC(evs_sub_pool_stats_get(NULL, &st), EVS_EINVAL);
    ASSERT_RC(evs_unsubscribe(sub), 0);
    ASSERT_RC(evs_stream_close(s, EVS_FOREVER, NULL), 0);
    evs_sub_opts o = {.max_concurrent = 2};
    sub = (evs_sub *)1;
    ASSERT_RC(evs_subscribe(&sub, s, NULL, metered, NULL, &m, &o), EVS_ECLOSED);
    cr_assert_null(sub);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

Test(workers, subscribe_survives_allocation_failure, .timeout = 60)
{
    evs_stream *s = mk_stream(NULL);
    meter m;
    meter_init(&m);
    evs_sub *sub = NULL;
    evs_sub_opts o = {.max_concurrent = 3, .key = zero_key, .queue = 16};
    int rc;
    for (long k = 0;; k++) {
        evs__alloc_fail_after(k);
        rc = evs_subscribe(&sub, s, NULL, metered, NULL, &m, &o);
        evs__alloc_fail_after(-1);
        if (rc == 0)
            break;
        cr_assert_eq(rc, EVS_ENOMEM, "k=%ld: got %s", k, evs_errname(rc));
        cr_assert_null(sub);
    }
    for (int i = 0; i < 50; i++)
        publish(s);
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    cr_assert_eq(atomic_load(&m.calls), 50);
    ASSERT_RC(evs_unsubscribe(sub), 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

/* ------------------------------------------------------------------ */
/* Stress (and make tsan): several publishers, keyed pooled            */
/* subscriptions that stay for the whole run and check order and       */
/* counts, and pooled subscriptions that come and go meanwhile.        */

enum { S_PUBS = 3, S_PER = 6000, S_KEYS = 6 };

typedef struct stress_sub {
    atomic_int busy[S_PUBS * S_KEYS];
    uint64_t last_seq[S_PUBS * S_KEYS]; /* touched only by the key's calls */
    atomic_int overlap, out_of_order, calls;
} stress_sub;

/* Topic "p<pub>k<key>", data = the publisher's sequence number. */
static int stress_lane(const evs_event *ev)
{
    const char *t = evs_event_topic(ev);
    return (t[1] - '0') * S_KEYS + (t[3] - '0');
}

static int stress_handler(const evs_event *ev, void *user)
{
    stress_sub *x = user;
    int lane = stress_lane(ev);
    if (atomic_fetch_add(&x->busy[lane], 1) != 0)
        atomic_fetch_add(&x->overlap, 1);
    uint64_t seq;
    size_t len;
    memcpy(&seq, evs_event_data(ev, &len), sizeof seq);
    if (seq <= x->last_seq[lane] && x->last_seq[lane] != 0)
        atomic_fetch_add(&x->out_of_order, 1);
    x->last_seq[lane] = seq;
    atomic_fetch_sub(&x->busy[lane], 1);
    atomic_fetch_add(&x->calls, 1);
    return 0;
}

static int count_only(const evs_event *ev, void *user)
{
    atomic_fetch_add((atomic_int *)user, 1);
    return 0;
}

typedef struct stress_pub {
    evs_stream *s;
    int p;
} stress_pub;

static void *stress_publisher(void *arg)
{
    stress_pub *sp = arg;
    char topic[5] = {'p', (char)('0' + sp->p), 'k', '0', 0};
    for (uint64_t seq = 1; seq <= S_PER; seq++) {
        topic[3] = (char)('0' + seq % S_KEYS);
        evs_event *ev;
        ASSERT_RC(evs_event_create(&ev, EVS_TYPE_MESSAGE, topic, &seq, sizeof seq), 0);
        ASSERT_RC(evs_stream_publish(sp->s, ev), 0);
        evs_event_unref(ev);
    }
    return NULL;
}

typedef struct churner {
    evs_stream *s;
    atomic_int stop;
    atomic_int calls;
    int rounds;
} churner;

static void *churn(void *arg)
{
    churner *c = arg;
    while (!atomic_load(&c->stop) && c->rounds < 300) {
        evs_sub *sub;
        evs_sub_opts o = {.max_concurrent = 1 + (unsigned)(c->rounds % 3), .queue = 8};
        ASSERT_RC(evs_subscribe(&sub, c->s, NULL, count_only, NULL, &c->calls, &o), 0);
        sched_yield();
        ASSERT_RC(evs_unsubscribe(sub), 0);
        c->rounds++;
    }
    return NULL;
}

static void stress(evs_delivery delivery)
{
    evs_stream_opts so = {.delivery = delivery, .capacity = 256};
    evs_stream *s = mk_stream(&so);
    stress_sub *x[2];
    evs_sub *sub[2];
    for (int i = 0; i < 2; i++) {
        x[i] = calloc(1, sizeof *x[i]);
        evs_sub_opts o = {.max_concurrent = 2 + 2 * (unsigned)i, .key = evs_key_topic,
                          .queue = 32};
        ASSERT_RC(evs_subscribe(&sub[i], s, NULL, stress_handler, NULL, x[i], &o), 0);
    }
    churner c = {.s = s};
    pthread_t ct, pt[S_PUBS];
    stress_pub sp[S_PUBS];
    cr_assert_eq(pthread_create(&ct, NULL, churn, &c), 0);
    for (int p = 0; p < S_PUBS; p++) {
        sp[p] = (stress_pub){.s = s, .p = p};
        cr_assert_eq(pthread_create(&pt[p], NULL, stress_publisher, &sp[p]), 0);
    }
    for (int p = 0; p < S_PUBS; p++)
        pthread_join(pt[p], NULL);
    atomic_store(&c.stop, 1);
    pthread_join(ct, NULL);
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(atomic_load(&x[i]->calls), S_PUBS * S_PER, "sub %d lost events", i);
        cr_assert_eq(atomic_load(&x[i]->overlap), 0, "sub %d: one key ran twice at once", i);
        cr_assert_eq(atomic_load(&x[i]->out_of_order), 0, "sub %d: a key ran out of order", i);
        evs_pool_stats st = pool_stats(sub[i]);
        cr_assert_leq(st.in_flight_hwm, 2 + 2 * (uint64_t)i);
        cr_assert_eq(st.completed, (uint64_t)S_PUBS * S_PER);
        ASSERT_RC(evs_unsubscribe(sub[i]), 0);
        free(x[i]);
    }
    cr_assert_gt(c.rounds, 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

Test(workers, stress_keyed_pools_with_churn_keep_order_and_counts, .timeout = 120)
{
    stress(EVS_DELIVERY_DISPATCHER);
}

Test(workers, stress_keyed_pools_with_churn_inline, .timeout = 120)
{
    stress(EVS_DELIVERY_INLINE);
}
