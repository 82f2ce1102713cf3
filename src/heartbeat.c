/*
 * The heartbeat timer service: a min-heap of deadlines, a leader thread
 * that fires them, and a spare that takes over from a stalled callback.
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
 * callback returned. Callers that must not overlap a callback (remove,
 * from any thread but the one running it) wait on `svc.done` until
 * `running` clears. Remove from inside the timer's own callback only marks it `removed` and
 * `thread_frees`, and the thread frees it when the callback returns. Capacity for every
 * registered timer is reserved when it is added, so re-inserting never
 * allocates and a callback's timer is never lost. evs__hb_fire_by moves
 * a queued timer's deadline earlier (it only sifts up); while the
 * callback runs it records the deadline in `sooner`, and the re-insert
 * takes the earlier of that and what the callback returned.
 *
 * Stalls. Callbacks are user code or call it (an inline stream's
 * heartbeat runs its handlers, a batch or window flush the user's
 * function, an SSE heartbeat the push callback), so one may block for as
 * long as it likes. The leader runs callbacks itself, one at a time in
 * deadline order, which costs nothing extra; but first it makes sure a
 * spare thread is watching: while the leader is `busy`, the spare sleeps
 * on `follow` until `busy_since` + the stall time (1 s of CLOCK_MONOTONIC,
 * whatever the service clock). If the callback is still running then, the
 * spare takes the leader's role (bumping `lead_token`, counting a stall)
 * and goes on firing the other timers; the thread in the callback sees
 * the token changed when it returns, re-arms its timer, wakes the new
 * leader, and becomes the spare (or leaves, if there is one). So the
 * other timers are late by at most the stall time however long a
 * callback blocks, an idle service holds two threads (one more per
 * callback stalled at the same time), and the spare wakes at most once
 * per stall time while callbacks run, never while the service is idle.
 * One timer's callbacks never overlap (a running timer is not in the
 * heap); after a takeover, callbacks of different timers may run at once.
 * If no spare can be started the leader runs the callback unwatched (as
 * with one thread) and counts it in `start_failures`.
 *
 * Lifecycle: service threads are detached and counted in `nthreads`
 * (under mu, from their creation to their last locked step). An add that
 * finds none starts one, which becomes the leader. Each leaves when it
 * finds no timer registered; a remover of the last timer from outside a
 * callback wakes them all and waits until `nthreads` is 0, so once it
 * returns no service thread touches the service again.
 *
 * evs__hb_sync() bumps `sync_req`; the leader reads the request number,
 * then the clock, runs everything due, and publishes the number it read
 * as `sync_done` once nothing is due at that clock reading and no
 * callback is running on any thread.
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

/* How long a callback may run before the spare takes over: long enough
 * that a merely slow callback (real work, a descheduled thread) keeps the
 * one-at-a-time order, short next to heartbeat intervals (seconds). */
#define STALL_NS_DEFAULT (1000LL * 1000000LL)

static struct {
    pthread_mutex_t mu;
    pthread_cond_t wake;     /* the leader waits here (CLOCK_MONOTONIC) */
    pthread_cond_t follow;   /* the spare waits here (CLOCK_MONOTONIC) */
    pthread_cond_t done;     /* callers wait here: a callback ended, a sync
                                was served, a thread left */
    evs__hb_timer **heap;    /* min-heap by (deadline, seq); len <= count <= cap */
    size_t len, cap;
    size_t count;            /* registered timers: the heap plus the one firing */
    uint64_t seq;
    unsigned nthreads;       /* service threads that have not left */
    bool leader;             /* a thread holds the leader's role */
    uint64_t lead_token;     /* bumped at each change of leader */
    bool busy;               /* the leader is running a callback */
    int64_t busy_since;      /* CLOCK_MONOTONIC ns when that callback began */
    unsigned spares;         /* threads in the spare's role (at most one stays) */
    bool spare_idle;         /* the spare waits untimed: signal it when busy */
    unsigned running;        /* callbacks in progress, on any thread */
    int64_t stall_ns;        /* test hook; 0 = STALL_NS_DEFAULT */
    uint64_t stalls;         /* takeovers from a stalled callback */
    uint64_t start_failures; /* callbacks run with no spare watching */
    uint64_t sync_req;       /* evs__hb_sync requests issued */
    uint64_t sync_done;      /* the highest request fully served */
    bool fail_start;         /* test hook: the next start fails */
    const struct evs__hb_clock *clock; /* NULL = CLOCK_MONOTONIC; atomic */
} svc = {
    .mu = PTHREAD_MUTEX_INITIALIZER,
    .done = PTHREAD_COND_INITIALIZER,
};

