/*
 * Bounded concurrent handlers: a subscription made with
 * evs_sub_opts.max_concurrent = K > 0 runs its handler on K worker
 * threads of its own, so at most K calls are in flight; with a key
 * function, events whose keys are equal run one at a time, in the order
 * they were delivered, while different keys run side by side.
 *
 * Threads. The delivering thread (the stream's dispatcher, or publishers
 * under inline delivery, or the heartbeat thread for an inline stream's
 * heartbeats) runs the filter and pool_handler, which takes a reference
 * on the event and queues it; the K workers take queued events and call
 * the user's handler; unsubscribe, flush, close and destroy wait for the
 * pool (stream.c calls evs__workers_stop and evs__workers_wait).
 *
 * Order. Every queued event sits in a lane: with a key function, the
 * lane of its key (a hash table maps keys to lanes); without one, a lane
 * of its own. A lane is on the ready FIFO when it has a waiting event
 * and no call running; a worker pops the first ready lane, runs its
 * oldest event, and puts the lane back at the tail if more are waiting.
 * So one key never has two calls in flight and its events start in
 * queue order (delivery order: id order on a dispatcher stream), keys
 * take turns fairly, and K = 1 is one call at a time in queue order.
 *
 * Backpressure, not loss. At most `qmax` events wait (not counting the
 * K running); a delivering thread that finds the queue full waits for
 * room on `room`. The dispatcher then stops taking events, the stream's
 * ring fills and its overflow policy applies to publishers, where every
 * drop is counted. The one exception is a worker of this pool that
 * delivers to it (its handler publishes to an inline stream): it must
 * not wait for room only it and its siblings can make, so the event is
 * refused with EVS_EDEADLK, counted in `rejected` and reported as a
 * handler error. Nothing else is dropped, except the queue an
 * unsubscribe from inside a call discards (`discarded`).
 *
 * Memory. Jobs and lanes are allocated at create, qmax + K of each (every
 * waiting or running event holds one job, and every lane holds at least
 * one job), so queueing never allocates; the event reference is the
 * only per-event cost (a heap copy for slot events, evs_stream_claim).
 *
 * Lifetime. The pool is reference-counted (`refs`): one reference for
 * the subscription, dropped when its memory is freed (free_sub in
 * stream.c), and one per live worker thread, dropped as the thread's
 * last act. Workers are detached, so a pool whose subscription was ended
 * from inside one of its own calls needs no joiner. Each call runs in an
 * epoch section of the worker's own record, as the dispatcher's do, so
 * the subscription it reports errors to stays allocated even when that
 * call unsubscribed it. The last worker to exit tells the stream
 * (evs__stream_pool_done), which destroy waits for: a worker may touch
 * the stream until then.
 *
 * Locks. `mu` guards every field below it in struct evs__workers, lanes
 * and jobs. It is a leaf: no user code (handler, filter, key function,
 * on_error) runs and no other evstream lock is taken while it is held;
 * evs_event_unref of a discarded event is the only call made under it.
 * Callers may hold sub_lock when they take it (nothing here takes
 * sub_lock), so the order is sub_lock, then a pool's `mu`.
 */
#include "evs_internal.h"

#include <pthread.h>
#include <time.h>

#include "epoch.h"
#include "stream.h"
#include "workers.h"

/* Events that may wait for a worker: four of the dispatcher's runs of
 * 256, so K workers stay busy while it fetches the next run, and small
 * (64 KiB of jobs and lanes) next to the ring behind it. */
#define DEFAULT_QUEUE 1024u

struct job {
    const evs_event *ev; /* our reference: a heap copy for slot events */
    struct job *next;    /* lane order, or the free list */
};

struct lane {
    uint64_t key;
    struct lane *hnext;      /* hash bucket chain (keyed pools) */
    struct lane *rnext;      /* ready FIFO, or the free list */
    struct job *head, *tail; /* waiting events of this lane, oldest first */
    bool running;            /* a call of this lane is in flight */
    bool used;               /* allocated (abandon walks every lane) */
};

