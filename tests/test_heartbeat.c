/*
 * The heartbeat timer service: firing on time, re-arming at the deadline
 * a callback returns, deadline order across thousands of timers, removal
 * (from another thread, inside a callback), the thread's lifecycle,
 * allocation and thread-start failure, and one real-clock fire.
 *
 * Most tests install a fake clock and move it by hand; evs__hb_sync()
 * then returns once the service thread has run everything due, so a
 * simulated hour takes milliseconds and nothing sleeps.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "evs_internal.h"
#include "evstream.h"
#include "heartbeat.h"
#include "evs_test.h"


#define SEC  1000000000LL
#define MSEC 1000000LL

/* ---- the fake clock ------------------------------------------------ */

/* fake_clock and its cell come from evs_test.h. */

static void use_fake_clock(void)
{
    evs_store(fake_ns_cell(), 0);
    ASSERT_RC(evs__hb_set_clock(&fake_clock), 0);
}

/* Move the fake clock to `t` and wait until everything due has fired. */
static void advance_to(int64_t t)
{
    evs_store_release(fake_ns_cell(), t);
    ASSERT_RC(evs__hb_sync(), 0);
}

static void finish(void)
{
    ASSERT_RC(evs__hb_sync(), 0);
    cr_assert_eq(evs__hb_thread_running(), 0, "the service thread outlived its timers");
    ASSERT_RC(evs__hb_set_clock(NULL), 0);
}

/* ---- a timer that records its fires -------------------------------- */

/* Touched by the service thread in callbacks and read by the test thread
 * after evs__hb_sync(), whose mutex orders the two. */
typedef struct rec {
    int     fires;
    int64_t at[16];        /* now_ns of the first fires */
    int64_t ret;           /* what the callback returns */
} rec;

static int64_t record(void *user, int64_t now)
{
    rec *r = user;
    if (r->fires < 16)
        r->at[r->fires] = now;
    r->fires++;
    return r->ret;
}


/* ---- arguments and errors ------------------------------------------ */

Test(heartbeat, bad_arguments_are_einval_and_register_nothing, .timeout = 30)
{
    rec r = {.ret = -1};
    evs__hb_timer *t = (evs__hb_timer *)&r;
    ASSERT_RC(evs__hb_add(NULL, SEC, record, &r), EVS_EINVAL);
    ASSERT_RC(evs__hb_add(&t, SEC, NULL, &r), EVS_EINVAL);
    cr_assert_null(t);
    ASSERT_RC(evs__hb_add(&t, 0, record, &r), EVS_EINVAL);
    ASSERT_RC(evs__hb_add(&t, -SEC, record, &r), EVS_EINVAL);
    cr_assert_null(t);
    ASSERT_RC(evs__hb_remove(NULL), EVS_EINVAL);
    ASSERT_RC(evs__hb_set_clock(&(struct evs__hb_clock){.now = NULL}), EVS_EINVAL);
    cr_assert_eq(evs__hb_thread_running(), 0);
}

Test(heartbeat, clock_cannot_change_while_timers_exist, .timeout = 30)
{
    use_fake_clock();
    rec r = {.ret = -1};
    evs__hb_timer *t;
    ASSERT_RC(evs__hb_add(&t, SEC, record, &r), 0);
    ASSERT_RC(evs__hb_set_clock(NULL), EVS_EINVAL);
    cr_assert_eq(evs__hb_now(), 0, "the fake clock must still be in use");
    ASSERT_RC(evs__hb_remove(t), 0);
    finish();
}

Test(heartbeat, failed_thread_start_is_esystem_and_registers_nothing, .timeout = 30)
{
    use_fake_clock();
    rec r = {.ret = -1};
    evs__hb_timer *t = (evs__hb_timer *)&r;
    evs__hb_fail_next_start();
    ASSERT_RC(evs__hb_add(&t, SEC, record, &r), EVS_ESYSTEM);
    cr_assert_null(t);
    cr_assert_eq(evs__hb_thread_running(), 0);
    advance_to(10 * SEC);
    cr_assert_eq(r.fires, 0);
    /* The service is usable afterwards. */
    ASSERT_RC(evs__hb_add(&t, SEC, record, &r), 0);
    advance_to(11 * SEC);
    cr_assert_eq(r.fires, 1);
    ASSERT_RC(evs__hb_remove(t), 0);
    finish();
}

