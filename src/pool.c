/*
 * Per-thread block pools (see pool.h).
 *
 * Each thread that allocates gets a cache with, per size class, a local
 * free list (owner only, no atomics) and a remote stack that any thread
 * pushes freed blocks onto. Every block carries a 16-byte header naming
 * its cache and class, so whoever frees it knows where it goes.
 *
 * Remote stack: a Treiber stack that is only pushed (CAS) by freeing
 * threads and only emptied whole (exchange with NULL) by the owner, so
 * no node is ever popped singly and there is no ABA problem.
 *
 * Caches are never freed, because blocks still in flight point at them.
 * When a thread exits its cache is marked unowned and put on a list; the
 * next new thread adopts it, with its lists and whatever other threads
 * still push onto it. Local lists are trimmed to LOCAL_MAX blocks per
 * class so a burst does not pin memory forever.
 */
#include "pool.h"

#include "evs_internal.h"

#include <pthread.h>
#include <stdlib.h>

#define NCLASSES 6
#define MIN_SHIFT 7 /* smallest class: 128 bytes */
#define LOCAL_MAX 4096

struct block_hdr {
    struct pool_cache *owner; /* NULL: a malloc'd large block */
    uint32_t cls;
    uint32_t pad;
};

struct free_node {
    struct free_node *next;
};

struct pool_class {
    /* Owner only. */
    struct free_node *local;
    size_t nlocal;
    /* Pushed by any thread (CAS), emptied by the owner (exchange). On its
     * own cache line: remote frees must not bounce the owner's list. */
    struct free_node *remote EVS_ALIGNED;
};

struct pool_cache {
    struct pool_class cls[NCLASSES];
    struct pool_cache *next_free; /* on the unowned list (under `lock`) */
    struct pool_cache *next_all;  /* every cache ever made (under `lock`) */
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct pool_cache *unowned; /* caches of exited threads */
static struct pool_cache *all;     /* keeps every cache reachable */
static pthread_once_t once = PTHREAD_ONCE_INIT;
static pthread_key_t key;
static _Thread_local struct pool_cache *tl_cache;

static void thread_exit(void *p)
{
    struct pool_cache *c = p;
    pthread_mutex_lock(&lock);
    c->next_free = unowned;
    unowned = c;
    pthread_mutex_unlock(&lock);
}

static void init_once(void) { pthread_key_create(&key, thread_exit); }

static struct pool_cache *cache_get(void)
{
    if (evs_likely(tl_cache != NULL))
        return tl_cache;
    pthread_once(&once, init_once);
    pthread_mutex_lock(&lock);
    struct pool_cache *c = unowned;
    if (c != NULL) {
        unowned = c->next_free;
    } else if ((c = evs__aligned_alloc(sizeof(*c))) != NULL) {
        memset(c, 0, sizeof(*c));
        c->next_all = all;
        all = c;
    }
    pthread_mutex_unlock(&lock);
    if (c == NULL)
        return NULL;
    if (pthread_setspecific(key, c) != 0) {
        thread_exit(c);
        return NULL;
    }
    tl_cache = c;
    return c;
}

static int class_of(size_t n)
{
    size_t need = n + sizeof(struct block_hdr);
    for (int k = 0; k < NCLASSES; k++)
        if (need <= ((size_t)1 << (MIN_SHIFT + k)))
            return k;
    return -1;
}

void *evs__pool_alloc(size_t n)
{
    int k = class_of(n);
    struct pool_cache *c = NULL;
    struct block_hdr *h;

    if (k >= 0 && (c = cache_get()) == NULL)
        return NULL;
    if (c == NULL) {
        h = evs__malloc(n + sizeof(*h));
        if (h == NULL)
            return NULL;
        h->owner = NULL;
        return h + 1;
    }
    if (evs__alloc_should_fail())
        return NULL;
    struct pool_class *pc = &c->cls[k];
    if (pc->local == NULL && evs_load(&pc->remote) != NULL) {
        /* Acquire: the freeing threads' writes come before our reuse. */
        pc->local = __atomic_exchange_n(&pc->remote, NULL, __ATOMIC_ACQUIRE);
        size_t cnt = 0;
        for (struct free_node *f = pc->local; f != NULL; f = f->next)
            cnt++;
        pc->nlocal = cnt;
    }
    if (pc->local != NULL) {
        struct free_node *f = pc->local;
        pc->local = f->next;
        pc->nlocal--;
        h = (struct block_hdr *)f - 1;
    } else {
        h = malloc((size_t)1 << (MIN_SHIFT + k));
        if (h == NULL)
            return NULL;
        h->owner = c;
        h->cls = (uint32_t)k;
    }
    return h + 1;
}

void evs__pool_free(void *p)
{
    if (p == NULL)
        return;
    struct block_hdr *h = (struct block_hdr *)p - 1;
    struct pool_cache *c = h->owner;
    if (c == NULL) {
        evs__free(h);
        return;
    }
    struct pool_class *pc = &c->cls[h->cls];
    struct free_node *f = p;
    if (c == tl_cache) {
        if (pc->nlocal >= LOCAL_MAX) {
            free(h);
            return;
        }
        f->next = pc->local;
        pc->local = f;
        pc->nlocal++;
        return;
    }
    /* Release: our writes to the block happen before the owner reuses it. */
    struct free_node *head = evs_load(&pc->remote);
    do {
        f->next = head;
    } while (!__atomic_compare_exchange_n(&pc->remote, &head, f, true, __ATOMIC_RELEASE,
                                          __ATOMIC_RELAXED));
}
