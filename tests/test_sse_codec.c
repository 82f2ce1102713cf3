/*
 * SSE framing: the encoder's vectors (every field rule, line-end
 * splitting, content rendering, injection refused, the caller's buffer),
 * the parser's vectors (the WHATWG standard's own examples, line ends,
 * BOM, id, retry, unknown fields, limits), chunking independence (every
 * split point, byte by byte, random chunks), a random comparison with a
 * small whole-input reference parser, the encoder -> parser round trip,
 * and allocation failure.
 */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"
#include "evs_internal.h"
#include "json.h"
#include "sse_codec.h"
#include "evs_test.h"

#define TS 1795280400000000001LL

/* ------------------------------------------------------------------ */
/* Helpers                                                             */
/* ------------------------------------------------------------------ */

static uint64_t rng_state;

static uint64_t rnd(void)
{
    /* xorshift64*: fixed seeds make failures reproducible. */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ULL;
}

static size_t rnd_below(size_t n) { return (size_t)(rnd() % n); }

/* A growable byte string owned by the test (plain malloc, so allocation
 * failure injection never touches it). */
typedef struct bytes {
    char  *p;
    size_t n, cap;
} bytes;

static void b_add(bytes *b, const void *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2;
        b->p = realloc(b->p, b->cap);
        cr_assert_not_null(b->p);
    }
    if (n > 0)
        memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static void b_str(bytes *b, const char *s) { b_add(b, s, strlen(s)); }

static bool b_eq(const bytes *b, const void *s, size_t n)
{
    return b->n == n && (n == 0 || memcmp(b->p, s, n) == 0);
}

/* One message as the callback saw it. */
typedef struct msg {
    bytes event, data, id;
} msg;

/* What a parse produced. */
typedef struct result {
    msg     *v;
    size_t   n, cap;
    size_t   stop_at;   /* > 0: the callback returns 7 at this message */
    bytes    last_id;
    int64_t  retry;
    uint64_t dropped;
} result;

static int collect(const evs_sse_message *m, void *user)
{
    result *r = user;
    cr_assert_not_null(m->event);
    cr_assert_not_null(m->data);
    cr_assert_not_null(m->id);
    cr_assert_eq(m->event[m->event_len], '\0', "event not NUL-terminated");
    cr_assert_eq(m->data[m->data_len], '\0', "data not NUL-terminated");
    cr_assert_eq(m->id[m->id_len], '\0', "id not NUL-terminated");
    cr_assert_eq(memchr(m->id, '\0', m->id_len), NULL, "id holds a NUL");
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 8;
        r->v = realloc(r->v, r->cap * sizeof(*r->v));
        cr_assert_not_null(r->v);
    }
    msg *x = &r->v[r->n++];
    memset(x, 0, sizeof(*x));
    b_add(&x->event, m->event, m->event_len);
    b_add(&x->data, m->data, m->data_len);
    b_add(&x->id, m->id, m->id_len);
    return r->stop_at != 0 && r->n == r->stop_at ? 7 : 0;
}

static void result_free(result *r)
{
    for (size_t i = 0; i < r->n; i++) {
        free(r->v[i].event.p);
        free(r->v[i].data.p);
        free(r->v[i].id.p);
    }
    free(r->v);
    free(r->last_id.p);
    memset(r, 0, sizeof(*r));
}

static void result_finish(result *r, const evs_sse_parser *p)
{
    size_t n;
    const char *id = evs_sse_parser_last_id(p, &n);
    cr_assert_not_null(id);
    cr_assert_eq(id[n], '\0');
    b_add(&r->last_id, id, n);
    r->retry = evs_sse_parser_retry(p);
    r->dropped = evs_sse_parser_dropped(p);
}

enum chunking { WHOLE, BYTES, RANDOM };

/* Feed s[0..n) to p in chunks, every chunk asserted to succeed. */
static void feed_chunked(evs_sse_parser *p, const char *s, size_t n, enum chunking how,
                         result *r)
{
    size_t i = 0;
    do {
        size_t k = n - i;
        if (how == BYTES && k > 1)
            k = 1;
        else if (how == RANDOM && k > 0) {
            size_t lim = rnd_below(4) == 0 ? 3 : 40; /* often tiny chunks */
            k = 1 + rnd_below(lim < k ? lim : k);
        }
        size_t used = 99;
        int rc = evs_sse_parser_feed(p, s + i, k, &used, collect, r);
        cr_assert_eq(rc, 0, "feed: got %s", evs_errname(rc));
        cr_assert_eq(used, k);
        i += k;
    } while (i < n);
}

/* Parse s[0..n) with a fresh parser. */
static result parse(const char *s, size_t n, size_t max, enum chunking how)
{
    result r = {0};
    evs_sse_parser *p;
    evs_sse_parser_opts o = {.max_message = max};
    ASSERT_RC(evs_sse_parser_create(&p, &o), 0);
    feed_chunked(p, s, n, how, &r);
    result_finish(&r, p);
    evs_sse_parser_destroy(p);
    return r;
}

static void assert_same_result(const result *a, const result *b, const char *what)
{
    cr_assert_eq(a->n, b->n, "%s: %zu messages vs %zu", what, a->n, b->n);
    for (size_t i = 0; i < a->n; i++) {
        const msg *x = &a->v[i], *y = &b->v[i];
        cr_assert(b_eq(&x->event, y->event.p, y->event.n), "%s: message %zu event", what, i);
        cr_assert(b_eq(&x->data, y->data.p, y->data.n), "%s: message %zu data", what, i);
        cr_assert(b_eq(&x->id, y->id.p, y->id.n), "%s: message %zu id", what, i);
    }
    cr_assert(b_eq(&a->last_id, b->last_id.p, b->last_id.n), "%s: last id", what);
    cr_assert_eq(a->retry, b->retry, "%s: retry", what);
    cr_assert_eq(a->dropped, b->dropped, "%s: dropped", what);
}

/*
 * The same input must give the same result however it is cut: whole,
 * byte by byte, at every single split point, at every pair of split
 * points (short inputs), and in random chunks.
 */
static result parse_every_way(const char *s, size_t n, size_t max)
{
    result whole = parse(s, n, max, WHOLE);
    result r = parse(s, n, max, BYTES);
    assert_same_result(&r, &whole, "byte by byte");
    result_free(&r);
    for (size_t k = 0; k <= n; k++) {
        for (size_t k2 = k; k2 <= n; k2 = n <= 64 ? k2 + 1 : n + 1) {
            result x = {0};
            evs_sse_parser *p;
            evs_sse_parser_opts o = {.max_message = max};
            ASSERT_RC(evs_sse_parser_create(&p, &o), 0);
            ASSERT_RC(evs_sse_parser_feed(p, s, k, NULL, collect, &x), 0);
            ASSERT_RC(evs_sse_parser_feed(p, s + k, k2 - k, NULL, collect, &x), 0);
            ASSERT_RC(evs_sse_parser_feed(p, s + k2, n - k2, NULL, collect, &x), 0);
            result_finish(&x, p);
            evs_sse_parser_destroy(p);
            char what[64];
            snprintf(what, sizeof(what), "split at %zu and %zu", k, k2);
            assert_same_result(&x, &whole, what);
            result_free(&x);
        }
    }
    rng_state = 0x5eed + n;
    for (int t = 0; t < 20; t++) {
        r = parse(s, n, max, RANDOM);
        assert_same_result(&r, &whole, "random chunks");
        result_free(&r);
    }
    return whole;
}

/* An expected message: event, data (with length, as it may hold NUL), id. */
typedef struct want_msg {
    const char *event;
    const char *data;
    size_t      data_len; /* 0 = strlen(data) */
    const char *id;
} want_msg;

static void assert_msgs(const result *r, const want_msg *w, size_t n, const char *what)
{
    cr_assert_eq(r->n, n, "%s: %zu messages, want %zu", what, r->n, n);
    for (size_t i = 0; i < n; i++) {
        size_t dl = w[i].data_len ? w[i].data_len : strlen(w[i].data);
        cr_assert(b_eq(&r->v[i].event, w[i].event, strlen(w[i].event)),
                  "%s: message %zu event '%s', want '%s'", what, i, r->v[i].event.p,
                  w[i].event);
        cr_assert(b_eq(&r->v[i].data, w[i].data, dl), "%s: message %zu data '%s', want '%s'",
                  what, i, r->v[i].data.p, w[i].data);
        cr_assert(b_eq(&r->v[i].id, w[i].id, strlen(w[i].id)),
                  "%s: message %zu id '%s', want '%s'", what, i, r->v[i].id.p, w[i].id);
    }
}

/* Parse every way and check the messages. */
static result check_stream(const char *s, size_t n, const want_msg *w, size_t nw)
{
    result r = parse_every_way(s, n, 0);
    assert_msgs(&r, w, nw, s);
    return r;
}
#define CHECK(s, ...)                                                        \
    do {                                                                     \
        static const want_msg w_[] = {__VA_ARGS__};                              \
        result r_ = check_stream(s, sizeof(s) - 1, w_, sizeof(w_) / sizeof(w_[0])); \
        result_free(&r_);                                                    \
    } while (0)
#define CHECK_NONE(s)                                                        \
    do {                                                                     \
        result r_ = check_stream(s, sizeof(s) - 1, NULL, 0);                 \
        result_free(&r_);                                                    \
    } while (0)

/* Encode with evs_sse_encode into an exact-size buffer, check that
 * evs_sse_encode_buf gives the same bytes, and return them. */
static bytes encode(const evs_event *ev, const evs_sse_opts *o)
{
    size_t need = 0;
    ASSERT_RC(evs_sse_encode(ev, o, NULL, 0, &need), EVS_ETOOBIG);
    char *buf = malloc(need + 1);
    size_t len = 0;
    ASSERT_RC(evs_sse_encode(ev, o, buf, need, &len), 0);
    cr_assert_eq(len, need);
    evs_buf eb = {0};
    ASSERT_RC(evs_sse_encode_buf(ev, o, &eb), 0);
    cr_assert_eq(eb.len, len);
    cr_assert_eq(memcmp(eb.data, buf, len), 0, "encode and encode_buf differ");
    cr_assert_eq(eb.data[eb.len], '\0');
    evs_buf_free(&eb);
    bytes b = {0};
    b_add(&b, buf, len);
    free(buf);
    return b;
}

