/*
 * The heartbeat timer service: one thread, a min-heap of deadlines.
 *
 * Every timer's next deadline sits in a binary min-heap (an array of
 * pointers; each timer knows its index, so removal is O(log n) too),
 * guarded by the one mutex `svc.mu`. The service thread sleeps on
 * `svc.wake` until the earliest deadline: a pthread_cond_timedwait on a
 * CLOCK_MONOTONIC condition variable, or, under a test clock, an untimed
 * wait that evs__hb_kick() ends. Adding a timer that becomes the earliest
 * wakes it early. There is no polling: an idle service costs one
 * sleeping thread however many timers it holds.
 *
 * A due timer is popped, marked `running`, and its callback runs with the
 * mutex released; afterwards the thread re-inserts it at the deadline the
 * callback returned. Callers that must not overlap a callback (remove
 * from another thread) wait on `svc.done` until `running` clears. Remove
 * from inside the timer's own callback only marks it `removed` and
 * `thread_frees`, and the thread frees it when the callback returns. Capacity for every
 * registered timer is reserved when it is added, so re-inserting never
 * allocates and a callback's timer is never lost. evs__hb_fire_by moves
 * a queued timer's deadline earlier (it only sifts up); while the
 * callback runs it records the deadline in `sooner`, and the re-insert
 * takes the earlier of that and what the callback returned.
 *
 * Lifecycle: the first add starts the thread (THR_RUNNING). The thread
 * exits when it finds no timer registered. A remover of the last timer
 * outside a callback counts itself in `joiners`, so the exiting thread
 * leaves THR_EXITED and that remover (or a racing add) joins it. When the
 * last timer is removed inside a callback there is nobody to join, so the
 * thread detaches itself. An add that finds the thread exiting joins it
 * first and starts a new one.
 *
 * evs__hb_sync() bumps `sync_req`; the thread reads the request number,
 * then the clock, runs everything due, and publishes the number it read
 * as `sync_done` once nothing is due at that clock reading.
 *
 * Every field of `svc` and every timer field marked "mu" is read and
 * written only under `svc.mu`, except `svc.clock` (an atomic pointer,
 * set only while no timer exists). `svc.mu` is a leaf lock: nothing else
 * is taken while it is held, and no callback runs under it.
 */
#include "heartbeat.h"

#include "evs_internal.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <time.h>

#define NOT_QUEUED SIZE_MAX

struct evs__hb_timer {
    int64_t deadline;     /* next fire on the service clock; mu */
    uint64_t seq;         /* heap tie-break: equal deadlines fire FIFO; mu */
    size_t idx;           /* heap index, NOT_QUEUED while firing; mu */
    bool running;         /* its callback is in progress; mu */
    bool removed;         /* removed while running: do not re-arm; mu */
    bool thread_frees;    /* removed inside its own callback: the thread frees it; mu */
    int64_t sooner;       /* evs__hb_fire_by during the callback: the next
                             deadline is at most this (INT64_MAX: none); mu */
    int64_t interval;     /* > 0; immutable */
    evs__hb_fire_fn fire; /* immutable */
    void *user;           /* immutable */
};

enum thr_state {
    THR_NONE,    /* no thread */
    THR_RUNNING, /* serving; count > 0, except while it notices count == 0 */
    THR_EXITED,  /* returned from its main; a joiner must join it */
    THR_JOINING, /* someone is joining it, with the mutex released */
};

