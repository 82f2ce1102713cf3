/*
 * Allocation failure along the main paths: for k = 0, 1, 2, ... the k-th
 * allocation the call makes fails (evs__alloc_fail_after), until the call
 * makes fewer than k + 1 allocations and so succeeds untouched. Every
 * failure must return EVS_ENOMEM (or the documented outcome: an optional
 * allocation, such as a cache entry, may fail silently and be counted),
 * leave out-parameters NULL and the objects as they were, and leave them
 * usable: the same call then succeeds, and what existed before still
 * works. Leaks are caught by LeakSanitizer under `make asan`, which runs
 * this file like every other (each test is its own process, checked at
 * exit by scripts/run-checked.sh).
 *
 * Injection is process-wide, so an allocation on another thread (a
 * dispatcher, the heartbeat service) may take the failure instead; the
 * loops allow for that: a success with a failure injected somewhere is
 * checked like any other and the sweep goes on.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "evs_test.h"
#include "subject.h"

/* Sweeps stop here at the latest: no path makes this many allocations. */
#define K_MAX 20000

/*
 * SWEEP(k) { ... FAIL_AT(k); call; END_CALL(k); checks } runs the body
 * for k = 0, 1, ... until a run in which no failure was injected: FAIL_AT
 * arms the injection right before the call (after any setup), END_CALL
 * turns it off right after and ends the sweep when the call (and any
 * other thread meanwhile) made k allocations or fewer.
 */
#define SWEEP(k) for (long k = (injected = 0), more_ = 1; more_ && k < K_MAX; k++)
#define FAIL_AT(k) evs__alloc_fail_after(k)
#define END_CALL(k) (more_ = evs__alloc_fail_after(-1) > (k), injected += more_)
/* After a sweep: how many of its runs had a failure injected. Each sweep
 * must have had some, or it tested nothing. */
static long injected;
#define SWEPT() cr_assert_gt(injected, 0, "the sweep injected no failure")

static int count_fn(const evs_event *ev, void *user)
{
    (void)ev;
    ck_pr_inc_64(user);
    return 0;
}

static uint64_t stat_published(evs_stream *s)
{
    evs_stream_stats st;
    ASSERT_RC(evs_stream_stats_get(s, &st), 0);
    return st.published;
}

/* ------------------------------------------------------------------ */
/* Streams, subscriptions, publishing                                  */
/* ------------------------------------------------------------------ */

Test(alloc, stream_create_is_enomem_or_whole, .timeout = 120)
{
    const evs_stream_opts variants[] = {
        {0},
        {.delivery = EVS_DELIVERY_INLINE},
        {.topics = true, .capacity = 64},
        {.slot_bytes = 256, .capacity = 16, .history = EVS_HISTORY_NONE},
        {.heartbeat_ms = 60000, .capacity = 8},
    };
    for (size_t v = 0; v < sizeof variants / sizeof variants[0]; v++) {
        long calls = 0;
        SWEEP(k) {
            evs_stream *s = (evs_stream *)1;
            FAIL_AT(k);
            int rc = evs_stream_create(&s, &variants[v]);
            END_CALL(k);
            calls++;
            if (rc != 0) {
                cr_assert_eq(rc, EVS_ENOMEM, "variant %zu, k %ld: %s", v, k, evs_errname(rc));
                cr_assert_null(s);
                continue;
            }
            /* Whole: it takes, delivers and closes. */
            uint64_t n = 0;
            evs_sub *sub;
            ASSERT_RC(evs_subscribe(&sub, s, NULL, count_fn, NULL, &n, NULL), 0);
            evs_event *ev;
            ASSERT_RC(evs_event_create(&ev, EVS_TYPE_MESSAGE, "a", "x", 1), 0);
            ASSERT_RC(evs_stream_publish(s, ev), 0);
            evs_event_unref(ev);
            ASSERT_RC(evs_stream_close(s, EVS_FOREVER, NULL), 0);
            cr_assert_eq(ck_pr_load_64(&n), 1, "variant %zu, k %ld", v, k);
            ASSERT_RC(evs_stream_destroy(s), 0);
        }
        SWEPT();
        cr_assert_gt(calls, 1, "variant %zu never allocated", v);
    }
}

