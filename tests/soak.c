/*
 * The soak: 8 threads doing random publish / subscribe / unsubscribe /
 * close / SSE connect-read-disconnect / private-stream work against four
 * shared streams for a configurable time, with the guarantees of SPEC.md
 * ("Guarantees") checked as it goes and at the end. Exits 1 on any
 * violation, so it is a test: `make soak`, `make soak-asan` (use after
 * free: the event pool is poisoned under ASan), `make soak-tsan`.
 *
 *   build/soak [SECONDS [SEED]]      (defaults: 30 s, a seed from the clock)
 *
 * The shared streams ("slots"), each replaced by a fresh one (a new
 * "generation") after some thread closes it:
 *   0  TopicStream, EVS_OVERFLOW_BLOCK, history, an SSE layer
 *   1  plain stream, EVS_OVERFLOW_DROP_OLDEST, capacity 16, an SSE layer
 *      (slow clients dropped-oldest)
 *   2  TopicStream, EVS_OVERFLOW_DROP_NEWEST, capacity 16
 *   3  plain stream, EVS_OVERFLOW_FAIL, capacity 32
 * Handlers are slow now and then, so the small queues overflow.
 *
 * Every event carries (magic, generation, publisher, seq) and the topic
 * "soak.<publisher>.<seq % 4>". A publisher's accepted events in one
 * generation have seq 0, 1, 2, ... (a refused or dropped publish reuses
 * its seq). Checked:
 *   - every delivered event is intact (magic, generation, topic agree:
 *     a freed or reused event would not), matches the subscription's
 *     pattern, and arrives once, in publish order per publisher;
 *   - BLOCK (no loss): a subscription receives, per publisher, every
 *     matching seq from the first it sees on, and every matching event
 *     published after its subscribe returned and before a flush preceding
 *     its unsubscribe; a subscription live for a whole generation
 *     receives every accepted event;
 *   - drop policies: for that whole-generation subscription, received +
 *     stats.dropped_oldest == stats.published and sub_stats.dropped ==
 *     the drop counters; DROP_NEWEST: stats.dropped_newest equals the
 *     publishes that returned 0 with no id; FAIL: stats.rejected_full
 *     equals the EVS_EFULL returns; stats.published equals the accepted
 *     publishes everywhere;
 *   - SSE clients read whole frames whose ids increase and whose data
 *     decodes to intact events;
 *   - private streams deliver exactly what was published, in order.
 */
#include <evstream.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NTHREADS 8
#define NSLOTS 4
#define MAXSUBS 12
#define MAGIC 0x50414b53u /* "SKAP" */

/* ---- failures --------------------------------------------------- */

static atomic_long violations;

