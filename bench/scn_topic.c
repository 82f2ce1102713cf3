/*
 * TopicStream routing scenarios, through the public API only.
 *
 * The subjects are "t.<R>.<K>" for R in 0..99 and K in 0..999: 100,000
 * subjects. The 10,000 wildcard subscriptions are built so that the
 * subscriptions each subject matches are known by construction:
 *
 *   ids     0..99    "t.<R>.*"                 every subject matches one
 *   ids   100..199   "t.<R>.>"                 every subject matches one
 *   ids   200..999   "t.*.<K>",  K < 800       subjects with K < 800
 *   ids  1000..9999  "*.<R>.<K>", K >= 910     subjects with K >= 910
 *
 * so a subject matches 3 subscriptions (K < 800 or K >= 910) or 2 (the
 * rest): 2.89 on average. The first 1,000 (ids 0..999) form the small
 * set of the new-subject row: for subjects with K < 910 both sets give
 * exactly the same matches, and the 9,000 extra "*.<R>.<K>" patterns
 * sit on the path every match walks (the root's "*" child), so the
 * difference between the two is the size of the index alone. The
 * tables are checked against a naive matcher (every pattern, token by
 * token) on a sample of subjects before the first run.
 *
 * Every subscription's handler adds the event's sequence number times
 * (its id + 1) to one tally; the publisher adds, per event, the number
 * of matching subscriptions and seq times the sum of their (id + 1), so
 * a delivery to a wrong, missing or extra subscription fails the run.
 *
 * Events are published with evs_stream_claim / evs_stream_commit (slot
 * storage, single publisher, no history, coarse timestamps): the topic
 * and a 16-byte payload (sequence number, 0) are written into the slot.
 *
 * Two ways to measure:
 *   - publish: the calling thread publishes flat out for the repetition's
 *     time; the rate is events from the first claim to the return of
 *     evs_stream_flush (publisher and dispatcher on two CPUs, as in the
 *     other rate rows).
 *   - dispatcher alone ("1 CPU"): the dispatcher is held in a gate
 *     subscription's handler while the publisher queues a batch, and
 *     both threads are pinned to one CPU. The dispatcher stamps the
 *     clock when the gate opens and when it reaches the batch's end
 *     marker; the rate is batch events over that time: how many events
 *     one core routes (looks up and delivers) per second, with the
 *     publisher asleep.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* CPU_SET, pthread_setaffinity_np */
#endif

#include "bench.h"

#include <evstream.h>

#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NREG     100
#define NKIND    1000
#define NSUBJ    (NREG * NKIND)
#define NPAT     10000
#define NPAT_1K  1000
#define K_TSTAR  800  /* "t.*.<K>" for K below this */
#define K_STAR   910  /* "*.<R>.<K>" for K from this */
#define NNEW     (NREG * K_STAR) /* subjects whose matches both sets agree on */

#define CAPACITY   4096           /* ring slots: a batch of slots (~0.5 MB) stays in L2 */
#define BATCH      (CAPACITY - 16) /* events per gated batch (+ gate + end) */
#define SLOT_BYTES 32             /* "t.99.999" + NUL -> 16, + 16 data */
#define CACHE_BIG  131072         /* holds all 100,000 subjects */
#define MAX_TOPICS 200000
#define CHECK_EVERY 64
#define NAIVE_SCALE 0.2 /* the naive scan runs this share of the time */

/* ---------------------------------------------------------------- */
/* Subjects, patterns and what each subject matches                  */

static struct {
    bool     ready;
    char     subj[NSUBJ][12];
    char     pat[NPAT][12];
    uint8_t  n[2][NSUBJ];  /* matches in the 1k [0] and 10k [1] sets */
    uint64_t w[2][NSUBJ];  /* sum of (id + 1) over those matches */
    uint32_t order[NSUBJ]; /* a fixed shuffle: the publishing order */
    uint32_t fresh[NNEW];  /* the shuffle's subjects with K < K_STAR */
} T;

static void add_match(int s, int id)
{
    if (id < NPAT_1K) {
        T.n[0][s]++;
        T.w[0][s] += (uint64_t)id + 1;
    }
    T.n[1][s]++;
    T.w[1][s] += (uint64_t)id + 1;
}

