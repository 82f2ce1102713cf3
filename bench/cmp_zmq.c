/*
 * Comparison: ZeroMQ over inproc://, lossless, in two set-ups, so that
 * the goal can be checked against whichever is faster on the machine.
 *
 * "zmq XPUB/SUB NODROP" (cmp_zmq_rate): each publisher thread owns an
 * XPUB socket (PUB plus options) bound to its own inproc endpoint; every
 * SUB socket connects to all of them. ZMQ_XPUB_NODROP makes a send wait
 * at the high-water mark instead of dropping, which is evstream's
 * EVS_OVERFLOW_BLOCK; the marks are 4096, evstream's default ring.
 * ZMQ_XPUB_VERBOSE passes every subscription up to the publisher, which
 * is the slow-joiner handshake: the timing starts only after each XPUB
 * has read one subscription per SUB. One receiver thread serves every
 * SUB socket, as evstream's one dispatcher serves every subscription.
 *
 * "zmq PUB/SUB HWM 0" (cmp_zmq_pub_rate, cmp_zmq_pub1_rate): the plain
 * set-up ZeroMQ's own throughput figures use. ZMQ_PUB and ZMQ_SUB with
 * every high-water mark 0 (no limit): the publisher never waits and PUB
 * never drops (it drops only at the mark), and queues grow instead,
 * which a 0.5 s run can afford. cmp_zmq_pub_rate receives each SUB
 * socket on its own thread; cmp_zmq_pub1_rate uses one thread for all.
 * The slow joiner is handled by sync messages: before timing, each
 * publisher's socket sends sequence-0 messages until every SUB has
 * received one from every publisher (a SUB's receiver bumps an atomic
 * counter at the first one from each); from then on nothing sent can be
 * filtered out, and the sync messages still queued are skipped.
 *
 * In both, publishers send with zmq_send (which copies the bytes into a
 * new message, as evs_event_create does), blocking sends, then one end
 * marker each. A receiver with one socket blocks in zmq_msg_recv; one
 * with several drains each without waiting and zmq_polls when a whole
 * pass found nothing. Every SUB's messages are counted and checksummed;
 * a lost message fails the run (drops are not tolerated: with PUB they
 * could only come from a high-water mark, and these have none). The
 * rate is timed from the publishers' release to the last receiver's
 * last message.
 */
#include "bench.h"

#include <stdio.h>

#ifndef EVS_BENCH_HAVE_ZMQ

static int not_built(bench_result *r)
{
    snprintf(r->note, sizeof(r->note), "not built: libzmq3-dev was missing");
    return BENCH_NOT_BUILT;
}

int cmp_zmq_rate(const bench_params *p, bench_result *r) { (void)p; return not_built(r); }
int cmp_zmq_pub_rate(const bench_params *p, bench_result *r) { (void)p; return not_built(r); }
int cmp_zmq_pub1_rate(const bench_params *p, bench_result *r) { (void)p; return not_built(r); }

const char *cmp_zmq_version(void) { return NULL; }

#else

#include <zmq.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#define HWM 4096
#define CHECK_EVERY 64
#define SYNC_TIMEOUT_NS (5 * 1000000000LL)

/* A receiver thread: serves SUB sockets [first, first + count). */
struct zrecv {
    struct zctx *c;
    int          first, count;
    int64_t      t_end;     /* when it took its last message */
    char         err[120];  /* its error, if any */
};

