/*
 * Stream stress: 4 publisher threads x 1,000,000 events (EVS_STRESS_N
 * overrides the count) while other threads subscribe and unsubscribe.
 * Checks exact counts and per-publisher order at every subscriber, and,
 * under ASan, that no handler runs after evs_unsubscribe returned (its
 * user data is freed at once).
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "evs_internal.h"
#include "evs_test.h"
#include "evstream.h"

#define PUBLISHERS 4

static uint32_t events_per_publisher(void)
{
    const char *e = getenv("EVS_STRESS_N");
    long n = e ? strtol(e, NULL, 10) : 0;
    return n > 0 ? (uint32_t)n : 1000000;
}

/* Payload: publisher index and its sequence number (1-based). */
typedef struct payload {
    uint32_t pub;
    uint32_t seq;
} payload;

static payload read_payload(const evs_event *ev)
{
    size_t len;
    const void *d = evs_event_data(ev, &len);
    payload p = {0};
    if (len == sizeof(p))
        memcpy(&p, d, sizeof(p));
    return p;
}

/* A subscriber that must see every event, each publisher's in order. */
typedef struct full_sub {
    uint32_t last[PUBLISHERS];
    uint64_t count;
    uint64_t last_id;
    bool     broken;
} full_sub;

static int full_handler(const evs_event *ev, void *user)
{
    full_sub *f = user;
    payload p = read_payload(ev);
    if (p.pub >= PUBLISHERS || p.seq != f->last[p.pub] + 1 || evs_event_id(ev) <= f->last_id)
        f->broken = true;
    else
        f->last[p.pub] = p.seq;
    f->last_id = evs_event_id(ev);
    f->count++;
    return 0;
}

/* A short-lived subscriber: what it sees of each publisher must be one
 * contiguous run in order (it gets everything between its subscribe and
 * its unsubscribe). Freed right after evs_unsubscribe returns. */
typedef struct churn_sub {
    uint32_t last[PUBLISHERS];
    uint64_t count;
    bool     broken;
    uint64_t magic;
} churn_sub;

#define CHURN_MAGIC 0xC0FFEE11u

static int churn_handler(const evs_event *ev, void *user)
{
    churn_sub *c = user;
    if (c->magic != CHURN_MAGIC)
        abort(); /* called after unsubscribe returned */
    payload p = read_payload(ev);
    if (p.pub >= PUBLISHERS || (c->last[p.pub] != 0 && p.seq != c->last[p.pub] + 1))
        c->broken = true;
    c->last[p.pub] = p.seq;
    c->count++;
    return 0;
}

typedef struct ctx {
    evs_stream *s;
    uint32_t    n;
    atomic_int  publishers_left;
    atomic_int  churn_failures;
    atomic_long churns;
} ctx;

typedef struct pub_arg {
    ctx     *c;
    uint32_t index;
    int      rc;
} pub_arg;

static void *publisher(void *arg)
{
    pub_arg *a = arg;
    for (uint32_t i = 1; i <= a->c->n; i++) {
        payload p = {a->index, i};
        evs_event *ev;
        if ((a->rc = evs_event_create(&ev, EVS_TYPE_MESSAGE, "stress", &p, sizeof(p))) != 0)
            break;
        a->rc = evs_stream_publish(a->c->s, ev);
        evs_event_unref(ev);
        if (a->rc != 0)
            break;
    }
    atomic_fetch_sub(&a->c->publishers_left, 1);
    return NULL;
}

static void *churner(void *arg)
{
    ctx *c = arg;
    while (atomic_load(&c->publishers_left) > 0) {
        churn_sub *cs = calloc(1, sizeof(*cs));
        cs->magic = CHURN_MAGIC;
        evs_sub *sub;
        if (evs_subscribe(&sub, c->s, NULL, churn_handler, NULL, cs, NULL) != 0) {
            atomic_fetch_add(&c->churn_failures, 1);
            free(cs);
            break;
        }
        for (int i = 0; i < 200; i++)
            sched_yield();
        if (evs_unsubscribe(sub) != 0)
            atomic_fetch_add(&c->churn_failures, 1);
        /* After unsubscribe returns the handler is never called again:
         * its state is ours to read without a race, then free. */
        if (cs->broken)
            atomic_fetch_add(&c->churn_failures, 1);
        cs->magic = 0;
        free(cs);
        atomic_fetch_add(&c->churns, 1);
    }
    return NULL;
}

