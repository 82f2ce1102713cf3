/*
 * Batching subscriber: collects a subscription's events and hands them
 * to the user's evs_batch_fn in batches, when a batch reaches
 * max_events or flush_ms after its first event, and on stop.
 *
 * Threads. The subscription's handler (the stream's dispatcher, or
 * publishers under inline delivery) appends events; a heartbeat-service
 * timer (heartbeat.h) flushes a batch whose time is up; evs_batch_stop
 * flushes the remainder. Any of the three may call fn.
 *
 * Locks, taken in this order and private to this file:
 *   1. flushing  held from swapping a batch out until fn has returned and
 *                its events are unreffed. It makes flushes one at a time
 *                and in order: a batch is swapped out only by the holder,
 *                so the next batch cannot overtake one still in fn. It is
 *                the one lock under which user code (fn) runs; fn cannot
 *                reach it again except through evs_batch_stop on its own
 *                batcher, which is refused with EVS_EDEADLK (tl_flushing).
 *   2. lock      guards cur, n, first_ns and timer; held for a few
 *                instructions (and for evs__hb_add, below).
 * Neither is held while calling evs_unsubscribe or evs__hb_remove (both
 * wait for callbacks that take these locks). evs__hb_add is called under
 * `lock`; it takes only the service mutex and may join a stopping
 * service thread. The thread stops only after our fire() removed the
 * last timer, and after that fire() only finishes fn and releases
 * `flushing` (which the joiner does not hold), so the join cannot wait
 * for us; it can wait for that fn. The service never holds its mutex while
 * calling fire().
 *
 * The timer. heartbeat.h can add and remove timers but not move one
 * earlier, so the timer lives only while a batch is open: the handler
 * adds it when an event opens a batch and no timer exists (deadline
 * first_ns + flush_ns); when it fires it flushes a batch that is due, or
 * re-arms for the current batch's deadline if a size flush meanwhile
 * started a newer batch, or removes itself when there is nothing left.
 * So a steady stream keeps one timer, and an idle batcher holds none.
 * Invariant: `timer` != NULL exactly while a registered timer will look
 * at the batch; whoever clears it (fire, under `lock`, or stop) removes
 * the timer.
 */
#include "evs_internal.h"
#include "heartbeat.h"

#include <pthread.h>

#define DEFAULT_MAX_EVENTS 1000u /* large enough to amortise fn, small
                                    enough to bound the memory held */
#define DEFAULT_FLUSH_MS   1000  /* a second: the seed's default latency */

struct evs_batcher {
    evs_stream    *stream;      /* borrowed until stop */
    evs_sub       *sub;         /* set once at subscribe; cleared by stop */
    evs_batch_fn   fn;
    evs_filter_fn  filter;
    void          *user;
    void          *filter_user;
    size_t         max;         /* max_events, >= 1 */
    int64_t        flush_ns;    /* > 0 */

    pthread_mutex_t flushing;   /* lock 1: one flush (fn call) at a time */
    pthread_mutex_t lock;       /* lock 2: the fields below */
    const evs_event **cur;      /* the open batch: n < max between calls
                                   (a handler that fills it flushes it
                                   before returning) */
    size_t         n;
    int64_t        first_ns;    /* service clock when cur[0] arrived */
    evs__hb_timer *timer;       /* see the invariant above */
    const evs_event **spare;    /* the array swapped in by a flush; only
                                   the `flushing` holder touches it */
};

/* The batcher whose fn this thread is running, to refuse a stop that
 * would wait for itself. */
static _Thread_local const evs_batcher *tl_flushing;

/* Call fn on a batch taken out under `flushing` (held by the caller),
 * then drop the batch's references. */
static void hand_over(evs_batcher *b, const evs_event **batch, size_t n)
{
    if (n == 0)
        return;
    tl_flushing = b;
    b->fn(batch, n, b->user);
    tl_flushing = NULL;
    for (size_t i = 0; i < n; i++)
        evs_event_unref(batch[i]);
}

/*
 * Hand the open batch to fn: if it is non-empty, or with `only_if_full`
 * only if it is full (a handler whose full batch another flush already
 * took must not send the next one early). Takes both locks; runs fn with
 * only `flushing` held.
 */
static void flush(evs_batcher *b, bool only_if_full)
{
    pthread_mutex_lock(&b->flushing);
    pthread_mutex_lock(&b->lock);
    size_t n = b->n;
    if (only_if_full && n < b->max)
        n = 0; /* someone flushed it first: not ours to send early */
    const evs_event **batch = NULL;
    if (n > 0) {
        batch = b->cur;
        b->cur = b->spare;
        b->spare = batch;
        b->n = 0;
    }
    pthread_mutex_unlock(&b->lock);
    hand_over(b, batch, n);
    pthread_mutex_unlock(&b->flushing);
}

/*
 * The flush timer (heartbeat service thread). Flushes a due batch, or
 * re-arms for a newer one, or removes itself once nothing is open.
 */
