/*
 * Block pools: same-thread reuse, cross-thread frees returning in
 * batches, adoption of an exited thread's cache, large blocks, and
 * allocation failure.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <string.h>

#include "evs_internal.h"
#include "pool.h"

Test(pool, a_freed_block_is_reused_by_its_thread)
{
    void *a = evs__pool_alloc(100);
    cr_assert_not_null(a);
    cr_assert_eq((uintptr_t)a % 16, 0, "blocks are 16-byte aligned");
    memset(a, 0xab, 100);
    evs__pool_free(a);
    void *b = evs__pool_alloc(90); /* same class */
    cr_assert_eq(a, b, "the block just freed comes back first");
    evs__pool_free(b);
}

Test(pool, large_blocks_come_from_malloc)
{
    void *p = evs__pool_alloc(1 << 20);
    cr_assert_not_null(p);
    memset(p, 1, 1 << 20);
    evs__pool_free(p);
    evs__pool_free(NULL);
}

#define CROSS 10000

typedef struct cross {
    void *blocks[CROSS];
} cross;

static void *free_all(void *arg)
{
    cross *c = arg;
    for (int i = 0; i < CROSS; i++)
        evs__pool_free(c->blocks[i]);
    return NULL; /* thread exit pushes its partial batches */
}

Test(pool, blocks_freed_by_another_thread_return_to_their_owner, .timeout = 30)
{
    static cross c;
    for (int i = 0; i < CROSS; i++) {
        c.blocks[i] = evs__pool_alloc(200);
        cr_assert_not_null(c.blocks[i]);
        memset(c.blocks[i], i & 0xff, 200);
    }
    pthread_t t;
    pthread_create(&t, NULL, free_all, &c);
    pthread_join(t, NULL);
    /* Every block comes back to this thread without a new malloc: the
     * next CROSS allocations are exactly the blocks we gave away. */
    static void *again[CROSS];
    int found = 0;
    for (int i = 0; i < CROSS; i++) {
        again[i] = evs__pool_alloc(200);
        for (int j = 0; j < CROSS; j++) {
            if (again[i] == c.blocks[j]) {
                found++;
                break;
            }
        }
    }
    cr_assert_eq(found, CROSS, "only %d of %d blocks came back", found, CROSS);
    for (int i = 0; i < CROSS; i++)
        evs__pool_free(again[i]);
}

static void *alloc_and_exit(void *arg)
{
    void **out = arg;
    *out = evs__pool_alloc(64);
    return NULL;
}

Test(pool, a_block_outlives_the_thread_that_allocated_it, .timeout = 30)
{
    void *p = NULL;
    pthread_t t;
    pthread_create(&t, NULL, alloc_and_exit, &p);
    pthread_join(t, NULL);
    cr_assert_not_null(p);
    memset(p, 7, 64); /* still ours to use */
    evs__pool_free(p); /* goes to the exited thread's (adoptable) cache */
    /* A new thread adopts that cache and gets the block back. */
    void *q = NULL;
    pthread_create(&t, NULL, alloc_and_exit, &q);
    pthread_join(t, NULL);
    cr_assert_not_null(q);
    evs__pool_free(q);
}

Test(pool, injected_failure_returns_null)
{
    void *warm = evs__pool_alloc(32);
    evs__pool_free(warm);
    evs__alloc_fail_after(0);
    void *p = evs__pool_alloc(32);
    evs__alloc_fail_after(-1);
    cr_assert_null(p);
    p = evs__pool_alloc(32);
    cr_assert_not_null(p);
    evs__pool_free(p);
}

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>

/* Under AddressSanitizer a freed block stays in the pool but is poisoned,
 * so a use after free of an event is reported; a block handed out is
 * addressable for exactly the bytes asked for. Both frees: by the owner
 * (local list) and by another thread (a batch). */
Test(pool, asan_sees_freed_blocks_and_overruns, .timeout = 30)
{
    char *a = evs__pool_alloc(100);
    cr_assert(!__asan_address_is_poisoned(a + 99));
    cr_assert(__asan_address_is_poisoned(a + 100), "past the request");
    evs__pool_free(a);
    cr_assert(__asan_address_is_poisoned(a), "freed to the local list");
    char *b = evs__pool_alloc(50);
    cr_assert_eq(a, b);
    cr_assert(!__asan_address_is_poisoned(b) && __asan_address_is_poisoned(b + 50));

    static void *blocks[3];
    for (int i = 0; i < 3; i++)
        blocks[i] = evs__pool_alloc(200);
    static cross c; /* the helper frees c.blocks[0..CROSS) */
    for (int i = 0; i < CROSS; i++)
        c.blocks[i] = i < 3 ? blocks[i] : evs__pool_alloc(200);
    pthread_t t;
    pthread_create(&t, NULL, free_all, &c);
    pthread_join(t, NULL);
    /* The first block freed heads a batch (it holds the others' addresses
     * and stays addressable); the rest are poisoned. */
    cr_assert(__asan_address_is_poisoned(blocks[1]));
    cr_assert(__asan_address_is_poisoned(blocks[2]));
    evs__pool_free(b);
}
#endif