Test(alloc, subscribe_is_enomem_and_leaves_the_stream_as_it_was, .timeout = 120)
{
    /* Every pattern matches "a.b" (on a plain stream every subscription
     * gets every event anyway). */
    static const char *const patterns[] = {"a.b", "a.*", "a.>", "*.b", NULL};
    for (int topics = 0; topics < 2; topics++) {
        for (size_t p = 0; p < sizeof patterns / sizeof patterns[0]; p++) {
            evs_stream *s;
            evs_stream_opts o = {.topics = topics, .capacity = 64};
            ASSERT_RC(evs_stream_create(&s, &o), 0);
            uint64_t base = 0, extra = 0;
            evs_sub *keep;
            ASSERT_RC(evs_subscribe(&keep, s, "a.>", count_fn, NULL, &base, NULL), 0);
            SWEEP(k) {
                evs_sub *sub = (evs_sub *)1;
                FAIL_AT(k);
                int rc = evs_subscribe(&sub, s, patterns[p], count_fn, NULL, &extra, NULL);
                END_CALL(k);
                if (rc != 0) {
                    cr_assert_eq(rc, EVS_ENOMEM, "k %ld: %s", k, evs_errname(rc));
                    cr_assert_null(sub);
                }
                /* Either way the stream routes as it should. */
                uint64_t b0 = ck_pr_load_64(&base), e0 = ck_pr_load_64(&extra);
                evs_event *ev;
                ASSERT_RC(evs_event_create(&ev, EVS_TYPE_MESSAGE, "a.b", "x", 1), 0);
                ASSERT_RC(evs_stream_publish(s, ev), 0);
                evs_event_unref(ev);
                ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
                evs_stream_stats st;
                ASSERT_RC(evs_stream_stats_get(s, &st), 0);
                cr_assert_eq(ck_pr_load_64(&base) - b0, 1, "k %ld: the old subscription", k);
                cr_assert_eq(ck_pr_load_64(&extra) - e0, rc == 0 ? 1u : 0u, "k %ld: the new one", k);
                cr_assert_eq(st.subscribers, rc == 0 ? 2u : 1u, "k %ld", k);
                if (rc == 0)
                    ASSERT_RC(evs_unsubscribe(sub), 0);
            }
            SWEPT();
            ASSERT_RC(evs_stream_destroy(s), 0);
        }
    }
}

/* The permanent subscriber sees every accepted event: `published`
 * already leaves out what the stream lost to allocation failure (counted
 * in dropped_nomem), so the two are equal. */
static void check_accounting(evs_stream *s, uint64_t *got, long k)
{
    evs_stream_stats st;
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    ASSERT_RC(evs_stream_stats_get(s, &st), 0);
    cr_assert_eq(ck_pr_load_64(got), st.published,
                 "k %ld: got %lu, published %lu, dropped_nomem %lu", k,
                 (unsigned long)ck_pr_load_64(got), (unsigned long)st.published,
                 (unsigned long)st.dropped_nomem);
}

Test(alloc, publish_is_enomem_or_accounted, .timeout = 120)
{
    const evs_stream_opts variants[] = {
        {.capacity = 64},
        {.delivery = EVS_DELIVERY_INLINE},
        {.topics = true, .capacity = 64},
        {.topics = true, .delivery = EVS_DELIVERY_INLINE},
    };
    for (size_t v = 0; v < sizeof variants / sizeof variants[0]; v++) {
        evs_stream *s, *other;
        ASSERT_RC(evs_stream_create(&s, &variants[v]), 0);
        ASSERT_RC(evs_stream_create(&other, &(evs_stream_opts){.delivery = EVS_DELIVERY_INLINE}), 0);
        uint64_t got = 0;
        evs_sub *sub;
        ASSERT_RC(evs_subscribe(&sub, s, "t.>", count_fn, NULL, &got, NULL), 0);
        for (int again = 0; again < 2; again++) {
            /* again = 1: the event was published elsewhere first, so this
             * publish makes an alias (an allocation). */
            SWEEP(k) {
                evs_event *ev;
                ASSERT_RC(evs_event_create(&ev, EVS_TYPE_MESSAGE, "t.x", "x", 1), 0);
                if (again)
                    ASSERT_RC(evs_stream_publish(other, ev), 0);
                uint64_t before = stat_published(s);
                FAIL_AT(k);
                uint64_t id = 99;
                int rc = evs_stream_publish_id(s, ev, &id);
                END_CALL(k);
                evs_event_unref(ev);
                if (rc != 0) {
                    cr_assert_eq(rc, EVS_ENOMEM, "variant %zu, k %ld: %s", v, k, evs_errname(rc));
                    cr_assert_eq(id, 0);
                    cr_assert_eq(stat_published(s), before, "a failed publish was accepted");
                }
                check_accounting(s, &got, k);
            }
            /* A first publish to a dispatcher stream allocates nothing
             * (the sweep ends at k = 0); an alias always allocates. */
            if (again)
                SWEPT();
        }
        /* Still usable. */
        evs_event *ev;
        ASSERT_RC(evs_event_create(&ev, EVS_TYPE_MESSAGE, "t.y", NULL, 0), 0);
        ASSERT_RC(evs_stream_publish(s, ev), 0);
        evs_event_unref(ev);
        check_accounting(s, &got, -1);
        ASSERT_RC(evs_stream_destroy(s), 0);
        ASSERT_RC(evs_stream_destroy(other), 0);
    }
}

