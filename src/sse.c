/*
 * SSEStream: the server side of server-sent events over one stream.
 *
 * A client is one subscription per pattern (one in all on a stream
 * without topics) and a mailbox: a ring.h ring of event references whose
 * producers are the client's handlers (the stream's dispatcher, or
 * publishing threads on an inline stream) and its heartbeat timer, and
 * whose one consumer is the client's reader. Frames are encoded on the
 * reader's thread, in evs_sse_read, so an idle client holds references,
 * never frame bytes. Push-mode clients encode and push on the enqueuing
 * thread instead and use the mailbox only during the connect hand-off.
 *
 * Threads and data:
 *   - Delivery is lock-free: a handler refs the event, claims a mailbox
 *     slot (CAS), publishes it, bumps the client's event count `ec` (a
 *     locked add; the futex is touched only when a reader sleeps) and,
 *     once evs_sse_fd was called, writes the eventfd only when the
 *     `signaled` flag was clear.
 *   - Several patterns deliver their union once: the handler of pattern
 *     i skips an event that pattern j < i also matches (pattern j's
 *     subscription, which started no later, delivers it). All of a
 *     client's subscriptions are served by one dispatcher, event by
 *     event, so frames keep id order.
 *   - A full mailbox never waits: DISCONNECT closes the client (the ring
 *     is closed, then `state` set: a reader that sees the state sees
 *     every claim that will ever succeed); DROP_OLDEST evicts the oldest
 *     entry by CAS on the ring's head (the evictor owns and unrefs it)
 *     and adds to `skipped_pending`, which the reader turns into a
 *     comment. The reader takes an entry (CAS) before encoding it, and
 *     keeps an entry that does not fit the caller's buffer as `carry`.
 *   - Resume: subscribe first, then flush the stream; every event up to
 *     then is in its history, and each subscription has delivered a
 *     suffix (in id order) of its matches, starting at pats[j].first.
 *     The replay is the matches, after the client's id, below that
 *     point of the first pattern they match: exactly what the client
 *     missed, none that also comes live (build_replay). What the mailbox
 *     already holds is merged into it by id (merge_live); anything
 *     queued later is newer. The replay is reader-side state read before
 *     the mailbox, so live events queue behind it with no lock. A push
 *     client's live events go to the mailbox while `replaying` is set
 *     (under sse->handoff, taken only while it is set); the connecting
 *     thread pushes the replay, drains the mailbox and clears the flag
 *     under that mutex.
 *   - Push calls for one client never overlap: `busy` is a CAS flag; the
 *     heartbeat only tries it (a busy client is not idle).
 *   - Teardown: `dying` is set, the ring closed, readers woken; the
 *     subscriptions and the timer are removed (each waits for a running
 *     call); then readers still inside evs_sse_read (`readers`) are
 *     waited for, and everything is freed.
 *
 * Locks: sse->lock guards the client list and is a leaf; sse->handoff
 * is a leaf taken by handlers only while a push client is replaying. No
 * user code runs under either.
 */
#include "evs_internal.h"

#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "heartbeat.h"
#include "ring.h"
#include "sse.h"
#include "stream.h"
#include "subject.h"
#include "wait.h"

/* Mailbox default: room for a burst of a few dozen events per client
 * at 16 bytes a slot (1 KiB), so an idle client stays small. */
#define DEFAULT_MAILBOX 64
#define MAX_MAILBOX 65536
/* Push mode encodes into a stack buffer this large; bigger frames get a
 * heap buffer for the call. */
#define PUSH_STACK 1024

/* A heartbeat in the mailbox: not an event, never unreffed. */
#define HB_MARK ((const evs_event *)(uintptr_t)1)

static const char HB_FRAME[] = ": heartbeat\n\n";

/* Close reasons; the index is the client's `state`. */
enum { OPEN = 0, R_SLOW, R_SHUTDOWN, R_PUSH };
static const char *const reasons[] = {NULL, "slow consumer", "server shutdown", "push failed"};

/* A pattern's subscription; the handler's user pointer. */
struct sse_pat {
    evs_sub *sub;      /* written before the next pattern subscribes */
    evs_sse_client *c; /* immutable */
    /* The first id the stream delivered to this subscription (0: none
     * yet): delivery is a suffix of the matching ids from here on.
     * Written once by the handler, read by connect after a flush. */
    uint64_t first;
};

struct evs_sse_client {
    /* The mailbox (producers: handlers, the heartbeat timer; consumer:
     * the reader, or the connecting thread in a push hand-off). */
    struct evs_ring mb;
    evs_sse *sse;
    evs_sse_client *prev, *next; /* the layer's list; sse->lock */
    evs_sse_push_fn push;        /* immutable */
    void *push_user;
    evs__hb_timer *hb;
    /* Bumped after each enqueue or push and by close/teardown: readers
     * sleep on it, the heartbeat compares it with hb_seen. */
    struct ck_ec32 ec;
    uint32_t hb_seen; /* the heartbeat callback's (one at a time) */
    int fd;           /* the eventfd, -1 until evs_sse_fd; set once */
    /* 1 while the eventfd has been written and not reset: enqueuers
     * write the fd only on a 0 -> 1 swap; the reader resets the fd and
     * then clears it, and only when nothing is pending. */
    unsigned signaled;
    unsigned state;    /* OPEN or a reason; set once by CAS after ring close */
    unsigned dying;    /* set once by teardown; read by readers, pushers */
    unsigned readers;  /* evs_sse_read calls inside; teardown waits for 0 */
    unsigned replaying; /* push mode: connect's hand-off in progress */
    unsigned busy;     /* push mode: a push call is running */
    uint64_t skipped_pending; /* lost events not yet announced (RMW) */

