/*
 * The event wire format: evs_event_to_msgpack / evs_event_from_msgpack.
 * Round trips of every type, content and kind of metadata; the exact
 * bytes; and hostile input (truncation, corruption, deep nesting, huge
 * declared lengths, wrong shapes), which must give an error code or a
 * valid event, never a crash.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"
#include "evs_internal.h"
#include "mpscan.h"
#include "evs_test.h"

static size_t hex(const char *s, uint8_t *out)
{
    size_t n = 0;
    while (*s) {
        if (*s == ' ') {
            s++;
            continue;
        }
        unsigned v;
        cr_assert(sscanf(s, "%2x", &v) == 1, "bad hex at %s", s);
        out[n++] = (uint8_t)v;
        s += 2;
    }
    return n;
}


static void assert_same_event(const evs_event *a, const evs_event *b)
{
    cr_assert_eq(evs_event_id(a), evs_event_id(b));
    cr_assert_eq(evs_event_type(a), evs_event_type(b));
    cr_assert_str_eq(evs_event_type_name(a), evs_event_type_name(b));
    cr_assert_str_eq(evs_event_topic(a), evs_event_topic(b));
    cr_assert_eq(evs_event_content(a), evs_event_content(b));
    cr_assert_eq(evs_event_timestamp(a), evs_event_timestamp(b));
    size_t la, lb;
    const void *da = evs_event_data(a, &la), *db = evs_event_data(b, &lb);
    cr_assert_eq(la, lb, "data length %zu vs %zu", la, lb);
    if (la > 0)
        cr_assert_eq(memcmp(da, db, la), 0, "data differs");
    da = evs_event_meta(a, &la);
    db = evs_event_meta(b, &lb);
    cr_assert_eq(la, lb, "meta length %zu vs %zu", la, lb);
    cr_assert_eq(memcmp(da, db, la), 0, "meta differs");
}

/* Encode, decode, compare, and check that re-encoding is byte-identical. */
static void round_trip(const evs_event *ev)
{
    evs_buf a = {0}, b = {0};
    int rc = evs_event_to_msgpack(ev, &a);
    cr_assert_eq(rc, 0, "encode: got %s", evs_errname(rc));
    evs_event *back;
    rc = evs_event_from_msgpack(&back, a.data, a.len);
    cr_assert_eq(rc, 0, "decode: got %s", evs_errname(rc));
    assert_same_event(ev, back);
    cr_assert_eq(evs_event_published(back), evs_event_id(ev) != 0);
    rc = evs_event_to_msgpack(back, &b);
    cr_assert_eq(rc, 0, "re-encode: got %s", evs_errname(rc));
    cr_assert_eq(a.len, b.len);
    cr_assert_eq(memcmp(a.data, b.data, a.len), 0, "re-encoding differs");
    evs_event_unref(back);
    evs_buf_free(&a);
    evs_buf_free(&b);
}

/* ------------------------------------------------------------------ */
/* Round trips                                                         */
/* ------------------------------------------------------------------ */

Test(codec, exact_bytes_of_a_small_event)
{
    evs_event *ev = event_of(EVS_TYPE_MESSAGE, NULL, "t", EVS_CONTENT_BINARY, "x", 1,
                             NULL, 0, 7, 5);
    evs_buf b = {0};
    cr_assert_eq(evs_event_to_msgpack(ev, &b), 0);
    uint8_t want[128];
    size_t n = hex("87"
                   " a2 6964 07"
                   " a4 74797065 a7 6d657373616765"
                   " a5 746f706963 a1 74"
                   " a7 636f6e74656e74 a6 62696e617279"
                   " a4 64617461 c4 01 78"
                   " a4 6d657461 80"
                   " a2 7473 05",
                   want);
    cr_assert_eq(b.len, n, "len %zu want %zu", b.len, n);
    cr_assert_eq(memcmp(b.data, want, n), 0);
    evs_buf_free(&b);
    evs_event_unref(ev);
}

Test(codec, msgpack_data_and_meta_are_embedded_as_is)
{
    const uint8_t data[] = {0x92, 0x01, 0xc3};
    const uint8_t meta[] = {0x81, 0xa1, 'k', 0xa1, 'v'};
    evs_event *ev = event_of(EVS_TYPE_MESSAGE, NULL, "", EVS_CONTENT_MSGPACK, data,
                             sizeof(data), meta, sizeof(meta), 1, -5);
    evs_buf b = {0};
    cr_assert_eq(evs_event_to_msgpack(ev, &b), 0);
    const uint8_t *v;
    size_t vlen;
    cr_assert_eq(evs__mp_map_find((uint8_t *)b.data, b.len, "data", 4, &v, &vlen), 0);
    cr_assert_eq(vlen, sizeof(data));
    cr_assert_eq(memcmp(v, data, vlen), 0);
    cr_assert_eq(evs__mp_map_find((uint8_t *)b.data, b.len, "meta", 4, &v, &vlen), 0);
    cr_assert_eq(vlen, sizeof(meta));
    cr_assert_eq(memcmp(v, meta, vlen), 0);
    cr_assert_eq(evs__mp_map_find((uint8_t *)b.data, b.len, "ts", 2, &v, &vlen), 0);
    cr_assert_eq(v[0], 0xfb, "ts -5 as a negative fixint");
    evs_buf_free(&b);
    evs_event_unref(ev);
}

