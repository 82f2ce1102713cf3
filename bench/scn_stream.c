/*
 * The evstream side of each scenario, through the public API only.
 *
 * Rate scenarios run one or more variants (scn_stream.h): per event the
 * publisher calls the variant's publish function with the payload
 * (sequence number and stamp in it), which does what a user does, e.g.
 * evs_event_create, evs_stream_publish, evs_event_unref. Handlers run on
 * the stream's dispatcher thread and add the sequence number to their
 * subscriber's tally. The stream uses EVS_OVERFLOW_BLOCK (nothing may be
 * dropped), the wait strategy named by the scenario and otherwise the
 * variant's options (zero: capacity 4096, history 1000). A repetition is
 * timed from the first publish to the return of evs_stream_flush, which
 * returns once every accepted event has been delivered. The latency and
 * idle scenarios use the default-options path.
 */
#include "bench.h"
#include "scn_stream.h"

#include <evstream.h>

#include <string.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#define CHECK_EVERY 64 /* events between clock reads in a publisher */

/* ---------------------------------------------------------------- */
/* Variants                                                          */

int scn_publish_copy(evs_stream *s, const void *buf, size_t len)
{
    evs_event *ev;
    int rc = evs_event_create(&ev, EVS_TYPE_MESSAGE, NULL, buf, len);
    if (rc != 0)
        return rc;
    rc = evs_stream_publish(s, ev);
    evs_event_unref(ev);
    return rc;
}

const scn_variant scn_v_publish = {scn_publish_copy, {0}};

int scn_publish_move(evs_stream *s, const void *buf, size_t len)
{
    evs_event *ev;
    int rc = evs_event_create(&ev, EVS_TYPE_MESSAGE, NULL, buf, len);
    if (rc != 0)
        return rc;
    return evs_stream_publish_move(s, ev, NULL); /* takes our reference */
}

const scn_variant scn_v_move = {scn_publish_move, {.single_publisher = true}};

int scn_publish_claim(evs_stream *s, const void *buf, size_t len)
{
    evs_event *ev;
    void *data;
    int rc = evs_stream_claim(s, EVS_TYPE_MESSAGE, NULL, len, &ev, &data);
    if (rc != 0)
        return rc;
    memcpy(data, buf, len); /* written in place: the ring owns the event */
    return evs_stream_commit(s, ev);
}

/* Slots big enough for the 1 KiB row (4096 slots x ~1.1 KiB). History
 * off: on a slot stream it would copy every event. */
const scn_variant scn_v_claim = {
    scn_publish_claim,
    {.single_publisher = true, .slot_bytes = 1100, .history = EVS_HISTORY_NONE,
     .coarse_timestamps = true}};
const scn_variant scn_v_move_nohist = {
    scn_publish_move, {.single_publisher = true, .history = EVS_HISTORY_NONE}};

/* ---------------------------------------------------------------- */
/* Rate: publishers flat out, every event to every subscriber.       */

static int on_event(const evs_event *ev, void *user)
{
    size_t len;
    const void *d = evs_event_data(ev, &len);
    if (len < BENCH_HDR)
        return -1;
    bench_tally_add(user, bench_get_seq(d), false);
    return 0;
}

/* One publisher thread's work. */
struct pub_arg {
    evs_stream  *s;
    scn_publish_fn publish;
    int          index;
    size_t       len;
    int64_t      deadline;
    atomic_int  *go;
    uint64_t     sent;
    int          rc;
};

static void *publisher(void *arg)
{
    struct pub_arg *a = arg;
    unsigned char *buf = malloc(a->len);
    uint64_t i = 0;

    a->rc = buf ? 0 : EVS_ENOMEM;
    if (buf)
        bench_fill(buf, a->len);
    while (atomic_load_explicit(a->go, memory_order_acquire) == 0)
        ;
    while (a->rc == 0) {
        if (i % CHECK_EVERY == 0 && bench_now_ns() >= a->deadline)
            break;
        bench_put_hdr(buf, bench_seq(a->index, i + 1), 0);
        a->rc = a->publish(a->s, buf, a->len);
        if (a->rc == 0)
            i++;
    }
    a->sent = i;
    free(buf);
    return NULL;
}