static pthread_once_t wake_once = PTHREAD_ONCE_INIT;

/* True on the service threads: callbacks run there, and nowhere else. */
static _Thread_local bool on_service_thread;
/* On a service thread, the timer whose callback it is running, or NULL. */
static _Thread_local evs__hb_timer *tl_current;

static void wake_init(void)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(&svc.wake, &a);
    pthread_cond_init(&svc.follow, &a);
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

static int start_thread_locked(void);

static int64_t stall_ns(void) { return svc.stall_ns > 0 ? svc.stall_ns : STALL_NS_DEFAULT; }

/*
 * Pop the earliest timer and run its callback unlocked, with the spare
 * watching; then re-arm or free the timer. Returns whether the caller is
 * still the leader (`token` is the lead_token it took the role with).
 */
static bool fire_first(int64_t now, uint64_t token)
{
    evs__hb_timer *t = svc.heap[0];
    heap_unlink(t);
    t->running = true;
    svc.running++;
    svc.busy = true;
    svc.busy_since = evs__now_mono_ns();
    if (svc.spares == 0) {
        if (start_thread_locked() != 0)
            svc.start_failures++; /* unwatched: a stall delays every timer */
    } else if (svc.spare_idle) {
        pthread_cond_signal(&svc.follow); /* start watching */
    }
    unlock();
    tl_current = t;
    int64_t next = t->fire(t->user, now);
    tl_current = NULL;
    lock();
    t->running = false;
    svc.running--;
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
    if (svc.lead_token != token) {
        /* The spare took over while we ran. Its leader may sleep past
         * our re-armed deadline, or have a sync to answer. */
        pthread_cond_signal(&svc.wake);
        return false;
    }
    svc.busy = false;
    return true;
}

/* Wait on `follow` until `deadline` (CLOCK_MONOTONIC ns). */
static void follow_until(int64_t deadline)
{
    struct timespec ts = {
        .tv_sec = (time_t)(deadline / 1000000000),
        .tv_nsec = (long)(deadline % 1000000000),
    };
    pthread_cond_timedwait(&svc.follow, &svc.mu, &ts);
}

enum role { ROLE_SPARE, ROLE_LEADER, ROLE_NONE };

static void *service_main(void *arg)
{
    (void)arg;
    on_service_thread = true;
    enum role role = ROLE_SPARE; /* counted in svc.spares by the starter */
    uint64_t token = 0;
    lock();
    while (svc.count > 0) {
        if (role == ROLE_SPARE) {
            if (svc.leader && !svc.busy) {
                svc.spare_idle = true;
                pthread_cond_wait(&svc.follow, &svc.mu);
                svc.spare_idle = false;
                continue;
            }
            if (svc.leader) {
                int64_t due = svc.busy_since + stall_ns();
                if (evs__now_mono_ns() < due) {
                    follow_until(due);
                    continue;
                }
                svc.stalls++; /* the leader's callback has stalled: take over */
            }
            role = ROLE_LEADER;
            svc.spares--;
            svc.leader = true;
            svc.busy = false;
            token = ++svc.lead_token;
            continue;
        }
        /* The request number is read before the clock, so a sync that
         * set the clock before asking is served by this reading. */
        uint64_t req = svc.sync_req;
        int64_t now = evs__hb_now();
        if (svc.len > 0 && svc.heap[0]->deadline <= now) {
            if (!fire_first(now, token)) {
                /* Taken over: be the spare, unless one is there. */
                if (svc.spares > 0) {
                    role = ROLE_NONE;
                    break;
                }
                role = ROLE_SPARE;
                svc.spares++;
            }
            continue;
        }
        if (svc.sync_done != req && svc.running == 0) {
            svc.sync_done = req;
            pthread_cond_broadcast(&svc.done);
        }
        wait_until(svc.len > 0 ? svc.heap[0]->deadline : INT64_MAX);
    }
    if (role == ROLE_LEADER)
        svc.leader = false;
    else if (role == ROLE_SPARE)
        svc.spares--;
    if (--svc.nthreads == 0)
        svc.sync_done = svc.sync_req;
    if (svc.count == 0) {
        /* The others leave too. */
        pthread_cond_broadcast(&svc.follow);
        pthread_cond_signal(&svc.wake);
    }
    /* A remover of the last timer, or a sync, may be waiting. */
    pthread_cond_broadcast(&svc.done);
    unlock();
    return NULL;
}