Test(codec, every_builtin_type_round_trips)
{
    for (evs_type t = EVS_TYPE_MESSAGE; t < EVS_TYPE_CUSTOM; t++) {
        evs_event *ev = event_of(t, NULL, "a.b", EVS_CONTENT_BINARY, "\x00\xff", 2, NULL,
                                 0, 100 + t, 1795280400000000001);
        round_trip(ev);
        evs_event_unref(ev);
    }
}

Test(codec, custom_type_round_trips)
{
    evs_event *ev = event_of(EVS_TYPE_CUSTOM, "Purchase.Completed", "orders.eu",
                             EVS_CONTENT_TEXT, "hello", 5, NULL, 0, 9, 1);
    round_trip(ev);
    evs_buf b = {0};
    cr_assert_eq(evs_event_to_msgpack(ev, &b), 0);
    evs_event *back;
    cr_assert_eq(evs_event_from_msgpack(&back, b.data, b.len), 0);
    cr_assert_eq(evs_event_type(back), EVS_TYPE_CUSTOM);
    cr_assert_str_eq(evs_event_type_name(back), "Purchase.Completed");
    evs_event_unref(back);
    evs_buf_free(&b);
    evs_event_unref(ev);
}

Test(codec, every_content_round_trips)
{
    const uint8_t mp[] = {0x82, 0xa1, 'a', 0x01, 0xa1, 'b', 0x93, 0xc0, 0xc2, 0xcb,
                          0x3f, 0xf8, 0, 0, 0, 0, 0, 0};
    static const char json[] = " {\"a\": [1, 2.5, \"x\"]} ";
    evs_event *evs[] = {
        event_of(EVS_TYPE_MESSAGE, NULL, "t", EVS_CONTENT_BINARY, "\x00\x01\x02", 3, NULL,
                 0, 1, 0),
        event_of(EVS_TYPE_MESSAGE, NULL, "t", EVS_CONTENT_TEXT, "caf\xc3\xa9", 5, NULL, 0, 2,
                 0),
        event_of(EVS_TYPE_MESSAGE, NULL, "t", EVS_CONTENT_JSON, json, strlen(json), NULL, 0,
                 3, 0),
        event_of(EVS_TYPE_MESSAGE, NULL, "t", EVS_CONTENT_MSGPACK, mp, sizeof(mp), NULL, 0,
                 4, 0),
        event_of(EVS_TYPE_MESSAGE, NULL, "t", EVS_CONTENT_MSGPACK, "\xc0", 1, NULL, 0, 5, 0),
    };
    for (size_t i = 0; i < sizeof(evs) / sizeof(evs[0]); i++) {
        round_trip(evs[i]);
        evs_event_unref(evs[i]);
    }
}

Test(codec, metadata_of_every_kind_round_trips)
{
    evs_event *ev;
    cr_assert_eq(evs_event_create(&ev, EVS_TYPE_ERROR, "m", "d", 1), 0);
    cr_assert_eq(evs_event_meta_set_str(ev, "s", "str"), 0);
    cr_assert_eq(evs_event_meta_set_i64(ev, "i", INT64_MIN), 0);
    cr_assert_eq(evs_event_meta_set_f64(ev, "f", 0.25), 0);
    cr_assert_eq(evs_event_meta_set_bool(ev, "b", true), 0);
    const uint8_t raw[] = {0x92, 0xc4, 0x01, 0x00, 0xd4, 0x01, 0x02};
    cr_assert_eq(evs_event_meta_set_raw(ev, "r", raw, sizeof(raw)), 0);
    round_trip(ev);

    evs_buf b = {0};
    cr_assert_eq(evs_event_to_msgpack(ev, &b), 0);
    evs_event *back;
    cr_assert_eq(evs_event_from_msgpack(&back, b.data, b.len), 0);
    int64_t i;
    cr_assert_eq(evs_event_meta_get_i64(back, "i", &i), 0);
    cr_assert_eq(i, INT64_MIN);
    const char *s;
    size_t sl;
    cr_assert_eq(evs_event_meta_get_str(back, "s", &s, &sl), 0);
    cr_assert_eq(sl, 3);
    cr_assert_eq(memcmp(s, "str", 3), 0);
    evs_event_unref(back);
    evs_buf_free(&b);
    evs_event_unref(ev);
}