/* Match `subj` against `pat` token by token: the reference. */
static bool naive_match(const char *pat, const char *subj)
{
    for (;;) {
        size_t pl = strcspn(pat, "."), sl = strcspn(subj, ".");
        if (pl == 1 && pat[0] == '>')
            return true; /* `>` is last and there is a token here */
        if (!(pl == 1 && pat[0] == '*') && (pl != sl || memcmp(pat, subj, pl) != 0))
            return false;
        bool pend = pat[pl] == 0, send = subj[sl] == 0;
        if (pend || send)
            return pend && send;
        pat += pl + 1;
        subj += sl + 1;
    }
}

/* Matches of subject `s` among the first `npat` patterns, by scanning. */
static void naive_route(const char *subj, int npat, unsigned *n, uint64_t *w)
{
    *n = 0;
    *w = 0;
    for (int id = 0; id < npat; id++)
        if (naive_match(T.pat[id], subj)) {
            (*n)++;
            *w += (uint64_t)id + 1;
        }
}

static int tables_init(bench_result *r)
{
    if (T.ready)
        return BENCH_OK;
    for (int R = 0; R < NREG; R++)
        for (int K = 0; K < NKIND; K++) {
            int s = R * NKIND + K;
            snprintf(T.subj[s], sizeof(T.subj[s]), "t.%d.%d", R, K);
            add_match(s, R);
            add_match(s, 100 + R);
            if (K < K_TSTAR)
                add_match(s, 200 + K);
            if (K >= K_STAR)
                add_match(s, 1000 + R * (NKIND - K_STAR) + (K - K_STAR));
        }
    for (int id = 0; id < NPAT; id++) {
        if (id < 100)
            snprintf(T.pat[id], sizeof(T.pat[id]), "t.%d.*", id);
        else if (id < 200)
            snprintf(T.pat[id], sizeof(T.pat[id]), "t.%d.>", id - 100);
        else if (id < NPAT_1K)
            snprintf(T.pat[id], sizeof(T.pat[id]), "t.*.%d", id - 200);
        else
            snprintf(T.pat[id], sizeof(T.pat[id]), "*.%d.%d", (id - 1000) / (NKIND - K_STAR),
                     K_STAR + (id - 1000) % (NKIND - K_STAR));
    }
    /* A fixed Fisher-Yates shuffle (xorshift), so that consecutive
     * publishes hit unrelated cache entries. */
    uint64_t x = 0x9e3779b97f4a7c15u;
    for (int i = 0; i < NSUBJ; i++)
        T.order[i] = (uint32_t)i;
    for (int i = NSUBJ - 1; i > 0; i--) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        int j = (int)(x % (uint64_t)(i + 1));
        uint32_t t = T.order[i];
        T.order[i] = T.order[j];
        T.order[j] = t;
    }
    for (int i = 0, k = 0; i < NSUBJ; i++)
        if ((int)(T.order[i] % NKIND) < K_STAR)
            T.fresh[k++] = T.order[i];
    /* Check the construction against the reference on a sample. */
    for (int i = 0; i < NSUBJ; i += 97) {
        int s = (int)T.order[i];
        for (int set = 0; set < 2; set++) {
            unsigned n;
            uint64_t w;
            naive_route(T.subj[s], set ? NPAT : NPAT_1K, &n, &w);
            if (n != T.n[set][s] || w != T.w[set][s])
                return bench_fail(r, "topic tables: %s matches %u patterns (weight %llu), "
                                  "construction says %u (%llu)", T.subj[s], n,
                                  (unsigned long long)w, T.n[set][s],
                                  (unsigned long long)T.w[set][s]);
        }
    }
    T.ready = true;
    return BENCH_OK;
}

/* ---------------------------------------------------------------- */
/* A topic stream with its subscriptions                             */

/* What one side runs: the subjects, the subscription set, the cache. */
typedef struct topic_cfg {
    int    mode;      /* TOPIC_PUBLISH or TOPIC_DRAIN */
    int    set;       /* 0: 1,000 subscriptions; 1: 10,000 */
    size_t nsubj;     /* working set: the first nsubj of the shuffle */
    bool   fresh;     /* every subject published once, new to the stream */
    size_t cache;     /* opts.topic_cache */
} topic_cfg;

enum { TOPIC_PUBLISH, TOPIC_DRAIN };

/* Shared by the handlers, which all run on the dispatcher thread. */
struct tstate {
    uint64_t count, sum; /* deliveries and their checksum */
    int      pin_cpu;    /* drain: pin the dispatcher here at the gate */
    bool     pinned;
    /* The gate: guarded by mu. */
    pthread_mutex_t mu;
    pthread_cond_t  cv;
    uint64_t open;       /* last batch the publisher released */
    uint64_t done;       /* last batch whose end marker was delivered */
    int64_t  t0, t1;     /* dispatcher clock at gate open, at the end */
};

