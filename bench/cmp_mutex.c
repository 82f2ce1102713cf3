/*
 * Comparison: the plain design everyone writes first. A bounded queue
 * of pointers (4096 slots, as evstream's default ring) under one mutex,
 * with a condition variable each for "not empty" and "not full",
 * signalled only when someone waits. Each message is a malloc'd buffer
 * of the payload size, filled by the producer and freed by the consumer.
 *
 * Rate: producers push until their deadline, then main pushes a NULL
 * that stops the one consumer thread, which times the last delivery.
 * Latency: one message at a time, the consumer asleep on the condition
 * variable between them (the hand-off a parked dispatcher competes with).
 */
#include "bench.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#define QCAP 4096
#define CHECK_EVERY 64

struct mq {
    pthread_mutex_t mu;         /* guards everything below */
    pthread_cond_t  not_empty;  /* consumer waits here when len == 0 */
    pthread_cond_t  not_full;   /* producers wait here when len == QCAP */
    int             wait_empty; /* consumers waiting on not_empty */
    int             wait_full;  /* producers waiting on not_full */
    size_t          head, len;
    void           *slot[QCAP];
};

static struct mq *mq_create(void)
{
    struct mq *q = calloc(1, sizeof(*q));
    if (q == NULL)
        return NULL;
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->not_empty, NULL);
    pthread_cond_init(&q->not_full, NULL);
    return q;
}

static void mq_destroy(struct mq *q)
{
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->not_empty);
    pthread_cond_destroy(&q->not_full);
    free(q);
}

static void mq_push(struct mq *q, void *p)
{
    pthread_mutex_lock(&q->mu);
    while (q->len == QCAP) {
        q->wait_full++;
        pthread_cond_wait(&q->not_full, &q->mu);
        q->wait_full--;
    }
    q->slot[(q->head + q->len) % QCAP] = p;
    q->len++;
    if (q->wait_empty > 0)
        pthread_cond_signal(&q->not_empty);
    pthread_mutex_unlock(&q->mu);
}

static void *mq_pop(struct mq *q)
{
    pthread_mutex_lock(&q->mu);
    while (q->len == 0) {
        q->wait_empty++;
        pthread_cond_wait(&q->not_empty, &q->mu);
        q->wait_empty--;
    }
    void *p = q->slot[q->head];
    q->head = (q->head + 1) % QCAP;
    q->len--;
    if (q->wait_full > 0)
        pthread_cond_signal(&q->not_full);
    pthread_mutex_unlock(&q->mu);
    return p;
}

/* ---------------------------------------------------------------- */

struct rate_ctx {
    struct mq  *q;
    size_t      len;
    const unsigned char *tmpl;
    atomic_int  go;
    int64_t     deadline;
    bench_tally tally;
    int64_t     t_end;
};

struct prod_arg {
    struct rate_ctx *c;
    int              index;
    uint64_t         sent;
    bool             oom;
};

static void *producer(void *arg)
{
    struct prod_arg *a = arg;
    struct rate_ctx *c = a->c;
    uint64_t i = 0;

    while (atomic_load_explicit(&c->go, memory_order_acquire) == 0)
        ;
    for (;;) {
        if (i % CHECK_EVERY == 0 && bench_now_ns() >= c->deadline)
            break;
        unsigned char *m = malloc(c->len);
        if (m == NULL) {
            a->oom = true;
            break;
        }
        memcpy(m, c->tmpl, c->len);
        bench_put_hdr(m, bench_seq(a->index, ++i), 0);
        mq_push(c->q, m);
    }
    a->sent = i;
    return NULL;
}

static void *consumer(void *arg)
{
    struct rate_ctx *c = arg;
    unsigned char *m;
    while ((m = mq_pop(c->q)) != NULL) {
        bench_tally_add(&c->tally, bench_get_seq(m), false);
        free(m);
    }
    c->t_end = bench_now_ns();
    return NULL;
}