Test(codec, metadata_values_at_max_depth_round_trip)
{
    uint8_t deep[EVS_MAX_DEPTH + 1];
    memset(deep, 0x91, EVS_MAX_DEPTH);
    deep[EVS_MAX_DEPTH] = 0x01;
    evs_event *ev;
    cr_assert_eq(evs_event_create(&ev, EVS_TYPE_MESSAGE, "t", deep, sizeof(deep)), 0);
    cr_assert_eq(evs_event_set_content(ev, EVS_CONTENT_MSGPACK), 0);
    cr_assert_eq(evs_event_meta_set_raw(ev, "deep", deep, sizeof(deep)), 0);
    round_trip(ev);
    evs_event_unref(ev);
}

Test(codec, empty_topic_empty_data_and_unpublished_event_round_trip)
{
    evs_event *ev;
    cr_assert_eq(evs_event_create(&ev, EVS_TYPE_CONNECT, NULL, NULL, 0), 0);
    round_trip(ev);
    cr_assert_eq(evs_event_set_content(ev, EVS_CONTENT_TEXT), 0);
    round_trip(ev);
    evs_event_unref(ev);
}

Test(codec, large_data_and_longest_topic_round_trip)
{
    size_t n = (1u << 20) + 3; /* past bin16 and bin32's smallest sizes */
    uint8_t *d = malloc(n);
    for (size_t i = 0; i < n; i++)
        d[i] = (uint8_t)(i * 31 + 7);
    char *topic = malloc(EVS_MAX_TOPIC + 1);
    memset(topic, 'x', EVS_MAX_TOPIC);
    topic[EVS_MAX_TOPIC] = '\0';
    char name[EVS_MAX_TYPE_NAME + 1];
    memset(name, 'n', EVS_MAX_TYPE_NAME);
    name[EVS_MAX_TYPE_NAME] = '\0';
    evs_event *ev = event_of(EVS_TYPE_CUSTOM, name, topic, EVS_CONTENT_BINARY, d, n, NULL,
                             0, UINT64_MAX, INT64_MAX);
    round_trip(ev);
    evs_event_unref(ev);
    ev = event_of(EVS_TYPE_MESSAGE, NULL, "t", EVS_CONTENT_TEXT, d, 70000, NULL, 0,
                  1, INT64_MIN);
    round_trip(ev);
    evs_event_unref(ev);
    free(d);
    free(topic);
}

Test(codec, keys_in_any_order_and_unknown_keys_are_accepted)
{
    uint8_t b[128];
    /* ts, unknown, data, content, topic, type, id - with "meta" absent. */
    size_t n = hex("87"
                   " a2 7473 d0 9c"                       /* ts: -100 */
                   " a5 6578747261 92 01 81 01 02"        /* extra: [1, {1: 2}] */
                   " a4 64617461 a1 78"                   /* data: "x" (msgpack) */
                   " a7 636f6e74656e74 a7 6d7367706163 6b" /* content: msgpack */
                   " a5 746f706963 a0"                    /* topic: "" */
                   " a4 74797065 a5 6572726f72"           /* type: error */
                   " a2 6964 cd 01 00",                   /* id: 256 */
                   b);
    evs_event *ev;
    int rc = evs_event_from_msgpack(&ev, b, n);
    cr_assert_eq(rc, 0, "got %s", evs_errname(rc));
    cr_assert_eq(evs_event_id(ev), 256);
    cr_assert_eq(evs_event_type(ev), EVS_TYPE_ERROR);
    cr_assert_str_eq(evs_event_type_name(ev), "error");
    cr_assert_str_eq(evs_event_topic(ev), "");
    cr_assert_eq(evs_event_content(ev), EVS_CONTENT_MSGPACK);
    cr_assert_eq(evs_event_timestamp(ev), -100);
    size_t len;
    const uint8_t *d = evs_event_data(ev, &len);
    cr_assert_eq(len, 2);
    cr_assert_eq(memcmp(d, "\xa1x", 2), 0);
    const uint8_t *m = evs_event_meta(ev, &len);
    cr_assert_eq(len, 1);
    cr_assert_eq(m[0], 0x80, "no meta reads as the empty map");
    cr_assert(evs_event_published(ev));
    evs_event_unref(ev);
}