Test(heartbeat, add_allocation_failures_are_enomem_and_leak_nothing, .timeout = 30)
{
    use_fake_clock();
    rec r = {.ret = -1};
    evs__hb_timer *t = NULL;
    int rc = EVS_ENOMEM;
    long k;
    for (k = 0; k < 100; k++) {
        evs__alloc_fail_after(k);
        rc = evs__hb_add(&t, SEC, record, &r);
        evs__alloc_fail_after(-1);
        if (rc == 0)
            break;
        cr_assert_eq(rc, EVS_ENOMEM, "k=%ld: got %s", k, evs_errname(rc));
        cr_assert_null(t);
        cr_assert_eq(evs__hb_thread_running(), 0, "k=%ld: a failed add started the thread", k);
    }
    ASSERT_RC(rc, 0);
    cr_assert_gt(k, 0, "add never allocated");
    advance_to(SEC);
    cr_assert_eq(r.fires, 1);
    ASSERT_RC(evs__hb_remove(t), 0);
    finish();
}

static int64_t sync_inside(void *user, int64_t now)
{
    *(int *)user = evs__hb_sync();
    return -1;
}

Test(heartbeat, sync_inside_a_callback_is_edeadlk, .timeout = 30)
{
    use_fake_clock();
    evs__hb_timer *t;
    int got = 1;
    ASSERT_RC(evs__hb_add(&t, SEC, sync_inside, &got), 0);
    advance_to(SEC);
    ASSERT_RC(got, EVS_EDEADLK);
    ASSERT_RC(evs__hb_remove(t), 0);
    finish();
}

/* ---- firing on time ------------------------------------------------ */

Test(heartbeat, timer_fires_exactly_at_its_interval_and_not_before, .timeout = 30)
{
    use_fake_clock();
    evs_store(fake_ns_cell(), 5 * SEC); /* the first deadline counts from add */
    rec r = {.ret = -1};
    evs__hb_timer *t;
    ASSERT_RC(evs__hb_add(&t, EVS__HB_DEFAULT_INTERVAL_NS, record, &r), 0);
    advance_to(35 * SEC - 1);
    cr_assert_eq(r.fires, 0, "fired before its interval");
    advance_to(35 * SEC);
    cr_assert_eq(r.fires, 1);
    cr_assert_eq(r.at[0], 35 * SEC);
    /* A negative return re-arms one interval after the fire. */
    advance_to(65 * SEC - 1);
    cr_assert_eq(r.fires, 1);
    advance_to(65 * SEC);
    cr_assert_eq(r.fires, 2);
    cr_assert_eq(r.at[1], 65 * SEC);
    ASSERT_RC(evs__hb_remove(t), 0);
    advance_to(1000 * SEC);
    cr_assert_eq(r.fires, 2, "fired after remove");
    finish();
}

/* A stream's idle check: heartbeat only after `interval` with no
 * activity; otherwise re-arm at last activity + interval. */
typedef struct idle {
    int64_t interval;
    int64_t last_activity; /* written by the test between syncs */
    int64_t seen_activity; /* last activity the callback accounted for */
    int     calls;
    int     beats;
    int64_t beat_at[8];
} idle;

static int64_t idle_check(void *user, int64_t now)
{
    idle *s = user;
    s->calls++;
    if (s->last_activity + s->interval > now)
        return s->last_activity + s->interval;
    s->beat_at[s->beats++ & 7] = now;
    return -1;
}

