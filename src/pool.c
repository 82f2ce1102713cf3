/*
 * Per-thread block pools (see pool.h).
 *
 * Each thread that allocates gets a cache. Per size class it has:
 *   - `local`: blocks this thread freed itself (owner only, no atomics),
 *     linked through their headers;
 *   - `batches`: batches of blocks other threads freed, taken from the
 *     remote stack (owner only);
 *   - `remote`: a stack of batches that other threads push (one CAS per
 *     batch) and the owner empties whole (one exchange).
 * Every block carries a 16-byte header naming its cache and class.
 *
 * Why batches: a block freed by another thread was last written by that
 * thread, so reading a link stored in it is a cache miss. An intrusive
 * list of single blocks makes the owner walk a chain of dependent misses,
 * one per allocation. A batch is one freed block whose body holds the
 * addresses of up to BATCH_CAP(class) others, so the owner reads a
 * packed array instead, and the freeing thread pays one CAS per batch.
 * A freeing thread keeps an open batch per (class, owner) for up to
 * OUTBOXES owners; a full batch, an evicted one, and all of them at
 * thread exit are pushed to their owners.
 *
 * The remote stack is only pushed (CAS) and only emptied whole
 * (exchange), so no node is ever popped singly and there is no ABA.
 *
 * Caches are never freed, because blocks in flight point at them. When a
 * thread exits its cache is put on a list; the next new thread adopts it
 * with its lists and whatever is still pushed onto it. Local lists are
 * trimmed to LOCAL_MAX blocks per class so a burst does not pin memory.
 */
#include "pool.h"

#include "evs_internal.h"

#include <pthread.h>
#include <stdlib.h>

/*
 * Under AddressSanitizer, blocks on the pool's lists are poisoned, so a
 * use after free of an event is reported even though the block is not
 * given back to malloc; a block handed out is addressable for exactly
 * the bytes asked for, so overruns are reported too. The pool's own
 * reads of free blocks unpoison what they read first; an open batch's
 * head block (which holds the batch) stays addressable.
 */
#if defined(__SANITIZE_ADDRESS__)
#define EVS_POOL_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EVS_POOL_ASAN 1
#endif
#endif
#ifdef EVS_POOL_ASAN
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#define NCLASSES 6
#define MIN_SHIFT 7 /* smallest class: 128 bytes */
#define LOCAL_MAX 4096
#define OUTBOXES 4

struct block_hdr {
    struct pool_cache *owner; /* NULL: a malloc'd large block */
    uint32_t cls;
    uint32_t pad;
};

/* A block on a local list: the link lives in its header (over `owner`,
 * which the list implies and which is written back when the block is
 * handed out), so the body holds nothing and can be poisoned whole under
 * ASan while LeakSanitizer, which ignores pointers in poisoned memory,
 * still sees every listed block as reachable. */
struct free_node {
    struct free_node *next;
};

_Static_assert(sizeof(struct free_node) <= offsetof(struct block_hdr, cls),
               "a local link must leave the class intact");

/* Lives in the body of a free block. */
struct batch {
    struct batch *next;
    size_t n;      /* addresses in ptrs[] */
    void *ptrs[];  /* bodies of free blocks of the same class and owner */
};

struct pool_class {
    /* Owner only. */
    struct free_node *local;
    size_t nlocal;
    struct batch *batches;
    /* Pushed by any thread (CAS), emptied by the owner (exchange). On its
     * own cache line so remote frees do not bounce the owner's fields. */
    struct batch *remote EVS_ALIGNED;
};

struct pool_cache {
    struct pool_class cls[NCLASSES];
    struct pool_cache *next_free; /* on the unowned list (under `lock`) */
    struct pool_cache *next_all;  /* every cache ever made (under `lock`) */
};

/* A freeing thread's open batch for one owner. */
struct outbox {
    struct pool_cache *owner;
    struct batch *b;
};