static evs_event *text_event(uint64_t id, const char *name, const void *data, size_t len)
{
    return event_of(name ? EVS_TYPE_CUSTOM : EVS_TYPE_MESSAGE, name, "orders.eu",
                    EVS_CONTENT_TEXT, data, len, NULL, 0, id, TS);
}

static void assert_frame(const evs_event *ev, const evs_sse_opts *o, const char *want,
                         size_t want_len)
{
    bytes f = encode(ev, o);
    cr_assert(b_eq(&f, want, want_len), "frame\n%s\nwant\n%s", f.p, want);
    free(f.p);
}
#define FRAME(ev, o, want) assert_frame((ev), (o), (want), sizeof(want) - 1)

/* ------------------------------------------------------------------ */
/* Encoder: fields                                                     */
/* ------------------------------------------------------------------ */

Test(sse_encode, message_type_has_no_event_line)
{
    evs_event *ev = text_event(7, NULL, "hello", 5);
    FRAME(ev, NULL, "id: 7\ndata: hello\n\n");
    evs_event_unref(ev);
}

Test(sse_encode, custom_type_gets_an_event_line)
{
    evs_event *ev = text_event(42, "Purchase", "x", 1);
    FRAME(ev, NULL, "id: 42\nevent: Purchase\ndata: x\n\n");
    evs_event_unref(ev);
}

Test(sse_encode, built_in_types_other_than_message_are_named)
{
    static const struct {
        evs_type t;
        const char *want;
    } v[] = {
        {EVS_TYPE_ERROR, "id: 1\nevent: error\ndata: d\n\n"},
        {EVS_TYPE_CONNECT, "id: 1\nevent: connect\ndata: d\n\n"},
        {EVS_TYPE_DISCONNECT, "id: 1\nevent: disconnect\ndata: d\n\n"},
        {EVS_TYPE_HEARTBEAT, "id: 1\nevent: heartbeat\ndata: d\n\n"},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        evs_event *ev = event_of(v[i].t, NULL, "", EVS_CONTENT_TEXT, "d", 1, NULL, 0, 1, TS);
        assert_frame(ev, NULL, v[i].want, strlen(v[i].want));
        evs_event_unref(ev);
    }
}

Test(sse_encode, set_type_name_message_is_the_message_type)
{
    evs_event *ev;
    ASSERT_RC(evs_event_create(&ev, EVS_TYPE_ERROR, "t", "x", 1), 0);
    ASSERT_RC(evs_event_set_content(ev, EVS_CONTENT_TEXT), 0);
    ASSERT_RC(evs_event_set_type_name(ev, "message"), 0);
    FRAME(ev, NULL, "data: x\n\n");
    evs_event_unref(ev);
}

Test(sse_encode, id_is_decimal_and_zero_means_none)
{
    evs_event *ev = text_event(UINT64_MAX, NULL, "x", 1);
    FRAME(ev, NULL, "id: 18446744073709551615\ndata: x\n\n");
    evs_event_unref(ev);
    ev = text_event(0, NULL, "x", 1); /* unpublished */
    FRAME(ev, NULL, "data: x\n\n");
    evs_event_unref(ev);
}

Test(sse_encode, omit_id_drops_the_id_line)
{
    evs_event *ev = text_event(9, "t", "x", 1);
    evs_sse_opts o = {.omit_id = true};
    FRAME(ev, &o, "event: t\ndata: x\n\n");
    evs_event_unref(ev);
}

Test(sse_encode, retry_line_only_when_asked)
{
    evs_event *ev = text_event(3, NULL, "x", 1);
    evs_sse_opts o = {.retry_ms = 2500};
    FRAME(ev, &o, "id: 3\ndata: x\nretry: 2500\n\n");
    o.retry_ms = 0;
    FRAME(ev, &o, "id: 3\ndata: x\n\n");
    o.retry_ms = -1;
    size_t len = 5;
    char buf[64];
    ASSERT_RC(evs_sse_encode(ev, &o, buf, sizeof(buf), &len), EVS_EINVAL);
    cr_assert_eq(len, 0);
    evs_buf b = {0};
    ASSERT_RC(evs_sse_encode_buf(ev, &o, &b), EVS_EINVAL);
    cr_assert_eq(b.len, 0);
    cr_assert_null(b.data);
    evs_event_unref(ev);
}

Test(sse_encode, topic_and_metadata_are_not_sent)
{
    evs_event *ev;
    ASSERT_RC(evs_event_make(&ev, "Purchase", "orders.eu.secret", "{\"sku\":7}",
                             (const char *[]){"region", "hidden-meta", NULL}),
              0);
    bytes f = encode(ev, NULL);
    cr_assert_null(strstr(f.p, "orders.eu.secret"));
    cr_assert_null(strstr(f.p, "hidden-meta"));
    const char *want = "event: Purchase\ndata: {\"sku\":7}\n\n";
    cr_assert(b_eq(&f, want, strlen(want)), "%s", f.p);
    free(f.p);
    evs_event_unref(ev);
}

/* ------------------------------------------------------------------ */
/* Encoder: data lines                                                 */
/* ------------------------------------------------------------------ */

Test(sse_encode, data_is_one_line_per_line_at_lf_crlf_and_cr)
{
    static const struct {
        const char *data;
        const char *want;
    } v[] = {
        {"", "data:\n\n"},
        {"a", "data: a\n\n"},
        {"a\nb", "data: a\ndata: b\n\n"},
        {"a\r\nb", "data: a\ndata: b\n\n"},
        {"a\rb", "data: a\ndata: b\n\n"},
        {"a\n", "data: a\ndata:\n\n"},
        {"a\r", "data: a\ndata:\n\n"},
        {"a\r\n", "data: a\ndata:\n\n"},
        {"\n", "data:\ndata:\n\n"},
        {"\r\n", "data:\ndata:\n\n"},
        {"\r\r\n\n", "data:\ndata:\ndata:\ndata:\n\n"},
        {"\n\r", "data:\ndata:\ndata:\n\n"},
        {"a\n\nb", "data: a\ndata:\ndata: b\n\n"},
        {" lead", "data:  lead\n\n"},
        {"  two\n three", "data:   two\ndata:  three\n\n"},
        {"k: v", "data: k: v\n\n"},
        {":not a comment", "data: :not a comment\n\n"},
        {"data: x\n\nevent: y", "data: data: x\ndata:\ndata: event: y\n\n"},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        evs_event *ev = text_event(0, NULL, v[i].data, strlen(v[i].data));
        assert_frame(ev, NULL, v[i].want, strlen(v[i].want));
        evs_event_unref(ev);
    }
}

Test(sse_encode, nul_in_text_data_is_kept)
{
    evs_event *ev = text_event(0, NULL, "a\0b", 3);
    FRAME(ev, NULL, "data: a\0b\n\n");
    evs_event_unref(ev);
}

Test(sse_encode, invalid_utf8_is_written_as_replacement_characters)
{
    evs_event *ev = text_event(0, "t\xff", "a\xc3" "b\xe2\x82\n\xc3\xa9", 8);
    FRAME(ev, NULL,
          "event: t\xef\xbf\xbd\n"
          "data: a\xef\xbf\xbd" "b\xef\xbf\xbd\n"
          "data: \xc3\xa9\n\n");
    evs_event_unref(ev);
}

/* The naive reading of the rules, for data that is valid UTF-8: one
 * "data:" line per line, cut at LF, CRLF and lone CR. */
static bytes naive_data_lines(const uint8_t *s, size_t n)
{
    bytes b = {0};
    size_t i = 0;
    for (;;) {
        size_t j = i;
        while (j < n && s[j] != '\n' && s[j] != '\r')
            j++;
        if (j == i) {
            b_str(&b, "data:\n");
        } else {
            b_str(&b, "data: ");
            b_add(&b, s + i, j - i);
            b_str(&b, "\n");
        }
        if (j == n)
            break;
        i = j + (s[j] == '\r' && j + 1 < n && s[j + 1] == '\n' ? 2 : 1);
    }
    b_str(&b, "\n");
    return b;
}

/* The encoder scans and copies 16 or 8 bytes at a time: put each kind of
 * byte that needs care at every position of data of every length around
 * those block sizes, and compare with the naive reading. */
Test(sse_encode, line_ends_and_utf8_at_every_position_match_the_naive_reading)
{
    static const char *const specials[] = {"\n", "\r", "\r\n", "\xc3\xa9", "\xe2\x82\xac"};
    uint8_t data[80];
    for (size_t len = 0; len <= 70; len++) {
        for (size_t k = 0; k < sizeof(specials) / sizeof(specials[0]); k++) {
            size_t sl = strlen(specials[k]);
            for (size_t pos = 0; pos + sl <= len; pos++) {
                for (size_t i = 0; i < len; i++)
                    data[i] = (uint8_t)('a' + i % 26);
                memcpy(data + pos, specials[k], sl);
                evs_event *ev = text_event(0, NULL, data, len);
                bytes got = encode(ev, NULL);
                bytes want = naive_data_lines(data, len);
                cr_assert(got.n == want.n && memcmp(got.p, want.p, got.n) == 0,
                          "len %zu, special %zu at %zu:\n%s\nwant\n%s", len, k, pos,
                          got.p, want.p);
                free(got.p);
                free(want.p);
                evs_event_unref(ev);
            }
        }
    }
}

Test(sse_encode, json_content_is_sent_as_is_split_at_line_ends)
{
    const char *js = "{\r\n  \"a\": [1,\n2]\r}";
    evs_event *ev = event_of(EVS_TYPE_MESSAGE, NULL, "", EVS_CONTENT_JSON, js, strlen(js),
                             NULL, 0, 5, TS);
    FRAME(ev, NULL, "id: 5\ndata: {\ndata:   \"a\": [1,\ndata: 2]\ndata: }\n\n");
    evs_event_unref(ev);
}

