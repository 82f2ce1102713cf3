/*
 * The NATS bridge: a TopicStream's subjects shared with a NATS server
 * through the nats.c client (SPEC.md, "NATS bridge"). Compiled in with
 * -DEVS_HAVE_NATS (the Makefile sets it when pkg-config finds libnats);
 * without it every call says EVS_ENOTSUP.
 *
 * Threads.
 *   - The stream's dispatcher runs export_handler: it refs a matching
 *     event and appends it to the bounded export queue, or counts a drop.
 *     It never waits for NATS, only for `lock` (held for a few
 *     instructions by everyone) and `reg_lock` (likewise).
 *   - The bridge's own thread (bridge_main) sets JetStream up once
 *     connected, then takes events off the queue, encodes them and
 *     publishes them: core NATS with natsConnection_PublishMsg (nats.c
 *     buffers while reconnecting), JetStream with js_PublishMsg, one at a
 *     time, retried with the same Nats-Msg-Id until JetStream acknowledges
 *     it, so exports keep their order and JetStream drops the duplicates
 *     a lost acknowledgment causes.
 *   - nats.c's subscription threads run on_import: decode, publish to the
 *     local stream (which may wait under EVS_OVERFLOW_BLOCK: that holds
 *     up NATS, never the stream), acknowledge. Core mode: one thread for
 *     one import pattern, nats.c's global delivery thread for several
 *     (one thread per subscription would reorder them); durable mode has
 *     one consumer, so one thread, and sequences arrive in order.
 *   - nats.c's callback thread runs the connection callbacks (counters,
 *     wake-ups) and finally on_closed; each subscription's thread runs
 *     on_complete after its last message. destroy waits for all of them
 *     before freeing, so no callback can reach a freed bridge.
 *
 * Locks, private to this file, never held while calling nats.c or the
 * stream, and never nested:
 *   lock      the export queue, `inflight`, `stopping`, `ready`, the
 *             subscription list and the close/complete bookkeeping.
 *   reg_lock  the registry of imported events (below).
 *
 * Loops. A message with our origin header is dropped. An event we
 * imported must not be exported again (a second bridge would send it
 * back with its own origin, forever). Imported events are published as
 * aliases of the decoded event, sharing its body, so evs_event_topic()
 * of what the export handler sees is the very pointer of the decoded
 * event's topic. Before publishing an import whose subject the export
 * patterns match, on_import records that pointer, holding a reference so
 * the memory cannot be reused, in the registry; the export handler,
 * which sees the stream's events in id order, drops an event found there
 * and forgets entries older than the event it sees (the stream dropped
 * those). So the registry holds at most the imports still queued in the
 * stream, plus one per import thread.
 */
#include "evs_internal.h"
#include "stream.h"
#include "subject.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef EVS_HAVE_NATS

bool evs_nats_supported(void) { return false; }

int evs_nats_bridge_create(evs_nats_bridge **out, evs_stream *s, const evs_nats_opts *opts)
{
    (void)s;
    (void)opts;
    if (out != NULL)
        *out = NULL;
    return EVS_ENOTSUP;
}

int evs_nats_bridge_publish(evs_nats_bridge *b, const evs_event *ev)
{
    (void)b;
    (void)ev;
    return EVS_EINVAL;
}

int evs_nats_bridge_sync(evs_nats_bridge *b, int timeout_ms)
{
    (void)b;
    (void)timeout_ms;
    return EVS_EINVAL;
}

int evs_nats_bridge_flush(evs_nats_bridge *b, int timeout_ms)
{
    (void)b;
    (void)timeout_ms;
    return EVS_EINVAL;
}

int evs_nats_bridge_stats_get(evs_nats_bridge *b, evs_nats_stats *out)
{
    (void)b;
    (void)out;
    return EVS_EINVAL;
}

const char *evs_nats_bridge_origin(const evs_nats_bridge *b)
{
    (void)b;
    return "";
}

int evs_nats_bridge_destroy(evs_nats_bridge *b)
{
    (void)b;
    return 0;
}

#else /* EVS_HAVE_NATS */

#include <nats/nats.h>
#include <sys/random.h>
#include <time.h>

#define DEFAULT_URL        "nats://127.0.0.1:4222"
#define DEFAULT_QUEUE      65536u /* a burst of a few seconds at hub rates */
#define DEFAULT_RECONNECT  250    /* ms: quick to come back, cheap to retry */
#define DEFAULT_TIMEOUT    2000   /* ms: several loopback or LAN round trips */
#define DEFAULT_PENDING    65536  /* nats.c's own default */
#define BATCH              64     /* events the thread takes per lock */
#define RETRY_MS           50     /* between failed JetStream publishes */

/* One import subscription's closure: which pattern it serves. */
typedef struct isub {
    evs_nats_bridge  *b;
    size_t            index; /* core: the pattern's index, for dedupe */
    natsSubscription *sub;
} isub;

/* An imported event that the export handler may yet see. */
typedef struct reg_entry {
    const char      *key; /* evs_event_topic of the decoded event */
    const evs_event *ev;  /* our reference, keeping `key` alive */
    uint64_t         id;  /* its local id; 0 while the publish runs */
} reg_entry;

struct evs_nats_bridge {
    evs_stream *s; /* borrowed */

    /* Options, copied. */
    char  **exports, **imports;
    size_t  nexports, nimports;
    char   *prefix; /* "" for none */
    size_t  plen;
    char    origin[EVS_NATS_MAX_NAME + 1];
    char    instance[17]; /* random per bridge: Nats-Msg-Id's prefix */
    char   *url, *durable, *consumer;
    char  **js_subjects; /* durable: the JetStream stream's subjects */
    size_t  njs_subjects;
    evs_nats_replay replay;
    uint64_t replay_seq;
    int64_t  replay_time_ns;
    bool     seq_ids;
    int64_t  max_msgs, max_age_ms;
    int      timeout_ms;
    size_t   qmax;

    natsOptions    *nopts;
    natsConnection *conn;
    jsCtx          *js;   /* durable; made and used by the bridge thread */
    evs_sub        *esub; /* the export subscription */
    char           *subj; /* the bridge thread's subject buffer */

    pthread_mutex_t lock;
    pthread_cond_t  wake; /* the bridge thread waits here */
    pthread_cond_t  idle; /* flush, sync and destroy wait here */
    const evs_event **q;  /* the export queue, a ring of qalloc slots */
    size_t  qalloc, qhead, qlen;
    size_t  inflight;     /* events the thread took and is publishing */
    bool    stopping;     /* destroy has begun; also read atomically */
    bool    ready;        /* durable: stream (and consumer) set up */
    isub   *isubs;        /* core: one per import; durable: at most one */
    size_t  nisubs;       /* subscriptions made (on_complete expected) */
    size_t  completes;    /* on_complete calls seen */
    bool    closed;       /* on_closed seen */
    pthread_t thread;
    bool    thread_started;
    uint64_t msg_seq;     /* bridge thread only: Nats-Msg-Id numbers */