struct evs__workers {
    /* Read-only after create. */
    evs_sub *sub;          /* for error reports; the stream frees it */
    evs_stream *stream;
    evs_handler_fn handler;
    evs_filter_fn filter;
    void *user;
    evs_key_fn key;        /* NULL: every event has a lane of its own */
    void *key_user;
    unsigned k;            /* worker threads = most calls in flight */
    unsigned qmax;         /* most events waiting */
    struct job *jobs;      /* qmax + k of them */
    struct lane *lanes;    /* qmax + k of them */
    size_t nslots;         /* qmax + k */
    struct lane **buckets; /* keyed pools: 2^n >= nslots chains */
    size_t mask;
    ck_epoch_record_t **records; /* one per worker; each thread takes one
                                    and releases it when it exits */

    /* Atomic: one reference for the subscription plus one per live
     * worker thread; whoever takes it to zero frees the pool. The
     * decrement is acq_rel, so every earlier use by the other holders
     * happens before the free. (__atomic rather than ck_pr: under
     * CK_USE_CC_BUILTINS ck_pr_dec_uint_is_zero is a volatile load plus
     * a CAS loop, and TSan reports the load as a race.) */
    unsigned refs;

    pthread_mutex_t mu;    /* guards everything below (a leaf lock) */
    pthread_cond_t work;   /* workers: a lane became ready, or closing */
    pthread_cond_t room;   /* delivering threads: queue below qmax, or closing */
    pthread_cond_t idle;   /* stop, wait, create: a call ended, events were
                              discarded, a thread exited (CLOCK_MONOTONIC) */
    struct job *free_jobs;
    struct lane *free_lanes;
    struct lane *ready_head, *ready_tail; /* lanes with work and no call */
    unsigned queued;       /* events waiting: <= qmax */
    unsigned running;      /* calls in flight: <= k */
    unsigned threads;      /* worker threads started and not yet exited */
    unsigned next_record;  /* records handed to starting threads */
    unsigned idle_waiters; /* threads waiting on `idle` (wake only then) */
    bool closing;          /* no more events; workers exit (stop drained
                              the queue first, abandon discarded it) */
    bool counted;          /* create succeeded: the last worker to exit
                              calls evs__stream_pool_done */
    /* Counters (evs_pool_stats). finished = completed + queued events
     * discarded: evs__workers_wait compares it with `enqueued`. */
    uint64_t enqueued, finished, completed, errors, waits, discarded,
        rejected, nomem;
    unsigned running_hwm, queued_hwm;
};

/* The pool whose handler this thread is running (set around each call). */
static _Thread_local const evs__workers *tl_pool;

/* ------------------------------------------------------------------ */
/* Lanes, jobs and the ready FIFO (all under mu)                       */

/*
 * Keys to lanes: a chained table over the preallocated lanes, sized once
 * at create for every lane that can exist. Not ck_hs: its put may grow
 * the table (allocate, and fail), and a pool promises that queueing an
 * event never allocates and never fails for lack of memory; the table
 * is only touched under `mu`, so ck_hs's concurrent readers buy nothing.
 */
static size_t bucket_of(const evs__workers *p, uint64_t key)
{
    /* Keys may be small integers or hashes; mix so both spread. */
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdULL;
    key ^= key >> 33;
    return (size_t)key & p->mask;
}

static struct lane *lane_find(evs__workers *p, uint64_t key)
{
    for (struct lane *l = p->buckets[bucket_of(p, key)]; l != NULL; l = l->hnext)
        if (l->key == key)
            return l;
    return NULL;
}

/* A fresh lane; never fails: there are as many lanes as jobs. */
static struct lane *lane_new(evs__workers *p, uint64_t key)
{
    struct lane *l = p->free_lanes;
    p->free_lanes = l->rnext;
    *l = (struct lane){.key = key, .used = true};
    if (p->key != NULL) {
        struct lane **b = &p->buckets[bucket_of(p, key)];
        l->hnext = *b;
        *b = l;
    }
    return l;
}

static void lane_free(evs__workers *p, struct lane *l)
{
    if (p->key != NULL) {
        struct lane **pp = &p->buckets[bucket_of(p, l->key)];
        while (*pp != l)
            pp = &(*pp)->hnext;
        *pp = l->hnext;
    }
    l->used = false;
    l->rnext = p->free_lanes;
    p->free_lanes = l;
}

