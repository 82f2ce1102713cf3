/*
 * Fuzz the SSE parser (evs_sse_parser_feed) with arbitrary byte streams.
 * Input: one byte of configuration (max_message), one byte seeding how
 * the stream is cut into feeds, then the stream itself.
 *
 * Properties:
 *   - every message is well-formed: NUL-terminated strings, a non-empty
 *     event type, an id without NUL, all three valid UTF-8 (the parser
 *     decodes), event type plus data within max_message;
 *   - the messages, last id, retry and dropped count do not depend on how
 *     the stream is cut into feeds (one feed, random cuts, byte by byte);
 *   - stopping after each message (the callback returns non-zero) and
 *     feeding again from bytes + *used gives the same messages;
 *   - after evs_sse_parser_reset, the same stream gives the same messages.
 * Seeds: tests/fuzz/corpus/sse_parse/.
 */
#include "fuzz_common.h"

typedef struct log {
    evs_buf out;   /* the messages, serialised */
    size_t max;
    unsigned stop; /* return this from the callback */
    size_t count;
} log;

static void put_field(evs_buf *b, const char *s, size_t n)
{
    uint32_t n32 = (uint32_t)n;
    FUZZ_CHECK(evs_buf_append(b, &n32, sizeof n32) == 0 && evs_buf_append(b, s, n) == 0, "oom");
}

static int on_message(const evs_sse_message *m, void *user)
{
    log *l = user;
    FUZZ_CHECK(m->event != NULL && m->data != NULL && m->id != NULL, "NULL string");
    FUZZ_CHECK(m->event[m->event_len] == '\0' && m->data[m->data_len] == '\0' &&
                   m->id[m->id_len] == '\0', "not NUL-terminated");
    FUZZ_CHECK(m->event_len > 0, "empty event type");
    FUZZ_CHECK(memchr(m->id, '\0', m->id_len) == NULL, "NUL in id");
    FUZZ_CHECK(fuzz_utf8_ok(m->event, m->event_len) && fuzz_utf8_ok(m->data, m->data_len) &&
                   fuzz_utf8_ok(m->id, m->id_len), "not UTF-8");
    /* "message" stands in for an empty type and is not counted. */
    size_t type_len = strcmp(m->event, "message") == 0 ? 0 : m->event_len;
    FUZZ_CHECK(m->data_len + type_len <= l->max, "message over max: %zu + %zu > %zu",
               m->data_len, type_len, l->max);
    put_field(&l->out, m->event, m->event_len);
    put_field(&l->out, m->data, m->data_len);
    put_field(&l->out, m->id, m->id_len);
    l->count++;
    return (int)l->stop;
}

static uint32_t rng(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

/* Feed `s` in pieces whose sizes come from `seed` (0: one piece; 1: one
 * byte at a time), resuming after a stop from bytes + used. */
static void run(evs_sse_parser *p, const uint8_t *s, size_t n, uint32_t seed, log *l)
{
    size_t at = 0;
    uint32_t st = seed | 1;
    while (at < n) {
        size_t piece = seed == 0 ? n - at : seed == 1 ? 1 : 1 + rng(&st) % 17;
        if (piece > n - at)
            piece = n - at;
        size_t off = 0;
        while (off < piece) {
            size_t used = 0;
            int rc = evs_sse_parser_feed(p, s + at + off, piece - off, &used, on_message, l);
            FUZZ_CHECK(used <= piece - off, "used past the feed");
            if (rc == 0) {
                FUZZ_CHECK(used == piece - off, "success consumed %zu of %zu", used, piece - off);
            } else {
                FUZZ_CHECK(rc == (int)l->stop && l->stop != 0, "feed: %s", evs_errname(rc));
            }
            off += used;
        }
        at += piece;
    }
}

typedef struct outcome {
    log l;
    evs_buf last_id;
    int64_t retry;
    uint64_t dropped;
} outcome;

static void parse(const evs_sse_parser_opts *o, const uint8_t *s, size_t n, uint32_t seed,
                  unsigned stop, outcome *out)
{
    evs_sse_parser *p;
    FUZZ_CHECK(evs_sse_parser_create(&p, o) == 0, "create");
    memset(out, 0, sizeof *out);
    out->l.max = o->max_message ? o->max_message : (size_t)1 << 20;
    out->l.stop = stop;
    run(p, s, n, seed, &out->l);
    size_t idl;
    const char *id = evs_sse_parser_last_id(p, &idl);
    FUZZ_CHECK(id[idl] == '\0', "last id not terminated");
    FUZZ_CHECK(evs_buf_append(&out->last_id, id, idl) == 0, "oom");
    out->retry = evs_sse_parser_retry(p);
    out->dropped = evs_sse_parser_dropped(p);
    evs_sse_parser_destroy(p);
}

static void same(const outcome *a, const outcome *b, const char *how)
{
    FUZZ_CHECK(a->l.count == b->l.count, "%s: %zu messages, not %zu", how, b->l.count,
               a->l.count);
    FUZZ_CHECK(a->l.out.len == b->l.out.len &&
                   (a->l.out.len == 0 || memcmp(a->l.out.data, b->l.out.data, a->l.out.len) == 0),
               "%s: different messages", how);
    FUZZ_CHECK(a->last_id.len == b->last_id.len &&
                   (a->last_id.len == 0 ||
                    memcmp(a->last_id.data, b->last_id.data, a->last_id.len) == 0),
               "%s: different last id", how);
    FUZZ_CHECK(a->retry == b->retry, "%s: retry %lld, not %lld", how, (long long)b->retry,
               (long long)a->retry);
    FUZZ_CHECK(a->dropped == b->dropped, "%s: dropped", how);
}

static void outcome_free(outcome *o)
{
    evs_buf_free(&o->l.out);
    evs_buf_free(&o->last_id);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_in in = {data, size};
    uint8_t cfg = fuzz_u8(&in);
    uint32_t seed = (uint32_t)fuzz_u8(&in) + 2;
    size_t n;
    const uint8_t *s = fuzz_rest(&in, &n);
    evs_sse_parser_opts o = {.max_message = cfg & 0x80 ? 0 : 64 + (size_t)(cfg & 0x7f) * 4};

    outcome whole, cut, bytes, stopped;
    parse(&o, s, n, 0, 0, &whole);
    parse(&o, s, n, seed, 0, &cut);
    same(&whole, &cut, "random cuts");
    parse(&o, s, n, 1, 0, &bytes);
    same(&whole, &bytes, "byte by byte");
    parse(&o, s, n, seed, 1, &stopped);
    same(&whole, &stopped, "stop after each message");

    /* A reset starts a new stream: the same bytes give the same messages
     * (the last id and retry carry over; they are equal here anyway when
     * the stream sets them, and the messages never show them stale). */
    evs_sse_parser *p;
    FUZZ_CHECK(evs_sse_parser_create(&p, &o) == 0, "create");
    log first = {.max = whole.l.max}, again = {.max = whole.l.max};
    run(p, s, n, 0, &first);
    evs_sse_parser_reset(p);
    run(p, s, n, seed, &again);
    FUZZ_CHECK(first.count == again.count && first.out.len == again.out.len &&
                   (first.out.len == 0 || memcmp(first.out.data, again.out.data, first.out.len) == 0),
               "after reset: different messages");
    evs_buf_free(&first.out);
    evs_buf_free(&again.out);
    evs_sse_parser_destroy(p);

    outcome_free(&whole);
    outcome_free(&cut);
    outcome_free(&bytes);
    outcome_free(&stopped);
    return 0;
}