    pthread_mutex_t reg_lock;
    reg_entry *reg;
    size_t     reg_n, reg_cap;
    size_t     reg_count; /* mirrors reg_n for a lock-free emptiness test */

    /* Counters: atomic adds, relaxed loads. */
    uint64_t exported, export_buffered, export_failed, export_dropped;
    uint64_t imported, import_failed, dropped_loops, duplicates;
    uint64_t id_gaps, id_mismatches, last_seq, last_cseq;
    uint64_t disconnects, reconnects;
};

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */

static void count(uint64_t *c) { ck_pr_inc_64(c); }

static bool is_heartbeat(const evs_event *ev)
{
    return evs_event_type(ev) == EVS_TYPE_HEARTBEAT && evs_event_topic(ev)[0] == '\0';
}

/* 1..EVS_NATS_MAX_NAME bytes of [A-Za-z0-9_-]: safe as an origin, a
 * JetStream stream or consumer name and in a header. */
static bool name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > EVS_NATS_MAX_NAME)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return false;
    }
    return true;
}

static bool match_any(char *const *pats, size_t n, const char *subj, size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (evs__subject_matches(subj, len, pats[i], strlen(pats[i])))
            return true;
    return false;
}

static void random_hex(char *out, size_t digits)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char r[32];
    size_t n = (digits + 1) / 2;
    if (getrandom(r, n, 0) != (ssize_t)n) {
        /* No entropy source: the clock and the address still make
         * bridges of one machine differ. */
        uint64_t x = (uint64_t)evs__now_real_ns() ^ (uint64_t)(uintptr_t)out;
        for (size_t i = 0; i < n; i++, x = x * 6364136223846793005u + 1442695040888963407u)
            r[i] = (unsigned char)(x >> 56);
    }
    for (size_t i = 0; i < digits; i++)
        out[i] = hex[(r[i / 2] >> (i % 2 ? 0 : 4)) & 15];
    out[digits] = '\0';
}

/* "PREFIX.rest" (or "rest" with no prefix), freshly allocated. */
static char *prefixed(const evs_nats_bridge *b, const char *rest)
{
    size_t r = strlen(rest), n = b->plen + (b->plen ? 1 : 0) + r;
    char *p = evs__malloc(n + 1);
    if (p == NULL)
        return NULL;
    if (b->plen) {
        memcpy(p, b->prefix, b->plen);
        p[b->plen] = '.';
    }
    memcpy(p + n - r, rest, r + 1);
    return p;
}

/* The local subject of NATS subject `subj`, or NULL if the prefix is not
 * there. */
static const char *strip_prefix(const evs_nats_bridge *b, const char *subj)
{
    if (b->plen == 0)
        return subj;
    if (strncmp(subj, b->prefix, b->plen) != 0 || subj[b->plen] != '.' || subj[b->plen + 1] == '\0')
        return NULL;
    return subj + b->plen + 1;
}

/* Does pattern `q` match every subject pattern `p` matches? Token by
 * token: ">" in q takes the rest (p must have a token left), "*" in q
 * takes any one token of p but ">", a literal takes itself. */
static bool subsumes(const char *q, const char *p)
{
    for (;;) {
        const char *qe = strchr(q, '.'), *pe = strchr(p, '.');
        size_t ql = qe ? (size_t)(qe - q) : strlen(q), pl = pe ? (size_t)(pe - p) : strlen(p);
        if (ql == 1 && q[0] == '>')
            return true;
        if (ql == 1 && q[0] == '*') {
            if (pl == 1 && p[0] == '>')
                return false;
        } else if (ql != pl || memcmp(q, p, ql) != 0) {
            return false;
        }
        if (qe == NULL || pe == NULL)
            return qe == NULL && pe == NULL;
        q = qe + 1;
        p = pe + 1;
    }
}

static void free_strv(char **v, size_t n)
{
    if (v == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        evs__free(v[i]);
    evs__free(v);
}

/* Is in[i] covered by another pattern of in[0..n)? Of two equal ones,
 * the first is kept. */
static bool covered(const char *const *in, size_t n, size_t i)
{
    for (size_t j = 0; j < n; j++)
        if (j != i && subsumes(in[j], in[i]) && (!subsumes(in[i], in[j]) || j < i))
            return true;
    return false;
}

/* Copy the patterns that no other one covers, each with `pre` (NULL for
 * none) in front: they select the same subjects with less overlap. */
static int reduce_patterns(char ***out, size_t *nout, const char *const *in, size_t n,
                           const evs_nats_bridge *pre)
{
    *out = NULL;
    *nout = 0;
    if (n == 0)
        return 0;
    char **v = evs__calloc(n, sizeof(*v));
    if (v == NULL)
        return EVS_ENOMEM;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (covered(in, n, i))
            continue;
        v[k] = pre != NULL ? prefixed(pre, in[i]) : evs__strndup(in[i], strlen(in[i]));
        if (v[k++] == NULL) {
            free_strv(v, k);
            return EVS_ENOMEM;
        }
    }
    *out = v;
    *nout = k;
    return 0;
}

