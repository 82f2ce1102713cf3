/*
 * Comparison: nng pub0/sub0 over inproc://.
 *
 * nng's pub/sub has no flow control: a publisher never waits, and a
 * subscriber whose queue is full loses messages. So this side does not
 * fail on loss; it checks that what arrived is in order, no more than was
 * sent and consistent with the checksum, and reports the drops. Its rate
 * counts what subscribers received. Queues are 4096 deep (send-buffer on
 * the publisher, recv-buffer on each subscriber), as evstream's ring.
 *
 * Each publisher thread owns a pub0 socket listening on its own inproc
 * URL; every sub0 socket dials all of them. Before timing, the publishers
 * send sync messages until every subscriber has one from each (the
 * dialled pipe attaches asynchronously). After its deadline each
 * publisher sends end markers, repeating until the receiver has seen
 * them all, since a marker may itself be dropped. One receiver thread
 * serves every subscriber, blocking in nng_recvmsg for one, or polling
 * the sockets' receive descriptors for several.
 */
#include "bench.h"

#include <stdio.h>

#ifndef EVS_BENCH_HAVE_NNG

int cmp_nng_rate(const bench_params *p, bench_result *r)
{
    (void)p;
    snprintf(r->note, sizeof(r->note), "not built: libnng-dev was missing");
    return BENCH_NOT_BUILT;
}

const char *cmp_nng_version(void) { return NULL; }

#else

#include <nng/nng.h>
#include <nng/protocol/pubsub0/pub.h>
#include <nng/protocol/pubsub0/sub.h>

#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#define QDEPTH 4096
#define CHECK_EVERY 64
#define END_GIVE_UP_NS (2 * 1000000000LL)
/* The low bits of an end marker: all ones (the publisher in the high
 * bits), since each publisher repeats its marker. */
#define END_LOW (((uint64_t)1 << BENCH_PUB_SHIFT) - 1)


struct nctx {
    nng_socket   pub[BENCH_MAX_PUBS];
    nng_socket   sub[BENCH_MAX_SUBS];
    int          npub, nsub;
    size_t       len;
    atomic_int   go;
    atomic_int   done;   /* receiver has every end marker (or gave up) */
    int64_t      deadline;
    bench_tally *tally;  /* one per subscriber */
    int64_t      t_end;
    char         err[120];
};

struct npub {
    struct nctx *c;
    int          index;
    uint64_t     sent;
    int          err;
};

static int nsend(nng_socket s, const unsigned char *buf, size_t len, uint64_t seq)
{
    nng_msg *m;
    int rv = nng_msg_alloc(&m, len);
    if (rv != 0)
        return rv;
    memcpy(nng_msg_body(m), buf, len);
    bench_put_hdr(nng_msg_body(m), seq, 0);
    if ((rv = nng_sendmsg(s, m, 0)) != 0)
        nng_msg_free(m);
    return rv;
}

static void *npublisher(void *arg)
{
    struct npub *a = arg;
    struct nctx *c = a->c;
    unsigned char *buf = malloc(c->len);
    uint64_t i = 0;

    if (buf == NULL) {
        a->err = NNG_ENOMEM;
        return NULL;
    }
    bench_fill(buf, c->len);
    while (atomic_load_explicit(&c->go, memory_order_acquire) == 0)
        ;
    for (;;) {
        if (i % CHECK_EVERY == 0 && bench_now_ns() >= c->deadline)
            break;
        if ((a->err = nsend(c->pub[a->index], buf, c->len, bench_seq(a->index, i + 1))) != 0)
            break;
        i++;
    }
    a->sent = i;
    int64_t give_up = bench_now_ns() + END_GIVE_UP_NS;
    while (a->err == 0 && !atomic_load_explicit(&c->done, memory_order_acquire) &&
           bench_now_ns() < give_up) {
        a->err = nsend(c->pub[a->index], buf, c->len, bench_seq(a->index, END_LOW));
        bench_sleep_ns(200 * 1000);
    }
    free(buf);
    return NULL;
}

