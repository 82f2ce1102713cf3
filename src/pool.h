/*
 * Per-thread block pools for event allocations: the publish path must
 * not malloc per event, and glibc's malloc serialises on an arena lock
 * when one thread frees what another allocated (the dispatcher frees what
 * publishers made), which costs futex calls at high rates.
 */
#ifndef EVS_POOL_H
#define EVS_POOL_H

#include <stddef.h>

/*
 * A block of at least n bytes, 16-byte aligned, from the calling
 * thread's pool (sizes above the largest class come from malloc). NULL
 * on allocation failure (or an injected one).
 * Threads: any; each thread allocates from its own cache.
 */
void *evs__pool_alloc(size_t n);

/*
 * Give a block back. A block freed by the thread that allocated it goes
 * to that thread's list; one freed by another thread goes, with one CAS,
 * to its owner's remote stack, which the owner takes in one exchange
 * when its list runs dry. Accepts NULL.
 * Threads: any.
 */
void evs__pool_free(void *p);

#endif /* EVS_POOL_H */
