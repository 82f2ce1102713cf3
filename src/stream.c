/*
 * InMemoryStream: publish puts an event on the stream's sequenced ring
 * (ring.h) and returns; one dispatcher thread takes runs of events off
 * the ring and calls every subscription's filter and handler on them, in
 * id order. In inline mode there is no ring or thread: publish numbers
 * the event and calls the handlers itself.
 *
 * Threads and data:
 *   - Publishers (any threads) touch the ring's claim side, the event
 *     counts and the overflow counters, all lock-free.
 *   - The dispatcher owns the consume side, the delivery counters it
 *     adds per run, `done`, and the history it appends under hist_lock.
 *   - Subscribers change the subscription set under sub_lock by building
 *     a new immutable array and publishing its pointer; readers (the
 *     dispatcher, inline publishers) read the array inside an epoch
 *     section, and replaced arrays and ended subscriptions are retired
 *     through the epoch (epoch.h), so no reader ever holds freed memory.
 *   - A subscription's handler is called only while its `active` count
 *     is raised and its `dead` flag was seen clear after raising it;
 *     evs_unsubscribe sets `dead` and then waits for `active` to drop.
 *     Both sides order their store before their load (a Dekker
 *     handshake: the dispatcher with a compiler barrier, unsubscribe
 *     with membarrier(2), or full fences on both where the kernel lacks
 *     it), so either the caller sees `dead` or unsubscribe sees the call
 *     in progress and waits for it.
 *   - TopicStreams route each event through router.c; heartbeats come
 *     from heartbeat.c's thread; slot storage keeps events in the ring.
 *
 * No evstream lock is held while user code runs.
 */
#include "evs_internal.h"

#include <pthread.h>
#include <sched.h>

#include "epoch.h"
#include "event.h"
#include "heartbeat.h"
#include "metrics.h"
#include "ring.h"
#include "router.h"
#include "stream.h"
#include "subject.h"
#include "wait.h"
#include "workers.h"

/* Most events the dispatcher takes per run: bounds its stack buffer and
 * how long a just-ended subscription may wait for the run to finish. */
#define RUN_MAX 256
/* How long an idle dispatcher spins before it yields or parks: a few
 * times what waking a parked thread costs (~30 us on a busy VM), so a
 * stream with events arriving faster than that never pays for a wake-up,
 * and an idle one parks within a fraction of a millisecond. */
#define IDLE_SPIN_NS 200000
/* Spins between looks at the clock and the stop flag. */
#define SPIN_CHECK 256

#define DEFAULT_CAPACITY 4096
#define DEFAULT_HISTORY 1000

struct evs_sub {
    evs_stream    *stream;
    evs_handler_fn handler;
    evs_filter_fn  filter;
    void          *user;
    char          *pattern;
    size_t         plen;
    /* Deliver only events with a larger id: the ids handed out before
     * the subscription became visible. Read-only after subscribe. */
    uint64_t start_id;
    /* Events accepted after this subscription became live, matching its
     * pattern, that it will never see: dropped as newest or evicted as
     * oldest (count_sub_drops, ck_pr RMW from publishers). */
    uint64_t dropped;
    /* TopicStream, wildcard-free pattern: its topic-table entry. */
    evs_topic *topic;
    /* Set once by evs_unsubscribe; never cleared. */
    unsigned dead;
    /* Handler calls in progress (dispatcher runs, inline publishers).
     * Invariant: raised before `dead` is read (sub_enter), so
     * unsubscribe, which stores `dead` and then reads this, waits for
     * every call that did not see `dead`. */
    unsigned active;
    /* Counters: added by whoever delivered (ck_pr RMW), read by stats. */
    uint64_t delivered, filtered, errors, hwm;
    /* opts.metrics: handler times and the throughput window; NULL
     * otherwise. Set before the subscription is visible, freed with it. */
    struct sub_metrics *metrics;
    /* evs_sub_opts.max_concurrent > 0: the worker pool (workers.c) whose
     * wrappers are `handler`, `filter` and `user`; NULL otherwise. Set
     * before the subscription is visible; released by free_sub. A pooled
     * handler always returns 0, so `errors` is then only added to by
     * evs__sub_handler_error (atomically), never by deliver_run. */
    struct evs__workers *pool;
    ck_epoch_entry_t epoch_entry;
};

struct sub_metrics {
    evs__hist htime;
    evs__rate rate;
};

/* The immutable subscription set readers see. */
struct sub_array {
    size_t           n;
    ck_epoch_entry_t epoch_entry;
    evs_sub         *subs[];
};

struct evs_stream {
    /* Read-only after create; every publisher reads these, so nothing
     * that changes shares their cache line. */
    evs_stream_opts opts EVS_ALIGNED;
    size_t hist_cap; /* 0: no history */
    /* membarrier(2) is available: the handshakes whose one side runs
     * once per run or per publish use asymmetric fences (wait.h), the
     * rare side paying for a heavy fence. */
    bool asym;
    /* Single publisher and asym: the parking handshake is asymmetric. */
    bool heavy_fence;
    /* Slot storage (opts.slot_bytes > 0): slot_mem holds `capacity`
     * events of slot_stride bytes, slot i for positions = i (mod
     * capacity); the dispatcher releases a run's slots only after it has
     * been delivered (ring.h, evs__ring_take_deferred). */
    unsigned char *slot_mem;
    size_t slot_stride;
    /* TopicStream (opts.topics): routes events by subject. */
    evs_router *router;

    /* Heartbeats (opts.heartbeat_ms). hb_seen and hb_checked belong to
     * the heartbeat callback (one at a time on the service thread);
     * hb_idle_since is the service-clock time the dispatcher last went
     * idle, written by the dispatcher. */
    evs__hb_timer *hb;
    int64_t hb_interval;
    uint64_t hb_seen;
    int64_t hb_checked;
    int64_t hb_idle_since;
    uint64_t heartbeats;

    struct evs_ring ring; /* dispatcher mode only */

    /* Parking. The dispatcher sets `parked` (then a full fence) before it
     * re-checks the ring and sleeps on pub_ec; a publisher reads `parked`
     * after its claim CAS (a full barrier) and, if set, increments pub_ec
     * once its slot is published. Either the dispatcher sees the claim or
     * the publisher sees the flag (SPEC.md, "Threads"), so a busy stream
     * touches neither field per event. Close and destroy always
     * increment pub_ec. */
    unsigned parked EVS_ALIGNED;
    struct ck_ec32 pub_ec;
    /* Threads about to wait on run_ec (blocked publishers, flush,
     * close). With asym, the dispatcher bumps run_ec only while this is
     * non-zero: a waiter increments it and then issues a heavy fence
     * before its last look, the dispatcher reads it after storing its
     * progress. */
    unsigned run_waiters;
    /* The dispatcher increments after each run (room freed, events
     * delivered); blocked publishers and flush/close wait on it. */
    struct ck_ec32 run_ec EVS_ALIGNED;
    /* Every position below `done` has been delivered (or skipped as
     * evicted or a hole). Written by the dispatcher, read by waiters. */
    uint64_t done;

    /* Overflow and loss counters (publishers, ck_pr RMW). */
    uint64_t dropped_newest EVS_ALIGNED, dropped_oldest, rejected_full,
        timed_out, dropped_nomem;
    /* Delivery counters (dispatcher per run / inline publishers). */
    uint64_t delivered EVS_ALIGNED, filtered, handler_errors, queue_hwm, unroutable;

    /* Subscription writers; readers use `subs` through the epoch. */
    pthread_mutex_t sub_lock EVS_ALIGNED;
    struct sub_array *subs;

    /* History ring of hist_cap references, oldest at hist_start. In
     * inline mode it also serialises numbering (inline_seq). */
    pthread_mutex_t hist_lock EVS_ALIGNED;
    const evs_event **hist;
    size_t hist_start, hist_len;
    uint64_t inline_seq;  /* inline: last id handed out (hist_lock) */
    unsigned inline_closed; /* inline: set by close (under hist_lock) */
    unsigned inline_active; /* inline: publishes delivering right now */
    /* Inline: the publishes delivering right now, oldest id first (each
     * publish links its own stack node under hist_lock when it takes its
     * id, and unlinks it when delivery ends). Every id below the first
     * node's, or up to inline_seq when the list is empty, has been
     * delivered: flush and close wait on this, not on quiet moments. */
    struct inline_pub *inflight_head, *inflight_tail;