    /* The reader's (the connecting thread's before connect returns). */
    const evs_event *carry;   /* taken from the mailbox, not yet sent */
    const evs_event **replay; /* owned references, sent from replay_pos */
    uint32_t replay_n, replay_pos;
    uint64_t gap_first, gap_last; /* a gap frame to send first; 0 = none */
    uint64_t reset_issued;        /* with reset_pending: the newest id issued */
    bool reset_pending;           /* a reset frame to send before the gap */
    size_t need;                  /* the frame refused with ETOOBIG */
    bool retry_pending, final_sent;

    /* Counters (written as their comments say, read by stats). */
    uint64_t frames;     /* the reader, or a pusher holding busy */
    uint64_t skipped;    /* RMW */
    uint64_t replayed;   /* connect */
    uint64_t heartbeats; /* the heartbeat callback */
    uint32_t npats;
    struct sse_pat pats[];
};

struct evs_sse {
    evs_stream *stream;
    evs_sse_stream_opts opts; /* resolved: mailbox set, heartbeat_ms 0 = none */
    bool topics;
    size_t hist_cap;
    pthread_mutex_t lock; /* clients, nclients, closed writes */
    evs_sse_client *clients;
    uint64_t nclients;
    unsigned closed;
    pthread_mutex_t handoff; /* push clients' replay hand-off */
    /* Counters (ck_pr RMW from any thread). */
    uint64_t connects, disconnected_slow, skipped, replayed, gaps, heartbeats, frames;
};

/* The client whose push callback this thread is running. */
static _Thread_local evs_sse_client *tl_push;

/* ------------------------------------------------------------------ */
/* Waking the reader                                                   */

static void signal_fd(evs_sse_client *c, int fd)
{
    if (evs_load(&c->signaled) == 0 && evs_xchg(&c->signaled, 1) == 0) {
        uint64_t one = 1;
        /* Cannot fail short of the counter reaching 2^64 - 2. */
        ssize_t w = write(fd, &one, sizeof one);
        (void)w;
    }
}

/*
 * After an enqueue (or a close): wake a sleeping reader and, if the
 * client has an eventfd, make it readable. The locked add in ck_ec32_inc
 * orders our slot store before the loads of fd and signaled; the reader
 * stores signaled = 0 (or fd) and fences before it looks at the ring, so
 * either it sees our entry or we see its store and write the fd.
 */
static void wake_reader(evs_sse_client *c)
{
    ck_ec32_inc(&c->ec, &evs__ec_mp);
    ck_pr_fence_atomic_load();
    int fd = evs_load_acquire(&c->fd);
    if (fd >= 0)
        signal_fd(c, fd);
}

/* Count `n` events the client will never get; announced by a comment. */
static void lose(evs_sse_client *c, uint64_t n)
{
    ck_pr_add_64(&c->skipped_pending, n);
    ck_pr_add_64(&c->skipped, n);
    ck_pr_add_64(&c->sse->skipped, n);
}

/*
 * Close the client with `reason`: the ring first, so that a reader that
 * sees `state` (acquire) also sees every claim that will ever succeed.
 * Returns true for the call that closed it.
 */
static bool close_client(evs_sse_client *c, unsigned reason)
{
    evs__ring_close(&c->mb);
    if (!ck_pr_cas_uint(&c->state, OPEN, reason))
        return false;
    wake_reader(c);
    return true;
}

/* ------------------------------------------------------------------ */
/* Enqueue                                                             */

/* Put `item` (an owned reference, or HB_MARK) in the mailbox under the
 * layer's slow-client policy. Never waits. */
static void enqueue(evs_sse_client *c, const evs_event *item)
{
    uint64_t pos;
    unsigned evict_round = 0; /* pauses for a stalled pusher */
    for (;;) {
        int rc = evs__ring_claim(&c->mb, &pos);
        if (evs_likely(rc == 0))
            break;
        if (rc == EVS_EFULL && c->sse->opts.slow == EVS_SSE_SLOW_DROP_OLDEST) {
            const evs_event *old;
            /* Waits (backing off) only while the oldest is still being
             * written by another pusher. */
            if (evs__ring_evict(&c->mb, &old, evs__backoff, &evict_round)) {
                if (old != HB_MARK && old != NULL) {
                    evs_event_unref(old);
                    lose(c, 1);
                }
            }
            continue;
        }
        if (rc == EVS_EFULL && close_client(c, R_SLOW))
            ck_pr_inc_64(&c->sse->disconnected_slow);
        if (item != HB_MARK)
            evs_event_unref(item);
        return;
    }
    evs__ring_publish(&c->mb, pos, item);
    wake_reader(c);
}

/* Queue a borrowed event (or HB_MARK). */
static void mailbox_put(evs_sse_client *c, const evs_event *ev)
{
    if (ev != HB_MARK && (ev = evs_event_ref(ev)) == NULL) {
        /* A slot event whose copy could not be allocated. */
        lose(c, 1);
        wake_reader(c);
        return;
    }
    enqueue(c, ev);
}

/* ------------------------------------------------------------------ */
/* Frames                                                              */

