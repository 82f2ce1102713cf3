/*
 * Comparison: a raw ck_ring passing pointers, the floor under any
 * ring-based design. There is no waiting: a producer spins while the
 * ring is full, the consumer spins while it is empty (so both cores are
 * busy the whole time), and nothing is refcounted or numbered.
 *
 *   prealloc  messages come from a per-producer pool that is reused, and
 *             the producer writes only the 16-byte header: no allocation,
 *             no copy of the payload. This is the floor.
 *   malloc    every message is malloc'd and the payload copied in by the
 *             producer and freed by the consumer, as an event is.
 *
 * One producer uses the _spsc functions; several use _mpsc. The ring has
 * 4096 slots (4095 usable), as evstream's default ring. A pool has twice
 * as many buffers as the ring has slots, so a buffer is rewritten only
 * after the consumer has moved thousands of messages past it.
 *
 * Latency: one message at a time through a spsc ring; the consumer
 * spins on dequeue and acknowledges through a flag the producer spins on.
 */
#include "bench.h"

#include <ck_pr.h>
#include <ck_ring.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#define RING_SLOTS 4096
#define POOL (2 * RING_SLOTS)
#define CHECK_EVERY 64

/* The sentinel that stops the consumer. */
static unsigned char end_marker[BENCH_HDR];

struct ring_ctx {
    ck_ring_t        ring;  /* producers: the threads below; consumer: one */
    ck_ring_buffer_t *buf;
    bool             mp;    /* several producers: use _mpsc */
    bool             prealloc;
    size_t           len;
    const unsigned char *tmpl;
    atomic_int       go;
    int64_t          deadline;
    bench_tally      tally;
    int64_t          t_end;
};

struct prod_arg {
    struct ring_ctx *c;
    int              index;
    unsigned char   *pool; /* prealloc: POOL buffers of c->len bytes */
    uint64_t         sent;
    bool             oom;
};

static void ring_put(struct ring_ctx *c, void *m)
{
    if (c->mp) {
        while (!ck_ring_enqueue_mpsc(&c->ring, c->buf, m))
            ck_pr_stall();
    } else {
        while (!ck_ring_enqueue_spsc(&c->ring, c->buf, m))
            ck_pr_stall();
    }
}

static void *producer(void *arg)
{
    struct prod_arg *a = arg;
    struct ring_ctx *c = a->c;
    uint64_t i = 0;

    while (atomic_load_explicit(&c->go, memory_order_acquire) == 0)
        ;
    for (;;) {
        if (i % CHECK_EVERY == 0 && bench_now_ns() >= c->deadline)
            break;
        unsigned char *m;
        if (c->prealloc) {
            m = a->pool + (size_t)(i % POOL) * c->len;
        } else {
            if ((m = malloc(c->len)) == NULL) {
                a->oom = true;
                break;
            }
            memcpy(m, c->tmpl, c->len);
        }
        bench_put_hdr(m, bench_seq(a->index, ++i), 0);
        ring_put(c, m);
    }
    a->sent = i;
    return NULL;
}

static void *consumer(void *arg)
{
    struct ring_ctx *c = arg;
    unsigned char *m;
    for (;;) {
        bool got = c->mp ? ck_ring_dequeue_mpsc(&c->ring, c->buf, &m)
                         : ck_ring_dequeue_spsc(&c->ring, c->buf, &m);
        if (!got) {
            ck_pr_stall();
            continue;
        }
        if (m == end_marker)
            break;
        bench_tally_add(&c->tally, bench_get_seq(m), false);
        if (!c->prealloc)
            free(m);
    }
    c->t_end = bench_now_ns();
    return NULL;
}