static void deadline_after(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* Milliseconds left until `end_ns` (monotonic), at least 1; -1 when
 * past. INT32_MAX when end_ns is INT64_MAX (no limit). */
static int ms_left(int64_t end_ns)
{
    if (end_ns == INT64_MAX)
        return INT32_MAX;
    int64_t left = end_ns - evs__now_mono_ns();
    if (left <= 0)
        return -1;
    int64_t ms = left / 1000000 + 1;
    return ms > INT32_MAX ? INT32_MAX : (int)ms;
}

static int64_t end_of(int timeout_ms)
{
    return timeout_ms < 0 ? INT64_MAX : evs__now_mono_ns() + (int64_t)timeout_ms * 1000000;
}

static bool is_connected(const evs_nats_bridge *b)
{
    return b->conn != NULL && natsConnection_Status(b->conn) == NATS_CONN_STATUS_CONNECTED;
}

/* Wait on `wake` for up to `ms` unless the bridge is stopping; takes and
 * releases `lock`. */
static void nap(evs_nats_bridge *b, int ms)
{
    struct timespec ts;
    deadline_after(&ts, ms);
    pthread_mutex_lock(&b->lock);
    if (!b->stopping)
        pthread_cond_timedwait(&b->wake, &b->lock, &ts);
    pthread_mutex_unlock(&b->lock);
}

/* ------------------------------------------------------------------ */
/* The registry of imported events                                     */

static int reg_add(evs_nats_bridge *b, const evs_event *ev)
{
    evs_event *ref = evs_event_ref(ev);
    if (ref == NULL)
        return EVS_ENOMEM;
    pthread_mutex_lock(&b->reg_lock);
    if (b->reg_n == b->reg_cap) {
        size_t cap = b->reg_cap ? b->reg_cap * 2 : 64;
        reg_entry *r = evs__realloc(b->reg, cap * sizeof(*r));
        if (r == NULL) {
            pthread_mutex_unlock(&b->reg_lock);
            evs_event_unref(ref);
            return EVS_ENOMEM;
        }
        b->reg = r;
        b->reg_cap = cap;
    }
    b->reg[b->reg_n++] = (reg_entry){.key = evs_event_topic(ref), .ev = ref, .id = 0};
    evs_store_release(&b->reg_count, b->reg_n);
    pthread_mutex_unlock(&b->reg_lock);
    return 0;
}

/* The publish of `ev` gave it local id `id`; 0: it was not accepted, so
 * the export handler will never see it. */
static void reg_set_id(evs_nats_bridge *b, const evs_event *ev, uint64_t id)
{
    const evs_event *drop = NULL;
    pthread_mutex_lock(&b->reg_lock);
    for (size_t i = b->reg_n; i-- > 0;) {
        if (b->reg[i].ev != ev)
            continue;
        if (id != 0) {
            b->reg[i].id = id;
        } else {
            drop = b->reg[i].ev;
            memmove(&b->reg[i], &b->reg[i + 1], (b->reg_n - i - 1) * sizeof(*b->reg));
            b->reg_n--;
            evs_store_release(&b->reg_count, b->reg_n);
        }
        break;
    }
    pthread_mutex_unlock(&b->reg_lock);
    evs_event_unref(drop);
}

/* Export handler: was `ev` imported by us? Forgets it if so, and forgets
 * entries the stream numbered before it (it dropped them: the handler
 * sees every accepted event in id order). */
static bool reg_take(evs_nats_bridge *b, const evs_event *ev)
{
    /* An import is registered before it is published, and the stream's
     * hand-over to the dispatcher orders the two, so an empty registry
     * here means ev is not one of ours. */
    if (evs_load_acquire(&b->reg_count) == 0)
        return false;
    const char *key = evs_event_topic(ev);
    uint64_t id = evs_event_id(ev);
    bool found = false;
    size_t j = 0;
    pthread_mutex_lock(&b->reg_lock);
    for (size_t i = 0; i < b->reg_n; i++) {
        reg_entry e = b->reg[i];
        if (!found && e.key == key) {
            found = true;
            evs_event_unref(e.ev);
        } else if (e.id != 0 && e.id < id) {
            evs_event_unref(e.ev);
        } else {
            b->reg[j++] = e;
        }
    }
    b->reg_n = j;
    evs_store_release(&b->reg_count, j);
    pthread_mutex_unlock(&b->reg_lock);
    return found;
}

/* ------------------------------------------------------------------ */
/* Export                                                              */

/* Append one reference to the queue. Returns 0, EVS_EFULL, EVS_ECLOSED
 * or EVS_ENOMEM; the caller keeps `ev` on failure. */
static int enqueue(evs_nats_bridge *b, const evs_event *ev)
{
    int rc = 0;
    pthread_mutex_lock(&b->lock);
    if (b->stopping) {
        rc = EVS_ECLOSED;
    } else if (b->qlen == b->qmax) {
        rc = EVS_EFULL;
    } else {
        if (b->qlen == b->qalloc) {
            /* Grow on demand: most bridges never queue much. Unwrap the
             * ring into the new array. */
            size_t na = b->qalloc ? b->qalloc * 2 : 64;
            if (na > b->qmax)
                na = b->qmax;
            const evs_event **nq = evs__malloc(na * sizeof(*nq));
            if (nq == NULL) {
                rc = EVS_ENOMEM;
                goto out;
            }
            for (size_t i = 0; i < b->qlen; i++)
                nq[i] = b->q[(b->qhead + i) % b->qalloc];
            evs__free(b->q);
            b->q = nq;
            b->qalloc = na;
            b->qhead = 0;
        }
        b->q[(b->qhead + b->qlen) % b->qalloc] = ev;
        if (b->qlen++ == 0)
            pthread_cond_signal(&b->wake);
    }
out:
    pthread_mutex_unlock(&b->lock);
    return rc;
}

static bool export_filter(const evs_event *ev, void *user)
{
    evs_nats_bridge *b = user;
    if (is_heartbeat(ev))
        return false;
    if (b->nexports == 1) /* the subscription's pattern selected it */
        return true;
    const char *t = evs_event_topic(ev);
    return match_any(b->exports, b->nexports, t, strlen(t));
}

/* The stream's dispatcher: queue the event, never wait for NATS. */
static int export_handler(const evs_event *ev, void *user)
{
    evs_nats_bridge *b = user;
    if (reg_take(b, ev))
        return 0;
    evs_event *ref = evs_event_ref(ev);
    if (ref == NULL || enqueue(b, ref) != 0) {
        evs_event_unref(ref);
        count(&b->export_dropped);
    }
    return 0;
}

/* Build the NATS message for `ev`: subject, payload, headers. */
static natsMsg *make_msg(evs_nats_bridge *b, const evs_event *ev, evs_buf *buf)
{
    const char *topic = evs_event_topic(ev);
    size_t tlen = strlen(topic);
    char *p = b->subj;
    if (b->plen) {
        memcpy(p, b->prefix, b->plen);
        p[b->plen] = '.';
        p += b->plen + 1;
    }
    memcpy(p, topic, tlen + 1);
    evs_buf_reset(buf);
    if (evs_event_to_msgpack(ev, buf) != 0)
        return NULL;
    natsMsg *m = NULL;
    if (natsMsg_Create(&m, b->subj, NULL, buf->data, (int)buf->len) != NATS_OK)
        return NULL;
    char id[24];
    snprintf(id, sizeof(id), "%llu", (unsigned long long)evs_event_id(ev));
    if (natsMsgHeader_Set(m, EVS_NATS_HDR_ORIGIN, b->origin) != NATS_OK ||
        natsMsgHeader_Set(m, EVS_NATS_HDR_ID, id) != NATS_OK ||
        natsMsgHeader_Set(m, EVS_NATS_HDR_TYPE, evs_event_type_name(ev)) != NATS_OK) {
        natsMsg_Destroy(m);
        return NULL;
    }
    return m;
}

static void publish_core(evs_nats_bridge *b, natsMsg *m)
{
    /* Disconnected, nats.c appends to its reconnect buffer and sends that
     * on reconnect: counted apart, since core NATS promises nothing for
     * it (a subscriber that has not re-subscribed yet misses it). */
    bool up = is_connected(b);
    if (natsConnection_PublishMsg(b->conn, m) != NATS_OK)
        count(&b->export_failed);
    else
        count(up ? &b->exported : &b->export_buffered);
}

/* JetStream: until acknowledged, or until the bridge stops. The same
 * Nats-Msg-Id on every attempt lets JetStream drop the copy a lost
 * acknowledgment makes us send twice. */
static void publish_js(evs_nats_bridge *b, natsMsg *m)
{
    char msgid[64];
    snprintf(msgid, sizeof(msgid), "%s-%llu", b->instance, (unsigned long long)++b->msg_seq);
    for (;;) {
        if (evs_load(&b->stopping)) {
            count(&b->export_dropped);
            return;
        }
        if (!is_connected(b)) {
            nap(b, 20);
            continue;
        }
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MsgId = msgid;
        po.MaxWait = b->timeout_ms;
        jsPubAck *pa = NULL;
        jsErrCode jerr = 0;
        if (js_PublishMsg(&pa, b->js, m, &po, &jerr) == NATS_OK) {
            jsPubAck_Destroy(pa);
            count(&b->exported);
            return;
        }
        count(&b->export_failed);
        nap(b, RETRY_MS);
    }
}

static void publish_one(evs_nats_bridge *b, const evs_event *ev, evs_buf *buf)
{
    natsMsg *m = make_msg(b, ev, buf);
    if (m == NULL) {
        count(b->durable ? &b->export_dropped : &b->export_failed);
        return;
    }
    if (b->durable)
        publish_js(b, m);
    else
        publish_core(b, m);
    natsMsg_Destroy(m);
}

/* ------------------------------------------------------------------ */
/* Import                                                              */

/* seq_ids: make the next local id `seq` by publishing heartbeats for the
 * sequences the mirror skips (other subjects, deleted messages, what
 * retention removed before we started). */
static void fill_gap(evs_nats_bridge *b, uint64_t seq)
{
    uint64_t next = evs__stream_ids_issued(b->s) + 1;
    while (next < seq) {
        evs_event *hb;
        uint64_t id = 0;
        if (evs_event_create(&hb, EVS_TYPE_HEARTBEAT, NULL, NULL, 0) != 0)
            return;
        if (evs_stream_publish_move(b->s, hb, &id) != 0 || id == 0)
            return;
        count(&b->id_gaps);
        next = id + 1;
    }
}

/* Publish one NATS message locally. Returns nothing: every outcome is
 * counted. `seq` is the JetStream sequence (0 in core mode). */
static void import_one(evs_nats_bridge *b, const isub *is, natsMsg *msg, uint64_t seq)
{
    const char *local = strip_prefix(b, natsMsg_GetSubject(msg));
    if (local == NULL) {
        count(&b->import_failed);
        return;
    }
    size_t llen = strlen(local);
    if (b->durable == NULL) {
        /* Overlapping patterns: the first that matches imports it. */
        for (size_t j = 0; j < is->index; j++)
            if (evs__subject_matches(local, llen, b->imports[j], strlen(b->imports[j])))
                return;
    }
    const char *origin = NULL;
    if (natsMsgHeader_Get(msg, EVS_NATS_HDR_ORIGIN, &origin) != NATS_OK)
        origin = NULL;
    if (origin != NULL && !b->seq_ids && strcmp(origin, b->origin) == 0) {
        count(&b->dropped_loops);
        return;
    }
    const char *data = natsMsg_GetData(msg);
    int dlen = natsMsg_GetDataLength(msg);
    evs_event *ev = NULL;
    int rc;
    if (origin != NULL) {
        rc = evs_event_from_msgpack(&ev, data, (size_t)dlen);
        if (rc == 0 && strcmp(evs_event_topic(ev), local) != 0)
            rc = EVS_EBADMSG; /* the subject is what routes; they must agree */
    } else {
        rc = evs_event_create(&ev, EVS_TYPE_MESSAGE, local, data, (size_t)dlen);
    }
    if (rc != 0) {
        evs_event_unref(ev);
        count(&b->import_failed);
        return;
    }
    if (b->seq_ids)
        fill_gap(b, seq);
    bool reg = !b->seq_ids && b->nexports > 0 && match_any(b->exports, b->nexports, local, llen);
    if (reg && reg_add(b, ev) != 0) {
        evs_event_unref(ev);
        count(&b->import_failed);
        return;
    }
    uint64_t id = 0;
    rc = evs_stream_publish_id(b->s, ev, &id);
    if (reg)
        reg_set_id(b, ev, rc == 0 ? id : 0);
    if (rc == 0 && id != 0) {
        count(&b->imported);
        if (b->seq_ids && id != seq)
            count(&b->id_mismatches);
    } else {
        count(&b->import_failed);
    }
    evs_event_unref(ev);
}

static void on_import(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)sub;
    isub *is = closure;
    evs_nats_bridge *b = is->b;
    uint64_t seq = 0, cseq = 0;
    if (b->durable != NULL) {
        jsMsgMetaData *md = NULL;
        int64_t ts = 0;
        if (natsMsg_GetMetaData(&md, msg) == NATS_OK) {
            seq = md->Sequence.Stream;
            cseq = md->Sequence.Consumer;
            ts = md->Timestamp;
            jsMsgMetaData_Destroy(md);
        }
        if (b->replay == EVS_NATS_REPLAY_TIME && ts < b->replay_time_ns) {
            evs_store(&b->last_seq, seq); /* before the time: skipped */
            goto done;
        }
        /* One consumer, one thread: sequences only grow, so one at or
         * below the last is a redelivery (its acknowledgment was lost). */
        if (seq != 0 && seq <= evs_load(&b->last_seq)) {
            count(&b->duplicates);
            goto done;
        }
    }
    import_one(b, is, msg, seq);
    if (seq != 0)
        evs_store(&b->last_seq, seq);
done:
    if (b->consumer != NULL)
        natsMsg_Ack(msg, NULL);
    if (cseq != 0)
        evs_store_release(&b->last_cseq, cseq);
    natsMsg_Destroy(msg);
}