int cmp_mutex_rate(const bench_params *p, bench_result *r)
{
    int npub = p->pubs > 0 ? p->pubs : 1;
    struct rate_ctx *c = aligned_alloc(128, (sizeof(*c) + 127) / 128 * 128);
    struct prod_arg args[BENCH_MAX_PUBS];
    pthread_t th[BENCH_MAX_PUBS], cth;
    uint64_t sent[BENCH_MAX_PUBS];
    unsigned char *tmpl;

    if (c == NULL)
        return bench_fail(r, "out of memory");
    memset(c, 0, sizeof(*c));
    c->len = bench_payload(p);
    c->q = mq_create();
    c->tmpl = tmpl = malloc(c->len);
    if (c->q == NULL || tmpl == NULL) {
        free(tmpl);
        free(c);
        return bench_fail(r, "out of memory");
    }
    bench_fill(tmpl, c->len);
    if (pthread_create(&cth, NULL, consumer, c) != 0) {
        fprintf(stderr, "evs-bench: pthread_create failed\n");
        exit(2);
    }
    for (int i = 0; i < npub; i++) {
        args[i] = (struct prod_arg){.c = c, .index = i};
        if (pthread_create(&th[i], NULL, producer, &args[i]) != 0) {
            fprintf(stderr, "evs-bench: pthread_create failed\n");
            exit(2);
        }
    }
    int64_t t0 = bench_now_ns();
    c->deadline = t0 + (int64_t)(p->seconds * 1e9);
    atomic_store_explicit(&c->go, 1, memory_order_release);
    bool oom = false;
    for (int i = 0; i < npub; i++) {
        pthread_join(th[i], NULL);
        sent[i] = args[i].sent;
        oom |= args[i].oom;
    }
    mq_push(c->q, NULL);
    pthread_join(cth, NULL);

    int ret = oom ? bench_fail(r, "mutex queue: out of memory")
                  : bench_verify(r, "mutex queue", &c->tally, 1, sent, npub, false);
    r->rate = (double)r->received / ((double)(c->t_end - t0) / 1e9);
    mq_destroy(c->q);
    free(tmpl);
    free(c);
    return ret;
}

/* ---------------------------------------------------------------- */

struct lat_ctx {
    _Alignas(128) atomic_uint_fast64_t ack;
    _Alignas(128) struct mq *q;
    bench_result *r;
};

static void *lat_consumer(void *arg)
{
    struct lat_ctx *c = arg;
    unsigned char *m;
    while ((m = mq_pop(c->q)) != NULL) {
        int64_t now = bench_now_ns();
        uint64_t seq = bench_get_seq(m);
        if (c->r->nsamples < c->r->cap)
            c->r->samples[c->r->nsamples++] = now - bench_get_stamp(m);
        free(m);
        atomic_store_explicit(&c->ack, seq, memory_order_release);
    }
    return NULL;
}

int cmp_mutex_latency(const bench_params *p, bench_result *r)
{
    size_t len = bench_payload(p);
    struct lat_ctx *c = aligned_alloc(128, (sizeof(*c) + 127) / 128 * 128);
    unsigned char *tmpl = malloc(len);
    pthread_t cth;
    int ret = BENCH_OK;

    if (c == NULL || tmpl == NULL || (memset(c, 0, sizeof(*c)), c->q = mq_create()) == NULL) {
        free(c);
        free(tmpl);
        return bench_fail(r, "out of memory");
    }
    c->r = r;
    bench_fill(tmpl, len);
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
        unsigned char *m = malloc(len);
        if (m == NULL) {
            ret = bench_fail(r, "out of memory");
            break;
        }
        memcpy(m, tmpl, len);
        bench_put_hdr(m, bench_seq(0, ++i), t);
        mq_push(c->q, m);
        while (atomic_load_explicit(&c->ack, memory_order_acquire) != i)
            ;
    }
    mq_push(c->q, NULL);
    pthread_join(cth, NULL);
    r->sent = i;
    r->received = r->nsamples;
    if (ret == BENCH_OK && r->nsamples != i)
        ret = bench_fail(r, "condvar latency: %llu sent, %zu samples",
                         (unsigned long long)i, r->nsamples);
    mq_destroy(c->q);
    free(tmpl);
    free(c);
    return ret;
}