/* Start a detached service thread, as a spare (it takes the leader's
 * role at once if no thread has it), with every signal blocked, so that
 * signals go to the application's threads, never to this one. */
static int start_thread_locked(void)
{
    pthread_attr_t a;
    pthread_t th;
    if (pthread_attr_init(&a) != 0)
        return EVS_ESYSTEM;
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&th, &a, service_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&a);
    if (rc != 0)
        return EVS_ESYSTEM;
    svc.nthreads++;
    svc.spares++;
    return 0;
}

/* The first thread (the test hook can make it fail). */
static int start_locked(void)
{
    if (svc.fail_start) {
        svc.fail_start = false;
        return EVS_ESYSTEM;
    }
    return start_thread_locked();
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
    /* Threads that saw no timer left are leaving (they decide under mu);
     * those still counted see this one and stay, and a spare takes the
     * leader's role if the leader has left. */
    int rc = heap_reserve(svc.count + 1);
    if (rc == 0 && svc.nthreads == 0)
        rc = start_locked();
    else if (rc == 0 && !svc.leader)
        pthread_cond_broadcast(&svc.follow);
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

    if (t == tl_current) {
        /* Inside t's own callback: do not wait for ourselves; the thread
         * frees t when the callback returns. */
        t->removed = t->thread_frees = true;
        unlock();
        return 0;
    }

    t->removed = true; /* a running callback's timer is not re-armed */
    while (t->running)
        pthread_cond_wait(&svc.done, &svc.mu); /* on another thread */
    evs__free(t);
    if (last) {
        /* Wake every service thread to see that none is needed. Inside a
         * callback our own thread leaves when it returns: do not wait. */
        pthread_cond_broadcast(&svc.follow);
        pthread_cond_signal(&svc.wake);
        while (!on_service_thread && svc.count == 0 && svc.nthreads > 0)
            pthread_cond_wait(&svc.done, &svc.mu);
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
    if (svc.count == 0 && svc.nthreads == 0) {
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
    /* The last thread to leave marks every request served. */
    while (svc.nthreads > 0 && svc.sync_done < req)
        pthread_cond_wait(&svc.done, &svc.mu);
    unlock();
    return 0;
}

int evs__hb_thread_running(void)
{
    lock();
    int r = svc.nthreads > 0;
    unlock();
    return r;
}

uint64_t evs__hb_stalls(void)
{
    lock();
    uint64_t n = svc.stalls;
    unlock();
    return n;
}

uint64_t evs__hb_start_failures(void)
{
    lock();
    uint64_t n = svc.start_failures;
    unlock();
    return n;
}

void evs__hb_set_stall_ns(int64_t ns)
{
    lock();
    svc.stall_ns = ns > 0 ? ns : 0;
    pthread_cond_broadcast(&svc.follow);
    unlock();
}

void evs__hb_fail_next_start(void)
{
    lock();
    svc.fail_start = true;
    unlock();
}