int scn_stream_rate(const bench_params *p, bench_result *r)
{
    int npub = p->pubs > 0 ? p->pubs : 1, nsub = p->subs > 0 ? p->subs : 1;
    const scn_variant *v = p->arg != NULL ? p->arg : &scn_v_publish;
    evs_stream_opts o = v->opts;
    bench_tally *tally = aligned_alloc(128, sizeof(*tally) * (size_t)nsub);
    struct pub_arg args[BENCH_MAX_PUBS];
    pthread_t th[BENCH_MAX_PUBS];
    uint64_t sent[BENCH_MAX_PUBS];
    evs_stream *s = NULL;
    atomic_int go = 0;
    int rc, ret = BENCH_OK;

    o.overflow = EVS_OVERFLOW_BLOCK;
    o.wait = (evs_wait)p->wait;
    if (o.single_publisher && npub > 1) {
        free(tally);
        return bench_fail(r, "a single-publisher variant in a %d-publisher scenario", npub);
    }
    if (tally == NULL)
        return bench_fail(r, "out of memory");
    memset(tally, 0, sizeof(*tally) * (size_t)nsub);
    if ((rc = evs_stream_create(&s, &o)) != 0) {
        free(tally);
        return bench_fail(r, "evs_stream_create: %s", evs_strerror(rc));
    }
    for (int i = 0; i < nsub; i++) {
        evs_sub *sub;
        if ((rc = evs_subscribe(&sub, s, NULL, on_event, NULL, &tally[i], NULL)) != 0) {
            evs_stream_destroy(s);
            free(tally);
            return bench_fail(r, "evs_subscribe: %s", evs_strerror(rc));
        }
    }

    for (int i = 0; i < npub; i++) {
        args[i] = (struct pub_arg){.s = s, .publish = v->publish, .index = i,
                                   .len = bench_payload(p), .go = &go};
        if (pthread_create(&th[i], NULL, publisher, &args[i]) != 0) {
            fprintf(stderr, "evs-bench: pthread_create failed\n");
            exit(2);
        }
    }
    /* The publishers read their deadline only after `go` (acquire). */
    int64_t t0 = bench_now_ns();
    for (int i = 0; i < npub; i++)
        args[i].deadline = t0 + (int64_t)(p->seconds * 1e9);
    atomic_store_explicit(&go, 1, memory_order_release);
    for (int i = 0; i < npub; i++) {
        pthread_join(th[i], NULL);
        sent[i] = args[i].sent;
        if (args[i].rc != 0 && ret == BENCH_OK)
            ret = bench_fail(r, "publish: %s", evs_strerror(args[i].rc));
    }
    if ((rc = evs_stream_flush(s, EVS_FOREVER, NULL)) != 0 && ret == BENCH_OK)
        ret = bench_fail(r, "evs_stream_flush: %s", evs_strerror(rc));
    int64_t t1 = bench_now_ns();

    evs_stream_stats st;
    evs_stream_stats_get(s, &st);
    evs_stream_destroy(s);
    if (ret == BENCH_OK)
        ret = bench_verify(r, "evstream", tally, nsub, sent, npub, false);
    if (ret == BENCH_OK && st.handler_errors != 0)
        ret = bench_fail(r, "evstream: %llu handler errors",
                         (unsigned long long)st.handler_errors);
    r->rate = (double)r->received / ((double)(t1 - t0) / 1e9);
    free(tally);
    return ret;
}

/* ---------------------------------------------------------------- */
/* Latency: publish one event, wait until its handler has run, repeat. */

struct lat_state {
    _Alignas(128) atomic_uint_fast64_t ack; /* last sequence handled */
    _Alignas(128) bench_result *r;
    uint64_t bad;
};

static int on_latency(const evs_event *ev, void *user)
{
    int64_t now = bench_now_ns();
    struct lat_state *ls = user;
    size_t len;
    const void *d = evs_event_data(ev, &len);
    uint64_t seq = bench_get_seq(d);
    if (ls->r->nsamples < ls->r->cap)
        ls->r->samples[ls->r->nsamples++] = now - bench_get_stamp(d);
    else
        ls->bad++;
    atomic_store_explicit(&ls->ack, seq, memory_order_release);
    return 0;
}