Test(codec, nonzero_id_decodes_published_and_sealed)
{
    evs_event *src = event_of(EVS_TYPE_MESSAGE, NULL, "t", EVS_CONTENT_BINARY, "", 0, NULL,
                              0, 3, 0);
    evs_buf b = {0};
    cr_assert_eq(evs_event_to_msgpack(src, &b), 0);
    evs_event *ev;
    cr_assert_eq(evs_event_from_msgpack(&ev, b.data, b.len), 0);
    cr_assert(evs_event_published(ev));
    int rc = evs_event_set_type_name(ev, "x");
    cr_assert_eq(rc, EVS_ESEALED, "got %s", evs_errname(rc));
    rc = evs_event_meta_set_str(ev, "k", "v");
    cr_assert_eq(rc, EVS_ESEALED, "got %s", evs_errname(rc));
    evs_event_unref(ev);
    evs_event_unref(src);
    evs_buf_free(&b);
}

Test(codec, zero_id_decodes_unpublished_and_mutable)
{
    evs_event *src = event_of(EVS_TYPE_MESSAGE, NULL, "t", EVS_CONTENT_BINARY, "", 0, NULL,
                              0, 0, 0);
    evs_buf b = {0};
    cr_assert_eq(evs_event_to_msgpack(src, &b), 0);
    evs_event *ev;
    cr_assert_eq(evs_event_from_msgpack(&ev, b.data, b.len), 0);
    cr_assert_not(evs_event_published(ev));
    int rc = evs_event_set_type_name(ev, "x");
    cr_assert_eq(rc, 0, "got %s", evs_errname(rc));
    evs_event_unref(ev);
    evs_event_unref(src);
    evs_buf_free(&b);
}

Test(codec, encode_appends_and_null_args_are_einval)
{
    evs_event *ev = event_of(EVS_TYPE_MESSAGE, NULL, "t", EVS_CONTENT_BINARY, "", 0, NULL,
                             0, 1, 0);
    evs_buf b = {0};
    cr_assert_eq(evs_buf_append(&b, "\xc0", 1), 0);
    cr_assert_eq(evs_event_to_msgpack(ev, &b), 0);
    cr_assert_eq((uint8_t)b.data[0], 0xc0);
    cr_assert_eq((uint8_t)b.data[1], 0x87);
    int rc = evs_event_to_msgpack(NULL, &b);
    cr_assert_eq(rc, EVS_EINVAL, "got %s", evs_errname(rc));
    rc = evs_event_to_msgpack(ev, NULL);
    cr_assert_eq(rc, EVS_EINVAL, "got %s", evs_errname(rc));
    evs_event *out = (evs_event *)&b;
    rc = evs_event_from_msgpack(&out, NULL, 5);
    cr_assert_eq(rc, EVS_EINVAL, "got %s", evs_errname(rc));
    cr_assert_null(out);
    rc = evs_event_from_msgpack(NULL, b.data, b.len);
    cr_assert_eq(rc, EVS_EINVAL, "got %s", evs_errname(rc));
    rc = evs_event_from_msgpack(&out, "", 0);
    cr_assert_eq(rc, EVS_EBADMSG, "got %s", evs_errname(rc));
    evs_buf_free(&b);
    evs_event_unref(ev);
}

/* ------------------------------------------------------------------ */
/* Hostile input                                                       */
/* ------------------------------------------------------------------ */

/* A valid encoding with a little of everything, for corruption. */
static evs_buf sample(void)
{
    const uint8_t mp[] = {0x82, 0xa1, 'a', 0x01, 0xa1, 'b', 0x92, 0xc3, 0xa0};
    const uint8_t meta[] = {0x82, 0xa1, 'k', 0xa1, 'v', 0xa1, 'n', 0xcd, 0x01, 0x00};
    evs_event *ev = event_of(EVS_TYPE_CUSTOM, "kind", "a.b", EVS_CONTENT_MSGPACK, mp,
                             sizeof(mp), meta, sizeof(meta), 77, 1795280400000000001);
    evs_buf b = {0};
    cr_assert_eq(evs_event_to_msgpack(ev, &b), 0);
    evs_event_unref(ev);
    return b;
}

/* Decode a heap copy of exactly len bytes (so ASan sees overreads). */
static int decode_copy(const void *p, size_t len, evs_event **out)
{
    uint8_t *c = malloc(len ? len : 1);
    memcpy(c, p, len);
    int rc = evs_event_from_msgpack(out, c, len);
    free(c);
    return rc;
}

Test(codec, declared_four_billion_elements_is_ebadmsg)
{
    const uint8_t b[] = {0xdd, 0xff, 0x00, 0x00, 0x00};
    evs_event *ev;
    int rc = decode_copy(b, sizeof(b), &ev);
    cr_assert_eq(rc, EVS_EBADMSG, "got %s", evs_errname(rc));
    cr_assert_null(ev);
}