/* ------------------------------------------------------------------ */
/* nats.c callbacks                                                    */

static void on_complete(void *closure)
{
    evs_nats_bridge *b = ((isub *)closure)->b;
    pthread_mutex_lock(&b->lock);
    b->completes++;
    pthread_cond_broadcast(&b->idle);
    pthread_mutex_unlock(&b->lock);
}

static void on_closed(natsConnection *nc, void *closure)
{
    (void)nc;
    evs_nats_bridge *b = closure;
    pthread_mutex_lock(&b->lock);
    b->closed = true;
    pthread_cond_broadcast(&b->idle);
    pthread_mutex_unlock(&b->lock);
}

static void wake_thread(evs_nats_bridge *b)
{
    pthread_mutex_lock(&b->lock);
    pthread_cond_signal(&b->wake);
    pthread_mutex_unlock(&b->lock);
}

static void on_connected(natsConnection *nc, void *closure)
{
    (void)nc;
    wake_thread(closure);
}

static void on_disconnected(natsConnection *nc, void *closure)
{
    (void)nc;
    count(&((evs_nats_bridge *)closure)->disconnects);
}

static void on_reconnected(natsConnection *nc, void *closure)
{
    (void)nc;
    evs_nats_bridge *b = closure;
    count(&b->reconnects);
    wake_thread(b);
}