static void violation(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void violation(const char *fmt, ...)
{
    long n = atomic_fetch_add(&violations, 1);
    if (n >= 20)
        return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "soak: VIOLATION: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

#define CHECK(cond, ...)                                                     \
    do {                                                                     \
        if (!(cond))                                                         \
            violation(__VA_ARGS__);                                          \
    } while (0)

/* An unexpected return code is a violation too. */
#define RC(call, ...)                                                        \
    do {                                                                     \
        int rc_ = (call);                                                    \
        if (rc_ != 0)                                                        \
            violation("%s: %s", #call, evs_errname(rc_));                    \
    } while (0)

static uint64_t rng_next(uint64_t *s)
{
    /* splitmix64: fine statistics, one word of state per thread. */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static unsigned below(uint64_t *s, unsigned n) { return (unsigned)(rng_next(s) % n); }

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Burn about `us` microseconds (a slow handler), without sleeping. */
static void spin_us(int us)
{
    int64_t end = now_ns() + (int64_t)us * 1000;
    while (now_ns() < end)
        ;
}

/* ---- events ------------------------------------------------------- */

typedef struct payload {
    uint32_t magic;
    uint32_t pub;
    uint64_t gen;
    uint64_t seq;
} payload;

static void topic_of(char *buf, size_t cap, unsigned pub, uint64_t seq)
{
    snprintf(buf, cap, "soak.%u.%u", pub, (unsigned)(seq % 4));
}

/* Read and check an event's payload; false (counted) if it is damaged. */
static bool read_payload(const evs_event *ev, uint64_t gen, payload *out)
{
    size_t len;
    const void *d = evs_event_data(ev, &len);
    if (len != sizeof(payload) || d == NULL) {
        violation("event data has %zu bytes", len);
        return false;
    }
    memcpy(out, d, sizeof *out);
    char want[64];
    topic_of(want, sizeof want, out->pub, out->seq);
    if (out->magic != MAGIC || out->gen != gen || out->pub >= NTHREADS ||
        strcmp(evs_event_topic(ev), want) != 0) {
        violation("damaged event: magic %x gen %" PRIu64 "/%" PRIu64 " pub %u topic %s",
                  out->magic, out->gen, gen, out->pub, evs_event_topic(ev));
        return false;
    }
    return true;
}

/* ---- subscriptions and what they saw ------------------------------ */

/* Which events a pattern selects (on a plain stream: all of them). */
enum { K_ALL, K_PUB, K_RES, K_BOTH };

typedef struct tracker {
    evs_sub *sub;
    uint64_t gen;
    int policy;
    int kind;
    unsigned pub, res;
    bool topics;      /* the pattern selects (TopicStream) */
    bool slow;        /* spins now and then */
    int64_t last[NTHREADS];  /* last seq seen per publisher; -1 none */
    int64_t first[NTHREADS];
    uint64_t lb[NTHREADS];   /* seqs >= lb were published after subscribe returned */
    uint64_t count;
    const evs_event *held;   /* a reference kept across calls */
} tracker;

static bool wants(const tracker *t, unsigned pub, uint64_t seq)
{
    if (!t->topics)
        return true;
    switch (t->kind) {
    case K_PUB: return pub == t->pub;
    case K_RES: return seq % 4 == t->res;
    case K_BOTH: return pub == t->pub && seq % 4 == t->res;
    default: return true;
    }
}

static void pattern_of(const tracker *t, char *buf, size_t cap)
{
    switch (t->kind) {
    case K_PUB: snprintf(buf, cap, "soak.%u.*", t->pub); break;
    case K_RES: snprintf(buf, cap, "soak.*.%u", t->res); break;
    case K_BOTH: snprintf(buf, cap, "soak.%u.%u", t->pub, t->res); break;
    default: snprintf(buf, cap, ">"); break;
    }
}

static int on_event(const evs_event *ev, void *user)
{
    tracker *t = user;
    payload p;
    if (!read_payload(ev, t->gen, &p))
        return 0;
    if (!wants(t, p.pub, p.seq))
        violation("pattern %d/%u/%u got pub %u seq %" PRIu64, t->kind, t->pub, t->res, p.pub,
                  p.seq);
    int64_t last = t->last[p.pub];
    if ((int64_t)p.seq <= last) {
        violation("gen %" PRIu64 " pub %u: seq %" PRIu64 " after %" PRId64 " (order/duplicate)",
                  t->gen, p.pub, p.seq, last);
    } else if (t->policy == EVS_OVERFLOW_BLOCK && last >= 0) {
        uint64_t next = (uint64_t)last + 1;
        while (!wants(t, p.pub, next))
            next++;
        CHECK(p.seq == next, "BLOCK gen %" PRIu64 " pub %u: seq %" PRIu64 " after %" PRId64
              ": an event was lost", t->gen, p.pub, p.seq, last);
    }
    if (t->first[p.pub] < 0)
        t->first[p.pub] = (int64_t)p.seq;
    if ((int64_t)p.seq > last)
        t->last[p.pub] = (int64_t)p.seq;
    t->count++;
    /* Keep one reference across calls (dropped later, maybe on another
     * thread): a premature free would show as a damaged event. */
    if (t->count % 8 == 0) {
        evs_event_unref(t->held);
        t->held = evs_event_ref(ev);
    }
    if (t->slow && t->count % 16 == 0)
        spin_us(50);
    return 0;
}

/* ---- slots and generations ------------------------------------------ */

typedef struct gen {
    uint64_t id;
    evs_stream *s;
    evs_sse *sse;
    int policy;
    bool topics;
    /* Per publisher: accepted events so far (the next seq). Written by
     * that publisher only; read by others (atomics). */
    _Atomic uint64_t next[NTHREADS];
    /* Outcomes of publishes. */
    atomic_ulong ok, dropped_newest_seen, efull, eclosed, other;
    atomic_bool closed;
    tracker *perm;                 /* subscribed before any publish */
    pthread_mutex_t subs_lock;     /* guards subs[] and nsubs */
    tracker *subs[MAXSUBS];
    int nsubs;
} gen;

typedef struct slot {
    pthread_rwlock_t lock; /* read: any use of g; write: replacing it */
    gen *g;
    int policy;
    bool topics;
    bool sse;
    size_t capacity;
} slot;

static slot slots[NSLOTS];
static atomic_ulong gen_ids;
static atomic_bool stopping;

/* Counters for the summary. */
static atomic_ulong n_publish, n_accepted, n_sub, n_unsub, n_close, n_recycle, n_sse,
    n_sse_frames, n_private, n_delivered, n_dropped;

static tracker *tracker_new(gen *g, uint64_t *rng, bool whole)
{
    tracker *t = calloc(1, sizeof *t);
    if (t == NULL) {
        violation("out of memory in the soak itself");
        return NULL;
    }
    t->gen = g->id;
    t->policy = g->policy;
    t->topics = g->topics;
    t->kind = whole ? K_ALL : (int)below(rng, 4);
    t->pub = below(rng, NTHREADS);
    t->res = below(rng, 4);
    t->slow = g->policy != EVS_OVERFLOW_BLOCK && (whole || below(rng, 2));
    for (int p = 0; p < NTHREADS; p++)
        t->last[p] = t->first[p] = -1;
    return t;
}

/* Subscribe t to g; records the lower bounds. */
static int tracker_subscribe(tracker *t, gen *g)
{
    char pat[64];
    pattern_of(t, pat, sizeof pat);
    int rc = evs_subscribe(&t->sub, g->s, pat, on_event, NULL, t, NULL);
    if (rc == 0) {
        /* A publish of seq next+1 or later starts after this point. */
        for (int p = 0; p < NTHREADS; p++)
            t->lb[p] = atomic_load(&g->next[p]) + 1;
    }
    return rc;
}

/*
 * End t: for BLOCK, first flush (everything accepted so far is
 * delivered), note the upper bounds, unsubscribe, and check that every
 * wanted seq in [lb, ub) arrived. `final`: the stream is closed and
 * drained, so the bounds are the accepted totals.
 */
static void tracker_end(tracker *t, gen *g, bool final)
{
    uint64_t ub[NTHREADS];
    if (g->policy == EVS_OVERFLOW_BLOCK && !final) {
        for (int p = 0; p < NTHREADS; p++)
            ub[p] = atomic_load(&g->next[p]);
        int rc = evs_stream_flush(g->s, EVS_FOREVER, NULL);
        CHECK(rc == 0, "flush: %s", evs_errname(rc));
    } else {
        for (int p = 0; p < NTHREADS; p++)
            ub[p] = atomic_load(&g->next[p]);
    }
    RC(evs_unsubscribe(t->sub));
    atomic_fetch_add(&n_unsub, 1);
    atomic_fetch_add(&n_delivered, t->count);
    if (g->policy == EVS_OVERFLOW_BLOCK) {
        for (unsigned p = 0; p < NTHREADS; p++) {
            uint64_t lo = t->lb[p];
            while (lo < ub[p] && !wants(t, p, lo))
                lo++;
            if (lo >= ub[p])
                continue; /* nothing it had to see */
            uint64_t hi = ub[p] - 1;
            while (!wants(t, p, hi))
                hi--;
            CHECK(t->first[p] >= 0 && t->first[p] <= (int64_t)lo && t->last[p] >= (int64_t)hi,
                  "BLOCK gen %" PRIu64 " pub %u kind %d: saw [%" PRId64 ", %" PRId64
                  "], had to see [%" PRIu64 ", %" PRIu64 "]",
                  g->id, p, t->kind, t->first[p], t->last[p], lo, hi);
        }
    }
    evs_event_unref(t->held);
    free(t);
}

static gen *gen_new(slot *sl)
{
    gen *g = calloc(1, sizeof *g);
    if (g == NULL)
        return NULL;
    g->id = atomic_fetch_add(&gen_ids, 1) + 1;
    g->policy = sl->policy;
    g->topics = sl->topics;
    pthread_mutex_init(&g->subs_lock, NULL);
    evs_stream_opts o = {
        .capacity = sl->capacity,
        .overflow = (evs_overflow)sl->policy,
        .topics = sl->topics,
        .history = sl->sse ? 64 : 0,
    };
    int rc = evs_stream_create(&g->s, &o);
    if (rc != 0) {
        violation("stream create: %s", evs_errname(rc));
        free(g);
        return NULL;
    }
    if (sl->sse) {
        evs_sse_stream_opts so = {
            .slow = sl->policy == EVS_OVERFLOW_BLOCK ? EVS_SSE_SLOW_DISCONNECT
                                                     : EVS_SSE_SLOW_DROP_OLDEST,
            .mailbox = 16,
            .heartbeat_ms = 20,
        };
        RC(evs_sse_create(&g->sse, g->s, &so));
    }
    uint64_t seed = g->id;
    g->perm = tracker_new(g, &seed, true);
    if (g->perm != NULL && tracker_subscribe(g->perm, g) != 0) {
        violation("permanent subscribe failed");
        free(g->perm);
        g->perm = NULL;
    }
    return g;
}

/* Close (if not yet), drain, check everything, free. Caller holds the
 * slot's write lock (or is alone). */
static void gen_end(gen *g)
{
    uint64_t left = 0;
    int rc = evs_stream_close(g->s, 30000, &left);
    CHECK(rc == 0, "close: %s, %" PRIu64 " left", evs_errname(rc), left);
    for (int i = 0; i < g->nsubs; i++)
        tracker_end(g->subs[i], g, true);
    g->nsubs = 0;

    evs_stream_stats st;
    RC(evs_stream_stats_get(g->s, &st));
    uint64_t accepted = 0;
    for (int p = 0; p < NTHREADS; p++)
        accepted += atomic_load(&g->next[p]);
    CHECK(st.published == accepted, "gen %" PRIu64 ": published %" PRIu64 ", accepted %" PRIu64,
          g->id, st.published, accepted);
    CHECK(st.dropped_nomem == 0 && st.timed_out == 0, "nomem %" PRIu64 " timed_out %" PRIu64,
          st.dropped_nomem, st.timed_out);
    uint64_t drops = st.dropped_newest + st.dropped_oldest + st.dropped_nomem;
    atomic_fetch_add(&n_dropped, drops);
    switch (g->policy) {
    case EVS_OVERFLOW_BLOCK:
        CHECK(drops == 0 && st.rejected_full == 0, "BLOCK dropped %" PRIu64, drops);
        break;
    case EVS_OVERFLOW_DROP_NEWEST:
        CHECK(st.dropped_newest == atomic_load(&g->dropped_newest_seen),
              "dropped_newest %" PRIu64 ", publishes without an id %lu", st.dropped_newest,
              atomic_load(&g->dropped_newest_seen));
        CHECK(st.dropped_oldest == 0, "DROP_NEWEST dropped oldest");
        break;
    case EVS_OVERFLOW_DROP_OLDEST:
        CHECK(st.dropped_newest == 0, "DROP_OLDEST dropped newest");
        break;
    case EVS_OVERFLOW_FAIL:
        CHECK(st.rejected_full == atomic_load(&g->efull), "rejected_full %" PRIu64
              ", EFULL returns %lu", st.rejected_full, atomic_load(&g->efull));
        CHECK(drops == 0, "FAIL dropped");
        break;
    }
    if (g->perm != NULL) {
        /* Live for the whole generation: what it misses is exactly what
         * the stream counted as dropped (accepted events only). */
        tracker *t = g->perm;
        evs_sub_stats ss;
        RC(evs_sub_stats_get(t->sub, &ss));
        uint64_t got = t->count;
        CHECK(got + st.dropped_oldest + st.dropped_nomem == st.published,
              "gen %" PRIu64 " policy %d: received %" PRIu64 " + dropped_oldest %" PRIu64
              " != published %" PRIu64, g->id, g->policy, got, st.dropped_oldest, st.published);
        CHECK(ss.dropped == drops, "sub dropped %" PRIu64 ", stream drops %" PRIu64, ss.dropped,
              drops);
        CHECK(ss.delivered == got, "sub delivered %" PRIu64 ", handler saw %" PRIu64,
              ss.delivered, got);
        tracker_end(t, g, true);
    }
    if (g->sse != NULL)
        RC(evs_sse_destroy(g->sse));
    RC(evs_stream_destroy(g->s));
    pthread_mutex_destroy(&g->subs_lock);
    free(g);
}

/* ---- operations --------------------------------------------------- */

typedef struct worker {
    unsigned id;
    uint64_t rng;
    evs_stream *aside; /* a private stream, for republishing (aliases) */
    pthread_t thread;
} worker;

static void op_publish(worker *w, slot *sl, gen *g)
{
    uint64_t seq = atomic_load(&g->next[w->id]);
    payload p = {MAGIC, w->id, g->id, seq};
    char topic[64];
    topic_of(topic, sizeof topic, w->id, seq);
    evs_event *ev;
    RC(evs_event_create(&ev, EVS_TYPE_MESSAGE, topic, &p, sizeof p));
    if (ev == NULL)
        return;
    /* Sometimes publish it elsewhere first: then this is an alias. */
    if (below(&w->rng, 8) == 0)
        RC(evs_stream_publish(w->aside, ev));
    uint64_t id = 0;
    int rc = evs_stream_publish_id(g->s, ev, &id);
    evs_event_unref(ev);
    atomic_fetch_add(&n_publish, 1);
    if (rc == 0 && id != 0) {
        atomic_store(&g->next[w->id], seq + 1);
        atomic_fetch_add(&g->ok, 1);
        atomic_fetch_add(&n_accepted, 1);
    } else if (rc == 0) {
        CHECK(g->policy == EVS_OVERFLOW_DROP_NEWEST, "publish gave no id under policy %d",
              g->policy);
        atomic_fetch_add(&g->dropped_newest_seen, 1);
    } else if (rc == EVS_EFULL) {
        CHECK(g->policy == EVS_OVERFLOW_FAIL, "EFULL under policy %d", g->policy);
        atomic_fetch_add(&g->efull, 1);
    } else if (rc == EVS_ECLOSED) {
        CHECK(atomic_load(&g->closed), "ECLOSED from an open stream");
        atomic_fetch_add(&g->eclosed, 1);
    } else {
        violation("publish: %s", evs_errname(rc));
    }
    (void)sl;
}

static void op_subscribe(worker *w, gen *g)
{
    pthread_mutex_lock(&g->subs_lock);
    bool room = g->nsubs < MAXSUBS;
    pthread_mutex_unlock(&g->subs_lock);
    if (!room)
        return;
    tracker *t = tracker_new(g, &w->rng, false);
    if (t == NULL)
        return;
    int rc = tracker_subscribe(t, g);
    if (rc != 0) {
        CHECK(rc == EVS_ECLOSED && atomic_load(&g->closed), "subscribe: %s", evs_errname(rc));
        free(t);
        return;
    }
    atomic_fetch_add(&n_sub, 1);
    pthread_mutex_lock(&g->subs_lock);
    if (g->nsubs < MAXSUBS) {
        g->subs[g->nsubs++] = t;
        t = NULL;
    }
    pthread_mutex_unlock(&g->subs_lock);
    if (t != NULL)
        tracker_end(t, g, false);
}

static void op_unsubscribe(worker *w, gen *g)
{
    tracker *t = NULL;
    pthread_mutex_lock(&g->subs_lock);
    if (g->nsubs > 0) {
        int i = (int)below(&w->rng, (unsigned)g->nsubs);
        t = g->subs[i];
        g->subs[i] = g->subs[--g->nsubs];
    }
    pthread_mutex_unlock(&g->subs_lock);
    if (t != NULL)
        tracker_end(t, g, false);
}

/* Decode standard base64 (the SSE data of binary events). */
static size_t unbase64(const char *s, size_t n, uint8_t *out, size_t cap)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < n && s[i] != '='; i++) {
        const char *c = memchr(tab, s[i], 64);
        if (c == NULL)
            return (size_t)-1;
        acc = acc << 6 | (uint32_t)(c - tab);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o < cap)
                out[o] = (uint8_t)(acc >> bits);
            o++;
        }
    }
    return o;
}