/*
 * Routing with many matches, on the thread that routes. An inline
 * TopicStream builds its match list on the publisher's thread, a
 * dispatcher TopicStream on the dispatcher: each match list starts with
 * room for two and grows as matches are appended, so a failure can come
 * after the list was allocated (deliver_routed once leaked it then). The
 * window of each run spans the publish and the flush, so that the
 * dispatcher's allocations are inside it too (injection is process-wide).
 * Every event reaches all ROUTED_SUBS subscriptions or none (then it is
 * counted in dropped_nomem), and nothing leaks (LeakSanitizer).
 */
#define ROUTED_SUBS 12

Test(alloc, routed_publish_with_many_matches_is_counted_and_leaks_nothing, .timeout = 120)
{
    static const char *const patterns[ROUTED_SUBS] = {
        "r.*.b", "r.*.b", "r.*.b", "r.>", "r.>", "r.>", ">", ">", "*.*.b", "*.*.*", "r.*.*", "*.>",
    };
    const evs_stream_opts variants[] = {
        {.topics = true, .delivery = EVS_DELIVERY_INLINE},
        {.topics = true, .capacity = 64},
        {.topics = true, .capacity = 64, .topic_cache = 1},
        /* The same, with the handlers on pool workers (the last variant). */
        {.topics = true, .capacity = 64},
    };
    size_t nv = sizeof variants / sizeof variants[0];
    for (size_t v = 0; v < nv; v++) {
        evs_stream *s;
        ASSERT_RC(evs_stream_create(&s, &variants[v]), 0);
        uint64_t got = 0;
        evs_sub *subs[ROUTED_SUBS];
        evs_sub_opts so = {.max_concurrent = v == nv - 1 ? 2 : 0};
        for (int i = 0; i < ROUTED_SUBS; i++)
            ASSERT_RC(evs_subscribe(&subs[i], s, patterns[i], count_fn, NULL, &got, &so), 0);
        uint64_t publishes = 0;
        SWEEP(k) {
            /* A new subject each run, so that no run finds its route
             * cached and every one builds a match list. */
            char subj[32];
            snprintf(subj, sizeof subj, "r.a%ld.b", k);
            evs_event *ev;
            ASSERT_RC(evs_event_create(&ev, EVS_TYPE_MESSAGE, subj, "x", 1), 0);
            FAIL_AT(k);
            int rc = evs_stream_publish(s, ev);
            int frc = evs_stream_flush(s, EVS_FOREVER, NULL);
            END_CALL(k);
            evs_event_unref(ev);
            if (rc != 0) {
                cr_assert_eq(rc, EVS_ENOMEM, "variant %zu, k %ld: %s", v, k, evs_errname(rc));
            } else {
                publishes++;
            }
            ASSERT_RC(frc, 0);
            evs_stream_stats st;
            ASSERT_RC(evs_stream_stats_get(s, &st), 0);
            /* All or none: delivered to every match, or dropped, counted. */
            cr_assert_eq(ck_pr_load_64(&got), ROUTED_SUBS * (publishes - st.dropped_nomem),
                         "variant %zu, k %ld: got %lu, publishes %lu, dropped_nomem %lu", v, k,
                         (unsigned long)ck_pr_load_64(&got), (unsigned long)publishes,
                         (unsigned long)st.dropped_nomem);
        }
        SWEPT();
        /* Still usable: a cached subject and a new one both route. */
        uint64_t before = ck_pr_load_64(&got);
        for (int i = 0; i < 2; i++) {
            evs_event *ev;
            ASSERT_RC(evs_event_create(&ev, EVS_TYPE_MESSAGE, i ? "r.zz.b" : "r.a0.b", NULL, 0), 0);
            ASSERT_RC(evs_stream_publish(s, ev), 0);
            evs_event_unref(ev);
        }
        ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
        cr_assert_eq(ck_pr_load_64(&got) - before, 2 * ROUTED_SUBS, "variant %zu", v);
        for (int i = 0; i < ROUTED_SUBS; i++)
            ASSERT_RC(evs_unsubscribe(subs[i]), 0);
        ASSERT_RC(evs_stream_destroy(s), 0);
    }
}

static int topic_count_fn(const char *subject, const evs_topic_stats *st, void *user)
{
    (void)subject;
    (void)st;
    (*(size_t *)user)++;
    return 0;
}

/* evs_broadcast (aliases for every stream after the first) and
 * evs_stream_topics (a snapshot list): each failure is that stream's
 * EVS_ENOMEM, the others go on, and the counts stay exact. */