static int64_t fire(void *user, int64_t now_ns)
{
    evs_batcher *b = user;
    pthread_mutex_lock(&b->flushing);
    pthread_mutex_lock(&b->lock);
    evs__hb_timer *self = b->timer;
    if (self == NULL) {
        /* evs_batch_stop took the timer and is waiting in
         * evs__hb_remove for this call to return; it flushes itself. */
        pthread_mutex_unlock(&b->lock);
        pthread_mutex_unlock(&b->flushing);
        return -1;
    }
    if (b->n > 0 && now_ns < b->first_ns + b->flush_ns) {
        /* A size flush started a newer batch: wait for its deadline. */
        int64_t next = b->first_ns + b->flush_ns;
        pthread_mutex_unlock(&b->lock);
        pthread_mutex_unlock(&b->flushing);
        return next;
    }
    /* Due, or empty: take the batch and retire the timer; the next event
     * opens a batch and adds a new one. Removing from inside its own
     * callback returns at once; the service frees it after we return.
     * We must not touch `b` after unlocking `flushing`: once the timer
     * is cleared, evs_batch_stop does not wait for this call and may
     * free `b` as soon as it gets `flushing`. */
    b->timer = NULL;
    evs__hb_remove(self);
    size_t n = b->n;
    const evs_event **batch = b->cur;
    if (n > 0) {
        b->cur = b->spare;
        b->spare = batch;
        b->n = 0;
    }
    pthread_mutex_unlock(&b->lock);
    hand_over(b, batch, n);
    pthread_mutex_unlock(&b->flushing);
    return -1; /* ignored: the timer is removed */
}

static bool batch_filter(const evs_event *ev, void *user)
{
    evs_batcher *b = user;
    return b->filter(ev, b->filter_user);
}

/* The subscription's handler: append, arm the timer, flush when full. */
static int batch_handler(const evs_event *ev, void *user)
{
    evs_batcher *b = user;
    /* A slot event's ref is a heap copy (or NULL); take it before any
     * lock so that a failure leaves the batch untouched. */
    const evs_event *mine = evs_event_ref(ev);
    if (mine == NULL)
        return EVS_ENOMEM;
    int rc = 0;
    pthread_mutex_lock(&b->lock);
    /* Only under inline delivery with concurrent publishers can another
     * handler have filled the batch and not yet flushed it. */
    while (b->n >= b->max) {
        pthread_mutex_unlock(&b->lock);
        flush(b, true);
        pthread_mutex_lock(&b->lock);
    }
    if (b->n == 0)
        b->first_ns = evs__hb_now();
    b->cur[b->n++] = mine;
    bool full = b->n == b->max;
    if (!full && b->timer == NULL) {
        rc = evs__hb_add(&b->timer, b->flush_ns, fire, b);
        /* Without a timer the batch could wait forever: hand it over
         * now rather than late, and report why. */
        full = rc != 0;
    }
    pthread_mutex_unlock(&b->lock);
    if (full)
        flush(b, rc == 0);
    return rc;
}

int evs_batch_subscribe(evs_batcher **out, evs_stream *s, const char *pattern,
                        evs_batch_fn fn, evs_filter_fn filter, void *user,
                        const evs_batch_opts *opts)
{
    if (out != NULL)
        *out = NULL;
    evs_batch_opts o = {0};
    if (opts != NULL)
        o = *opts;
    if (out == NULL || s == NULL || fn == NULL || o.flush_ms < 0)
        return EVS_EINVAL;
    size_t max = o.max_events ? o.max_events : DEFAULT_MAX_EVENTS;
    if (max > SIZE_MAX / 2 / sizeof(evs_event *))
        return EVS_EINVAL;
    evs_batcher *b = evs__calloc(1, sizeof(*b));
    if (b == NULL)
        return EVS_ENOMEM;
    b->cur = evs__malloc(max * sizeof(evs_event *));
    b->spare = b->cur ? evs__malloc(max * sizeof(evs_event *)) : NULL;
    if (b->spare == NULL) {
        evs__free(b->cur);
        evs__free(b);
        return EVS_ENOMEM;
    }
    b->stream = s;
    b->fn = fn;
    b->filter = filter;
    b->user = user;
    b->filter_user = o.filter_user ? o.filter_user : user;
    b->max = max;
    b->flush_ns = (int64_t)(o.flush_ms ? o.flush_ms : DEFAULT_FLUSH_MS) * 1000000;
    pthread_mutex_init(&b->flushing, NULL);
    pthread_mutex_init(&b->lock, NULL);
    int rc = evs_subscribe(&b->sub, s, pattern, batch_handler,
                           filter ? batch_filter : NULL, b, NULL);
    if (rc != 0) {
        pthread_mutex_destroy(&b->lock);
        pthread_mutex_destroy(&b->flushing);
        evs__free(b->spare);
        evs__free(b->cur);
        evs__free(b);
        return rc;
    }
    *out = b;
    return 0;
}

int evs_batch_stop(evs_batcher *b)
{
    if (b == NULL)
        return 0;
    if (tl_flushing == b)
        return EVS_EDEADLK;
    /* 1. Everything the stream accepted before this call reaches the
     *    handler. Inside a handler of the stream this would wait for
     *    itself (EVS_EDEADLK): then what is queued behind that handler's
     *    event is not included, as for evs_unsubscribe. */
    (void)evs_stream_flush(b->stream, EVS_FOREVER, NULL);
    /* 2. No more events: once this returns the handler is not running
     *    and never runs again, so only the timer and we touch the batch. */
    evs_unsubscribe(b->sub);
    b->sub = NULL;
    /* 3. No more time flushes. A fire() already past its check of
     *    `timer` cleared it and removed itself; we then do not wait for
     *    it here, but step 4 waits for it on `flushing`. */
    pthread_mutex_lock(&b->lock);
    evs__hb_timer *t = b->timer;
    b->timer = NULL;
    pthread_mutex_unlock(&b->lock);
    if (t != NULL)
        evs__hb_remove(t);
    /* 4. The remainder, after any flush in progress. */
    flush(b, false);
    /* A fire() that removed itself unlocked `flushing` as its last touch
     * of `b`, and flush() has since taken and released it: `b` is ours. */
    pthread_mutex_destroy(&b->lock);
    pthread_mutex_destroy(&b->flushing);
    evs__free(b->spare);
    evs__free(b->cur);
    evs__free(b);
    return 0;
}