Test(codec, every_truncation_is_ebadmsg)
{
    evs_buf b = sample();
    for (size_t cut = 0; cut < b.len; cut++) {
        evs_event *ev = (evs_event *)&b;
        int rc = decode_copy(b.data, cut, &ev);
        cr_assert_eq(rc, EVS_EBADMSG, "cut at %zu: got %s", cut, evs_errname(rc));
        cr_assert_null(ev);
    }
    evs_buf_free(&b);
}

Test(codec, trailing_bytes_are_ebadmsg)
{
    evs_buf b = sample();
    cr_assert_eq(evs_buf_append(&b, "\xc0", 1), 0);
    evs_event *ev;
    int rc = decode_copy(b.data, b.len, &ev);
    cr_assert_eq(rc, EVS_EBADMSG, "got %s", evs_errname(rc));
    evs_buf_free(&b);
}

Test(codec, every_single_byte_corruption_is_an_error_or_a_valid_event)
{
    evs_buf b = sample();
    uint8_t *c = malloc(b.len);
    int ok = 0, bad = 0;
    for (size_t pos = 0; pos < b.len; pos++) {
        for (unsigned v = 0; v < 256; v++) {
            memcpy(c, b.data, b.len);
            if (c[pos] == v)
                continue;
            c[pos] = (uint8_t)v;
            evs_event *ev;
            int rc = evs_event_from_msgpack(&ev, c, b.len);
            if (rc == 0) {
                /* A valid event: every accessor works and it re-encodes. */
                evs_buf r = {0};
                cr_assert_eq(evs_event_to_msgpack(ev, &r), 0);
                cr_assert_not_null(evs_event_type_name(ev));
                cr_assert_not_null(evs_event_topic(ev));
                evs_buf_free(&r);
                evs_event_unref(ev);
                ok++;
            } else {
                cr_assert(rc == EVS_EBADMSG || rc == EVS_ETOOBIG,
                          "pos %zu value %02x: got %s", pos, v, evs_errname(rc));
                cr_assert_null(ev);
                bad++;
            }
        }
    }
    cr_assert_gt(ok, 0);
    cr_assert_gt(bad, 0);
    free(c);
    evs_buf_free(&b);
}

/* Build a message from key/value pairs given as encoded msgpack. */
typedef struct {
    const char *key;
    const char *hex; /* encoded value; NULL leaves the pair out */
} kv;

static int decode_kvs(const kv *kvs, size_t n, evs_event **out)
{
    evs_buf b = {0};
    msgpack_packer pk;
    evs__mp_packer_init(&pk, &b);
    uint32_t count = 0;
    for (size_t i = 0; i < n; i++)
        count += kvs[i].hex != NULL;
    cr_assert_eq(msgpack_pack_map(&pk, count), 0);
    for (size_t i = 0; i < n; i++) {
        if (kvs[i].hex == NULL)
            continue;
        uint8_t v[256];
        size_t vl = hex(kvs[i].hex, v);
        cr_assert_eq(msgpack_pack_str_with_body(&pk, kvs[i].key, strlen(kvs[i].key)), 0);
        cr_assert_eq(evs_buf_append(&b, v, vl), 0);
    }
    int rc = decode_copy(b.data, b.len, out);
    evs_buf_free(&b);
    return rc;
}

/* The fields of a valid message; tests replace one at a time. */
#define BASE_FIELDS(id, type, topic, content, data, meta, ts)                     \
    {{"id", id}, {"type", type}, {"topic", topic}, {"content", content},          \
     {"data", data}, {"meta", meta}, {"ts", ts}}
#define ID      "07"
#define TYPE    "a7 6d657373616765"      /* "message" */
#define TOPIC   "a1 74"                  /* "t" */
#define BINARY  "a6 62696e617279"        /* "binary" */
#define DATA    "c4 01 78"
#define META    "81 a1 6b a1 76"         /* {"k": "v"} */
#define TS      "05"

Test(codec, the_base_message_decodes)
{
    kv f[] = BASE_FIELDS(ID, TYPE, TOPIC, BINARY, DATA, META, TS);
    evs_event *ev;
    int rc = decode_kvs(f, 7, &ev);
    cr_assert_eq(rc, 0, "got %s", evs_errname(rc));
    const char *v;
    size_t vl;
    cr_assert_eq(evs_event_meta_get_str(ev, "k", &v, &vl), 0);
    cr_assert_eq(vl, 1);
    evs_event_unref(ev);
}

Test(codec, each_missing_required_key_is_ebadmsg)
{
    for (size_t drop = 0; drop < 7; drop++) {
        kv f[] = BASE_FIELDS(ID, TYPE, TOPIC, BINARY, DATA, META, TS);
        f[drop].hex = NULL;
        evs_event *ev;
        int rc = decode_kvs(f, 7, &ev);
        if (strcmp(f[drop].key, "meta") == 0) {
            cr_assert_eq(rc, 0, "meta is optional: got %s", evs_errname(rc));
            evs_event_unref(ev);
        } else {
            cr_assert_eq(rc, EVS_EBADMSG, "without %s: got %s", f[drop].key,
                         evs_errname(rc));
            cr_assert_null(ev);
        }
    }
}

