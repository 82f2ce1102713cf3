/*
 * The stream module's private interface: what layers built on a stream
 * (the SSE layer) need to know about it beyond the public API.
 */
#ifndef EVS_STREAM_H
#define EVS_STREAM_H

#include "evstream.h"

/* Is `s` a TopicStream (opts.topics)? Threads: any. */
bool evs__stream_has_topics(const evs_stream *s);

/* Does `s` take publishes from one thread at a time only (a
 * single-publisher ring)? A library thread that would publish beside
 * the user (the NATS bridge's imports) refuses such a stream.
 * Threads: any. */
bool evs__stream_single_publisher(const evs_stream *s);

/* How many events the history keeps (0: none). Threads: any. */
size_t evs__stream_history_cap(const evs_stream *s);

/* Ids handed out so far (the id of the latest accepted event).
 * Threads: any. */
uint64_t evs__stream_ids_issued(evs_stream *s);

/*
 * For pooled subscriptions (evs_sub_opts.max_concurrent, workers.c).
 */
struct evs__workers;

/* The subscription's worker pool, or NULL. Threads: any, until
 * evs_unsubscribe. */
struct evs__workers *evs__sub_pool(const evs_sub *sub);

/*
 * A pooled call's handler error (or an event the pool could not take):
 * counts it in the subscription's and the stream's handler_errors and
 * calls the stream's on_error, on the calling thread. Atomic counters,
 * so workers may report concurrently with each other and the dispatcher.
 * Threads: a worker of `sub` inside an epoch section, or its delivering
 * thread inside the handler.
 */
void evs__sub_handler_error(evs_sub *sub, const evs_event *ev, int rc);

/* The last worker of one of s's pools has exited and will not touch `s`
 * again; evs_stream_destroy waits for every pool to say so.
 * Threads: that worker. */
void evs__stream_pool_done(evs_stream *s);

/* opts.metrics: whether `sub`'s handler calls are timed, and record one
 * call's time in the subscription's and the stream's histograms. A pool
 * worker uses these around the real handler call. Threads: any. */
bool evs__sub_timed(const evs_sub *sub);
void evs__sub_record_time(evs_sub *sub, uint64_t ns);

#endif /* EVS_STREAM_H */