Test(sse_encode, msgpack_content_is_rendered_as_one_json_line)
{
    evs_event *ev;
    ASSERT_RC(evs_event_make(&ev, NULL, "", "{\"k\":\"x\\ny\\r\",\"n\":[1,2.5,null]}", NULL),
              0);
    cr_assert_eq(evs_event_content(ev), EVS_CONTENT_MSGPACK);
    FRAME(ev, NULL, "data: {\"k\":\"x\\ny\\r\",\"n\":[1,2.5,null]}\n\n");
    evs_event_unref(ev);
}

Test(sse_encode, binary_content_is_one_base64_line)
{
    static const struct {
        const char *data;
        size_t len;
        const char *want;
    } v[] = {
        {"", 0, "data:\n\n"},
        {"\x00", 1, "data: AA==\n\n"},
        {"\x00\x01", 2, "data: AAE=\n\n"},
        {"\x00\x01\x02", 3, "data: AAEC\n\n"},
        {"\x00\x01\x02\xff", 4, "data: AAEC/w==\n\n"},
        {"\r\n\r\n\xfb\xff", 6, "data: DQoNCvv/\n\n"},
        {"foobar", 6, "data: Zm9vYmFy\n\n"},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        evs_event *ev = event_of(EVS_TYPE_MESSAGE, NULL, "", EVS_CONTENT_BINARY, v[i].data,
                                 v[i].len, NULL, 0, 0, TS);
        assert_frame(ev, NULL, v[i].want, strlen(v[i].want));
        evs_event_unref(ev);
    }
}

Test(sse_encode, empty_data_of_every_content_is_one_empty_data_line)
{
    for (evs_content c = EVS_CONTENT_BINARY; c <= EVS_CONTENT_MSGPACK; c++) {
        evs_event *ev = event_of(EVS_TYPE_MESSAGE, NULL, "", c, NULL, 0, NULL, 0, 0, TS);
        FRAME(ev, NULL, "data:\n\n");
        evs_event_unref(ev);
    }
}

/* Regression (fuzz_sse_roundtrip): evs_event_data is NULL for empty
 * data, and the line writer computed NULL + 0, which is undefined
 * (clang's UBSan reports it; GCC's does not). */
Test(sse_encode, regression_empty_data_is_never_offset_from_null)
{
    evs_event *ev;
    ASSERT_RC(evs_event_create(&ev, EVS_TYPE_MESSAGE, "t", NULL, 0), 0);
    cr_assert_null(evs_event_data(ev, NULL), "the case that mattered");
    ASSERT_RC(evs_event_set_content(ev, EVS_CONTENT_TEXT), 0);
    FRAME(ev, NULL, "data:\n\n");
    evs_event_unref(ev);
    for (evs_content c = EVS_CONTENT_BINARY; c <= EVS_CONTENT_JSON; c++) {
        ev = event_of(EVS_TYPE_CUSTOM, "Named", "", c, NULL, 0, NULL, 0, 3, TS);
        FRAME(ev, NULL, "id: 3\nevent: Named\ndata:\n\n");
        evs_event_unref(ev);
    }
}

/* Regression (fuzz_sse_roundtrip): evs_sse_encode_buf writes in one
 * optimistic pass into room for the data plus 128 bytes, but base64 was
 * written without checking that room: binary data over ~400 bytes (or a
 * long type name before it) overflowed the heap. */
Test(sse_encode, regression_buf_base64_larger_than_the_first_guess)
{
    static uint8_t data[3000];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (uint8_t)(i * 7);
    static const char *const names[] = {NULL, "caf\xc3\xa9-\xe0\xe0\xe0\xe0\xe0\xe0\xe0\xe0"};
    for (size_t k = 0; k < 2; k++) {
        for (size_t len = 1; len <= sizeof data; len = len * 3 + 1) {
            evs_event *ev = event_of(names[k] ? EVS_TYPE_CUSTOM : EVS_TYPE_MESSAGE, names[k],
                                     "", EVS_CONTENT_BINARY, data, len, NULL, 0, 9, TS);
            bytes want = encode(ev, NULL);
            for (size_t pre = 0; pre < 3; pre++) {
                evs_buf b = {0};
                cr_assert_eq(evs_buf_append(&b, "ab", pre), 0);
                ASSERT_RC(evs_sse_encode_buf(ev, NULL, &b), 0);
                cr_assert_eq(b.len, pre + want.n, "len %zu, prefix %zu", len, pre);
                cr_assert_eq(memcmp(b.data + pre, want.p, want.n), 0, "len %zu", len);
                evs_buf_free(&b);
            }
            free(want.p);
            evs_event_unref(ev);
        }
    }
}

/* ------------------------------------------------------------------ */
/* Encoder: injection and errors                                       */
/* ------------------------------------------------------------------ */

Test(sse_encode, type_name_with_cr_or_lf_is_refused)
{
    static const char *const bad[] = {"a\nb", "a\rb", "a\r\nb", "\n", "x\ndata: injected",
                                      "x\r\rid: 1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        /* evs__event_new does not validate names, as a careless decoder
         * or future constructor might not. */
        evs_event *ev = text_event(1, bad[i], "x", 1);
        char buf[256];
        memset(buf, '#', sizeof(buf));
        size_t len = 99;
        ASSERT_RC(evs_sse_encode(ev, NULL, buf, sizeof(buf), &len), EVS_EINVAL);
        cr_assert_eq(len, 0);
        cr_assert_eq(buf[0], '#', "bytes written on error");
        evs_buf b = {0};
        ASSERT_RC(evs_buf_append(&b, "pre", 3), 0);
        ASSERT_RC(evs_sse_encode_buf(ev, NULL, &b), EVS_EINVAL);
        cr_assert(b.len == 3 && strcmp(b.data, "pre") == 0);
        evs_buf_free(&b);
        evs_event_unref(ev);
    }
}

Test(sse_encode, injection_cannot_enter_through_the_public_setters)
{
    evs_event *ev;
    ASSERT_RC(evs_event_create(&ev, EVS_TYPE_MESSAGE, "t", "x", 1), 0);
    ASSERT_RC(evs_event_set_type_name(ev, "a\nb"), EVS_EINVAL);
    ASSERT_RC(evs_event_set_type_name(ev, "a\rb"), EVS_EINVAL);
    ASSERT_RC(evs_event_set_type_name(ev, ""), EVS_EINVAL);
    evs_event_unref(ev);
    ASSERT_RC(evs_event_make(&ev, "x\nid: 5", "t", NULL, NULL), EVS_EINVAL);
    cr_assert_null(ev);
}

Test(sse_encode, type_name_with_nul_cannot_be_decoded)
{
    evs_event *ev = text_event(1, "abc", "x", 1);
    evs_buf mp = {0};
    ASSERT_RC(evs_event_to_msgpack(ev, &mp), 0);
    evs_event_unref(ev);
    char *at = memmem(mp.data, mp.len, "\xa3" "abc", 4);
    cr_assert_not_null(at);
    at[2] = '\0'; /* "a\0c" */
    evs_event *back = (evs_event *)1;
    ASSERT_RC(evs_event_from_msgpack(&back, mp.data, mp.len), EVS_EBADMSG);
    cr_assert_null(back);
    at[2] = '\n'; /* "a\nc" */
    ASSERT_RC(evs_event_from_msgpack(&back, mp.data, mp.len), EVS_EBADMSG);
    evs_buf_free(&mp);
}

Test(sse_encode, custom_type_without_a_name_is_refused)
{
    evs_event *ev = event_of(EVS_TYPE_CUSTOM, NULL, "", EVS_CONTENT_TEXT, "x", 1, NULL, 0, 1,
                             TS);
    size_t len;
    ASSERT_RC(evs_sse_encode(ev, NULL, NULL, 0, &len), EVS_EINVAL);
    evs_event_unref(ev);
}

Test(sse_encode, malformed_msgpack_data_is_ebadmsg)
{
    /* evs__event_new does not validate content; a truncated map. */
    evs_event *ev = event_of(EVS_TYPE_MESSAGE, NULL, "", EVS_CONTENT_MSGPACK, "\x81\xa1", 2,
                             NULL, 0, 1, TS);
    size_t len;
    char buf[64];
    ASSERT_RC(evs_sse_encode(ev, NULL, buf, sizeof(buf), &len), EVS_EBADMSG);
    evs_buf b = {0};
    ASSERT_RC(evs_sse_encode_buf(ev, NULL, &b), EVS_EBADMSG);
    cr_assert_eq(b.len, 0);
    evs_buf_free(&b);
    evs_event_unref(ev);
}

Test(sse_encode, null_arguments_are_einval)
{
    evs_event *ev = text_event(1, NULL, "x", 1);
    char buf[64];
    size_t len;
    ASSERT_RC(evs_sse_encode(NULL, NULL, buf, sizeof(buf), &len), EVS_EINVAL);
    ASSERT_RC(evs_sse_encode(ev, NULL, buf, sizeof(buf), NULL), EVS_EINVAL);
    ASSERT_RC(evs_sse_encode(ev, NULL, NULL, 10, &len), EVS_EINVAL);
    evs_buf b = {0};
    ASSERT_RC(evs_sse_encode_buf(NULL, NULL, &b), EVS_EINVAL);
    ASSERT_RC(evs_sse_encode_buf(ev, NULL, NULL), EVS_EINVAL);
    evs_event_unref(ev);
}