static bool is_stream_heartbeat(const evs_event *ev)
{
    return evs_event_type(ev) == EVS_TYPE_HEARTBEAT && evs_event_topic(ev)[0] == '\0';
}

static int put_small(char *buf, size_t cap, const char *frame, size_t n, size_t *len)
{
    *len = n;
    if (n > cap)
        return EVS_ETOOBIG;
    memcpy(buf, frame, n);
    return 0;
}

/* Encode a mailbox entry or replayed event. */
static int encode_item(const evs_event *it, char *buf, size_t cap, size_t *len)
{
    if (it == HB_MARK || is_stream_heartbeat(it))
        return put_small(buf, cap, HB_FRAME, sizeof HB_FRAME - 1, len);
    return evs_sse_encode(it, NULL, buf, cap, len);
}

static void free_replay(evs_sse_client *c)
{
    for (uint32_t i = c->replay_pos; i < c->replay_n; i++)
        evs_event_unref(c->replay[i]);
    evs__free(c->replay);
    c->replay = NULL;
    c->replay_n = c->replay_pos = 0;
}

/* Is the mailbox empty? Claimed-but-unpublished entries count as there. */
static bool mailbox_empty(evs_sse_client *c)
{
    return evs__ring_claimed(&c->mb) == evs_load_acquire(&c->mb.head);
}

/* Nothing left for the reader: the eventfd may be reset. */
static bool nothing_pending(evs_sse_client *c)
{
    return c->carry == NULL && !c->retry_pending && !c->reset_pending && c->gap_first == 0 &&
           c->replay_pos == c->replay_n && evs_load(&c->skipped_pending) == 0 &&
           evs_load(&c->state) == OPEN && !evs_load(&c->dying) && mailbox_empty(c);
}

/* Give up the entry that next_frame would write (push mode, no memory
 * to render it). */
static void drop_next(evs_sse_client *c)
{
    if (c->replay_pos < c->replay_n) {
        evs_event_unref(c->replay[c->replay_pos++]);
        if (c->replay_pos == c->replay_n)
            free_replay(c);
    } else if (c->carry != NULL) {
        if (c->carry != HB_MARK)
            evs_event_unref(c->carry);
        c->carry = NULL;
    } else {
        return;
    }
    lose(c, 1);
}

#define NF_NONE 1 /* next_frame: nothing ready */

/*
 * Write the client's next frame into buf[0..cap), in this order: retry,
 * reset, gap, replay, the skipped comment, mailbox entries, and the final
 * disconnect frame of a closed client once its mailbox is drained.
 * Returns 0 with *len (the frame is consumed), EVS_ETOOBIG with *len =
 * its size (kept for next time), NF_NONE, EVS_ECLOSED after the final
 * frame, or EVS_ENOMEM (kept).
 * Threads: the reader.
 */
static int next_frame(evs_sse_client *c, char *buf, size_t cap, size_t *len)
{
    char small[128];
    int n, rc;
again:
    if (c->retry_pending) {
        n = snprintf(small, sizeof small, "retry: %d\n\n", c->sse->opts.retry_ms);
        if ((rc = put_small(buf, cap, small, (size_t)n, len)) == 0)
            c->retry_pending = false;
        return rc;
    }
    if (c->reset_pending) {
        n = snprintf(small, sizeof small, "event: reset\ndata: {\"issued\":\"%" PRIu64 "\"}\n\n",
                     c->reset_issued);
        if ((rc = put_small(buf, cap, small, (size_t)n, len)) == 0)
            c->reset_pending = false;
        return rc;
    }
    if (c->gap_first != 0) {
        n = snprintf(small, sizeof small,
                     "event: gap\ndata: {\"first\":\"%" PRIu64 "\",\"last\":\"%" PRIu64 "\"}\n\n",
                     c->gap_first, c->gap_last);
        if ((rc = put_small(buf, cap, small, (size_t)n, len)) == 0)
            c->gap_first = 0;
        return rc;
    }
    if (c->replay_pos < c->replay_n) {
        rc = encode_item(c->replay[c->replay_pos], buf, cap, len);
        if (rc == EVS_ETOOBIG || rc == EVS_ENOMEM)
            return rc;
        evs_event_unref(c->replay[c->replay_pos++]);
        if (c->replay_pos == c->replay_n)
            free_replay(c);
        if (rc == 0)
            return 0;
        lose(c, 1); /* data that does not render: announced, not silent */
        goto again;
    }
    uint64_t sk = evs_load(&c->skipped_pending);
    if (sk != 0) {
        n = snprintf(small, sizeof small, ": skipped %" PRIu64 " events\n\n", sk);
        if ((rc = put_small(buf, cap, small, (size_t)n, len)) == 0)
            ck_pr_sub_64(&c->skipped_pending, sk);
        return rc;
    }
    if (c->carry == NULL) {
        uint64_t first;
        if (evs__ring_take(&c->mb, &c->carry, 1, &first) == 0)
            c->carry = NULL;
    }
    if (c->carry != NULL) {
        rc = encode_item(c->carry, buf, cap, len);
        if (rc == EVS_ETOOBIG || rc == EVS_ENOMEM)
            return rc;
        if (c->carry != HB_MARK)
            evs_event_unref(c->carry);
        c->carry = NULL;
        if (rc == 0)
            return 0;
        lose(c, 1);
        goto again;
    }
    unsigned st = evs_load_acquire(&c->state);
    if (st == OPEN || !mailbox_empty(c))
        return NF_NONE; /* open, or an enqueue is finishing (it wakes us) */
    if (c->final_sent)
        return EVS_ECLOSED;
    n = snprintf(small, sizeof small, "event: disconnect\ndata: %s\n\n", reasons[st]);
    if ((rc = put_small(buf, cap, small, (size_t)n, len)) == 0)
        c->final_sent = true;
    return rc;
}