Test(heartbeat, callback_deadline_is_honoured_when_activity_happened, .timeout = 30)
{
    use_fake_clock();
    idle s = {.interval = 10 * SEC};
    evs__hb_timer *t;
    ASSERT_RC(evs__hb_add(&t, s.interval, idle_check, &s), 0);
    advance_to(5 * SEC);
    s.last_activity = 5 * SEC; /* published at 5 s */
    advance_to(10 * SEC);
    cr_assert_eq(s.calls, 1);
    cr_assert_eq(s.beats, 0, "heartbeat although active 5 s ago");
    advance_to(15 * SEC - 1);
    cr_assert_eq(s.calls, 1, "the returned deadline was not honoured");
    advance_to(15 * SEC);
    cr_assert_eq(s.calls, 2);
    cr_assert_eq(s.beats, 1);
    cr_assert_eq(s.beat_at[0], 15 * SEC);
    advance_to(25 * SEC);
    cr_assert_eq(s.beats, 2);
    cr_assert_eq(s.beat_at[1], 25 * SEC);
    ASSERT_RC(evs__hb_remove(t), 0);
    finish();
}

Test(heartbeat, deadline_in_the_past_fires_once_per_clock_reading, .timeout = 30)
{
    use_fake_clock();
    rec r = {.ret = 0}; /* always "already due" */
    evs__hb_timer *t;
    ASSERT_RC(evs__hb_add(&t, SEC, record, &r), 0);
    advance_to(SEC);
    cr_assert_eq(r.fires, 1, "the thread spun on a stopped clock");
    advance_to(SEC + 1);
    cr_assert_eq(r.fires, 2);
    cr_assert_eq(r.at[1], SEC + 1);
    ASSERT_RC(evs__hb_remove(t), 0);
    finish();
}

/* ---- thousands of timers ------------------------------------------- */

#define MANY 5000

typedef struct many_timer {
    int64_t interval;
    int64_t due;   /* the deadline it is armed for */
    int     fires;
    evs__hb_timer *t;
} many_timer;

/* Written only by callbacks (the service thread), read after sync. */
static int64_t many_last_due;
static int64_t many_prev_clock; /* the clock before the current step */
static int     many_bad_order, many_late, many_early;

static int64_t many_fire(void *user, int64_t now)
{
    many_timer *m = user;
    if (m->due < many_last_due)
        many_bad_order++;
    if (now < m->due)
        many_early++;
    if (m->due <= many_prev_clock)
        many_late++; /* it was due at an earlier step already */
    many_last_due = m->due;
    m->fires++;
    m->due += m->interval;
    return m->due;
}

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

Test(heartbeat, five_thousand_timers_fire_in_deadline_order_over_an_hour, .timeout = 60)
{
    use_fake_clock();
    static many_timer m[MANY];
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < MANY; i++) {
        /* 1 s .. 600 s, with millisecond resolution. */
        m[i].interval = (int64_t)(1000 + rng_next(&seed) % 599001) * MSEC;
        m[i].due = m[i].interval;
        ASSERT_RC(evs__hb_add(&m[i].t, m[i].interval, many_fire, &m[i]), 0);
    }
    cr_assert_eq(evs__hb_thread_running(), 1);
    const int64_t hour = 3600 * SEC;
    int64_t now = 0;
    while (now < hour) {
        /* Steps shorter than the shortest interval, so each timer is due
         * at most once per step. */
        int64_t step = (int64_t)(1 + rng_next(&seed) % 999) * MSEC;
        many_prev_clock = now; /* ordered before the callbacks by sync's mutex */
        now = now + step < hour ? now + step : hour;
        advance_to(now);
    }
    cr_assert_eq(many_bad_order, 0, "fires out of deadline order");
    cr_assert_eq(many_early, 0, "fires before their deadline");
    cr_assert_eq(many_late, 0, "fires missed the step in which they were due");
    long total = 0;
    for (int i = 0; i < MANY; i++) {
        cr_assert_eq(m[i].fires, (int)(hour / m[i].interval),
                     "timer %d (interval %lld ns) fired %d times", i,
                     (long long)m[i].interval, m[i].fires);
        total += m[i].fires;
    }
    cr_assert_gt(total, MANY);
    for (int i = 0; i < MANY; i++)
        ASSERT_RC(evs__hb_remove(m[i].t), 0);
    finish();
}