static void run_stress(const evs_stream_opts *o)
{
    ctx c = {.n = events_per_publisher()};
    atomic_store(&c.publishers_left, PUBLISHERS);
    cr_assert_eq(evs_stream_create(&c.s, o), 0);

    full_sub f1 = {0}, f2 = {0};
    evs_sub *s1, *s2;
    cr_assert_eq(evs_subscribe(&s1, c.s, NULL, full_handler, NULL, &f1, NULL), 0);
    cr_assert_eq(evs_subscribe(&s2, c.s, NULL, full_handler, NULL, &f2, NULL), 0);

    pthread_t pubs[PUBLISHERS], churn[2];
    pub_arg args[PUBLISHERS];
    for (uint32_t i = 0; i < PUBLISHERS; i++) {
        args[i] = (pub_arg){.c = &c, .index = i};
        pthread_create(&pubs[i], NULL, publisher, &args[i]);
    }
    for (int i = 0; i < 2; i++)
        pthread_create(&churn[i], NULL, churner, &c);
    for (int i = 0; i < PUBLISHERS; i++)
        pthread_join(pubs[i], NULL);
    for (int i = 0; i < 2; i++)
        pthread_join(churn[i], NULL);
    for (int i = 0; i < PUBLISHERS; i++)
        cr_assert_eq(args[i].rc, 0, "publisher %d: %s", i, evs_errname(args[i].rc));

    uint64_t left = 1;
    cr_assert_eq(evs_stream_close(c.s, EVS_FOREVER, &left), 0);
    uint64_t total = (uint64_t)PUBLISHERS * c.n;
    cr_assert(!f1.broken && !f2.broken, "a stable subscriber saw loss or disorder");
    cr_assert_eq(f1.count, total, "got %lu of %lu", (unsigned long)f1.count, (unsigned long)total);
    cr_assert_eq(f2.count, total);
    for (int i = 0; i < PUBLISHERS; i++)
        cr_assert_eq(f1.last[i], c.n);
    cr_assert_eq(atomic_load(&c.churn_failures), 0);
    cr_assert_gt(atomic_load(&c.churns), 0, "no subscription churned");

    evs_stream_stats st;
    cr_assert_eq(evs_stream_stats_get(c.s, &st), 0);
    cr_assert_eq(st.published, total);
    cr_assert_eq(st.dropped_newest + st.dropped_oldest + st.dropped_nomem, 0);
    cr_assert_eq(evs_stream_destroy(c.s), 0);
}

Test(stream_stress, four_publishers_block_policy_with_churn, .timeout = 600)
{
    evs_stream_opts o = {.capacity = 1024};
    run_stress(&o);
}

Test(stream_stress, four_publishers_small_ring_with_churn, .timeout = 600)
{
    /* A tiny ring keeps publishers blocked most of the time: the
     * wake-up path is exercised millions of times. */
    evs_stream_opts o = {.capacity = 8};
    run_stress(&o);
}

/* Under DROP_OLDEST the subscriber's count plus the drop counter must
 * equal what was published: nothing disappears uncounted. */