/* ------------------------------------------------------------------ */
/* Push mode                                                           */

/* Take the client's push turn; `try`: give up at once if it is taken.
 * False when the client is being torn down. */
static bool push_begin(evs_sse_client *c, bool try)
{
    for (;;) {
        if (evs_load(&c->dying))
            return false;
        if (evs_load(&c->busy) == 0 && ck_pr_cas_uint(&c->busy, 0, 1))
            return true;
        if (try)
            return false;
        evs__cpu_relax(); /* another thread's push for this client is short */
    }
}

static void push_end(evs_sse_client *c) { evs_store_release(&c->busy, 0); }

/* Push one frame (holding busy). A non-zero return closes the client.
 * `closing`: the client was closed by the layer as a slow consumer and
 * this is what was queued before that, or its final frame; returns
 * false when the callback refused it (nothing more is pushed). */
static bool push_frame_as(evs_sse_client *c, const char *frame, size_t len, bool closing)
{
    if (!closing && evs_load(&c->state) != OPEN)
        return false;
    evs_sse_client *outer = tl_push;
    tl_push = c;
    int r = c->push(frame, len, c->push_user);
    tl_push = outer;
    if (r != 0) {
        close_client(c, R_PUSH);
        return false;
    }
    evs_store(&c->frames, evs_load(&c->frames) + 1);
    ck_pr_inc_64(&c->sse->frames);
    return true;
}

static void push_frame(evs_sse_client *c, const char *frame, size_t len)
{
    (void)push_frame_as(c, frame, len, false);
}

/*
 * Push every frame next_frame has ready (the connecting thread, holding
 * busy: the hand-off). A client the layer closed as a slow consumer
 * meanwhile (its mailbox overflowed) gets what was queued and then its
 * final frame, pushed here: nothing else would ever push it, and a web
 * layer waiting for it would hold the connection forever. Such a client
 * ends with final_sent set. A client closed by evs_sse_close or by its
 * own push callback gets nothing more (the header's contract).
 */
static void pump(evs_sse_client *c)
{
    char stack[PUSH_STACK];
    while (!c->final_sent) {
        unsigned st = evs_load_acquire(&c->state);
        if (st != OPEN && st != R_SLOW)
            return;
        size_t len;
        char *big = NULL;
        int r = next_frame(c, stack, sizeof stack, &len);
        if (r == EVS_ETOOBIG) {
            big = evs__malloc(len);
            r = big == NULL ? EVS_ENOMEM : next_frame(c, big, len, &len);
        }
        if (r == EVS_ENOMEM) {
            evs__free(big);
            drop_next(c);
            continue;
        }
        if (r == NF_NONE && st == R_SLOW) {
            evs__cpu_relax(); /* an enqueue claimed before the close is finishing */
            continue;
        }
        if (r != 0) {
            evs__free(big);
            return;
        }
        bool ok = push_frame_as(c, big != NULL ? big : stack, len, st == R_SLOW);
        evs__free(big);
        if (!ok && st == R_SLOW)
            c->final_sent = true; /* refused: push nothing more */
    }
}

/* A live event for a push client, on the enqueuing thread. */
static void push_event(evs_sse_client *c, const evs_event *ev)
{
    if (evs_unlikely(evs_load_acquire(&c->replaying))) {
        pthread_mutex_lock(&c->sse->handoff);
        if (evs_load(&c->replaying)) {
            mailbox_put(c, ev); /* behind the replay; the connecting thread pushes it */
            pthread_mutex_unlock(&c->sse->handoff);
            return;
        }
        pthread_mutex_unlock(&c->sse->handoff);
    }
    if (!push_begin(c, false))
        return;
    char stack[PUSH_STACK], *big = NULL;
    size_t len;
    int rc = encode_item(ev, stack, sizeof stack, &len);
    if (rc == EVS_ETOOBIG) {
        big = evs__malloc(len);
        rc = big == NULL ? EVS_ENOMEM : encode_item(ev, big, len, &len);
    }
    if (rc == 0) {
        push_frame(c, big != NULL ? big : stack, len);
    } else {
        char small[64];
        lose(c, 1);
        int n = snprintf(small, sizeof small, ": skipped %" PRIu64 " events\n\n",
                         evs_xchg(&c->skipped_pending, 0));
        push_frame(c, small, (size_t)n);
    }
    evs__free(big);
    push_end(c);
    ck_ec32_inc(&c->ec, &evs__ec_mp); /* activity, for the heartbeat */
}

/* Connect's hand-off: push the replay and whatever queued behind it,
 * then let handlers push directly. */
static void push_handoff(evs_sse_client *c)
{
    evs_sse *sse = c->sse;
    for (;;) {
        if (push_begin(c, false)) {
            pump(c);
            push_end(c);
        }
        pthread_mutex_lock(&sse->handoff);
        /* A slow close (a handler's, under this mutex) is done only once
         * pump has pushed the final frame. */
        unsigned st = evs_load(&c->state);
        bool done = (st != OPEN && (st != R_SLOW || c->final_sent)) ||
                    (st == OPEN && mailbox_empty(c) && evs_load(&c->skipped_pending) == 0);
        if (done)
            evs_store_release(&c->replaying, 0);
        pthread_mutex_unlock(&sse->handoff);
        if (done)
            return;
    }
}

