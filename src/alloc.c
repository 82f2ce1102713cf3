/*
 * The allocator hook and the clocks every module uses.
 *
 * Allocation goes through evs__malloc and friends so that tests can fail
 * the k-th allocation. The countdown is one process-wide atomic counter,
 * read with one relaxed load on the fast path when injection is off.
 */
#include "evs_internal.h"

#include <stdlib.h>
#include <time.h>

/* -1: injection off. >= 0: allocations left before one fails.
 * Touched only atomically. */
static int64_t fail_countdown = -1;
/* Allocations attempted since the last evs__alloc_fail_after call. */
static uint64_t attempts;
/* The largest request seen while injection is armed (evs__alloc_largest). */
static size_t largest;

bool evs__alloc_should_fail(void)
{
    if (evs_likely(evs_load(&fail_countdown) < 0))
        return false;
    ck_pr_inc_64(&attempts);
    /* Decrement; the caller that takes it from 0 to -1 fails. Others
     * see it negative afterwards and succeed: exactly one failure. */
    int64_t prev = (int64_t)ck_pr_faa_64((uint64_t *)&fail_countdown, (uint64_t)-1);
    if (prev < 0)
        ck_pr_inc_64((uint64_t *)&fail_countdown); /* undo: stay at -1 */
    return prev == 0;
}

long evs__alloc_fail_after(long k)
{
    long n = (long)evs_xchg(&attempts, 0);
    evs_store(&fail_countdown, k < 0 ? -1 : (int64_t)k);
    return n;
}

size_t evs__alloc_largest(void) { return evs_xchg(&largest, 0); }

/* evs__alloc_should_fail for a request of n bytes, noting its size while
 * injection is armed (the same single load as the plain check when it is
 * not). */
static bool should_fail_n(size_t n)
{
    if (evs_likely(evs_load(&fail_countdown) < 0))
        return false;
    size_t seen = evs_load(&largest);
    while (n > seen && !__atomic_compare_exchange_n(&largest, &seen, n, true,
                                                     __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        ;
    return evs__alloc_should_fail();
}

void *evs__malloc(size_t n)
{
    return should_fail_n(n) ? NULL : malloc(n ? n : 1);
}

void *evs__calloc(size_t n, size_t size)
{
    /* An overflowing product is refused by calloc itself. */
    return should_fail_n(n * size) ? NULL : calloc(n ? n : 1, size ? size : 1);
}

void *evs__realloc(void *p, size_t n)
{
    return should_fail_n(n) ? NULL : realloc(p, n ? n : 1);
}

void evs__free(void *p) { free(p); }

void *evs__aligned_alloc(size_t n)
{
    void *p = NULL;
    if (should_fail_n(n) || posix_memalign(&p, EVS_CACHELINE, n ? n : 1) != 0)
        return NULL;
    return p;
}

char *evs__strndup(const char *s, size_t n)
{
    char *d = evs__malloc(n + 1);
    if (d != NULL) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

static int64_t clock_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t evs__now_mono_ns(void) { return clock_ns(CLOCK_MONOTONIC); }
int64_t evs__now_real_ns(void) { return clock_ns(CLOCK_REALTIME); }

int64_t evs__now_coarse_ns(void) { return clock_ns(CLOCK_REALTIME_COARSE); }