typedef struct sse_check {
    uint64_t gen;
    uint64_t last_id;
    uint64_t frames;
} sse_check;

static int on_frame(const evs_sse_message *m, void *user)
{
    sse_check *c = user;
    c->frames++;
    if (strcmp(m->event, "message") != 0)
        return 0; /* a gap or disconnect frame */
    uint64_t id = strtoull(m->id, NULL, 10);
    CHECK(id > c->last_id, "SSE ids out of order: %" PRIu64 " after %" PRIu64, id, c->last_id);
    c->last_id = id;
    payload p;
    size_t n = unbase64(m->data, m->data_len, (uint8_t *)&p, sizeof p);
    CHECK(n == sizeof p && p.magic == MAGIC && p.gen == c->gen, "SSE frame data damaged");
    return 0;
}

static void op_sse(worker *w, gen *g)
{
    static const char *const pats[] = {"soak.>", "soak.1.*", "soak.*.2", "soak.3.3"};
    const char *mine[2] = {pats[below(&w->rng, 4)], pats[below(&w->rng, 4)]};
    char resume[24];
    evs_sse_client_opts co = {.patterns = mine, .npatterns = 1 + below(&w->rng, 2)};
    if (below(&w->rng, 3) == 0) {
        /* Resume from a recent id (replay through the history). */
        const evs_event *recent[1];
        int n = evs_stream_recent(g->s, recent, 1);
        if (n == 1) {
            uint64_t id = evs_event_id(recent[0]);
            snprintf(resume, sizeof resume, "%" PRIu64, id > 10 ? id - 10 : 0);
            co.last_event_id = resume;
            evs_event_unref(recent[0]);
        }
    }
    evs_sse_client *c;
    int rc = evs_sse_connect(&c, g->sse, &co);
    if (rc != 0) {
        CHECK(rc == EVS_ECLOSED && atomic_load(&g->closed), "sse connect: %s", evs_errname(rc));
        return;
    }
    atomic_fetch_add(&n_sse, 1);
    evs_sse_parser *p;
    RC(evs_sse_parser_create(&p, NULL));
    sse_check chk = {.gen = g->id};
    char buf[8192];
    int reads = 1 + (int)below(&w->rng, 20);
    for (int i = 0; i < reads; i++) {
        int n = evs_sse_read(c, buf, sizeof buf, (int)below(&w->rng, 3));
        if (n == EVS_ECLOSED)
            break;
        if (n < 0) {
            violation("sse read: %s", evs_errname(n));
            break;
        }
        rc = evs_sse_parser_feed(p, buf, (size_t)n, NULL, on_frame, &chk);
        CHECK(rc == 0, "sse parse: %s", evs_errname(rc));
    }
    atomic_fetch_add(&n_sse_frames, chk.frames);
    evs_sse_parser_destroy(p);
    RC(evs_sse_disconnect(c));
}