Test(stream_stress, drop_policies_account_for_every_event, .timeout = 600)
{
    evs_overflow pol[] = {EVS_OVERFLOW_DROP_OLDEST, EVS_OVERFLOW_DROP_NEWEST};
    for (int k = 0; k < 2; k++) {
        evs_stream_opts o = {.capacity = 16, .overflow = pol[k]};
        evs_stream *s;
        cr_assert_eq(evs_stream_create(&s, &o), 0);
        churn_sub cs = {.magic = CHURN_MAGIC};
        evs_sub *sub;
        cr_assert_eq(evs_subscribe(&sub, s, NULL, churn_handler, NULL, &cs, NULL), 0);
        ctx c = {.s = s, .n = events_per_publisher() / 10};
        atomic_store(&c.publishers_left, PUBLISHERS);
        pthread_t pubs[PUBLISHERS];
        pub_arg args[PUBLISHERS];
        for (uint32_t i = 0; i < PUBLISHERS; i++) {
            args[i] = (pub_arg){.c = &c, .index = i};
            pthread_create(&pubs[i], NULL, publisher, &args[i]);
        }
        for (int i = 0; i < PUBLISHERS; i++)
            pthread_join(pubs[i], NULL);
        cr_assert_eq(evs_stream_close(s, EVS_FOREVER, NULL), 0);
        evs_stream_stats st;
        cr_assert_eq(evs_stream_stats_get(s, &st), 0);
        uint64_t attempted = (uint64_t)PUBLISHERS * c.n;
        uint64_t dropped = st.dropped_oldest + st.dropped_newest;
        cr_assert_eq(cs.count + dropped, attempted, "policy %d: %lu delivered + %lu dropped != %lu",
                     k, (unsigned long)cs.count, (unsigned long)dropped, (unsigned long)attempted);
        cr_assert_eq(st.published, pol[k] == EVS_OVERFLOW_DROP_NEWEST ? attempted - dropped : attempted);
        evs_sub_stats ss;
        cr_assert_eq(evs_sub_stats_get(sub, &ss), 0);
        cr_assert_eq(ss.dropped, dropped);
        cr_assert_eq(evs_stream_destroy(s), 0);
    }
}

/* One publisher on a single-publisher stream (no atomics on the publish
 * path) with subscriptions churning. */
Test(stream_stress, single_publisher_with_churn, .timeout = 600)
{
    ctx c = {.n = events_per_publisher()};
    atomic_store(&c.publishers_left, 1);
    evs_stream_opts o = {.capacity = 256, .single_publisher = true};
    cr_assert_eq(evs_stream_create(&c.s, &o), 0);
    full_sub f = {0};
    evs_sub *s1;
    cr_assert_eq(evs_subscribe(&s1, c.s, NULL, full_handler, NULL, &f, NULL), 0);
    pthread_t pub, churn;
    pub_arg a = {.c = &c, .index = 0};
    pthread_create(&pub, NULL, publisher, &a);
    pthread_create(&churn, NULL, churner, &c);
    pthread_join(pub, NULL);
    pthread_join(churn, NULL);
    cr_assert_eq(a.rc, 0, "%s", evs_errname(a.rc));
    cr_assert_eq(evs_stream_close(c.s, EVS_FOREVER, NULL), 0);
    cr_assert(!f.broken);
    cr_assert_eq(f.count, c.n);
    cr_assert_eq(atomic_load(&c.churn_failures), 0);
    cr_assert_eq(evs_stream_destroy(c.s), 0);
}

/* Claim/commit from four publishers onto a small slot ring, with churn:
 * every slot is reused thousands of times while being delivered. */
static void *slot_publisher(void *arg)
{
    pub_arg *a = arg;
    for (uint32_t i = 1; i <= a->c->n; i++) {
        evs_event *ev;
        void *data;
        if ((a->rc = evs_stream_claim(a->c->s, EVS_TYPE_MESSAGE, "stress", sizeof(payload),
                                      &ev, &data)) != 0)
            break;
        payload p = {a->index, i};
        memcpy(data, &p, sizeof(p));
        if ((a->rc = evs_stream_commit(a->c->s, ev)) != 0)
            break;
    }
    atomic_fetch_sub(&a->c->publishers_left, 1);
    return NULL;
}

Test(stream_stress, slot_claims_from_four_publishers_with_churn, .timeout = 600)
{
    ctx c = {.n = events_per_publisher() / 2};
    atomic_store(&c.publishers_left, PUBLISHERS);
    evs_stream_opts o = {.capacity = 64, .slot_bytes = 64, .history = 16};
    cr_assert_eq(evs_stream_create(&c.s, &o), 0);
    full_sub f = {0};
    evs_sub *s1;
    cr_assert_eq(evs_subscribe(&s1, c.s, NULL, full_handler, NULL, &f, NULL), 0);
    pthread_t pubs[PUBLISHERS], churn;
    pub_arg args[PUBLISHERS];
    for (uint32_t i = 0; i < PUBLISHERS; i++) {
        args[i] = (pub_arg){.c = &c, .index = i};
        pthread_create(&pubs[i], NULL, slot_publisher, &args[i]);
    }
    pthread_create(&churn, NULL, churner, &c);
    for (int i = 0; i < PUBLISHERS; i++)
        pthread_join(pubs[i], NULL);
    pthread_join(churn, NULL);
    for (int i = 0; i < PUBLISHERS; i++)
        cr_assert_eq(args[i].rc, 0, "publisher %d: %s", i, evs_errname(args[i].rc));
    cr_assert_eq(evs_stream_close(c.s, EVS_FOREVER, NULL), 0);
    cr_assert(!f.broken);
    cr_assert_eq(f.count, (uint64_t)PUBLISHERS * c.n);
    cr_assert_eq(atomic_load(&c.churn_failures), 0);
    cr_assert_eq(evs_stream_destroy(c.s), 0);
}