    pthread_t thread;
    bool has_thread;
    unsigned stop; /* tells the dispatcher to exit once drained */
    ck_epoch_record_t *dispatcher_record;

    /* Metrics: handler times (opts.metrics, else NULL; written by
     * whoever calls handlers) and the stream's throughput window (only
     * stats readers touch it). */
    evs__hist *htime;
    evs__rate rate;
    int64_t rate_interval_ns;

    /* Pooled subscriptions (workers.c). pools_live counts pools whose
     * last worker has not exited (ck_pr: evs_subscribe adds one,
     * evs__stream_pool_done takes it back); destroy waits for zero, and
     * flush and close skip looking for pools while it is zero.
     * worker_errors counts the handler errors pools report (ck_pr, from
     * workers and delivering threads), kept apart from handler_errors,
     * which the dispatcher adds to with plain stores. */
    unsigned pools_live;
    uint64_t worker_errors;
};

/* One inline publish in delivery (see evs_stream.inflight_head). */
struct inline_pub {
    uint64_t id;
    struct inline_pub *prev, *next;
};

/* The stream whose handler this thread is running (or whose dispatcher
 * this thread is): used to refuse waits that would wait for the calling
 * thread itself. */
static _Thread_local evs_stream *tl_stream;

/* The handler calls this thread is inside, innermost first (a handler
 * may publish to an inline stream, which calls handlers again). Each
 * frame lives on deliver_run's stack. evs_unsubscribe counts the frames
 * of its subscription to know how many of the calls in progress are its
 * own caller's, which it must not wait for. */
struct sub_frame {
    const evs_sub *sub;
    const struct sub_frame *up;
};
static _Thread_local const struct sub_frame *tl_frames;

/* Calls of `sub` in progress on this thread. */
static unsigned own_calls(const evs_sub *sub)
{
    unsigned n = 0;
    for (const struct sub_frame *f = tl_frames; f != NULL; f = f->up)
        n += f->sub == sub;
    return n;
}

/* Is this thread running a handler of `s`: its dispatcher, an inline
 * publisher delivering, or a worker of one of its pooled subscriptions?
 * Such a thread must not wait for the stream to deliver. */
static bool in_handler_of(evs_stream *s)
{
    return tl_stream == s || evs__workers_current_stream() == s;
}

static uint64_t ids_issued(evs_stream *s);

static bool is_inline(const evs_stream *s)
{
    return s->opts.delivery == EVS_DELIVERY_INLINE;
}

/* ------------------------------------------------------------------ */
/* History                                                             */

/* Append refs already owned by the caller, under hist_lock; the refs
 * it evicts go to evicted[] (room for n) for the caller to drop after
 * unlocking. Returns how many. */
static size_t history_push_locked(evs_stream *s, const evs_event **evs, size_t n,
                                  const evs_event **evicted)
{
    size_t ne = 0;
    for (size_t i = 0; i < n; i++) {
        if (evs[i] == NULL)
            continue;
        if (s->hist_len == s->hist_cap) {
            evicted[ne++] = s->hist[s->hist_start];
            s->hist_start = (s->hist_start + 1) % s->hist_cap;
            s->hist_len--;
        }
        s->hist[(s->hist_start + s->hist_len) % s->hist_cap] = evs[i];
        s->hist_len++;
    }
    return ne;
}

/* Append refs already owned by the caller; evicted ones are unreffed
 * after the lock is dropped. */
static void history_push(evs_stream *s, const evs_event **evs, size_t n)
{
    const evs_event *evicted[RUN_MAX];
    pthread_mutex_lock(&s->hist_lock);
    size_t ne = history_push_locked(s, evs, n, evicted);
    pthread_mutex_unlock(&s->hist_lock);
    for (size_t i = 0; i < ne; i++)
        evs_event_unref(evicted[i]);
}

int evs_stream_recent(evs_stream *s, const evs_event **out, size_t max)
{
    if (s == NULL || (out == NULL && max > 0))
        return EVS_EINVAL;
    if (s->hist_cap == 0)
        return 0;
    pthread_mutex_lock(&s->hist_lock);
    size_t n = s->hist_len < max ? s->hist_len : max;
    size_t skip = s->hist_len - n;
    for (size_t i = 0; i < n; i++)
        out[i] = evs_event_ref(s->hist[(s->hist_start + skip + i) % s->hist_cap]);
    pthread_mutex_unlock(&s->hist_lock);
    return n > INT32_MAX ? INT32_MAX : (int)n;
}

/* ------------------------------------------------------------------ */
/* Delivery                                                            */

/*
 * Raise sub->active and confirm the subscription is live: one side of
 * the Dekker handshake with evs_unsubscribe (store active, barrier, load
 * dead). On a dispatcher stream only the dispatcher writes `active`: a
 * plain store, and with asym a compiler barrier, because unsubscribe
 * issues the heavy fence. Inline publishers share `active`, so there it
 * is a locked increment (itself a full barrier).
 */
static bool sub_enter(evs_stream *s, evs_sub *sub)
{
    if (is_inline(s)) {
        ck_pr_inc_uint(&sub->active);
    } else {
        evs_store(&sub->active, 1);
        if (s->asym)
            ck_pr_barrier();
        else
            ck_pr_fence_memory();
    }
    if (evs_load(&sub->dead)) {
        if (is_inline(s))
            ck_pr_dec_uint(&sub->active);
        else
            evs_store_release(&sub->active, 0);
        return false;
    }
    return true;
}

/* Release: the handler's writes happen before unsubscribe sees zero. */
static void sub_leave(evs_stream *s, evs_sub *sub)
{
    if (is_inline(s))
        ck_pr_dec_uint(&sub->active);
    else
        evs_store_release(&sub->active, 0);
}

/* Add to a counter: only the dispatcher writes the counters of a
 * dispatcher stream (no locked instruction needed); inline publishers
 * share them. */
static void count_add(evs_stream *s, uint64_t *c, uint64_t n)
{
    if (is_inline(s))
        ck_pr_add_64(c, n);
    else
        evs_store(c, evs_load(c) + n);
}

/*
 * Call one subscription on a run of events (ids ascending). Returns the
 * handler calls made. The caller has entered the subscription.
 */
static void deliver_run(evs_stream *s, evs_sub *sub, const evs_event *const *evs,
                        size_t n, uint64_t depth)
{
    uint64_t delivered = 0, filtered = 0, errors = 0;
    uint64_t start_id = evs_load_acquire(&sub->start_id);
    /* opts.metrics: time each call (a pooled subscription's workers time
     * the real calls; here its handler only queues). */
    bool timed = s->htime != NULL && sub->pool == NULL;
    struct sub_frame frame = {sub, tl_frames};
    tl_frames = &frame;
    for (size_t i = 0; i < n; i++) {
        const evs_event *ev = evs[i];
        if (ev == NULL || evs_event_id(ev) <= start_id)
            continue;
        /* A handler may end its own subscription mid-run. */
        if (evs_unlikely(evs_load(&sub->dead)))
            break;
        if (sub->filter != NULL && !sub->filter(ev, sub->user)) {
            filtered++;
            continue;
        }
        int rc;
        if (evs_unlikely(timed)) {
            int64_t t0 = evs__now_mono_ns();
            rc = sub->handler(ev, sub->user);
            evs__sub_record_time(sub, (uint64_t)(evs__now_mono_ns() - t0));
        } else {
            rc = sub->handler(ev, sub->user);
        }
        delivered++;
        if (evs_unlikely(rc != 0)) {
            errors++;
            if (s->opts.on_error != NULL)
                s->opts.on_error(sub, ev, rc, s->opts.on_error_user);
        }
    }
    tl_frames = frame.up;
    if (delivered) {
        count_add(s, &sub->delivered, delivered);
        count_add(s, &s->delivered, delivered);
    }
    if (filtered) {
        count_add(s, &sub->filtered, filtered);
        count_add(s, &s->filtered, filtered);
    }
    if (errors) {
        count_add(s, &sub->errors, errors);
        count_add(s, &s->handler_errors, errors);
    }
    if (depth > evs_load(&sub->hwm))
        evs_store(&sub->hwm, depth);
}