static void ready_push(evs__workers *p, struct lane *l)
{
    l->rnext = NULL;
    if (p->ready_tail != NULL)
        p->ready_tail->rnext = l;
    else
        p->ready_head = l;
    p->ready_tail = l;
}

static struct lane *ready_pop(evs__workers *p)
{
    struct lane *l = p->ready_head;
    p->ready_head = l->rnext;
    if (p->ready_head == NULL)
        p->ready_tail = NULL;
    return l;
}

static void job_free(evs__workers *p, struct job *j)
{
    j->next = p->free_jobs;
    p->free_jobs = j;
}

static void wake_idle_waiters(evs__workers *p)
{
    if (p->idle_waiters > 0)
        pthread_cond_broadcast(&p->idle);
}

/* ------------------------------------------------------------------ */
/* The delivering side                                                 */

static bool pool_filter(const evs_event *ev, void *user)
{
    const evs__workers *p = user;
    return p->filter(ev, p->user);
}

/* Count an event the pool could not take, and report it as the
 * subscription's handler error (stream.c, evs__sub_handler_error). */
static void refuse(evs__workers *p, const evs_event *ev, uint64_t *counter, int rc)
{
    pthread_mutex_lock(&p->mu);
    (*counter)++;
    pthread_mutex_unlock(&p->mu);
    evs__sub_handler_error(p->sub, ev, rc);
}

/*
 * The subscription's handler as the stream sees it: queue the event for
 * a worker, waiting for room if the queue is full. Always returns 0, so
 * the stream never counts an error for this subscription itself: its
 * error counter is written only through evs__sub_handler_error (atomic),
 * by workers and by refuse(), never by the dispatcher's plain adds.
 */
