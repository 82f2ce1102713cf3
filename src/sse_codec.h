/*
 * The SSE codec's private interface: the parser's limits, shared with
 * the tests and with the SSE stream module that will send frames.
 */
#ifndef EVS_SSE_CODEC_H
#define EVS_SSE_CODEC_H

#include "evstream.h"

/* evs_sse_parser_opts.max_message when it is 0: 1 MiB holds any
 * reasonable message and bounds what a hostile server can make one
 * client buffer. */
#define EVS__SSE_DEFAULT_MAX ((size_t)1 << 20)

/* The smallest max_message accepted. Over-long lines are classified by
 * their field name, so the limit must exceed the longest name ("retry",
 * 5 bytes) with its colon; 64 leaves room for short ids and types. */
#define EVS__SSE_MIN_MAX ((size_t)64)

/* The largest: keeps the parser's size arithmetic far from overflow. */
#define EVS__SSE_MAX_MAX (SIZE_MAX / 16)

#endif /* EVS_SSE_CODEC_H */
