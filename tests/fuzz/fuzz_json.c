/*
 * Fuzz the JSON paths: JSON text in (evs_event_make's data, JSON content
 * validation) and msgpack rendered out as JSON (evs_event_to_json, the
 * SSE encoder). The first input byte picks the mode.
 *
 * JSON in (even first byte): the rest is JSON text.
 *   - validation and conversion agree: evs__json_validate accepts exactly
 *     what evs__json_to_msgpack converts (EVS_EBADMSG, EVS_ETOOBIG
 *     otherwise);
 *   - the msgpack is one value within EVS_MAX_DEPTH, renders back to JSON
 *     that is valid (RFC 8259), and that JSON converts to the same msgpack
 *     (JSON -> msgpack -> JSON -> msgpack is stable);
 *   - evs_event_make with it succeeds and the event renders.
 * msgpack out (odd first byte): the rest is arbitrary bytes, unchecked.
 *   - evs__mp_to_json never reads out of bounds or recurses without
 *     limit; what it accepts is one whole value, the output is valid
 *     UTF-8 and valid JSON (RFC 8259, checked by
 *     fuzz_json_ok; jansson refuses NUL in keys); on failure the buffer is unchanged.
 * Seeds: tests/fuzz/corpus/json/.
 */
#include "fuzz_common.h"

static void json_in(const uint8_t *s, size_t n)
{
    evs_buf mp = {0}, js = {0}, mp2 = {0};
    int v = evs__json_validate(s, n);
    int rc = evs__json_to_msgpack(s, n, &mp);
    FUZZ_CHECK(v == rc || rc == EVS_ENOMEM, "validate %s, convert %s", evs_errname(v),
               evs_errname(rc));
    if (rc != 0) {
        FUZZ_CHECK(rc == EVS_EBADMSG || rc == EVS_ETOOBIG || rc == EVS_ENOMEM || rc == EVS_EINVAL,
                   "rc %s", evs_errname(rc));
        FUZZ_CHECK(mp.len == 0, "output left on failure");
        evs_buf_free(&mp);
        return;
    }
    size_t used;
    rc = evs__mp_check((const uint8_t *)mp.data, mp.len, EVS_MAX_DEPTH, &used);
    FUZZ_CHECK(rc == 0 && used == mp.len, "converted msgpack does not check: %s",
               evs_errname(rc));
    /* JSON text has only string keys, so it always renders back. */
    rc = evs__mp_to_json((const uint8_t *)mp.data, mp.len, &js);
    FUZZ_CHECK(rc == 0, "render: %s", evs_errname(rc));
    FUZZ_CHECK(fuzz_utf8_ok(js.data, js.len), "rendered JSON is not UTF-8");
    FUZZ_CHECK(fuzz_json_ok(js.data, js.len), "not one JSON value: %s", js.data);
    rc = evs__json_to_msgpack(js.data, js.len, &mp2);
    FUZZ_CHECK(rc == 0, "our JSON does not convert back: %s: %s", evs_errname(rc), js.data);
    FUZZ_CHECK(mp2.len == mp.len && memcmp(mp2.data, mp.data, mp.len) == 0,
               "JSON -> msgpack -> JSON -> msgpack changed the value: %s", js.data);

    /* The public helper: a NUL in the text ends it there. */
    if (memchr(s, '\0', n) == NULL) {
        char *z = malloc(n + 1);
        FUZZ_CHECK(z != NULL, "oom");
        memcpy(z, s, n);
        z[n] = '\0';
        evs_event *ev;
        rc = evs_event_make(&ev, "fuzz", "a.b", z, NULL);
        FUZZ_CHECK(rc == 0 || rc == EVS_ETOOBIG, "make: %s", evs_errname(rc));
        if (rc == 0) {
            evs_buf out = {0};
            FUZZ_CHECK(evs_event_to_json(ev, &out) == 0, "event to JSON");
            evs_buf_free(&out);
            evs_event_unref(ev);
        }
        free(z);
    }
    evs_buf_free(&mp);
    evs_buf_free(&mp2);
    evs_buf_free(&js);
}

static void msgpack_out(const uint8_t *s, size_t n)
{
    evs_buf out = {0};
    FUZZ_CHECK(evs_buf_append(&out, "keep", 4) == 0, "oom");
    int rc = evs__mp_to_json(s, n, &out);
    size_t used;
    if (n > 0 && evs__mp_check(s, n, 40, &used) == 0 && used == n) {
        /* A checked value within the render depth renders unless its
         * non-string keys nest more than two deep. */
        FUZZ_CHECK(rc == (fuzz_key_nest(s, n, &used) > 2 ? EVS_EBADMSG : 0), "render: %s",
                   evs_errname(rc));
    }
    if (rc != 0) {
        FUZZ_CHECK(rc == EVS_EBADMSG || rc == EVS_ENOMEM || rc == EVS_EINVAL, "rc %s",
                   evs_errname(rc));
        FUZZ_CHECK(out.len == 4 && memcmp(out.data, "keep", 5) == 0, "buffer changed on failure");
        evs_buf_free(&out);
        return;
    }
    FUZZ_CHECK(fuzz_utf8_ok(out.data, out.len), "not UTF-8");
    FUZZ_CHECK(fuzz_json_ok(out.data + 4, out.len - 4), "not one JSON value: %s", out.data + 4);
    evs_buf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    if (data[0] & 1)
        msgpack_out(data + 1, size - 1);
    else
        json_in(data + 1, size - 1);
    return 0;
}