static void *nreceiver(void *arg)
{
    struct nctx *c = arg;
    int ends[BENCH_MAX_SUBS] = {0}, left = c->nsub;
    bool seen[BENCH_MAX_SUBS][BENCH_MAX_PUBS];
    struct pollfd pfd[BENCH_MAX_SUBS];

    memset(seen, 0, sizeof(seen));
    for (int s = 0; s < c->nsub; s++) {
        int fd = -1;
        nng_socket_get_int(c->sub[s], NNG_OPT_RECVFD, &fd);
        pfd[s] = (struct pollfd){.fd = fd, .events = POLLIN};
    }
    while (atomic_load_explicit(&c->go, memory_order_acquire) == 0)
        ;
    int64_t give_up = c->deadline + END_GIVE_UP_NS;
    while (left > 0 && c->err[0] == 0) {
        int got = 0;
        for (int s = 0; s < c->nsub; s++) {
            for (int k = 0; k < 256 && ends[s] < c->npub; k++) {
                nng_msg *m;
                int rv = nng_recvmsg(c->sub[s], &m, c->nsub == 1 ? 0 : NNG_FLAG_NONBLOCK);
                if (rv == NNG_EAGAIN || rv == NNG_ETIMEDOUT)
                    break;
                if (rv != 0) {
                    snprintf(c->err, sizeof(c->err), "nng_recvmsg: %s", nng_strerror(rv));
                    break;
                }
                got++;
                if (nng_msg_len(m) < BENCH_HDR) {
                    snprintf(c->err, sizeof(c->err), "short nng message");
                    nng_msg_free(m);
                    break;
                }
                uint64_t seq = bench_get_seq(nng_msg_body(m));
                nng_msg_free(m);
                uint64_t pub = seq >> BENCH_PUB_SHIFT;
                if (seq == BENCH_SEQ_SYNC)
                    continue;
                if ((seq & END_LOW) != END_LOW || pub >= BENCH_MAX_PUBS) {
                    bench_tally_add(&c->tally[s], seq, true);
                } else if (!seen[s][pub]) {
                    seen[s][pub] = true;
                    if (++ends[s] == c->npub)
                        left--;
                }
            }
        }
        if (bench_now_ns() > give_up) {
            snprintf(c->err, sizeof(c->err), "end markers never arrived");
            break;
        }
        if (got == 0 && c->nsub > 1)
            poll(pfd, (nfds_t)c->nsub, 10);
    }
    c->t_end = bench_now_ns();
    atomic_store_explicit(&c->done, 1, memory_order_release);
    return NULL;
}