/* ------------------------------------------------------------------ */
/* Handlers and heartbeats                                             */

/* Does a pattern before `idx` match `topic`? Then its subscription
 * delivers the event, and pattern idx must not. */
static bool shadowed(const evs_sse_client *c, size_t idx, const char *topic)
{
    size_t tl = strlen(topic);
    for (size_t j = 0; j < idx; j++) {
        const char *p = evs_sub_pattern(c->pats[j].sub);
        if (evs__subject_matches(topic, tl, p, strlen(p)))
            return true;
    }
    return false;
}

static int on_event(const evs_event *ev, void *user)
{
    struct sse_pat *p = user;
    evs_sse_client *c = p->c;
    size_t idx = (size_t)(p - c->pats);
    if (evs_unlikely(evs_load(&p->first) == 0))
        evs_store(&p->first, evs_event_id(ev));
    if (evs_unlikely(evs_load(&c->state) != OPEN))
        return 0;
    bool beat = is_stream_heartbeat(ev);
    /* A stream heartbeat reaches every pattern: the first one sends it. */
    if (idx > 0 && (beat || shadowed(c, idx, evs_event_topic(ev))))
        return 0;
    if (c->push != NULL)
        push_event(c, beat ? HB_MARK : ev);
    else
        mailbox_put(c, beat ? HB_MARK : ev);
    return 0;
}

/*
 * The client's timer: if nothing was queued or pushed since the last
 * look, the client has been idle for at least an interval: send a
 * heartbeat without waiting (a full mailbox or a busy push means it is
 * not idle).
 */
static int64_t hb_fire(void *user, int64_t now)
{
    (void)now;
    evs_sse_client *c = user;
    uint32_t v = ck_ec32_value(&c->ec);
    if (v != c->hb_seen || evs_load(&c->state) != OPEN) {
        c->hb_seen = v;
        return -1;
    }
    bool sent = false;
    if (c->push != NULL) {
        if (!evs_load_acquire(&c->replaying) && push_begin(c, true)) {
            push_frame(c, HB_FRAME, sizeof HB_FRAME - 1);
            push_end(c);
            sent = evs_load(&c->state) == OPEN;
        }
    } else {
        uint64_t pos;
        if (evs__ring_claim(&c->mb, &pos) == 0) {
            evs__ring_publish(&c->mb, pos, HB_MARK);
            wake_reader(c);
            sent = true;
        }
    }
    if (sent) {
        evs_store(&c->heartbeats, evs_load(&c->heartbeats) + 1);
        ck_pr_inc_64(&c->sse->heartbeats);
    }
    c->hb_seen = ck_ec32_value(&c->ec);
    return -1;
}

/* ------------------------------------------------------------------ */
/* Connect and disconnect                                              */

