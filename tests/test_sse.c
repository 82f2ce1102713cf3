/*
 * SSEStream: whole frames by read (several per call, a buffer too small
 * for one, timeouts), patterns and their union, resume (exact replay,
 * gap frames, ids from the future, a publisher running during connect),
 * slow clients under both policies, the eventfd, push callbacks,
 * heartbeats on a fake clock, stats, disconnect while a read blocks,
 * allocation failure, and the memory an idle client costs.
 */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <malloc.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "evs_internal.h"
#include "evstream.h"
#include "heartbeat.h"
#include "sse.h"
#include "evs_test.h"

/* ---- helpers -------------------------------------------------------- */

static evs_stream *mk_stream(bool topics, size_t history)
{
    evs_stream_opts o = {.topics = topics, .history = history};
    evs_stream *s;
    ASSERT_RC(evs_stream_create(&s, &o), 0);
    return s;
}

static evs_sse *mk_sse(evs_stream *s, evs_sse_slow slow, size_t mailbox)
{
    evs_sse_stream_opts o = {.slow = slow, .mailbox = mailbox,
                             .heartbeat_ms = EVS_SSE_NO_HEARTBEAT};
    evs_sse *sse;
    ASSERT_RC(evs_sse_create(&sse, s, &o), 0);
    return sse;
}

static evs_sse_client *mk_client(evs_sse *sse, const char *const *patterns, size_t n,
                                 const char *last_id)
{
    evs_sse_client_opts o = {.patterns = patterns, .npatterns = n, .last_event_id = last_id};
    evs_sse_client *c;
    ASSERT_RC(evs_sse_connect(&c, sse, &o), 0);
    cr_assert_not_null(c);
    return c;
}

/* Publish a text event; returns its id. */
static uint64_t pub(evs_stream *s, const char *topic, const char *text)
{
    evs_event *ev;
    ASSERT_RC(evs_event_create(&ev, EVS_TYPE_MESSAGE, topic, text, strlen(text)), 0);
    ASSERT_RC(evs_event_set_content(ev, EVS_CONTENT_TEXT), 0);
    uint64_t id;
    ASSERT_RC(evs_stream_publish_id(s, ev, &id), 0);
    evs_event_unref(ev);
    return id;
}

static void flush(evs_stream *s) { ASSERT_RC(evs_stream_flush(s, 10000, NULL), 0); }

/* Append the frame a text event renders as. */
static void frame(char *out, size_t cap, uint64_t id, const char *text)
{
    size_t n = strlen(out);
    snprintf(out + n, cap - n, "id: %" PRIu64 "\ndata: %s\n\n", id, text);
}

/* Read everything ready (timeout 0) into out; returns the bytes. */
static size_t drain(evs_sse_client *c, char *out, size_t cap)
{
    size_t n = 0;
    int rc;
    while ((rc = evs_sse_read(c, out + n, cap - 1 - n, 0)) > 0)
        n += (size_t)rc;
    cr_assert(rc == 0 || rc == EVS_ECLOSED, "read: %s", evs_errname(rc));
    out[n] = '\0';
    return n;
}

/* ---- messages through the parser ------------------------------------ */

typedef struct msgs {
    size_t n;
    uint64_t ids[4096];
    char event[4096][16];
    char data[4096][64];
} msgs;

static int collect(const evs_sse_message *m, void *user)
{
    msgs *g = user;
    cr_assert_lt(g->n, 4096);
    g->ids[g->n] = strtoull(m->id, NULL, 10);
    snprintf(g->event[g->n], sizeof g->event[0], "%.*s", (int)m->event_len, m->event);
    snprintf(g->data[g->n], sizeof g->data[0], "%.*s", (int)m->data_len, m->data);
    g->n++;
    return 0;
}

static void parse(const char *bytes, size_t len, msgs *g)
{
    evs_sse_parser *p;
    ASSERT_RC(evs_sse_parser_create(&p, NULL), 0);
    ASSERT_RC(evs_sse_parser_feed(p, bytes, len, NULL, collect, g), 0);
    evs_sse_parser_destroy(p);
}

/* ---- reading -------------------------------------------------------- */

