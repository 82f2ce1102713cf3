/*
 * Comparison: ZeroMQ over inproc://, lossless.
 *
 * Each publisher thread owns an XPUB socket (PUB plus two options) bound
 * to its own inproc endpoint; every SUB socket connects to all of them.
 * ZMQ_XPUB_NODROP makes a send wait at the high-water mark instead of
 * dropping, which is evstream's EVS_OVERFLOW_BLOCK; the marks are 4096,
 * evstream's default ring. ZMQ_XPUB_VERBOSE passes every subscription
 * up to the publisher, which is the slow-joiner handshake: the timing
 * starts only after each XPUB has read one subscription per SUB, so no
 * message is sent to a subscriber that is not yet attached.
 *
 * Publishers send with zmq_send (which copies the bytes into a new
 * message, as evs_event_create does), then one end marker each. One
 * receiver thread serves every SUB socket, as evstream's one dispatcher
 * serves every subscription: with one socket it blocks in
 * zmq_msg_recv, with several it drains each without waiting and
 * zmq_polls when a whole pass found nothing. It times the last arrival.
 */
#include "bench.h"

#include <stdio.h>

#ifndef EVS_BENCH_HAVE_ZMQ

int cmp_zmq_rate(const bench_params *p, bench_result *r)
{
    (void)p;
    snprintf(r->note, sizeof(r->note), "not built: libzmq3-dev was missing");
    return BENCH_NOT_BUILT;
}

const char *cmp_zmq_version(void) { return NULL; }

#else

#include <zmq.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#define HWM 4096
#define CHECK_EVERY 64

struct zctx {
    void        *ctx;
    void        *pub[BENCH_MAX_PUBS];  /* each used by its publisher thread */
    void        *sub[BENCH_MAX_SUBS];  /* all used by the receiver thread */
    int          npub, nsub;
    size_t       len;
    atomic_int   go;
    int64_t      deadline;
    bench_tally *tally;                /* one per SUB */
    int64_t      t_end;
    char         err[120];             /* receiver's error, if any */
};

struct zpub {
    struct zctx *c;
    int          index;
    uint64_t     sent;
    int          err;
};

static int zsend(void *sock, const void *buf, size_t len)
{
    while (zmq_send(sock, buf, len, 0) < 0) {
        if (errno != EINTR)
            return -1;
    }
    return 0;
}

static void *zpublisher(void *arg)
{
    struct zpub *a = arg;
    struct zctx *c = a->c;
    unsigned char *buf = malloc(c->len);
    uint64_t i = 0;

    if (buf == NULL) {
        a->err = ENOMEM;
        return NULL;
    }
    bench_fill(buf, c->len);
    while (atomic_load_explicit(&c->go, memory_order_acquire) == 0)
        ;
    for (;;) {
        if (i % CHECK_EVERY == 0 && bench_now_ns() >= c->deadline)
            break;
        bench_put_hdr(buf, bench_seq(a->index, i + 1), 0);
        if (zsend(c->pub[a->index], buf, c->len) != 0) {
            a->err = errno;
            break;
        }
        i++;
    }
    a->sent = i;
    bench_put_hdr(buf, BENCH_SEQ_END, 0);
    if (a->err == 0 && zsend(c->pub[a->index], buf, c->len) != 0)
        a->err = errno;
    free(buf);
    return NULL;
}

/* Take one message from SUB `s`; returns 1 if it was an end marker. */
static int zaccount(struct zctx *c, int s, zmq_msg_t *msg)
{
    const void *d = zmq_msg_data(msg);
    if (zmq_msg_size(msg) < BENCH_HDR) {
        snprintf(c->err, sizeof(c->err), "short zmq message (%zu bytes)", zmq_msg_size(msg));
        return 1;
    }
    uint64_t seq = bench_get_seq(d);
    if (seq == BENCH_SEQ_END)
        return 1;
    bench_tally_add(&c->tally[s], seq, false);
    return 0;
}

static void *zreceiver(void *arg)
{
    struct zctx *c = arg;
    int ends[BENCH_MAX_SUBS] = {0}, done = 0;
    zmq_pollitem_t items[BENCH_MAX_SUBS];
    zmq_msg_t msg;

    zmq_msg_init(&msg);
    for (int s = 0; s < c->nsub; s++)
        items[s] = (zmq_pollitem_t){.socket = c->sub[s], .events = ZMQ_POLLIN};
    while (done < c->nsub && c->err[0] == 0) {
        if (c->nsub == 1) {
            if (zmq_msg_recv(&msg, c->sub[0], 0) < 0) {
                if (errno == EINTR)
                    continue;
                snprintf(c->err, sizeof(c->err), "zmq_msg_recv: %s", zmq_strerror(errno));
                break;
            }
            if (zaccount(c, 0, &msg) && ++ends[0] == c->npub)
                done++;
            continue;
        }
        int got = 0;
        for (int s = 0; s < c->nsub; s++) {
            for (int k = 0; k < 256 && ends[s] < c->npub; k++) {
                if (zmq_msg_recv(&msg, c->sub[s], ZMQ_DONTWAIT) < 0)
                    break;
                got++;
                if (zaccount(c, s, &msg) && ++ends[s] == c->npub)
                    done++;
            }
        }
        if (got == 0)
            zmq_poll(items, c->nsub, 100);
    }
    c->t_end = bench_now_ns();
    zmq_msg_close(&msg);
    return NULL;
}

static int zsetopt(void *sock, int opt, int value)
{
    return zmq_setsockopt(sock, opt, &value, sizeof(value));
}