/* ------------------------------------------------------------------ */
/* Regressions (issue 13): unsubscribe from inside an inline handler,   */
/* a pooled handler on its own full stream, inline flush under load.   */

static void pause_ms(int ms)
{
    struct timespec ts = {0, (long)ms * 1000000};
    nanosleep(&ts, NULL);
}

/* Two publishers inside one inline handler: the "slow" call is still
 * running when the "kill" call unsubscribes. */
typedef struct two_calls {
    evs_sub *sub;
    atomic_int slow_inside;   /* the slow call has started and not ended */
    atomic_int unsub_started; /* the kill call is about to unsubscribe */
    atomic_int slow_at_return; /* slow_inside when evs_unsubscribe returned */
} two_calls;

static int two_calls_handler(const evs_event *ev, void *user)
{
    two_calls *t = user;
    if (strcmp(evs_event_topic(ev), "slow") == 0) {
        atomic_store(&t->slow_inside, 1);
        while (!atomic_load(&t->unsub_started))
            sched_yield();
        /* Still inside the handler, using `user`, after the other call
         * began to unsubscribe: evs_unsubscribe must wait for this. */
        pause_ms(50);
        atomic_store(&t->slow_inside, 0);
    } else {
        while (!atomic_load(&t->slow_inside))
            sched_yield();
        atomic_store(&t->unsub_started, 1);
        cr_assert_eq(evs_unsubscribe(t->sub), 0);
        atomic_store(&t->slow_at_return, atomic_load(&t->slow_inside));
    }
    return 0;
}

typedef struct topic_pub {
    evs_stream *s;
    const char *topic;
    int rc;
} topic_pub;

static void *publish_topic(void *arg)
{
    topic_pub *p = arg;
    evs_event *ev;
    if ((p->rc = evs_event_create(&ev, EVS_TYPE_MESSAGE, p->topic, "x", 1)) != 0)
        return NULL;
    p->rc = evs_stream_publish(p->s, ev);
    evs_event_unref(ev);
    return NULL;
}

Test(stream_stress, inline_unsubscribe_inside_a_handler_waits_for_other_publishers, .timeout = 30)
{
    evs_stream_opts o = {.delivery = EVS_DELIVERY_INLINE};
    evs_stream *s;
    cr_assert_eq(evs_stream_create(&s, &o), 0);
    two_calls t = {0};
    cr_assert_eq(evs_subscribe(&t.sub, s, NULL, two_calls_handler, NULL, &t, NULL), 0);
    topic_pub a = {s, "slow", -99}, b = {s, "kill", -99};
    pthread_t ta, tb;
    pthread_create(&ta, NULL, publish_topic, &a);
    pthread_create(&tb, NULL, publish_topic, &b);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    cr_assert_eq(a.rc, 0);
    cr_assert_eq(b.rc, 0);
    cr_assert_eq(atomic_load(&t.slow_at_return), 0,
                 "evs_unsubscribe returned while another publisher was in the handler");
    cr_assert_eq(evs_stream_destroy(s), 0);
}

/* A pooled handler that publishes to its own stream until it is full. */
typedef struct self_pub {
    evs_stream *s;
    atomic_int first_error;
    atomic_int calls;
} self_pub;

static int self_publisher(const evs_event *ev, void *user)
{
    self_pub *p = user;
    atomic_fetch_add(&p->calls, 1);
    if (strcmp(evs_event_topic(ev), "go") != 0)
        return 0;
    for (int i = 0; i < 64; i++) {
        evs_event *e;
        cr_assert_eq(evs_event_create(&e, EVS_TYPE_MESSAGE, "more", "x", 1), 0);
        int rc = evs_stream_publish(p->s, e);
        evs_event_unref(e);
        if (rc != 0) {
            atomic_store(&p->first_error, rc);
            break;
        }
    }
    return 0;
}