/* A private stream: exact delivery, in order, at close. */
typedef struct counter {
    uint64_t n, bad;
} counter;

static int count_in_order(const evs_event *ev, void *user)
{
    counter *c = user;
    size_t len;
    const uint64_t *v = evs_event_data(ev, &len);
    if (len != sizeof *v || *v != c->n)
        c->bad++;
    c->n++;
    return 0;
}

static void op_private(worker *w)
{
    evs_stream_opts o = {
        .capacity = 8,
        .delivery = below(&w->rng, 2) ? EVS_DELIVERY_INLINE : EVS_DELIVERY_DISPATCHER,
        .topics = below(&w->rng, 2),
    };
    evs_stream *s;
    int rc = evs_stream_create(&s, &o);
    if (rc != 0) {
        violation("private create: %s", evs_errname(rc));
        return;
    }
    counter a = {0}, b = {0};
    evs_sub *sa, *sb;
    RC(evs_subscribe(&sa, s, "p.>", count_in_order, NULL, &a, NULL));
    RC(evs_subscribe(&sb, s, NULL, count_in_order, NULL, &b, NULL));
    uint64_t n = 1 + below(&w->rng, 200);
    for (uint64_t i = 0; i < n; i++) {
        evs_event *ev;
        RC(evs_event_create(&ev, EVS_TYPE_MESSAGE, "p.q", &i, sizeof i));
        RC(evs_stream_publish(s, ev));
        evs_event_unref(ev);
    }
    RC(evs_stream_close(s, EVS_FOREVER, NULL));
    RC(evs_unsubscribe(sa));
    RC(evs_unsubscribe(sb));
    CHECK(a.n == n && b.n == n && a.bad == 0 && b.bad == 0,
          "private stream: published %" PRIu64 ", got %" PRIu64 "/%" PRIu64 ", %" PRIu64
          " out of order", n, a.n, b.n, a.bad + b.bad);
    RC(evs_stream_destroy(s));
    atomic_fetch_add(&n_private, 1);
}