Test(heartbeat, removed_timers_never_fire_and_the_rest_stay_exact, .timeout = 30)
{
    use_fake_clock();
    enum { N = 1000 };
    static many_timer m[N];
    uint64_t seed = 12345;
    for (int i = 0; i < N; i++) {
        m[i].interval = (int64_t)(1 + rng_next(&seed) % 100) * SEC;
        m[i].due = m[i].interval;
        ASSERT_RC(evs__hb_add(&m[i].t, m[i].interval, many_fire, &m[i]), 0);
    }
    /* Remove from arbitrary heap positions: every third timer. */
    for (int i = 0; i < N; i += 3) {
        ASSERT_RC(evs__hb_remove(m[i].t), 0);
        m[i].t = NULL;
    }
    for (int64_t now = SEC / 2; now <= 300 * SEC; now += SEC / 2) {
        many_prev_clock = now - SEC / 2;
        advance_to(now);
    }
    cr_assert_eq(many_bad_order, 0);
    for (int i = 0; i < N; i++) {
        int want = m[i].t == NULL ? 0 : (int)(300 * SEC / m[i].interval);
        cr_assert_eq(m[i].fires, want, "timer %d", i);
    }
    for (int i = 0; i < N; i++)
        if (m[i].t != NULL)
            ASSERT_RC(evs__hb_remove(m[i].t), 0);
    finish();
}

/* ---- removal ------------------------------------------------------- */

typedef struct blocker {
    gate      *gate;
    atomic_int calls;
    atomic_int finished;     /* the callback has returned */
} blocker;

static int64_t block_at_gate(void *user, int64_t now)
{
    blocker *b = user;
    atomic_fetch_add(&b->calls, 1);
    gate_pass(b->gate);
    atomic_store(&b->finished, 1);
    return -1;
}

typedef struct remover {
    evs__hb_timer *t;
    blocker       *b;
    atomic_int     returned;
    int            finished_at_return;
} remover;

static void *remove_thread(void *arg)
{
    remover *r = arg;
    int rc = evs__hb_remove(r->t);
    r->finished_at_return = atomic_load(&r->b->finished);
    atomic_store(&r->returned, 1);
    return (void *)(intptr_t)rc;
}

Test(heartbeat, remove_from_another_thread_waits_for_the_running_callback, .timeout = 30)
{
    use_fake_clock();
    gate g;
    gate_init(&g);
    blocker b = {.gate = &g};
    remover r = {.b = &b};
    /* Another timer stays registered, so remove has no thread to join and
     * only waiting for the callback can hold it back. */
    rec bystander = {.ret = -1};
    evs__hb_timer *other;
    ASSERT_RC(evs__hb_add(&other, 3600 * SEC, record, &bystander), 0);
    ASSERT_RC(evs__hb_add(&r.t, SEC, block_at_gate, &b), 0);
    evs_store_release(fake_ns_cell(), SEC);
    evs__hb_kick(); /* not sync: the callback will block */
    gate_wait_blocked(&g);

    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, remove_thread, &r), 0);
    /* The callback is blocked, so remove must not return. Give it a fair
     * chance to return wrongly before opening the gate. */
    for (int i = 0; i < 1000 && !atomic_load(&r.returned); i++)
        sched_yield();
    cr_assert_eq(atomic_load(&r.returned), 0, "remove returned while the callback ran");
    gate_open(&g);
    void *rc;
    pthread_join(th, &rc);
    ASSERT_RC((int)(intptr_t)rc, 0);
    cr_assert_eq(r.finished_at_return, 1, "remove returned before the callback did");
    advance_to(100 * SEC);
    cr_assert_eq(atomic_load(&b.calls), 1, "called after remove returned");
    cr_assert_eq(evs__hb_thread_running(), 1);
    ASSERT_RC(evs__hb_remove(other), 0);
    cr_assert_eq(evs__hb_thread_running(), 0, "remove of the last timer did not join");
    finish();
    gate_destroy(&g);
}

typedef struct self_remover {
    evs__hb_timer *self;
    evs__hb_timer *other;   /* removed by the first fire */
    int            calls;
    int            rc;
} self_remover;

static int64_t remove_self_on_second(void *user, int64_t now)
{
    self_remover *s = user;
    if (++s->calls == 1) {
        s->rc = evs__hb_remove(s->other);
        return -1;
    }
    s->rc = evs__hb_remove(s->self);
    return -1; /* ignored: the timer is gone */
}