Test(alloc, broadcast_and_topic_listing_are_enomem_or_whole, .timeout = 120)
{
    enum { NS = 3 };
    evs_stream *ss[NS];
    uint64_t got[NS] = {0};
    evs_sub *subs[NS];
    for (int i = 0; i < NS; i++) {
        evs_stream_opts o = {.topics = i != 1, .delivery = i == 2 ? EVS_DELIVERY_INLINE : 0,
                             .capacity = 64};
        ASSERT_RC(evs_stream_create(&ss[i], &o), 0);
        ASSERT_RC(evs_subscribe(&subs[i], ss[i], "b.>", count_fn, NULL, &got[i], NULL), 0);
    }
    uint64_t accepted[NS] = {0};
    SWEEP(k) {
        char subj[32];
        snprintf(subj, sizeof subj, "b.s%ld", k);
        evs_event *ev;
        ASSERT_RC(evs_event_create(&ev, EVS_TYPE_MESSAGE, subj, "x", 1), 0);
        int results[NS];
        FAIL_AT(k);
        int n = evs_broadcast(ss, NS, ev, results);
        for (int i = 0; i < NS; i++)
            ASSERT_RC(evs_stream_flush(ss[i], EVS_FOREVER, NULL), 0);
        END_CALL(k);
        evs_event_unref(ev);
        int ok = 0;
        for (int i = 0; i < NS; i++) {
            if (results[i] == 0) {
                ok++;
                accepted[i]++;
            } else {
                cr_assert_eq(results[i], EVS_ENOMEM, "k %ld, stream %d: %s", k, i,
                             evs_errname(results[i]));
            }
            evs_stream_stats st;
            ASSERT_RC(evs_stream_stats_get(ss[i], &st), 0);
            cr_assert_eq(got[i], accepted[i] - st.dropped_nomem, "k %ld, stream %d", k, i);
        }
        cr_assert_eq(n, ok, "k %ld", k);
    }
    SWEPT();
    for (int i = 0; i < NS; i += 2) {
        size_t want = 0;
        ASSERT_RC(evs_stream_topics(ss[i], topic_count_fn, &want), 0);
        cr_assert_gt(want, 0);
        SWEEP(k) {
            size_t seen = 0;
            FAIL_AT(k);
            int rc = evs_stream_topics(ss[i], topic_count_fn, &seen);
            END_CALL(k);
            if (rc != 0) {
                cr_assert_eq(rc, EVS_ENOMEM, "k %ld: %s", k, evs_errname(rc));
                cr_assert_eq(seen, 0, "k %ld: a failed listing called fn", k);
            } else {
                cr_assert_eq(seen, want, "k %ld", k);
            }
        }
        SWEPT();
    }
    for (int i = 0; i < NS; i++)
        ASSERT_RC(evs_stream_destroy(ss[i]), 0);
}

Test(alloc, event_make_and_setters_are_enomem_with_nothing_changed)
{
    static const char *const meta[] = {"region", "eu", "tier", "gold", NULL};
    SWEEP(k) {
        evs_event *ev = (evs_event *)1;
        FAIL_AT(k);
        int rc = evs_event_make(&ev, "Purchase", "orders.eu", "{\"sku\":7,\"tags\":[1,2]}", meta);
        END_CALL(k);
        if (rc != 0) {
            cr_assert_eq(rc, EVS_ENOMEM, "k %ld: %s", k, evs_errname(rc));
            cr_assert_null(ev);
            continue;
        }
        cr_assert_str_eq(evs_event_type_name(ev), "Purchase");
        evs_event_unref(ev);
    }
    SWEPT();
    evs_event *ev;
    ASSERT_RC(evs_event_make(&ev, "Purchase", "orders.eu", "{}", meta), 0);
    SWEEP(k) {
        FAIL_AT(k);
        int rc = evs_event_meta_set_str(ev, "region", "us");
        END_CALL(k);
        const char *v;
        size_t n;
        ASSERT_RC(evs_event_meta_get_str(ev, "region", &v, &n), 0);
        if (rc != 0) {
            cr_assert_eq(rc, EVS_ENOMEM, "k %ld: %s", k, evs_errname(rc));
            cr_assert_eq(n, 2);
            cr_assert_eq(memcmp(v, "eu", 2), 0, "a failed set changed the value");
            continue;
        }
        cr_assert_eq(memcmp(v, "us", 2), 0);
        ASSERT_RC(evs_event_meta_set_str(ev, "region", "eu"), 0);
    }
    SWEPT();
    SWEEP(k) {
        FAIL_AT(k);
        int rc = evs_event_set_type_name(ev, "Refund");
        END_CALL(k);
        if (rc != 0) {
            cr_assert_eq(rc, EVS_ENOMEM);
            cr_assert_str_eq(evs_event_type_name(ev), "Purchase");
        }
    }
    SWEPT();
    evs_event_unref(ev);
}

/*
 * Valid JSON that makes jansson allocate in every way it does: strings
 * longer than its first buffer, an object big enough to rehash, arrays
 * that grow, nesting. jansson 2.14 reports its own allocation failures as
 * ordinary parse errors, so before jansson allocated through the library
 * these gave EVS_EBADMSG (or the sweep never reached jansson at all).
 */
