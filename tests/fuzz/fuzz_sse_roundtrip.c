/*
 * Fuzz the SSE encoder by round trip: build an event from the input
 * (any content type, any type name, any data bytes, any id, encoder
 * options), encode it, parse the frame back with evs_sse_parser, and
 * compare with what the standard says a client receives:
 *   - the event type: the type name with invalid UTF-8 as U+FFFD
 *     ("message" when it is "message");
 *   - the data: text and JSON with invalid UTF-8 as U+FFFD and every
 *     CRLF or lone CR turned into LF; binary as base64; msgpack as the
 *     JSON evs__mp_to_json renders;
 *   - the id: the event id in decimal, or "" when it is 0 or omitted;
 *   - the retry time, when set; and exactly one message.
 * It also checks that evs_sse_encode and evs_sse_encode_buf write the
 * same bytes, that a buffer one byte short gets EVS_ETOOBIG with the
 * exact size and no bytes, that a type name with CR or LF is refused,
 * and that msgpack whose non-string map keys nest more than two deep is
 * refused with EVS_EBADMSG.
 * Seeds: tests/fuzz/corpus/sse_roundtrip/.
 */
#include <inttypes.h>

#include "event.h"
#include "fuzz_common.h"
#include "mpscan.h"

typedef struct got {
    int n;
    evs_buf event, data, id;
} got;

static int on_message(const evs_sse_message *m, void *user)
{
    got *g = user;
    g->n++;
    FUZZ_CHECK(evs_buf_append(&g->event, m->event, m->event_len) == 0 &&
                   evs_buf_append(&g->data, m->data, m->data_len) == 0 &&
                   evs_buf_append(&g->id, m->id, m->id_len) == 0, "oom");
    return 0;
}

static bool buf_is(const evs_buf *b, const void *p, size_t n)
{
    return b->len == n && (n == 0 || memcmp(b->data, p, n) == 0);
}

/* Line ends as a client sees them: CRLF and lone CR become LF. */
static void normalise_lines(evs_buf *b)
{
    size_t o = 0;
    for (size_t i = 0; i < b->len; i++) {
        if (b->data[i] == '\r') {
            b->data[o++] = '\n';
            if (i + 1 < b->len && b->data[i + 1] == '\n')
                i++;
        } else {
            b->data[o++] = b->data[i];
        }
    }
    b->len = o;
}