Test(heartbeat, remove_inside_callbacks_returns_at_once_and_stops_fires, .timeout = 30)
{
    use_fake_clock();
    self_remover s = {0};
    rec other = {.ret = -1};
    ASSERT_RC(evs__hb_add(&s.other, 2 * SEC, record, &other), 0);
    ASSERT_RC(evs__hb_add(&s.self, SEC, remove_self_on_second, &s), 0);
    advance_to(SEC);
    cr_assert_eq(s.calls, 1);
    ASSERT_RC(s.rc, 0);
    advance_to(2 * SEC);
    cr_assert_eq(s.calls, 2);
    ASSERT_RC(s.rc, 0);
    cr_assert_eq(other.fires, 0, "a timer removed by another's callback fired");
    /* That was the last timer: sync waits for the thread to stop. */
    ASSERT_RC(evs__hb_sync(), 0);
    cr_assert_eq(evs__hb_thread_running(), 0);
    finish();
}

/* Adds one timer from inside the first fire. */
typedef struct adder {
    evs__hb_timer *added;
    rec            child;
    int            rc;
} adder;

static int64_t add_inside(void *user, int64_t now)
{
    adder *a = user;
    if (a->added == NULL)
        a->rc = evs__hb_add(&a->added, SEC, record, &a->child);
    return -1;
}

Test(heartbeat, callbacks_may_add_timers, .timeout = 30)
{
    use_fake_clock();
    adder a = {.child = {.ret = -1}};
    evs__hb_timer *t;
    ASSERT_RC(evs__hb_add(&t, 10 * SEC, add_inside, &a), 0);
    advance_to(10 * SEC);
    ASSERT_RC(a.rc, 0);
    cr_assert_not_null(a.added);
    advance_to(11 * SEC);
    cr_assert_eq(a.child.fires, 1);
    cr_assert_eq(a.child.at[0], 11 * SEC);
    ASSERT_RC(evs__hb_remove(t), 0);
    ASSERT_RC(evs__hb_remove(a.added), 0);
    finish();
}

/* ---- the thread's lifecycle ---------------------------------------- */

Test(heartbeat, thread_starts_lazily_stops_with_the_last_timer_and_restarts, .timeout = 30)
{
    use_fake_clock();
    cr_assert_eq(evs__hb_thread_running(), 0, "a thread before the first add");
    ASSERT_RC(evs__hb_sync(), 0); /* no thread: returns at once */
    rec r1 = {.ret = -1}, r2 = {.ret = -1};
    evs__hb_timer *t1, *t2;
    ASSERT_RC(evs__hb_add(&t1, SEC, record, &r1), 0);
    cr_assert_eq(evs__hb_thread_running(), 1);
    ASSERT_RC(evs__hb_add(&t2, 2 * SEC, record, &r2), 0);
    ASSERT_RC(evs__hb_remove(t1), 0);
    cr_assert_eq(evs__hb_thread_running(), 1, "stopped with a timer left");
    ASSERT_RC(evs__hb_remove(t2), 0);
    cr_assert_eq(evs__hb_thread_running(), 0, "still running with no timer");

    for (int round = 0; round < 3; round++) {
        int64_t base = evs__hb_now();
        rec r = {.ret = -1};
        evs__hb_timer *t;
        ASSERT_RC(evs__hb_add(&t, SEC, record, &r), 0);
        cr_assert_eq(evs__hb_thread_running(), 1, "round %d: no restart", round);
        advance_to(base + SEC);
        cr_assert_eq(r.fires, 1, "round %d", round);
        ASSERT_RC(evs__hb_remove(t), 0);
        cr_assert_eq(evs__hb_thread_running(), 0, "round %d", round);
    }
    cr_assert_eq(r1.fires + r2.fires, 0);
    finish();
}

/* Many threads adding and removing at once, crossing the stop/restart
 * boundary again and again; the thread must neither leak nor deadlock. */