/* Deliver events to every live subscription. */
static void deliver_all(evs_stream *s, const evs_event *const *evs, size_t n, uint64_t depth)
{
    struct sub_array *a = evs_load_acquire(&s->subs);
    for (size_t i = 0; a != NULL && i < a->n; i++) {
        evs_sub *sub = a->subs[i];
        if (!sub_enter(s, sub))
            continue;
        deliver_run(s, sub, evs, n, depth);
        sub_leave(s, sub);
    }
}

/* Heartbeats reach every subscription of a TopicStream, whatever its
 * pattern: they keep idle consumers alive, they carry no subject. */
static bool is_heartbeat(const evs_event *ev)
{
    return evs_event_type(ev) == EVS_TYPE_HEARTBEAT && evs_event_topic(ev)[0] == '\0';
}

/* TopicStream without a route (no memory for one): try every
 * subscription's pattern, slower but allocation-free. Per-topic counts
 * are skipped; delivery is not. */
static void deliver_scan(evs_stream *s, const evs_event *ev, const char *subject, size_t len,
                         uint64_t depth)
{
    struct sub_array *a = evs_load_acquire(&s->subs);
    size_t matched = 0;
    for (size_t i = 0; a != NULL && i < a->n; i++) {
        evs_sub *sub = a->subs[i];
        if (!evs__subject_matches(subject, len, sub->pattern, sub->plen))
            continue;
        matched++;
        if (!sub_enter(s, sub))
            continue;
        deliver_run(s, sub, &ev, 1, depth);
        sub_leave(s, sub);
    }
    if (matched == 0)
        count_add(s, &s->unroutable, 1);
}

/* TopicStream: deliver one event to the subscriptions its subject
 * matches (the dispatcher's cached route, or a fresh match inline). */
static void deliver_routed(evs_stream *s, const evs_event *ev, uint64_t depth)
{
    if (is_heartbeat(ev)) {
        deliver_all(s, &ev, 1, depth);
        return;
    }
    const char *subject = evs_event_topic(ev);
    size_t len = strlen(subject);
    void *const *subs;
    size_t n;
    evs_topic *topic;
    evs_itemvec vec = {0};
    int rc;
    if (is_inline(s)) {
        rc = evs__router_route(s->router, subject, len, &vec, &topic);
        subs = vec.v + 1;
        n = vec.n - 1;
    } else {
        rc = evs__router_route_cached(s->router, subject, len, &subs, &n, &topic);
    }
    if (rc != 0) {
        /* No memory to route (an inline route may have grown `vec`
         * before failing): match every subscription's pattern instead,
         * which allocates nothing, so the event is still delivered. */
        evs__itemvec_fini(&vec);
        deliver_scan(s, ev, subject, len, depth);
        return;
    }
    if (topic != NULL)
        count_add(s, &topic->published, 1);
    if (n == 0)
        count_add(s, &s->unroutable, 1);
    for (size_t i = 0; i < n; i++) {
        evs_sub *sub = subs[i];
        if (!sub_enter(s, sub))
            continue;
        deliver_run(s, sub, &ev, 1, depth);
        sub_leave(s, sub);
    }
    evs__itemvec_fini(&vec);
}

/*
 * An accepted event that will reach no subscription (dropped as newest,
 * or evicted as oldest): count it in the `dropped` of each subscription
 * it would have reached, so that per subscription every accepted event
 * it matches is delivered, filtered or dropped. `id` is the event's id,
 * or, for one dropped before it got one, the id it would have had: a
 * subscription counts it only if it became live before that id was
 * handed out (start_id < id), as delivery would. Runs on the publishing
 * thread, in an epoch section of its own record: the drop path, never
 * the delivery path.
 */
static void count_sub_drops(evs_stream *s, const evs_event *ev, uint64_t id)
{
    ck_epoch_record_t *rec = evs__epoch_record();
    if (rec == NULL)
        return; /* the stream-wide drop counters still count it */
    const char *topic = evs_event_topic(ev);
    size_t tlen = strlen(topic);
    bool everyone = s->router == NULL || is_heartbeat(ev);
    ck_epoch_section_t section;
    evs__epoch_begin(rec, &section);
    struct sub_array *a = evs_load_acquire(&s->subs);
    for (size_t i = 0; a != NULL && i < a->n; i++) {
        evs_sub *sub = a->subs[i];
        if (evs_load(&sub->dead) || id <= evs_load_acquire(&sub->start_id))
            continue;
        if (everyone || evs__subject_matches(topic, tlen, sub->pattern, sub->plen))
            ck_pr_inc_64(&sub->dropped);
    }
    evs__epoch_end(rec, &section);
}

/* Deliver a run. The caller is inside an epoch section, so the
 * subscriptions it reaches stay allocated. */
static void deliver(evs_stream *s, const evs_event *const *evs, size_t n, uint64_t depth)
{
    if (s->router == NULL) {
        deliver_all(s, evs, n, depth);
        return;
    }
    for (size_t i = 0; i < n; i++)
        if (evs[i] != NULL)
            deliver_routed(s, evs[i], depth);
}

/* After delivery: the ring's references go to the history, or are
 * dropped. Slot events stay in their slots, so the history gets copies
 * (NULL, skipped, if one cannot be allocated: history is best effort). */
static void settle_run(evs_stream *s, const evs_event **run, size_t n)
{
    if (s->hist_cap == 0) {
        for (size_t i = 0; i < n; i++)
            evs_event_unref(run[i]); /* a no-op for slot events */
        return;
    }
    if (s->slot_mem != NULL)
        for (size_t i = 0; i < n; i++)
            if (run[i] != NULL && evs__event_is_slot(run[i]))
                run[i] = evs_event_ref(run[i]);
    history_push(s, run, n);
}

/*
 * Sleep until a publisher signals, unless something was claimed since we
 * last looked. The fence orders our store of `parked` before our load of
 * `claim`; the publisher's claim CAS orders its claim before its load of
 * `parked`. So either we see its claim here, or it sees `parked` and
 * increments pub_ec after publishing, which ends (or prevents) the wait.
 */
static void dispatcher_park(evs_stream *s)
{
    evs_store(&s->parked, 1);
    if (s->heavy_fence)
        evs__heavy_fence(); /* the publisher's side is a compiler barrier */
    else
        ck_pr_fence_memory();
    uint32_t seen = ck_ec32_value(&s->pub_ec);
    if (evs__ring_claimed(&s->ring) == evs_load(&s->ring.head) && !evs_load(&s->stop))
        evs__ec_wait(&s->pub_ec, seen, -1);
    evs_store(&s->parked, 0);
}

/* Bump run_ec after a run if anyone may be waiting on it. */
static void signal_run(evs_stream *s)
{
    if (s->asym) {
        ck_pr_barrier(); /* the waiter's heavy fence orders the rest */
        if (evs_likely(evs_load(&s->run_waiters) == 0))
            return;
    }
    ck_ec32_inc(&s->run_ec, &evs__ec_mp);
}

/* Runs the dispatcher delivers before it leaves and re-enters its epoch
 * section, so that a busy stream still lets retired memory be freed. */
#define RUNS_PER_SECTION 256