static const char *const valid_json[] = {
    "{\"sku\":7,\"tags\":[1,2]}",
    "{\"k0\":0,\"k1\":1,\"k2\":2,\"k3\":3,\"k4\":4,\"k5\":5,\"k6\":6,\"k7\":7,\"k8\":8,"
    "\"k9\":9,\"ka\":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17],\"kb\":{\"n\":{\"m\":[]}},"
    "\"long\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\\n\"}",
    "[\"x\",1.5,true,null,{\"a\":\"b\\u0000\\u00e9\"}]",
};

Test(alloc, json_data_is_enomem_never_ebadmsg, .timeout = 120)
{
    for (size_t d = 0; d < sizeof valid_json / sizeof valid_json[0]; d++) {
        const char *doc = valid_json[d];
        SWEEP(k) {
            evs_event *ev = (evs_event *)1;
            FAIL_AT(k);
            int rc = evs_event_make(&ev, "Purchase", "orders.eu", doc, NULL);
            END_CALL(k);
            if (rc != 0) {
                cr_assert_eq(rc, EVS_ENOMEM, "doc %zu, k %ld: %s", d, k, evs_errname(rc));
                cr_assert_null(ev);
                continue;
            }
            cr_assert_eq(evs_event_content(ev), EVS_CONTENT_MSGPACK);
            evs_event_unref(ev);
        }
        SWEPT();
        evs_event *ev;
        ASSERT_RC(evs_event_create(&ev, EVS_TYPE_MESSAGE, "t", doc, strlen(doc)), 0);
        SWEEP(k) {
            FAIL_AT(k);
            int rc = evs_event_set_content(ev, EVS_CONTENT_JSON);
            END_CALL(k);
            if (rc != 0) {
                cr_assert_eq(rc, EVS_ENOMEM, "doc %zu, k %ld: %s", d, k, evs_errname(rc));
                cr_assert_eq(evs_event_content(ev), EVS_CONTENT_BINARY, "a failed set changed it");
                continue;
            }
            cr_assert_eq(evs_event_content(ev), EVS_CONTENT_JSON);
            ASSERT_RC(evs_event_set_content(ev, EVS_CONTENT_BINARY), 0);
        }
        SWEPT();
        /* JSON content is validated again when a wire-format event is
         * decoded. */
        ASSERT_RC(evs_event_set_content(ev, EVS_CONTENT_JSON), 0);
        evs_buf wire = {0};
        ASSERT_RC(evs_event_to_msgpack(ev, &wire), 0);
        SWEEP(k) {
            evs_event *got = (evs_event *)1;
            FAIL_AT(k);
            int rc = evs_event_from_msgpack(&got, wire.data, wire.len);
            END_CALL(k);
            if (rc != 0) {
                cr_assert_eq(rc, EVS_ENOMEM, "doc %zu, k %ld: %s", d, k, evs_errname(rc));
                cr_assert_null(got);
                continue;
            }
            cr_assert_eq(evs_event_content(got), EVS_CONTENT_JSON);
            evs_event_unref(got);
        }
        SWEPT();
        evs_buf_free(&wire);
        evs_event_unref(ev);
    }
}

/* ------------------------------------------------------------------ */
/* Encoding and decoding                                               */
/* ------------------------------------------------------------------ */

/* A published event with a custom type, msgpack data and metadata. */
static evs_event *rich_event(void)
{
    static const char *const meta[] = {"region", "eu", "note", "caf\xc3\xa9\nline", NULL};
    evs_event *ev;
    ASSERT_RC(evs_event_make(&ev, "Purchase", "orders.eu",
                             "{\"sku\":7,\"s\":\"a\\nb\",\"f\":1.5,\"l\":[true,null,{\"k\":\"v\"}]}",
                             meta),
              0);
    evs_stream *s;
    ASSERT_RC(evs_stream_create(&s, &(evs_stream_opts){.delivery = EVS_DELIVERY_INLINE}), 0);
    ASSERT_RC(evs_stream_publish(s, ev), 0); /* gives it an id */
    ASSERT_RC(evs_stream_destroy(s), 0);
    return ev;
}

/* Run an appending encoder under the sweep: on failure the buffer keeps
 * exactly what it held; on success it holds `want` after that. */
#define ENCODE_SWEEP(call_with_buf, want_len)                                      \
    SWEEP(k) {                                                                     \
        evs_buf b = {0};                                                           \
        ASSERT_RC(evs_buf_append(&b, "keep", 4), 0);                              \
        FAIL_AT(k);                                                                \
        int rc = (call_with_buf);                                                  \
        END_CALL(k);                                                               \
        if (rc != 0) {                                                             \
            cr_assert_eq(rc, EVS_ENOMEM, "k %ld: %s", k, evs_errname(rc));         \
            cr_assert_eq(b.len, 4, "k %ld: the buffer changed", k);                \
            cr_assert_eq(memcmp(b.data, "keep", 5), 0);                            \
        } else {                                                                   \
            cr_assert_eq(b.len, 4 + (want_len), "k %ld", k);                       \
        }                                                                          \
        evs_buf_free(&b);                                                          \
    }                                                                              \
    SWEPT()