/* Replace a closed generation (write lock: no one else uses it now). */
static void recycle(slot *sl)
{
    pthread_rwlock_wrlock(&sl->lock);
    gen *g = sl->g;
    if (g != NULL && atomic_load(&g->closed)) {
        gen_end(g);
        sl->g = atomic_load(&stopping) ? NULL : gen_new(sl);
        atomic_fetch_add(&n_recycle, 1);
    }
    pthread_rwlock_unlock(&sl->lock);
}

static void *work(void *arg)
{
    worker *w = arg;
    while (!atomic_load(&stopping)) {
        unsigned op = below(&w->rng, 1000);
        if (op < 3) {
            op_private(w);
            continue;
        }
        slot *sl = &slots[below(&w->rng, NSLOTS)];
        pthread_rwlock_rdlock(&sl->lock);
        gen *g = sl->g;
        bool closed = g == NULL || atomic_load(&g->closed);
        if (g == NULL) {
            /* only while stopping */
        } else if (op < 800) {
            op_publish(w, sl, g);
        } else if (op < 860) {
            op_subscribe(w, g);
        } else if (op < 920) {
            op_unsubscribe(w, g);
        } else if (op < 960) {
            if (g->sse != NULL)
                op_sse(w, g);
        } else if (op < 961) {
            /* Close it: intake stops; publishers see ECLOSED until a
             * thread replaces the generation. */
            atomic_store(&g->closed, true);
            int rc = evs_stream_close(g->s, 0, NULL);
            CHECK(rc == 0 || rc == EVS_ETIMEDOUT, "close: %s", evs_errname(rc));
            atomic_fetch_add(&n_close, 1);
        } else {
            evs_stream_stats st;
            RC(evs_stream_stats_get(g->s, &st));
            const evs_event *recent[4];
            int n = evs_stream_recent(g->s, recent, 4);
            for (int i = 0; i < n; i++)
                evs_event_unref(recent[i]);
        }
        pthread_rwlock_unlock(&sl->lock);
        if (closed && g != NULL)
            recycle(sl);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 30;
    uint64_t seed = argc > 2 ? strtoull(argv[2], NULL, 0) : (uint64_t)time(NULL);
    if (seconds <= 0) {
        fprintf(stderr, "usage: %s [SECONDS [SEED]]\n", argv[0]);
        return 2;
    }
    printf("soak: %d threads, %.0f s, seed %" PRIu64 "\n", NTHREADS, seconds, seed);
    fflush(stdout);

    const struct { int policy; bool topics, sse; size_t capacity; } cfg[NSLOTS] = {
        {EVS_OVERFLOW_BLOCK, true, true, 256},
        {EVS_OVERFLOW_DROP_OLDEST, false, true, 16},
        {EVS_OVERFLOW_DROP_NEWEST, true, false, 16},
        {EVS_OVERFLOW_FAIL, false, false, 32},
    };
    pthread_rwlockattr_t ra;
    pthread_rwlockattr_init(&ra);
    /* Writers first: the recycler must not starve behind 8 readers. */
    pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    for (int i = 0; i < NSLOTS; i++) {
        slot *sl = &slots[i];
        pthread_rwlock_init(&sl->lock, &ra);
        sl->policy = cfg[i].policy;
        sl->topics = cfg[i].topics;
        sl->sse = cfg[i].sse;
        sl->capacity = cfg[i].capacity;
        sl->g = gen_new(sl);
        if (sl->g == NULL)
            return 1;
    }
    pthread_rwlockattr_destroy(&ra);

    worker ws[NTHREADS];
    for (unsigned i = 0; i < NTHREADS; i++) {
        ws[i].id = i;
        ws[i].rng = seed * 1000003 + i;
        evs_stream_opts o = {.delivery = EVS_DELIVERY_INLINE, .history = EVS_HISTORY_NONE};
        if (evs_stream_create(&ws[i].aside, &o) != 0)
            return 1;
        if (pthread_create(&ws[i].thread, NULL, work, &ws[i]) != 0) {
            fprintf(stderr, "soak: pthread_create failed\n");
            return 1;
        }
    }
    /* Wait, reporting progress now and then. */
    int64_t start = now_ns(), end = start + (int64_t)(seconds * 1e9), next = start + 10000000000LL;
    while (now_ns() < end) {
        struct timespec ts = {0, 50000000};
        nanosleep(&ts, NULL);
        if (now_ns() >= next) {
            printf("soak: %.0f s: %lu publishes, %lu generations, %ld violations\n",
                   (double)(now_ns() - start) / 1e9, atomic_load(&n_publish),
                   atomic_load(&n_recycle) + NSLOTS, atomic_load(&violations));
            fflush(stdout);
            next += 10000000000LL;
        }
    }
    atomic_store(&stopping, true);
    for (unsigned i = 0; i < NTHREADS; i++) {
        pthread_join(ws[i].thread, NULL);
        RC(evs_stream_destroy(ws[i].aside));
    }
    /* Every generation still open is closed and checked. */
    for (int i = 0; i < NSLOTS; i++) {
        if (slots[i].g != NULL) {
            atomic_store(&slots[i].g->closed, true);
            gen_end(slots[i].g);
            slots[i].g = NULL;
        }
        pthread_rwlock_destroy(&slots[i].lock);
    }

    long v = atomic_load(&violations);
    printf("soak: %lu publishes (%lu accepted), %lu delivered to churned subscriptions, "
           "%lu dropped and counted\n",
           atomic_load(&n_publish), atomic_load(&n_accepted), atomic_load(&n_delivered),
           atomic_load(&n_dropped));
    printf("soak: %lu subscribes, %lu subscriptions ended, %lu closes, %lu generations, "
           "%lu SSE clients (%lu frames), %lu private streams\n",
           atomic_load(&n_sub), atomic_load(&n_unsub), atomic_load(&n_close),
           atomic_load(&n_recycle) + NSLOTS, atomic_load(&n_sse), atomic_load(&n_sse_frames),
           atomic_load(&n_private));
    printf("soak: %s (%ld violations)\n", v == 0 ? "ok" : "FAILED", v);
    return v == 0 ? 0 : 1;
}