int LLVMFuzzerTestOneInput(const uint8_t *input, size_t size)
{
    fuzz_in in = {input, size};
    uint8_t cfg = fuzz_u8(&in);
    evs_content content = (evs_content)(cfg & 3);
    evs_sse_opts opts = {.omit_id = (cfg & 4) != 0};
    if (cfg & 8)
        opts.retry_ms = (int)fuzz_u64(&in, 2);
    uint64_t id = (cfg & 16) ? fuzz_u64(&in, 8) : 0;
    size_t prefix = fuzz_u8(&in) % 8;

    evs_event_parts parts = {.content = content, .id = id, .timestamp = 1};
    char name[257];
    if (cfg & 32) {
        size_t nl;
        const uint8_t *np = fuzz_bytes(&in, 256, &nl);
        memcpy(name, np, nl);
        name[nl] = '\0';
        parts.type = EVS_TYPE_CUSTOM;
        parts.type_name = name;
        parts.type_name_len = nl;
    } else {
        parts.type = (evs_type)(fuzz_u8(&in) % EVS_TYPE_CUSTOM);
    }
    size_t dlen;
    const uint8_t *d = fuzz_rest(&in, &dlen);
    if (content == EVS_CONTENT_MSGPACK) {
        size_t used;
        if (dlen == 0 || evs__mp_check(d, dlen, EVS_MAX_DEPTH, &used) != 0 || used != dlen)
            parts.content = content = EVS_CONTENT_TEXT;
    }
    parts.data = d;
    parts.len = dlen;

    evs_event *ev;
    if (evs__event_new(&ev, &parts) != 0)
        return 0;

    /* The name as a C string sees it (a NUL ends it). */
    const char *tname = evs_event_type_name(ev);
    bool bad_name = tname[0] == '\0' || strpbrk(tname, "\r\n") != NULL;

    /* Measure, then exact, then one short. */
    size_t need = 12345, u;
    int rc = evs_sse_encode(ev, &opts, NULL, 0, &need);
    if (!bad_name && content == EVS_CONTENT_MSGPACK && fuzz_key_nest(d, dlen, &u) > 2) {
        /* Non-string keys nested too deep to render (json.c). */
        FUZZ_CHECK(rc == EVS_EBADMSG && need == 0, "nested keys: %s", evs_errname(rc));
        evs_event_unref(ev);
        return 0;
    }
    if (bad_name || opts.retry_ms < 0) {
        FUZZ_CHECK(rc == EVS_EINVAL && need == 0, "bad name: %s", evs_errname(rc));
        evs_buf b = {0};
        FUZZ_CHECK(evs_sse_encode_buf(ev, &opts, &b) == EVS_EINVAL && b.len == 0, "encode_buf");
        evs_buf_free(&b);
        evs_event_unref(ev);
        return 0;
    }
    FUZZ_CHECK(rc == EVS_ETOOBIG && need > 0, "measure: %s", evs_errname(rc));
    char *frame = malloc(need);
    FUZZ_CHECK(frame != NULL, "oom");
    memset(frame, 0x5a, need);
    size_t got_len = 0;
    rc = evs_sse_encode(ev, &opts, frame, need - 1, &got_len);
    FUZZ_CHECK(rc == EVS_ETOOBIG && got_len == need, "one short: %s, %zu", evs_errname(rc),
               got_len);
    for (size_t i = 0; i < need; i++)
        FUZZ_CHECK(frame[i] == 0x5a, "a refused encode wrote byte %zu", i);
    rc = evs_sse_encode(ev, &opts, frame, need, &got_len);
    FUZZ_CHECK(rc == 0 && got_len == need, "exact: %s", evs_errname(rc));

    /* encode_buf appends the same bytes after what the buffer holds. */
    evs_buf b = {0};
    FUZZ_CHECK(evs_buf_append(&b, "PREFIX!!", prefix) == 0, "oom");
    rc = evs_sse_encode_buf(ev, &opts, &b);
    FUZZ_CHECK(rc == 0, "encode_buf: %s", evs_errname(rc));
    FUZZ_CHECK(b.len == prefix + need && memcmp(b.data + prefix, frame, need) == 0 &&
                   b.data[b.len] == '\0', "encode_buf differs from encode");
    FUZZ_CHECK(fuzz_utf8_ok(frame, need), "frame is not UTF-8");

    /* What a client gets. */
    evs_sse_parser *p;
    evs_sse_parser_opts po = {.max_message = (size_t)1 << 26};
    FUZZ_CHECK(evs_sse_parser_create(&p, &po) == 0, "parser");
    got g = {0};
    rc = evs_sse_parser_feed(p, frame, need, NULL, on_message, &g);
    FUZZ_CHECK(rc == 0, "parse: %s", evs_errname(rc));
    FUZZ_CHECK(g.n == 1, "%d messages", g.n);

    evs_buf want = {0};
    FUZZ_CHECK(fuzz_utf8_fix(&want, tname, strlen(tname)) == 0, "oom");
    FUZZ_CHECK(buf_is(&g.event, want.data, want.len), "event type");

    evs_buf_reset(&want);
    size_t n;
    const uint8_t *data = evs_event_data(ev, &n);
    switch (content) {
    case EVS_CONTENT_BINARY:
        FUZZ_CHECK(evs__base64_append(&want, data, n) == 0, "oom");
        break;
    case EVS_CONTENT_TEXT:
    case EVS_CONTENT_JSON:
        FUZZ_CHECK(fuzz_utf8_fix(&want, data, n) == 0, "oom");
        normalise_lines(&want);
        break;
    case EVS_CONTENT_MSGPACK:
        FUZZ_CHECK(evs__mp_to_json(data, n, &want) == 0, "render");
        break;
    }
    FUZZ_CHECK(buf_is(&g.data, want.data, want.len), "data: got %zu bytes, want %zu", g.data.len,
               want.len);

    char idtxt[24] = "";
    if (id != 0 && !opts.omit_id)
        snprintf(idtxt, sizeof idtxt, "%" PRIu64, id);
    FUZZ_CHECK(buf_is(&g.id, idtxt, strlen(idtxt)), "id");
    FUZZ_CHECK(evs_sse_parser_retry(p) == (opts.retry_ms > 0 ? opts.retry_ms : -1), "retry");

    evs_sse_parser_destroy(p);
    evs_buf_free(&want);
    evs_buf_free(&g.event);
    evs_buf_free(&g.data);
    evs_buf_free(&g.id);
    evs_buf_free(&b);
    free(frame);
    evs_event_unref(ev);
    return 0;
}