Test(sse, live_frames_are_read_whole_several_per_read, .timeout = 30)
{
    evs_stream *s = mk_stream(true, 0);
    evs_sse *sse = mk_sse(s, EVS_SSE_SLOW_DISCONNECT, 0);
    evs_sse_client *c = mk_client(sse, NULL, 0, NULL);
    pub(s, "a.b", "one");
    pub(s, "a.c", "two\nlines");
    pub(s, "x", "three");
    flush(s);
    char buf[256], want[256] = "";
    int rc = evs_sse_read(c, buf, sizeof buf, 1000);
    frame(want, sizeof want, 1, "one");
    strcat(want, "id: 2\ndata: two\ndata: lines\n\n");
    frame(want, sizeof want, 3, "three");
    cr_assert_eq(rc, (int)strlen(want), "got %d", rc);
    cr_assert_arr_eq(buf, want, strlen(want));
    ASSERT_RC(evs_sse_read(c, buf, sizeof buf, 0), 0);
    ASSERT_RC(evs_sse_disconnect(c), 0);
    ASSERT_RC(evs_sse_destroy(sse), 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

Test(sse, a_buffer_too_small_for_a_frame_is_etoobig_and_consumes_nothing, .timeout = 30)
{
    evs_stream *s = mk_stream(false, 0);
    evs_sse *sse = mk_sse(s, EVS_SSE_SLOW_DISCONNECT, 0);
    evs_sse_client *c = mk_client(sse, NULL, 0, NULL);
    cr_assert_eq(evs_sse_next_size(c), 0);
    pub(s, "t", "hello world");
    pub(s, "t", "x");
    flush(s);
    char small[8], buf[128], want[128] = "";
    frame(want, sizeof want, 1, "hello world");
    ASSERT_RC(evs_sse_read(c, small, sizeof small, 0), EVS_ETOOBIG);
    cr_assert_eq(evs_sse_next_size(c), strlen(want));
    ASSERT_RC(evs_sse_read(c, small, sizeof small, 0), EVS_ETOOBIG);
    /* Room for exactly the first frame: only it, whole. */
    int rc = evs_sse_read(c, buf, strlen(want), 0);
    cr_assert_eq(rc, (int)strlen(want));
    cr_assert_arr_eq(buf, want, strlen(want));
    cr_assert_eq(evs_sse_next_size(c), 0);
    want[0] = '\0';
    frame(want, sizeof want, 2, "x");
    rc = evs_sse_read(c, buf, sizeof buf, 0);
    cr_assert_eq(rc, (int)strlen(want));
    cr_assert_arr_eq(buf, want, strlen(want));
    ASSERT_RC(evs_sse_destroy(sse), 0); /* frees the client too */
    ASSERT_RC(evs_stream_destroy(s), 0);
}

Test(sse, read_with_nothing_to_read_times_out_with_zero, .timeout = 30)
{
    evs_stream *s = mk_stream(false, 0);
    evs_sse *sse = mk_sse(s, EVS_SSE_SLOW_DISCONNECT, 0);
    evs_sse_client *c = mk_client(sse, NULL, 0, NULL);
    char buf[64];
    ASSERT_RC(evs_sse_read(c, buf, sizeof buf, 0), 0);
    int64_t t0 = evs__now_mono_ns();
    ASSERT_RC(evs_sse_read(c, buf, sizeof buf, 50), 0);
    cr_assert_geq(evs__now_mono_ns() - t0, 50 * 1000000LL, "returned before the timeout");
    ASSERT_RC(evs_sse_disconnect(c), 0);
    ASSERT_RC(evs_sse_destroy(sse), 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

typedef struct late {
    evs_stream *s;
    evs_sse_client *c;
} late;

static void *publish_later(void *arg)
{
    late *l = arg;
    for (int i = 0; i < 10000 && evs__sse_readers(l->c) == 0; i++)
        sched_yield();
    pub(l->s, "t", "late");
    return NULL;
}

Test(sse, a_waiting_read_wakes_for_a_frame, .timeout = 30)
{
    evs_stream *s = mk_stream(false, 0);
    evs_sse *sse = mk_sse(s, EVS_SSE_SLOW_DISCONNECT, 0);
    late l = {s, mk_client(sse, NULL, 0, NULL)};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, publish_later, &l), 0);
    char buf[64];
    int rc = evs_sse_read(l.c, buf, sizeof buf, 10000);
    cr_assert_eq(rc, (int)strlen("id: 1\ndata: late\n\n"), "got %d", rc);
    pthread_join(t, NULL);
    ASSERT_RC(evs_sse_destroy(sse), 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

Test(sse, the_retry_frame_comes_first, .timeout = 30)
{
    evs_stream *s = mk_stream(false, 0);
    evs_sse_stream_opts o = {.retry_ms = 2500, .heartbeat_ms = EVS_SSE_NO_HEARTBEAT};
    evs_sse *sse;
    ASSERT_RC(evs_sse_create(&sse, s, &o), 0);
    evs_sse_client *c = mk_client(sse, NULL, 0, NULL);
    pub(s, "t", "a");
    flush(s);
    char buf[128], want[128] = "retry: 2500\n\n";
    frame(want, sizeof want, 1, "a");
    cr_assert_eq(drain(c, buf, sizeof buf), strlen(want));
    cr_assert_str_eq(buf, want);
    ASSERT_RC(evs_sse_destroy(sse), 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

/* ---- patterns ------------------------------------------------------- */

Test(sse, patterns_select_subjects, .timeout = 30)
{
    evs_stream *s = mk_stream(true, 0);
    evs_sse *sse = mk_sse(s, EVS_SSE_SLOW_DISCONNECT, 0);
    const char *p[] = {"orders.*.created"};
    evs_sse_client *c = mk_client(sse, p, 1, NULL);
    pub(s, "orders.eu.created", "1");
    pub(s, "orders.eu.deleted", "2");
    pub(s, "orders.us.created", "3");
    flush(s);
    char buf[256], want[256] = "";
    frame(want, sizeof want, 1, "1");
    frame(want, sizeof want, 3, "3");
    drain(c, buf, sizeof buf);
    cr_assert_str_eq(buf, want);
    ASSERT_RC(evs_sse_destroy(sse), 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

Test(sse, several_patterns_deliver_their_union_once_each_in_order, .timeout = 30)
{
    evs_stream *s = mk_stream(true, 0);
    evs_sse *sse = mk_sse(s, EVS_SSE_SLOW_DISCONNECT, 0);
    const char *p[] = {"a.*", "a.b", "c.>", "a.*"};
    evs_sse_client *c = mk_client(sse, p, 4, NULL);
    const char *topics[] = {"a.b", "c.d.e", "x.y", "a.c", "c.d", "a.b.c", "a.b"};
    for (int i = 0; i < 7; i++)
        pub(s, topics[i], topics[i]);
    flush(s);
    char buf[512];
    size_t n = drain(c, buf, sizeof buf);
    static msgs g;
    parse(buf, n, &g);
    uint64_t want[] = {1, 2, 4, 5, 7};
    cr_assert_eq(g.n, 5, "got %zu frames", g.n);
    for (size_t i = 0; i < 5; i++) {
        cr_assert_eq(g.ids[i], want[i], "frame %zu: id %" PRIu64, i, g.ids[i]);
        cr_assert_str_eq(g.data[i], topics[want[i] - 1]);
    }
    ASSERT_RC(evs_sse_destroy(sse), 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

Test(sse, a_stream_without_topics_sends_every_event, .timeout = 30)
{
    evs_stream *s = mk_stream(false, 0);
    evs_sse *sse = mk_sse(s, EVS_SSE_SLOW_DISCONNECT, 0);
    const char *p[] = {"a.b", "c"};
    evs_sse_client *c = mk_client(sse, p, 2, NULL);
    pub(s, "zzz", "1");
    pub(s, "", "2");
    flush(s);
    char buf[256], want[256] = "";
    frame(want, sizeof want, 1, "1");
    frame(want, sizeof want, 2, "2");
    drain(c, buf, sizeof buf);
    cr_assert_str_eq(buf, want);
    ASSERT_RC(evs_sse_destroy(sse), 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

/* ---- resume --------------------------------------------------------- */

Test(sse, resume_replays_exactly_the_missed_events_then_live, .timeout = 30)
{
    evs_stream *s = mk_stream(true, 0);
    evs_sse *sse = mk_sse(s, EVS_SSE_SLOW_DISCONNECT, 0);
    for (int i = 1; i <= 10; i++)
        pub(s, i % 2 ? "a.x" : "b.x", i % 2 ? "a" : "b");
    flush(s);
    const char *p[] = {"a.>"};
    evs_sse_client *c = mk_client(sse, p, 1, "4");
    pub(s, "b.x", "b");
    pub(s, "a.x", "live");
    flush(s);
    char buf[512], want[512] = "";
    frame(want, sizeof want, 5, "a");
    frame(want, sizeof want, 7, "a");
    frame(want, sizeof want, 9, "a");
    frame(want, sizeof want, 12, "live");
    drain(c, buf, sizeof buf);
    cr_assert_str_eq(buf, want);
    evs_sse_client_stats cs;
    ASSERT_RC(evs_sse_client_stats_get(c, &cs), 0);
    cr_assert_eq(cs.replayed, 3);
    cr_assert_eq(cs.frames, 4);
    ASSERT_RC(evs_sse_destroy(sse), 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

Test(sse, resume_from_before_the_history_sends_a_gap_frame_first, .timeout = 30)
{
    evs_stream *s = mk_stream(false, 4);
    evs_sse *sse = mk_sse(s, EVS_SSE_SLOW_DISCONNECT, 0);
    for (int i = 1; i <= 10; i++)
        pub(s, "t", "e");
    flush(s);
    evs_sse_client *c = mk_client(sse, NULL, 0, "2");
    char buf[512], want[512] = "event: gap\ndata: {\"first\":\"3\",\"last\":\"6\"}\n\n";
    for (uint64_t id = 7; id <= 10; id++)
        frame(want, sizeof want, id, "e");
    drain(c, buf, sizeof buf);
    cr_assert_str_eq(buf, want);
    evs_sse_stats st;
    ASSERT_RC(evs_sse_stats_get(sse, &st), 0);
    cr_assert_eq(st.gaps, 1);
    cr_assert_eq(st.replayed, 4);
    ASSERT_RC(evs_sse_destroy(sse), 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

Test(sse, resume_without_history_reports_every_missed_id_as_a_gap, .timeout = 30)
{
    evs_stream *s = mk_stream(false, EVS_HISTORY_NONE);
    evs_sse *sse = mk_sse(s, EVS_SSE_SLOW_DISCONNECT, 0);
    for (int i = 1; i <= 3; i++)
        pub(s, "t", "e");
    flush(s);
    evs_sse_client *c = mk_client(sse, NULL, 0, "1");
    char buf[256];
    drain(c, buf, sizeof buf);
    cr_assert_str_eq(buf, "event: gap\ndata: {\"first\":\"2\",\"last\":\"3\"}\n\n");
    /* Up to date: no gap, nothing replayed. */
    evs_sse_client *d = mk_client(sse, NULL, 0, "3");
    ASSERT_RC(evs_sse_read(d, buf, sizeof buf, 0), 0);
    ASSERT_RC(evs_sse_destroy(sse), 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

Test(sse, resume_with_an_id_newer_than_every_event_replays_nothing, .timeout = 30)
{
    evs_stream *s = mk_stream(false, 0);
    evs_sse *sse = mk_sse(s, EVS_SSE_SLOW_DISCONNECT, 0);
    for (int i = 1; i <= 3; i++)
        pub(s, "t", "old");
    flush(s);
    evs_sse_client *c = mk_client(sse, NULL, 0, "100");
    char buf[256], want[256] = "";
    ASSERT_RC(evs_sse_read(c, buf, sizeof buf, 0), 0);
    pub(s, "t", "new");
    flush(s);
    frame(want, sizeof want, 4, "new");
    drain(c, buf, sizeof buf);
    cr_assert_str_eq(buf, want);
    evs_sse_stats st;
    ASSERT_RC(evs_sse_stats_get(sse, &st), 0);
    cr_assert_eq(st.gaps, 0);
    cr_assert_eq(st.replayed, 0);
    ASSERT_RC(evs_sse_destroy(sse), 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

/* Issue 13, finding 9: a restarted stream issues ids from 1 again, and
 * an id from before the restart was taken silently. */
Test(sse, with_reset_future_ids_a_future_id_gets_a_reset_then_everything_retained,
     .timeout = 30)
{
    evs_stream *s = mk_stream(false, 2);
    evs_sse_stream_opts so = {.heartbeat_ms = EVS_SSE_NO_HEARTBEAT, .reset_future_ids = true};
    evs_sse *sse;
    ASSERT_RC(evs_sse_create(&sse, s, &so), 0);
    evs_sse_client *c = mk_client(sse, NULL, 0, "100"); /* nothing issued yet */
    char buf[512], want[512] = "event: reset\ndata: {\"issued\":\"0\"}\n\n";
    drain(c, buf, sizeof buf);
    cr_assert_str_eq(buf, want);
    for (int i = 1; i <= 3; i++)
        pub(s, "t", "new");
    flush(s);
    evs_sse_client *d = mk_client(sse, NULL, 0, "100");
    /* History 2: id 1 is gone (a gap), 2 and 3 are replayed. */
    strcpy(want, "event: reset\ndata: {\"issued\":\"3\"}\n\n"
                 "event: gap\ndata: {\"first\":\"1\",\"last\":\"1\"}\n\n");
    frame(want, sizeof want, 2, "new");
    frame(want, sizeof want, 3, "new");
    drain(d, buf, sizeof buf);
    cr_assert_str_eq(buf, want);
    evs_sse_client *e = mk_client(sse, NULL, 0, "3"); /* an id it issued: no reset */
    drain(e, buf, sizeof buf);
    cr_assert_str_eq(buf, "");
    ASSERT_RC(evs_sse_destroy(sse), 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

Test(sse, a_last_event_id_that_is_not_a_decimal_id_is_einval, .timeout = 30)
{
    evs_stream *s = mk_stream(false, 0);
    evs_sse *sse = mk_sse(s, EVS_SSE_SLOW_DISCONNECT, 0);
    const char *bad[] = {"12a", "-1", " 5", "5 ", "+5", "0x10", "18446744073709551616"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        evs_sse_client_opts o = {.last_event_id = bad[i]};
        evs_sse_client *c = (evs_sse_client *)1;
        ASSERT_RC(evs_sse_connect(&c, sse, &o), EVS_EINVAL);
        cr_assert_null(c, "%s", bad[i]);
    }
    evs_sse_client *c = mk_client(sse, NULL, 0, "18446744073709551615");
    evs_sse_client *d = mk_client(sse, NULL, 0, ""); /* live only */
    ASSERT_RC(evs_sse_disconnect(c), 0);
    ASSERT_RC(evs_sse_disconnect(d), 0);
    ASSERT_RC(evs_sse_destroy(sse), 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

#define RACE_EVENTS 30000

typedef struct racer {
    evs_stream *s;
    atomic_ulong published;
} racer;

static void *race_publisher(void *arg)
{
    racer *r = arg;
    for (int i = 1; i <= RACE_EVENTS; i++) {
        pub(r->s, i % 2 ? "t.a" : "t.b", "r");
        atomic_store(&r->published, (unsigned long)i);
    }
    return NULL;
}

static void wait_published(racer *r, unsigned long n)
{
    int64_t deadline = evs__now_mono_ns() + 10 * 1000000000LL;
    while (atomic_load(&r->published) < n) {
        cr_assert_lt(evs__now_mono_ns(), deadline, "the publisher stalled");
        sched_yield();
    }
}

typedef struct idseq {
    uint64_t next;  /* the id expected next */
    uint64_t count;
    bool bad;
    char why[128];
} idseq;

static int check_next(const evs_sse_message *m, void *user)
{
    idseq *q = user;
    uint64_t id = strtoull(m->id, NULL, 10);
    if (!q->bad && id != q->next) {
        q->bad = true;
        snprintf(q->why, sizeof q->why, "expected id %" PRIu64 ", got %" PRIu64, q->next, id);
    }
    q->next = id + 1;
    q->count++;
    return 0;
}

Test(sse, resume_during_publishing_delivers_every_id_once_in_order, .timeout = 120)
{
    evs_stream *s = mk_stream(true, 1 << 16);
    evs_sse *sse = mk_sse(s, EVS_SSE_SLOW_DISCONNECT, 65536);
    racer r = {.s = s};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, race_publisher, &r), 0);
    wait_published(&r, 2000);
    /* Two overlapping patterns: t.a events match both, and come once. */
    const char *p[] = {"t.a", "t.*"};
    evs_sse_client *c = mk_client(sse, p, 2, "1000");
    evs_sse_parser *ps;
    ASSERT_RC(evs_sse_parser_create(&ps, NULL), 0);
    idseq q = {.next = 1001};
    static char buf[1 << 16];
    int64_t deadline = evs__now_mono_ns() + 60 * 1000000000LL;
    while (q.next <= RACE_EVENTS && !q.bad) {
        cr_assert_lt(evs__now_mono_ns(), deadline, "stuck at id %" PRIu64, q.next);
        int rc = evs_sse_read(c, buf, sizeof buf, 100);
        cr_assert_geq(rc, 0, "read: %s", evs_errname(rc));
        ASSERT_RC(evs_sse_parser_feed(ps, buf, (size_t)rc, NULL, check_next, &q), 0);
    }
    pthread_join(t, NULL);
    cr_assert_not(q.bad, "%s", q.why);
    cr_assert_eq(q.count, RACE_EVENTS - 1000);
    ASSERT_RC(evs_sse_read(c, buf, sizeof buf, 0), 0);
    evs_sse_client_stats cs;
    ASSERT_RC(evs_sse_client_stats_get(c, &cs), 0);
    cr_assert_null(cs.close_reason);
    cr_assert_gt(cs.replayed, 0);
    cr_log_info("sse: resume after 1000 replayed %" PRIu64 " of %d events\n", cs.replayed,
                RACE_EVENTS - 1000);
    evs_sse_parser_destroy(ps);
    ASSERT_RC(evs_sse_destroy(sse), 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

/* ---- slow clients --------------------------------------------------- */

Test(sse, a_slow_client_is_disconnected_and_blocks_no_one, .timeout = 30)
{
    evs_stream *s = mk_stream(false, 0); /* EVS_OVERFLOW_BLOCK */
    evs_sse *sse = mk_sse(s, EVS_SSE_SLOW_DISCONNECT, 4);
    evs_sse_client *slow = mk_client(sse, NULL, 0, NULL);
    evs_sse_client *fast = mk_client(sse, NULL, 0, NULL);
    char buf[256], want[256];
    for (uint64_t id = 1; id <= 10; id++) {
        pub(s, "t", "e"); /* returns: the publisher never waits for `slow` */
        flush(s);
        want[0] = '\0';
        frame(want, sizeof want, id, "e");
        drain(fast, buf, sizeof buf);
        cr_assert_str_eq(buf, want, "the fast client at id %" PRIu64, id);
    }
    want[0] = '\0';
    for (uint64_t id = 1; id <= 4; id++)
        frame(want, sizeof want, id, "e");
    strcat(want, "event: disconnect\ndata: slow consumer\n\n");
    drain(slow, buf, sizeof buf);
    cr_assert_str_eq(buf, want);
    ASSERT_RC(evs_sse_read(slow, buf, sizeof buf, 0), EVS_ECLOSED);
    ASSERT_RC(evs_sse_read(slow, buf, sizeof buf, 1000), EVS_ECLOSED);
    evs_sse_client_stats cs;
    ASSERT_RC(evs_sse_client_stats_get(slow, &cs), 0);
    cr_assert_str_eq(cs.close_reason, "slow consumer");
    ASSERT_RC(evs_sse_client_stats_get(fast, &cs), 0);
    cr_assert_null(cs.close_reason);
    cr_assert_eq(cs.frames, 10);
    evs_sse_stats st;
    ASSERT_RC(evs_sse_stats_get(sse, &st), 0);
    cr_assert_eq(st.disconnected_slow, 1);
    cr_assert_eq(st.clients, 2, "closed, not yet disconnected");
    ASSERT_RC(evs_sse_disconnect(slow), 0);
    ASSERT_RC(evs_sse_stats_get(sse, &st), 0);
    cr_assert_eq(st.clients, 1);
    ASSERT_RC(evs_sse_destroy(sse), 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

Test(sse, drop_oldest_announces_exactly_how_many_were_skipped, .timeout = 30)
{
    evs_stream *s = mk_stream(false, 0);
    evs_sse *sse = mk_sse(s, EVS_SSE_SLOW_DROP_OLDEST, 4);
    evs_sse_client *c = mk_client(sse, NULL, 0, NULL);
    for (int i = 1; i <= 10; i++)
        pub(s, "t", "e");
    flush(s);
    char buf[512], want[512] = ": skipped 6 events\n\n";
    for (uint64_t id = 7; id <= 10; id++)
        frame(want, sizeof want, id, "e");
    drain(c, buf, sizeof buf);
    cr_assert_str_eq(buf, want);
    /* Later frames come with no comment. */
    pub(s, "t", "e");
    flush(s);
    want[0] = '\0';
    frame(want, sizeof want, 11, "e");
    drain(c, buf, sizeof buf);
    cr_assert_str_eq(buf, want);
    evs_sse_stats st;
    ASSERT_RC(evs_sse_stats_get(sse, &st), 0);
    cr_assert_eq(st.skipped, 6);
    cr_assert_eq(st.disconnected_slow, 0);
    evs_sse_client_stats cs;
    ASSERT_RC(evs_sse_client_stats_get(c, &cs), 0);
    cr_assert_eq(cs.skipped, 6);
    cr_assert_null(cs.close_reason);
    ASSERT_RC(evs_sse_destroy(sse), 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

/* ---- the eventfd ---------------------------------------------------- */

static int readable(int fd, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, timeout_ms);
}

Test(sse, the_fd_is_readable_while_frames_wait_and_reset_after_draining, .timeout = 30)
{
    evs_stream *s = mk_stream(false, 0);
    evs_sse *sse = mk_sse(s, EVS_SSE_SLOW_DISCONNECT, 0);
    evs_sse_client *c = mk_client(sse, NULL, 0, NULL);
    int fd = evs_sse_fd(c);
    cr_assert_geq(fd, 0, "fd: %s", evs_errname(fd));
    cr_assert_eq(evs_sse_fd(c), fd, "made once");
    cr_assert_eq(readable(fd, 0), 0);
    char buf[256];
    for (int round = 0; round < 3; round++) {
        pub(s, "t", "a");
        pub(s, "t", "b");
        cr_assert_eq(readable(fd, 5000), 1, "round %d", round);
        flush(s);
        /* A read that leaves frames behind keeps it readable. */
        int rc = evs_sse_read(c, buf, strlen("id: 1\ndata: a\n\n"), 0);
        cr_assert_gt(rc, 0);
        cr_assert_eq(readable(fd, 0), 1);
        drain(c, buf, sizeof buf);
        cr_assert_eq(readable(fd, 0), 0, "reset after draining");
    }
    /* Frames queued before the fd was made make it readable at once. */
    evs_sse_client *d = mk_client(sse, NULL, 0, NULL);
    pub(s, "t", "c");
    flush(s);
    cr_assert_eq(readable(evs_sse_fd(d), 0), 1);
    /* A closed client stays readable: the read reports the close. */
    ASSERT_RC(evs_sse_close(sse), 0);
    cr_assert_eq(readable(fd, 0), 1);
    char want[128] = "";
    frame(want, sizeof want, 7, "c");
    strcat(want, "event: disconnect\ndata: server shutdown\n\n");
    drain(c, buf, sizeof buf);
    cr_assert_str_eq(buf, want);
    cr_assert_eq(readable(fd, 0), 1);
    ASSERT_RC(evs_sse_read(c, buf, sizeof buf, 0), EVS_ECLOSED);
    ASSERT_RC(evs_sse_destroy(sse), 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

/* ---- push ----------------------------------------------------------- */

typedef struct pushed {
    pthread_mutex_t mu;
    char buf[4096];
    size_t len;
    int calls;
    int fail_at; /* return -1 from this call on; 0 = never */
} pushed;

static int on_push(const char *frames, size_t len, void *user)
{
    pushed *p = user;
    pthread_mutex_lock(&p->mu);
    p->calls++;
    cr_assert_lt(p->len + len, sizeof p->buf);
    memcpy(p->buf + p->len, frames, len);
    p->len += len;
    p->buf[p->len] = '\0';
    int rc = p->fail_at != 0 && p->calls >= p->fail_at ? -1 : 0;
    pthread_mutex_unlock(&p->mu);
    return rc;
}

static void pushed_text(pushed *p, char *out, size_t cap)
{
    pthread_mutex_lock(&p->mu);
    size_t n = p->len < cap - 1 ? p->len : cap - 1;
    memcpy(out, p->buf, n);
    out[n] = '\0';
    pthread_mutex_unlock(&p->mu);
}

Test(sse, a_push_callback_receives_whole_frames, .timeout = 30)
{
    evs_stream *s = mk_stream(false, 0);
    evs_sse *sse = mk_sse(s, EVS_SSE_SLOW_DISCONNECT, 0);
    pushed p = {.mu = PTHREAD_MUTEX_INITIALIZER};
    pub(s, "t", "old");
    pub(s, "t", "missed");
    flush(s);
    evs_sse_client_opts o = {.push = on_push, .push_user = &p, .last_event_id = "1"};
    evs_sse_client *c;
    ASSERT_RC(evs_sse_connect(&c, sse, &o), 0);
    char got[4096], want[512] = "";
    frame(want, sizeof want, 2, "missed");
    pushed_text(&p, got, sizeof got);
    cr_assert_str_eq(got, want, "the replay is pushed before connect returns");
    pub(s, "t", "x");
    pub(s, "t", "y");
    flush(s);
    frame(want, sizeof want, 3, "x");
    frame(want, sizeof want, 4, "y");
    pushed_text(&p, got, sizeof got);
    cr_assert_str_eq(got, want);
    cr_assert_eq(p.calls, 3, "one frame per call");
    char buf[16];
    ASSERT_RC(evs_sse_read(c, buf, sizeof buf, 0), EVS_EINVAL);
    ASSERT_RC(evs_sse_fd(c), EVS_EINVAL);
    ASSERT_RC(evs_sse_disconnect(c), 0);
    ASSERT_RC(evs_sse_destroy(sse), 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

Test(sse, a_non_zero_push_return_disconnects_the_client, .timeout = 30)
{
    evs_stream *s = mk_stream(false, 0);
    evs_sse *sse = mk_sse(s, EVS_SSE_SLOW_DISCONNECT, 0);
    pushed p = {.mu = PTHREAD_MUTEX_INITIALIZER, .fail_at = 2};
    evs_sse_client_opts o = {.push = on_push, .push_user = &p};
    evs_sse_client *c;
    ASSERT_RC(evs_sse_connect(&c, sse, &o), 0);
    for (int i = 0; i < 5; i++)
        pub(s, "t", "e");
    flush(s);
    pthread_mutex_lock(&p.mu);
    cr_assert_eq(p.calls, 2, "nothing is pushed after the failing call");
    pthread_mutex_unlock(&p.mu);
    evs_sse_client_stats cs;
    ASSERT_RC(evs_sse_client_stats_get(c, &cs), 0);
    cr_assert_str_eq(cs.close_reason, "push failed");
    cr_assert_eq(cs.frames, 1);
    ASSERT_RC(evs_sse_disconnect(c), 0);
    ASSERT_RC(evs_sse_destroy(sse), 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

/* A push callback that publishes `flood` events to an inline stream
 * from its first call: they reach the client while connect is still
 * handing it over, so they wait in its mailbox. */
typedef struct flooder {
    pushed p;
    evs_stream *s;
    int flood;
} flooder;

static int push_and_flood(const char *frames, size_t len, void *user)
{
    flooder *f = user;
    int rc = on_push(frames, len, &f->p);
    int n = f->flood;
    f->flood = 0;
    for (int i = 0; i < n; i++)
        pub(f->s, "t", "live");
    return rc;
}

/* Issue 13, finding 2: the layer closed such a client as slow and then
 * pushed nothing, so a web layer waited for its end forever. */
Test(sse, a_push_client_closed_as_slow_during_the_hand_off_gets_its_final_frame,
     .timeout = 30)
{
    evs_stream_opts so = {.delivery = EVS_DELIVERY_INLINE, .history = 16};
    evs_stream *s;
    ASSERT_RC(evs_stream_create(&s, &so), 0);
    evs_sse *sse = mk_sse(s, EVS_SSE_SLOW_DISCONNECT, 4);
    pub(s, "t", "old");
    flooder f = {.p = {.mu = PTHREAD_MUTEX_INITIALIZER}, .s = s, .flood = 10};
    evs_sse_client_opts o = {.push = push_and_flood, .push_user = &f, .last_event_id = "0"};
    evs_sse_client *c;
    ASSERT_RC(evs_sse_connect(&c, sse, &o), 0);
    /* The replay (id 1), the four live events the mailbox held (2-5),
     * then the final frame; nothing after it. */
    char got[4096], want[1024] = "";
    frame(want, sizeof want, 1, "old");
    for (uint64_t id = 2; id <= 5; id++)
        frame(want, sizeof want, id, "live");
    strcat(want, "event: disconnect\ndata: slow consumer\n\n");
    pushed_text(&f.p, got, sizeof got);
    cr_assert_str_eq(got, want);
    pub(s, "t", "after");
    pushed_text(&f.p, got, sizeof got);
    cr_assert_str_eq(got, want, "nothing is pushed after the final frame");
    evs_sse_client_stats cs;
    ASSERT_RC(evs_sse_client_stats_get(c, &cs), 0);
    cr_assert_str_eq(cs.close_reason, "slow consumer");
    evs_sse_stats st;
    ASSERT_RC(evs_sse_stats_get(sse, &st), 0);
    cr_assert_eq(st.disconnected_slow, 1);
    ASSERT_RC(evs_sse_disconnect(c), 0);
    ASSERT_RC(evs_sse_destroy(sse), 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

typedef struct self_disconnect {
    evs_sse_client *c;
    int rc;
} self_disconnect;

static int disconnect_self(const char *frames, size_t len, void *user)
{
    self_disconnect *d = user;
    d->rc = evs_sse_disconnect(evs_load_acquire(&d->c));
    return 0;
}

Test(sse, disconnect_inside_its_own_push_callback_is_edeadlk, .timeout = 30)
{
    evs_stream *s = mk_stream(false, 0);
    evs_sse *sse = mk_sse(s, EVS_SSE_SLOW_DISCONNECT, 0);
    self_disconnect d = {0};
    evs_sse_client_opts o = {.push = disconnect_self, .push_user = &d};
    evs_sse_client *c;
    ASSERT_RC(evs_sse_connect(&c, sse, &o), 0);
    evs_store_release(&d.c, c);
    pub(s, "t", "e");
    flush(s);
    ASSERT_RC(d.rc, EVS_EDEADLK);
    ASSERT_RC(evs_sse_disconnect(c), 0);
    ASSERT_RC(evs_sse_destroy(sse), 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

/* ---- heartbeats (fake clock, heartbeat.h) --------------------------- */


Test(sse, an_idle_client_gets_a_heartbeat_comment, .timeout = 30)
{
    ASSERT_RC(evs__hb_set_clock(&fake_clock), 0);
    evs_stream *s = mk_stream(false, 0);
    evs_sse_stream_opts so = {.heartbeat_ms = 1000};
    evs_sse *sse;
    ASSERT_RC(evs_sse_create(&sse, s, &so), 0);
    evs_sse_client *c = mk_client(sse, NULL, 0, NULL);
    char buf[256], want[256] = "";
    clock_at_ms(999);
    ASSERT_RC(evs_sse_read(c, buf, sizeof buf, 0), 0);
    clock_at_ms(1000);
    drain(c, buf, sizeof buf);
    cr_assert_str_eq(buf, ": heartbeat\n\n");
    clock_at_ms(1500);
    pub(s, "t", "busy");
    flush(s);
    clock_at_ms(2000);
    frame(want, sizeof want, 1, "busy");
    drain(c, buf, sizeof buf);
    cr_assert_str_eq(buf, want, "a client with traffic is not idle");
    clock_at_ms(3000);
    drain(c, buf, sizeof buf);
    cr_assert_str_eq(buf, ": heartbeat\n\n");
    evs_sse_stats st;
    ASSERT_RC(evs_sse_stats_get(sse, &st), 0);
    cr_assert_eq(st.heartbeats, 2);
    evs_sse_client_stats cs;
    ASSERT_RC(evs_sse_client_stats_get(c, &cs), 0);
    cr_assert_eq(cs.heartbeats, 2);
    ASSERT_RC(evs_sse_destroy(sse), 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
    ASSERT_RC(evs__hb_set_clock(NULL), 0);
}

Test(sse, a_push_client_gets_heartbeats_too, .timeout = 30)
{
    ASSERT_RC(evs__hb_set_clock(&fake_clock), 0);
    evs_stream *s = mk_stream(false, 0);
    evs_sse_stream_opts so = {.heartbeat_ms = 1000};
    evs_sse *sse;
    ASSERT_RC(evs_sse_create(&sse, s, &so), 0);
    pushed p = {.mu = PTHREAD_MUTEX_INITIALIZER};
    evs_sse_client_opts o = {.push = on_push, .push_user = &p};
    evs_sse_client *c;
    ASSERT_RC(evs_sse_connect(&c, sse, &o), 0);
    clock_at_ms(1000);
    char got[4096];
    pushed_text(&p, got, sizeof got);
    cr_assert_str_eq(got, ": heartbeat\n\n");
    ASSERT_RC(evs_sse_disconnect(c), 0);
    ASSERT_RC(evs_sse_destroy(sse), 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
    ASSERT_RC(evs__hb_set_clock(NULL), 0);
}

Test(sse, stream_heartbeats_become_one_comment_per_client, .timeout = 30)
{
    ASSERT_RC(evs__hb_set_clock(&fake_clock), 0);
    evs_stream_opts so = {.topics = true, .heartbeat_ms = 1000};
    evs_stream *s;
    ASSERT_RC(evs_stream_create(&s, &so), 0);
    evs_sse *sse = mk_sse(s, EVS_SSE_SLOW_DISCONNECT, 0);
    const char *p[] = {"a.>", "b.>"};
    evs_sse_client *c = mk_client(sse, p, 2, NULL);
    clock_at_ms(1000);
    flush(s);
    char buf[256];
    drain(c, buf, sizeof buf);
    cr_assert_str_eq(buf, ": heartbeat\n\n");
    ASSERT_RC(evs_sse_destroy(sse), 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
    ASSERT_RC(evs__hb_set_clock(NULL), 0);
}

/* ---- lifecycle, options, stats ---------------------------------------- */

Test(sse, bad_options_are_einval)
{
    evs_stream *s = mk_stream(true, 0);
    evs_sse *sse = (evs_sse *)1;
    ASSERT_RC(evs_sse_create(NULL, s, NULL), EVS_EINVAL);
    ASSERT_RC(evs_sse_create(&sse, NULL, NULL), EVS_EINVAL);
    cr_assert_null(sse);
    evs_sse_stream_opts bad[] = {
        {.slow = 2}, {.mailbox = 1}, {.mailbox = 48}, {.mailbox = 131072},
        {.heartbeat_ms = -2}, {.retry_ms = -1},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ASSERT_RC(evs_sse_create(&sse, s, &bad[i]), EVS_EINVAL);
    ASSERT_RC(evs_sse_create(&sse, s, NULL), 0);

    evs_sse_client *c = (evs_sse_client *)1;
    const char *badpat[] = {"a..b"};
    const char *nullpat[] = {NULL};
    evs_sse_client_opts co[] = {
        {.patterns = badpat, .npatterns = 1},
        {.patterns = nullpat, .npatterns = 1},
        {.patterns = NULL, .npatterns = 1},
        {.patterns = badpat, .npatterns = EVS_SSE_MAX_PATTERNS + 1},
    };
    for (size_t i = 0; i < sizeof co / sizeof co[0]; i++) {
        ASSERT_RC(evs_sse_connect(&c, sse, &co[i]), EVS_EINVAL);
        cr_assert_null(c);
    }
    ASSERT_RC(evs_sse_connect(NULL, sse, NULL), EVS_EINVAL);
    ASSERT_RC(evs_sse_connect(&c, NULL, NULL), EVS_EINVAL);
    ASSERT_RC(evs_sse_connect(&c, sse, NULL), 0);
    char buf[8];
    ASSERT_RC(evs_sse_read(NULL, buf, sizeof buf, 0), EVS_EINVAL);
    ASSERT_RC(evs_sse_read(c, NULL, 8, 0), EVS_EINVAL);
    ASSERT_RC(evs_sse_read(c, buf, sizeof buf, -2), EVS_EINVAL);
    ASSERT_RC(evs_sse_read(c, NULL, 0, 0), 0);
    ASSERT_RC(evs_sse_fd(NULL), EVS_EINVAL);
    evs_sse_stats st;
    evs_sse_client_stats cs;
    ASSERT_RC(evs_sse_stats_get(NULL, &st), EVS_EINVAL);
    ASSERT_RC(evs_sse_stats_get(sse, NULL), EVS_EINVAL);
    ASSERT_RC(evs_sse_client_stats_get(NULL, &cs), EVS_EINVAL);
    ASSERT_RC(evs_sse_client_stats_get(c, NULL), EVS_EINVAL);
    ASSERT_RC(evs_sse_close(NULL), EVS_EINVAL);
    cr_assert_eq(evs_sse_next_size(NULL), 0);
    ASSERT_RC(evs_sse_disconnect(NULL), 0);
    ASSERT_RC(evs_sse_destroy(NULL), 0);
    ASSERT_RC(evs_sse_destroy(sse), 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

Test(sse, close_sends_every_client_its_final_frame_and_refuses_connects, .timeout = 30)
{
    evs_stream *s = mk_stream(false, 0);
    evs_sse *sse = mk_sse(s, EVS_SSE_SLOW_DISCONNECT, 0);
    evs_sse_client *c = mk_client(sse, NULL, 0, NULL);
    pub(s, "t", "queued");
    flush(s);
    ASSERT_RC(evs_sse_close(sse), 0);
    ASSERT_RC(evs_sse_close(sse), 0);
    pub(s, "t", "after"); /* not queued for a closed client */
    flush(s);
    char buf[256], want[256] = "";
    frame(want, sizeof want, 1, "queued");
    strcat(want, "event: disconnect\ndata: server shutdown\n\n");
    drain(c, buf, sizeof buf);
    cr_assert_str_eq(buf, want);
    ASSERT_RC(evs_sse_read(c, buf, sizeof buf, 0), EVS_ECLOSED);
    evs_sse_client *d = (evs_sse_client *)1;
    ASSERT_RC(evs_sse_connect(&d, sse, NULL), EVS_ECLOSED);
    cr_assert_null(d);
    ASSERT_RC(evs_sse_destroy(sse), 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

Test(sse, connect_to_a_closed_stream_is_eclosed, .timeout = 30)
{
    evs_stream *s = mk_stream(false, 0);
    evs_sse *sse = mk_sse(s, EVS_SSE_SLOW_DISCONNECT, 0);
    ASSERT_RC(evs_stream_close(s, 1000, NULL), 0);
    evs_sse_client *c;
    ASSERT_RC(evs_sse_connect(&c, sse, NULL), EVS_ECLOSED);
    ASSERT_RC(evs_sse_destroy(sse), 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

typedef struct inner {
    evs_sse *sse;
    int rc_resume, rc_live;
} inner;

static int connect_inside(const evs_event *ev, void *user)
{
    inner *in = user;
    evs_sse_client_opts o = {.last_event_id = "0"};
    evs_sse_client *c;
    in->rc_resume = evs_sse_connect(&c, in->sse, &o);
    in->rc_live = evs_sse_connect(&c, in->sse, NULL);
    if (in->rc_live == 0)
        evs_sse_disconnect(c);
    return 0;
}

Test(sse, resuming_inside_a_handler_of_the_stream_is_edeadlk, .timeout = 30)
{
    evs_stream *s = mk_stream(false, 0);
    evs_sse *sse = mk_sse(s, EVS_SSE_SLOW_DISCONNECT, 0);
    inner in = {.sse = sse};
    evs_sub *sub;
    ASSERT_RC(evs_subscribe(&sub, s, NULL, connect_inside, NULL, &in, NULL), 0);
    pub(s, "t", "e");
    flush(s);
    ASSERT_RC(in.rc_resume, EVS_EDEADLK);
    ASSERT_RC(in.rc_live, 0);
    evs_sse_stats st;
    ASSERT_RC(evs_sse_stats_get(sse, &st), 0);
    cr_assert_eq(st.clients, 0);
    cr_assert_eq(st.connects, 1);
    ASSERT_RC(evs_unsubscribe(sub), 0);
    ASSERT_RC(evs_sse_destroy(sse), 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

Test(sse, stats_count_clients_connects_and_frames, .timeout = 30)
{
    evs_stream *s = mk_stream(false, 0);
    evs_sse *sse = mk_sse(s, EVS_SSE_SLOW_DISCONNECT, 0);
    evs_sse_client *a = mk_client(sse, NULL, 0, NULL);
    evs_sse_client *b = mk_client(sse, NULL, 0, NULL);
    evs_sse_stats st;
    ASSERT_RC(evs_sse_stats_get(sse, &st), 0);
    cr_assert_eq(st.clients, 2);
    cr_assert_eq(st.connects, 2);
    pub(s, "t", "1");
    pub(s, "t", "2");
    flush(s);
    evs_sse_client_stats cs;
    ASSERT_RC(evs_sse_client_stats_get(a, &cs), 0);
    cr_assert_eq(cs.queued, 2);
    char buf[256];
    drain(a, buf, sizeof buf);
    drain(b, buf, sizeof buf);
    ASSERT_RC(evs_sse_client_stats_get(a, &cs), 0);
    cr_assert_eq(cs.queued, 0);
    cr_assert_eq(cs.frames, 2);
    ASSERT_RC(evs_sse_disconnect(a), 0);
    ASSERT_RC(evs_sse_stats_get(sse, &st), 0);
    cr_assert_eq(st.clients, 1);
    cr_assert_eq(st.connects, 2);
    cr_assert_eq(st.frames, 4);
    cr_assert_eq(st.skipped + st.replayed + st.gaps + st.heartbeats + st.disconnected_slow, 0);
    ASSERT_RC(evs_sse_destroy(sse), 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

typedef struct blocked {
    evs_sse_client *c;
    int rc;
} blocked;

static void *read_forever(void *arg)
{
    blocked *b = arg;
    char buf[64];
    b->rc = evs_sse_read(b->c, buf, sizeof buf, EVS_FOREVER);
    return NULL;
}

static void wait_reader_inside(evs_sse_client *c)
{
    int64_t deadline = evs__now_mono_ns() + 10 * 1000000000LL;
    while (evs__sse_readers(c) == 0) {
        cr_assert_lt(evs__now_mono_ns(), deadline, "the read never started");
        sched_yield();
    }
}

Test(sse, disconnect_wakes_a_blocked_read_with_eclosed, .timeout = 30)
{
    evs_stream *s = mk_stream(false, 0);
    evs_sse *sse = mk_sse(s, EVS_SSE_SLOW_DISCONNECT, 0);
    blocked b = {.c = mk_client(sse, NULL, 0, NULL)};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, read_forever, &b), 0);
    wait_reader_inside(b.c);
    ASSERT_RC(evs_sse_disconnect(b.c), 0);
    pthread_join(t, NULL);
    ASSERT_RC(b.rc, EVS_ECLOSED);
    /* destroy does the same for the clients it still has */
    b.c = mk_client(sse, NULL, 0, NULL);
    cr_assert_eq(pthread_create(&t, NULL, read_forever, &b), 0);
    wait_reader_inside(b.c);
    ASSERT_RC(evs_sse_destroy(sse), 0);
    pthread_join(t, NULL);
    ASSERT_RC(b.rc, EVS_ECLOSED);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

/* ---- allocation failure --------------------------------------------- */

static void sweep_connect(evs_stream *s, evs_sse *sse, const evs_sse_client_opts *o)
{
    for (long k = 0;; k++) {
        cr_assert_lt(k, 10000, "connect never succeeded");
        evs_sse_client *c = (evs_sse_client *)1;
        evs__alloc_fail_after(k);
        int rc = evs_sse_connect(&c, sse, o);
        evs__alloc_fail_after(-1);
        evs_sse_stats st;
        ASSERT_RC(evs_sse_stats_get(sse, &st), 0);
        if (rc != 0) {
            cr_assert_eq(rc, EVS_ENOMEM, "k=%ld: %s", k, evs_errname(rc));
            cr_assert_null(c);
            cr_assert_eq(st.clients, 0);
            continue;
        }
        cr_assert_eq(st.clients, 1);
        if (o->push == NULL) {
            char buf[512];
            drain(c, buf, sizeof buf); /* the replay, if any */
            uint64_t id = pub(s, "a.b", "after");
            flush(s);
            char want[128] = "";
            frame(want, sizeof want, id, "after");
            drain(c, buf, sizeof buf);
            cr_assert_str_eq(buf, want, "the client works after %ld failures", k);
        }
        ASSERT_RC(evs_sse_disconnect(c), 0);
        return;
    }
}

static int ok_push(const char *frames, size_t len, void *user) { return 0; }

/* msgpack whose non-string map keys nest three deep does not render as
 * JSON (json.c bounds that output); the client is told it missed it. */
Test(sse, an_event_that_does_not_render_is_announced_as_skipped, .timeout = 30)
{
    evs_stream *s = mk_stream(false, 0);
    evs_sse *sse = mk_sse(s, EVS_SSE_SLOW_DROP_OLDEST, 16);
    evs_sse_client *c = mk_client(sse, NULL, 0, NULL);
    static const uint8_t nested[] = {0x81, 0x81, 0x81, 0x01, 0x00, 0x00, 0x00};
    evs_event *ev;
    ASSERT_RC(evs_event_create(&ev, EVS_TYPE_MESSAGE, "t", nested, sizeof nested), 0);
    ASSERT_RC(evs_event_set_content(ev, EVS_CONTENT_MSGPACK), 0);
    ASSERT_RC(evs_stream_publish(s, ev), 0);
    evs_event_unref(ev);
    uint64_t id = pub(s, "t", "after");
    flush(s);
    char got[1024] = "", want[256] = "";
    drain(c, got, sizeof got);
    frame(want, sizeof want, id, "after");
    cr_assert_not_null(strstr(got, "skipped 1 event"), "%s", got);
    cr_assert_not_null(strstr(got, want), "%s", got);
    evs_sse_stats st;
    ASSERT_RC(evs_sse_stats_get(sse, &st), 0);
    cr_assert_eq(st.skipped, 1);
    ASSERT_RC(evs_sse_disconnect(c), 0);
    ASSERT_RC(evs_sse_destroy(sse), 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

/* A publisher that keeps one subject busy until told to stop. */
typedef struct busy {
    evs_stream *s;
    atomic_bool stop;
} busy;

static void *keep_publishing(void *arg)
{
    busy *b = arg;
    while (!atomic_load(&b->stop))
        pub(b->s, "b.1", "x");
    return NULL;
}

/*
 * Regression (make soak-tsan: heap-use-after-free in shadowed): teardown
 * unsubscribed a client's patterns first to last, and freed pattern 0's
 * subscription while pattern 1's handler could still run and read it
 * (shadowed() reads the patterns before its own). Events flow to pattern 1
 * while clients disconnect; ASan or TSan reports the read if it happens.
 */
Test(sse, regression_disconnect_while_events_reach_a_later_pattern, .timeout = 120)
{
    evs_stream *s = mk_stream(true, 0);
    evs_sse *sse = mk_sse(s, EVS_SSE_SLOW_DROP_OLDEST, 16);
    busy b = {.s = s};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, keep_publishing, &b), 0);
    /* Many patterns before the busy one: their subscriptions are freed
     * (at later unsubscribes' epoch barriers) while it is still live. */
    static const char *const pats[] = {"a.0", "a.1", "a.2", "a.3", "a.4", "a.5", "a.6",
                                       "a.7", "a.8", "a.9", "a.10", "a.11", "b.*"};
    char buf[4096];
    for (int i = 0; i < 1500; i++) {
        evs_sse_client *c = mk_client(sse, pats, sizeof pats / sizeof pats[0], NULL);
        if (i % 2)
            (void)evs_sse_read(c, buf, sizeof buf, 0);
        ASSERT_RC(evs_sse_disconnect(c), 0);
    }
    atomic_store(&b.stop, true);
    pthread_join(t, NULL);
    ASSERT_RC(evs_sse_destroy(sse), 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

Test(sse, connect_survives_allocation_failure, .timeout = 120)
{
    evs_stream *s = mk_stream(true, 0);
    evs_sse_stream_opts so = {.heartbeat_ms = 60000};
    evs_sse *sse;
    ASSERT_RC(evs_sse_create(&sse, s, &so), 0);
    for (int i = 0; i < 5; i++)
        pub(s, "a.b", "history");
    flush(s);
    const char *p[] = {"a.*", "a.b", "c.>"};
    evs_sse_client_opts live = {.patterns = p, .npatterns = 3};
    evs_sse_client_opts resume = {.patterns = p, .npatterns = 3, .last_event_id = "2"};
    evs_sse_client_opts push = {.patterns = p, .npatterns = 2, .last_event_id = "1",
                                .push = ok_push};
    sweep_connect(s, sse, &live);
    sweep_connect(s, sse, &resume);
    sweep_connect(s, sse, &push);
    ASSERT_RC(evs_sse_destroy(sse), 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

/* ---- memory --------------------------------------------------------- */

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__) || defined(EVS_TSAN)
#define SANITIZED 1
#else
#define SANITIZED 0
#endif

static size_t heap_in_use(void)
{
    struct mallinfo2 m = mallinfo2();
    return m.uordblks + m.hblkhd;
}

/*
 * The memory one idle client costs: the client with its mailbox, its
 * subscription (and the stream's index entry and subscription-array
 * slot), its heartbeat timer. Measured over 10,000 clients with glibc's
 * heap statistics, which sanitizers replace (there the test only
 * exercises the path with fewer clients).
 */
Test(sse, an_idle_client_costs_less_than_2_kib, .timeout = 120)
{
    size_t n = SANITIZED ? 500 : 10000;
    evs_stream *s = mk_stream(true, 0);
    evs_sse *sse;
    ASSERT_RC(evs_sse_create(&sse, s, NULL), 0); /* defaults: mailbox 64, heartbeats */
    evs_sse_client **cs = calloc(n, sizeof(*cs));
    cr_assert_not_null(cs);
    const char *p[] = {"news.>"};
    evs_sse_client_opts o = {.patterns = p, .npatterns = 1};
    /* Warm up the one-time allocations (epoch record, timer thread). */
    ASSERT_RC(evs_sse_connect(&cs[0], sse, &o), 0);
    ASSERT_RC(evs_sse_disconnect(cs[0]), 0);
    size_t before = heap_in_use();
    for (size_t i = 0; i < n; i++)
        ASSERT_RC(evs_sse_connect(&cs[i], sse, &o), 0);
    size_t after = heap_in_use();
    size_t per = (after - before) / n;
    if (!SANITIZED) {
        cr_log_info("sse: %zu idle clients: %zu bytes each\n", n, per);
        cr_assert_lt(per, 2048, "an idle client costs %zu bytes", per);
    }
    evs_sse_stats st;
    ASSERT_RC(evs_sse_stats_get(sse, &st), 0);
    cr_assert_eq(st.clients, n);
    for (size_t i = 0; i < n; i++)
        ASSERT_RC(evs_sse_disconnect(cs[i]), 0);
    free(cs);
    ASSERT_RC(evs_sse_destroy(sse), 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
}