Test(sse_encode, small_buffer_is_etoobig_with_the_exact_size_and_nothing_written)
{
    evs_event *ev = text_event(12, "tick", "a\r\nb\xff", 5);
    const char *want = "id: 12\nevent: tick\ndata: a\ndata: b\xef\xbf\xbd\n\n";
    size_t need = strlen(want);
    char buf[128];
    for (size_t cap = 0; cap < need; cap++) {
        memset(buf, '#', sizeof(buf));
        size_t len = 0;
        ASSERT_RC(evs_sse_encode(ev, NULL, buf, cap, &len), EVS_ETOOBIG);
        cr_assert_eq(len, need, "cap %zu: len %zu, want %zu", cap, len, need);
        for (size_t i = 0; i < sizeof(buf); i++)
            cr_assert_eq(buf[i], '#', "cap %zu: byte %zu written", cap, i);
    }
    size_t len = 0;
    ASSERT_RC(evs_sse_encode(ev, NULL, NULL, 0, &len), EVS_ETOOBIG);
    cr_assert_eq(len, need);
    memset(buf, '#', sizeof(buf));
    ASSERT_RC(evs_sse_encode(ev, NULL, buf, need, &len), 0);
    cr_assert_eq(len, need);
    cr_assert_eq(memcmp(buf, want, need), 0);
    cr_assert_eq(buf[need], '#', "wrote past the frame");
    evs_event_unref(ev);
}

Test(sse_encode, encode_buf_appends_after_what_the_buffer_held)
{
    evs_event *a = text_event(1, NULL, "one", 3);
    evs_event *b = text_event(2, "t", "two", 3);
    evs_buf out = {0};
    ASSERT_RC(evs_sse_encode_buf(a, NULL, &out), 0);
    ASSERT_RC(evs_sse_comment(&out, "hb", 2), 0);
    ASSERT_RC(evs_sse_encode_buf(b, NULL, &out), 0);
    const char *want = "id: 1\ndata: one\n\n: hb\n\nid: 2\nevent: t\ndata: two\n\n";
    cr_assert_eq(out.len, strlen(want));
    cr_assert_str_eq(out.data, want);
    evs_buf_free(&out);
    evs_event_unref(a);
    evs_event_unref(b);
}

/* ------------------------------------------------------------------ */
/* Comments                                                            */
/* ------------------------------------------------------------------ */

Test(sse_comment, frames_and_splits_at_line_ends)
{
    static const struct {
        const char *text;
        const char *want;
    } v[] = {
        {"", ":\n\n"},
        {"hb", ": hb\n\n"},
        {" x", ":  x\n\n"},
        {"a\nb\r\nc\rd", ": a\n: b\n: c\n: d\n\n"},
        {"a\n", ": a\n:\n\n"},
        {"\n\ndata: injected", ":\n:\n: data: injected\n\n"},
        {"\xff", ": \xef\xbf\xbd\n\n"},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        evs_buf b = {0};
        ASSERT_RC(evs_sse_comment(&b, v[i].text, strlen(v[i].text)), 0);
        cr_assert_eq(b.len, strlen(v[i].want), "%zu: %s", i, b.data);
        cr_assert_eq(memcmp(b.data, v[i].want, b.len), 0, "%zu: %s", i, b.data);
        cr_assert_eq(b.data[b.len], '\0');
        /* A client sees nothing. */
        result r = parse(b.data, b.len, 0, WHOLE);
        cr_assert_eq(r.n, 0);
        result_free(&r);
        evs_buf_free(&b);
    }
}

Test(sse_comment, null_arguments_are_einval)
{
    evs_buf b = {0};
    ASSERT_RC(evs_sse_comment(NULL, "x", 1), EVS_EINVAL);
    ASSERT_RC(evs_sse_comment(&b, NULL, 1), EVS_EINVAL);
    ASSERT_RC(evs_sse_comment(&b, NULL, 0), 0);
    cr_assert_str_eq(b.data, ":\n\n");
    evs_buf_free(&b);
}

/* ------------------------------------------------------------------ */
/* Parser: the standard's examples                                     */
/* ------------------------------------------------------------------ */

Test(sse_parse, spec_stocks_example_joins_data_lines)
{
    CHECK("data: YHOO\ndata: +2\ndata: 10\n\n", {"message", "YHOO\n+2\n10", 0, ""});
}

Test(sse_parse, spec_test_stream_example)
{
    /* The comment block fires nothing; "id" without a value resets the
     * last event id; the last block has no blank line, so the end of the
     * stream does not dispatch it. */
    const char s[] = ": test stream\n\ndata: first event\nid: 1\n\n"
                     "data:second event\nid\n\ndata:  third event\n";
    static const want_msg w[] = {{"message", "first event", 0, "1"},
                             {"message", "second event", 0, ""}};
    result r = check_stream(s, sizeof(s) - 1, w, 2);
    result_free(&r);
    CHECK(": test stream\n\ndata: first event\nid: 1\n\n"
          "data:second event\nid\n\ndata:  third event\n\n",
          {"message", "first event", 0, "1"}, {"message", "second event", 0, ""},
          {"message", " third event", 0, ""});
}

Test(sse_parse, spec_empty_and_newline_data_example)
{
    /* "The first block fires events with the data set to the empty string,
     * as would the last block if it was followed by a blank line. The
     * middle block fires an event with the data set to a single newline
     * character." */
    CHECK("data\n\ndata\ndata\n\ndata:", {"message", "", 0, ""}, {"message", "\n", 0, ""});
    CHECK("data\n\ndata\ndata\n\ndata:\n\n", {"message", "", 0, ""},
          {"message", "\n", 0, ""}, {"message", "", 0, ""});
}

Test(sse_parse, spec_space_after_colon_is_optional)
{
    CHECK("data:test\n\ndata: test\n\n", {"message", "test", 0, ""},
          {"message", "test", 0, ""});
}

Test(sse_parse, spec_event_types_example)
{
    CHECK("event: add\ndata: 73857293\n\nevent: remove\ndata: 2153\n\n"
          "event: add\ndata: 113411\n\n",
          {"add", "73857293", 0, ""}, {"remove", "2153", 0, ""}, {"add", "113411", 0, ""});
}

Test(sse_parse, blank_lines_alone_dispatch_nothing)
{
    CHECK_NONE("\n\n\n\n");
    CHECK_NONE("\r\n\r\n\r\r");
    CHECK_NONE("event: x\n\nid\n\nretry: 5\n\n:c\n\n");
}

/* ------------------------------------------------------------------ */
/* Parser: lines                                                       */
/* ------------------------------------------------------------------ */

Test(sse_parse, every_line_ending_gives_the_same_messages)
{
    static const char *const streams[] = {
        "event: a\ndata: 1\ndata:  2\n\nid: 7\ndata\n\n: c\ndata: x:y\n\n",
        "event: a\r\ndata: 1\r\ndata:  2\r\n\r\nid: 7\r\ndata\r\n\r\n: c\r\ndata: x:y\r\n\r\n",
        "event: a\rdata: 1\rdata:  2\r\rid: 7\rdata\r\r: c\rdata: x:y\r\r",
        "event: a\r\ndata: 1\rdata:  2\n\r\nid: 7\rdata\n\r: c\r\ndata: x:y\n\r",
    };
    static const want_msg w[] = {
        {"a", "1\n 2", 0, ""}, {"message", "", 0, "7"}, {"message", "x:y", 0, "7"}};
    for (size_t i = 0; i < sizeof(streams) / sizeof(streams[0]); i++) {
        result r = check_stream(streams[i], strlen(streams[i]), w, 3);
        result_free(&r);
    }
}

Test(sse_parse, crlf_split_across_feeds_is_one_line_end)
{
    result r = {0};
    evs_sse_parser *p;
    ASSERT_RC(evs_sse_parser_create(&p, NULL), 0);
    ASSERT_RC(evs_sse_parser_feed(p, "data: a\r", 8, NULL, collect, &r), 0);
    ASSERT_RC(evs_sse_parser_feed(p, "\n", 1, NULL, collect, &r), 0);
    ASSERT_RC(evs_sse_parser_feed(p, "data: b\r", 8, NULL, collect, &r), 0);
    cr_assert_eq(r.n, 0, "the LF after a CR is not a blank line");
    ASSERT_RC(evs_sse_parser_feed(p, "\n\r", 2, NULL, collect, &r), 0);
    cr_assert_eq(r.n, 1);
    cr_assert_str_eq(r.v[0].data.p, "a\nb");
    /* An LF after the CR that ended a blank line is still part of it. */
    ASSERT_RC(evs_sse_parser_feed(p, "\ndata: c\n\n", 10, NULL, collect, &r), 0);
    cr_assert_eq(r.n, 2);
    cr_assert_str_eq(r.v[1].data.p, "c");
    evs_sse_parser_destroy(p);
    result_free(&r);
}

Test(sse_parse, field_without_colon_has_an_empty_value)
{
    CHECK("data\ndata\n\n", {"message", "\n", 0, ""});
    CHECK("event\ndata: x\n\n", {"message", "x", 0, ""});
    CHECK("id: 4\n\nid\ndata: x\n\n", {"message", "x", 0, ""});
}

Test(sse_parse, only_one_leading_space_is_removed)
{
    CHECK("data:x\n\ndata: x\n\ndata:  x\n\ndata:\tx\n\ndata: \n\n",
          {"message", "x", 0, ""}, {"message", "x", 0, ""}, {"message", " x", 0, ""},
          {"message", "\tx", 0, ""}, {"message", "", 0, ""});
    CHECK("event:  sp\ndata: 1\n\n", {" sp", "1", 0, ""});
    CHECK("id:  3\ndata: 1\n\n", {"message", "1", 0, " 3"});
}

Test(sse_parse, value_may_contain_colons)
{
    CHECK("data: a:b: c\n\nevent::x:\ndata::\n\n", {"message", "a:b: c", 0, ""},
          {":x:", ":", 0, ""});
}

Test(sse_parse, comments_are_ignored_wherever_they_are)
{
    CHECK(":\n: x\n:data: no\ndata: 1\n: between\ndata: 2\n\n", {"message", "1\n2", 0, ""});
}

Test(sse_parse, unknown_fields_are_ignored_and_names_are_case_sensitive)
{
    CHECK("foo: bar\nDATA: no\nData: no\n data: no\ndata : no\nevents: no\nidd: 1\n"
          "data: yes\n\n",
          {"message", "yes", 0, ""});
}

