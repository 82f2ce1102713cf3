/*
 * Limits (evs_limits_set/get) and hostile input: what every check does
 * at the default limits, at lowered and raised ones, and with input made
 * to hurt: huge counts and lengths, deep nesting, 10 MB subjects, invalid
 * UTF-8 and NUL bytes. Each must give a clear error (or a faithful
 * result), use memory bounded by the limits rather than by what the
 * input claims, and never crash. "Bounded" is measured with the
 * allocator hook: evs__alloc_largest gives the largest single request
 * made while injection is armed (armed here with a countdown that never
 * reaches zero).
 *
 * Criterion runs each test in its own process, so limits set by one test
 * never reach another.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "evs_test.h"
#include "json.h"
#include "subject.h"

#define ARM() evs__alloc_fail_after(1L << 40)
#define DISARM() evs__alloc_fail_after(-1)

/* A string of n copies of c, NUL-terminated (plain malloc). */
static char *repeat(char c, size_t n)
{
    char *s = malloc(n + 1);
    cr_assert_not_null(s);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

/* ---- msgpack builders (test-side, plain malloc) -------------------- */

typedef struct mp {
    uint8_t *p;
    size_t n, cap;
} mp;

static void mp_raw(mp *m, const void *s, size_t n)
{
    if (m->n + n > m->cap) {
        m->cap = (m->n + n) * 2 + 64;
        m->p = realloc(m->p, m->cap);
        cr_assert_not_null(m->p);
    }
    memcpy(m->p + m->n, s, n);
    m->n += n;
}

static void mp_byte(mp *m, uint8_t b) { mp_raw(m, &b, 1); }

static void mp_be32(mp *m, uint8_t tag, uint32_t v)
{
    uint8_t b[5] = {tag, (uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    mp_raw(m, b, 5);
}

static void mp_str(mp *m, const void *s, size_t n)
{
    mp_be32(m, 0xdb, (uint32_t)n);
    mp_raw(m, s, n);
}

static void mp_cstr(mp *m, const char *s) { mp_str(m, s, strlen(s)); }

/* A wire-format event: the seven keys with the given topic, content name
 * and raw (already encoded) data value. */
static void mp_event(mp *m, const void *topic, size_t tlen, const char *content,
                     const void *data, size_t dlen)
{
    mp_byte(m, 0x86); /* id, type, topic, content, data, ts (no meta) */
    mp_cstr(m, "id");
    mp_byte(m, 0x07);
    mp_cstr(m, "type");
    mp_cstr(m, "message");
    mp_cstr(m, "topic");
    mp_str(m, topic, tlen);
    mp_cstr(m, "content");
    mp_cstr(m, content);
    mp_cstr(m, "data");
    mp_raw(m, data, dlen);
    mp_cstr(m, "ts");
    mp_byte(m, 0x00);
}

/* A bin header and body. */
static void mp_bin(mp *m, const void *s, size_t n)
{
    mp_be32(m, 0xc6, (uint32_t)n);
    mp_raw(m, s, n);
}

static int decode(const mp *m, evs_event **ev) { return evs_event_from_msgpack(ev, m->p, m->n); }

/* ------------------------------------------------------------------ */
/* evs_limits_set / evs_limits_get                                     */
/* ------------------------------------------------------------------ */

Test(limits, defaults_are_the_compile_time_values)
{
    evs_limits l;
    ASSERT_RC(evs_limits_get(&l), 0);
    cr_assert_eq(l.max_topic, EVS_MAX_TOPIC);
    cr_assert_eq(l.max_type_name, EVS_MAX_TYPE_NAME);
    cr_assert_eq(l.max_data, EVS_MAX_DATA);
    cr_assert_eq(l.max_meta, EVS_MAX_META);
    cr_assert_eq(l.max_depth, EVS_MAX_DEPTH);
    ASSERT_RC(evs_limits_get(NULL), EVS_EINVAL);
}

Test(limits, zero_means_default_and_null_restores_every_default)
{
    evs_limits set = {.max_topic = 10, .max_depth = 5}, got;
    ASSERT_RC(evs_limits_set(&set), 0);
    ASSERT_RC(evs_limits_get(&got), 0);
    cr_assert_eq(got.max_topic, 10);
    cr_assert_eq(got.max_depth, 5);
    cr_assert_eq(got.max_data, EVS_MAX_DATA, "zero is the default");
    ASSERT_RC(evs_limits_set(NULL), 0);
    ASSERT_RC(evs_limits_get(&got), 0);
    cr_assert_eq(got.max_topic, EVS_MAX_TOPIC);
    cr_assert_eq(got.max_depth, EVS_MAX_DEPTH);
}

Test(limits, a_value_over_its_ceiling_is_einval_and_changes_nothing)
{
    evs_limits ok = {.max_topic = 100}, got;
    ASSERT_RC(evs_limits_set(&ok), 0);
    const evs_limits bad[] = {
        {.max_topic = EVS_LIMITS_TOPIC_CEILING + 1},
        {.max_type_name = EVS_LIMITS_TYPE_NAME_CEILING + 1},
        {.max_data = EVS_LIMITS_DATA_CEILING + 1},
        {.max_meta = EVS_LIMITS_DATA_CEILING + 1},
        {.max_depth = EVS_LIMITS_DEPTH_CEILING + 1},
        {.max_topic = 50, .max_depth = 1000}, /* one bad field spoils all */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ASSERT_RC(evs_limits_set(&bad[i]), EVS_EINVAL);
        ASSERT_RC(evs_limits_get(&got), 0);
        cr_assert_eq(got.max_topic, 100, "row %zu changed the limits", i);
        cr_assert_eq(got.max_depth, EVS_MAX_DEPTH);
    }
    const evs_limits top = {EVS_LIMITS_TOPIC_CEILING, EVS_LIMITS_TYPE_NAME_CEILING,
                            EVS_LIMITS_DATA_CEILING, EVS_LIMITS_DATA_CEILING,
                            EVS_LIMITS_DEPTH_CEILING};
    ASSERT_RC(evs_limits_set(&top), 0);
}

static int count_fn(const evs_event *ev, void *user)
{
    (void)ev;
    ck_pr_inc_int(user);
    return 0;
}

Test(limits, a_lowered_topic_limit_applies_to_topics_subjects_and_patterns)
{
    evs_limits l = {.max_topic = 8};
    ASSERT_RC(evs_limits_set(&l), 0);
    evs_event *ev;
    ASSERT_RC(evs_event_create(&ev, EVS_TYPE_MESSAGE, "abcd.efg", NULL, 0), 0);
    evs_event *too;
    ASSERT_RC(evs_event_create(&too, EVS_TYPE_MESSAGE, "abcd.efgh", NULL, 0), EVS_ETOOBIG);
    cr_assert_null(too);
    ASSERT_RC(evs__subject_validate("abcd.efgh", 9), EVS_EINVAL);
    ASSERT_RC(evs__pattern_validate("abcd.*.>", 8), 0);
    ASSERT_RC(evs__pattern_validate("abcd.*.*", 9), EVS_EINVAL);

    /* Patterns, on a TopicStream and on a plain stream alike. */
    for (int topics = 0; topics < 2; topics++) {
        evs_stream *s;
        evs_stream_opts o = {.topics = topics, .delivery = EVS_DELIVERY_INLINE};
        ASSERT_RC(evs_stream_create(&s, &o), 0);
        evs_sub *sub;
        int n = 0;
        ASSERT_RC(evs_subscribe(&sub, s, "abcd.efg.", count_fn, NULL, &n, NULL), EVS_EINVAL);
        ASSERT_RC(evs_subscribe(&sub, s, "abcd.efg", count_fn, NULL, &n, NULL), 0);
        ASSERT_RC(evs_stream_publish(s, ev), 0);
        cr_assert_eq(n, 1);
        evs_stream_destroy(s);
    }

    /* Decoding: a 9-byte topic is over the limit. */
    mp m = {0};
    mp_event(&m, "abcd.efgh", 9, "binary", "\xc4\x00", 2);
    evs_event *dec;
    ASSERT_RC(decode(&m, &dec), EVS_ETOOBIG);
    free(m.p);
    evs_event_unref(ev);
}

Test(limits, a_raised_topic_limit_carries_long_subjects_end_to_end)
{
    evs_limits l = {.max_topic = 20000};
    ASSERT_RC(evs_limits_set(&l), 0);
    /* 12000 bytes: "t.t.t...", past the default 4096. */
    char *subj = repeat('t', 12000);
    for (size_t i = 1; i < 12000; i += 2)
        subj[i] = '.';
    subj[11999] = 'x';
    evs_stream *s;
    evs_stream_opts o = {.topics = true};
    ASSERT_RC(evs_stream_create(&s, &o), 0);
    evs_sub *sub;
    int n = 0;
    ASSERT_RC(evs_subscribe(&sub, s, subj, count_fn, NULL, &n, NULL), 0);
    evs_event *ev;
    ASSERT_RC(evs_event_create(&ev, EVS_TYPE_MESSAGE, subj, "x", 1), 0);
    ASSERT_RC(evs_stream_publish(s, ev), 0);
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    cr_assert_eq(ck_pr_load_int(&n), 1);
    /* And through the wire format. */
    evs_buf b = {0};
    ASSERT_RC(evs_event_to_msgpack(ev, &b), 0);
    evs_event *back;
    ASSERT_RC(evs_event_from_msgpack(&back, b.data, b.len), 0);
    cr_assert_str_eq(evs_event_topic(back), subj);
    evs_event_unref(back);
    evs_buf_free(&b);
    evs_event_unref(ev);
    evs_stream_destroy(s);
    free(subj);
}

Test(limits, data_meta_and_type_name_limits)
{
    evs_limits l = {.max_data = 100, .max_meta = 32, .max_type_name = 4};
    ASSERT_RC(evs_limits_set(&l), 0);
    static char data[101];
    evs_event *ev;
    ASSERT_RC(evs_event_create(&ev, EVS_TYPE_MESSAGE, "t", data, 101), EVS_ETOOBIG);
    ASSERT_RC(evs_event_create(&ev, EVS_TYPE_MESSAGE, "t", data, 100), 0);
    ASSERT_RC(evs_event_set_type_name(ev, "Sign"), 0);
    ASSERT_RC(evs_event_set_type_name(ev, "Signup"), EVS_ETOOBIG);
    ASSERT_RC(evs_event_set_type_name(ev, "disconnect"), 0); /* built-in: no limit */
    cr_assert_eq(evs_event_type(ev), EVS_TYPE_DISCONNECT);
    ASSERT_RC(evs_event_meta_set_str(ev, "k", "0123456789"), 0);
    ASSERT_RC(evs_event_meta_set_str(ev, "k2", "0123456789abcdef0123"), EVS_ETOOBIG);
    ASSERT_RC(evs_event_meta_set_raw(ev, "k3", "\xa3" "abc", 4), 0);
    ASSERT_RC(evs_event_meta_set_str(ev, "k4", "0123456789abcdef0123456789abcdef!"),
              EVS_ETOOBIG);
    evs_event_unref(ev);

    mp m = {0};
    mp_bin(&m, data, 101);
    mp w = {0};
    mp_event(&w, "t", 1, "binary", m.p, m.n);
    evs_event *dec;
    ASSERT_RC(decode(&w, &dec), EVS_ETOOBIG);
    free(m.p);
    free(w.p);
}

Test(limits, the_depth_limit_applies_to_json_and_msgpack_and_can_be_raised)
{
    evs_limits l = {.max_depth = 3};
    ASSERT_RC(evs_limits_set(&l), 0);
    evs_event *ev;
    ASSERT_RC(evs_event_make(&ev, NULL, "t", "[[[1]]]", NULL), 0);
    evs_event_unref(ev);
    ASSERT_RC(evs_event_make(&ev, NULL, "t", "[[[[1]]]]", NULL), EVS_ETOOBIG);
    ASSERT_RC(evs_event_create(&ev, EVS_TYPE_MESSAGE, "t", "\x91\x91\x91\x91\x01", 5), 0);
    ASSERT_RC(evs_event_set_content(ev, EVS_CONTENT_MSGPACK), EVS_ETOOBIG);
    ASSERT_RC(evs_event_meta_set_raw(ev, "k", "\x91\x91\x91\x91\x01", 5), EVS_ETOOBIG);
    ASSERT_RC(evs_event_meta_set_raw(ev, "k", "\x91\x91\x91\x01", 4), 0);
    evs_event_unref(ev);

    /* Raised past the default 24: 40 levels go in, out and back. */
    l.max_depth = 40;
    ASSERT_RC(evs_limits_set(&l), 0);
    char json[100];
    memset(json, '[', 40);
    json[40] = '1';
    memset(json + 41, ']', 40);
    json[81] = '\0';
    ASSERT_RC(evs_event_make(&ev, NULL, "t", json, NULL), 0);
    evs_buf b = {0}, j = {0};
    ASSERT_RC(evs_event_to_json(ev, &j), 0);
    cr_assert_not_null(strstr(j.data, json));
    ASSERT_RC(evs_event_to_msgpack(ev, &b), 0);
    evs_event *back;
    ASSERT_RC(evs_event_from_msgpack(&back, b.data, b.len), 0);
    evs_event_unref(back);
    /* Lowered again: the event exists and still renders, but its own
     * encoding no longer decodes. */
    l.max_depth = 0;
    ASSERT_RC(evs_limits_set(&l), 0);
    ASSERT_RC(evs_event_from_msgpack(&back, b.data, b.len), EVS_ETOOBIG);
    evs_buf_reset(&j);
    ASSERT_RC(evs_event_to_json(ev, &j), 0);
    evs_buf_free(&b);
    evs_buf_free(&j);
    evs_event_unref(ev);
}

/* ------------------------------------------------------------------ */
/* Hostile input                                                       */
/* ------------------------------------------------------------------ */

#define TEN_MB ((size_t)10 << 20)

Test(hostile, a_10_mb_subject_is_refused_without_being_copied, .timeout = 60)
{
    char *big = repeat('a', TEN_MB);
    big[5] = '.';
    ARM();
    evs_event *ev;
    ASSERT_RC(evs_event_create(&ev, EVS_TYPE_MESSAGE, big, NULL, 0), EVS_ETOOBIG);
    cr_assert_null(ev);
    ASSERT_RC(evs__subject_validate(big, TEN_MB), EVS_EINVAL);
    ASSERT_RC(evs__pattern_validate(big, TEN_MB), EVS_EINVAL);
    cr_assert_eq(evs__alloc_largest(), 0, "nothing allocated for a refused topic");
    DISARM();

    /* As a pattern, on every kind of stream and on an SSE client. */
    for (int topics = 0; topics < 2; topics++) {
        evs_stream *s;
        evs_stream_opts o = {.topics = topics};
        ASSERT_RC(evs_stream_create(&s, &o), 0);
        int n = 0;
        evs_sub *sub;
        ARM();
        ASSERT_RC(evs_subscribe(&sub, s, big, count_fn, NULL, &n, NULL), EVS_EINVAL);
        cr_assert_eq(evs__alloc_largest(), 0);
        DISARM();
        if (topics) {
            evs_sse *sse;
            ASSERT_RC(evs_sse_create(&sse, s, NULL), 0);
            const char *pats[] = {big};
            evs_sse_client_opts co = {.patterns = pats, .npatterns = 1};
            evs_sse_client *c;
            ASSERT_RC(evs_sse_connect(&c, sse, &co), EVS_EINVAL);
            evs_sse_destroy(sse);
        }
        evs_stream_destroy(s);
    }

    /* In the wire format: refused before the event is built. */
    mp m = {0};
    mp_event(&m, big, TEN_MB, "binary", "\xc4\x00", 2);
    ARM();
    ASSERT_RC(decode(&m, &ev), EVS_ETOOBIG);
    cr_assert_eq(evs__alloc_largest(), 0);
    DISARM();
    free(m.p);
    free(big);
}

Test(hostile, counts_and_lengths_are_checked_against_the_bytes_present)
{
    static const struct {
        const char *what;
        uint8_t b[12];
        size_t n;
    } bad[] = {
        {"an array of 4 G elements", {0xdd, 0xff, 0xff, 0xff, 0xff}, 5},
        {"a map of 4 G pairs", {0xdf, 0xff, 0xff, 0xff, 0xff}, 5},
        {"4 GiB of bin", {0xc6, 0xff, 0xff, 0xff, 0xff, 0x00}, 6},
        {"2 GiB of str", {0xdb, 0x7f, 0xff, 0xff, 0xff, 0x61}, 6},
        {"4 GiB of ext", {0xc9, 0xff, 0xff, 0xff, 0xff, 0x01}, 6},
        {"a field cut off by a huge array",
         {0x87, 0xa2, 'i', 'd', 0x07, 0xdd, 0x00, 0x10, 0x00, 0x00}, 10},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        evs_event *ev = (evs_event *)1;
        ARM();
        int rc = evs_event_from_msgpack(&ev, bad[i].b, bad[i].n);
        cr_assert_eq(evs__alloc_largest(), 0, "%s: allocated", bad[i].what);
        DISARM();
        cr_assert_eq(rc, EVS_EBADMSG, "%s: got %s", bad[i].what, evs_errname(rc));
        cr_assert_null(ev);
        /* The same bytes as a data value inside a well-formed event. */
        mp w = {0};
        mp_event(&w, "t", 1, "msgpack", bad[i].b, bad[i].n);
        ASSERT_RC(decode(&w, &ev), EVS_EBADMSG);
        free(w.p);
    }
}

Test(hostile, deep_nesting_is_etoobig_everywhere, .timeout = 60)
{
    size_t depth = 100000;
    mp deep = {0};
    for (size_t i = 0; i < depth; i++)
        mp_byte(&deep, 0x91);
    mp_byte(&deep, 0x01);
    evs_event *ev;

    /* Wire format: as the data, and as a metadata value. */
    mp w = {0};
    mp_event(&w, "t", 1, "msgpack", deep.p, deep.n);
    ASSERT_RC(decode(&w, &ev), EVS_ETOOBIG);
    free(w.p);

    ASSERT_RC(evs_event_create(&ev, EVS_TYPE_MESSAGE, "t", deep.p, deep.n), 0);
    ASSERT_RC(evs_event_set_content(ev, EVS_CONTENT_MSGPACK), EVS_ETOOBIG);
    ASSERT_RC(evs_event_meta_set_raw(ev, "k", deep.p, deep.n), EVS_ETOOBIG);
    evs_buf out = {0};
    ASSERT_RC(evs__mp_to_json(deep.p, deep.n, &out), EVS_EBADMSG); /* unchecked: capped */
    cr_assert_eq(out.len, 0);
    evs_buf_free(&out);
    evs_event_unref(ev);

    /* JSON text: evs_event_make and JSON content. */
    char *json = malloc(2 * depth + 2);
    memset(json, '[', depth);
    json[depth] = '1';
    memset(json + depth + 1, ']', depth);
    json[2 * depth + 1] = '\0';
    ASSERT_RC(evs_event_make(&ev, NULL, "t", json, NULL), EVS_ETOOBIG);
    ASSERT_RC(evs_event_create(&ev, EVS_TYPE_MESSAGE, "t", json, 2 * depth + 1), 0);
    ASSERT_RC(evs_event_set_content(ev, EVS_CONTENT_JSON), EVS_ETOOBIG);
    evs_event_unref(ev);

    /* A where expression nested past its limit. */
    evs_where *wh;
    evs_where_error err;
    memset(json, '(', 200);
    strcpy(json + 200, "true");
    memset(json + 204, ')', 200);
    ASSERT_RC(evs_where_compile(&wh, json, 404, &err), EVS_ETOOBIG);
    free(json);
    free(deep.p);
}

Test(hostile, a_huge_valid_event_costs_one_copy_and_one_byte_more_is_refused, .timeout = 120)
{
    size_t n = EVS_MAX_DATA;
    uint8_t *data = calloc(1, n + 1);
    cr_assert_not_null(data);
    mp m = {0}, bin = {0};
    mp_bin(&bin, data, n);
    mp_event(&m, "big", 3, "binary", bin.p, bin.n);
    free(bin.p);
    evs_event *ev;
    ARM();
    ASSERT_RC(decode(&m, &ev), 0);
    size_t largest = evs__alloc_largest();
    DISARM();
    cr_assert_leq(largest, n + 4096, "one copy of the data, not %zu bytes", largest);
    size_t len;
    evs_event_data(ev, &len);
    cr_assert_eq(len, n);
    evs_event_unref(ev);

    m.n = 0;
    bin = (mp){.p = NULL};
    mp_bin(&bin, data, n + 1);
    mp_event(&m, "big", 3, "binary", bin.p, bin.n);
    free(bin.p);
    ARM();
    ASSERT_RC(decode(&m, &ev), EVS_ETOOBIG);
    cr_assert_eq(evs__alloc_largest(), 0);
    DISARM();
    free(m.p);
    free(data);
}

Test(hostile, a_message_longer_than_the_largest_event_is_refused_unread)
{
    evs_limits l = {.max_data = 64, .max_meta = 64, .max_topic = 64, .max_type_name = 64};
    ASSERT_RC(evs_limits_set(&l), 0);
    /* A small event buried in 2000 bytes of unknown keys. */
    mp m = {0};
    mp_byte(&m, 0x87);
    mp_cstr(&m, "id");
    mp_byte(&m, 1);
    mp_cstr(&m, "type");
    mp_cstr(&m, "message");
    mp_cstr(&m, "topic");
    mp_cstr(&m, "t");
    mp_cstr(&m, "content");
    mp_cstr(&m, "binary");
    mp_cstr(&m, "data");
    mp_bin(&m, "x", 1);
    mp_cstr(&m, "ts");
    mp_byte(&m, 0);
    char *pad = repeat('p', 2000);
    mp_cstr(&m, "padding");
    mp_cstr(&m, pad);
    evs_event *ev;
    ASSERT_RC(decode(&m, &ev), EVS_ETOOBIG);
    ASSERT_RC(evs_limits_set(NULL), 0);
    ASSERT_RC(decode(&m, &ev), 0); /* fine at the defaults: unknown keys are ignored */
    evs_event_unref(ev);
    free(pad);
    free(m.p);
}

/* Render `ev` as JSON and check it with jansson; returns the text. */
static char *json_of(const evs_event *ev)
{
    evs_buf b = {0};
    ASSERT_RC(evs_event_to_json(ev, &b), 0);
    json_error_t err;
    json_t *j = json_loadb(b.data, b.len, JSON_ALLOW_NUL, &err);
    cr_assert_not_null(j, "invalid JSON: %s: %s", err.text, b.data);
    json_decref(j);
    char *s = strdup(b.data);
    evs_buf_free(&b);
    return s;
}

Test(hostile, invalid_utf8_renders_as_valid_json_with_replacement_characters)
{
    /* Text data, a custom type name, a topic and a metadata string, each
     * with overlongs, surrogates, truncated sequences and stray bytes. */
    static const char bad[] = "ok \xc0\xaf \xed\xa0\x80 \xf0\x9f\x98 \xff \xe2\x82";
    evs_event *ev;
    ASSERT_RC(evs_event_create(&ev, EVS_TYPE_MESSAGE, "caf\xc3\xa9.\xff", bad, sizeof bad - 1), 0);
    ASSERT_RC(evs_event_set_content(ev, EVS_CONTENT_TEXT), 0);
    ASSERT_RC(evs_event_set_type_name(ev, "T\xfe"), 0);
    ASSERT_RC(evs_event_meta_set_str(ev, "k\x80", bad), 0);
    char *j = json_of(ev);
    cr_assert_not_null(strstr(j, "\"data\":\"ok \xef\xbf\xbd\xef\xbf\xbd \xef\xbf\xbd\xef\xbf\xbd"
                                 "\xef\xbf\xbd \xef\xbf\xbd \xef\xbf\xbd \xef\xbf\xbd\""),
                       "%s", j);
    cr_assert_not_null(strstr(j, "\"type\":\"T\xef\xbf\xbd\""), "%s", j);
    cr_assert_not_null(strstr(j, "\"topic\":\"caf\xc3\xa9.\xef\xbf\xbd\""), "%s", j);
    cr_assert_not_null(strstr(j, "\"k\xef\xbf\xbd\":\"ok "), "%s", j);
    free(j);

    /* The SSE frame is valid UTF-8 too. */
    evs_buf f = {0};
    ASSERT_RC(evs_sse_encode_buf(ev, NULL, &f), 0);
    cr_assert_not_null(strstr(f.data, "event: T\xef\xbf\xbd\n"), "%s", f.data);
    for (size_t i = 0; i < f.len;) {
        long k = evs__utf8_seq((const uint8_t *)f.data + i, f.len - i);
        cr_assert_gt(k, 0, "invalid UTF-8 at %zu", i);
        i += (size_t)k;
    }
    evs_buf_free(&f);

    /* JSON content must be valid JSON, and JSON is UTF-8: refused. */
    ASSERT_RC(evs_event_set_content(ev, EVS_CONTENT_JSON), EVS_EBADMSG);
    evs_event_unref(ev);
    ASSERT_RC(evs_event_make(&ev, NULL, "t", "\"\xff\"", NULL), EVS_EBADMSG);
}

Test(hostile, nul_bytes_in_strings_are_kept_or_refused_never_truncated_silently)
{
    /* Data and metadata values hold NUL bytes faithfully. */
    evs_event *ev;
    ASSERT_RC(evs_event_create(&ev, EVS_TYPE_MESSAGE, "t", "a\0b", 3), 0);
    ASSERT_RC(evs_event_set_content(ev, EVS_CONTENT_TEXT), 0);
    ASSERT_RC(evs_event_meta_set_raw(ev, "k", "\xa3x\0y", 4), 0);
    const char *v;
    size_t vl;
    ASSERT_RC(evs_event_meta_get_str(ev, "k", &v, &vl), 0);
    cr_assert_eq(vl, 3);
    cr_assert_eq(memcmp(v, "x\0y", 3), 0);
    char *j = json_of(ev);
    cr_assert_not_null(strstr(j, "\"data\":\"a\\u0000b\""), "%s", j);
    cr_assert_not_null(strstr(j, "\"k\":\"x\\u0000y\""), "%s", j);
    free(j);

    /* A where filter sees the whole string. */
    evs_where *w;
    static const char expr[] = "data == \"a\\u0000b\" and metadata.k != \"x\"";
    ASSERT_RC(evs_where_compile(&w, expr, sizeof expr - 1, NULL), 0);
    cr_assert(evs_where_match(w, ev));
    evs_where_destroy(w);

    /* SSE carries the NUL through (data may hold NUL; the parser keeps
     * it), and the parser ignores an id holding one. */
    evs_buf f = {0};
    ASSERT_RC(evs_sse_encode_buf(ev, NULL, &f), 0);
    cr_assert_eq(f.len, 11);
    cr_assert_eq(memcmp(f.data, "data: a\0b\n\n", 11), 0);
    evs_buf_free(&f);
    evs_event_unref(ev);

    /* The wire format refuses NUL where readers see C strings: topics
     * and type names. */
    mp m = {0};
    mp_event(&m, "a\0b", 3, "binary", "\xc4\x00", 2);
    ASSERT_RC(decode(&m, &ev), EVS_EBADMSG);
    free(m.p);
    m = (mp){0};
    mp_byte(&m, 0x86);
    mp_cstr(&m, "id");
    mp_byte(&m, 1);
    mp_cstr(&m, "type");
    mp_str(&m, "A\0B", 3);
    mp_cstr(&m, "topic");
    mp_cstr(&m, "t");
    mp_cstr(&m, "content");
    mp_cstr(&m, "binary");
    mp_cstr(&m, "data");
    mp_bin(&m, "", 0);
    mp_cstr(&m, "ts");
    mp_byte(&m, 0);
    ASSERT_RC(decode(&m, &ev), EVS_EBADMSG);
    free(m.p);

    /* Subjects and patterns refuse NUL inside their length. */
    ASSERT_RC(evs__subject_validate("a.\0", 3), EVS_EINVAL);
}

Test(hostile, where_expressions_over_the_length_limit_are_refused_unread)
{
    char *big = repeat(' ', TEN_MB);
    memcpy(big, "true", 4);
    evs_where *w = (evs_where *)1;
    evs_where_error err;
    ARM();
    ASSERT_RC(evs_where_compile(&w, big, TEN_MB, &err), EVS_ETOOBIG);
    cr_assert_eq(evs__alloc_largest(), 0);
    DISARM();
    cr_assert_null(w);
    cr_assert_eq(err.pos, EVS_WHERE_MAX_LEN);
    ASSERT_RC(evs_where_compile(&w, big, EVS_WHERE_MAX_LEN, &err), 0);
    evs_where_destroy(w);
    free(big);
}

static int drop_msg(const evs_sse_message *m, void *user)
{
    (void)m;
    ck_pr_inc_int(user);
    return 0;
}

Test(hostile, an_sse_parser_holds_at_most_a_few_times_max_message, .timeout = 60)
{
    evs_sse_parser *p;
    evs_sse_parser_opts o = {.max_message = 1024};
    ASSERT_RC(evs_sse_parser_create(&p, &o), 0);
    /* 10 MB of one data line, fed in 64 KiB pieces, then a small message. */
    char *big = repeat('x', 65536);
    int got = 0;
    ARM();
    ASSERT_RC(evs_sse_parser_feed(p, "data: ", 6, NULL, drop_msg, &got), 0);
    for (size_t fed = 0; fed < TEN_MB; fed += 65536)
        ASSERT_RC(evs_sse_parser_feed(p, big, 65536, NULL, drop_msg, &got), 0);
    ASSERT_RC(evs_sse_parser_feed(p, "\n\ndata: ok\n\n", 12, NULL, drop_msg, &got), 0);
    size_t largest = evs__alloc_largest();
    DISARM();
    cr_assert_leq(largest, 4 * 1024, "the parser asked for %zu bytes at once", largest);
    cr_assert_eq(got, 1, "only the small message is dispatched");
    cr_assert_eq(evs_sse_parser_dropped(p), 1);
    evs_sse_parser_destroy(p);
    free(big);
}
