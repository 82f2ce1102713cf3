/*
 * The heartbeat timer service: process-wide threads that call back each
 * registered timer when its deadline passes. Streams and SSE clients
 * use it to deliver HEARTBEAT events after an idle interval; the owner of
 * a timer decides what "idle" means, the service only keeps deadlines.
 *
 * Deadlines live in a binary min-heap under one mutex, so add, remove and
 * each fire cost O(log n), and thousands of timers cost one thread that
 * sleeps until the earliest deadline (no polling), plus a spare that
 * watches each callback. Callbacks run user code (an inline stream's
 * heartbeat handlers, batch and window flush functions, SSE push
 * callbacks), so one may block: if a callback runs longer than the stall
 * time (1 s), the spare takes over and the other timers go on firing, so
 * no callback delays another timer by more than that (counted by
 * evs__hb_stalls). The threads start with the first timer and stop when
 * the last one is removed.
 *
 * Times are nanoseconds on the service clock: CLOCK_MONOTONIC, or the
 * clock a test installs with evs__hb_set_clock(). Read it with
 * evs__hb_now() so that an owner's idea of "now" matches the service's.
 */
#ifndef EVS_HEARTBEAT_H
#define EVS_HEARTBEAT_H

#include <stdint.h>

/* The default idle interval: 30 s. */
#define EVS__HB_DEFAULT_INTERVAL_NS (30LL * 1000000000LL)

/* A registered timer; fields live in src/heartbeat.c. */
typedef struct evs__hb_timer evs__hb_timer;

/*
 * Called on the service thread when the timer's deadline has passed;
 * `now_ns` is the service clock as read just before the call (>= the
 * deadline). Return the next deadline, absolute on the service clock, or
 * any negative value for "now_ns + interval". A deadline not after
 * `now_ns` is moved to now_ns + 1: a timer fires at most once per clock
 * reading, so a callback cannot make the thread spin on a stopped clock.
 * Runs on a service thread with no evstream lock held: it may add and
 * remove timers (itself included) and publish. Callbacks run one at a
 * time in deadline order, except that a callback running past the stall
 * time is left running on its thread while the others go on without it:
 * so callbacks of different timers may overlap. One timer's callbacks
 * never overlap (each is ordered after the previous one).
 */
typedef int64_t (*evs__hb_fire_fn)(void *user, int64_t now_ns);

/* A clock for tests: now(ctx) returns ns, never decreasing. */
struct evs__hb_clock {
    int64_t (*now)(void *ctx);
    void *ctx;
};

/*
 * Register a timer whose first deadline is evs__hb_now() + interval_ns;
 * starts the service thread if none runs.
 * Returns 0, EVS_EINVAL (out or fire NULL, interval_ns <= 0), EVS_ENOMEM,
 * or EVS_ESYSTEM (the thread could not be created). On failure *out is
 * NULL and nothing was registered.
 * Ownership: the service owns *out until evs__hb_remove(); `user` is
 * borrowed and passed back untouched.
 * Threads: any thread, including inside a callback.
 * Blocks: briefly, if the previous service thread is being joined.
 */
int evs__hb_add(evs__hb_timer **out, int64_t interval_ns, evs__hb_fire_fn fire,
                void *user);

/*
 * Unregister and free `t`. Once it returns, t's callback is not running
 * and is never called again, so `user` may be freed. Called from inside
 * t's own callback it returns at once (the callback's return value is
 * ignored and the service frees t after it returns); from inside another
 * timer's callback it waits for t's running callback like any caller, so
 * two callbacks must not each remove the other's timer. Removing the last
 * timer stops the service threads; from outside a callback, remove also
 * waits until they have left.
 * Returns 0 or EVS_EINVAL (t NULL). Removing a timer twice is undefined.
 * Threads: any thread, including inside any callback.
 * Blocks: until t's running callback (if any, and not the caller's own)
 * returns and, for the last timer outside a callback, until the threads
 * have left; so do not call it while holding a lock that a callback takes.
 */
int evs__hb_remove(evs__hb_timer *t);

/*
 * Make `t` fire no later than `deadline_ns` (absolute, service clock):
 * a deadline earlier than t's next one replaces it (one at or before the
 * current time fires at once), a later one changes nothing. While t's
 * callback runs, the earlier of the two (`deadline_ns`, and the deadline
 * the callback returns) becomes the next one, so a caller racing a fire
 * is never lost. This is how an owner whose work can become due sooner
 * than planned (a window that opens with an earlier close) keeps one
 * timer instead of removing and adding.
 * Returns 0 or EVS_EINVAL (t NULL). Calling it on a removed timer is
 * undefined, as removing twice is.
 * Threads: any thread, including inside any callback.
 * Blocks: no (takes the service mutex briefly; it is a leaf lock).
 */
int evs__hb_fire_by(evs__hb_timer *t, int64_t deadline_ns);

/*
 * The service clock, in ns: CLOCK_MONOTONIC unless a test clock is set.
 * Threads: any thread.
 */
int64_t evs__hb_now(void);

/*
 * Wall-clock time in ns since the Unix epoch (CLOCK_REALTIME), the scale
 * of event timestamps; with a test clock installed, that clock's reading
 * instead, so that code turning event times into service deadlines
 * (windows, window.c) is deterministic under test: the test clock then
 * stands for both clocks.
 * Threads: any thread.
 */
int64_t evs__hb_wall(void);

/*
 * Test hook: use `c` as the service clock (NULL: CLOCK_MONOTONIC again).
 * With a test clock the thread waits without a timeout and re-reads the
 * clock only when woken, so the test must call evs__hb_kick() or
 * evs__hb_sync() after moving the clock.
 * Returns 0, or EVS_EINVAL while timers exist or a thread still runs.
 * Ownership: borrows `*c` until the clock is replaced; keep it alive.
 * Threads: any thread.
 */
int evs__hb_set_clock(const struct evs__hb_clock *c);

/*
 * Wake the service thread to re-read the clock (after a test clock moved).
 * Threads: any thread.
 */
void evs__hb_kick(void);

/*
 * Wake the service thread and wait until it has run every callback due at
 * a clock reading no earlier than the clock when sync was called (a
 * stalled callback included: sync waits for it to return). With no
 * timer left it waits for the thread to stop; with no thread it returns
 * at once.
 * Returns 0, or EVS_EDEADLK inside a callback (the thread would wait for
 * itself).
 * Threads: any thread.
 * Blocks: while callbacks run.
 */
int evs__hb_sync(void);

/* Test hook: 1 while a service thread exists (started, not yet left),
 * else 0. Threads: any thread. */
int evs__hb_thread_running(void);

/* Callbacks that ran past the stall time, so that the spare took over
 * the other timers. Threads: any thread. */
uint64_t evs__hb_stalls(void);

/* Callbacks that ran with no spare watching (one could not be started):
 * had they stalled, the other timers would have waited. Threads: any. */
uint64_t evs__hb_start_failures(void);

/* Test hook: the stall time in ns of CLOCK_MONOTONIC (real time, also
 * under a test clock); <= 0 restores the default, 1 s. Threads: any. */
void evs__hb_set_stall_ns(int64_t ns);

/* Test hook: make the next thread start fail, as if pthread_create had
 * (so that EVS_ESYSTEM can be tested). Threads: any thread. */
void evs__hb_fail_next_start(void);

#endif /* EVS_HEARTBEAT_H */
