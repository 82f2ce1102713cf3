/*
 * TopicStream (router.c, topics.c, through the public API): subject and
 * pattern validation at publish and subscribe, routing by pattern,
 * heartbeats to everyone, topic listing and counts, the routing cache
 * across subscribe/unsubscribe, and concurrent churn.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "evs_internal.h"
#include "evstream.h"
#include "evs_test.h"
#include "router.h"


typedef struct got {
    atomic_ulong n;
    char last[64];
} got;

static int remember(const evs_event *ev, void *user)
{
    got *g = user;
    snprintf(g->last, sizeof(g->last), "%s", evs_event_topic(ev));
    atomic_fetch_add(&g->n, 1);
    return 0;
}

static evs_stream *topic_stream(bool inline_delivery)
{
    evs_stream_opts o = {.topics = true,
                         .delivery = inline_delivery ? EVS_DELIVERY_INLINE : EVS_DELIVERY_DISPATCHER};
    evs_stream *s;
    ASSERT_RC(evs_stream_create(&s, &o), 0);
    return s;
}

static int pub(evs_stream *s, const char *subject)
{
    evs_event *ev;
    int rc = evs_event_create(&ev, EVS_TYPE_MESSAGE, subject, "x", 1);
    if (rc != 0)
        return rc;
    rc = evs_stream_publish(s, ev);
    evs_event_unref(ev);
    return rc;
}

Test(router, invalid_subjects_and_patterns_are_einval_with_no_effect)
{
    evs_stream *s = topic_stream(false);
    const char *bad_subjects[] = {"", "a..b", ".a", "a.", "a b", "a.*", "a.>", "*", ">"};
    for (size_t i = 0; i < sizeof(bad_subjects) / sizeof(bad_subjects[0]); i++)
        ASSERT_RC(pub(s, bad_subjects[i]), EVS_EINVAL);
    const char *bad_patterns[] = {"", "a..b", "a.>.b", ">.a", "a\tb", "a.b."};
    got g = {0};
    evs_sub *sub = (evs_sub *)1;
    for (size_t i = 0; i < sizeof(bad_patterns) / sizeof(bad_patterns[0]); i++) {
        ASSERT_RC(evs_subscribe(&sub, s, bad_patterns[i], remember, NULL, &g, NULL), EVS_EINVAL);
        cr_assert_null(sub);
    }
    evs_stream_stats st;
    ASSERT_RC(evs_stream_stats_get(s, &st), 0);
    cr_assert_eq(st.published, 0);
    cr_assert_eq(st.subscribers, 0);
    cr_assert_eq(st.topics, 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

static void routes_by_pattern(bool inline_delivery)
{
    evs_stream *s = topic_stream(inline_delivery);
    got all = {0}, eu = {0}, created = {0}, exact = {0}, literal = {0};
    evs_sub *a, *b, *c, *d, *e;
    ASSERT_RC(evs_subscribe(&a, s, ">", remember, NULL, &all, NULL), 0);
    ASSERT_RC(evs_subscribe(&b, s, "orders.eu.>", remember, NULL, &eu, NULL), 0);
    ASSERT_RC(evs_subscribe(&c, s, "orders.*.created", remember, NULL, &created, NULL), 0);
    ASSERT_RC(evs_subscribe(&d, s, "orders.us.created", remember, NULL, &exact, NULL), 0);
    ASSERT_RC(evs_subscribe(&e, s, "a*.b", remember, NULL, &literal, NULL), 0);
    ASSERT_RC(pub(s, "orders.eu.created"), 0);
    ASSERT_RC(pub(s, "orders.us.created"), 0);
    ASSERT_RC(pub(s, "orders.eu"), 0);           /* orders.eu.> needs one more */
    ASSERT_RC(pub(s, "orders.eu.x.y"), 0);
    ASSERT_RC(pub(s, "a*.b"), 0);                /* literal '*' in a token */
    ASSERT_RC(pub(s, "ab.b"), 0);                /* not matched by "a*.b" */
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    cr_assert_eq(atomic_load(&all.n), 6);
    cr_assert_eq(atomic_load(&eu.n), 2);
    cr_assert_eq(atomic_load(&created.n), 2);
    cr_assert_eq(atomic_load(&exact.n), 1);
    cr_assert_str_eq(exact.last, "orders.us.created");
    cr_assert_eq(atomic_load(&literal.n), 1);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

