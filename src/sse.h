/*
 * The SSE layer's private interface: test hooks only.
 */
#ifndef EVS_SSE_H
#define EVS_SSE_H

#include "evstream.h"

/* Test hook: evs_sse_read calls inside `c` right now (so a test can
 * disconnect while a read is known to be in progress). Threads: any. */
unsigned evs__sse_readers(const evs_sse_client *c);

#endif /* EVS_SSE_H */