static void *dispatcher_main(void *arg)
{
    evs_stream *s = arg;
    ck_epoch_record_t *rec = s->dispatcher_record;
    ck_epoch_section_t section;
    bool in_section = false;
    unsigned runs = 0;
    const evs_event *run[RUN_MAX];
    unsigned spins = 0;
    int64_t idle_since = 0;

    tl_stream = s;
    for (;;) {
        uint64_t first;
        size_t n = s->slot_mem != NULL
                       ? evs__ring_take_deferred(&s->ring, run, RUN_MAX, &first)
                       : evs__ring_take(&s->ring, run, RUN_MAX, &first);
        if (n == 0) {
            /* Idle: spin on our own cache lines; every SPIN_CHECK spins
             * leave the epoch section and look at the clock, the stop
             * flag, and whether it is time to yield or park. */
            if (++spins < SPIN_CHECK) {
                evs__cpu_relax();
                continue;
            }
            spins = 0;
            if (in_section) {
                evs__epoch_end(rec, &section);
                in_section = false;
            }
            if (evs_load(&s->stop) && evs__ring_claimed(&s->ring) == evs_load(&s->done))
                break;
            if (s->opts.wait == EVS_WAIT_SPIN)
                continue;
            int64_t now = evs__now_mono_ns();
            if (idle_since == 0) {
                idle_since = now;
                if (s->opts.heartbeat_ms > 0)
                    evs_store(&s->hb_idle_since, evs__hb_now());
            }
            if (now - idle_since < IDLE_SPIN_NS)
                continue;
            if (s->opts.wait == EVS_WAIT_YIELD) {
                sched_yield();
            } else {
                dispatcher_park(s);
                idle_since = 0;
            }
            continue;
        }
        spins = 0;
        idle_since = 0;
        /* One epoch section spans many runs: entering costs a fence. */
        if (!in_section || ++runs == RUNS_PER_SECTION) {
            if (in_section)
                evs__epoch_end(rec, &section);
            evs__epoch_begin(rec, &section);
            in_section = true;
            runs = 0;
        }
        /* A short run means the queue held just these (reading `claim`
         * would take the publishers' line); a full one may have more. */
        uint64_t depth = n < RUN_MAX ? n : evs__ring_claimed(&s->ring) - first;
        if (depth > evs_load(&s->queue_hwm))
            evs_store(&s->queue_hwm, depth);
        deliver(s, run, n, depth);
        settle_run(s, run, n);
        if (s->slot_mem != NULL)
            evs__ring_release(&s->ring, first + n);
        /* Positions up to first + n are settled; evicted positions
         * before `first` were settled by their evictors. */
        evs_store_release(&s->done, first + n);
        signal_run(s);
    }
    if (in_section)
        evs__epoch_end(rec, &section);
    tl_stream = NULL;
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Publish                                                             */

/* After publishing a slot: wake the dispatcher if it is parking. On an
 * MP ring the claim CAS was a full barrier between our claim and this
 * load (see dispatcher_park). A single-publisher claim is a plain store:
 * the dispatcher's membarrier supplies the barrier for us, or, where the
 * kernel lacks it, we issue a full fence here. */
static void wake_dispatcher(evs_stream *s)
{
    if (s->ring.sp) {
        if (s->heavy_fence)
            ck_pr_barrier();
        else
            ck_pr_fence_memory();
    }
    if (evs_unlikely(evs_load(&s->parked)))
        ck_ec32_inc(&s->pub_ec, &evs__ec_mp);
}

/* Announce a thread about to wait on run_ec (see run_waiters). The
 * locked increment is our full barrier; the heavy fence stands in for
 * the one the dispatcher does not issue. */
static void waiter_enter(evs_stream *s)
{
    ck_pr_inc_uint(&s->run_waiters);
    if (s->asym)
        evs__heavy_fence();
}

static void waiter_leave(evs_stream *s) { ck_pr_dec_uint(&s->run_waiters); }

/* Wait for the dispatcher to free room, up to the deadline. */
static int wait_for_room(evs_stream *s, uint32_t seen, int64_t deadline)
{
    /* The dispatcher, or a worker of one of this stream's pools (the
     * dispatcher may be waiting for room in that very pool), would wait
     * for itself. */
    if (in_handler_of(s))
        return EVS_EDEADLK;
    return evs__ec_wait(&s->run_ec, seen, deadline);
}

/* Claim a position under the stream's overflow policy. Returns 0, or
 * 1 for "dropped as newest" (counted), or a negative code. */
static int claim_full(evs_stream *s, uint64_t *pos);

static int claim(evs_stream *s, uint64_t *pos)
{
    int rc = evs__ring_claim(&s->ring, pos);
    if (evs_likely(rc != EVS_EFULL))
        return rc;
    if (s->opts.overflow != EVS_OVERFLOW_BLOCK)
        return claim_full(s, pos);
    waiter_enter(s);
    rc = claim_full(s, pos);
    waiter_leave(s);
    return rc;
}

/* The ring was full: apply the overflow policy. */
static int claim_full(evs_stream *s, uint64_t *pos)
{
    int64_t deadline = -1;
    unsigned evict_round = 0; /* DROP_OLDEST: pauses for a stalled producer */
    for (;;) {
        /* The caller found the ring full. Only now look at run_ec (the
         * dispatcher bumps it every run): snapshot it, then claim again,
         * then wait on the snapshot, so a run that ends in between is
         * never missed. */
        uint32_t seen = ck_ec32_value(&s->run_ec);
        int rc = evs__ring_claim(&s->ring, pos);
        if (rc != EVS_EFULL)
            return rc;
        switch (s->opts.overflow) {
        case EVS_OVERFLOW_DROP_NEWEST:
            ck_pr_inc_64(&s->dropped_newest);
            return 1;
        case EVS_OVERFLOW_FAIL:
            ck_pr_inc_64(&s->rejected_full);
            return EVS_EFULL;
        case EVS_OVERFLOW_DROP_OLDEST: {
            const evs_event *old;
            if (evs__ring_evict(&s->ring, &old, evs__backoff, &evict_round)) {
                if (old != NULL) {
                    ck_pr_inc_64(&s->dropped_oldest);
                    count_sub_drops(s, old, evs_event_id(old));
                }
                evs_event_unref(old);
            }
            continue;
        }
        case EVS_OVERFLOW_BLOCK:
            if (deadline < 0 && s->opts.block_timeout_ms > 0)
                deadline = evs__deadline_after_ms(s->opts.block_timeout_ms);
            rc = wait_for_room(s, seen, deadline);
            if (rc == EVS_ETIMEDOUT) {
                ck_pr_inc_64(&s->timed_out);
                return rc;
            }
            if (rc != 0)
                return rc;
            continue;
        }
    }
}

/*
 * The reference the stream will keep for `ev`: `ev` itself when this
 * publish is its first (with a reference added, or with the caller's
 * when `*move`, which is then cleared: nothing is left to drop), or a
 * new alias. NULL on allocation failure.
 */
static const evs_event *stream_ref(const evs_event *ev, bool *move)
{
    if (evs__event_claim(ev, !*move)) {
        *move = false;
        return ev;
    }
    return evs__event_alias(ev);
}

static int publish_inline(evs_stream *s, const evs_event *ev, uint64_t *id, bool move)
{
    ck_epoch_record_t *rec = evs__epoch_record();
    const evs_event *mine = rec != NULL ? stream_ref(ev, &move) : NULL;
    int rc = 0;
    if (mine == NULL) {
        rc = EVS_ENOMEM;
        goto out;
    }

    pthread_mutex_lock(&s->hist_lock);
    if (s->inline_closed) {
        pthread_mutex_unlock(&s->hist_lock);
        evs_event_unref(mine);
        rc = EVS_ECLOSED;
        goto out;
    }
    uint64_t my_id = ++s->inline_seq;
    evs__event_set_id(mine, my_id);
    ck_pr_inc_uint(&s->inline_active);
    /* Ids are handed out in list order, so the list stays sorted. */
    struct inline_pub node = {my_id, s->inflight_tail, NULL};
    if (s->inflight_tail != NULL)
        s->inflight_tail->next = &node;
    else
        s->inflight_head = &node;
    s->inflight_tail = &node;
    pthread_mutex_unlock(&s->hist_lock);

    evs_stream *outer = tl_stream;
    tl_stream = s;
    ck_epoch_section_t section;
    evs__epoch_begin(rec, &section);
    deliver(s, &mine, 1, 0);
    evs__epoch_end(rec, &section);
    tl_stream = outer;

    /* Our reference moves to the history (or is dropped); the node is
     * unlinked in the same critical section, so a flush that sees it
     * gone sees the event in the history too. */
    const evs_event *evicted = NULL;
    size_t ne = 0;
    pthread_mutex_lock(&s->hist_lock);
    if (s->hist_cap > 0)
        ne = history_push_locked(s, &mine, 1, &evicted);
    if (node.prev != NULL)
        node.prev->next = node.next;
    else
        s->inflight_head = node.next;
    if (node.next != NULL)
        node.next->prev = node.prev;
    else
        s->inflight_tail = node.prev;
    ck_pr_dec_uint(&s->inline_active);
    pthread_mutex_unlock(&s->hist_lock);
    if (s->hist_cap == 0)
        evs_event_unref(mine);
    else if (ne > 0)
        evs_event_unref(evicted);
    *id = my_id;
out:
    if (move)
        evs_event_unref(ev);
    return rc;
}

/* A TopicStream takes only events whose topic is a subject (and its own
 * heartbeats). */
static int check_subject(evs_stream *s, const evs_event *ev)
{
    if (s->router == NULL || is_heartbeat(ev))
        return 0;
    const char *t = evs_event_topic(ev);
    return evs__subject_validate(t, strlen(t));
}

/* Publish `ev`; with `move`, the caller's reference is consumed whatever
 * the result. */
static int publish(evs_stream *s, const evs_event *ev, uint64_t *id, bool move)
{
    *id = 0;
    int rc = check_subject(s, ev);
    if (rc != 0) {
        if (move)
            evs_event_unref(ev);
        return rc;
    }
    if (is_inline(s))
        return publish_inline(s, ev, id, move);

    /* An event published before gets an alias; make it before claiming
     * so a claimed position is never left unfilled for lack of memory. */
    const evs_event *item = NULL;
    if (evs_event_published(ev) && (item = evs__event_alias(ev)) == NULL) {
        rc = EVS_ENOMEM;
        goto out;
    }
    uint64_t pos;
    if ((rc = claim(s, &pos)) != 0) {
        evs_event_unref(item);
        if (rc > 0) {
            /* Dropped as newest: counted, not an error. */
            count_sub_drops(s, ev, ids_issued(s) + 1);
            rc = 0;
        }
        goto out;
    }
    if (item == NULL && (item = stream_ref(ev, &move)) == NULL) {
        /* Lost a race to publish `ev` elsewhere and cannot alias it:
         * fill the position with a hole so the ring stays whole. */
        ck_pr_inc_64(&s->dropped_nomem);
        evs__ring_publish(&s->ring, pos, NULL);
        wake_dispatcher(s);
        rc = EVS_ENOMEM;
        goto out;
    }
    evs__event_set_id(item, pos + 1);
    evs__ring_publish(&s->ring, pos, item);
    wake_dispatcher(s);
    *id = pos + 1;
out:
    if (move)
        evs_event_unref(ev);
    return rc;
}

int evs_stream_publish_id(evs_stream *s, const evs_event *ev, uint64_t *id)
{
    uint64_t dummy;
    if (s == NULL || ev == NULL) {
        if (id != NULL)
            *id = 0;
        return EVS_EINVAL;
    }
    return publish(s, ev, id != NULL ? id : &dummy, false);
}

int evs_stream_publish(evs_stream *s, const evs_event *ev)
{
    return evs_stream_publish_id(s, ev, NULL);
}

int evs_stream_publish_move(evs_stream *s, evs_event *ev, uint64_t *id)
{
    uint64_t dummy;
    if (s == NULL || ev == NULL) {
        if (id != NULL)
            *id = 0;
        evs_event_unref(ev);
        return EVS_EINVAL;
    }
    return publish(s, ev, id != NULL ? id : &dummy, true);
}

/* ------------------------------------------------------------------ */
/* Heartbeats                                                          */

/* Publish one heartbeat without ever waiting: one thread serves every
 * stream's heartbeats, so a full queue means "not idle", not "wait". */
static void publish_heartbeat(evs_stream *s)
{
    evs_event *ev;
    uint64_t id;
    if (evs_event_create(&ev, EVS_TYPE_HEARTBEAT, NULL, NULL, 0) != 0)
        return;
    if (is_inline(s)) {
        if (publish_inline(s, ev, &id, true) == 0)
            ck_pr_inc_64(&s->heartbeats);
        return;
    }
    uint64_t pos;
    if (evs__ring_claim(&s->ring, &pos) != 0) {
        evs_event_unref(ev);
        return;
    }
    evs__event_claim(ev, false); /* our reference becomes the ring's */
    evs__event_set_id(ev, pos + 1);
    evs__ring_publish(&s->ring, pos, ev);
    wake_dispatcher(s);
    ck_pr_inc_64(&s->heartbeats);
}

/*
 * The heartbeat timer: if nothing was published since the last look,
 * the stream has been idle for a whole interval: publish a heartbeat.
 * Otherwise look again one interval after the stream went idle (as the
 * dispatcher recorded it), or after now if it is still busy.
 */
static int64_t heartbeat_fire(void *user, int64_t now)
{
    evs_stream *s = user;
    uint64_t issued = ids_issued(s);
    int64_t checked = s->hb_checked;
    s->hb_checked = now;
    if (issued != s->hb_seen) {
        s->hb_seen = issued;
        int64_t idle = evs_load(&s->hb_idle_since);
        return (idle > checked ? idle : now) + s->hb_interval;
    }
    publish_heartbeat(s);
    s->hb_seen = ids_issued(s); /* our heartbeat is not activity */
    return now + s->hb_interval;
}

int evs_stream_claim(evs_stream *s, evs_type type, const char *topic, size_t len,
                     evs_event **out, void **data)
{
    if (out != NULL)
        *out = NULL;
    if (data != NULL)
        *data = NULL;
    if (s == NULL || out == NULL || data == NULL || (unsigned)type >= EVS_TYPE_CUSTOM ||
        s->slot_mem == NULL)
        return EVS_EINVAL;
    size_t max_topic = evs__max_topic();
    size_t tlen = topic != NULL ? strnlen(topic, max_topic + 1) : 0;
    if (tlen > max_topic || len > s->opts.slot_bytes ||
        evs__event_data_offset(tlen) > s->opts.slot_bytes - len)
        return EVS_ETOOBIG;
    if (s->router != NULL && evs__subject_validate(topic ? topic : "", tlen) != 0)
        return EVS_EINVAL;
    uint64_t pos;
    int rc = claim(s, &pos);
    if (rc != 0)
        return rc > 0 ? EVS_EFULL : rc; /* DROP_NEWEST: counted, no slot */
    int64_t ts = s->opts.coarse_timestamps ? evs__now_coarse_ns() : evs__now_real_ns();
    *out = evs__event_slot_fill(s->slot_mem + (pos & s->ring.mask) * s->slot_stride,
                                s->opts.slot_bytes, type, topic, tlen, len, pos + 1, ts, data);
    return 0;
}

int evs_stream_commit(evs_stream *s, evs_event *ev)
{
    if (s == NULL || ev == NULL || s->slot_mem == NULL)
        return EVS_EINVAL;
    /* Compare addresses as integers: subtracting pointers into
     * different objects (an event that is not one of our slots) would be
     * undefined behaviour. */
    uintptr_t p = (uintptr_t)ev, base = (uintptr_t)s->slot_mem;
    if (p < base || p - base >= s->ring.size * s->slot_stride ||
        (p - base) % s->slot_stride != 0 || !evs__event_slot_commit(ev))
        return EVS_EINVAL;
    uint64_t pos = evs_event_id(ev) - 1;
    evs__ring_publish(&s->ring, pos, ev);
    wake_dispatcher(s);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Subscriptions                                                       */

static void free_array_cb(ck_epoch_entry_t *e)
{
    evs__epoch_reclaiming();
    evs__free(evs_container_of(e, struct sub_array, epoch_entry));
}

static void free_sub(evs_sub *sub)
{
    if (sub->metrics != NULL) {
        evs__rate_destroy(&sub->metrics->rate);
        evs__free(sub->metrics);
    }
    evs__workers_release(sub->pool);
    evs__free(sub->pattern);
    evs__free(sub);
}

static void free_sub_cb(ck_epoch_entry_t *e)
{
    evs__epoch_reclaiming();
    free_sub(evs_container_of(e, evs_sub, epoch_entry));
}

/* Copy `a` with `add` appended or `del` removed. NULL on ENOMEM. */
static struct sub_array *array_edit(const struct sub_array *a, evs_sub *add, evs_sub *del)
{
    size_t n = a ? a->n : 0;
    struct sub_array *b = evs__malloc(sizeof(*b) + (n + 1) * sizeof(evs_sub *));
    if (b == NULL)
        return NULL;
    b->n = 0;
    for (size_t i = 0; i < n; i++)
        if (a->subs[i] != del)
            b->subs[b->n++] = a->subs[i];
    if (add != NULL)
        b->subs[b->n++] = add;
    return b;
}

/* Publish `b` as the subscription set and retire the old one. Readers
 * that loaded the old pointer are in epoch sections; new readers load
 * `b`, so the old array is unreachable once it is swapped out. */
static void array_swap(evs_stream *s, struct sub_array *b)
{
    struct sub_array *old = s->subs;
    evs_store_release(&s->subs, b);
    if (old != NULL)
        evs__epoch_retire(&old->epoch_entry, free_array_cb);
}

static bool stream_closed(evs_stream *s)
{
    if (is_inline(s)) {
        pthread_mutex_lock(&s->hist_lock);
        bool c = s->inline_closed;
        pthread_mutex_unlock(&s->hist_lock);
        return c;
    }
    return evs__ring_closed(&s->ring);
}

static uint64_t ids_issued(evs_stream *s)
{
    if (is_inline(s)) {
        pthread_mutex_lock(&s->hist_lock);
        uint64_t v = s->inline_seq;
        pthread_mutex_unlock(&s->hist_lock);
        return v;
    }
    return evs__ring_claimed(&s->ring);
}

int evs_subscribe(evs_sub **out, evs_stream *s, const char *pattern,
                  evs_handler_fn handler, evs_filter_fn filter, void *user,
                  const evs_sub_opts *opts)
{
    if (out == NULL)
        return EVS_EINVAL;
    *out = NULL;
    if (s == NULL || handler == NULL || evs__workers_opts_check(opts) != 0)
        return EVS_EINVAL;
    if (pattern == NULL)
        pattern = ">";
    /* Bounded, so a huge string is neither scanned whole nor copied on
     * any stream (patterns are subjects: the topic limit applies). */
    size_t max_topic = evs__max_topic();
    size_t plen = strnlen(pattern, max_topic + 1);
    if (plen > max_topic ||
        (s->router != NULL && evs__pattern_validate(pattern, plen) != 0))
        return EVS_EINVAL;

    evs_sub *sub = evs__calloc(1, sizeof(*sub));
    if (sub == NULL)
        return EVS_ENOMEM;
    sub->pattern = evs__strndup(pattern, plen);
    sub->plen = plen;
    if (sub->pattern == NULL) {
        evs__free(sub);
        return EVS_ENOMEM;
    }
    if (s->opts.metrics >= EVS_METRICS_SUBS) {
        if ((sub->metrics = evs__calloc(1, sizeof(*sub->metrics))) == NULL) {
            free_sub(sub);
            return EVS_ENOMEM;
        }
        evs__rate_init(&sub->metrics->rate);
    }
    sub->stream = s;
    sub->handler = handler;
    sub->filter = filter;
    sub->user = user;
    /* Bounded concurrent handler (workers.c): the pool's wrappers take
     * the place of handler, filter and user, and queue events for the
     * pool's threads; delivery itself is unchanged. */
    if (opts != NULL && opts->max_concurrent > 0) {
        int rc = evs__workers_create(&sub->pool, sub, s, opts, &sub->handler,
                                     &sub->filter, &sub->user);
        if (rc != 0) {
            free_sub(sub);
            return rc;
        }
        ck_pr_inc_uint(&s->pools_live);
    }
    /* Until the array is visible no event may pass: start at "all". */
    sub->start_id = UINT64_MAX;

    pthread_mutex_lock(&s->sub_lock);
    if (stream_closed(s)) {
        pthread_mutex_unlock(&s->sub_lock);
        free_sub(sub);
        return EVS_ECLOSED;
    }
    struct sub_array *b = array_edit(s->subs, sub, NULL);
    if (b == NULL || (s->router != NULL &&
                      evs__router_add(s->router, sub->pattern, sub, &sub->topic) != 0)) {
        pthread_mutex_unlock(&s->sub_lock);
        evs__free(b);
        free_sub(sub);
        return EVS_ENOMEM;
    }
    array_swap(s, b);
    /* Full barrier, then read the ids handed out: any event claimed
     * after this read was claimed after the array swap, so its reader
     * sees the new array and delivers it to us. */
    ck_pr_fence_memory();
    evs_store_release(&sub->start_id, ids_issued(s));
    pthread_mutex_unlock(&s->sub_lock);
    *out = sub;
    return 0;
}

int evs_unsubscribe(evs_sub *sub)
{
    if (sub == NULL)
        return EVS_EINVAL;
    evs_stream *s = sub->stream;

    pthread_mutex_lock(&s->sub_lock);
    if (evs_load(&sub->dead)) {
        pthread_mutex_unlock(&s->sub_lock);
        return EVS_EINVAL;
    }
    evs_store(&sub->dead, 1);
    if (s->router != NULL)
        evs__router_remove(s->router, sub->pattern, sub, sub->topic);
    struct sub_array *b = array_edit(s->subs, NULL, sub);
    if (b != NULL) {
        array_swap(s, b);
    }
    /* Without memory for a smaller array the sub stays in the current
     * one, dead (skipped by every reader), until the next change or
     * the stream's destroy reclaims it. */
    pthread_mutex_unlock(&s->sub_lock);

    /* The Dekker handshake with sub_enter: dead is stored, a barrier
     * (heavy when the dispatcher's side is only a compiler barrier),
     * then active is read. */
    if (s->asym && !is_inline(s))
        evs__heavy_fence();
    else
        ck_pr_fence_memory();
    /* Wait for every call in progress except this thread's own (a
     * handler ending its own subscription; on an inline stream other
     * publishers may be inside the same handler, and those we wait
     * for). A worker of the subscription's own pool is inside its
     * handler too, and must not wait for the delivering thread: that may
     * be waiting for room in this very pool. */
    if (!evs__workers_inside(sub->pool)) {
        unsigned mine = own_calls(sub);
        /* Acquire: the handler's last writes happen before we return. */
        for (unsigned round = 0; evs_load_acquire(&sub->active) > mine; round++)
            evs__backoff(round);
    }
    /* Pooled: wait for the queued and running calls, then end the
     * workers; from inside one of its calls, drop the queue and wait for
     * the other calls instead (workers.c). No call starts afterwards. */
    evs__workers_stop(sub->pool);
    if (b != NULL)
        evs__epoch_retire(&sub->epoch_entry, free_sub_cb);
    return 0;
}

const char *evs_sub_pattern(const evs_sub *sub) { return sub->pattern; }

struct evs__workers *evs__sub_pool(const evs_sub *sub) { return sub->pool; }

void evs__sub_handler_error(evs_sub *sub, const evs_event *ev, int rc)
{
    evs_stream *s = sub->stream;
    ck_pr_inc_64(&sub->errors);
    ck_pr_inc_64(&s->worker_errors);
    if (s->opts.on_error != NULL)
        s->opts.on_error(sub, ev, rc, s->opts.on_error_user);
}

void evs__stream_pool_done(evs_stream *s) { ck_pr_dec_uint(&s->pools_live); }

bool evs__sub_timed(const evs_sub *sub) { return sub->stream->htime != NULL; }

void evs__sub_record_time(evs_sub *sub, uint64_t ns)
{
    evs__hist_add(sub->stream->htime, ns);
    if (sub->metrics != NULL)
        evs__hist_add(&sub->metrics->htime, ns);
}

/*
 * Wait until every live pooled subscription has handled what was handed
 * to it so far (evs__workers_wait), up to `deadline` (CLOCK_MONOTONIC
 * ns; < 0 = none), adding what is left to *left. Holds sub_lock only to
 * pick the next pool and take a reference on it, never while waiting
 * (a pooled handler may subscribe). The array is walked from the end:
 * subscribing appends (a subscription made now gets no event accepted
 * before the wait began) and unsubscribing closes a gap below, which can
 * only move an entry we visited down into view again, never an
 * unvisited one out of it.
 */
static int wait_pools(evs_stream *s, int64_t deadline, uint64_t *left)
{
    int rc = 0;
    size_t i = SIZE_MAX;
    while (evs_load(&s->pools_live) != 0) {
        struct evs__workers *p = NULL;
        pthread_mutex_lock(&s->sub_lock);
        size_t n = s->subs != NULL ? s->subs->n : 0;
        if (i > n)
            i = n;
        while (p == NULL && i > 0)
            p = s->subs->subs[--i]->pool;
        if (p != NULL)
            evs__workers_ref(p);
        pthread_mutex_unlock(&s->sub_lock);
        if (p == NULL)
            break;
        if (evs__workers_wait(p, deadline, left) != 0)
            rc = EVS_ETIMEDOUT;
        evs__workers_unref(p);
    }
    return rc;
}

uint64_t evs__stream_ids_issued(evs_stream *s) { return ids_issued(s); }

bool evs__stream_has_topics(const evs_stream *s) { return s->router != NULL; }

bool evs__stream_single_publisher(const evs_stream *s)
{
    return s->opts.single_publisher && !is_inline(s);
}

size_t evs__stream_history_cap(const evs_stream *s) { return s->hist_cap; }


int evs_sub_stats_get(const evs_sub *csub, evs_sub_stats *out)
{
    evs_sub *sub = (evs_sub *)csub;
    if (sub == NULL || out == NULL)
        return EVS_EINVAL;
    out->delivered = evs_load(&sub->delivered);
    out->filtered = evs_load(&sub->filtered);
    out->handler_errors = evs_load(&sub->errors);
    out->queue_hwm = evs_load(&sub->hwm);
    out->dropped = evs_load(&sub->dropped);
    out->delivered_per_s = 0;
    memset(&out->handler, 0, sizeof(out->handler));
    if (sub->metrics != NULL) {
        uint64_t c[EVS__RATE_COUNTERS] = {out->delivered, 0};
        double r[EVS__RATE_COUNTERS];
        evs__rate_sample(&sub->metrics->rate, evs__now_mono_ns(), sub->stream->rate_interval_ns,
                         c, r);
        out->delivered_per_s = r[0];
        evs__hist_read(&sub->metrics->htime, &out->handler);
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Lifecycle                                                           */

static bool is_pow2(size_t v) { return v >= 2 && (v & (v - 1)) == 0; }

#define BAD_OPT(...) evs__set_error(EVS_EINVAL, __VA_ARGS__)

/* Validate options (defaults already filled in); EVS_EINVAL with a
 * sentence for evs_last_error. */
static int check_opts(const evs_stream_opts *o)
{
    if (!is_pow2(o->capacity) || o->capacity > EVS_MAX_CAPACITY)
        return BAD_OPT("capacity %zu is not a power of two in 2..%zu", o->capacity,
                       (size_t)EVS_MAX_CAPACITY);
    if (o->history != EVS_HISTORY_NONE && o->history > EVS_MAX_CAPACITY)
        return BAD_OPT("history %zu is over %zu", o->history, (size_t)EVS_MAX_CAPACITY);
    if ((unsigned)o->overflow > EVS_OVERFLOW_FAIL)
        return BAD_OPT("overflow %d is not an evs_overflow", (int)o->overflow);
    if ((unsigned)o->delivery > EVS_DELIVERY_INLINE)
        return BAD_OPT("delivery %d is not an evs_delivery", (int)o->delivery);
    if ((unsigned)o->wait > EVS_WAIT_SPIN)
        return BAD_OPT("wait %d is not an evs_wait", (int)o->wait);
    if (o->heartbeat_ms < 0 || o->block_timeout_ms < 0 || o->metrics_interval_ms < 0)
        return BAD_OPT("heartbeat_ms, block_timeout_ms and metrics_interval_ms must not be "
                       "negative");
    if (o->backpressure_pct < 0 || o->backpressure_pct > 100)
        return BAD_OPT("backpressure_pct %d is not in 0..100", o->backpressure_pct);
    if (o->metrics < 0 || o->metrics > EVS_METRICS_SUBS)
        return BAD_OPT("metrics %d is not an EVS_METRICS_* level", o->metrics);
    if (o->slot_bytes > EVS_MAX_SLOT_BYTES)
        return BAD_OPT("slot_bytes %zu is over %zu", o->slot_bytes, EVS_MAX_SLOT_BYTES);
    if (o->slot_bytes > 0 && o->delivery != EVS_DELIVERY_DISPATCHER)
        return BAD_OPT("slot_bytes needs dispatcher delivery");
    if (o->slot_bytes > 0 && o->overflow == EVS_OVERFLOW_DROP_OLDEST)
        return BAD_OPT("slot_bytes cannot be combined with EVS_OVERFLOW_DROP_OLDEST");
    /* The timer thread publishes heartbeats: on a single-publisher ring
     * it would be a second producer, and the two would overwrite each
     * other's claims (SPEC.md, "Who publishes"). */
    if (o->single_publisher && o->heartbeat_ms > 0 && o->delivery == EVS_DELIVERY_DISPATCHER)
        return BAD_OPT("single_publisher cannot be combined with heartbeat_ms: the timer "
                       "thread publishes the heartbeats, a second publisher");
    return 0;
}

int evs_stream_create(evs_stream **out, const evs_stream_opts *opts)
{
    if (out == NULL)
        return EVS_EINVAL;
    *out = NULL;
    evs_stream_opts o = {0};
    if (opts != NULL)
        o = *opts;
    if (o.capacity == 0)
        o.capacity = DEFAULT_CAPACITY;
    int rc = check_opts(&o);
    if (rc != 0)
        return rc;
    evs_stream *s = evs__aligned_alloc(sizeof(*s));
    if (s == NULL)
        return EVS_ENOMEM;
    memset(s, 0, sizeof(*s));
    s->opts = o;
    s->hist_cap = o.history == EVS_HISTORY_NONE ? 0 : o.history ? o.history : DEFAULT_HISTORY;
    ck_ec32_init(&s->pub_ec, 0);
    ck_ec32_init(&s->run_ec, 0);
    s->rate_interval_ns = (int64_t)(o.metrics_interval_ms > 0 ? o.metrics_interval_ms : 1000) *
                          1000000;
    evs__rate_init(&s->rate);
    rc = EVS_ENOMEM;
    if (s->hist_cap > 0 && (s->hist = evs__calloc(s->hist_cap, sizeof(*s->hist))) == NULL)
        goto fail_hist;
    if (o.metrics && (s->htime = evs__calloc(1, sizeof(*s->htime))) == NULL)
        goto fail_hist;
    if (pthread_mutex_init(&s->sub_lock, NULL) != 0) {
        rc = EVS_ESYSTEM;
        goto fail_hist;
    }
    if (pthread_mutex_init(&s->hist_lock, NULL) != 0) {
        rc = EVS_ESYSTEM;
        goto fail_sub_lock;
    }
    if (o.topics && (rc = evs__router_create(&s->router, o.topic_cache, o.max_topics,
                                               o.topic_idle_ms)) != 0)
        goto fail_hist_lock;
    if (!is_inline(s)) {
        if ((rc = evs__ring_init(&s->ring, o.capacity, o.single_publisher)) != 0)
            goto fail_hist_lock;
        if (o.backpressure_pct > 0) {
            uint64_t limit = o.capacity * (uint64_t)o.backpressure_pct / 100;
            s->ring.limit = limit > 0 ? limit : 1;
        }
        s->asym = evs__heavy_fence_ready();
        s->heavy_fence = o.single_publisher && s->asym;
        if (o.slot_bytes > 0) {
            s->slot_stride = evs__event_slot_stride(o.slot_bytes);
            size_t bytes = o.capacity * s->slot_stride;
            if ((s->slot_mem = evs__aligned_alloc(bytes)) == NULL) {
                rc = EVS_ENOMEM;
                goto fail_ring;
            }
            memset(s->slot_mem, 0, bytes);
        }
        /* The dispatcher's epoch record: taken here so that a failure
         * is reported by create, handed to the thread, and given back
         * to the epoch's pool when the stream is destroyed. */
        if ((s->dispatcher_record = evs__epoch_record_new()) == NULL) {
            rc = EVS_ENOMEM;
            goto fail_ring;
        }
        if (pthread_create(&s->thread, NULL, dispatcher_main, s) != 0) {
            rc = EVS_ESYSTEM;
            goto fail_record;
        }
        s->has_thread = true;
    }
    if (o.heartbeat_ms > 0) {
        s->hb_interval = (int64_t)o.heartbeat_ms * 1000000;
        s->hb_checked = evs__hb_now();
        if ((rc = evs__hb_add(&s->hb, s->hb_interval, heartbeat_fire, s)) != 0) {
            evs_stream_destroy(s);
            return rc;
        }
    }
    *out = s;
    return 0;

fail_record:
    evs__epoch_record_release(s->dispatcher_record);
fail_ring:
    evs__free(s->slot_mem);
    evs__ring_fini(&s->ring);
fail_hist_lock:
    evs__router_destroy(s->router);
    pthread_mutex_destroy(&s->hist_lock);
fail_sub_lock:
    pthread_mutex_destroy(&s->sub_lock);
fail_hist:
    evs__free(s->htime);
    evs__rate_destroy(&s->rate);
    evs__free(s->hist);
    evs__free(s);
    return rc;
}

/* Events accepted but not yet settled by the dispatcher. */
static uint64_t undelivered(evs_stream *s)
{
    if (is_inline(s))
        return evs_load(&s->inline_active);
    return evs__ring_claimed(&s->ring) - evs_load_acquire(&s->done);
}

/* Inline: publishes with an id up to `target` still delivering. */
static uint64_t inline_pending(evs_stream *s, uint64_t target)
{
    uint64_t n = 0;
    pthread_mutex_lock(&s->hist_lock);
    for (const struct inline_pub *p = s->inflight_head; p != NULL && p->id <= target; p = p->next)
        n++;
    pthread_mutex_unlock(&s->hist_lock);
    return n;
}

/* Wait until every event numbered up to `target` has been delivered:
 * `done` reaches it (dispatcher mode), or no inline publish with such an
 * id is still delivering (inline mode: later publishes are not waited
 * for, so a busy stream cannot hold the wait forever), up to timeout_ms. */
static int wait_settled(evs_stream *s, uint64_t target, int timeout_ms, uint64_t *left)
{
    int64_t deadline = timeout_ms < 0 ? -1 : evs__deadline_after_ms(timeout_ms);
    int rc = 0;
    for (unsigned round = 0;; round++) {
        uint32_t seen = ck_ec32_value(&s->run_ec);
        uint64_t rest = is_inline(s) ? inline_pending(s, target)
                                     : target - evs_load_acquire(&s->done);
        if ((int64_t)rest <= 0) {
            rest = 0;
            break;
        }
        if (timeout_ms == 0 || in_handler_of(s) ||
            (deadline >= 0 && evs__now_mono_ns() >= deadline)) {
            rc = EVS_ETIMEDOUT;
            if (left != NULL)
                *left = rest;
            return rc;
        }
        if (is_inline(s))
            evs__backoff(round);
        else
            evs__ec_wait(&s->run_ec, seen, deadline);
    }
    if (left != NULL)
        *left = 0;
    return rc;
}

/* The deadline for waiting on pools: the same timeout, from now. */
static int64_t pools_deadline(int timeout_ms)
{
    return timeout_ms < 0 ? -1 : timeout_ms == 0 ? 0 : evs__deadline_after_ms(timeout_ms);
}

int evs_stream_flush(evs_stream *s, int timeout_ms, uint64_t *left)
{
    if (left != NULL)
        *left = 0;
    if (s == NULL)
        return EVS_EINVAL;
    if (in_handler_of(s))
        return EVS_EDEADLK;
    int64_t deadline = pools_deadline(timeout_ms);
    uint64_t target = ids_issued(s);
    waiter_enter(s);
    int rc = wait_settled(s, target, timeout_ms, left);
    waiter_leave(s);
    /* Then the pooled calls of what was delivered (only counted, not
     * waited for, when time is already up). */
    int prc = wait_pools(s, rc == 0 ? deadline : 0, left);
    return rc != 0 ? rc : prc;
}

int evs_stream_close(evs_stream *s, int timeout_ms, uint64_t *left)
{
    if (left != NULL)
        *left = 0;
    if (s == NULL)
        return EVS_EINVAL;
    uint64_t target = 0;
    if (is_inline(s)) {
        pthread_mutex_lock(&s->hist_lock);
        s->inline_closed = 1;
        target = s->inline_seq;
        pthread_mutex_unlock(&s->hist_lock);
    } else {
        target = evs__ring_close(&s->ring);
        /* Wake the dispatcher and publishers waiting for room. */
        ck_ec32_inc(&s->pub_ec, &evs__ec_mp);
        ck_ec32_inc(&s->run_ec, &evs__ec_mp);
    }
    int64_t deadline = pools_deadline(timeout_ms);
    waiter_enter(s);
    int rc = wait_settled(s, target, timeout_ms, left);
    waiter_leave(s);
    /* As flush: then the pooled calls. Inside a handler (a pool's
     * worker included) nothing waits: they are only counted. */
    int prc = wait_pools(s, rc == 0 && !in_handler_of(s) ? deadline : 0, left);
    return rc != 0 ? rc : prc;
}

int evs_stream_destroy(evs_stream *s)
{
    if (s == NULL)
        return 0;
    if (in_handler_of(s))
        return EVS_EDEADLK;
    evs_stream_close(s, EVS_FOREVER, NULL);
    /* After this no heartbeat callback runs for the stream. */
    evs__hb_remove(s->hb);
    if (s->has_thread) {
        evs_store(&s->stop, 1);
        ck_ec32_inc(&s->pub_ec, &evs__ec_mp);
        pthread_join(s->thread, NULL);
        evs__epoch_record_release(s->dispatcher_record);
        evs__ring_fini(&s->ring);
    }
    if (s->slot_mem != NULL) {
        for (size_t i = 0; i < s->opts.capacity; i++)
            evs__event_slot_fini(s->slot_mem + i * s->slot_stride);
        evs__free(s->slot_mem);
    }
    /* No reader is left: the dispatcher has exited and the caller
     * promises no concurrent publishers. Free the current set and every
     * subscription in it directly; older sets were retired already. */
    struct sub_array *a = s->subs;
    /* Pooled subscriptions: close has waited for their calls; end their
     * workers, then wait until the last worker of every pool (also of
     * those that unsubscribed from a worker) has stopped touching `s`. */
    for (size_t i = 0; a != NULL && i < a->n; i++)
        evs__workers_stop(a->subs[i]->pool);
    for (unsigned round = 0; evs_load_acquire(&s->pools_live) != 0; round++)
        evs__backoff(round);
    for (size_t i = 0; a != NULL && i < a->n; i++)
        free_sub(a->subs[i]);
    evs__free(a);
    for (size_t i = 0; i < s->hist_len; i++)
        evs_event_unref(s->hist[(s->hist_start + i) % s->hist_cap]);
    evs__free(s->hist);
    evs__router_destroy(s->router);
    pthread_mutex_destroy(&s->sub_lock);
    pthread_mutex_destroy(&s->hist_lock);
    evs__free(s->htime);
    evs__rate_destroy(&s->rate);
    evs__free(s);
    /* Frees retired by threads that have exited since (the dispatcher,
     * pool workers) run now, not at some later retire. */
    evs__epoch_reap();
    return 0;
}

int evs_stream_topics(evs_stream *s, evs_topic_fn fn, void *user)
{
    if (s == NULL || fn == NULL || s->router == NULL)
        return EVS_EINVAL;
    return evs__router_topics(s->router, fn, user);
}

int evs_stream_stats_get(evs_stream *s, evs_stream_stats *out)
{
    if (s == NULL || out == NULL)
        return EVS_EINVAL;
    memset(out, 0, sizeof(*out));
    out->published = ids_issued(s) - evs_load(&s->dropped_nomem);
    out->delivered = evs_load(&s->delivered);
    out->filtered = evs_load(&s->filtered);
    out->handler_errors = evs_load(&s->handler_errors) + evs_load(&s->worker_errors);
    out->dropped_newest = evs_load(&s->dropped_newest);
    out->dropped_oldest = evs_load(&s->dropped_oldest);
    out->rejected_full = evs_load(&s->rejected_full);
    out->timed_out = evs_load(&s->timed_out);
    out->dropped_nomem = evs_load(&s->dropped_nomem);
    out->queued = undelivered(s);
    out->queue_hwm = evs_load(&s->queue_hwm);
    out->unroutable = evs_load(&s->unroutable);
    out->heartbeats = evs_load(&s->heartbeats);
    if (s->router != NULL) {
        out->topics = evs__router_topic_count(s->router);
        out->topics_untracked = evs__router_untracked(s->router);
        out->topics_evicted = evs__router_evicted(s->router);
    }
    struct sub_array *a;
    pthread_mutex_lock(&s->sub_lock);
    a = s->subs;
    for (size_t i = 0; a != NULL && i < a->n; i++)
        out->subscribers += !evs_load(&a->subs[i]->dead);
    pthread_mutex_unlock(&s->sub_lock);
    uint64_t c[EVS__RATE_COUNTERS] = {out->published, out->delivered};
    double r[EVS__RATE_COUNTERS];
    evs__rate_sample(&s->rate, evs__now_mono_ns(), s->rate_interval_ns, c, r);
    out->published_per_s = r[0];
    out->delivered_per_s = r[1];
    evs__hist_read(s->htime, &out->handler);
    return 0;
}