Test(codec, wrong_value_types_are_ebadmsg)
{
    static const struct {
        unsigned field;
        const char *hex, *why;
    } v[] = {
        {0, "a1 37", "id as a string"},
        {0, "ff", "negative id"},
        {0, "cb 3f f0 00 00 00 00 00 00", "id as a float"},
        {1, "01", "type as an int"},
        {1, "a0", "empty type name"},
        {1, "a3 61 0a 62", "type name with LF"},
        {1, "a3 61 0d 62", "type name with CR"},
        {1, "a3 61 00 62", "type name with NUL"},
        {1, "c4 01 61", "type as bin"},
        {2, "c4 01 74", "topic as bin"},
        {2, "a3 61 00 62", "topic with NUL"},
        {2, "c0", "topic nil"},
        {3, "a3 78 6d 6c", "unknown content"},
        {3, "a7 4d 53 47 50 41 43 4b", "content in capitals"},
        {3, "02", "content as an int"},
        {4, "a1 78", "binary data as a str"},
        {4, "c0", "binary data nil"},
        {5, "91 01", "meta as an array"},
        {5, "a0", "meta as a string"},
        {5, "81 01 02", "meta with an int key"},
        {6, "cb 3f f0 00 00 00 00 00 00", "ts as a float"},
        {6, "cf 80 00 00 00 00 00 00 00", "ts past INT64_MAX"},
        {6, "a1 35", "ts as a string"},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        kv f[] = BASE_FIELDS(ID, TYPE, TOPIC, BINARY, DATA, META, TS);
        f[v[i].field].hex = v[i].hex;
        evs_event *ev;
        int rc = decode_kvs(f, 7, &ev);
        cr_assert_eq(rc, EVS_EBADMSG, "%s: got %s", v[i].why, evs_errname(rc));
        cr_assert_null(ev);
    }
}

Test(codec, json_content_must_hold_one_json_value)
{
    kv f[] = BASE_FIELDS(ID, TYPE, TOPIC, "a4 6a736f6e", "c4 03 5b 31 5d", META, TS);
    evs_event *ev;
    int rc = decode_kvs(f, 7, &ev);
    cr_assert_eq(rc, 0, "[1]: got %s", evs_errname(rc));
    cr_assert_eq(evs_event_content(ev), EVS_CONTENT_JSON);
    evs_event_unref(ev);
    f[4].hex = "c4 02 5b 31";
    rc = decode_kvs(f, 7, &ev);
    cr_assert_eq(rc, EVS_EBADMSG, "[1: got %s", evs_errname(rc));
    f[4].hex = "c4 00";
    rc = decode_kvs(f, 7, &ev);
    cr_assert_eq(rc, EVS_EBADMSG, "empty: got %s", evs_errname(rc));
}

Test(codec, non_string_keys_and_non_map_messages_are_ebadmsg)
{
    uint8_t b[64];
    static const char *const cases[] = {
        "c0", "07", "90", "91 80", "80",
        "81 01 02",                        /* an int key */
        "81 c4 02 69 64 07",               /* "id" as a bin key */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t n = hex(cases[i], b);
        evs_event *ev;
        int rc = decode_copy(b, n, &ev);
        cr_assert_eq(rc, EVS_EBADMSG, "%s: got %s", cases[i], evs_errname(rc));
    }
}

Test(codec, a_key_given_twice_is_ebadmsg)
{
    kv f[] = {{"id", ID},       {"type", TYPE}, {"topic", TOPIC}, {"content", BINARY},
              {"data", DATA},   {"ts", TS},     {"topic", "a1 75"}};
    evs_event *ev;
    int rc = decode_kvs(f, 7, &ev);
    cr_assert_eq(rc, EVS_EBADMSG, "got %s", evs_errname(rc));
}

Test(codec, huge_declared_lengths_are_ebadmsg)
{
    static const struct {
        unsigned field;
        const char *hex;
    } v[] = {
        {2, "db ff ff ff ff 61 62"}, /* topic str32 of 4 GiB */
        {1, "da ff ff 61"},          /* type str16 */
        {4, "c6 ff ff ff ff 00"},    /* data bin32 of 4 GiB */
        {4, "c5 01 00 00"},          /* data bin16 short */
        {5, "df ff ff ff ff"},       /* meta map32 */
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        kv f[] = BASE_FIELDS(ID, TYPE, TOPIC, BINARY, DATA, META, TS);
        f[v[i].field].hex = v[i].hex;
        evs_event *ev;
        int rc = decode_kvs(f, 7, &ev);
        cr_assert_eq(rc, EVS_EBADMSG, "%s: got %s", v[i].hex, evs_errname(rc));
    }
}

