/*
 * What every evstream module shares: the allocator hook, cache-line
 * padding, the monotonic/real-time clocks and the lock order.
 *
 * Lock order (take them in this order, never the reverse; no user code
 * runs while any of them is held):
 *   1. evs_stream.sub_lock      subscription writers (subscribe/unsubscribe)
 *   2. evs_router.index_lock    a TopicStream's subscription index (rwlock)
 *   3. evs_router.topics_lock   a TopicStream's topic table
 *   4. evs_stream.hist_lock     the history ring
 *   (heartbeat.c's service mutex is never held while calling into a
 *   stream, nor taken under any of these.)
 *   evs_sse.lock (an SSE layer's client list) and evs_sse.handoff (a
 *   push client's replay hand-off) are leaves: nothing is called into
 *   while either is held.
 *   evs__workers.mu (a pooled subscription's queue, workers.c) is a
 *   leaf, taken after sub_lock (flush and close take a reference on a
 *   pool under sub_lock, and free_sub may release one there).
 *   evs_windower.lock (window.c) is taken before the heartbeat service
 *   mutex (evs__hb_fire_by) and never while calling into a stream.
 *   evs_nats_bridge.lock and .reg_lock (nats_bridge.c) are leaves, never
 *   nested, never held while calling into a stream or nats.c.
 * Nothing else in the library is a lock: the publish, dispatch and SSE
 * delivery paths are lock-free (SPEC.md, "Threading and memory model").
 */
#ifndef EVS_INTERNAL_H
#define EVS_INTERNAL_H

#include "evstream.h"

#include <ck_pr.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define EVS_CACHELINE 64
/* Put a field on its own cache line so producer and consumer fields
 * never share one (false sharing costs a line transfer per write). */
#define EVS_ALIGNED __attribute__((aligned(EVS_CACHELINE)))

/* The struct of type T whose member m is at p. */
#define evs_container_of(p, T, m) ((T *)(void *)((char *)(p) - offsetof(T, m)))

#define evs_likely(x)   __builtin_expect(!!(x), 1)
#define evs_unlikely(x) __builtin_expect(!!(x), 0)

/* Leave a sentence for evs_last_error on the calling thread (printf
 * format; truncated to 255 bytes); returns `code`,
 * so a check can end with `return evs__set_error(EVS_EINVAL, ...)`. */
int evs__set_error(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * Allocation. Every allocation in the library goes through these, so a
 * test can make the k-th one fail (evs__alloc_fail_after) and check that
 * each failure is reported as EVS_ENOMEM and leaks nothing.
 */
void *evs__malloc(size_t n);
void *evs__calloc(size_t n, size_t size);
void *evs__realloc(void *p, size_t n);
void  evs__free(void *p);
/* Cache-line aligned (EVS_CACHELINE); free with evs__free. */
void *evs__aligned_alloc(size_t n);
char *evs__strndup(const char *s, size_t n);

/*
 * Test hook: make the allocation after `k` more succeed fail (k = 0: the
 * next one fails); k < 0 turns failure injection off. Returns how many
 * allocations were attempted since the previous call. Process-wide.
 */
long evs__alloc_fail_after(long k);

/* Counts an allocation attempt and says whether injection fails it; for
 * allocators that do not call evs__malloc (the block pools). */
bool evs__alloc_should_fail(void);

/*
 * Test hook: the largest single request (bytes) made through evs__malloc,
 * evs__calloc, evs__realloc or evs__aligned_alloc while injection is
 * armed (evs__alloc_fail_after(k) with k >= 0; a huge k counts without
 * failing), since the previous call. Lets tests bound what hostile input
 * makes the library allocate.
 */
size_t evs__alloc_largest(void);

/* Nanoseconds on CLOCK_MONOTONIC and CLOCK_REALTIME. */
int64_t evs__now_mono_ns(void);
int64_t evs__now_real_ns(void);
/* CLOCK_REALTIME_COARSE: a few ns to read, resolution of the kernel tick. */
int64_t evs__now_coarse_ns(void);

/*
 * Loads and stores of fields shared between threads without a lock.
 * ck_pr_load/ck_pr_store are volatile accesses, which ThreadSanitizer
 * cannot tell from plain ones, and ck's standalone fences are invisible
 * to it. These __atomic forms compile to the same single moves on
 * x86-64 and carry acquire/release meaning that TSan checks. Atomic
 * read-modify-write operations (CAS, add) use ck_pr.
 */
#define evs_load(p)            __atomic_load_n((p), __ATOMIC_RELAXED)
#define evs_load_acquire(p)    __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define evs_store(p, v)        __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define evs_store_release(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
/* Atomic exchange. ck_pr_fas is a volatile load plus a CAS loop under
 * CK_USE_CC_BUILTINS, whose load TSan reports as a race. */
#define evs_xchg(p, v)         __atomic_exchange_n((p), (v), __ATOMIC_ACQ_REL)

/*
 * The limits in force (evs_limits_set; src/limits.c). Every check reads
 * them through these: one relaxed load each, never torn.
 */
extern evs_limits evs__limits;
static inline size_t evs__max_topic(void) { return evs_load(&evs__limits.max_topic); }
static inline size_t evs__max_type_name(void) { return evs_load(&evs__limits.max_type_name); }
static inline size_t evs__max_data(void) { return evs_load(&evs__limits.max_data); }
static inline size_t evs__max_meta(void) { return evs_load(&evs__limits.max_meta); }
static inline unsigned evs__max_depth(void) { return evs_load(&evs__limits.max_depth); }

/* Pause inside a spin loop (ck_pr_stall: `pause` on x86). */
static inline void evs__cpu_relax(void) { ck_pr_stall(); }

#endif /* EVS_INTERNAL_H */