struct tsub {
    struct tstate *st;
    uint64_t       w; /* id + 1 */
};

static int on_topic(const evs_event *ev, void *user)
{
    const struct tsub *ts = user;
    size_t len;
    const void *d = evs_event_data(ev, &len);
    if (len < BENCH_HDR)
        return -1;
    ts->st->count++;
    ts->st->sum += bench_get_seq(d) * ts->w;
    return 0;
}

static void pin_self(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

/* Batch b's gate: hold the dispatcher until the publisher releases b. */
static int on_gate(const evs_event *ev, void *user)
{
    struct tstate *st = user;
    size_t len;
    uint64_t b = bench_get_seq(evs_event_data(ev, &len));
    if (st->pin_cpu >= 0 && !st->pinned) {
        pin_self(st->pin_cpu);
        st->pinned = true;
    }
    pthread_mutex_lock(&st->mu);
    while (st->open < b)
        pthread_cond_wait(&st->cv, &st->mu);
    pthread_mutex_unlock(&st->mu);
    st->t0 = bench_now_ns();
    return 0;
}

/* Batch b's end marker: every event of the batch was delivered. */
static int on_end(const evs_event *ev, void *user)
{
    struct tstate *st = user;
    size_t len;
    uint64_t b = bench_get_seq(evs_event_data(ev, &len));
    st->t1 = bench_now_ns();
    pthread_mutex_lock(&st->mu);
    st->done = b;
    pthread_cond_broadcast(&st->cv);
    pthread_mutex_unlock(&st->mu);
    return 0;
}

/* Claim, fill and commit one event with topic `topic` and seq. */
static int put(evs_stream *s, const char *topic, uint64_t seq)
{
    evs_event *ev;
    void *data;
    int rc = evs_stream_claim(s, EVS_TYPE_MESSAGE, topic, BENCH_HDR, &ev, &data);
    if (rc != 0)
        return rc;
    bench_put_hdr(data, seq, 0);
    return evs_stream_commit(s, ev);
}

struct trun {
    evs_stream   *s;
    struct tstate st;
    struct tsub  *subs;
    uint64_t      want_count, want_sum; /* what the handlers must report */
    uint64_t      seq;                  /* last sequence number used */
};

static void trun_free(struct trun *t)
{
    evs_stream_destroy(t->s);
    pthread_cond_destroy(&t->st.cv);
    pthread_mutex_destroy(&t->st.mu);
    free(t->subs);
}

static int trun_setup(struct trun *t, const topic_cfg *c, int wait, bench_result *r)
{
    evs_stream_opts o = {.capacity = CAPACITY, .history = EVS_HISTORY_NONE,
                         .overflow = EVS_OVERFLOW_BLOCK, .block_timeout_ms = 10000,
                         .wait = (evs_wait)wait, .single_publisher = true,
                         .slot_bytes = SLOT_BYTES, .coarse_timestamps = true, .topics = true,
                         .topic_cache = c->cache, .max_topics = MAX_TOPICS};
    int npat = c->set ? NPAT : NPAT_1K, rc;
    evs_sub *sub;

    memset(t, 0, sizeof(*t));
    t->st.pin_cpu = -1;
    pthread_mutex_init(&t->st.mu, NULL);
    pthread_cond_init(&t->st.cv, NULL);
    if ((t->subs = malloc(sizeof(*t->subs) * NPAT)) == NULL) {
        trun_free(t);
        return bench_fail(r, "out of memory");
    }
    if ((rc = evs_stream_create(&t->s, &o)) != 0) {
        trun_free(t);
        return bench_fail(r, "evs_stream_create: %s", evs_strerror(rc));
    }
    for (int id = 0; id < npat; id++) {
        t->subs[id] = (struct tsub){&t->st, (uint64_t)id + 1};
        if ((rc = evs_subscribe(&sub, t->s, T.pat[id], on_topic, NULL, &t->subs[id], NULL)) !=
            0)
            break;
    }
    if (rc == 0 && (rc = evs_subscribe(&sub, t->s, "g", on_gate, NULL, &t->st, NULL)) == 0)
        rc = evs_subscribe(&sub, t->s, "e", on_end, NULL, &t->st, NULL);
    if (rc != 0) {
        trun_free(t);
        return bench_fail(r, "evs_subscribe: %s", evs_strerror(rc));
    }
    return BENCH_OK;
}

/* Publish subject s with the next sequence number; note what it owes. */
static inline int put_subject(struct trun *t, int set, uint32_t s)
{
    uint64_t seq = ++t->seq;
    t->want_count += T.n[set][s];
    t->want_sum += seq * T.w[set][s];
    return put(t->s, T.subj[s], seq);
}

/* Route every working-set subject once, so the cache (if it can hold
 * them) and the topic table know them all; not timed. */
static int warm(struct trun *t, const topic_cfg *c, bench_result *r)
{
    int rc = 0;
    for (size_t i = 0; i < c->nsubj && rc == 0; i++)
        rc = put_subject(t, c->set, T.order[i]);
    if (rc == 0)
        rc = evs_stream_flush(t->s, EVS_FOREVER, NULL);
    return rc == 0 ? BENCH_OK : bench_fail(r, "warm-up: %s", evs_strerror(rc));
}

static int first_cpu(const cpu_set_t *set)
{
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, set))
            return c;
    return -1;
}

