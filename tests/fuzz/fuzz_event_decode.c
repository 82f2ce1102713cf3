/*
 * Fuzz evs_event_from_msgpack: the wire format's decoder, fed arbitrary
 * bytes. Properties checked for every input:
 *   - it returns 0, EVS_EBADMSG or EVS_ETOOBIG (EVS_ENOMEM only when
 *     memory really runs out), with *out NULL on failure;
 *   - a decoded event re-encodes, decodes again to an equal event, and
 *     re-encodes to the same bytes (the encoding is canonical);
 *   - it renders as valid JSON (RFC 8259) that is valid UTF-8,
 *     and as one SSE frame that is valid UTF-8, unless its map keys
 *     that are not strings nest more than two deep (EVS_EBADMSG);
 *   - each metadata key (a string without NUL) is found by the getter;
 *   - an unpublished decoded event (id 0) still accepts setters.
 * Seeds: tests/fuzz/corpus/event_decode/.
 */
#include "fuzz_common.h"

static void check_equal(const evs_event *a, const evs_event *b)
{
    size_t la, lb;
    FUZZ_CHECK(evs_event_id(a) == evs_event_id(b), "id");
    FUZZ_CHECK(evs_event_type(a) == evs_event_type(b), "type");
    FUZZ_CHECK(strcmp(evs_event_type_name(a), evs_event_type_name(b)) == 0, "type name");
    FUZZ_CHECK(strcmp(evs_event_topic(a), evs_event_topic(b)) == 0, "topic");
    FUZZ_CHECK(evs_event_content(a) == evs_event_content(b), "content");
    FUZZ_CHECK(evs_event_timestamp(a) == evs_event_timestamp(b), "timestamp");
    FUZZ_CHECK(evs_event_published(a) == evs_event_published(b), "published");
    const void *da = evs_event_data(a, &la), *db = evs_event_data(b, &lb);
    FUZZ_CHECK(la == lb && (la == 0 || memcmp(da, db, la) == 0), "data");
    da = evs_event_meta(a, &la);
    db = evs_event_meta(b, &lb);
    FUZZ_CHECK(la == lb && memcmp(da, db, la) == 0, "meta");
}

/* Every string key of the metadata map without a NUL is found. */
static void check_meta_keys(const evs_event *ev)
{
    size_t len;
    const uint8_t *m = evs_event_meta(ev, &len);
    evs_mpval map;
    FUZZ_CHECK(evs__mp_read(m, len, &map) == 0 && map.type == MSGPACK_OBJECT_MAP, "meta map");
    size_t off = map.size;
    for (uint32_t i = 0; i < map.v.n; i++) {
        evs_mpval k;
        size_t vsz;
        FUZZ_CHECK(evs__mp_read(m + off, len - off, &k) == 0 && k.type == MSGPACK_OBJECT_STR,
                   "meta key %u", i);
        off += k.size;
        FUZZ_CHECK(evs__mp_check(m + off, len - off, 64, &vsz) == 0, "meta value %u", i);
        off += vsz;
        if (k.v.raw.len == 0 || memchr(k.v.raw.p, 0, k.v.raw.len) != NULL || k.v.raw.len > 255)
            continue;
        char key[256];
        memcpy(key, k.v.raw.p, k.v.raw.len);
        key[k.v.raw.len] = '\0';
        const void *raw;
        size_t rlen;
        FUZZ_CHECK(evs_event_meta_get_raw(ev, key, &raw, &rlen) == 0, "key \"%s\" not found", key);
    }
    FUZZ_CHECK(off == len, "meta map has trailing bytes");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    evs_event *ev = (evs_event *)1;
    int rc = evs_event_from_msgpack(&ev, data, size);
    if (rc != 0) {
        FUZZ_CHECK(ev == NULL, "out not NULL on failure");
        FUZZ_CHECK(rc == EVS_EBADMSG || rc == EVS_ETOOBIG || rc == EVS_ENOMEM, "rc %s",
                   evs_errname(rc));
        return 0;
    }
    FUZZ_CHECK(ev != NULL, "no event");
    FUZZ_CHECK(evs_event_published(ev) == (evs_event_id(ev) != 0), "published iff id");

    /* Canonical re-encoding. */
    evs_buf a = {0}, b = {0};
    FUZZ_CHECK(evs_event_to_msgpack(ev, &a) == 0, "encode");
    evs_event *ev2 = NULL;
    rc = evs_event_from_msgpack(&ev2, a.data, a.len);
    FUZZ_CHECK(rc == 0, "re-decode: %s", evs_errname(rc));
    check_equal(ev, ev2);
    FUZZ_CHECK(evs_event_to_msgpack(ev2, &b) == 0, "re-encode");
    FUZZ_CHECK(a.len == b.len && memcmp(a.data, b.data, a.len) == 0, "encoding not canonical");
    evs_event_unref(ev2);

    /* JSON: one valid value, valid UTF-8; refused (EVS_EBADMSG, nothing
     * written) only for non-string keys nested more than two deep. */
    size_t dl, ml, u;
    const uint8_t *dp = evs_event_data(ev, &dl), *mp = evs_event_meta(ev, &ml);
    bool data_nests = evs_event_content(ev) == EVS_CONTENT_MSGPACK && fuzz_key_nest(dp, dl, &u) > 2;
    bool renders = !data_nests && fuzz_key_nest(mp, ml, &u) <= 2;
    evs_buf_reset(&a);
    rc = evs_event_to_json(ev, &a);
    FUZZ_CHECK(rc == (renders ? 0 : EVS_EBADMSG), "to_json: %s", evs_errname(rc));
    if (rc == 0) {
        FUZZ_CHECK(fuzz_utf8_ok(a.data, a.len), "JSON is not UTF-8");
        FUZZ_CHECK(fuzz_json_ok(a.data, a.len), "not one JSON value: %s", a.data);
        FUZZ_CHECK(a.data[0] == '{' && strstr(a.data, ",\"data\":") != NULL, "JSON shape");
    } else {
        FUZZ_CHECK(a.len == 0, "to_json wrote on failure");
    }

    /* SSE: one frame, valid UTF-8 (the metadata is not sent). */
    evs_buf_reset(&a);
    rc = evs_sse_encode_buf(ev, NULL, &a);
    FUZZ_CHECK(rc == (data_nests ? EVS_EBADMSG : 0), "sse encode: %s", evs_errname(rc));
    if (rc == 0) {
        FUZZ_CHECK(fuzz_utf8_ok(a.data, a.len), "SSE frame is not UTF-8");
        FUZZ_CHECK(a.len >= 2 && memcmp(a.data + a.len - 2, "\n\n", 2) == 0, "frame end");
    }

    check_meta_keys(ev);

    /* An unpublished event is still an ordinary, mutable event. */
    if (!evs_event_published(ev)) {
        rc = evs_event_set_content(ev, evs_event_content(ev));
        FUZZ_CHECK(rc == 0, "set_content to its own content: %s", evs_errname(rc));
        rc = evs_event_meta_set_str(ev, "fuzz", "x");
        FUZZ_CHECK(rc == 0 || rc == EVS_ETOOBIG, "meta_set: %s", evs_errname(rc));
        const char *v;
        size_t vl;
        if (rc == 0)
            FUZZ_CHECK(evs_event_meta_get_str(ev, "fuzz", &v, &vl) == 0 && vl == 1, "meta_get");
    }
    evs_buf_free(&a);
    evs_buf_free(&b);
    evs_event_unref(ev);
    return 0;
}