static int pool_handler(const evs_event *ev, void *user)
{
    evs__workers *p = user;
    /* User code and a possible copy, before the lock. */
    uint64_t key = p->key != NULL ? p->key(ev, p->key_user) : 0;
    const evs_event *mine = evs_event_ref(ev);
    if (mine == NULL) {
        refuse(p, ev, &p->nomem, EVS_ENOMEM); /* a slot event's copy */
        return 0;
    }
    pthread_mutex_lock(&p->mu);
    if (p->queued >= p->qmax && !p->closing) {
        if (tl_pool == p) {
            /* Only this pool's workers make room, and we are one. */
            pthread_mutex_unlock(&p->mu);
            evs_event_unref(mine);
            refuse(p, ev, &p->rejected, EVS_EDEADLK);
            return 0;
        }
        p->waits++;
        while (p->queued >= p->qmax && !p->closing)
            pthread_cond_wait(&p->room, &p->mu);
    }
    if (p->closing) {
        /* Only an unsubscribe from inside a call closes a pool that is
         * still being delivered to; the event was meant for the ended
         * subscription. */
        p->discarded++;
        pthread_mutex_unlock(&p->mu);
        evs_event_unref(mine);
        return 0;
    }
    struct job *j = p->free_jobs;
    p->free_jobs = j->next;
    j->ev = mine;
    j->next = NULL;
    struct lane *l = p->key != NULL ? lane_find(p, key) : NULL;
    if (l == NULL) {
        l = lane_new(p, key);
        ready_push(p, l);
    }
    /* An existing lane is on the FIFO already, or running (its worker
     * puts it back when the call ends): just append. */
    if (l->tail != NULL)
        l->tail->next = j;
    else
        l->head = j;
    l->tail = j;
    p->queued++;
    p->enqueued++;
    if (p->queued > p->queued_hwm)
        p->queued_hwm = p->queued;
    pthread_cond_signal(&p->work);
    pthread_mutex_unlock(&p->mu);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Workers                                                             */

static void *worker_main(void *arg)
{
    evs__workers *p = arg;
    pthread_mutex_lock(&p->mu);
    ck_epoch_record_t *rec = p->records[p->next_record++];
    for (;;) {
        while (p->ready_head == NULL && !p->closing)
            pthread_cond_wait(&p->work, &p->mu);
        if (p->closing)
            break; /* stop drained the queue first; abandon emptied it */
        struct lane *l = ready_pop(p);
        struct job *j = l->head;
        l->head = j->next;
        if (l->head == NULL)
            l->tail = NULL;
        l->running = true;
        p->queued--;
        p->running++;
        if (p->running > p->running_hwm)
            p->running_hwm = p->running;
        pthread_cond_signal(&p->room);
        pthread_mutex_unlock(&p->mu);

        ck_epoch_section_t section;
        evs__epoch_begin(rec, &section);
        tl_pool = p;
        bool timed = evs__sub_timed(p->sub);
        int64_t t0 = timed ? evs__now_mono_ns() : 0;
        int rc = p->handler(j->ev, p->user);
        if (timed)
            evs__sub_record_time(p->sub, (uint64_t)(evs__now_mono_ns() - t0));
        tl_pool = NULL;
        if (rc != 0)
            evs__sub_handler_error(p->sub, j->ev, rc);
        evs__epoch_end(rec, &section);
        evs_event_unref(j->ev);

        pthread_mutex_lock(&p->mu);
        p->running--;
        p->completed++;
        p->finished++;
        if (rc != 0)
            p->errors++;
        job_free(p, j);
        l->running = false;
        if (l->head != NULL)
            ready_push(p, l); /* the key's next event, after other keys */
        else
            lane_free(p, l);
        wake_idle_waiters(p);
    }
    p->threads--;
    bool last = p->threads == 0 && p->counted;
    wake_idle_waiters(p);
    pthread_mutex_unlock(&p->mu);
    evs__epoch_record_release(rec);
    if (last)
        evs__stream_pool_done(p->stream); /* our last touch of the stream */
    evs__workers_unref(p);
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Lifecycle                                                           */

int evs__workers_opts_check(const evs_sub_opts *o)
{
    if (o == NULL)
        return 0;
    if (o->max_concurrent > EVS_MAX_CONCURRENT || o->queue > EVS_MAX_POOL_QUEUE)
        return EVS_EINVAL;
    if (o->max_concurrent == 0 && (o->key != NULL || o->key_user != NULL || o->queue != 0))
        return EVS_EINVAL; /* pool options without a pool: a mistake */
    return 0;
}

static void pool_free(evs__workers *p)
{
    pthread_cond_destroy(&p->idle);
    pthread_cond_destroy(&p->room);
    pthread_cond_destroy(&p->work);
    pthread_mutex_destroy(&p->mu);
    evs__free(p->records);
    evs__free(p->buckets);
    evs__free(p->lanes);
    evs__free(p->jobs);
    evs__free(p);
}

void evs__workers_ref(evs__workers *p) { __atomic_add_fetch(&p->refs, 1, __ATOMIC_RELAXED); }

void evs__workers_unref(evs__workers *p)
{
    if (p != NULL && __atomic_sub_fetch(&p->refs, 1, __ATOMIC_ACQ_REL) == 0)
        pool_free(p);
}

static int cond_init_mono(pthread_cond_t *c)
{
    pthread_condattr_t a;
    if (pthread_condattr_init(&a) != 0)
        return EVS_ESYSTEM;
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(c, &a) != 0 ? EVS_ESYSTEM : 0;
    pthread_condattr_destroy(&a);
    return rc;
}

/* Allocate the pool with its jobs, lanes and buckets, all free. */
static int pool_alloc(evs__workers **out, unsigned k, unsigned qmax, bool keyed)
{
    evs__workers *p = evs__calloc(1, sizeof(*p));
    if (p == NULL)
        return EVS_ENOMEM;
    p->k = k;
    p->qmax = qmax;
    p->nslots = (size_t)qmax + k;
    p->jobs = evs__calloc(p->nslots, sizeof(*p->jobs));
    p->lanes = p->jobs ? evs__calloc(p->nslots, sizeof(*p->lanes)) : NULL;
    p->records = p->lanes ? evs__calloc(k, sizeof(*p->records)) : NULL;
    if (p->records != NULL && keyed) {
        size_t nb = 16;
        while (nb < p->nslots)
            nb *= 2;
        p->mask = nb - 1;
        p->buckets = evs__calloc(nb, sizeof(*p->buckets));
    }
    if (p->records == NULL || (keyed && p->buckets == NULL)) {
        evs__free(p->records);
        evs__free(p->lanes);
        evs__free(p->jobs);
        evs__free(p);
        return EVS_ENOMEM;
    }
    for (size_t i = 0; i < p->nslots; i++) {
        job_free(p, &p->jobs[i]);
        p->lanes[i].rnext = p->free_lanes;
        p->free_lanes = &p->lanes[i];
    }
    int rc = EVS_ESYSTEM;
    if (pthread_mutex_init(&p->mu, NULL) != 0)
        goto fail;
    if (pthread_cond_init(&p->work, NULL) != 0)
        goto fail_mu;
    if (pthread_cond_init(&p->room, NULL) != 0)
        goto fail_work;
    if ((rc = cond_init_mono(&p->idle)) != 0)
        goto fail_room;
    *out = p;
    return 0;
fail_room:
    pthread_cond_destroy(&p->room);
fail_work:
    pthread_cond_destroy(&p->work);
fail_mu:
    pthread_mutex_destroy(&p->mu);
fail:
    evs__free(p->records);
    evs__free(p->buckets);
    evs__free(p->lanes);
    evs__free(p->jobs);
    evs__free(p);
    return rc;
}

int evs__workers_create(evs__workers **out, evs_sub *sub, evs_stream *s,
                        const evs_sub_opts *o, evs_handler_fn *handler,
                        evs_filter_fn *filter, void **user)
{
    *out = NULL;
    evs__workers *p;
    int rc = pool_alloc(&p, o->max_concurrent, o->queue ? o->queue : DEFAULT_QUEUE,
                        o->key != NULL);
    if (rc != 0)
        return rc;
    p->sub = sub;
    p->stream = s;
    p->handler = *handler;
    p->filter = *filter;
    p->user = *user;
    p->key = o->key;
    p->key_user = o->key_user != NULL ? o->key_user : *user;
    p->refs = 1; /* the subscription's */

    /* Every record first, so that a started thread always finds one. */
    unsigned nrec = 0;
    while (nrec < p->k && (p->records[nrec] = evs__epoch_record_new()) != NULL)
        nrec++;
    rc = nrec < p->k ? EVS_ENOMEM : 0;
    pthread_attr_t attr;
    if (rc == 0 && pthread_attr_init(&attr) != 0)
        rc = EVS_ESYSTEM;
    if (rc == 0) {
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        for (unsigned i = 0; i < p->k; i++) {
            pthread_t th;
            evs__workers_ref(p); /* the thread's */
            pthread_mutex_lock(&p->mu);
            p->threads++;
            pthread_mutex_unlock(&p->mu);
            if (pthread_create(&th, &attr, worker_main, p) != 0) {
                __atomic_sub_fetch(&p->refs, 1, __ATOMIC_RELAXED); /* not the last */
                pthread_mutex_lock(&p->mu);
                p->threads--;
                pthread_mutex_unlock(&p->mu);
                rc = EVS_ESYSTEM;
                break;
            }
        }
        pthread_attr_destroy(&attr);
    }
    if (rc != 0) {
        /* Let the threads that started exit, after each has taken its
         * record; the rest of the records are still ours to give back. */
        pthread_mutex_lock(&p->mu);
        p->closing = true;
        pthread_cond_broadcast(&p->work);
        p->idle_waiters++;
        while (p->threads > 0)
            pthread_cond_wait(&p->idle, &p->mu);
        p->idle_waiters--;
        unsigned taken = p->next_record;
        pthread_mutex_unlock(&p->mu);
        for (unsigned i = taken; i < nrec; i++)
            evs__epoch_record_release(p->records[i]);
        evs__workers_unref(p);
        return rc;
    }
    pthread_mutex_lock(&p->mu);
    p->counted = true;
    pthread_mutex_unlock(&p->mu);
    *handler = pool_handler;
    if (*filter != NULL)
        *filter = pool_filter;
    *user = p;
    *out = p;
    return 0;
}

bool evs__workers_inside(const evs__workers *p) { return p != NULL && tl_pool == p; }

evs_stream *evs__workers_current_stream(void)
{
    return tl_pool != NULL ? tl_pool->stream : NULL;
}

/* Unsubscribed from inside one of our calls: drop what waits, refuse
 * what comes, and wait for the other calls in flight. Under mu. */
static void abandon_locked(evs__workers *p)
{
    p->closing = true;
    for (size_t i = 0; i < p->nslots; i++) {
        struct lane *l = &p->lanes[i];
        if (!l->used)
            continue;
        for (struct job *j = l->head, *next; j != NULL; j = next) {
            next = j->next;
            evs_event_unref(j->ev);
            job_free(p, j);
            p->queued--;
            p->discarded++;
            p->finished++;
        }
        l->head = l->tail = NULL;
        if (!l->running)
            lane_free(p, l); /* a running lane is freed by its worker */
    }
    p->ready_head = p->ready_tail = NULL;
    pthread_cond_broadcast(&p->work);
    pthread_cond_broadcast(&p->room);
    wake_idle_waiters(p);
    p->idle_waiters++;
    while (p->running > 1)
        pthread_cond_wait(&p->idle, &p->mu);
    p->idle_waiters--;
}

void evs__workers_stop(evs__workers *p)
{
    if (p == NULL)
        return;
    pthread_mutex_lock(&p->mu);
    if (tl_pool == p) {
        if (!p->closing)
            abandon_locked(p);
    } else if (!p->closing) {
        /* Nothing is delivered any more (the caller's promise), so the
         * queue only shrinks: wait for it to drain and the calls to end. */
        p->idle_waiters++;
        while (p->queued > 0 || p->running > 0)
            pthread_cond_wait(&p->idle, &p->mu);
        p->idle_waiters--;
        p->closing = true;
        pthread_cond_broadcast(&p->work);
        pthread_cond_broadcast(&p->room);
    }
    pthread_mutex_unlock(&p->mu);
}

void evs__workers_release(evs__workers *p)
{
    if (p == NULL)
        return;
    pthread_mutex_lock(&p->mu);
    if (!p->closing) {
        p->closing = true;
        pthread_cond_broadcast(&p->work);
        pthread_cond_broadcast(&p->room);
    }
    pthread_mutex_unlock(&p->mu);
    evs__workers_unref(p);
}

int evs__workers_wait(evs__workers *p, int64_t deadline_ns, uint64_t *left)
{
    struct timespec dl = {
        .tv_sec = (time_t)(deadline_ns / 1000000000),
        .tv_nsec = (long)(deadline_ns % 1000000000),
    };
    int rc = 0;
    pthread_mutex_lock(&p->mu);
    uint64_t ticket = p->enqueued;
    p->idle_waiters++;
    while (p->finished < ticket) {
        if (deadline_ns < 0) {
            pthread_cond_wait(&p->idle, &p->mu);
        } else if (evs__now_mono_ns() >= deadline_ns) {
            rc = EVS_ETIMEDOUT;
            if (left != NULL)
                *left += ticket - p->finished;
            break;
        } else {
            pthread_cond_timedwait(&p->idle, &p->mu, &dl);
        }
    }
    p->idle_waiters--;
    pthread_mutex_unlock(&p->mu);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Public helpers                                                      */

uint64_t evs_key_topic(const evs_event *ev, void *user)
{
    (void)user;
    /* FNV-1a, 64 bits: equal topics give equal keys. */
    uint64_t h = 0xcbf29ce484222325ULL;
    for (const unsigned char *c = (const unsigned char *)evs_event_topic(ev); *c; c++) {
        h ^= *c;
        h *= 0x100000001b3ULL;
    }
    return h;
}

int evs_sub_pool_stats_get(const evs_sub *sub, evs_pool_stats *out)
{
    evs__workers *p = sub != NULL ? evs__sub_pool(sub) : NULL;
    if (p == NULL || out == NULL)
        return EVS_EINVAL;
    pthread_mutex_lock(&p->mu);
    *out = (evs_pool_stats){
        .max_concurrent = p->k,
        .queued = p->queued,
        .queued_hwm = p->queued_hwm,
        .in_flight = p->running,
        .in_flight_hwm = p->running_hwm,
        .completed = p->completed,
        .errors = p->errors,
        .waits = p->waits,
        .discarded = p->discarded,
        .rejected = p->rejected,
        .nomem = p->nomem,
    };
    pthread_mutex_unlock(&p->mu);
    return 0;
}