/* Batches held at the gate until queued, both threads on one CPU. */
static int drain(struct trun *t, const topic_cfg *c, double seconds, bench_result *r,
                 uint64_t *events, int64_t *busy)
{
    cpu_set_t saved;
    int rc = 0, ret = BENCH_OK;
    size_t next = 0; /* next subject, in order */
    const uint32_t *subj = c->fresh ? T.fresh : T.order;
    size_t nsubj = c->fresh ? NNEW : c->nsubj;

    pthread_getaffinity_np(pthread_self(), sizeof(saved), &saved);
    t->st.pin_cpu = first_cpu(&saved);
    if (t->st.pin_cpu >= 0)
        pin_self(t->st.pin_cpu);
    *events = 0;
    *busy = 0;
    int64_t deadline = bench_now_ns() + (int64_t)(seconds * 1e9);
    for (uint64_t b = 1; rc == 0 && bench_now_ns() < deadline; b++) {
        size_t k = 0;
        if ((rc = put(t->s, "g", b)) != 0)
            break;
        for (; k < BATCH && rc == 0; k++) {
            if (c->fresh && next == nsubj)
                break;
            rc = put_subject(t, c->set, subj[next]);
            next = next + 1 == nsubj && !c->fresh ? 0 : next + 1;
        }
        if (rc != 0 || (rc = put(t->s, "e", b)) != 0)
            break;
        pthread_mutex_lock(&t->st.mu);
        t->st.open = b;
        pthread_cond_broadcast(&t->st.cv);
        while (t->st.done < b)
            pthread_cond_wait(&t->st.cv, &t->st.mu);
        pthread_mutex_unlock(&t->st.mu);
        *busy += t->st.t1 - t->st.t0;
        *events += k;
        if (c->fresh && next == nsubj)
            break;
    }
    pthread_setaffinity_np(pthread_self(), sizeof(saved), &saved);
    if (rc != 0)
        ret = bench_fail(r, "publish: %s", evs_strerror(rc));
    return ret;
}

/* Flat out from the calling thread; the dispatcher on its own CPU. */
static int publish(struct trun *t, const topic_cfg *c, double seconds, bench_result *r,
                   uint64_t *events, int64_t *elapsed)
{
    int rc = 0;
    size_t next = 0;
    uint64_t i = 0;
    int64_t t0 = bench_now_ns(), deadline = t0 + (int64_t)(seconds * 1e9);
    for (; rc == 0; i++) {
        if (i % CHECK_EVERY == 0 && bench_now_ns() >= deadline)
            break;
        rc = put_subject(t, c->set, T.order[next]);
        next = next + 1 == c->nsubj ? 0 : next + 1;
    }
    if (rc == 0)
        rc = evs_stream_flush(t->s, EVS_FOREVER, NULL);
    *elapsed = bench_now_ns() - t0;
    *events = rc == 0 ? i : 0;
    return rc == 0 ? BENCH_OK : bench_fail(r, "publish: %s", evs_strerror(rc));
}

