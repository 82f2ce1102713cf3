/*
 * The stream module's private interface: what layers built on a stream
 * (the SSE layer) need to know about it beyond the public API.
 */
#ifndef EVS_STREAM_H
#define EVS_STREAM_H

#include "evstream.h"

/* Is `s` a TopicStream (opts.topics)? Threads: any. */
bool evs__stream_has_topics(const evs_stream *s);

/* How many events the history keeps (0: none). Threads: any. */
size_t evs__stream_history_cap(const evs_stream *s);

/* Ids handed out so far (the id of the latest accepted event).
 * Threads: any. */
uint64_t evs__stream_ids_issued(evs_stream *s);

#endif /* EVS_STREAM_H */