int cmp_nng_rate(const bench_params *p, bench_result *r)
{
    struct nctx *c = aligned_alloc(128, (sizeof(*c) + 127) / 128 * 128);
    struct npub args[BENCH_MAX_PUBS];
    pthread_t th[BENCH_MAX_PUBS], rth;
    uint64_t sent[BENCH_MAX_PUBS];
    char url[64];
    int rv = 0, ret = BENCH_OK, opened_pub = 0, opened_sub = 0;

    if (c == NULL)
        return bench_fail(r, "out of memory");
    memset(c, 0, sizeof(*c));
    c->npub = p->pubs > 0 ? p->pubs : 1;
    c->nsub = p->subs > 0 ? p->subs : 1;
    c->len = bench_payload(p);
    c->tally = aligned_alloc(128, sizeof(bench_tally) * (size_t)c->nsub);
    unsigned char *buf = malloc(c->len);
    if (c->tally == NULL || buf == NULL) {
        free(buf);
        free(c->tally);
        free(c);
        return bench_fail(r, "out of memory");
    }
    memset(c->tally, 0, sizeof(bench_tally) * (size_t)c->nsub);
    bench_fill(buf, c->len);

    for (int i = 0; i < c->npub && rv == 0; i++) {
        snprintf(url, sizeof(url), "inproc://evs-bench-nng-%d", i);
        if ((rv = nng_pub0_open(&c->pub[i])) != 0)
            break;
        opened_pub++;
        if ((rv = nng_socket_set_int(c->pub[i], NNG_OPT_SENDBUF, QDEPTH)) == 0)
            rv = nng_listen(c->pub[i], url, NULL, 0);
    }
    for (int s = 0; s < c->nsub && rv == 0; s++) {
        if ((rv = nng_sub0_open(&c->sub[s])) != 0)
            break;
        opened_sub++;
        if ((rv = nng_socket_set_int(c->sub[s], NNG_OPT_RECVBUF, QDEPTH)) == 0 &&
            (rv = nng_socket_set_ms(c->sub[s], NNG_OPT_RECVTIMEO, 100)) == 0)
            rv = nng_socket_set(c->sub[s], NNG_OPT_SUB_SUBSCRIBE, "", 0);
        for (int i = 0; i < c->npub && rv == 0; i++) {
            snprintf(url, sizeof(url), "inproc://evs-bench-nng-%d", i);
            rv = nng_dial(c->sub[s], url, NULL, 0);
        }
    }
    if (rv != 0) {
        ret = bench_fail(r, "nng setup: %s", nng_strerror(rv));
        goto out;
    }
    /* Sync: until every subscriber has heard from every publisher. */
    int64_t give_up = bench_now_ns() + 5 * 1000000000LL;
    for (int i = 0; i < c->npub && ret == BENCH_OK; i++) {
        bool have[BENCH_MAX_SUBS] = {false};
        int missing = c->nsub;
        while (missing > 0) {
            if (bench_now_ns() > give_up) {
                ret = bench_fail(r, "nng: subscribers never attached");
                break;
            }
            nsend(c->pub[i], buf, c->len, BENCH_SEQ_SYNC);
            bench_sleep_ns(1000 * 1000);
            for (int s = 0; s < c->nsub; s++) {
                nng_msg *m;
                while (nng_recvmsg(c->sub[s], &m, NNG_FLAG_NONBLOCK) == 0) {
                    nng_msg_free(m);
                    if (!have[s]) {
                        have[s] = true;
                        missing--;
                    }
                }
            }
        }
    }
    if (ret != BENCH_OK)
        goto out;

    if (pthread_create(&rth, NULL, nreceiver, c) != 0) {
        fprintf(stderr, "evs-bench: pthread_create failed\n");
        exit(2);
    }
    for (int i = 0; i < c->npub; i++) {
        args[i] = (struct npub){.c = c, .index = i};
        if (pthread_create(&th[i], NULL, npublisher, &args[i]) != 0) {
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
            ret = bench_fail(r, "nng_sendmsg: %s", nng_strerror(args[i].err));
    }
    pthread_join(rth, NULL);
    if (ret == BENCH_OK && c->err[0] != 0)
        ret = bench_fail(r, "nng: %s", c->err);
    if (ret == BENCH_OK)
        ret = bench_verify(r, "nng", c->tally, c->nsub, sent, c->npub, true);
    r->rate = (double)r->received / ((double)(c->t_end - t0) / 1e9);
    if (ret == BENCH_OK) {
        double total = (double)r->received + (double)r->drops;
        snprintf(r->note, sizeof(r->note), "drops %.1f%%",
                 total > 0 ? 100.0 * (double)r->drops / total : 0.0);
    }
out:
    for (int s = 0; s < opened_sub; s++)
        nng_close(c->sub[s]);
    for (int i = 0; i < opened_pub; i++)
        nng_close(c->pub[i]);
    free(buf);
    free(c->tally);
    free(c);
    return ret;
}

const char *cmp_nng_version(void) { return nng_version(); }

#endif /* EVS_BENCH_HAVE_NNG */