struct thread_pool {
    struct pool_cache *cache;
    struct outbox out[NCLASSES][OUTBOXES];
    unsigned next_evict[NCLASSES];
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct pool_cache *unowned; /* caches of exited threads */
static struct pool_cache *all;     /* keeps every cache reachable */
static pthread_once_t once = PTHREAD_ONCE_INIT;
static pthread_key_t key;
static _Thread_local struct thread_pool tl;
static _Thread_local bool tl_registered;

/* Bytes of a block's body in class `cls`. */
static size_t body_size(uint32_t cls)
{
    return ((size_t)1 << (MIN_SHIFT + cls)) - sizeof(struct block_hdr);
}

/* Hand out h's body for n bytes (under ASan, exactly those addressable). */
static void *hand_out(struct block_hdr *h, uint32_t cls, size_t n)
{
    POISON(h + 1, body_size(cls));
    UNPOISON(h + 1, n);
    return h + 1;
}

static size_t batch_cap(uint32_t cls)
{
    size_t body = ((size_t)1 << (MIN_SHIFT + cls)) - sizeof(struct block_hdr);
    return (body - sizeof(struct batch)) / sizeof(void *);
}

static void push_batch(struct pool_cache *owner, uint32_t cls, struct batch *b)
{
    struct pool_class *pc = &owner->cls[cls];
    struct batch *head = evs_load(&pc->remote);
    /* Release: our writes to these blocks come before their reuse. */
    do {
        b->next = head;
    } while (!__atomic_compare_exchange_n(&pc->remote, &head, b, true, __ATOMIC_RELEASE,
                                          __ATOMIC_RELAXED));
}

static void flush_outboxes(void)
{
    for (uint32_t k = 0; k < NCLASSES; k++) {
        for (int i = 0; i < OUTBOXES; i++) {
            struct outbox *o = &tl.out[k][i];
            if (o->b != NULL)
                push_batch(o->owner, k, o->b);
            o->owner = NULL;
            o->b = NULL;
        }
    }
}

static void thread_exit(void *p)
{
    (void)p;
    flush_outboxes();
    struct pool_cache *c = tl.cache;
    tl.cache = NULL;
    if (c == NULL)
        return;
    pthread_mutex_lock(&lock);
    c->next_free = unowned;
    unowned = c;
    pthread_mutex_unlock(&lock);
}

static void init_once(void) { pthread_key_create(&key, thread_exit); }

/* Register the thread-exit hook (once per thread). */
static bool thread_register(void)
{
    if (evs_likely(tl_registered))
        return true;
    pthread_once(&once, init_once);
    /* Any non-NULL value makes the destructor run at thread exit. */
    if (pthread_setspecific(key, &tl) != 0)
        return false;
    tl_registered = true;
    return true;
}

static struct pool_cache *cache_get(void)
{
    if (evs_likely(tl.cache != NULL))
        return tl.cache;
    if (!thread_register())
        return NULL;
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
    tl.cache = c;
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

/* A free block from the batches, or NULL. */
static struct block_hdr *take_batched(struct pool_class *pc)
{
    if (pc->batches == NULL) {
        if (evs_load(&pc->remote) == NULL)
            return NULL;
        /* Acquire: the freeing threads' writes come before our reuse. */
        pc->batches = __atomic_exchange_n(&pc->remote, NULL, __ATOMIC_ACQUIRE);
    }
    struct batch *b = pc->batches;
    void *body;
    if (b->n > 0) {
        body = b->ptrs[--b->n];
    } else {
        pc->batches = b->next;
        body = b;
    }
    return (struct block_hdr *)body - 1;
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
    if (pc->local != NULL) {
        struct free_node *f = pc->local;
        pc->local = f->next;
        pc->nlocal--;
        h = (struct block_hdr *)(void *)f;
        h->owner = c;
        h->cls = (uint32_t)k;
        return hand_out(h, (uint32_t)k, n);
    }
    if ((h = take_batched(pc)) != NULL)
        return hand_out(h, (uint32_t)k, n);
    h = malloc((size_t)1 << (MIN_SHIFT + k));
    if (h == NULL)
        return NULL;
    h->owner = c;
    h->cls = (uint32_t)k;
    return hand_out(h, (uint32_t)k, n);
}

/* Free a block owned by another thread's cache: add it to our open batch
 * for that owner, pushing the batch when it is full. */
static void free_remote(struct block_hdr *h, void *body)
{
    uint32_t k = h->cls;
    if (!thread_register()) {
        /* No per-thread state to keep a batch in: push a batch of one. */
        struct batch *b = body;
        UNPOISON(b, body_size(k));
        b->n = 0;
        push_batch(h->owner, k, b);
        return;
    }
    struct outbox *row = tl.out[k];
    for (int i = 0; i < OUTBOXES; i++) {
        struct outbox *o = &row[i];
        if (o->owner != h->owner)
            continue;
        o->b->ptrs[o->b->n++] = body;
        POISON(body, body_size(k));
        if (o->b->n == batch_cap(k)) {
            push_batch(o->owner, k, o->b);
            o->owner = NULL;
            o->b = NULL;
        }
        return;
    }
    /* No open batch for this owner: this block starts one, in place of
     * the least recently started. */
    struct outbox *o = &row[tl.next_evict[k]++ % OUTBOXES];
    if (o->b != NULL)
        push_batch(o->owner, k, o->b);
    o->owner = h->owner;
    UNPOISON(body, body_size(k)); /* the head holds the batch */
    o->b = body;
    o->b->n = 0;
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
    if (c != tl.cache) {
        free_remote(h, p);
        return;
    }
    struct pool_class *pc = &c->cls[h->cls];
    if (pc->nlocal >= LOCAL_MAX) {
        free(h);
        return;
    }
    POISON(p, body_size(h->cls));
    struct free_node *f = (struct free_node *)(void *)h;
    f->next = pc->local;
    pc->local = f;
    pc->nlocal++;
}