Test(codec, over_limit_topic_and_data_are_etoobig)
{
    /* topic of EVS_MAX_TOPIC + 1 bytes */
    size_t tl = EVS_MAX_TOPIC + 1;
    evs_buf b = {0};
    msgpack_packer pk;
    evs__mp_packer_init(&pk, &b);
    char *topic = malloc(tl);
    memset(topic, 'x', tl);
    msgpack_pack_map(&pk, 6);
    msgpack_pack_str_with_body(&pk, "id", 2);
    msgpack_pack_uint64(&pk, 1);
    msgpack_pack_str_with_body(&pk, "type", 4);
    msgpack_pack_str_with_body(&pk, "message", 7);
    msgpack_pack_str_with_body(&pk, "topic", 5);
    msgpack_pack_str_with_body(&pk, topic, tl);
    msgpack_pack_str_with_body(&pk, "content", 7);
    msgpack_pack_str_with_body(&pk, "binary", 6);
    msgpack_pack_str_with_body(&pk, "data", 4);
    msgpack_pack_bin_with_body(&pk, "", 0);
    msgpack_pack_str_with_body(&pk, "ts", 2);
    msgpack_pack_int64(&pk, 0);
    evs_event *ev;
    int rc = decode_copy(b.data, b.len, &ev);
    cr_assert_eq(rc, EVS_ETOOBIG, "topic: got %s", evs_errname(rc));
    free(topic);
    evs_buf_free(&b);

    /* data of EVS_MAX_DATA + 1 bytes */
    size_t dl = EVS_MAX_DATA + 1;
    uint8_t *data = calloc(1, dl);
    evs__mp_packer_init(&pk, &b);
    msgpack_pack_map(&pk, 6);
    msgpack_pack_str_with_body(&pk, "id", 2);
    msgpack_pack_uint64(&pk, 1);
    msgpack_pack_str_with_body(&pk, "type", 4);
    msgpack_pack_str_with_body(&pk, "message", 7);
    msgpack_pack_str_with_body(&pk, "topic", 5);
    msgpack_pack_str_with_body(&pk, "", 0);
    msgpack_pack_str_with_body(&pk, "content", 7);
    msgpack_pack_str_with_body(&pk, "binary", 6);
    msgpack_pack_str_with_body(&pk, "data", 4);
    msgpack_pack_bin_with_body(&pk, data, dl);
    msgpack_pack_str_with_body(&pk, "ts", 2);
    msgpack_pack_int64(&pk, 0);
    rc = evs_event_from_msgpack(&ev, b.data, b.len);
    cr_assert_eq(rc, EVS_ETOOBIG, "data: got %s", evs_errname(rc));
    free(data);
    evs_buf_free(&b);
}

Test(codec, type_name_over_the_limit_is_ebadmsg)
{
    char name[EVS_MAX_TYPE_NAME + 1];
    memset(name, 'n', sizeof(name));
    evs_buf b = {0};
    msgpack_packer pk;
    evs__mp_packer_init(&pk, &b);
    msgpack_pack_map(&pk, 6);
    msgpack_pack_str_with_body(&pk, "id", 2);
    msgpack_pack_uint64(&pk, 1);
    msgpack_pack_str_with_body(&pk, "type", 4);
    msgpack_pack_str_with_body(&pk, name, sizeof(name));
    msgpack_pack_str_with_body(&pk, "topic", 5);
    msgpack_pack_str_with_body(&pk, "", 0);
    msgpack_pack_str_with_body(&pk, "content", 7);
    msgpack_pack_str_with_body(&pk, "binary", 6);
    msgpack_pack_str_with_body(&pk, "data", 4);
    msgpack_pack_bin_with_body(&pk, "", 0);
    msgpack_pack_str_with_body(&pk, "ts", 2);
    msgpack_pack_int64(&pk, 0);
    evs_event *ev;
    int rc = decode_copy(b.data, b.len, &ev);
    cr_assert_eq(rc, EVS_EBADMSG, "got %s", evs_errname(rc));
    evs_buf_free(&b);
}

/* "[[[...1...]]]" as msgpack: `levels` one-element arrays. */
static char *deep_hex(unsigned levels)
{
    char *s = malloc(levels * 3 + 3), *p = s;
    for (unsigned i = 0; i < levels; i++, p += 3)
        memcpy(p, "91 ", 3);
    memcpy(p, "01", 3);
    return s;
}