Test(sse_parse, nul_in_data_and_event_is_kept)
{
    const char s[] = "event: a\0b\ndata: x\0y\n\n";
    result r = parse_every_way(s, sizeof(s) - 1, 0);
    cr_assert_eq(r.n, 1);
    cr_assert(b_eq(&r.v[0].event, "a\0b", 3));
    cr_assert(b_eq(&r.v[0].data, "x\0y", 3));
    result_free(&r);
}

/* ------------------------------------------------------------------ */
/* Parser: dispatch, event type, id, retry                             */
/* ------------------------------------------------------------------ */

Test(sse_parse, event_type_resets_after_each_dispatch)
{
    CHECK("event: a\ndata: 1\n\ndata: 2\n\n", {"a", "1", 0, ""}, {"message", "2", 0, ""});
    /* Also when the dispatch finds no data. */
    CHECK("event: a\n\ndata: 2\n\n", {"message", "2", 0, ""});
    /* The last event field wins; an empty one means "message". */
    CHECK("event: a\nevent: b\ndata: x\n\nevent: a\nevent:\ndata: y\n\n", {"b", "x", 0, ""},
          {"message", "y", 0, ""});
}

Test(sse_parse, last_event_id_persists_across_messages)
{
    CHECK("id: 5\ndata: a\n\ndata: b\n\nid: 6\ndata: c\n\nid\ndata: d\n\ndata: e\n\n",
          {"message", "a", 0, "5"}, {"message", "b", 0, "5"}, {"message", "c", 0, "6"},
          {"message", "d", 0, ""}, {"message", "e", 0, ""});
    /* An id line anywhere in the block counts. */
    CHECK("data: a\nid: 9\n\n", {"message", "a", 0, "9"});
}

Test(sse_parse, id_containing_nul_is_ignored)
{
    CHECK("id: 1\ndata: a\n\nid: 2\0x\ndata: b\n\nid: \0\ndata: c\n\n",
          {"message", "a", 0, "1"}, {"message", "b", 0, "1"}, {"message", "c", 0, "1"});
}

Test(sse_parse, last_id_is_set_by_the_blank_line_even_without_data)
{
    result r = {0};
    evs_sse_parser *p;
    ASSERT_RC(evs_sse_parser_create(&p, NULL), 0);
    size_t n = 7;
    cr_assert_str_eq(evs_sse_parser_last_id(p, &n), "");
    cr_assert_eq(n, 0);
    ASSERT_RC(evs_sse_parser_feed(p, "id: 3\n", 6, NULL, collect, &r), 0);
    cr_assert_str_eq(evs_sse_parser_last_id(p, NULL), "", "set only at dispatch");
    ASSERT_RC(evs_sse_parser_feed(p, "\n", 1, NULL, collect, &r), 0);
    cr_assert_str_eq(evs_sse_parser_last_id(p, &n), "3");
    cr_assert_eq(n, 1);
    cr_assert_eq(r.n, 0);
    /* A message that never ends does not change it. */
    ASSERT_RC(evs_sse_parser_feed(p, "id: 4\ndata: x\n", 14, NULL, collect, &r), 0);
    cr_assert_str_eq(evs_sse_parser_last_id(p, NULL), "3");
    evs_sse_parser_destroy(p);
    result_free(&r);
}

Test(sse_parse, retry_takes_ascii_digits_only)
{
    static const struct {
        const char *s;
        int64_t want;
    } v[] = {
        {"retry: 1500\n", 1500},
        {"retry:0\n", 0},
        {"retry: 007\n", 7},
        {"retry: 15x\n", -1},
        {"retry: -1\n", -1},
        {"retry: +1\n", -1},
        {"retry: 1.5\n", -1},
        {"retry:  15\n", -1},
        {"retry: 15 \n", -1},
        {"retry:\n", -1},
        {"retry\n", -1},
        {"retry: \xd9\xa1\n", -1}, /* ARABIC-INDIC DIGIT ONE is not ASCII */
        {"retry: 99999999999999999999999\n", INT64_MAX},
        {"retry: 9223372036854775807\n", INT64_MAX},
        {"retry: 10\nretry: x\n", 10},
        {"retry: 10\nretry: 20\n", 20},
        {"Retry: 10\n", -1},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        result r = parse_every_way(v[i].s, strlen(v[i].s), 0);
        cr_assert_eq(r.retry, v[i].want, "%s: got %lld", v[i].s, (long long)r.retry);
        cr_assert_eq(r.n, 0);
        result_free(&r);
    }
}

/* ------------------------------------------------------------------ */
/* Parser: BOM and UTF-8                                               */
/* ------------------------------------------------------------------ */

Test(sse_parse, one_bom_at_the_start_is_skipped)
{
    CHECK("\xef\xbb\xbf" "data: a\n\n", {"message", "a", 0, ""});
    CHECK("\xef\xbb\xbf\n" "data: a\n\n", {"message", "a", 0, ""});
}

Test(sse_parse, a_second_bom_is_part_of_the_first_line)
{
    /* The field name is then "\uFEFFdata", an unknown field. */
    CHECK("\xef\xbb\xbf\xef\xbb\xbf" "data: a\n\ndata: b\n\n", {"message", "b", 0, ""});
}

Test(sse_parse, bom_after_the_start_is_not_skipped)
{
    CHECK("data: a\n\n\xef\xbb\xbf" "data: b\n\ndata: \xef\xbb\xbf" "c\n\n",
          {"message", "a", 0, ""}, {"message", "\xef\xbb\xbf" "c", 0, ""});
}

Test(sse_parse, partial_bom_begins_the_first_line)
{
    /* EF BB then 'd' is no BOM: the bytes are an ill-formed sequence
     * (one U+FFFD) in front of the field name. */
    CHECK("\xef\xbb" "data: a\n\ndata: b\n\n", {"message", "b", 0, ""});
    CHECK("\xef\xbb\n" "data: b\n\n", {"message", "b", 0, ""});
    CHECK("\xef" "data: a\n\ndata: b\n\n", {"message", "b", 0, ""});
}

Test(sse_parse, input_is_decoded_as_utf8_with_replacement)
{
    CHECK("data: \xc3\xa9\xe2\x82\xac\xf0\x9d\x84\x9e\n\n",
          {"message", "\xc3\xa9\xe2\x82\xac\xf0\x9d\x84\x9e", 0, ""});
    CHECK("data: a\xff" "b\xc3\n\n", {"message", "a\xef\xbf\xbd" "b\xef\xbf\xbd", 0, ""});
    /* A sequence cut by a line end is ill-formed: one U+FFFD. */
    CHECK("data: \xe2\x82\ndata: \xed\xa0\x80\n\n",
          {"message", "\xef\xbf\xbd\n\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd", 0, ""});
    CHECK("event: \xff\ndata: x\nid: \xc0\n\n",
          {"\xef\xbf\xbd", "x", 0, "\xef\xbf\xbd"});
}

/* ------------------------------------------------------------------ */
/* Parser: callback, reset, arguments                                  */
/* ------------------------------------------------------------------ */

Test(sse_parse, callback_return_stops_the_feed_after_that_message)
{
    const char *s = "data: 1\n\ndata: 2\r\n\r\ndata: 3\n\n";
    size_t n = strlen(s);
    result r = {.stop_at = 2};
    evs_sse_parser *p;
    ASSERT_RC(evs_sse_parser_create(&p, NULL), 0);
    size_t used = 0;
    int rc = evs_sse_parser_feed(p, s, n, &used, collect, &r);
    cr_assert_eq(rc, 7, "got %d", rc);
    cr_assert_eq(r.n, 2);
    cr_assert_eq(used, strlen("data: 1\n\ndata: 2\r\n\r"), "used %zu", used);
    r.stop_at = 0;
    size_t used2 = 0;
    ASSERT_RC(evs_sse_parser_feed(p, s + used, n - used, &used2, collect, &r), 0);
    cr_assert_eq(used2, n - used);
    cr_assert_eq(r.n, 3);
    cr_assert_str_eq(r.v[2].data.p, "3");
    evs_sse_parser_destroy(p);
    result_free(&r);
}

Test(sse_parse, null_callback_parses_and_discards)
{
    evs_sse_parser *p;
    ASSERT_RC(evs_sse_parser_create(&p, NULL), 0);
    ASSERT_RC(evs_sse_parser_feed(p, "id: 8\ndata: x\nretry: 9\n\n", 24, NULL, NULL, NULL), 0);
    cr_assert_str_eq(evs_sse_parser_last_id(p, NULL), "8");
    cr_assert_eq(evs_sse_parser_retry(p), 9);
    evs_sse_parser_destroy(p);
}

Test(sse_parse, reset_starts_a_new_stream_and_keeps_id_and_retry)
{
    result r = {0};
    evs_sse_parser *p;
    ASSERT_RC(evs_sse_parser_create(&p, NULL), 0);
    const char *a = "retry: 300\nid: 5\ndata: a\n\nevent: x\ndata: cut";
    ASSERT_RC(evs_sse_parser_feed(p, a, strlen(a), NULL, collect, &r), 0);
    evs_sse_parser_reset(p);
    cr_assert_str_eq(evs_sse_parser_last_id(p, NULL), "5");
    cr_assert_eq(evs_sse_parser_retry(p), 300);
    /* The cut message is gone, a BOM is accepted again, and this stream's
     * own id buffer starts empty: its first dispatch sets the id to "". */
    const char *b = "\xef\xbb\xbf" "data: b\n\nid: 6\ndata: c\n\n";
    ASSERT_RC(evs_sse_parser_feed(p, b, strlen(b), NULL, collect, &r), 0);
    static const want_msg w[] = {
        {"message", "a", 0, "5"}, {"message", "b", 0, ""}, {"message", "c", 0, "6"}};
    assert_msgs(&r, w, 3, "after reset");
    evs_sse_parser_reset(NULL);
    evs_sse_parser_destroy(p);
    result_free(&r);
}