struct zctx {
    void        *ctx;
    void        *pub[BENCH_MAX_PUBS];  /* each used by its publisher thread */
    void        *sub[BENCH_MAX_SUBS];  /* each used by one receiver thread */
    int          npub, nsub;
    size_t       len;
    atomic_int   go;
    atomic_int   synced;               /* (SUB, publisher) pairs whose first
                                          sync message has arrived */
    int64_t      deadline;
    bench_tally *tally;                /* one per SUB */
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

/*
 * Take one message from SUB `s`; returns 1 if it was an end marker.
 * Sync messages (a publisher's sequence 0) are not counted; the first
 * from each publisher bumps c->synced.
 */
static int zaccount(struct zrecv *rv, int s, zmq_msg_t *msg, uint64_t *seen_sync)
{
    const void *d = zmq_msg_data(msg);
    if (zmq_msg_size(msg) < BENCH_HDR) {
        snprintf(rv->err, sizeof(rv->err), "short zmq message (%zu bytes)", zmq_msg_size(msg));
        return 1;
    }
    uint64_t seq = bench_get_seq(d);
    if (seq == BENCH_SEQ_END)
        return 1;
    if ((seq & (((uint64_t)1 << BENCH_PUB_SHIFT) - 1)) == 0) {
        uint64_t bit = (uint64_t)1 << (seq >> BENCH_PUB_SHIFT);
        if ((seen_sync[s - rv->first] & bit) == 0) {
            seen_sync[s - rv->first] |= bit;
            atomic_fetch_add_explicit(&rv->c->synced, 1, memory_order_release);
        }
        return 0;
    }
    bench_tally_add(&rv->c->tally[s], seq, false);
    return 0;
}

static void *zreceiver(void *arg)
{
    struct zrecv *rv = arg;
    struct zctx *c = rv->c;
    int ends[BENCH_MAX_SUBS] = {0}, done = 0;
    uint64_t seen_sync[BENCH_MAX_SUBS] = {0};
    zmq_pollitem_t items[BENCH_MAX_SUBS];
    zmq_msg_t msg;

    zmq_msg_init(&msg);
    for (int k = 0; k < rv->count; k++)
        items[k] = (zmq_pollitem_t){.socket = c->sub[rv->first + k], .events = ZMQ_POLLIN};
    while (done < rv->count && rv->err[0] == 0) {
        if (rv->count == 1) {
            if (zmq_msg_recv(&msg, c->sub[rv->first], 0) < 0) {
                if (errno == EINTR)
                    continue;
                snprintf(rv->err, sizeof(rv->err), "zmq_msg_recv: %s", zmq_strerror(errno));
                break;
            }
            if (zaccount(rv, rv->first, &msg, seen_sync) && ++ends[0] == c->npub)
                done++;
            continue;
        }
        int got = 0;
        for (int k = 0; k < rv->count; k++) {
            for (int m = 0; m < 256 && ends[k] < c->npub; m++) {
                if (zmq_msg_recv(&msg, c->sub[rv->first + k], ZMQ_DONTWAIT) < 0)
                    break;
                got++;
                if (zaccount(rv, rv->first + k, &msg, seen_sync) && ++ends[k] == c->npub)
                    done++;
            }
        }
        if (got == 0)
            zmq_poll(items, rv->count, 100);
    }
    rv->t_end = bench_now_ns();
    zmq_msg_close(&msg);
    return NULL;
}

static int zsetopt(void *sock, int opt, int value)
{
    return zmq_setsockopt(sock, opt, &value, sizeof(value));
}

/* How a run is set up. */
enum zmode {
    Z_XPUB_NODROP, /* XPUB, NODROP, HWM 4096, one receiver thread */
    Z_PUB_HWM0,    /* PUB, HWM 0, one receiver thread per SUB */
    Z_PUB_HWM0_1T  /* PUB, HWM 0, one receiver thread for all */
};

/* PUB/SUB: send sync messages until every SUB has one from every PUB. */
static int zsync(struct zctx *c)
{
    unsigned char buf[BENCH_HDR];
    int64_t give_up = bench_now_ns() + SYNC_TIMEOUT_NS;
    int want = c->npub * c->nsub;

    while (atomic_load_explicit(&c->synced, memory_order_acquire) < want) {
        if (bench_now_ns() > give_up) {
            errno = ETIMEDOUT;
            return -1;
        }
        for (int i = 0; i < c->npub; i++) {
            bench_put_hdr(buf, bench_seq(i, 0), 0);
            if (zsend(c->pub[i], buf, sizeof(buf)) != 0)
                return -1;
        }
        bench_sleep_ns(100 * 1000);
    }
    return 0;
}

static int zrun(const bench_params *p, bench_result *r, enum zmode mode)
{
    struct zctx *c = aligned_alloc(128, (sizeof(*c) + 127) / 128 * 128);
    struct zpub args[BENCH_MAX_PUBS];
    struct zrecv rv[BENCH_MAX_SUBS];
    pthread_t th[BENCH_MAX_PUBS], rth[BENCH_MAX_SUBS];
    uint64_t sent[BENCH_MAX_PUBS];
    int nrecv = 0;
    char ep[64];
    int ret = BENCH_OK;
    bool xpub = mode == Z_XPUB_NODROP;
    int hwm = xpub ? HWM : 0;

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
        c->pub[i] = zmq_socket(c->ctx, xpub ? ZMQ_XPUB : ZMQ_PUB);
        if (c->pub[i] == NULL || zsetopt(c->pub[i], ZMQ_SNDHWM, hwm) != 0 ||
            zsetopt(c->pub[i], ZMQ_RCVHWM, hwm) != 0 ||
            (xpub && zsetopt(c->pub[i], ZMQ_XPUB_NODROP, 1) != 0) ||
            (xpub && zsetopt(c->pub[i], ZMQ_XPUB_VERBOSE, 1) != 0) ||
            zsetopt(c->pub[i], ZMQ_LINGER, 0) != 0 || zmq_bind(c->pub[i], ep) != 0)
            ret = bench_fail(r, "zmq PUB setup: %s", zmq_strerror(errno));
    }
    for (int s = 0; s < c->nsub && ret == BENCH_OK; s++) {
        c->sub[s] = zmq_socket(c->ctx, ZMQ_SUB);
        if (c->sub[s] == NULL || zsetopt(c->sub[s], ZMQ_RCVHWM, hwm) != 0 ||
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
    /* Slow joiners (XPUB): each XPUB reads one subscription per SUB. */
    for (int i = 0; xpub && i < c->npub && ret == BENCH_OK; i++) {
        char sub[8];
        for (int s = 0; s < c->nsub && ret == BENCH_OK; s++)
            if (zmq_recv(c->pub[i], sub, sizeof(sub), 0) < 1 || sub[0] != 1)
                ret = bench_fail(r, "zmq handshake: %s", zmq_strerror(errno));
    }
    if (ret != BENCH_OK)
        goto out;

    /* Receivers start first: the PUB/SUB sync needs them. Each socket
     * passes to its thread through pthread_create, a full barrier, as
     * ZeroMQ requires when a socket changes threads. */
    if (mode == Z_PUB_HWM0) {
        for (int s = 0; s < c->nsub; s++)
            rv[nrecv++] = (struct zrecv){.c = c, .first = s, .count = 1};
    } else {
        rv[nrecv++] = (struct zrecv){.c = c, .first = 0, .count = c->nsub};
    }
    for (int k = 0; k < nrecv; k++)
        if (pthread_create(&rth[k], NULL, zreceiver, &rv[k]) != 0) {
            fprintf(stderr, "evs-bench: pthread_create failed\n");
            exit(2);
        }
    if (!xpub && zsync(c) != 0) {
        /* The receivers wait for end markers that will not come: fail
         * loudly rather than hang. */
        fprintf(stderr, "evs-bench: zmq PUB/SUB sync: %s\n", zmq_strerror(errno));
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
    int64_t t_end = t0;
    for (int k = 0; k < nrecv; k++) {
        pthread_join(rth[k], NULL);
        if (rv[k].t_end > t_end)
            t_end = rv[k].t_end;
        if (ret == BENCH_OK && rv[k].err[0] != 0)
            ret = bench_fail(r, "zmq: %s", rv[k].err);
    }
    if (ret == BENCH_OK)
        ret = bench_verify(r, "zmq", c->tally, c->nsub, sent, c->npub, false);
    r->rate = (double)r->received / ((double)(t_end - t0) / 1e9);
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

int cmp_zmq_rate(const bench_params *p, bench_result *r)
{
    return zrun(p, r, Z_XPUB_NODROP);
}

int cmp_zmq_pub_rate(const bench_params *p, bench_result *r)
{
    return zrun(p, r, Z_PUB_HWM0);
}

int cmp_zmq_pub1_rate(const bench_params *p, bench_result *r)
{
    return zrun(p, r, Z_PUB_HWM0_1T);
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
