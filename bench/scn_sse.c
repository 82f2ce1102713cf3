/*
 * SSE scenarios: encoding throughput against memcpy of the same bytes,
 * and the memory an idle SSE client costs at 10,000 clients.
 */
#include "bench.h"

#include <evstream.h>

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>

#define NEVENTS 64

/* The kinds of event whose frames are measured. */
enum { SSE_JSON = 0, SSE_MSGPACK = 1, SSE_JSON_4K = 2 };
const int scn_sse_json = SSE_JSON;
const int scn_sse_msgpack = SSE_MSGPACK;
const int scn_sse_json_4k = SSE_JSON_4K;

/* ~4 KiB of JSON: a dashboard snapshot of 40 rows, one line. */
static size_t snapshot_json(char *out, size_t cap, int i)
{
    size_t n = (size_t)snprintf(out, cap, "{\"seq\":%d,\"rows\":[", i);
    for (int r = 0; r < 40 && n < cap; r++)
        n += (size_t)snprintf(out + n, cap - n,
                              "%s{\"sym\":\"SYM%03d\",\"bid\":%d.25,\"ask\":%d.50,"
                              "\"venue\":\"XNAS\",\"state\":\"open\"}",
                              r ? "," : "", r, 100 + r + i, 101 + r + i);
    if (n + 3 <= cap)
        n += (size_t)snprintf(out + n, cap - n, "]}");
    return n;
}

/* NEVENTS published-looking events of one kind (ids set by decoding a
 * built msgpack would be overkill: id 0 just omits the id line, so give
 * them ids by publishing through an inline stream). */
static int make_events(int kind, evs_event **evs)
{
    evs_stream_opts o = {.delivery = EVS_DELIVERY_INLINE, .history = EVS_HISTORY_NONE};
    evs_stream *s;
    if (evs_stream_create(&s, &o) != 0)
        return -1;
    for (int i = 0; i < NEVENTS; i++) {
        char json[4608];
        if (kind == SSE_JSON_4K)
            snapshot_json(json, sizeof(json), i);
        else
            snprintf(json, sizeof(json),
                     "{\"sym\":\"SYM%03d\",\"price\":%d.25,\"size\":%d,\"venue\":\"XNAS\","
                     "\"note\":\"a short line of text to make the frame typical\"}",
                     i, 100 + i, 10 * i);
        evs_event *ev;
        int rc;
        if (kind == SSE_MSGPACK) {
            rc = evs_event_make(&ev, "tick", "ticker", json, NULL);
        } else {
            rc = evs_event_create(&ev, EVS_TYPE_MESSAGE, "ticker", json, strlen(json));
            if (rc == 0)
                rc = evs_event_set_content(ev, EVS_CONTENT_JSON);
        }
        if (rc == 0)
            rc = evs_stream_publish(s, ev); /* numbers it */
        if (rc != 0) {
            evs_event_unref(ev);
            evs_stream_destroy(s);
            return -1;
        }
        evs[i] = ev;
    }
    evs_stream_destroy(s);
    return 0;
}

int scn_sse_encode_rate(const bench_params *p, bench_result *r)
{
    int kind = p->arg != NULL ? *(const int *)p->arg : SSE_JSON;
    evs_event *evs[NEVENTS];
    if (make_events(kind, evs) != 0)
        return bench_fail(r, "could not build events");
    evs_buf b = {0};
    uint64_t bytes = 0, frames = 0, check = 0;
    int64_t t0 = bench_now_ns(), end = t0 + (int64_t)(p->seconds * 1e9), now;
    do {
        for (int k = 0; k < 16; k++) {
            for (int i = 0; i < NEVENTS; i++) {
                evs_buf_reset(&b);
                if (evs_sse_encode_buf(evs[i], NULL, &b) != 0) {
                    evs_buf_free(&b);
                    return bench_fail(r, "encode failed");
                }
                bytes += b.len;
                check += (unsigned char)b.data[b.len / 2];
                frames++;
            }
        }
        now = bench_now_ns();
    } while (now < end);
    /* Every frame ends with a blank line: check the last one. */
    bool ok = b.len >= 2 && b.data[b.len - 1] == '\n' && b.data[b.len - 2] == '\n';
    evs_buf_free(&b);
    for (int i = 0; i < NEVENTS; i++)
        evs_event_unref(evs[i]);
    if (!ok || check == 0)
        return bench_fail(r, "frames malformed");
    r->rate = (double)bytes / ((double)(now - t0) / 1e9);
    r->sent = r->received = frames;
    return BENCH_OK;
}