Test(sse_parse, reset_mid_crlf_forgets_the_pending_lf)
{
    result r = {0};
    evs_sse_parser *p;
    ASSERT_RC(evs_sse_parser_create(&p, NULL), 0);
    ASSERT_RC(evs_sse_parser_feed(p, "data: a\r", 8, NULL, collect, &r), 0);
    evs_sse_parser_reset(p);
    ASSERT_RC(evs_sse_parser_feed(p, "\ndata: b\n\n", 10, NULL, collect, &r), 0);
    static const want_msg w[] = {{"message", "b", 0, ""}};
    assert_msgs(&r, w, 1, "after reset");
    evs_sse_parser_destroy(p);
    result_free(&r);
}

Test(sse_parse, bad_arguments_are_einval)
{
    evs_sse_parser *p = (evs_sse_parser *)1;
    ASSERT_RC(evs_sse_parser_create(NULL, NULL), EVS_EINVAL);
    evs_sse_parser_opts o = {.max_message = 1};
    ASSERT_RC(evs_sse_parser_create(&p, &o), EVS_EINVAL);
    cr_assert_null(p);
    o.max_message = EVS__SSE_MIN_MAX - 1;
    ASSERT_RC(evs_sse_parser_create(&p, &o), EVS_EINVAL);
    o.max_message = SIZE_MAX;
    ASSERT_RC(evs_sse_parser_create(&p, &o), EVS_EINVAL);
    o.max_message = EVS__SSE_MIN_MAX;
    ASSERT_RC(evs_sse_parser_create(&p, &o), 0);
    size_t used = 5;
    ASSERT_RC(evs_sse_parser_feed(NULL, "x", 1, &used, NULL, NULL), EVS_EINVAL);
    cr_assert_eq(used, 0);
    ASSERT_RC(evs_sse_parser_feed(p, NULL, 1, NULL, NULL, NULL), EVS_EINVAL);
    ASSERT_RC(evs_sse_parser_feed(p, NULL, 0, &used, NULL, NULL), 0);
    cr_assert_eq(used, 0);
    evs_sse_parser_destroy(p);
    evs_sse_parser_destroy(NULL);
    cr_assert_eq(evs_sse_parser_retry(NULL), -1);
    cr_assert_eq(evs_sse_parser_dropped(NULL), 0);
    cr_assert_str_eq(evs_sse_parser_last_id(NULL, NULL), "");
}

/* ------------------------------------------------------------------ */
/* Parser: max_message                                                 */
/* ------------------------------------------------------------------ */

/* n copies of c. */
static const char *rep(char c, size_t n)
{
    static char buf[4][1 << 12];
    static int k;
    char *b = buf[k++ & 3];
    cr_assert_lt(n, sizeof(buf[0]));
    memset(b, c, n);
    b[n] = '\0';
    return b;
}

static result parse_limited(const char *s, size_t max)
{
    return parse_every_way(s, strlen(s), max);
}

Test(sse_limit, message_at_the_limit_is_dispatched_and_one_past_is_dropped)
{
    /* The message's size is its event type plus its data buffer, each
     * data line counted with its LF: here 2 + (58 + 1) + (2 + 1) = 64. */
    bytes s = {0};
    b_str(&s, "event: ab\ndata:");
    b_str(&s, rep('x', 58));
    b_str(&s, "\ndata:xx\n\n");
    result r = parse_limited(s.p, 64);
    cr_assert_eq(r.n, 1, "a 64-byte message fits");
    cr_assert_eq(r.dropped, 0);
    cr_assert_eq(r.v[0].data.n, 58 + 1 + 2);
    result_free(&r);
    free(s.p);

    memset(&s, 0, sizeof(s));
    b_str(&s, "event: ab\ndata:");
    b_str(&s, rep('x', 58));
    b_str(&s, "\ndata:xxx\n\ndata: next\n\n"); /* 65: dropped */
    r = parse_limited(s.p, 64);
    cr_assert_eq(r.dropped, 1);
    cr_assert_eq(r.n, 1);
    cr_assert_str_eq(r.v[0].data.p, "next");
    cr_assert_str_eq(r.v[0].event.p, "message", "the dropped type does not leak");
    result_free(&r);
    free(s.p);
}

Test(sse_limit, overlong_data_line_drops_its_message)
{
    bytes s = {0};
    b_str(&s, "id: 1\ndata: a\ndata: ");
    b_str(&s, rep('y', 100));
    b_str(&s, "\ndata: b\nid: 2\n\ndata: ok\n\n");
    result r = parse_limited(s.p, 64);
    cr_assert_eq(r.dropped, 1);
    static const want_msg w[] = {{"message", "ok", 0, "2"}};
    assert_msgs(&r, w, 1, "overlong data");
    result_free(&r);
    free(s.p);
}

Test(sse_limit, line_of_exactly_max_bytes_is_kept)
{
    bytes s = {0};
    b_str(&s, "data:");
    b_str(&s, rep('z', 59)); /* a 64-byte line */
    b_str(&s, "\n\n");
    result r = parse_limited(s.p, 64);
    cr_assert_eq(r.n, 1);
    cr_assert_eq(r.v[0].data.n, 59);
    result_free(&r);
    free(s.p);
}

Test(sse_limit, overlong_event_and_id_lines_drop_their_message)
{
    bytes s = {0};
    b_str(&s, "event: ");
    b_str(&s, rep('e', 80));
    b_str(&s, "\ndata: a\n\nid: 3\n\ndata: b\nid: ");
    b_str(&s, rep('9', 80));
    b_str(&s, "\n\ndata: c\n\n");
    result r = parse_limited(s.p, 64);
    cr_assert_eq(r.dropped, 2);
    static const want_msg w[] = {{"message", "c", 0, "3"}};
    assert_msgs(&r, w, 1, "overlong event and id");
    result_free(&r);
    free(s.p);
}

Test(sse_limit, overlong_comment_unknown_and_retry_lines_are_ignored)
{
    bytes s = {0};
    b_str(&s, ":");
    b_str(&s, rep('c', 200));
    b_str(&s, "\nfoo: ");
    b_str(&s, rep('f', 200));
    b_str(&s, "\n");
    b_str(&s, rep('g', 200)); /* a field name with no colon */
    b_str(&s, "\nretry: ");
    b_str(&s, rep('1', 100));
    b_str(&s, "\ndata: kept\n\n");
    result r = parse_limited(s.p, 64);
    cr_assert_eq(r.dropped, 0);
    cr_assert_eq(r.retry, -1);
    static const want_msg w[] = {{"message", "kept", 0, ""}};
    assert_msgs(&r, w, 1, "ignored lines");
    result_free(&r);
    free(s.p);
}

Test(sse_limit, invalid_utf8_counts_as_its_decoded_size)
{
    /* 30 bytes of 0xFF decode to 90 bytes: over 64. */
    bytes s = {0};
    b_str(&s, "data: ");
    b_str(&s, rep('\xff', 30));
    b_str(&s, "\n\ndata: ok\n\n");
    result r = parse_limited(s.p, 64);
    cr_assert_eq(r.dropped, 1);
    cr_assert_eq(r.n, 1);
    result_free(&r);
    free(s.p);
}

Test(sse_limit, dropped_message_still_applies_its_id_and_retry)
{
    bytes s = {0};
    b_str(&s, "id: 41\nretry: 77\ndata: ");
    b_str(&s, rep('x', 70));
    b_str(&s, "\nid: 42\nretry: 78\n\n");
    result r = parse_limited(s.p, 64);
    cr_assert_eq(r.dropped, 1);
    cr_assert_eq(r.n, 0);
    cr_assert_str_eq(r.last_id.p, "42");
    cr_assert_eq(r.retry, 78);
    result_free(&r);
    free(s.p);
}

Test(sse_limit, endless_line_uses_bounded_memory)
{
    evs_sse_parser *p;
    evs_sse_parser_opts o = {.max_message = 4096};
    ASSERT_RC(evs_sse_parser_create(&p, &o), 0);
    result r = {0};
    char chunk[1000];
    memset(chunk, 'a', sizeof(chunk));
    ASSERT_RC(evs_sse_parser_feed(p, "data: ", 6, NULL, collect, &r), 0);
    /* 10 MB of one line: after the limit nothing more is stored, so no
     * allocation happens (injection would fail the next one). */
    for (int i = 0; i < 10; i++)
        ASSERT_RC(evs_sse_parser_feed(p, chunk, sizeof(chunk), NULL, collect, &r), 0);
    evs__alloc_fail_after(0);
    for (int i = 0; i < 10000; i++)
        ASSERT_RC(evs_sse_parser_feed(p, chunk, sizeof(chunk), NULL, collect, &r), 0);
    /* The same for an endless comment and an endless unknown field. */
    ASSERT_RC(evs_sse_parser_feed(p, "\n\n:", 3, NULL, collect, &r), 0);
    for (int i = 0; i < 1000; i++)
        ASSERT_RC(evs_sse_parser_feed(p, chunk, sizeof(chunk), NULL, collect, &r), 0);
    evs__alloc_fail_after(-1);
    ASSERT_RC(evs_sse_parser_feed(p, "\ndata: ok\n\n", 11, NULL, collect, &r), 0);
    cr_assert_eq(evs_sse_parser_dropped(p), 1);
    cr_assert_eq(r.n, 1);
    cr_assert_str_eq(r.v[0].data.p, "ok");
    evs_sse_parser_destroy(p);
    result_free(&r);
}

Test(sse_limit, many_data_lines_past_the_limit_are_not_stored)
{
    evs_sse_parser *p;
    evs_sse_parser_opts o = {.max_message = 1000};
    ASSERT_RC(evs_sse_parser_create(&p, &o), 0);
    result r = {0};
    for (int i = 0; i < 200; i++)
        ASSERT_RC(evs_sse_parser_feed(p, "data: 0123456789\n", 17, NULL, collect, &r), 0);
    evs__alloc_fail_after(0);
    for (int i = 0; i < 100000; i++)
        ASSERT_RC(evs_sse_parser_feed(p, "data: 0123456789\n", 17, NULL, collect, &r), 0);
    ASSERT_RC(evs_sse_parser_feed(p, "\n", 1, NULL, collect, &r), 0);
    evs__alloc_fail_after(-1);
    cr_assert_eq(evs_sse_parser_dropped(p), 1);
    cr_assert_eq(r.n, 0);
    evs_sse_parser_destroy(p);
    result_free(&r);
}