static struct {
    pthread_mutex_t mu;
    pthread_cond_t wake;     /* the thread waits here (CLOCK_MONOTONIC) */
    pthread_cond_t done;     /* callers wait here: a callback ended, a sync
                                was served, the thread exited or was joined */
    evs__hb_timer **heap;    /* min-heap by (deadline, seq); len <= count <= cap */
    size_t len, cap;
    size_t count;            /* registered timers: the heap plus the one firing */
    uint64_t seq;
    enum thr_state state;
    pthread_t thread;        /* valid unless state == THR_NONE */
    unsigned joiners;        /* removers waiting to join the exiting thread */
    uint64_t sync_req;       /* evs__hb_sync requests issued */
    uint64_t sync_done;      /* the highest request fully served */
    bool fail_start;         /* test hook: the next start fails */
    const struct evs__hb_clock *clock; /* NULL = CLOCK_MONOTONIC; atomic */
} svc = {
    .mu = PTHREAD_MUTEX_INITIALIZER,
    .done = PTHREAD_COND_INITIALIZER,
};

static pthread_once_t wake_once = PTHREAD_ONCE_INIT;

/* True on the service thread: callbacks run there, and nowhere else. */
static _Thread_local bool on_service_thread;

static void wake_init(void)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(&svc.wake, &a);
    pthread_condattr_destroy(&a);
}

static void lock(void)
{
    pthread_once(&wake_once, wake_init);
    pthread_mutex_lock(&svc.mu);
}

static void unlock(void) { pthread_mutex_unlock(&svc.mu); }

int64_t evs__hb_now(void)
{
    const struct evs__hb_clock *c = evs_load_acquire(&svc.clock);
    return c != NULL ? c->now(c->ctx) : evs__now_mono_ns();
}

static int64_t add_sat(int64_t a, int64_t b) /* b > 0 */
{
    return a > INT64_MAX - b ? INT64_MAX : a + b;
}

/* ---- the heap (all under mu) -------------------------------------- */

static bool before(const evs__hb_timer *a, const evs__hb_timer *b)
{
    return a->deadline < b->deadline || (a->deadline == b->deadline && a->seq < b->seq);
}

static void heap_put(size_t i, evs__hb_timer *t)
{
    svc.heap[i] = t;
    t->idx = i;
}

static void sift_up(size_t i)
{
    evs__hb_timer *t = svc.heap[i];
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!before(t, svc.heap[p]))
            break;
        heap_put(i, svc.heap[p]);
        i = p;
    }
    heap_put(i, t);
}

static void sift_down(size_t i)
{
    evs__hb_timer *t = svc.heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= svc.len)
            break;
        if (c + 1 < svc.len && before(svc.heap[c + 1], svc.heap[c]))
            c++;
        if (!before(svc.heap[c], t))
            break;
        heap_put(i, svc.heap[c]);
        i = c;
    }
    heap_put(i, t);
}

/* Needs len < cap, which add guarantees by reserving for every timer. */
static void heap_push(evs__hb_timer *t)
{
    t->seq = svc.seq++;
    heap_put(svc.len++, t);
    sift_up(t->idx);
}

static void heap_unlink(evs__hb_timer *t)
{
    size_t i = t->idx;
    evs__hb_timer *last = svc.heap[--svc.len];
    t->idx = NOT_QUEUED;
    if (i == svc.len)
        return;
    heap_put(i, last);
    sift_up(i);
    sift_down(last->idx);
}

/* With no timer left the array is freed, so an idle process holds
 * nothing and a failed first add leaves nothing behind. */
static void heap_release_if_empty(void)
{
    if (svc.count == 0) {
        evs__free(svc.heap);
        svc.heap = NULL;
        svc.cap = 0;
    }
}

static int heap_reserve(size_t n)
{
    if (svc.cap >= n)
        return 0;
    size_t cap = svc.cap ? svc.cap * 2 : 16;
    while (cap < n)
        cap *= 2;
    evs__hb_timer **h = evs__realloc(svc.heap, cap * sizeof *h);
    if (h == NULL)
        return EVS_ENOMEM;
    svc.heap = h;
    svc.cap = cap;
    return 0;
}

/* ---- the service thread ------------------------------------------- */

/* Sleep until `deadline` (service clock; INT64_MAX: until woken). A test
 * clock does not follow real time, so then only a wake-up ends it. */