/* Slow-consumer and other asynchronous errors: what they cost is read
 * from the subscriptions (import_dropped). */
static void on_error(natsConnection *nc, natsSubscription *sub, natsStatus err, void *closure)
{
    (void)nc;
    (void)sub;
    (void)err;
    (void)closure;
}

/* ------------------------------------------------------------------ */
/* JetStream setup and the bridge thread                               */

/* Make an import subscription's bookkeeping visible to destroy. Called
 * with the subscription made; on failure the caller destroys it. */
static int track_sub(evs_nats_bridge *b, isub *is, natsSubscription *sub)
{
    if (natsSubscription_SetOnCompleteCB(sub, on_complete, is) != NATS_OK)
        return EVS_ESYSTEM;
    pthread_mutex_lock(&b->lock);
    is->sub = sub;
    b->nisubs++;
    pthread_mutex_unlock(&b->lock);
    return 0;
}

static int ensure_stream(evs_nats_bridge *b)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus st = js_GetStreamInfo(&si, b->js, b->durable, NULL, &jerr);
    jsStreamInfo_Destroy(si);
    si = NULL;
    if (st == NATS_OK)
        return 0; /* it exists: used as it is */
    if (st != NATS_NOT_FOUND)
        return -1;
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    cfg.Name = b->durable;
    cfg.Subjects = (const char **)b->js_subjects;
    cfg.SubjectsLen = (int)b->njs_subjects;
    cfg.Storage = js_FileStorage;
    if (b->max_msgs > 0)
        cfg.MaxMsgs = b->max_msgs;
    if (b->max_age_ms > 0)
        cfg.MaxAge = b->max_age_ms * 1000000;
    st = js_AddStream(&si, b->js, &cfg, NULL, &jerr);
    jsStreamInfo_Destroy(si);
    /* Another bridge may have created it meanwhile. */
    return st == NATS_OK || jerr == JSStreamNameExistErr ? 0 : -1;
}

static int subscribe_js(evs_nats_bridge *b)
{
    isub *is = &b->isubs[0];
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = b->timeout_ms;
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = b->durable;
    if (b->consumer != NULL) {
        so.Config.Durable = b->consumer;
        so.Config.AckPolicy = js_AckExplicit;
        so.ManualAck = true;
    } else {
        so.Ordered = true;
    }
    switch (b->replay) {
    case EVS_NATS_REPLAY_ALL:
        so.Config.DeliverPolicy = js_DeliverAll;
        break;
    case EVS_NATS_REPLAY_NEW:
        so.Config.DeliverPolicy = js_DeliverNew;
        break;
    case EVS_NATS_REPLAY_SEQ:
        so.Config.DeliverPolicy = js_DeliverByStartSequence;
        so.Config.OptStartSeq = b->replay_seq;
        break;
    case EVS_NATS_REPLAY_TIME: {
        /* nats.c 3.4 writes the fraction of a second without its leading
         * zeros (0.05 s goes out as ".5"), which would start up to 0.9 s
         * late. Ask from the whole second then; on_import skips what was
         * stored before the time. */
        int64_t t = b->replay_time_ns, frac = t % 1000000000;
        so.Config.DeliverPolicy = js_DeliverByStartTime;
        so.Config.OptStartTime = frac < 100000000 ? t - frac : t;
        break;
    }
    }
    char *filter = prefixed(b, b->imports[0]);
    if (filter == NULL)
        return -1;
    natsSubscription *sub = NULL;
    jsErrCode jerr = 0;
    natsStatus st = js_Subscribe(&sub, b->js, filter, on_import, is, &jo, &so, &jerr);
    evs__free(filter);
    if (st != NATS_OK)
        return -1;
    if (track_sub(b, is, sub) != 0) {
        /* Not Unsubscribe: for a durable consumer it would delete the
         * consumer, and with it where the next bridge resumes. */
        natsSubscription_Destroy(sub);
        return -1;
    }
    return 0;
}

/* Durable mode, once connected: the JetStream context, the stream, the
 * consumer. Each step is kept once done, so a retry goes on from there. */
static int setup_js(evs_nats_bridge *b)
{
    if (b->js == NULL) {
        jsOptions jo;
        jsOptions_Init(&jo);
        jo.Wait = b->timeout_ms;
        if (natsConnection_JetStream(&b->js, b->conn, &jo) != NATS_OK)
            return -1;
    }
    if (ensure_stream(b) != 0)
        return -1;
    if (b->nimports > 0 && b->isubs[0].sub == NULL && subscribe_js(b) != 0)
        return -1;
    return 0;
}