static void *churn(void *arg)
{
    rec *r = arg;
    for (int i = 0; i < 500; i++) {
        evs__hb_timer *t;
        int rc = evs__hb_add(&t, SEC, record, r);
        if (rc != 0)
            return (void *)(intptr_t)rc;
        rc = evs__hb_remove(t);
        if (rc != 0)
            return (void *)(intptr_t)rc;
    }
    return NULL;
}

Test(heartbeat, concurrent_add_and_remove_around_the_last_timer, .timeout = 60)
{
    use_fake_clock();
    enum { T = 4 };
    pthread_t th[T];
    rec r[T];
    for (int i = 0; i < T; i++) {
        r[i] = (rec){.ret = -1};
        cr_assert_eq(pthread_create(&th[i], NULL, churn, &r[i]), 0);
    }
    for (int i = 0; i < T; i++) {
        void *rc;
        pthread_join(th[i], &rc);
        ASSERT_RC((int)(intptr_t)rc, 0);
        cr_assert_eq(r[i].fires, 0);
    }
    cr_assert_eq(evs__hb_thread_running(), 0);
    finish();
}

/* ---- the real clock ------------------------------------------------ */

typedef struct real_fire {
    pthread_mutex_t mu;
    pthread_cond_t  cv;
    int             fires;
    int64_t         at;
} real_fire;

static int64_t real_record(void *user, int64_t now)
{
    real_fire *f = user;
    pthread_mutex_lock(&f->mu);
    if (f->fires++ == 0)
        f->at = now;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
    return INT64_MAX; /* once is enough */
}

static void real_wait_fire(real_fire *f)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 10;
    pthread_mutex_lock(&f->mu);
    while (f->fires == 0) {
        int rc = pthread_cond_timedwait(&f->cv, &f->mu, &dl);
        cr_assert_neq(rc, ETIMEDOUT, "no fire within 10 s");
    }
    pthread_mutex_unlock(&f->mu);
}

Test(heartbeat, real_clock_timer_fires_after_its_interval, .timeout = 30)
{
    real_fire f = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    evs__hb_timer *t;
    int64_t start = evs__now_mono_ns();
    ASSERT_RC(evs__hb_add(&t, 5 * MSEC, real_record, &f), 0);
    real_wait_fire(&f);
    cr_assert_geq(f.at, start + 5 * MSEC, "fired %lld ns early",
                  (long long)(start + 5 * MSEC - f.at));
    ASSERT_RC(evs__hb_remove(t), 0);
    cr_assert_eq(evs__hb_thread_running(), 0);
}

Test(heartbeat, an_earlier_timer_wakes_the_sleeping_thread, .timeout = 30)
{
    rec late = {.ret = -1};
    evs__hb_timer *slow, *t;
    ASSERT_RC(evs__hb_add(&slow, 3600 * SEC, record, &late), 0);
    ASSERT_RC(evs__hb_sync(), 0); /* the thread now sleeps for an hour */
    real_fire f = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    ASSERT_RC(evs__hb_add(&t, 5 * MSEC, real_record, &f), 0);
    real_wait_fire(&f);
    ASSERT_RC(evs__hb_remove(t), 0);
    ASSERT_RC(evs__hb_remove(slow), 0);
    cr_assert_eq(late.fires, 0);
    cr_assert_eq(evs__hb_thread_running(), 0);
}

/* ---- evs__hb_fire_by and the wall clock ---------------------------- */

Test(heartbeat, fire_by_moves_a_deadline_earlier_and_never_later, .timeout = 30)
{
    use_fake_clock();
    rec r = {.ret = -1};
    evs__hb_timer *t;
    ASSERT_RC(evs__hb_add(&t, 10 * SEC, record, &r), 0);
    ASSERT_RC(evs__hb_fire_by(t, 3 * SEC), 0);
    advance_to(3 * SEC - 1);
    cr_assert_eq(r.fires, 0);
    advance_to(3 * SEC);
    cr_assert_eq(r.fires, 1, "fires at the earlier deadline");
    /* The callback's -1 re-arms one interval later: 13 s. */
    ASSERT_RC(evs__hb_fire_by(t, 20 * SEC), 0); /* later: no effect */
    advance_to(13 * SEC);
    cr_assert_eq(r.fires, 2);
    cr_assert_eq(r.at[1], 13 * SEC);
    /* A deadline already past fires at once, at the current reading. */
    ASSERT_RC(evs__hb_fire_by(t, 5 * SEC), 0);
    ASSERT_RC(evs__hb_sync(), 0);
    cr_assert_eq(r.fires, 3);
    cr_assert_eq(r.at[2], 13 * SEC);
    ASSERT_RC(evs__hb_fire_by(NULL, 0), EVS_EINVAL);
    ASSERT_RC(evs__hb_remove(t), 0);
    finish();
}