/* memcpy of exactly the frames the encoder makes (JSON events of the
 * arg's kind). */
int scn_sse_memcpy_rate(const bench_params *p, bench_result *r)
{
    int kind = p->arg != NULL ? *(const int *)p->arg : SSE_JSON;
    evs_event *evs[NEVENTS];
    if (make_events(kind, evs) != 0)
        return bench_fail(r, "could not build events");
    evs_buf frames[NEVENTS];
    memset(frames, 0, sizeof(frames));
    size_t maxlen = 0;
    for (int i = 0; i < NEVENTS; i++) {
        if (evs_sse_encode_buf(evs[i], NULL, &frames[i]) != 0)
            return bench_fail(r, "encode failed");
        if (frames[i].len > maxlen)
            maxlen = frames[i].len;
        evs_event_unref(evs[i]);
    }
    char *dst = malloc(maxlen);
    uint64_t bytes = 0, copies = 0, check = 0;
    int64_t t0 = bench_now_ns(), end = t0 + (int64_t)(p->seconds * 1e9), now;
    do {
        for (int k = 0; k < 16; k++) {
            for (int i = 0; i < NEVENTS; i++) {
                memcpy(dst, frames[i].data, frames[i].len);
                __asm__ volatile("" : : "r"(dst) : "memory"); /* keep the copy */
                bytes += frames[i].len;
                check += (unsigned char)dst[frames[i].len / 2];
                copies++;
            }
        }
        now = bench_now_ns();
    } while (now < end);
    free(dst);
    for (int i = 0; i < NEVENTS; i++)
        evs_buf_free(&frames[i]);
    if (check == 0)
        return bench_fail(r, "nothing copied");
    r->rate = (double)bytes / ((double)(now - t0) / 1e9);
    r->sent = r->received = copies;
    return BENCH_OK;
}

#define CLIENTS 10000

static size_t heap_in_use(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

/* Bytes of heap per idle client: 10,000 clients, one pattern each, on
 * one TopicStream, default options (mailbox 64, heartbeats on). */
int scn_sse_idle_memory(const bench_params *p, bench_result *r)
{
    (void)p;
    evs_stream_opts o = {.topics = true};
    evs_stream *s;
    evs_sse *sse;
    if (evs_stream_create(&s, &o) != 0)
        return bench_fail(r, "stream");
    if (evs_sse_create(&sse, s, NULL) != 0) {
        evs_stream_destroy(s);
        return bench_fail(r, "sse");
    }
    static evs_sse_client *clients[CLIENTS];
    size_t before = heap_in_use();
    int n = 0;
    for (; n < CLIENTS; n++) {
        char pat[32];
        snprintf(pat, sizeof(pat), "clients.c%d", n);
        const char *pats[1] = {pat};
        evs_sse_client_opts co = {.patterns = pats, .npatterns = 1};
        if (evs_sse_connect(&clients[n], sse, &co) != 0)
            break;
    }
    size_t after = heap_in_use();
    for (int i = 0; i < n; i++)
        evs_sse_disconnect(clients[i]);
    evs_sse_destroy(sse);
    evs_stream_destroy(s);
    if (n != CLIENTS)
        return bench_fail(r, "connected only %d clients", n);
    r->rate = (double)(after - before) / CLIENTS;
    r->sent = r->received = CLIENTS;
    return BENCH_OK;
}