/* ------------------------------------------------------------------ */
/* A whole-input reference parser, written from the standard's steps   */
/* ------------------------------------------------------------------ */

/* The WHATWG "UTF-8 decoder" as the Encoding standard writes it: one
 * U+FFFD per ill-formed subpart, the byte that breaks a sequence read
 * again. */
static void ref_decode(bytes *out, const uint8_t *s, size_t n)
{
    unsigned needed = 0, seen = 0;
    uint8_t lower = 0x80, upper = 0xbf;
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (needed == 0) {
            if (c <= 0x7f) {
                b_add(out, &c, 1);
            } else if (c >= 0xc2 && c <= 0xdf) {
                needed = 1;
                start = i;
            } else if (c >= 0xe0 && c <= 0xef) {
                if (c == 0xe0)
                    lower = 0xa0;
                if (c == 0xed)
                    upper = 0x9f;
                needed = 2;
                start = i;
            } else if (c >= 0xf0 && c <= 0xf4) {
                if (c == 0xf0)
                    lower = 0x90;
                if (c == 0xf4)
                    upper = 0x8f;
                needed = 3;
                start = i;
            } else {
                b_str(out, "\xef\xbf\xbd");
            }
            continue;
        }
        if (c < lower || c > upper) {
            needed = seen = 0;
            lower = 0x80;
            upper = 0xbf;
            b_str(out, "\xef\xbf\xbd");
            i--; /* prepend the byte to the stream */
            continue;
        }
        lower = 0x80;
        upper = 0xbf;
        if (++seen == needed) {
            b_add(out, s + start, needed + 1);
            needed = seen = 0;
        }
    }
    if (needed != 0)
        b_str(out, "\xef\xbf\xbd");
}

/* The standard's steps over the whole input at once: no chunks, no
 * limits, every buffer a plain string. */
static result ref_parse(const uint8_t *s, size_t n)
{
    result r = {0};
    bytes data = {0}, type = {0}, idbuf = {0}, lastid = {0};
    b_str(&data, "");
    b_str(&type, "");
    b_str(&idbuf, "");
    b_str(&lastid, "");
    r.retry = -1;
    size_t i = 0;
    if (n >= 3 && memcmp(s, "\xef\xbb\xbf", 3) == 0)
        i = 3;
    for (;;) {
        size_t j = i;
        while (j < n && s[j] != '\r' && s[j] != '\n')
            j++;
        if (j == n)
            break; /* no line end: pending data is discarded */
        bytes line = {0};
        ref_decode(&line, s + i, j - i);
        b_str(&line, "");
        i = j + 1;
        if (s[j] == '\r' && i < n && s[i] == '\n')
            i++;
        if (line.n == 0) {
            /* Dispatch the event. */
            lastid.n = 0;
            b_add(&lastid, idbuf.p, idbuf.n);
            if (data.n == 0) {
                type.n = 0;
            } else {
                data.n--; /* the last LF */
                evs_sse_message m = {type.n ? type.p : "message", type.n ? type.n : 7,
                                     data.p, data.n, lastid.p, lastid.n};
                data.p[data.n] = '\0';
                collect(&m, &r);
                data.n = type.n = 0;
                data.p[0] = type.p[0] = '\0';
            }
        } else if (line.p[0] != ':') {
            char *colon = memchr(line.p, ':', line.n);
            size_t nl = colon ? (size_t)(colon - line.p) : line.n;
            char *v = colon ? colon + 1 : line.p + line.n;
            size_t vl = line.n - (size_t)(v - line.p);
            if (vl > 0 && v[0] == ' ') {
                v++;
                vl--;
            }
            if (nl == 4 && memcmp(line.p, "data", 4) == 0) {
                b_add(&data, v, vl);
                b_str(&data, "\n");
            } else if (nl == 5 && memcmp(line.p, "event", 5) == 0) {
                type.n = 0;
                b_add(&type, v, vl);
            } else if (nl == 2 && memcmp(line.p, "id", 2) == 0) {
                if (memchr(v, '\0', vl) == NULL) {
                    idbuf.n = 0;
                    b_add(&idbuf, v, vl);
                }
            } else if (nl == 5 && memcmp(line.p, "retry", 5) == 0) {
                bool digits = vl > 0;
                int64_t ms = 0;
                for (size_t k = 0; k < vl && digits; k++) {
                    digits = v[k] >= '0' && v[k] <= '9';
                    int dg = digits ? v[k] - '0' : 0;
                    ms = ms > (INT64_MAX - dg) / 10 ? INT64_MAX : ms * 10 + dg;
                }
                if (digits)
                    r.retry = ms;
            }
        }
        free(line.p);
    }
    b_add(&r.last_id, lastid.p, lastid.n);
    free(data.p);
    free(type.p);
    free(idbuf.p);
    free(lastid.p);
    return r;
}

/* Pieces that make interesting streams. */
static const char *const pieces[] = {
    "data", "data:", "data: ", "event:", "event: ", "id:", "id: ", "id", "retry:",
    "retry: 12", "retry: 3x", ":", " ", "x", "yz", "\xc3\xa9", "\xff", "\xe2\x82",
    "\xf0\x9f\x98\x80", "\0", "\r", "\n", "\r\n", "\n\n", "\r\r", "\xef\xbb\xbf", "foo:",
    ": comment", "data: m\n\n",
};

Test(sse_parse, random_streams_match_the_reference_however_they_are_cut)
{
    rng_state = 0x5555aaaa1234ULL;
    for (int t = 0; t < 1500; t++) {
        bytes s = {0};
        b_str(&s, "");
        if (rnd_below(4) == 0)
            b_str(&s, "\xef\xbb\xbf");
        size_t np = rnd_below(40);
        for (size_t k = 0; k < np; k++) {
            const char *pc = pieces[rnd_below(sizeof(pieces) / sizeof(pieces[0]))];
            b_add(&s, pc, pc[0] == '\0' ? 1 : strlen(pc));
        }
        result want = ref_parse((const uint8_t *)s.p, s.n);
        for (enum chunking how = WHOLE; how <= RANDOM; how++) {
            result got = parse(s.p, s.n, 0, how);
            assert_same_result(&got, &want, "random stream");
            result_free(&got);
        }
        result_free(&want);
        free(s.p);
    }
}

/* ------------------------------------------------------------------ */
/* Round trip: encoder -> parser                                       */
/* ------------------------------------------------------------------ */

/* What a client receives for text: every line end turned into LF, then
 * decoded as UTF-8. */
static void expect_text(bytes *out, const uint8_t *s, size_t n)
{
    bytes lf = {0};
    b_str(&lf, "");
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\r') {
            b_str(&lf, "\n");
            if (i + 1 < n && s[i + 1] == '\n')
                i++;
        } else {
            b_add(&lf, s + i, 1);
        }
    }
    ref_decode(out, (const uint8_t *)lf.p, lf.n);
    b_str(out, "");
    free(lf.p);
}

static const char base64_digits[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void expect_base64(bytes *out, const uint8_t *s, size_t n)
{
    b_str(out, "");
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)s[i + 1] << 8;
        if (i + 2 < n)
            v |= s[i + 2];
        char q[4] = {base64_digits[v >> 18], base64_digits[(v >> 12) & 63],
                     i + 1 < n ? base64_digits[(v >> 6) & 63] : '=',
                     i + 2 < n ? base64_digits[v & 63] : '='};
        b_add(out, q, 4);
    }
}

static const char *const json_docs[] = {
    "{\"a\":1}",
    "[1,\r\n 2,\r\t3]",
    "\"line\\nbreak\"",
    "{\n  \"k\": \"v\",\n  \"n\": null\n}\n",
    " true ",
    "{\"nested\":{\"x\":[{\"y\":\"\\u00e9\\r\"}]}}",
};

/* Random bytes that stress the framing. */
static size_t random_text(uint8_t *buf, size_t cap)
{
    static const char *const atoms[] = {"a", " ", "  ", ":", "\r", "\n", "\r\n", "\n\r",
                                        "\0", "\xc3\xa9", "\xff", "\xe2\x82", "data: x",
                                        "\xef\xbb\xbf", "id: 1", "\t"};
    size_t n = 0, k = rnd_below(12);
    for (size_t i = 0; i < k; i++) {
        const char *a = atoms[rnd_below(sizeof(atoms) / sizeof(atoms[0]))];
        size_t l = a[0] == '\0' ? 1 : strlen(a);
        if (rnd_below(5) == 0) { /* sometimes any byte at all */
            buf[n] = (uint8_t)rnd();
            l = 1;
        } else {
            memcpy(buf + n, a, l);
        }
        n += l;
        cr_assert_lt(n, cap);
    }
    return n;
}