/* A callback that asks for an earlier fire of itself while it runs, and
 * returns a later deadline: the earlier one must win. */
typedef struct self_rec {
    evs__hb_timer *self;
    int fires;
    int64_t at[4];
} self_rec;

static int64_t fire_by_self(void *user, int64_t now)
{
    self_rec *r = user;
    if (r->fires < 4)
        r->at[r->fires] = now;
    r->fires++;
    if (r->fires == 1)
        evs__hb_fire_by(r->self, now + SEC);
    return now + 100 * SEC;
}

Test(heartbeat, fire_by_during_the_callback_beats_its_return_value, .timeout = 30)
{
    use_fake_clock();
    self_rec r = {0};
    ASSERT_RC(evs__hb_add(&r.self, SEC, fire_by_self, &r), 0);
    advance_to(SEC);
    cr_assert_eq(r.fires, 1);
    advance_to(2 * SEC);
    cr_assert_eq(r.fires, 2, "the fire_by made inside the callback was lost");
    cr_assert_eq(r.at[1], 2 * SEC);
    advance_to(101 * SEC);
    cr_assert_eq(r.fires, 2, "afterwards the returned deadline (102 s) holds");
    advance_to(102 * SEC);
    cr_assert_eq(r.fires, 3);
    ASSERT_RC(evs__hb_remove(r.self), 0);
    finish();
}

Test(heartbeat, the_wall_clock_is_the_test_clock_when_one_is_set, .timeout = 30)
{
    int64_t before = evs__now_real_ns();
    int64_t wall = evs__hb_wall();
    cr_assert_geq(wall, before);
    cr_assert_leq(wall, evs__now_real_ns());
    use_fake_clock();
    evs_store(fake_ns_cell(), 1234);
    cr_assert_eq(evs__hb_wall(), 1234);
    cr_assert_eq(evs__hb_now(), 1234);
    finish();
}

/* ---- a blocked callback does not stall the other timers ------------ */

/* Callbacks that count their fires under one mutex, so the test thread
 * can wait for an exact count (with a deadline, never a sleep); blockers
 * also wait at a gate that the test opens. */
typedef struct hb_gate {
    pthread_mutex_t mu;
    pthread_cond_t  cv;
    bool            open;
} hb_gate;

typedef struct gated {
    hb_gate *g;
    bool  block;   /* wait at the hb_gate */
    int   fires;   /* under g->mu */
} gated;

static int64_t gated_fire(void *user, int64_t now)
{
    (void)now;
    gated *t = user;
    pthread_mutex_lock(&t->g->mu);
    t->fires++;
    pthread_cond_broadcast(&t->g->cv);
    while (t->block && !t->g->open)
        pthread_cond_wait(&t->g->cv, &t->g->mu);
    pthread_mutex_unlock(&t->g->mu);
    return -1;
}

/* Wait until t->fires reaches `want`, for at most 10 s. */
static void wait_fires(gated *t, int want, const char *what)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 10;
    pthread_mutex_lock(&t->g->mu);
    while (t->fires < want) {
        int rc = pthread_cond_timedwait(&t->g->cv, &t->g->mu, &dl);
        cr_assert_neq(rc, ETIMEDOUT, "%s: %d fires after 10 s, want %d", what, t->fires, want);
    }
    cr_assert_eq(t->fires, want, "%s", what);
    pthread_mutex_unlock(&t->g->mu);
}

