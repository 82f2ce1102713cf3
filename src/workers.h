/*
 * Bounded concurrent handlers (workers.c): the worker pool behind a
 * subscription made with evs_sub_opts.max_concurrent > 0. stream.c is
 * the only caller: evs_subscribe swaps the subscription's handler and
 * filter for the pool's wrappers, and unsubscribe, flush, close and
 * destroy wait for the pool through these functions.
 */
#ifndef EVS_WORKERS_H
#define EVS_WORKERS_H

#include "evstream.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct evs__workers evs__workers;

/*
 * Check the pool fields of `o` (NULL means no pool): max_concurrent at
 * most EVS_MAX_CONCURRENT, queue at most EVS_MAX_POOL_QUEUE, and key,
 * key_user and queue only with max_concurrent > 0.
 * Returns 0 or EVS_EINVAL. Threads: any.
 */
int evs__workers_opts_check(const evs_sub_opts *o);

/*
 * Start a pool of o->max_concurrent threads for `sub` of stream `s`. On
 * success *handler, *filter (when not NULL) and *user are replaced by
 * the pool's wrappers and the pool, which the subscription then calls
 * instead: the filter still runs on the delivering thread, the handler
 * queues the event for a worker.
 * Returns 0, EVS_ENOMEM or EVS_ESYSTEM (a thread could not be created);
 * on failure nothing runs and nothing is changed.
 * Ownership: the subscription owns *out; evs__workers_release drops it.
 * Threads: any (evs_subscribe).
 */
int evs__workers_create(evs__workers **out, evs_sub *sub, evs_stream *s,
                        const evs_sub_opts *o, evs_handler_fn *handler,
                        evs_filter_fn *filter, void **user);

/* Is the calling thread one of p's workers, inside a handler call? False
 * for NULL. Threads: any. */
bool evs__workers_inside(const evs__workers *p);

/* The stream whose pooled handler the calling thread is running (it is a
 * worker inside a call), or NULL. Threads: any. */
evs_stream *evs__workers_current_stream(void);

/*
 * End the pool's work for an unsubscribe; accepts NULL; idempotent.
 * From any thread but p's workers: the caller has made sure nothing is
 * delivered to the pool any more (the subscription is dead and no
 * delivery is inside it); waits until every queued event has been
 * handled and no call runs, then lets the workers exit.
 * From inside one of p's calls: drops the queued events (counted as
 * discarded), refuses further ones, wakes delivering threads waiting
 * for room, and waits until the caller's call is the only one running.
 * Either way, once it returns no handler call starts again.
 * Threads: any. Blocks: while calls run.
 */
void evs__workers_stop(evs__workers *p);

/*
 * The subscription's last word (its memory is being freed): close the
 * pool if nobody stopped it (without waiting: it is idle) and drop the
 * subscription's reference. The workers exit and drop theirs; the last
 * reference frees the pool. Accepts NULL. Threads: any.
 */
void evs__workers_release(evs__workers *p);

/* Hold the pool's memory while waiting on it without sub_lock. */
void evs__workers_ref(evs__workers *p);
void evs__workers_unref(evs__workers *p);

/*
 * Wait until every event handed to the pool before the call has been
 * handled (its call returned) or discarded, or until `deadline_ns`
 * (CLOCK_MONOTONIC; < 0 = none; in the past = just look).
 * Returns 0, or EVS_ETIMEDOUT with the number still pending added to
 * *left (if not NULL).
 * Threads: any but p's workers. Blocks: up to the deadline.
 */
int evs__workers_wait(evs__workers *p, int64_t deadline_ns, uint64_t *left);

#endif /* EVS_WORKERS_H */