int scn_stream_latency(const bench_params *p, bench_result *r)
{
    evs_stream_opts o = {.overflow = EVS_OVERFLOW_BLOCK, .wait = (evs_wait)p->wait};
    size_t len = bench_payload(p);
    struct lat_state *ls = aligned_alloc(128, sizeof(*ls));
    unsigned char *buf = malloc(len);
    evs_stream *s = NULL;
    evs_sub *sub;
    int rc, ret = BENCH_OK;

    if (ls == NULL || buf == NULL) {
        free(ls);
        free(buf);
        return bench_fail(r, "out of memory");
    }
    memset(ls, 0, sizeof(*ls));
    ls->r = r;
    bench_fill(buf, len);
    if ((rc = evs_stream_create(&s, &o)) != 0 ||
        (rc = evs_subscribe(&sub, s, NULL, on_latency, NULL, ls, NULL)) != 0) {
        evs_stream_destroy(s);
        free(ls);
        free(buf);
        return bench_fail(r, "evs_stream_create/subscribe: %s", evs_strerror(rc));
    }

    int64_t deadline = bench_now_ns() + (int64_t)(p->seconds * 1e9);
    uint64_t i = 0;
    while (ret == BENCH_OK && r->nsamples < r->cap) {
        if (p->gap_ns > 0)
            bench_sleep_ns(p->gap_ns);
        int64_t t = bench_now_ns();
        if (t >= deadline)
            break;
        evs_event *ev;
        bench_put_hdr(buf, bench_seq(0, ++i), t);
        if ((rc = evs_event_create(&ev, EVS_TYPE_MESSAGE, NULL, buf, len)) != 0) {
            ret = bench_fail(r, "evs_event_create: %s", evs_strerror(rc));
            break;
        }
        rc = evs_stream_publish(s, ev);
        evs_event_unref(ev);
        if (rc != 0) {
            ret = bench_fail(r, "evs_stream_publish: %s", evs_strerror(rc));
            break;
        }
        while (atomic_load_explicit(&ls->ack, memory_order_acquire) != i)
            ;
    }
    evs_stream_destroy(s);
    r->sent = i;
    r->received = r->nsamples;
    if (ret == BENCH_OK && (r->nsamples != i || ls->bad != 0))
        ret = bench_fail(r, "evstream latency: %llu published, %zu samples",
                         (unsigned long long)i, r->nsamples);
    free(ls);
    free(buf);
    return ret;
}

/* ---------------------------------------------------------------- */
/* Idle: a stream with one subscriber and nothing to deliver. */

static int on_idle(const evs_event *ev, void *user)
{
    (void)ev;
    ((bench_tally *)user)->count++;
    return 0;
}

static int64_t cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int scn_stream_idle(const bench_params *p, bench_result *r)
{
    evs_stream_opts o = {.wait = (evs_wait)p->wait};
    bench_tally tally = {0};
    evs_stream *s = NULL;
    evs_sub *sub;
    evs_event *ev = NULL;
    int rc;

    if ((rc = evs_stream_create(&s, &o)) != 0 ||
        (rc = evs_subscribe(&sub, s, NULL, on_idle, NULL, &tally, NULL)) != 0 ||
        (rc = evs_event_create(&ev, EVS_TYPE_MESSAGE, NULL, "x", 1)) != 0 ||
        (rc = evs_stream_publish(s, ev)) != 0 ||
        (rc = evs_stream_flush(s, EVS_FOREVER, NULL)) != 0) {
        evs_event_unref(ev);
        evs_stream_destroy(s);
        return bench_fail(r, "evstream idle setup: %s", evs_strerror(rc));
    }
    evs_event_unref(ev);
    /* Let the dispatcher finish spinning and park before measuring. */
    bench_sleep_ns(50 * 1000 * 1000);

    int64_t c0 = cpu_ns(), t0 = bench_now_ns();
    bench_sleep_ns((int64_t)(p->seconds * 1e9));
    int64_t c1 = cpu_ns(), t1 = bench_now_ns();

    evs_stream_destroy(s);
    r->cpu_pct = 100.0 * (double)(c1 - c0) / (double)(t1 - t0);
    r->sent = r->received = tally.count;
    if (tally.count != 1)
        return bench_fail(r, "evstream idle: 1 published, %llu delivered",
                          (unsigned long long)tally.count);
    return BENCH_OK;
}