Test(alloc, encoders_are_enomem_with_the_buffer_unchanged)
{
    evs_event *ev = rich_event();
    evs_buf want = {0};
    ASSERT_RC(evs_event_to_msgpack(ev, &want), 0);
    size_t mp_len = want.len;
    evs_buf_reset(&want);
    ASSERT_RC(evs_event_to_json(ev, &want), 0);
    size_t json_len = want.len;
    evs_buf_reset(&want);
    ASSERT_RC(evs_sse_encode_buf(ev, NULL, &want), 0);
    size_t sse_len = want.len;
    evs_buf_free(&want);

    ENCODE_SWEEP(evs_event_to_msgpack(ev, &b), mp_len);
    ENCODE_SWEEP(evs_event_to_json(ev, &b), json_len);
    ENCODE_SWEEP(evs_sse_encode_buf(ev, NULL, &b), sse_len);
    /* Long enough that the buffer must grow. */
    char text[300];
    memset(text, 'h', sizeof text);
    text[100] = '\n';
    ENCODE_SWEEP(evs_sse_comment(&b, text, sizeof text), 2 + 100 + 1 + 2 + 199 + 1 + 1);

    /* The caller's-buffer form allocates only msgpack's JSON scratch. */
    char frame[1024];
    SWEEP(k) {
        size_t len = 1;
        FAIL_AT(k);
        int rc = evs_sse_encode(ev, NULL, frame, sizeof frame, &len);
        END_CALL(k);
        if (rc != 0) {
            cr_assert_eq(rc, EVS_ENOMEM, "k %ld: %s", k, evs_errname(rc));
            cr_assert_eq(len, 0);
        } else {
            cr_assert_eq(len, sse_len);
        }
    }
    SWEPT();
    evs_event_unref(ev);
}

Test(alloc, decode_is_enomem_with_no_event)
{
    evs_event *ev = rich_event();
    evs_buf wire = {0};
    ASSERT_RC(evs_event_to_msgpack(ev, &wire), 0);
    SWEEP(k) {
        evs_event *got = (evs_event *)1;
        FAIL_AT(k);
        int rc = evs_event_from_msgpack(&got, wire.data, wire.len);
        END_CALL(k);
        if (rc != 0) {
            cr_assert_eq(rc, EVS_ENOMEM, "k %ld: %s", k, evs_errname(rc));
            cr_assert_null(got);
            continue;
        }
        cr_assert_eq(evs_event_id(got), evs_event_id(ev));
        cr_assert_str_eq(evs_event_type_name(got), "Purchase");
        evs_event_unref(got);
    }
    SWEPT();
    evs_buf_free(&wire);
    evs_event_unref(ev);
}

/* ------------------------------------------------------------------ */
/* Topic index and topic table growth                                  */
/* ------------------------------------------------------------------ */

#define NPAT 96

static void pattern_of(int i, char *buf, size_t cap)
{
    /* Literal subjects in many distinct tokens (the exact table and the
     * tree's literal tables grow), and wildcards over them. */
    switch (i % 3) {
    case 0: snprintf(buf, cap, "svc%d.ev%d", i, i % 7); break;
    case 1: snprintf(buf, cap, "svc%d.*", i); break;
    default: snprintf(buf, cap, "*.ev%d.>", i); break;
    }
}