static void open_gate(hb_gate *g)
{
    pthread_mutex_lock(&g->mu);
    g->open = true;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

/* The clock moves, the service thread is woken, and the test waits for
 * the fires it expects (evs__hb_sync would wait for the blocked one). */
static void move_clock(int64_t t)
{
    evs_store_release(fake_ns_cell(), t);
    evs__hb_kick();
}

Test(heartbeat, a_blocked_callback_does_not_stall_the_other_timers, .timeout = 60)
{
    use_fake_clock();
    evs__hb_set_stall_ns(100 * MSEC);
    hb_gate g = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false};
    gated b = {.g = &g, .block = true}, c = {.g = &g}, c3 = {.g = &g};
    evs__hb_timer *tb, *tc, *tc3;
    /* b is added first, so at 1 s it fires first and blocks. */
    ASSERT_RC(evs__hb_add(&tb, SEC, gated_fire, &b), 0);
    ASSERT_RC(evs__hb_add(&tc, SEC, gated_fire, &c), 0);
    ASSERT_RC(evs__hb_add(&tc3, 3 * SEC, gated_fire, &c3), 0);
    move_clock(SEC);
    wait_fires(&b, 1, "the blocker");
    for (int s = 1; s <= 6; s++) {
        if (s > 1)
            move_clock(s * SEC);
        wait_fires(&c, s, "the 1 s timer, while the blocker blocks");
    }
    wait_fires(&c3, 2, "the 3 s timer, while the blocker blocks");
    pthread_mutex_lock(&g.mu);
    cr_assert_eq(b.fires, 1, "the blocked timer fired again while its callback ran");
    pthread_mutex_unlock(&g.mu);
    cr_assert_eq(evs__hb_stalls(), 1);
    /* Released, it re-arms at 1 s + 1 s, long past: one more fire. */
    open_gate(&g);
    ASSERT_RC(evs__hb_sync(), 0);
    cr_assert_eq(b.fires, 2);
    cr_assert_eq(c.fires, 6);
    cr_assert_eq(c3.fires, 2);
    ASSERT_RC(evs__hb_remove(tb), 0);
    ASSERT_RC(evs__hb_remove(tc), 0);
    ASSERT_RC(evs__hb_remove(tc3), 0);
    evs__hb_set_stall_ns(0);
    finish();
}

/* Several callbacks blocked at once, and every other timer exact each
 * step; run under `make tsan` too. */
Test(heartbeat, many_blocked_callbacks_leave_every_other_timer_exact, .timeout = 120)
{
    enum { NB = 3, NC = 8, STEPS = 40 };
    use_fake_clock();
    evs__hb_set_stall_ns(20 * MSEC);
    hb_gate g = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false};
    gated b[NB], c[NC];
    evs__hb_timer *tb[NB], *tc[NC];
    for (int i = 0; i < NB; i++) {
        b[i] = (gated){.g = &g, .block = true};
        ASSERT_RC(evs__hb_add(&tb[i], SEC, gated_fire, &b[i]), 0);
    }
    for (int i = 0; i < NC; i++) {
        c[i] = (gated){.g = &g};
        ASSERT_RC(evs__hb_add(&tc[i], SEC, gated_fire, &c[i]), 0);
    }
    for (int s = 1; s <= STEPS; s++) {
        move_clock(s * SEC);
        for (int i = 0; i < NC; i++)
            wait_fires(&c[i], s, "a timer beside blocked callbacks");
    }
    for (int i = 0; i < NB; i++)
        wait_fires(&b[i], 1, "a blocker");
    cr_assert_geq(evs__hb_stalls(), NB);
    open_gate(&g);
    ASSERT_RC(evs__hb_sync(), 0);
    for (int i = 0; i < NB; i++)
        cr_assert_eq(b[i].fires, 2, "blocker %d", i);
    for (int i = 0; i < NC; i++)
        cr_assert_eq(c[i].fires, STEPS, "timer %d", i);
    for (int i = 0; i < NB; i++)
        ASSERT_RC(evs__hb_remove(tb[i]), 0);
    for (int i = 0; i < NC; i++)
        ASSERT_RC(evs__hb_remove(tc[i]), 0);
    evs__hb_set_stall_ns(0);
    finish();
}