Test(router, dispatcher_routes_by_pattern, .timeout = 30) { routes_by_pattern(false); }
Test(router, inline_routes_by_pattern, .timeout = 30) { routes_by_pattern(true); }

Test(router, unsubscribe_and_subscribe_invalidate_the_cached_route, .timeout = 30)
{
    evs_stream *s = topic_stream(false);
    got g1 = {0}, g2 = {0};
    evs_sub *s1, *s2;
    ASSERT_RC(evs_subscribe(&s1, s, "t.*", remember, NULL, &g1, NULL), 0);
    ASSERT_RC(pub(s, "t.x"), 0); /* caches t.x -> {s1} */
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    ASSERT_RC(evs_subscribe(&s2, s, "t.x", remember, NULL, &g2, NULL), 0);
    ASSERT_RC(pub(s, "t.x"), 0); /* must reach s2 too */
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    ASSERT_RC(evs_unsubscribe(s1), 0);
    ASSERT_RC(pub(s, "t.x"), 0); /* must not reach s1 */
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    cr_assert_eq(atomic_load(&g1.n), 2);
    cr_assert_eq(atomic_load(&g2.n), 2);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

typedef struct listing {
    int n;
    uint64_t published_ab, subscribers_ab, published_cd;
    bool saw_wildcard, saw_t1;
} listing;

static int collect(const char *subject, const evs_topic_stats *st, void *user)
{
    listing *l = user;
    l->n++;
    if (strcmp(subject, "a.b") == 0) {
        l->published_ab = st->published;
        l->subscribers_ab = st->subscribers;
    } else if (strcmp(subject, "c.d") == 0) {
        l->published_cd = st->published;
    } else if (strcmp(subject, "t1") == 0) {
        l->saw_t1 = true;
    } else if (strchr(subject, '*') || strchr(subject, '>')) {
        l->saw_wildcard = true;
    }
    return 0;
}

static int stop_at_first(const char *subject, const evs_topic_stats *st, void *user)
{
    (void)subject;
    (void)st;
    (*(int *)user)++;
    return 7;
}

Test(router, topics_lists_published_and_exactly_subscribed_subjects, .timeout = 30)
{
    evs_stream *s = topic_stream(false);
    got g = {0};
    evs_sub *x, *y, *w;
    ASSERT_RC(evs_subscribe(&x, s, "a.b", remember, NULL, &g, NULL), 0);
    ASSERT_RC(evs_subscribe(&y, s, "a.b", remember, NULL, &g, NULL), 0);
    ASSERT_RC(evs_subscribe(&w, s, "a.*", remember, NULL, &g, NULL), 0);
    for (int i = 0; i < 3; i++)
        ASSERT_RC(pub(s, "a.b"), 0);
    ASSERT_RC(pub(s, "c.d"), 0);
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    listing l = {0};
    ASSERT_RC(evs_stream_topics(s, collect, &l), 0);
    cr_assert_eq(l.n, 2, "a.b and c.d, got %d", l.n);
    cr_assert_eq(l.published_ab, 3);
    cr_assert_eq(l.subscribers_ab, 2);
    cr_assert_eq(l.published_cd, 1);
    cr_assert(!l.saw_wildcard, "wildcard patterns are not topics");
    ASSERT_RC(evs_unsubscribe(y), 0);
    l = (listing){0};
    ASSERT_RC(evs_stream_topics(s, collect, &l), 0);
    cr_assert_eq(l.subscribers_ab, 1);
    int calls = 0;
    ASSERT_RC(evs_stream_topics(s, stop_at_first, &calls), 7);
    cr_assert_eq(calls, 1);
    evs_stream_stats st;
    ASSERT_RC(evs_stream_stats_get(s, &st), 0);
    cr_assert_eq(st.topics, 2);
    cr_assert_eq(st.unroutable, 1, "c.d reached no one");
    evs_stream *plain;
    ASSERT_RC(evs_stream_create(&plain, NULL), 0);
    ASSERT_RC(evs_stream_topics(plain, collect, &l), EVS_EINVAL);
    ASSERT_RC(evs_stream_destroy(plain), 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

Test(router, a_full_table_drops_the_least_recently_used_subject_without_subscribers,
     .timeout = 30)
{
    evs_stream_opts o = {.topics = true, .max_topics = 2};
    evs_stream *s;
    ASSERT_RC(evs_stream_create(&s, &o), 0);
    got g = {0};
    evs_sub *sub;
    ASSERT_RC(evs_subscribe(&sub, s, ">", remember, NULL, &g, NULL), 0);
    ASSERT_RC(pub(s, "t1"), 0);
    ASSERT_RC(pub(s, "t2"), 0);
    ASSERT_RC(pub(s, "t3"), 0);
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    cr_assert_eq(atomic_load(&g.n), 3);
    evs_stream_stats st;
    ASSERT_RC(evs_stream_stats_get(s, &st), 0);
    cr_assert_eq(st.topics, 2);
    cr_assert_eq(st.topics_evicted, 1, "t1 made room for t3");
    cr_assert_eq(st.topics_untracked, 0);
    listing l = {0};
    ASSERT_RC(evs_stream_topics(s, collect, &l), 0);
    cr_assert_eq(l.n, 2);
    cr_assert(!l.saw_t1, "the oldest subject went");
    ASSERT_RC(evs_stream_destroy(s), 0);
}

Test(router, subjects_past_a_table_of_subscribed_subjects_are_delivered_but_not_listed,
     .timeout = 30)
{
    evs_stream_opts o = {.topics = true, .max_topics = 2};
    evs_stream *s;
    ASSERT_RC(evs_stream_create(&s, &o), 0);
    got g = {0};
    evs_sub *all, *x, *y;
    ASSERT_RC(evs_subscribe(&all, s, ">", remember, NULL, &g, NULL), 0);
    ASSERT_RC(evs_subscribe(&x, s, "a.b", remember, NULL, &g, NULL), 0);
    ASSERT_RC(evs_subscribe(&y, s, "c.d", remember, NULL, &g, NULL), 0);
    ASSERT_RC(pub(s, "t3"), 0);
    ASSERT_RC(pub(s, "t3"), 0);
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    cr_assert_eq(atomic_load(&g.n), 2);
    evs_stream_stats st;
    ASSERT_RC(evs_stream_stats_get(s, &st), 0);
    cr_assert_eq(st.topics, 2);
    cr_assert_eq(st.topics_untracked, 2);
    cr_assert_eq(st.topics_evicted, 0, "subscribed subjects are never dropped");
    listing l = {0};
    ASSERT_RC(evs_stream_topics(s, collect, &l), 0);
    cr_assert_eq(l.n, 2);
    cr_assert_eq(l.subscribers_ab, 1);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

Test(router, claimed_slot_events_are_routed_and_checked, .timeout = 30)
{
    evs_stream_opts o = {.topics = true, .slot_bytes = 64};
    evs_stream *s;
    ASSERT_RC(evs_stream_create(&s, &o), 0);
    got g = {0};
    evs_sub *sub;
    ASSERT_RC(evs_subscribe(&sub, s, "x.*", remember, NULL, &g, NULL), 0);
    evs_event *ev;
    void *data;
    ASSERT_RC(evs_stream_claim(s, EVS_TYPE_MESSAGE, "x.>", 1, &ev, &data), EVS_EINVAL);
    ASSERT_RC(evs_stream_claim(s, EVS_TYPE_MESSAGE, "x.y", 1, &ev, &data), 0);
    ASSERT_RC(evs_stream_commit(s, ev), 0);
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    cr_assert_eq(atomic_load(&g.n), 1);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

/* Per-publisher order on one subject at every subscriber, while other
 * threads subscribe and unsubscribe wildcard patterns. */
#define TP_PUBS 3
#define TP_N 20000

typedef struct order_sub {
    uint32_t last[TP_PUBS];
    uint64_t count;
    bool broken;
} order_sub;

static int check_order(const evs_event *ev, void *user)
{
    order_sub *o = user;
    size_t len;
    const uint32_t *d = evs_event_data(ev, &len);
    if (len != 8 || d[0] >= TP_PUBS || d[1] != o->last[d[0]] + 1)
        o->broken = true;
    else
        o->last[d[0]] = d[1];
    o->count++;
    return 0;
}

typedef struct tp_ctx {
    evs_stream *s;
    atomic_int pubs_left;
    atomic_int failures;
} tp_ctx;

typedef struct tp_pub {
    tp_ctx *c;
    uint32_t index;
} tp_pub;

static void *tp_publisher(void *arg)
{
    tp_pub *p = arg;
    for (uint32_t i = 1; i <= TP_N; i++) {
        uint32_t d[2] = {p->index, i};
        evs_event *ev;
        if (evs_event_create(&ev, EVS_TYPE_MESSAGE, "orders.eu.created", d, sizeof(d)) != 0 ||
            evs_stream_publish(p->c->s, ev) != 0)
            atomic_fetch_add(&p->c->failures, 1);
        evs_event_unref(ev);
    }
    atomic_fetch_sub(&p->c->pubs_left, 1);
    return NULL;
}

static int count_only(const evs_event *ev, void *user)
{
    (void)ev;
    atomic_fetch_add((atomic_ulong *)user, 1);
    return 0;
}

static void *tp_churner(void *arg)
{
    tp_ctx *c = arg;
    const char *pats[] = {"orders.*.created", "orders.>", "orders.eu.*", ">", "other.>"};
    unsigned i = 0;
    while (atomic_load(&c->pubs_left) > 0) {
        atomic_ulong n = 0;
        evs_sub *sub;
        if (evs_subscribe(&sub, c->s, pats[i++ % 5], count_only, NULL, &n, NULL) != 0) {
            atomic_fetch_add(&c->failures, 1);
            break;
        }
        sched_yield();
        if (evs_unsubscribe(sub) != 0)
            atomic_fetch_add(&c->failures, 1);
    }
    return NULL;
}

Test(router, order_holds_under_subscription_churn, .timeout = 300)
{
    tp_ctx c = {.s = topic_stream(false)};
    atomic_store(&c.pubs_left, TP_PUBS);
    order_sub exact = {0}, wild = {0};
    evs_sub *a, *b;
    ASSERT_RC(evs_subscribe(&a, c.s, "orders.eu.created", check_order, NULL, &exact, NULL), 0);
    ASSERT_RC(evs_subscribe(&b, c.s, "orders.*.>", check_order, NULL, &wild, NULL), 0);
    pthread_t pubs[TP_PUBS], churn;
    tp_pub args[TP_PUBS];
    for (uint32_t i = 0; i < TP_PUBS; i++) {
        args[i] = (tp_pub){&c, i};
        pthread_create(&pubs[i], NULL, tp_publisher, &args[i]);
    }
    pthread_create(&churn, NULL, tp_churner, &c);
    for (int i = 0; i < TP_PUBS; i++)
        pthread_join(pubs[i], NULL);
    pthread_join(churn, NULL);
    ASSERT_RC(evs_stream_close(c.s, EVS_FOREVER, NULL), 0);
    cr_assert_eq(atomic_load(&c.failures), 0);
    cr_assert(!exact.broken && !wild.broken);
    cr_assert_eq(exact.count, (uint64_t)TP_PUBS * TP_N);
    cr_assert_eq(wild.count, (uint64_t)TP_PUBS * TP_N);
    ASSERT_RC(evs_stream_destroy(c.s), 0);
}

/* ---- reclaiming the topic table ------------------------------------ */

#define JUNK 10000

static void route_n(evs_router *r, const char *fmt, int n)
{
    evs_itemvec v = {0};
    char subject[64];
    for (int i = 0; i < n; i++) {
        snprintf(subject, sizeof(subject), fmt, i);
        evs_topic *t;
        ASSERT_RC(evs__router_route(r, subject, strlen(subject), &v, &t), 0);
        cr_assert_not_null(t);
        ck_pr_add_64(&t->published, 1); /* what a delivering thread does */
    }
    evs__itemvec_fini(&v);
}

Test(router, idle_subjects_without_subscribers_are_reclaimed_after_two_idle_sweeps,
     .timeout = 60)
{
    evs_router *r;
    ASSERT_RC(evs__router_create(&r, 0, 0, EVS_TOPIC_IDLE_NEVER), 0);
    int sub;
    evs_topic *kept;
    ASSERT_RC(evs__router_add(r, "keep.me", &sub, &kept), 0);
    cr_assert_not_null(kept);
    route_n(r, "junk.s%d", JUNK);
    route_n(r, "hot.one", 1);
    cr_assert_eq(evs__router_topic_count(r), JUNK + 2);
    cr_assert_eq(evs__router_sweep(r), 0, "the sweep that sees activity keeps all");
    cr_assert_eq(evs__router_sweep(r), 0, "idle once is not enough");
    route_n(r, "hot.one", 1);
    cr_assert_eq(evs__router_sweep(r), JUNK, "idle at two sweeps in a row: gone");
    cr_assert_eq(evs__router_topic_count(r), 2, "the subscribed and the hot subject stay");
    cr_assert_eq(evs__router_evicted(r), JUNK);
    cr_assert_eq(evs__router_untracked(r), 0);

    /* Unsubscribing counts as activity; then it goes like the others. */
    evs__router_remove(r, "keep.me", &sub, kept);
    cr_assert_eq(evs__router_sweep(r), 0);
    cr_assert_eq(evs__router_sweep(r), 1, "hot.one, idle twice since its publish");
    cr_assert_eq(evs__router_sweep(r), 1, "keep.me");
    cr_assert_eq(evs__router_topic_count(r), 0);
    cr_assert_eq(evs__router_evicted(r), JUNK + 2);

    /* A subject that comes back is a new entry, counts from zero. */
    route_n(r, "junk.s%d", 1);
    cr_assert_eq(evs__router_topic_count(r), 1);
    evs__router_destroy(r);
}

Test(router, a_subscribed_subject_is_never_reclaimed, .timeout = 30)
{
    evs_router *r;
    ASSERT_RC(evs__router_create(&r, 0, 4, EVS_TOPIC_IDLE_NEVER), 0);
    int sub;
    evs_topic *kept;
    ASSERT_RC(evs__router_add(r, "keep.me", &sub, &kept), 0);
    route_n(r, "junk.s%d", 100); /* the full table makes room 99 times */
    for (int i = 0; i < 5; i++)
        evs__router_sweep(r);
    cr_assert_eq(evs__router_topic_count(r), 1);
    cr_assert_eq(evs_load(&kept->subscribers), 1);
    cr_assert_eq(evs__router_evicted(r), 100);
    evs__router_remove(r, "keep.me", &sub, kept);
    evs__router_destroy(r);
}

Test(router, bad_topic_idle_is_einval, .timeout = 30)
{
    evs_stream_opts o = {.topics = true, .topic_idle_ms = -2};
    evs_stream *s = (evs_stream *)1;
    ASSERT_RC(evs_stream_create(&s, &o), EVS_EINVAL);
    cr_assert_null(s);
    o.topic_idle_ms = EVS_TOPIC_IDLE_NEVER;
    ASSERT_RC(evs_stream_create(&s, &o), 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

typedef struct kept_listing {
    int n;
    uint64_t published, subscribers;
} kept_listing;

static int find_kept(const char *subject, const evs_topic_stats *st, void *user)
{
    kept_listing *k = user;
    k->n++;
    if (strcmp(subject, "keep.me") == 0) {
        k->published = st->published;
        k->subscribers = st->subscribers;
    }
    return 0;
}

/* Through the stream, on the heartbeat service's (fake) clock: 10,000
 * subjects nobody subscribes to leave within 1.5 x topic_idle_ms; the
 * subscribed one stays with its counts; routes cached for the dropped
 * ones are never used again (ASan would see the retired entries). */
static void idle_subjects_leave(evs_delivery delivery)
{
    ASSERT_RC(evs__hb_set_clock(&fake_clock), 0);
    evs_stream_opts o = {.topics = true, .topic_idle_ms = 1000, .delivery = delivery};
    evs_stream *s;
    ASSERT_RC(evs_stream_create(&s, &o), 0);
    got all = {0}, keep = {0};
    evs_sub *a, *k;
    ASSERT_RC(evs_subscribe(&a, s, ">", remember, NULL, &all, NULL), 0);
    ASSERT_RC(evs_subscribe(&k, s, "keep.me", remember, NULL, &keep, NULL), 0);
    char subject[64];
    for (int i = 0; i < JUNK; i++) {
        snprintf(subject, sizeof(subject), "junk.s%d", i);
        ASSERT_RC(pub(s, subject), 0);
    }
    ASSERT_RC(pub(s, "keep.me"), 0);
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    evs_stream_stats st;
    ASSERT_RC(evs_stream_stats_get(s, &st), 0);
    cr_assert_eq(st.topics, JUNK + 1);

    clock_at_ms(500);  /* sweeps every 500 ms: this one sees the publishes */
    clock_at_ms(999);
    ASSERT_RC(evs_stream_stats_get(s, &st), 0);
    cr_assert_eq(st.topics, JUNK + 1, "nothing goes before topic_idle_ms");
    clock_at_ms(1000);
    clock_at_ms(1500);
    ASSERT_RC(evs_stream_stats_get(s, &st), 0);
    cr_assert_eq(st.topics, 1, "only keep.me is left, got %llu", (unsigned long long)st.topics);
    cr_assert_eq(st.topics_evicted, JUNK);
    kept_listing l = {0};
    ASSERT_RC(evs_stream_topics(s, find_kept, &l), 0);
    cr_assert_eq(l.n, 1);
    cr_assert_eq(l.published, 1);
    cr_assert_eq(l.subscribers, 1);

    /* Dropped subjects still route, and come back counted from zero. */
    for (int i = 0; i < 3; i++)
        ASSERT_RC(pub(s, "junk.s7"), 0);
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    cr_assert_eq(atomic_load(&all.n), JUNK + 1 + 3);
    cr_assert_eq(atomic_load(&keep.n), 1);
    ASSERT_RC(evs_stream_stats_get(s, &st), 0);
    cr_assert_eq(st.topics, 2);
    cr_assert_eq(st.topics_untracked, 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
    ASSERT_RC(evs__hb_set_clock(NULL), 0);
}

Test(router, dispatcher_idle_subjects_leave_after_the_idle_time, .timeout = 60)
{
    idle_subjects_leave(EVS_DELIVERY_DISPATCHER);
}

Test(router, inline_idle_subjects_leave_after_the_idle_time, .timeout = 60)
{
    idle_subjects_leave(EVS_DELIVERY_INLINE);
}

/* The default: subjects published once and never subscribed to are
 * gone 90 s later (sweeps every 30 s). Uses only what the API had before
 * reclaiming existed, so it shows the old table never shrank. */
Test(router, by_default_unsubscribed_subjects_are_gone_within_ninety_seconds, .timeout = 60)
{
    ASSERT_RC(evs__hb_set_clock(&fake_clock), 0);
    evs_stream_opts o = {.topics = true};
    evs_stream *s;
    ASSERT_RC(evs_stream_create(&s, &o), 0);
    char subject[64];
    for (int i = 0; i < JUNK; i++) {
        snprintf(subject, sizeof(subject), "junk.s%d", i);
        ASSERT_RC(pub(s, subject), 0);
    }
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    evs_stream_stats st;
    ASSERT_RC(evs_stream_stats_get(s, &st), 0);
    cr_assert_eq(st.topics, JUNK);
    for (int64_t ms = 30000; ms <= 90000; ms += 30000)
        clock_at_ms(ms);
    ASSERT_RC(evs_stream_stats_get(s, &st), 0);
    cr_assert_eq(st.topics, 0, "got %llu", (unsigned long long)st.topics);
    ASSERT_RC(evs_stream_destroy(s), 0);
    ASSERT_RC(evs__hb_set_clock(NULL), 0);
}

/* Stress: threads subscribe to fresh exact subjects, publish to them and
 * to many junk subjects, list the table and unsubscribe, while another
 * thread drives sweeps and a small max_topics makes publishers reclaim.
 * Every subscriber gets exactly its events; at the end the table
 * empties. Run under make tsan and make asan. */
#define RS_THREADS 3
#define RS_ROUNDS 600
#define RS_EVENTS 5
#define RS_JUNK 20

typedef struct rs_ctx {
    evs_stream *s;
    atomic_int running;
    atomic_int failures;
} rs_ctx;

typedef struct rs_worker {
    rs_ctx *c;
    int index;
} rs_worker;

static int count_listed(const char *subject, const evs_topic_stats *st, void *user)
{
    (void)subject;
    (void)st;
    (*(int *)user)++;
    return 0;
}

static void *rs_work(void *arg)
{
    rs_worker *w = arg;
    evs_stream *s = w->c->s;
    char subject[64];
    for (int round = 0; round < RS_ROUNDS; round++) {
        got g = {0};
        evs_sub *sub;
        snprintf(subject, sizeof(subject), "w%d.r%d", w->index, round);
        if (evs_subscribe(&sub, s, subject, remember, NULL, &g, NULL) != 0) {
            atomic_fetch_add(&w->c->failures, 1);
            break;
        }
        for (int i = 0; i < RS_EVENTS; i++)
            if (pub(s, subject) != 0)
                atomic_fetch_add(&w->c->failures, 1);
        char junk[64];
        for (int j = 0; j < RS_JUNK; j++) {
            snprintf(junk, sizeof(junk), "j%d.r%d.n%d", w->index, round, j);
            if (pub(s, junk) != 0)
                atomic_fetch_add(&w->c->failures, 1);
        }
        int listed = 0;
        if (evs_stream_flush(s, EVS_FOREVER, NULL) != 0 ||
            evs_stream_topics(s, count_listed, &listed) != 0 ||
            atomic_load(&g.n) != RS_EVENTS)
            atomic_fetch_add(&w->c->failures, 1);
        if (evs_unsubscribe(sub) != 0)
            atomic_fetch_add(&w->c->failures, 1);
    }
    atomic_fetch_sub(&w->c->running, 1);
    return NULL;
}

static void topic_reclaim_stress(evs_delivery delivery)
{
    ASSERT_RC(evs__hb_set_clock(&fake_clock), 0);
    evs_stream_opts o = {
        .topics = true, .topic_idle_ms = 1000, .max_topics = 64, .delivery = delivery};
    rs_ctx c = {0};
    ASSERT_RC(evs_stream_create(&c.s, &o), 0);
    got all = {0};
    evs_sub *wild;
    ASSERT_RC(evs_subscribe(&wild, c.s, "j0.>", remember, NULL, &all, NULL), 0);
    atomic_store(&c.running, RS_THREADS);
    pthread_t th[RS_THREADS];
    rs_worker w[RS_THREADS];
    for (int i = 0; i < RS_THREADS; i++) {
        w[i] = (rs_worker){&c, i};
        cr_assert_eq(pthread_create(&th[i], NULL, rs_work, &w[i]), 0);
    }
    int64_t ms = 0;
    while (atomic_load(&c.running) > 0) {
        ms += 500;
        clock_at_ms(ms); /* one sweep on the service thread, and waits for it */
    }
    for (int i = 0; i < RS_THREADS; i++)
        pthread_join(th[i], NULL);
    ASSERT_RC(evs_stream_flush(c.s, EVS_FOREVER, NULL), 0);
    cr_assert_eq(atomic_load(&c.failures), 0);
    cr_assert_eq(atomic_load(&all.n), (unsigned long)RS_ROUNDS * RS_JUNK);
    for (int i = 0; i < 3; i++) {
        ms += 500;
        clock_at_ms(ms);
    }
    evs_stream_stats st;
    ASSERT_RC(evs_stream_stats_get(c.s, &st), 0);
    cr_assert_eq(st.topics, 0, "got %llu", (unsigned long long)st.topics);
    cr_assert(st.topics_evicted >= (uint64_t)RS_THREADS * RS_ROUNDS * (RS_JUNK + 1) -
                                       st.topics_untracked - 64);
    ASSERT_RC(evs_stream_destroy(c.s), 0);
    ASSERT_RC(evs__hb_set_clock(NULL), 0);
}

Test(router, dispatcher_reclaims_topics_under_churn, .timeout = 300)
{
    topic_reclaim_stress(EVS_DELIVERY_DISPATCHER);
}

Test(router, inline_reclaims_topics_under_churn, .timeout = 300)
{
    topic_reclaim_stress(EVS_DELIVERY_INLINE);
}