/* Last-Event-ID: 1..20 decimal digits, at most UINT64_MAX. */
static int parse_id(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    for (const char *p = s; *p != '\0'; p++) {
        if (*p < '0' || *p > '9')
            return EVS_EINVAL;
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return EVS_EINVAL;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

/* The index of the first pattern `ev` matches, or -1. */
static int first_match(const evs_sse_client *c, const evs_event *ev)
{
    if (!c->sse->topics)
        return 0;
    const char *t = evs_event_topic(ev);
    size_t tl = strlen(t);
    for (uint32_t j = 0; j < c->npats; j++) {
        const char *p = evs_sub_pattern(c->pats[j].sub);
        if (evs__subject_matches(t, tl, p, strlen(p)))
            return (int)j;
    }
    return -1;
}

/*
 * Resume after id `last`. A subscription is guaranteed only the events
 * accepted after evs_subscribe returned; one whose publish overlapped it
 * may or may not come. But the dispatcher serves a subscription in id
 * order, and from the first event it delivers on it delivers every later
 * match: so once the stream has delivered everything accepted before the
 * flush below (issued = the ids handed out before it, all after the
 * subscribes returned), pattern j's live events are exactly its matches
 * from pats[j].first on (or after `issued`, if none came yet), and those
 * earlier are in the history. Keep, in order, each event after `last`
 * below that bound for the first pattern it matches: exactly what the
 * client missed, none that also comes live, and all of them before
 * every live one. Missing ids in (last, issued] older than the history
 * make the gap.
 */
static int merge_live(evs_sse_client *c);

static int build_replay(evs_sse_client *c, uint64_t last)
{
    evs_sse *sse = c->sse;
    uint64_t issued = evs__stream_ids_issued(sse->stream);
    int rc = evs_stream_flush(sse->stream, EVS_FOREVER, NULL);
    if (rc != 0)
        return rc;
    if (last > issued && sse->opts.reset_future_ids) {
        /* Not an id of this stream (another instance's, before a
         * restart): everything here is new to the client. */
        c->reset_pending = true;
        c->reset_issued = issued;
        last = 0;
    }
    const evs_event **h = NULL;
    int n = 0;
    if (sse->hist_cap > 0) {
        if ((h = evs__calloc(sse->hist_cap, sizeof(*h))) == NULL)
            return EVS_ENOMEM;
        n = evs_stream_recent(sse->stream, h, sse->hist_cap);
    }
    uint64_t oldest = UINT64_MAX;
    for (int i = 0; i < n; i++) {
        uint64_t id = evs_event_id(h[i]);
        oldest = id < oldest ? id : oldest;
    }
    uint32_t k = 0;
    for (int i = 0; i < n; i++) {
        const evs_event *ev = h[i];
        uint64_t id = evs_event_id(ev);
        int j = id > last && !is_stream_heartbeat(ev) ? first_match(c, ev) : -1;
        uint64_t live = j >= 0 ? evs_load(&c->pats[j].first) : 0;
        if (j >= 0 && (live != 0 ? id < live : id <= issued))
            h[k++] = ev;
        else
            evs_event_unref(ev);
    }
    uint64_t missing = oldest == UINT64_MAX ? issued : (oldest - 1 < issued ? oldest - 1 : issued);
    if (last < UINT64_MAX && last + 1 <= missing) {
        c->gap_first = last + 1;
        c->gap_last = missing;
    }
    c->replay = h;
    c->replay_n = k;
    c->replayed = k;
    if (k == 0) {
        free_replay(c);
        return 0;
    }
    return merge_live(c);
}

/*
 * Patterns start at different points: pattern 0 may already deliver
 * live events older than a replayed match of pattern 1. Everything live
 * so far is in the mailbox (nobody reads it before connect returns), and
 * whatever is queued after this was delivered after the flush, so it is
 * newer than every replayed event: merging what the mailbox holds now
 * into the replay, by id, puts every frame in order.
 */
static int merge_live(evs_sse_client *c)
{
    size_t cap = (size_t)c->mb.size;
    const evs_event **m = evs__malloc(cap * sizeof(*m));
    const evs_event **h = m == NULL ? NULL
                                    : evs__realloc(c->replay, (c->replay_n + cap) * sizeof(*h));
    if (h == NULL) {
        evs__free(m);
        return EVS_ENOMEM;
    }
    c->replay = h;
    size_t nm = 0;
    const evs_event *it;
    uint64_t first;
    while (nm < cap && evs__ring_take(&c->mb, &it, 1, &first) == 1)
        if (it != HB_MARK) /* a keep-alive before the first frame: moot */
            m[nm++] = it;
    size_t i = c->replay_n, j = nm, w = c->replay_n + nm;
    while (j > 0) {
        if (i > 0 && evs_event_id(h[i - 1]) > evs_event_id(m[j - 1]))
            h[--w] = h[--i];
        else
            h[--w] = m[--j];
    }
    c->replay_n += (uint32_t)nm;
    evs__free(m);
    return 0;
}

/*
 * End everything of a client that is no longer (or never was) in the
 * layer's list, and free it. Readers inside evs_sse_read return
 * EVS_ECLOSED.
 */
static void client_teardown(evs_sse_client *c)
{
    /* dying before the wake-up: a reader reads ec, then dying, so it
     * either sees dying or sleeps on a value this increment changes. */
    evs_store(&c->dying, 1);
    evs__ring_close(&c->mb);
    ck_pr_fence_memory();
    ck_ec32_inc(&c->ec, &evs__ec_mp);
    /* Each waits for a call in progress: no handler, heartbeat or push
     * of this client runs after these. Last pattern first: the handler of
     * pattern i reads the subscriptions of patterns 0..i-1 (shadowed), so
     * each must outlive every later one's handler; first to last freed
     * pattern 0 while pattern 1's handler could still read it. */
    for (uint32_t i = c->npats; i-- > 0;)
        evs_unsubscribe(c->pats[i].sub);
    if (c->hb != NULL)
        evs__hb_remove(c->hb);
    /* The Dekker pair of evs_sse_read's increment of readers (a locked
     * add) and its load of dying: our fence above orders dying before
     * this load. Acquire: a reader's last touches happen before we free. */
    for (unsigned round = 0; evs_load_acquire(&c->readers) != 0; round++)
        evs__backoff(round);
    const evs_event *it;
    uint64_t first;
    while (evs__ring_take(&c->mb, &it, 1, &first) == 1)
        if (it != HB_MARK)
            evs_event_unref(it);
    if (c->carry != NULL && c->carry != HB_MARK)
        evs_event_unref(c->carry);
    free_replay(c);
    if (c->fd >= 0)
        close(c->fd);
    evs__ring_fini(&c->mb);
    evs__free(c);
}

int evs_sse_connect(evs_sse_client **out, evs_sse *sse, const evs_sse_client_opts *opts)
{
    if (out == NULL)
        return EVS_EINVAL;
    *out = NULL;
    if (sse == NULL)
        return EVS_EINVAL;
    evs_sse_client_opts o = {0};
    if (opts != NULL)
        o = *opts;
    if (o.npatterns > EVS_SSE_MAX_PATTERNS || (o.patterns == NULL && o.npatterns > 0))
        return EVS_EINVAL;
    for (size_t i = 0; i < o.npatterns; i++)
        if (o.patterns[i] == NULL ||
            (sse->topics && evs__pattern_validate(o.patterns[i], strlen(o.patterns[i])) != 0))
            return EVS_EINVAL;
    uint64_t last = 0;
    bool resume = o.last_event_id != NULL && o.last_event_id[0] != '\0';
    if (resume && parse_id(o.last_event_id, &last) != 0)
        return EVS_EINVAL;
    if (evs_load(&sse->closed))
        return EVS_ECLOSED;

    /* The distinct patterns (a repeat would only ever be shadowed); a
     * stream without topics matches none, so one subscription takes
     * everything. */
    const char *pats[EVS_SSE_MAX_PATTERNS];
    size_t np = 0;
    if (!sse->topics || o.npatterns == 0)
        pats[np++] = NULL;
    for (size_t i = 0; sse->topics && i < o.npatterns; i++) {
        bool dup = false;
        for (size_t j = 0; j < np && !dup; j++)
            dup = strcmp(pats[j], o.patterns[i]) == 0;
        if (!dup)
            pats[np++] = o.patterns[i];
    }

    size_t size = sizeof(evs_sse_client) + np * sizeof(struct sse_pat);
    evs_sse_client *c = evs__aligned_alloc(size);
    if (c == NULL)
        return EVS_ENOMEM;
    memset(c, 0, size);
    int rc = evs__ring_init(&c->mb, sse->opts.mailbox, false);
    if (rc != 0) {
        evs__free(c);
        return rc;
    }
    c->sse = sse;
    c->fd = -1;
    ck_ec32_init(&c->ec, 0);
    c->push = o.push;
    c->push_user = o.push_user;
    c->replaying = o.push != NULL; /* push clients hand off at the end */
    c->retry_pending = sse->opts.retry_ms > 0;

    for (size_t i = 0; i < np; i++) {
        c->pats[i].c = c;
        rc = evs_subscribe(&c->pats[i].sub, sse->stream, pats[i], on_event, NULL, &c->pats[i],
                           NULL);
        if (rc != 0)
            goto fail;
        c->npats++;
    }
    if (resume && (rc = build_replay(c, last)) != 0)
        goto fail;
    if (sse->opts.heartbeat_ms > 0) {
        c->hb_seen = ck_ec32_value(&c->ec);
        rc = evs__hb_add(&c->hb, (int64_t)sse->opts.heartbeat_ms * 1000000, hb_fire, c);
        if (rc != 0)
            goto fail;
    }
    pthread_mutex_lock(&sse->lock);
    if (sse->closed) {
        pthread_mutex_unlock(&sse->lock);
        rc = EVS_ECLOSED;
        goto fail;
    }
    c->next = sse->clients;
    if (sse->clients != NULL)
        sse->clients->prev = c;
    sse->clients = c;
    sse->nclients++;
    pthread_mutex_unlock(&sse->lock);

    ck_pr_inc_64(&sse->connects);
    ck_pr_add_64(&sse->replayed, c->replayed);
    if (c->gap_first != 0)
        ck_pr_inc_64(&sse->gaps);
    if (c->push != NULL)
        push_handoff(c);
    *out = c;
    return 0;

fail:
    client_teardown(c);
    return rc;
}

int evs_sse_disconnect(evs_sse_client *c)
{
    if (c == NULL)
        return 0;
    if (tl_push == c)
        return EVS_EDEADLK;
    evs_sse *sse = c->sse;
    pthread_mutex_lock(&sse->lock);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        sse->clients = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    sse->nclients--;
    pthread_mutex_unlock(&sse->lock);
    client_teardown(c);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Reading                                                             */

/* The reader found nothing pending: reset the eventfd. Reset the
 * counter before clearing `signaled`, so that an enqueuer that sets it
 * again writes after our read; then look once more (the fence pairs
 * with the enqueuer's, see wake_reader). */
static void fd_settle(evs_sse_client *c)
{
    int fd = evs_load(&c->fd);
    if (fd < 0 || evs_load(&c->signaled) == 0 || !nothing_pending(c))
        return;
    uint64_t v;
    ssize_t r = read(fd, &v, sizeof v); /* EAGAIN when already 0 */
    (void)r;
    evs_xchg(&c->signaled, 0);
    ck_pr_fence_memory();
    if (!nothing_pending(c))
        signal_fd(c, fd);
}

int evs_sse_read(evs_sse_client *c, char *buf, size_t cap, int timeout_ms)
{
    if (c == NULL || (buf == NULL && cap > 0) || c->push != NULL || timeout_ms < EVS_FOREVER)
        return EVS_EINVAL;
    if (cap > INT_MAX)
        cap = INT_MAX;
    ck_pr_inc_uint(&c->readers); /* a full barrier before we look at dying */
    int64_t deadline = timeout_ms > 0 ? evs__deadline_after_ms(timeout_ms) : -1;
    bool timed_out = false;
    size_t off = 0;
    uint64_t frames = 0;
    int rc;
    for (;;) {
        uint32_t seen = ck_ec32_value(&c->ec);
        ck_pr_fence_load();
        if (evs_load(&c->dying)) {
            rc = EVS_ECLOSED;
            break;
        }
        size_t len;
        int r;
        while ((r = next_frame(c, buf != NULL ? buf + off : NULL, cap - off, &len)) == 0) {
            off += len;
            frames++;
        }
        if (off > 0) {
            rc = (int)off;
            break;
        }
        if (r == EVS_ETOOBIG)
            c->need = len;
        if (r != NF_NONE) {
            rc = r;
            break;
        }
        if (timeout_ms == 0 || timed_out) {
            rc = 0;
            break;
        }
        if (evs__ec_wait(&c->ec, seen, deadline) == EVS_ETIMEDOUT)
            timed_out = true; /* look once more, then report the timeout */
    }
    if (frames > 0) {
        c->need = 0;
        evs_store(&c->frames, evs_load(&c->frames) + frames);
        ck_pr_add_64(&c->sse->frames, frames);
    }
    fd_settle(c);
    __atomic_fetch_sub(&c->readers, 1, __ATOMIC_RELEASE);
    return rc;
}

size_t evs_sse_next_size(const evs_sse_client *c) { return c != NULL ? c->need : 0; }

unsigned evs__sse_readers(const evs_sse_client *c) { return evs_load_acquire(&c->readers); }

int evs_sse_fd(evs_sse_client *c)
{
    if (c == NULL || c->push != NULL)
        return EVS_EINVAL;
    int fd = evs_load(&c->fd);
    if (fd >= 0)
        return fd;
    fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd < 0)
        return EVS_ESYSTEM;
    /* Publish the fd, then look: an enqueuer that missed it (loaded -1
     * after its slot store) left an entry we see now. */
    evs_store_release(&c->fd, fd);
    ck_pr_fence_memory();
    if (!nothing_pending(c))
        signal_fd(c, fd);
    return fd;
}

/* ------------------------------------------------------------------ */
/* The layer                                                           */

int evs_sse_create(evs_sse **out, evs_stream *s, const evs_sse_stream_opts *opts)
{
    if (out == NULL)
        return EVS_EINVAL;
    *out = NULL;
    evs_sse_stream_opts o = {0};
    if (opts != NULL)
        o = *opts;
    if (o.mailbox == 0)
        o.mailbox = DEFAULT_MAILBOX;
    if (o.heartbeat_ms == 0)
        o.heartbeat_ms = EVS_SSE_HEARTBEAT_DEFAULT_MS;
    else if (o.heartbeat_ms == EVS_SSE_NO_HEARTBEAT)
        o.heartbeat_ms = 0;
    else if (o.heartbeat_ms < 0)
        return EVS_EINVAL;
    if (s == NULL || (unsigned)o.slow > EVS_SSE_SLOW_DROP_OLDEST || o.mailbox < 2 ||
        o.mailbox > MAX_MAILBOX || (o.mailbox & (o.mailbox - 1)) != 0 || o.retry_ms < 0)
        return EVS_EINVAL;
    evs_sse *sse = evs__calloc(1, sizeof(*sse));
    if (sse == NULL)
        return EVS_ENOMEM;
    if (pthread_mutex_init(&sse->lock, NULL) != 0) {
        evs__free(sse);
        return EVS_ESYSTEM;
    }
    if (pthread_mutex_init(&sse->handoff, NULL) != 0) {
        pthread_mutex_destroy(&sse->lock);
        evs__free(sse);
        return EVS_ESYSTEM;
    }
    sse->stream = s;
    sse->opts = o;
    sse->topics = evs__stream_has_topics(s);
    sse->hist_cap = evs__stream_history_cap(s);
    *out = sse;
    return 0;
}

int evs_sse_close(evs_sse *sse)
{
    if (sse == NULL)
        return EVS_EINVAL;
    pthread_mutex_lock(&sse->lock);
    evs_store(&sse->closed, 1);
    for (evs_sse_client *c = sse->clients; c != NULL; c = c->next)
        close_client(c, R_SHUTDOWN);
    pthread_mutex_unlock(&sse->lock);
    return 0;
}

int evs_sse_destroy(evs_sse *sse)
{
    if (sse == NULL)
        return 0;
    if (tl_push != NULL && tl_push->sse == sse)
        return EVS_EDEADLK;
    /* Not evs_sse_close: a read in progress returns EVS_ECLOSED, not a
     * final frame nobody will send on. */
    pthread_mutex_lock(&sse->lock);
    evs_store(&sse->closed, 1);
    evs_sse_client *c = sse->clients;
    sse->clients = NULL;
    sse->nclients = 0;
    pthread_mutex_unlock(&sse->lock);
    while (c != NULL) {
        evs_sse_client *next = c->next;
        client_teardown(c);
        c = next;
    }
    pthread_mutex_destroy(&sse->lock);
    pthread_mutex_destroy(&sse->handoff);
    evs__free(sse);
    return 0;
}

int evs_sse_stats_get(evs_sse *sse, evs_sse_stats *out)
{
    if (sse == NULL || out == NULL)
        return EVS_EINVAL;
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&sse->lock);
    out->clients = sse->nclients;
    pthread_mutex_unlock(&sse->lock);
    out->connects = evs_load(&sse->connects);
    out->disconnected_slow = evs_load(&sse->disconnected_slow);
    out->skipped = evs_load(&sse->skipped);
    out->replayed = evs_load(&sse->replayed);
    out->gaps = evs_load(&sse->gaps);
    out->heartbeats = evs_load(&sse->heartbeats);
    out->frames = evs_load(&sse->frames);
    return 0;
}

int evs_sse_client_stats_get(const evs_sse_client *cc, evs_sse_client_stats *out)
{
    evs_sse_client *c = (evs_sse_client *)cc;
    if (c == NULL || out == NULL)
        return EVS_EINVAL;
    memset(out, 0, sizeof(*out));
    out->frames = evs_load(&c->frames);
    out->skipped = evs_load(&c->skipped);
    out->replayed = evs_load(&c->replayed);
    out->heartbeats = evs_load(&c->heartbeats);
    uint64_t claimed = evs__ring_claimed(&c->mb), head = evs_load_acquire(&c->mb.head);
    out->queued = claimed > head ? claimed - head : 0;
    out->close_reason = reasons[evs_load_acquire(&c->state)];
    return 0;
}