static void wait_until(int64_t deadline)
{
    if (evs_load(&svc.clock) != NULL || deadline == INT64_MAX) {
        pthread_cond_wait(&svc.wake, &svc.mu);
        return;
    }
    struct timespec ts = {
        .tv_sec = (time_t)(deadline / 1000000000),
        .tv_nsec = (long)(deadline % 1000000000),
    };
    pthread_cond_timedwait(&svc.wake, &svc.mu, &ts);
}

/* Pop the earliest timer, run its callback unlocked, re-arm or free it. */
static void fire_first(int64_t now)
{
    evs__hb_timer *t = svc.heap[0];
    heap_unlink(t);
    t->running = true;
    unlock();
    int64_t next = t->fire(t->user, now);
    lock();
    t->running = false;
    if (next < 0)
        next = add_sat(now, t->interval);
    if (t->sooner < next)
        next = t->sooner; /* an evs__hb_fire_by that raced the callback */
    t->sooner = INT64_MAX;
    if (t->removed) {
        /* Otherwise the remover waiting below frees it. */
        if (t->thread_frees)
            evs__free(t);
    } else {
        if (next <= now)
            next = now + 1; /* at most one fire per clock reading */
        t->deadline = next;
        heap_push(t);
    }
    /* A remover may be waiting for this callback to end. */
    pthread_cond_broadcast(&svc.done);
}

static void *service_main(void *arg)
{
    (void)arg;
    on_service_thread = true;
    lock();
    while (svc.count > 0) {
        /* The request number is read before the clock, so a sync that
         * set the clock before asking is served by this reading. */
        uint64_t req = svc.sync_req;
        int64_t now = evs__hb_now();
        if (svc.len > 0 && svc.heap[0]->deadline <= now) {
            fire_first(now);
            continue;
        }
        if (svc.sync_done != req) {
            svc.sync_done = req;
            pthread_cond_broadcast(&svc.done);
        }
        wait_until(svc.len > 0 ? svc.heap[0]->deadline : INT64_MAX);
    }
    svc.sync_done = svc.sync_req;
    if (svc.joiners > 0) {
        svc.state = THR_EXITED;
    } else {
        /* The last timer was removed inside a callback: nobody will join. */
        pthread_detach(pthread_self());
        svc.state = THR_NONE;
    }
    pthread_cond_broadcast(&svc.done);
    unlock();
    return NULL;
}

/* Start the thread with every signal blocked, so that signals go to the
 * application's threads, never to this one. */
static int start_locked(void)
{
    if (svc.fail_start) {
        svc.fail_start = false;
        return EVS_ESYSTEM;
    }
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&svc.thread, NULL, service_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0)
        return EVS_ESYSTEM;
    svc.state = THR_RUNNING;
    return 0;
}

/* Join an exited thread; the mutex is released meanwhile, and others
 * that see THR_JOINING wait on `done`. */
static void reap_locked(void)
{
    pthread_t th = svc.thread;
    svc.state = THR_JOINING;
    unlock();
    pthread_join(th, NULL);
    lock();
    svc.state = THR_NONE;
    pthread_cond_broadcast(&svc.done);
}

/* ---- the API ------------------------------------------------------ */

int evs__hb_add(evs__hb_timer **out, int64_t interval_ns, evs__hb_fire_fn fire,
                void *user)
{
    if (out != NULL)
        *out = NULL;
    if (out == NULL || fire == NULL || interval_ns <= 0)
        return EVS_EINVAL;
    evs__hb_timer *t = evs__malloc(sizeof *t);
    if (t == NULL)
        return EVS_ENOMEM;
    *t = (evs__hb_timer){
        .idx = NOT_QUEUED, .interval = interval_ns, .fire = fire, .user = user,
        .sooner = INT64_MAX,
    };

    lock();
    /* A thread that is exiting cannot be revived: join it first. */
    for (;;) {
        if (svc.state == THR_EXITED)
            reap_locked();
        else if (svc.state == THR_JOINING)
            pthread_cond_wait(&svc.done, &svc.mu);
        else
            break;
    }
    int rc = heap_reserve(svc.count + 1);
    if (rc == 0 && svc.state == THR_NONE)
        rc = start_locked();
    if (rc != 0) {
        heap_release_if_empty();
        unlock();
        evs__free(t);
        return rc;
    }
    t->deadline = add_sat(evs__hb_now(), interval_ns);
    heap_push(t);
    svc.count++;
    if (t->idx == 0)
        pthread_cond_signal(&svc.wake); /* new earliest deadline */
    unlock();
    *out = t;
    return 0;
}