int scn_topic_rate(const bench_params *p, bench_result *r)
{
    const topic_cfg *c = p->arg;
    struct trun t;
    uint64_t events = 0;
    int64_t ns = 0;
    int ret;

    if ((ret = tables_init(r)) != BENCH_OK)
        return ret;
    if ((ret = trun_setup(&t, c, p->wait, r)) != BENCH_OK)
        return ret;
    if (!c->fresh)
        ret = warm(&t, c, r);
    /* Only what is timed counts towards the figures. */
    uint64_t count0 = t.st.count;
    if (ret == BENCH_OK)
        ret = c->mode == TOPIC_DRAIN ? drain(&t, c, p->seconds, r, &events, &ns)
                                     : publish(&t, c, p->seconds, r, &events, &ns);
    int rc = evs_stream_flush(t.s, EVS_FOREVER, NULL);
    evs_stream_stats st;
    evs_stream_stats_get(t.s, &st);
    if (ret == BENCH_OK && rc != 0)
        ret = bench_fail(r, "evs_stream_flush: %s", evs_strerror(rc));
    if (ret == BENCH_OK && (t.st.count != t.want_count || t.st.sum != t.want_sum))
        ret = bench_fail(r, "evstream topics: %llu deliveries with checksum %llu, expected "
                         "%llu with checksum %llu", (unsigned long long)t.st.count,
                         (unsigned long long)t.st.sum, (unsigned long long)t.want_count,
                         (unsigned long long)t.want_sum);
    if (ret == BENCH_OK && (st.handler_errors != 0 || st.unroutable != 0 ||
                            st.dropped_nomem != 0))
        ret = bench_fail(r, "evstream topics: %llu handler errors, %llu unroutable, "
                         "%llu dropped", (unsigned long long)st.handler_errors,
                         (unsigned long long)st.unroutable,
                         (unsigned long long)st.dropped_nomem);
    trun_free(&t);
    if (ret != BENCH_OK)
        return ret;
    if (events == 0 || ns <= 0)
        return bench_fail(r, "evstream topics: nothing measured");
    r->sent = events;
    r->received = t.st.count - count0;
    r->rate = (double)events / ((double)ns / 1e9);
    if (c->fresh) {
        r->extra = (double)ns / (double)events;
        r->extra_kind = BENCH_EXTRA_NS;
        r->extra_label = "per new subject";
    } else {
        r->extra = (double)r->received / ((double)ns / 1e9);
        r->extra_kind = BENCH_EXTRA_RATE;
        r->extra_label = "deliveries/s";
    }
    return BENCH_OK;
}

/* The reference: every event's subject against all 10,000 patterns. */
int scn_topic_naive(const bench_params *p, bench_result *r)
{
    int ret = tables_init(r);
    if (ret != BENCH_OK)
        return ret;
    uint64_t events = 0, deliveries = 0;
    int64_t t0 = bench_now_ns(), deadline = t0 + (int64_t)(p->seconds * NAIVE_SCALE * 1e9), t1;
    do {
        uint32_t s = T.order[events % NSUBJ];
        unsigned n;
        uint64_t w;
        naive_route(T.subj[s], NPAT, &n, &w);
        if (n != T.n[1][s] || w != T.w[1][s])
            return bench_fail(r, "naive scan: %s matched %u, expected %u", T.subj[s], n,
                              T.n[1][s]);
        deliveries += n;
        events++;
    } while ((t1 = bench_now_ns()) < deadline);
    r->sent = events;
    r->received = deliveries;
    r->rate = (double)events / ((double)(t1 - t0) / 1e9);
    r->extra = (double)deliveries / ((double)(t1 - t0) / 1e9);
    r->extra_kind = BENCH_EXTRA_RATE;
    r->extra_label = "deliveries/s";
    return BENCH_OK;
}

/* The sides of scenarios.c. */
const topic_cfg scn_t_pub_1k = {TOPIC_PUBLISH, 1, 1000, false, CACHE_BIG};
const topic_cfg scn_t_pub_100k = {TOPIC_PUBLISH, 1, NSUBJ, false, CACHE_BIG};
const topic_cfg scn_t_drain_1k = {TOPIC_DRAIN, 1, 1000, false, CACHE_BIG};
const topic_cfg scn_t_drain_100k = {TOPIC_DRAIN, 1, NSUBJ, false, CACHE_BIG};
const topic_cfg scn_t_pub_cold = {TOPIC_PUBLISH, 1, NSUBJ, false, 1};
const topic_cfg scn_t_drain_cold = {TOPIC_DRAIN, 1, NSUBJ, false, 1};
const topic_cfg scn_t_new_10k = {TOPIC_DRAIN, 1, NNEW, true, CACHE_BIG};
const topic_cfg scn_t_new_1k = {TOPIC_DRAIN, 0, NNEW, true, CACHE_BIG};