Test(codec, deep_nesting_is_etoobig)
{
    char *ok = deep_hex(EVS_MAX_DEPTH), *over = deep_hex(EVS_MAX_DEPTH + 1),
         *far = deep_hex(80);
    evs_event *ev;
    int rc;
    {
        kv f[] = BASE_FIELDS(ID, TYPE, TOPIC, "a7 6d7367706163 6b", ok, META, TS);
        rc = decode_kvs(f, 7, &ev);
        cr_assert_eq(rc, 0, "data at max depth: got %s", evs_errname(rc));
        evs_event_unref(ev);
        f[4].hex = over;
        rc = decode_kvs(f, 7, &ev);
        cr_assert_eq(rc, EVS_ETOOBIG, "data past max depth: got %s", evs_errname(rc));
        f[4].hex = far;
        rc = decode_kvs(f, 7, &ev);
        cr_assert_eq(rc, EVS_ETOOBIG, "data far too deep: got %s", evs_errname(rc));
    }
    {
        /* An unknown key's value is bounded too. */
        kv f[] = {{"id", ID},     {"type", TYPE}, {"topic", TOPIC}, {"content", BINARY},
                  {"data", DATA}, {"ts", TS},     {"junk", far}};
        rc = decode_kvs(f, 7, &ev);
        cr_assert_eq(rc, EVS_ETOOBIG, "junk: got %s", evs_errname(rc));
    }
    {
        /* Metadata values: up to EVS_MAX_DEPTH, as meta_set_raw allows. */
        size_t n = strlen(over) + 16;
        char *m = malloc(n);
        snprintf(m, n, "81 a1 6b %s", ok);
        kv f[] = BASE_FIELDS(ID, TYPE, TOPIC, BINARY, DATA, m, TS);
        rc = decode_kvs(f, 7, &ev);
        cr_assert_eq(rc, 0, "meta value at max depth: got %s", evs_errname(rc));
        evs_event_unref(ev);
        snprintf(m, n, "81 a1 6b %s", over);
        rc = decode_kvs(f, 7, &ev);
        cr_assert_eq(rc, EVS_ETOOBIG, "meta value past max depth: got %s", evs_errname(rc));
        free(m);
    }
    free(ok);
    free(over);
    free(far);
}

Test(codec, negative_and_extreme_timestamps_and_ids_decode)
{
    kv f[] = BASE_FIELDS("cf ff ff ff ff ff ff ff ff", TYPE, TOPIC, BINARY, DATA, META,
                         "d3 80 00 00 00 00 00 00 00");
    evs_event *ev;
    int rc = decode_kvs(f, 7, &ev);
    cr_assert_eq(rc, 0, "got %s", evs_errname(rc));
    cr_assert_eq(evs_event_id(ev), UINT64_MAX);
    cr_assert_eq(evs_event_timestamp(ev), INT64_MIN);
    evs_event_unref(ev);
}

/* ------------------------------------------------------------------ */
/* Allocation failure                                                  */
/* ------------------------------------------------------------------ */

Test(codec, encode_allocation_failure_leaves_the_buffer_unchanged)
{
    uint8_t big[300];
    memset(big, 0xab, sizeof(big));
    evs_event *ev = event_of(EVS_TYPE_CUSTOM, "custom", "topic.name", EVS_CONTENT_BINARY,
                             big, sizeof(big), "\x81\xa1k\x01", 4, 5, 6);
    int failures = 0;
    for (long k = 0;; k++) {
        cr_assert_lt(k, 1000);
        evs_buf b = {0};
        cr_assert_eq(evs_buf_append(&b, "pre", 3), 0);
        evs__alloc_fail_after(k);
        int rc = evs_event_to_msgpack(ev, &b);
        evs__alloc_fail_after(-1);
        if (rc == 0) {
            evs_buf_free(&b);
            break;
        }
        cr_assert_eq(rc, EVS_ENOMEM, "k=%ld: got %s", k, evs_errname(rc));
        cr_assert_eq(b.len, 3);
        cr_assert_str_eq(b.data, "pre");
        evs_buf_free(&b);
        failures++;
    }
    cr_assert_gt(failures, 0);
    evs_event_unref(ev);
}

Test(codec, decode_allocation_failure_is_enomem)
{
    evs_buf b = sample();
    int failures = 0;
    for (long k = 0;; k++) {
        cr_assert_lt(k, 1000);
        evs_event *ev = (evs_event *)&b;
        evs__alloc_fail_after(k);
        int rc = evs_event_from_msgpack(&ev, b.data, b.len);
        evs__alloc_fail_after(-1);
        if (rc == 0) {
            evs_event_unref(ev);
            break;
        }
        cr_assert_eq(rc, EVS_ENOMEM, "k=%ld: got %s", k, evs_errname(rc));
        cr_assert_null(ev);
        failures++;
    }
    cr_assert_gt(failures, 1, "the event and its type name and meta allocate");
    evs_buf_free(&b);
}