static void *bridge_main(void *arg)
{
    evs_nats_bridge *b = arg;
    const evs_event *batch[BATCH];
    evs_buf buf = {0};
    pthread_mutex_lock(&b->lock);
    for (;;) {
        if (b->stopping)
            break;
        if (!b->ready) {
            pthread_mutex_unlock(&b->lock);
            bool ok = is_connected(b) && setup_js(b) == 0;
            pthread_mutex_lock(&b->lock);
            if (ok) {
                b->ready = true;
                pthread_cond_broadcast(&b->idle);
                continue;
            }
            struct timespec ts;
            deadline_after(&ts, DEFAULT_RECONNECT / 2);
            if (!b->stopping)
                pthread_cond_timedwait(&b->wake, &b->lock, &ts);
            continue;
        }
        if (b->qlen == 0) {
            pthread_cond_wait(&b->wake, &b->lock);
            continue;
        }
        size_t n = b->qlen < BATCH ? b->qlen : BATCH;
        for (size_t i = 0; i < n; i++) {
            batch[i] = b->q[b->qhead];
            b->qhead = (b->qhead + 1) % b->qalloc;
        }
        b->qlen -= n;
        b->inflight = n;
        pthread_mutex_unlock(&b->lock);
        for (size_t i = 0; i < n; i++) {
            publish_one(b, batch[i], &buf);
            evs_event_unref(batch[i]);
        }
        pthread_mutex_lock(&b->lock);
        b->inflight = 0;
        pthread_cond_broadcast(&b->idle);
    }
    /* Stopping: what is still queued is not forwarded. */
    while (b->qlen > 0) {
        evs_event_unref(b->q[b->qhead]);
        b->qhead = (b->qhead + 1) % b->qalloc;
        b->qlen--;
        count(&b->export_dropped);
    }
    pthread_cond_broadcast(&b->idle);
    pthread_mutex_unlock(&b->lock);
    evs_buf_free(&buf);
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Create and destroy                                                  */

static int check_opts(evs_stream *s, const evs_nats_opts *o)
{
    if (!evs__stream_has_topics(s))
        return EVS_EINVAL;
    if ((o->nexports > 0 && o->exports == NULL) || (o->nimports > 0 && o->imports == NULL))
        return EVS_EINVAL;
    /* Imports are published from the bridge's own thread, beside the
     * stream's users: a second publisher (SPEC.md, "Who publishes"). */
    if (o->nimports > 0 && evs__stream_single_publisher(s))
        return evs__set_error(EVS_EINVAL, "a bridge that imports cannot use a single_publisher "
                                          "stream: its thread would be a second publisher");
    bool wild_first = false; /* a pattern whose first token is a wildcard */
    for (size_t i = 0; i < o->nexports + o->nimports; i++) {
        const char *p = i < o->nexports ? o->exports[i] : o->imports[i - o->nexports];
        if (p == NULL || evs__pattern_validate(p, strlen(p)) != 0)
            return EVS_EINVAL;
        wild_first |= (p[0] == '>' || p[0] == '*') && (p[1] == '\0' || p[1] == '.');
    }
    bool has_prefix = o->prefix != NULL && o->prefix[0] != '\0';
    if (has_prefix && evs__subject_validate(o->prefix, strlen(o->prefix)) != 0)
        return EVS_EINVAL;
    if (o->origin != NULL && !name_ok(o->origin))
        return EVS_EINVAL;
    if (o->reconnect_wait_ms < 0 || o->reconnect_buf < 0 || o->timeout_ms < 0 ||
        o->import_pending < 0 || o->max_msgs < 0 || o->max_age_ms < 0)
        return EVS_EINVAL;
    if (o->durable == NULL) {
        if (o->consumer != NULL || o->seq_ids)
            return EVS_EINVAL;
        return 0;
    }
    if (!name_ok(o->durable) || (o->consumer != NULL && !name_ok(o->consumer)))
        return EVS_EINVAL;
    /* JetStream (nats-server 2.9) gives a consumer one filter subject,
     * and a stream may not capture every subject. */
    if (o->nimports > 1 || (wild_first && !has_prefix))
        return EVS_EINVAL;
    if (o->seq_ids && o->nexports > 0)
        return EVS_EINVAL;
    if ((unsigned)o->replay > EVS_NATS_REPLAY_TIME ||
        (o->replay == EVS_NATS_REPLAY_SEQ && o->replay_seq == 0) ||
        (o->replay == EVS_NATS_REPLAY_TIME && o->replay_time_ns <= 0))
        return EVS_EINVAL;
    return 0;
}

/* The JetStream stream's subjects: the prefixed export and import
 * patterns, without one that another covers (nats-server refuses
 * overlapping subjects in one stream). */
static int make_js_subjects(evs_nats_bridge *b)
{
    size_t n = b->nexports + b->nimports;
    const char **all = evs__calloc(n ? n : 1, sizeof(*all));
    if (all == NULL)
        return EVS_ENOMEM;
    for (size_t i = 0; i < n; i++)
        all[i] = i < b->nexports ? b->exports[i] : b->imports[i - b->nexports];
    int rc = reduce_patterns(&b->js_subjects, &b->njs_subjects, all, n, b);
    evs__free(all);
    return rc;
}

static int nats_rc(natsStatus st)
{
    switch (st) {
    case NATS_OK:
        return 0;
    case NATS_NO_MEMORY:
        return EVS_ENOMEM;
    case NATS_INVALID_ARG:
    case NATS_ERR:
        return EVS_EINVAL;
    default:
        return EVS_ESYSTEM;
    }
}

static int make_options(evs_nats_bridge *b, const evs_nats_opts *o)
{
    natsOptions *no = NULL;
    natsStatus st = natsOptions_Create(&no);
    if (st != NATS_OK)
        return nats_rc(st);
    b->nopts = no;
    char name[EVS_NATS_MAX_NAME + 16];
    snprintf(name, sizeof(name), "evstream-%s", b->origin);
    int rwait = o->reconnect_wait_ms ? o->reconnect_wait_ms : DEFAULT_RECONNECT;
    if ((st = natsOptions_SetURL(no, b->url)) != NATS_OK ||
        (st = natsOptions_SetName(no, name)) != NATS_OK ||
        (st = natsOptions_SetTimeout(no, b->timeout_ms)) != NATS_OK ||
        (st = natsOptions_SetMaxReconnect(no, -1)) != NATS_OK ||
        (st = natsOptions_SetReconnectWait(no, rwait)) != NATS_OK ||
        (st = natsOptions_SetReconnectJitter(no, rwait / 4, rwait / 4)) != NATS_OK ||
        (st = natsOptions_SetReconnectBufSize(no, o->reconnect_buf)) != NATS_OK ||
        (st = natsOptions_SetMaxPendingMsgs(no, o->import_pending ? o->import_pending
                                                                  : DEFAULT_PENDING)) != NATS_OK ||
        (st = natsOptions_SetNoEcho(no, true)) != NATS_OK ||
        (st = natsOptions_SetFailRequestsOnDisconnect(no, true)) != NATS_OK ||
        (st = natsOptions_SetRetryOnFailedConnect(no, true, on_connected, b)) != NATS_OK ||
        (st = natsOptions_SetClosedCB(no, on_closed, b)) != NATS_OK ||
        (st = natsOptions_SetDisconnectedCB(no, on_disconnected, b)) != NATS_OK ||
        (st = natsOptions_SetReconnectedCB(no, on_reconnected, b)) != NATS_OK ||
        (st = natsOptions_SetErrorHandler(no, on_error, b)) != NATS_OK)
        return nats_rc(st);
    /* Each subscription of nats.c has a delivery thread of its own, so
     * several import subscriptions would reorder one publisher's events.
     * The global delivery pool (one thread unless the application set
     * nats_SetMessageDeliveryPoolSize) keeps the connection's order. */
    if (b->nimports > 1 && (st = natsOptions_UseGlobalMessageDelivery(no, true)) != NATS_OK)
        return nats_rc(st);
    return 0;
}

/* Free everything; works on a bridge at any stage of construction. */
static void teardown(evs_nats_bridge *b)
{
    if (b->esub != NULL)
        evs_unsubscribe(b->esub); /* waits for a handler in progress */
    pthread_mutex_lock(&b->lock);
    evs_store(&b->stopping, true); /* publish_js reads it without the lock */
    pthread_cond_broadcast(&b->wake);
    pthread_mutex_unlock(&b->lock);
    /* Send what nats.c holds (acknowledgments above all: a durable
     * consumer would deliver unacknowledged messages again), then close:
     * that fails a JetStream publish in progress at once, stops
     * reconnecting, and ends the subscriptions. */
    if (is_connected(b))
        natsConnection_FlushTimeout(b->conn, b->timeout_ms < 500 ? b->timeout_ms : 500);
    if (b->conn != NULL)
        natsConnection_Close(b->conn);
    if (b->thread_started)
        pthread_join(b->thread, NULL);
    pthread_mutex_lock(&b->lock);
    while ((b->conn != NULL && !b->closed) || b->completes < b->nisubs)
        pthread_cond_wait(&b->idle, &b->lock);
    pthread_mutex_unlock(&b->lock);
    /* Now no nats.c callback of ours runs or will run. */
    for (size_t i = 0; b->isubs != NULL && i < b->nimports; i++)
        if (b->isubs[i].sub != NULL)
            natsSubscription_Destroy(b->isubs[i].sub);
    if (b->js != NULL)
        jsCtx_Destroy(b->js);
    if (b->conn != NULL)
        natsConnection_Destroy(b->conn);
    if (b->nopts != NULL)
        natsOptions_Destroy(b->nopts);
    for (size_t i = 0; i < b->reg_n; i++)
        evs_event_unref(b->reg[i].ev);
    for (size_t i = 0; i < b->qlen; i++)
        evs_event_unref(b->q[(b->qhead + i) % b->qalloc]);
    evs__free(b->reg);
    evs__free(b->q);
    evs__free(b->isubs);
    evs__free(b->subj);
    free_strv(b->exports, b->nexports);
    free_strv(b->imports, b->nimports);
    free_strv(b->js_subjects, b->njs_subjects);
    evs__free(b->prefix);
    evs__free(b->url);
    evs__free(b->durable);
    evs__free(b->consumer);
    pthread_cond_destroy(&b->wake);
    pthread_cond_destroy(&b->idle);
    pthread_mutex_destroy(&b->lock);
    pthread_mutex_destroy(&b->reg_lock);
    evs__free(b);
}

static int init_sync(evs_nats_bridge *b)
{
    pthread_condattr_t a;
    if (pthread_condattr_init(&a) != 0)
        return EVS_ESYSTEM;
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    int e = pthread_cond_init(&b->wake, &a);
    if (e == 0 && (e = pthread_cond_init(&b->idle, &a)) != 0)
        pthread_cond_destroy(&b->wake);
    pthread_condattr_destroy(&a);
    if (e != 0)
        return EVS_ESYSTEM;
    pthread_mutex_init(&b->lock, NULL);
    pthread_mutex_init(&b->reg_lock, NULL);
    return 0;
}

static char *dup_or_null(const char *s, int *rc)
{
    if (s == NULL)
        return NULL;
    char *d = evs__strndup(s, strlen(s));
    if (d == NULL)
        *rc = EVS_ENOMEM;
    return d;
}

bool evs_nats_supported(void) { return true; }

int evs_nats_bridge_create(evs_nats_bridge **out, evs_stream *s, const evs_nats_opts *opts)
{
    if (out == NULL)
        return EVS_EINVAL;
    *out = NULL;
    if (s == NULL)
        return EVS_EINVAL;
    evs_nats_opts o = opts != NULL ? *opts : (evs_nats_opts){0};
    int rc = check_opts(s, &o);
    if (rc != 0)
        return rc;
    evs_nats_bridge *b = evs__calloc(1, sizeof(*b));
    if (b == NULL)
        return EVS_ENOMEM;
    if ((rc = init_sync(b)) != 0) {
        evs__free(b);
        return rc;
    }
    b->s = s;
    b->replay = o.replay;
    b->replay_seq = o.replay_seq;
    b->replay_time_ns = o.replay_time_ns;
    b->seq_ids = o.seq_ids;
    b->max_msgs = o.max_msgs;
    b->max_age_ms = o.max_age_ms;
    b->timeout_ms = o.timeout_ms ? o.timeout_ms : DEFAULT_TIMEOUT;
    b->qmax = o.queue ? o.queue : DEFAULT_QUEUE;
    const char *prefix = o.prefix != NULL ? o.prefix : "";
    b->plen = strlen(prefix);
    if (o.origin != NULL)
        memcpy(b->origin, o.origin, strlen(o.origin) + 1);
    else
        random_hex(b->origin, 16);
    random_hex(b->instance, 16);
    b->prefix = dup_or_null(prefix, &rc);
    b->url = dup_or_null(o.url != NULL ? o.url : DEFAULT_URL, &rc);
    b->durable = dup_or_null(o.durable, &rc);
    b->consumer = dup_or_null(o.consumer, &rc);
    b->subj = evs__malloc(b->plen + 1 + EVS_MAX_TOPIC + 1);
    if (rc != 0 || b->subj == NULL) {
        rc = EVS_ENOMEM;
        goto fail;
    }
    /* Patterns another one covers add nothing but duplicates. */
    if ((rc = reduce_patterns(&b->exports, &b->nexports, o.exports, o.nexports, NULL)) != 0 ||
        (rc = reduce_patterns(&b->imports, &b->nimports, o.imports, o.nimports, NULL)) != 0)
        goto fail;
    if (b->nimports > 0 && (b->isubs = evs__calloc(b->nimports, sizeof(*b->isubs))) == NULL) {
        rc = EVS_ENOMEM;
        goto fail;
    }
    for (size_t i = 0; i < b->nimports; i++)
        b->isubs[i] = (isub){.b = b, .index = i};
    if (b->durable != NULL && (rc = make_js_subjects(b)) != 0)
        goto fail;
    if ((rc = make_options(b, &o)) != 0)
        goto fail;
    natsStatus st = natsConnection_Connect(&b->conn, b->nopts);
    if (st != NATS_OK && st != NATS_NOT_YET_CONNECTED) {
        b->conn = NULL;
        rc = nats_rc(st);
        goto fail;
    }
    if (b->durable == NULL) {
        /* Core subscriptions are kept by nats.c across reconnects, and
         * sent as soon as a connection is up. */
        for (size_t i = 0; i < b->nimports; i++) {
            char *subj = prefixed(b, b->imports[i]);
            natsSubscription *sub = NULL;
            st = subj ? natsConnection_Subscribe(&sub, b->conn, subj, on_import, &b->isubs[i])
                      : NATS_NO_MEMORY;
            evs__free(subj);
            if (st != NATS_OK) {
                rc = nats_rc(st);
                goto fail;
            }
            if ((rc = track_sub(b, &b->isubs[i], sub)) != 0) {
                natsSubscription_Unsubscribe(sub);
                natsSubscription_Destroy(sub);
                goto fail;
            }
        }
        b->ready = true;
    }
    if (pthread_create(&b->thread, NULL, bridge_main, b) != 0) {
        rc = EVS_ESYSTEM;
        goto fail;
    }
    b->thread_started = true;
    if (b->nexports > 0) {
        const char *pat = b->nexports == 1 ? b->exports[0] : ">";
        if ((rc = evs_subscribe(&b->esub, s, pat, export_handler, export_filter, b, NULL)) != 0) {
            b->esub = NULL;
            goto fail;
        }
    }
    *out = b;
    return 0;
fail:
    teardown(b);
    return rc;
}

int evs_nats_bridge_destroy(evs_nats_bridge *b)
{
    if (b != NULL)
        teardown(b);
    return 0;
}

int evs_nats_bridge_publish(evs_nats_bridge *b, const evs_event *ev)
{
    if (b == NULL || ev == NULL)
        return EVS_EINVAL;
    const char *t = evs_event_topic(ev);
    if (evs__subject_validate(t, strlen(t)) != 0)
        return EVS_EINVAL;
    evs_event *ref = evs_event_ref(ev);
    if (ref == NULL)
        return EVS_ENOMEM;
    int rc = enqueue(b, ref);
    if (rc != 0) {
        evs_event_unref(ref);
        if (rc == EVS_EFULL || rc == EVS_ENOMEM)
            count(&b->export_dropped);
    }
    return rc;
}

/* Durable: has the consumer delivered, and have we handled, everything
 * the stream holds for it? */
static bool caught_up(evs_nats_bridge *b)
{
    if (b->nimports == 0)
        return true;
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    natsStatus st;
    if (b->consumer != NULL)
        st = js_GetConsumerInfo(&ci, b->js, b->durable, b->consumer, NULL, &jerr);
    else
        st = natsSubscription_GetConsumerInfo(&ci, b->isubs[0].sub, NULL, &jerr);
    if (st != NATS_OK)
        return false;
    bool done = ci->NumPending == 0 && ci->Delivered.Consumer == evs_load_acquire(&b->last_cseq);
    jsConsumerInfo_Destroy(ci);
    return done;
}

int evs_nats_bridge_sync(evs_nats_bridge *b, int timeout_ms)
{
    if (b == NULL)
        return EVS_EINVAL;
    int64_t end = end_of(timeout_ms);
    for (;;) {
        pthread_mutex_lock(&b->lock);
        bool ready = b->ready;
        pthread_mutex_unlock(&b->lock);
        if (ready && is_connected(b)) {
            int left = ms_left(end);
            if (left < 0)
                return EVS_ETIMEDOUT;
            if (b->durable == NULL) {
                if (natsConnection_FlushTimeout(b->conn, left > 1000 ? 1000 : left) == NATS_OK)
                    return 0;
            } else if (caught_up(b)) {
                return 0;
            }
        }
        if (ms_left(end) < 0)
            return EVS_ETIMEDOUT;
        struct timespec ts = {0, 5 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

int evs_nats_bridge_flush(evs_nats_bridge *b, int timeout_ms)
{
    if (b == NULL)
        return EVS_EINVAL;
    int64_t end = end_of(timeout_ms);
    /* Events the stream accepted reach the export queue through its
     * dispatcher: let it hand them over first. */
    if (b->esub != NULL) {
        int rc = evs_stream_flush(b->s, timeout_ms < 0 ? EVS_FOREVER : timeout_ms, NULL);
        if (rc != 0)
            return rc;
    }
    pthread_mutex_lock(&b->lock);
    while (b->qlen > 0 || b->inflight > 0) {
        int left = ms_left(end);
        if (left < 0) {
            pthread_mutex_unlock(&b->lock);
            return EVS_ETIMEDOUT;
        }
        struct timespec ts;
        deadline_after(&ts, left > 100 ? 100 : left);
        pthread_cond_timedwait(&b->idle, &b->lock, &ts);
    }
    pthread_mutex_unlock(&b->lock);
    if (b->durable != NULL)
        return 0; /* acknowledged one by one */
    for (;;) {
        int left = ms_left(end);
        if (left < 0)
            return EVS_ETIMEDOUT;
        if (is_connected(b) &&
            natsConnection_FlushTimeout(b->conn, left > 1000 ? 1000 : left) == NATS_OK)
            return 0;
        struct timespec ts = {0, 5 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

int evs_nats_bridge_stats_get(evs_nats_bridge *b, evs_nats_stats *out)
{
    if (b == NULL || out == NULL)
        return EVS_EINVAL;
    *out = (evs_nats_stats){
        .exported = evs_load(&b->exported),
        .export_buffered = evs_load(&b->export_buffered),
        .export_failed = evs_load(&b->export_failed),
        .export_dropped = evs_load(&b->export_dropped),
        .imported = evs_load(&b->imported),
        .import_failed = evs_load(&b->import_failed),
        .dropped_loops = evs_load(&b->dropped_loops),
        .duplicates = evs_load(&b->duplicates),
        .id_gaps = evs_load(&b->id_gaps),
        .id_mismatches = evs_load(&b->id_mismatches),
        .last_seq = evs_load(&b->last_seq),
        .disconnects = evs_load(&b->disconnects),
        .reconnects = evs_load(&b->reconnects),
        .connected = is_connected(b),
    };
    for (size_t i = 0; i < b->nimports; i++) {
        /* Subscriptions are set once and live until destroy; nats.c is
         * not called under our lock (its callbacks take it). */
        pthread_mutex_lock(&b->lock);
        natsSubscription *sub = b->isubs[i].sub;
        pthread_mutex_unlock(&b->lock);
        int64_t d = 0;
        if (sub != NULL && natsSubscription_GetDropped(sub, &d) == NATS_OK)
            out->import_dropped += (uint64_t)d;
    }
    pthread_mutex_lock(&b->lock);
    out->export_queued = b->qlen + b->inflight;
    out->ready = b->ready;
    pthread_mutex_unlock(&b->lock);
    return 0;
}

const char *evs_nats_bridge_origin(const evs_nats_bridge *b)
{
    return b != NULL ? b->origin : "";
}

#endif /* EVS_HAVE_NATS */