Test(sse_round_trip, random_events_come_back_as_a_client_sees_them, .timeout = 60)
{
    rng_state = 0xabcdef0123ULL;
    for (int round = 0; round < 20; round++) {
        bytes stream = {0}, wants_data[60], wants_type[60], wants_id[60];
        size_t nev = 60;
        int64_t want_retry = -1;
        char last_id[32] = "";
        if (rnd_below(3) == 0)
            b_str(&stream, "\xef\xbb\xbf");
        for (size_t e = 0; e < nev; e++) {
            uint8_t data[256];
            size_t dlen = 0;
            evs_content content = (evs_content)rnd_below(4);
            evs_buf mp = {0};
            memset(&wants_data[e], 0, sizeof(bytes));
            memset(&wants_type[e], 0, sizeof(bytes));
            memset(&wants_id[e], 0, sizeof(bytes));
            switch (content) {
            case EVS_CONTENT_TEXT:
                dlen = random_text(data, sizeof(data));
                expect_text(&wants_data[e], data, dlen);
                break;
            case EVS_CONTENT_JSON: {
                const char *js = json_docs[rnd_below(sizeof(json_docs) / sizeof(json_docs[0]))];
                dlen = strlen(js);
                memcpy(data, js, dlen);
                expect_text(&wants_data[e], data, dlen);
                break;
            }
            case EVS_CONTENT_BINARY:
                dlen = rnd_below(40);
                for (size_t i = 0; i < dlen; i++)
                    data[i] = (uint8_t)rnd();
                expect_base64(&wants_data[e], data, dlen);
                break;
            case EVS_CONTENT_MSGPACK: {
                const char *js = json_docs[rnd_below(sizeof(json_docs) / sizeof(json_docs[0]))];
                ASSERT_RC(evs__json_to_msgpack(js, strlen(js), &mp), 0);
                dlen = mp.len;
                memcpy(data, mp.data, dlen);
                evs_buf rendered = {0};
                ASSERT_RC(evs__mp_to_json(data, dlen, &rendered), 0);
                b_add(&wants_data[e], rendered.data, rendered.len);
                evs_buf_free(&rendered);
                evs_buf_free(&mp);
                break;
            }
            default:
                break;
            }
            /* Type: a built-in, or a random name with no CR, LF or NUL. */
            evs_type type = (evs_type)rnd_below(EVS_TYPE_CUSTOM + 1);
            char name[40];
            if (type == EVS_TYPE_CUSTOM) {
                static const char alpha[] = "ab :Z\t\xc3\xa9\xff\x01-";
                size_t nl = 1 + rnd_below(20);
                for (size_t i = 0; i < nl; i++)
                    name[i] = alpha[rnd_below(sizeof(alpha) - 1)];
                name[nl] = '\0';
            }
            uint64_t id = rnd_below(4) == 0 ? 0 : rnd();
            evs_event *ev = event_of(type, type == EVS_TYPE_CUSTOM ? name : NULL, "topic",
                                     content, data, dlen, NULL, 0, id, TS);
            const char *tn = evs_event_type_name(ev);
            if (strcmp(tn, "message") == 0)
                b_str(&wants_type[e], "message");
            else
                expect_text(&wants_type[e], (const uint8_t *)tn, strlen(tn));
            evs_sse_opts o = {0};
            if (rnd_below(4) == 0)
                o.omit_id = true;
            if (rnd_below(5) == 0)
                want_retry = o.retry_ms = 1 + (int)rnd_below(100000);
            if (id != 0 && !o.omit_id)
                snprintf(last_id, sizeof(last_id), "%llu", (unsigned long long)id);
            b_str(&wants_id[e], last_id);
            evs_buf frame = {0};
            ASSERT_RC(evs_sse_encode_buf(ev, &o, &frame), 0);
            b_add(&stream, frame.data, frame.len);
            evs_buf_free(&frame);
            evs_event_unref(ev);
            if (rnd_below(4) == 0) {
                uint8_t ct[64];
                size_t cl = random_text(ct, sizeof(ct));
                evs_buf c = {0};
                ASSERT_RC(evs_sse_comment(&c, (const char *)ct, cl), 0);
                b_add(&stream, c.data, c.len);
                evs_buf_free(&c);
            }
        }
        for (enum chunking how = WHOLE; how <= RANDOM; how++) {
            result r = parse(stream.p, stream.n, 0, how);
            cr_assert_eq(r.n, nev, "round %d: %zu messages, want %zu", round, r.n, nev);
            for (size_t e = 0; e < nev; e++) {
                cr_assert(b_eq(&r.v[e].data, wants_data[e].p, wants_data[e].n),
                          "round %d event %zu: data '%s', want '%s'", round, e,
                          r.v[e].data.p, wants_data[e].p);
                cr_assert(b_eq(&r.v[e].event, wants_type[e].p, wants_type[e].n),
                          "round %d event %zu: type '%s', want '%s'", round, e,
                          r.v[e].event.p, wants_type[e].p);
                cr_assert(b_eq(&r.v[e].id, wants_id[e].p, wants_id[e].n),
                          "round %d event %zu: id '%s', want '%s'", round, e, r.v[e].id.p,
                          wants_id[e].p);
            }
            cr_assert_eq(r.retry, want_retry);
            cr_assert_eq(r.dropped, 0);
            result_free(&r);
        }
        for (size_t e = 0; e < nev; e++) {
            free(wants_data[e].p);
            free(wants_type[e].p);
            free(wants_id[e].p);
        }
        free(stream.p);
    }
}

/* ------------------------------------------------------------------ */
/* Allocation failure                                                  */
/* ------------------------------------------------------------------ */

Test(sse_alloc, encode_buf_fails_cleanly_at_every_allocation)
{
    evs_event *evs[2];
    ASSERT_RC(evs_event_make(&evs[0], "T", "", "{\"k\":[1,2,\"three\"]}", NULL), 0);
    /* Longer than the buffer's first 64 bytes, so appending must grow it. */
    const char *text = "a\nb\r\nccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";
    evs[1] = text_event(5, "t", text, strlen(text));
    for (int e = 0; e < 2; e++) {
        bytes want = encode(evs[e], NULL);
        int failures = 0;
        for (long k = 0;; k++) {
            cr_assert_lt(k, 100);
            evs_buf b = {0};
            ASSERT_RC(evs_buf_append(&b, "pre", 3), 0);
            evs__alloc_fail_after(k);
            int rc = evs_sse_encode_buf(evs[e], NULL, &b);
            evs__alloc_fail_after(-1);
            if (rc == 0) {
                cr_assert_eq(b.len, 3 + want.n);
                cr_assert_eq(memcmp(b.data + 3, want.p, want.n), 0);
                evs_buf_free(&b);
                break;
            }
            ASSERT_RC(rc, EVS_ENOMEM);
            cr_assert(b.len == 3 && strcmp(b.data, "pre") == 0, "k=%ld: buffer changed", k);
            evs_buf_free(&b);
            failures++;
        }
        cr_assert_gt(failures, 0);
        free(want.p);
    }
    evs_event_unref(evs[0]);
    evs_event_unref(evs[1]);
}

Test(sse_alloc, encode_fails_cleanly_only_for_msgpack_scratch)
{
    evs_event *ev;
    ASSERT_RC(evs_event_make(&ev, NULL, "", "[\"x\"]", NULL), 0);
    char buf[64];
    size_t len = 0;
    evs__alloc_fail_after(0);
    ASSERT_RC(evs_sse_encode(ev, NULL, buf, sizeof(buf), &len), EVS_ENOMEM);
    evs__alloc_fail_after(-1);
    ASSERT_RC(evs_sse_encode(ev, NULL, buf, sizeof(buf), &len), 0);
    cr_assert_eq(len, 13);
    cr_assert_eq(memcmp(buf, "data: [\"x\"]\n\n", 13), 0);
    evs_event_unref(ev);
    /* Text needs no allocation at all. */
    ev = text_event(1, "t", "a\nb", 3);
    evs__alloc_fail_after(0);
    ASSERT_RC(evs_sse_encode(ev, NULL, buf, sizeof(buf), &len), 0);
    cr_assert_eq(evs__alloc_fail_after(-1), 0, "text encoding allocated");
    evs_event_unref(ev);
}

Test(sse_alloc, comment_fails_cleanly)
{
    evs__alloc_fail_after(0);
    evs_buf b = {0};
    ASSERT_RC(evs_sse_comment(&b, "x", 1), EVS_ENOMEM);
    evs__alloc_fail_after(-1);
    cr_assert_eq(b.len, 0);
    cr_assert_null(b.data);
}

Test(sse_alloc, parser_create_fails_cleanly)
{
    evs_sse_parser *p = (evs_sse_parser *)1;
    evs__alloc_fail_after(0);
    ASSERT_RC(evs_sse_parser_create(&p, NULL), EVS_ENOMEM);
    evs__alloc_fail_after(-1);
    cr_assert_null(p);
}

/*
 * Fail the k-th allocation of a parse, for every k: the feed that meets
 * it returns EVS_ENOMEM and says how much it consumed; feeding the rest
 * from there must give exactly what a parse without failure gives.
 */
Test(sse_alloc, feed_resumes_exactly_after_enomem)
{
    const char *s = "\xef\xbb\xbf" "retry: 10\nid: 1\nevent: ab\ndata: one\ndata:  two\n\n"
                    ": c\nid: 2\ndata: \xff\r\n\r\nevent: " "x\revent: yy\rdata: z\r\r"
                    "\xef\xbb" "data: q\n\nid: 3\n\nid: 4\ndata: longer line here\n\n";
    size_t n = strlen(s);
    for (size_t chunk = 1; chunk <= n; chunk = chunk < 8 ? chunk + 1 : chunk * 3) {
        result want = {0};
        {
            evs_sse_parser *p;
            ASSERT_RC(evs_sse_parser_create(&p, NULL), 0);
            for (size_t i = 0; i < n; i += chunk)
                ASSERT_RC(evs_sse_parser_feed(p, s + i, i + chunk <= n ? chunk : n - i, NULL,
                                              collect, &want),
                          0);
            result_finish(&want, p);
            evs_sse_parser_destroy(p);
        }
        cr_assert_eq(want.n, 4);
        for (long k = 0;; k++) {
            cr_assert_lt(k, 1000);
            evs_sse_parser *p;
            ASSERT_RC(evs_sse_parser_create(&p, NULL), 0);
            result got = {0};
            int failures = 0;
            evs__alloc_fail_after(k);
            for (size_t i = 0; i < n; i += chunk) {
                size_t len = i + chunk <= n ? chunk : n - i, off = 0;
                while (off < len) {
                    size_t used = 0;
                    int rc = evs_sse_parser_feed(p, s + i + off, len - off, &used, collect,
                                                 &got);
                    if (rc == 0) {
                        cr_assert_eq(used, len - off);
                        off = len;
                        continue;
                    }
                    ASSERT_RC(rc, EVS_ENOMEM);
                    failures++;
                    off += used;
                }
            }
            evs__alloc_fail_after(-1);
            result_finish(&got, p);
            evs_sse_parser_destroy(p);
            char what[64];
            snprintf(what, sizeof(what), "chunk %zu, failing allocation %ld", chunk, k);
            assert_same_result(&got, &want, what);
            result_free(&got);
            if (failures == 0)
                break;
        }
        result_free(&want);
    }
}