int evs__hb_remove(evs__hb_timer *t)
{
    if (t == NULL)
        return EVS_EINVAL;
    lock();
    if (t->idx != NOT_QUEUED)
        heap_unlink(t);
    svc.count--;
    bool last = svc.count == 0;
    heap_release_if_empty();

    if (on_service_thread) {
        /* Inside a callback: only t's own can be running (callbacks run
         * one at a time), and it is our caller, so do not wait. The
         * thread exits by itself if this was the last timer. */
        if (t->running)
            t->removed = t->thread_frees = true;
        else
            evs__free(t);
        unlock();
        return 0;
    }

    if (last)
        svc.joiners++; /* before any wait, so the thread leaves itself to us */
    t->removed = true; /* a running callback's timer is not re-armed */
    while (t->running)
        pthread_cond_wait(&svc.done, &svc.mu);
    evs__free(t);
    if (last) {
        pthread_cond_signal(&svc.wake);
        while ((svc.state == THR_RUNNING && svc.count == 0) || svc.state == THR_JOINING)
            pthread_cond_wait(&svc.done, &svc.mu);
        svc.joiners--;
        if (svc.state == THR_EXITED)
            reap_locked();
    }
    unlock();
    return 0;
}

int evs__hb_fire_by(evs__hb_timer *t, int64_t deadline_ns)
{
    if (t == NULL)
        return EVS_EINVAL;
    lock();
    if (t->running) {
        /* fire_first applies it when the callback returns. */
        if (deadline_ns < t->sooner)
            t->sooner = deadline_ns;
    } else if (t->idx != NOT_QUEUED && deadline_ns < t->deadline) {
        /* Only ever earlier, so the timer can only move up the heap. A
         * deadline in the past is kept as it is: the thread fires it at
         * its next clock reading, once. */
        t->deadline = deadline_ns;
        sift_up(t->idx);
        if (t->idx == 0)
            pthread_cond_signal(&svc.wake); /* new earliest deadline */
    }
    unlock();
    return 0;
}

int64_t evs__hb_wall(void)
{
    const struct evs__hb_clock *c = evs_load_acquire(&svc.clock);
    return c != NULL ? c->now(c->ctx) : evs__now_real_ns();
}

int evs__hb_set_clock(const struct evs__hb_clock *c)
{
    if (c != NULL && c->now == NULL)
        return EVS_EINVAL;
    lock();
    int rc = EVS_EINVAL;
    if (svc.count == 0 && svc.state == THR_NONE) {
        evs_store_release(&svc.clock, c);
        rc = 0;
    }
    unlock();
    return rc;
}

void evs__hb_kick(void)
{
    lock();
    pthread_cond_signal(&svc.wake);
    unlock();
}

int evs__hb_sync(void)
{
    if (on_service_thread)
        return EVS_EDEADLK;
    lock();
    uint64_t req = ++svc.sync_req;
    pthread_cond_signal(&svc.wake);
    /* An exiting thread marks every request served. */
    while (svc.state == THR_RUNNING && svc.sync_done < req)
        pthread_cond_wait(&svc.done, &svc.mu);
    unlock();
    return 0;
}

int evs__hb_thread_running(void)
{
    lock();
    int r = svc.state != THR_NONE;
    unlock();
    return r;
}

void evs__hb_fail_next_start(void)
{
    lock();
    svc.fail_start = true;
    unlock();
}