int cmp_zmq_rate(const bench_params *p, bench_result *r)
{
    struct zctx *c = aligned_alloc(128, (sizeof(*c) + 127) / 128 * 128);
    struct zpub args[BENCH_MAX_PUBS];
    pthread_t th[BENCH_MAX_PUBS], rth;
    uint64_t sent[BENCH_MAX_PUBS];
    char ep[64];
    int ret = BENCH_OK;

    if (c == NULL)
        return bench_fail(r, "out of memory");
    memset(c, 0, sizeof(*c));
    c->npub = p->pubs > 0 ? p->pubs : 1;
    c->nsub = p->subs > 0 ? p->subs : 1;
    c->len = bench_payload(p);
    c->tally = aligned_alloc(128, sizeof(bench_tally) * (size_t)c->nsub);
    if (c->tally == NULL) {
        free(c);
        return bench_fail(r, "out of memory");
    }
    memset(c->tally, 0, sizeof(bench_tally) * (size_t)c->nsub);
    c->ctx = zmq_ctx_new();
    for (int i = 0; i < c->npub && ret == BENCH_OK; i++) {
        snprintf(ep, sizeof(ep), "inproc://evs-bench-%d", i);
        c->pub[i] = zmq_socket(c->ctx, ZMQ_XPUB);
        if (c->pub[i] == NULL || zsetopt(c->pub[i], ZMQ_SNDHWM, HWM) != 0 ||
            zsetopt(c->pub[i], ZMQ_RCVHWM, HWM) != 0 ||
            zsetopt(c->pub[i], ZMQ_XPUB_NODROP, 1) != 0 ||
            zsetopt(c->pub[i], ZMQ_XPUB_VERBOSE, 1) != 0 ||
            zsetopt(c->pub[i], ZMQ_LINGER, 0) != 0 || zmq_bind(c->pub[i], ep) != 0)
            ret = bench_fail(r, "zmq XPUB setup: %s", zmq_strerror(errno));
    }
    for (int s = 0; s < c->nsub && ret == BENCH_OK; s++) {
        c->sub[s] = zmq_socket(c->ctx, ZMQ_SUB);
        if (c->sub[s] == NULL || zsetopt(c->sub[s], ZMQ_RCVHWM, HWM) != 0 ||
            zsetopt(c->sub[s], ZMQ_LINGER, 0) != 0 ||
            zmq_setsockopt(c->sub[s], ZMQ_SUBSCRIBE, "", 0) != 0) {
            ret = bench_fail(r, "zmq SUB setup: %s", zmq_strerror(errno));
            break;
        }
        for (int i = 0; i < c->npub && ret == BENCH_OK; i++) {
            snprintf(ep, sizeof(ep), "inproc://evs-bench-%d", i);
            if (zmq_connect(c->sub[s], ep) != 0)
                ret = bench_fail(r, "zmq_connect: %s", zmq_strerror(errno));
        }
    }
    /* Slow joiners: each XPUB reads one subscription per SUB. */
    for (int i = 0; i < c->npub && ret == BENCH_OK; i++) {
        char sub[8];
        for (int s = 0; s < c->nsub && ret == BENCH_OK; s++)
            if (zmq_recv(c->pub[i], sub, sizeof(sub), 0) < 1 || sub[0] != 1)
                ret = bench_fail(r, "zmq handshake: %s", zmq_strerror(errno));
    }
    if (ret != BENCH_OK)
        goto out;

    if (pthread_create(&rth, NULL, zreceiver, c) != 0) {
        fprintf(stderr, "evs-bench: pthread_create failed\n");
        exit(2);
    }
    for (int i = 0; i < c->npub; i++) {
        args[i] = (struct zpub){.c = c, .index = i};
        if (pthread_create(&th[i], NULL, zpublisher, &args[i]) != 0) {
            fprintf(stderr, "evs-bench: pthread_create failed\n");
            exit(2);
        }
    }
    int64_t t0 = bench_now_ns();
    c->deadline = t0 + (int64_t)(p->seconds * 1e9);
    atomic_store_explicit(&c->go, 1, memory_order_release);
    for (int i = 0; i < c->npub; i++) {
        pthread_join(th[i], NULL);
        sent[i] = args[i].sent;
        if (args[i].err != 0 && ret == BENCH_OK)
            ret = bench_fail(r, "zmq_send: %s", zmq_strerror(args[i].err));
    }
    pthread_join(rth, NULL);
    if (ret == BENCH_OK && c->err[0] != 0)
        ret = bench_fail(r, "zmq: %s", c->err);
    if (ret == BENCH_OK)
        ret = bench_verify(r, "zmq", c->tally, c->nsub, sent, c->npub, false);
    r->rate = (double)r->received / ((double)(c->t_end - t0) / 1e9);
out:
    for (int s = 0; s < c->nsub; s++)
        if (c->sub[s] != NULL)
            zmq_close(c->sub[s]);
    for (int i = 0; i < c->npub; i++)
        if (c->pub[i] != NULL)
            zmq_close(c->pub[i]);
    zmq_ctx_term(c->ctx);
    free(c->tally);
    free(c);
    return ret;
}

const char *cmp_zmq_version(void)
{
    static char v[32];
    int major, minor, patch;
    zmq_version(&major, &minor, &patch);
    snprintf(v, sizeof(v), "%d.%d.%d", major, minor, patch);
    return v;
}

#endif /* EVS_BENCH_HAVE_ZMQ */