Test(stream_stress, pooled_handler_publishing_to_its_own_full_stream_gets_edeadlk, .timeout = 30)
{
    self_pub p = {0};
    evs_stream_opts o = {.capacity = 4, .overflow = EVS_OVERFLOW_BLOCK};
    cr_assert_eq(evs_stream_create(&p.s, &o), 0);
    evs_sub_opts so = {.max_concurrent = 1, .queue = 1};
    evs_sub *sub;
    cr_assert_eq(evs_subscribe(&sub, p.s, NULL, self_publisher, NULL, &p, &so), 0);
    evs_event *go;
    cr_assert_eq(evs_event_create(&go, EVS_TYPE_MESSAGE, "go", "x", 1), 0);
    cr_assert_eq(evs_stream_publish(p.s, go), 0);
    evs_event_unref(go);
    /* Without the refusal the worker waits for room only it can make. */
    for (int i = 0; i < 10000 && atomic_load(&p.first_error) == 0; i++)
        pause_ms(1);
    cr_assert_eq(atomic_load(&p.first_error), EVS_EDEADLK, "got %s",
                 evs_errname(atomic_load(&p.first_error)));
    cr_assert_eq(evs_stream_flush(p.s, 10000, NULL), 0);
    cr_assert_eq(evs_unsubscribe(sub), 0);
    cr_assert_eq(evs_stream_destroy(p.s), 0);
}

/* Inline flush while publishers never pause: it waits for the events
 * accepted before the call, not for a quiet moment. Each call returns
 * only once a later call has begun (a baton), so while the publishers
 * run there is never a moment with no publish in flight. */
typedef struct busy {
    evs_stream *s;
    atomic_int stop;
    atomic_ullong entered;
    atomic_ullong delivered;
    atomic_int rc; /* a publisher's first error */
} busy;

static int busy_handler(const evs_event *ev, void *user)
{
    busy *b = user;
    (void)ev;
    unsigned long long mine = atomic_fetch_add(&b->entered, 1) + 1;
    while (atomic_load(&b->entered) == mine && !atomic_load(&b->stop))
        sched_yield();
    atomic_fetch_add(&b->delivered, 1);
    return 0;
}

static void *busy_publisher(void *arg)
{
    busy *b = arg;
    evs_event *ev;
    int rc = evs_event_create(&ev, EVS_TYPE_MESSAGE, "t", "x", 1);
    while (rc == 0 && !atomic_load(&b->stop))
        rc = evs_stream_publish(b->s, ev);
    if (rc != 0)
        atomic_store(&b->rc, rc);
    evs_event_unref(ev);
    return NULL;
}

Test(stream_stress, inline_flush_returns_while_publishers_keep_going, .timeout = 60)
{
    busy b = {0};
    evs_stream_opts o = {.delivery = EVS_DELIVERY_INLINE, .history = EVS_HISTORY_NONE};
    cr_assert_eq(evs_stream_create(&b.s, &o), 0);
    evs_sub *sub;
    cr_assert_eq(evs_subscribe(&sub, b.s, NULL, busy_handler, NULL, &b, NULL), 0);
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, busy_publisher, &b);
    for (int i = 0; i < 5; i++) {
        /* Both publishers are running: calls keep starting. */
        unsigned long long at = atomic_load(&b.entered);
        while (atomic_load(&b.entered) < at + 2)
            sched_yield();
        evs_stream_stats st;
        cr_assert_eq(evs_stream_stats_get(b.s, &st), 0);
        uint64_t left = 99;
        /* Generous: a flush waits for at most two handler calls here. */
        ASSERT_RC(evs_stream_flush(b.s, 3000, &left), 0);
        cr_assert_eq(left, 0);
        /* Everything accepted before the call was delivered. */
        cr_assert_geq(atomic_load(&b.delivered), st.published);
    }
    atomic_store(&b.stop, 1);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    cr_assert_eq(atomic_load(&b.rc), 0);
    cr_assert_eq(evs_stream_destroy(b.s), 0);
}