Test(alloc, topic_index_growth_is_enomem_and_unwinds, .timeout = 300)
{
    evs_stream *s;
    evs_stream_opts o = {.topics = true, .delivery = EVS_DELIVERY_INLINE};
    ASSERT_RC(evs_stream_create(&s, &o), 0);
    static uint64_t hits[NPAT];
    static evs_sub *subs[NPAT];
    SWEEP(k) {
        /* One unit: subscribe all NPAT; the k-th allocation among them fails. */
        int rc = 0, made = 0;
        FAIL_AT(k);
        for (; made < NPAT; made++) {
            char p[64];
            pattern_of(made, p, sizeof p);
            subs[made] = (evs_sub *)1;
            rc = evs_subscribe(&subs[made], s, p, count_fn, NULL, &hits[made], NULL);
            if (rc != 0)
                break;
        }
        END_CALL(k);
        if (rc != 0) {
            cr_assert_eq(rc, EVS_ENOMEM, "k %ld: %s", k, evs_errname(rc));
            cr_assert_null(subs[made]);
        }
        /* Route one event per literal subject: exactly the live
         * subscriptions whose patterns match receive it. */
        for (int i = 0; i < NPAT; i += 3) {
            char subj[64];
            pattern_of(i, subj, sizeof subj);
            memset(hits, 0, sizeof hits);
            evs_event *ev;
            ASSERT_RC(evs_event_create(&ev, EVS_TYPE_MESSAGE, subj, NULL, 0), 0);
            ASSERT_RC(evs_stream_publish(s, ev), 0);
            evs_event_unref(ev);
            for (int j = 0; j < made; j++) {
                char p[64];
                pattern_of(j, p, sizeof p);
                bool want = evs__subject_matches(subj, strlen(subj), p, strlen(p));
                cr_assert_eq(hits[j], want, "k %ld: %s -> %s", k, subj, p);
            }
        }
        for (int j = 0; j < made; j++)
            ASSERT_RC(evs_unsubscribe(subs[j]), 0);
    }
    SWEPT();
    /* The topic table grows as new subjects are published: a failure there
     * leaves the subject routed but unlisted (stats.topics_untracked); a
     * failure to route is counted in dropped_nomem. Nothing is silent. */
    uint64_t all = 0, publishes = 0;
    evs_sub *every;
    ASSERT_RC(evs_subscribe(&every, s, ">", count_fn, NULL, &all, NULL), 0);
    SWEEP(k) {
        char subj[64];
        snprintf(subj, sizeof subj, "new.subject%ld", k);
        evs_event *ev;
        ASSERT_RC(evs_event_create(&ev, EVS_TYPE_MESSAGE, subj, NULL, 0), 0);
        FAIL_AT(k);
        int rc = evs_stream_publish(s, ev);
        END_CALL(k);
        evs_event_unref(ev);
        cr_assert_eq(rc, 0, "k %ld: %s", k, evs_errname(rc));
        publishes++;
        evs_stream_stats st;
        ASSERT_RC(evs_stream_stats_get(s, &st), 0);
        cr_assert_eq(all + st.dropped_nomem, publishes, "k %ld", k);
    }
    SWEPT();
    ASSERT_RC(evs_stream_destroy(s), 0);
}

/* ------------------------------------------------------------------ */
/* SSE, where, batching, parser                                        */
/* ------------------------------------------------------------------ */