static int ring_rate(const bench_params *p, bench_result *r, bool prealloc)
{
    int npub = p->pubs > 0 ? p->pubs : 1;
    struct ring_ctx *c = aligned_alloc(128, (sizeof(*c) + 127) / 128 * 128);
    struct prod_arg args[BENCH_MAX_PUBS] = {{0}};
    pthread_t th[BENCH_MAX_PUBS], cth;
    uint64_t sent[BENCH_MAX_PUBS];
    unsigned char *tmpl = NULL;
    int ret = BENCH_OK;

    if (c == NULL)
        return bench_fail(r, "out of memory");
    memset(c, 0, sizeof(*c));
    c->len = bench_payload(p);
    c->mp = npub > 1;
    c->prealloc = prealloc;
    c->buf = calloc(RING_SLOTS, sizeof(*c->buf));
    c->tmpl = tmpl = malloc(c->len);
    bool oom = c->buf == NULL || tmpl == NULL;
    for (int i = 0; i < npub && prealloc && !oom; i++)
        oom = (args[i].pool = calloc(POOL, c->len)) == NULL;
    if (oom) {
        ret = bench_fail(r, "out of memory");
        goto out;
    }
    bench_fill(tmpl, c->len);
    ck_ring_init(&c->ring, RING_SLOTS);

    if (pthread_create(&cth, NULL, consumer, c) != 0) {
        fprintf(stderr, "evs-bench: pthread_create failed\n");
        exit(2);
    }
    for (int i = 0; i < npub; i++) {
        args[i].c = c;
        args[i].index = i;
        if (pthread_create(&th[i], NULL, producer, &args[i]) != 0) {
            fprintf(stderr, "evs-bench: pthread_create failed\n");
            exit(2);
        }
    }
    int64_t t0 = bench_now_ns();
    c->deadline = t0 + (int64_t)(p->seconds * 1e9);
    atomic_store_explicit(&c->go, 1, memory_order_release);
    for (int i = 0; i < npub; i++) {
        pthread_join(th[i], NULL);
        sent[i] = args[i].sent;
        oom |= args[i].oom;
    }
    /* The producers are joined: this thread is now the only producer. */
    ring_put(c, end_marker);
    pthread_join(cth, NULL);

    ret = oom ? bench_fail(r, "ck_ring: out of memory")
              : bench_verify(r, prealloc ? "ck_ring prealloc" : "ck_ring malloc",
                             &c->tally, 1, sent, npub, false);
    r->rate = (double)r->received / ((double)(c->t_end - t0) / 1e9);
out:
    for (int i = 0; i < npub; i++)
        free(args[i].pool);
    free(c->buf);
    free(tmpl);
    free(c);
    return ret;
}

int cmp_ckring_prealloc_rate(const bench_params *p, bench_result *r)
{
    return ring_rate(p, r, true);
}

int cmp_ckring_malloc_rate(const bench_params *p, bench_result *r)
{
    return ring_rate(p, r, false);
}

/* ---------------------------------------------------------------- */

struct lat_ctx {
    _Alignas(128) atomic_uint_fast64_t ack;  /* last sequence consumed */
    _Alignas(128) ck_ring_t ring;            /* spsc: main -> consumer */
    ck_ring_buffer_t buf[16];
    bench_result *r;
};

static void *lat_consumer(void *arg)
{
    struct lat_ctx *c = arg;
    unsigned char *m;
    for (;;) {
        if (!ck_ring_dequeue_spsc(&c->ring, c->buf, &m)) {
            ck_pr_stall();
            continue;
        }
        int64_t now = bench_now_ns();
        if (m == end_marker)
            break;
        uint64_t seq = bench_get_seq(m);
        if (c->r->nsamples < c->r->cap)
            c->r->samples[c->r->nsamples++] = now - bench_get_stamp(m);
        atomic_store_explicit(&c->ack, seq, memory_order_release);
    }
    return NULL;
}

int cmp_ckring_latency(const bench_params *p, bench_result *r)
{
    size_t len = bench_payload(p);
    struct lat_ctx *c = aligned_alloc(128, (sizeof(*c) + 127) / 128 * 128);
    unsigned char *msg = malloc(2 * len);
    pthread_t cth;
    int ret = BENCH_OK;

    if (c == NULL || msg == NULL) {
        free(c);
        free(msg);
        return bench_fail(r, "out of memory");
    }
    memset(c, 0, sizeof(*c));
    c->r = r;
    bench_fill(msg, len);
    bench_fill(msg + len, len);
    ck_ring_init(&c->ring, 16);
    if (pthread_create(&cth, NULL, lat_consumer, c) != 0) {
        fprintf(stderr, "evs-bench: pthread_create failed\n");
        exit(2);
    }
    int64_t deadline = bench_now_ns() + (int64_t)(p->seconds * 1e9);
    uint64_t i = 0;
    while (r->nsamples < r->cap) {
        if (p->gap_ns > 0)
            bench_sleep_ns(p->gap_ns);
        int64_t t = bench_now_ns();
        if (t >= deadline)
            break;
        unsigned char *m = msg + (i % 2) * len;
        bench_put_hdr(m, bench_seq(0, ++i), t);
        while (!ck_ring_enqueue_spsc(&c->ring, c->buf, m))
            ck_pr_stall();
        while (atomic_load_explicit(&c->ack, memory_order_acquire) != i)
            ;
    }
    while (!ck_ring_enqueue_spsc(&c->ring, c->buf, end_marker))
        ck_pr_stall();
    pthread_join(cth, NULL);
    r->sent = i;
    r->received = r->nsamples;
    if (r->nsamples != i)
        ret = bench_fail(r, "ck_ring latency: %llu sent, %zu samples",
                         (unsigned long long)i, r->nsamples);
    free(c);
    free(msg);
    return ret;
}