Test(alloc, sse_connect_is_enomem_and_other_clients_go_on, .timeout = 120)
{
    evs_stream *s;
    evs_stream_opts o = {.topics = true, .capacity = 64, .history = 16};
    ASSERT_RC(evs_stream_create(&s, &o), 0);
    evs_sse *sse;
    evs_sse_stream_opts so = {.heartbeat_ms = EVS_SSE_NO_HEARTBEAT, .slow = EVS_SSE_SLOW_DROP_OLDEST};
    ASSERT_RC(evs_sse_create(&sse, s, &so), 0);
    evs_sse_client *keep;
    ASSERT_RC(evs_sse_connect(&keep, sse, NULL), 0);
    for (int i = 0; i < 5; i++) {
        evs_event *ev;
        ASSERT_RC(evs_event_make(&ev, NULL, i % 2 ? "a.b" : "c.d", "[1]", NULL), 0);
        ASSERT_RC(evs_stream_publish(s, ev), 0);
        evs_event_unref(ev);
    }
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    const char *pats[] = {"a.*", "c.>"};
    evs_sse_client_opts co = {.patterns = pats, .npatterns = 2, .last_event_id = "1"};
    char buf[4096];
    SWEEP(k) {
        evs_sse_stats before, after;
        ASSERT_RC(evs_sse_stats_get(sse, &before), 0);
        evs_sse_client *c = (evs_sse_client *)1;
        FAIL_AT(k);
        int rc = evs_sse_connect(&c, sse, &co);
        END_CALL(k);
        ASSERT_RC(evs_sse_stats_get(sse, &after), 0);
        if (rc != 0) {
            cr_assert_eq(rc, EVS_ENOMEM, "k %ld: %s", k, evs_errname(rc));
            cr_assert_null(c);
            cr_assert_eq(after.clients, before.clients, "k %ld: a failed client is counted", k);
            continue;
        }
        /* The replay: events 2..5, whole frames (a frame that could not be
         * rendered would show as a skipped comment instead). */
        int n = evs_sse_read(c, buf, sizeof buf, 0);
        cr_assert_gt(n, 0, "k %ld: %s", k, evs_errname(n));
        ASSERT_RC(evs_sse_disconnect(c), 0);
    }
    SWEPT();
    /* The first client still gets what is published. */
    while (evs_sse_read(keep, buf, sizeof buf, 0) > 0)
        ;
    evs_event *ev;
    ASSERT_RC(evs_event_make(&ev, NULL, "a.b", "[2]", NULL), 0);
    ASSERT_RC(evs_stream_publish(s, ev), 0);
    evs_event_unref(ev);
    int n = evs_sse_read(keep, buf, sizeof buf, 5000);
    cr_assert_gt(n, 0, "%s", evs_errname(n));
    ASSERT_RC(evs_sse_disconnect(keep), 0);
    ASSERT_RC(evs_sse_destroy(sse), 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
}

Test(alloc, where_compile_is_enomem_with_a_message)
{
    static const char expr[] =
        "data[\"user\"][\"plan\"] == \"pro\" and metadata[\"region\"] in [\"eu\", \"us\", 'x'] "
        "or not (type == \"Purchase\" and defined(data.coupon)) or data.items[3] >= 1.5e3";
    SWEEP(k) {
        evs_where *w = (evs_where *)1;
        evs_where_error err;
        FAIL_AT(k);
        int rc = evs_where_compile(&w, expr, sizeof expr - 1, &err);
        END_CALL(k);
        if (rc != 0) {
            cr_assert_eq(rc, EVS_ENOMEM, "k %ld: %s (%s)", k, evs_errname(rc), err.msg);
            cr_assert_null(w);
            cr_assert_str_eq(err.msg, "out of memory");
            continue;
        }
        evs_where_destroy(w);
    }
    SWEPT();
}

static int batch_fn(const evs_event *const *events, size_t n, void *user)
{
    (void)events;
    ck_pr_add_64(user, n);
    return 0;
}

Test(alloc, batch_subscribe_is_enomem_and_subscribes_nothing, .timeout = 120)
{
    evs_stream *s;
    ASSERT_RC(evs_stream_create(&s, &(evs_stream_opts){.capacity = 64}), 0);
    uint64_t got = 0;
    evs_batch_opts bo = {.max_events = 4, .flush_ms = 60000};
    SWEEP(k) {
        evs_batcher *b = (evs_batcher *)1;
        evs_stream_stats st;
        FAIL_AT(k);
        int rc = evs_batch_subscribe(&b, s, NULL, batch_fn, NULL, &got, &bo);
        END_CALL(k);
        ASSERT_RC(evs_stream_stats_get(s, &st), 0);
        if (rc != 0) {
            cr_assert_eq(rc, EVS_ENOMEM, "k %ld: %s", k, evs_errname(rc));
            cr_assert_null(b);
            cr_assert_eq(st.subscribers, 0, "k %ld: a failed batcher is subscribed", k);
            continue;
        }
        cr_assert_eq(st.subscribers, 1);
        uint64_t before = ck_pr_load_64(&got);
        evs_event *ev;
        ASSERT_RC(evs_event_create(&ev, EVS_TYPE_MESSAGE, "t", "x", 1), 0);
        ASSERT_RC(evs_stream_publish(s, ev), 0);
        evs_event_unref(ev);
        ASSERT_RC(evs_batch_stop(b), 0); /* hands over the remainder */
        cr_assert_eq(ck_pr_load_64(&got) - before, 1, "k %ld", k);
    }
    SWEPT();
    ASSERT_RC(evs_stream_destroy(s), 0);
}

/* Collects messages' data into a fixed array (never the library's
 * allocator, which is failing on purpose). */
typedef struct text {
    char s[256];
    size_t n;
} text;

static int collect(const evs_sse_message *m, void *user)
{
    text *t = user;
    cr_assert_lt(t->n + m->data_len + 1, sizeof t->s);
    memcpy(t->s + t->n, m->data, m->data_len);
    t->n += m->data_len;
    t->s[t->n++] = '|';
    t->s[t->n] = '\0';
    return 0;
}

Test(alloc, sse_parser_feed_is_enomem_and_resumes_where_it_stopped)
{
    static const char stream[] = "id: 1\nevent: a\ndata: one\ndata: two\n\nretry: 5\n"
                                 "data: three\n\n: c\ndata: four";
    static const char rest[] = "\n\n";
    SWEEP(k) {
        evs_sse_parser *p;
        ASSERT_RC(evs_sse_parser_create(&p, NULL), 0);
        text got = {.n = 0};
        /* Feed in two pieces (the second completes a line split across
         * feeds), each retried from bytes + used after ENOMEM. */
        const char *pieces[2] = {stream, rest};
        size_t lens[2] = {sizeof stream - 1, sizeof rest - 1};
        int failures = 0;
        FAIL_AT(k);
        for (int i = 0; i < 2; i++) {
            size_t off = 0;
            while (off < lens[i]) {
                size_t used;
                int rc = evs_sse_parser_feed(p, pieces[i] + off, lens[i] - off, &used, collect,
                                             &got);
                if (rc != 0) {
                    cr_assert_eq(rc, EVS_ENOMEM, "k %ld: %s", k, evs_errname(rc));
                    failures++;
                }
                off += used;
            }
        }
        END_CALL(k);
        cr_assert_leq(failures, 1);
        cr_assert_str_eq(got.s, "one\ntwo|three|four|", "k %ld", k);
        evs_sse_parser_destroy(p);
    }
    SWEPT();
}
