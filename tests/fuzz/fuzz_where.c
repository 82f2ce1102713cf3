/*
 * Fuzz `where` expressions: compile arbitrary text, then evaluate what
 * compiles over an event built from the rest of the input.
 *
 * Input: one configuration byte, a two-byte expression length, the
 * expression, then the event: a whole wire-format event if it decodes,
 * else data bytes (msgpack content if they are one valid msgpack value,
 * text otherwise; a msgpack map doubles as the metadata).
 *
 * Properties:
 *   - compile returns 0, EVS_EINVAL or EVS_ETOOBIG (EVS_ENOMEM only when
 *     memory runs out); on failure *out is NULL and the error has a
 *     message and a position inside the expression;
 *   - evaluation is pure: the same answer twice;
 *   - the jump code is right: `not (E)` is !E, `(E) or true` is true,
 *     `(E) and false` is false, `true and (E)` and `false or (E)` are E
 *     (when the wrapped expression is within the length and depth
 *     limits, which is the only reason it may fail to compile).
 * Seeds: tests/fuzz/corpus/where/; dictionary: tests/fuzz/where.dict.
 */
#include "event.h"
#include "fuzz_common.h"
#include "mpscan.h"
#include "where.h"

static bool eval_wrapped(const char *pre, const char *expr, size_t len, const char *post,
                         const evs_event *ev, bool *result)
{
    size_t a = strlen(pre), c = strlen(post);
    char *buf = malloc(a + len + c + 1);
    FUZZ_CHECK(buf != NULL, "oom");
    memcpy(buf, pre, a);
    memcpy(buf + a, expr, len);
    memcpy(buf + a + len, post, c);
    evs_where *w;
    evs_where_error err;
    int rc = evs_where_compile(&w, buf, a + len + c, &err);
    FUZZ_CHECK(rc == 0 || rc == EVS_ETOOBIG || rc == EVS_ENOMEM,
               "\"%s\" + E + \"%s\" does not compile: %s at %zu: %s", pre, post,
               evs_errname(rc), err.pos, err.msg);
    free(buf);
    if (rc != 0)
        return false;
    *result = evs_where_match(w, ev);
    evs_where_destroy(w);
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_in in = {data, size};
    uint8_t cfg = fuzz_u8(&in);
    size_t elen = (size_t)fuzz_u64(&in, 2);
    if (elen > in.n)
        elen = in.n;
    const char *expr = (const char *)in.p;
    in.p += elen;
    in.n -= elen;
    size_t rlen;
    const uint8_t *rest = fuzz_rest(&in, &rlen);

    evs_where *w = (evs_where *)1;
    evs_where_error err;
    memset(&err, 0x55, sizeof err);
    int rc = evs_where_compile(&w, expr, elen, &err);
    if (rc != 0) {
        FUZZ_CHECK(w == NULL, "out not NULL on failure");
        FUZZ_CHECK(rc == EVS_EINVAL || rc == EVS_ETOOBIG || rc == EVS_ENOMEM, "rc %s",
                   evs_errname(rc));
        FUZZ_CHECK(memchr(err.msg, '\0', sizeof err.msg) != NULL && err.msg[0] != '\0',
                   "no message");
        FUZZ_CHECK(err.pos <= elen || err.pos == EVS_WHERE_MAX_LEN, "pos %zu of %zu", err.pos,
                   elen);
        return 0;
    }
    FUZZ_CHECK(w != NULL, "no program");

    /* The event. */
    evs_event *ev = NULL;
    if (evs_event_from_msgpack(&ev, rest, rlen) != 0) {
        size_t used;
        bool mp = rlen > 0 && evs__mp_check(rest, rlen, EVS_MAX_DEPTH, &used) == 0 && used == rlen;
        evs_mpval top;
        bool map = mp && evs__mp_read(rest, rlen, &top) == 0 && top.type == MSGPACK_OBJECT_MAP;
        evs_event_parts parts = {
            .type = (evs_type)(cfg % EVS_TYPE_CUSTOM),
            .topic = "orders.eu.created",
            .topic_len = 17,
            .content = mp ? EVS_CONTENT_MSGPACK : (cfg & 8) ? EVS_CONTENT_BINARY : EVS_CONTENT_TEXT,
            .data = rest,
            .len = rlen,
            .meta = map && (cfg & 16) ? rest : NULL,
            .meta_len = map && (cfg & 16) ? rlen : 0,
            .timestamp = (int64_t)cfg << 40,
            .id = cfg & 32 ? cfg : 0,
        };
        if (evs__event_new(&ev, &parts) != 0) {
            evs_where_destroy(w);
            return 0;
        }
    }

    bool r = evs_where_match(w, ev);
    FUZZ_CHECK(evs_where_match(w, ev) == r, "not pure");
    FUZZ_CHECK(evs_where_filter(ev, w) == r, "filter differs from match");

    bool x;
    if (eval_wrapped("not (", expr, elen, ")", ev, &x))
        FUZZ_CHECK(x == !r, "not (E) is %d, E is %d", x, r);
    if (eval_wrapped("(", expr, elen, ") or true", ev, &x))
        FUZZ_CHECK(x, "(E) or true is false");
    if (eval_wrapped("(", expr, elen, ") and false", ev, &x))
        FUZZ_CHECK(!x, "(E) and false is true");
    if (eval_wrapped("true and (", expr, elen, ")", ev, &x))
        FUZZ_CHECK(x == r, "true and (E) differs from E");
    if (eval_wrapped("false or (", expr, elen, ")", ev, &x))
        FUZZ_CHECK(x == r, "false or (E) differs from E");

    evs_where_destroy(w);
    evs_event_unref(ev);
    return 0;
}
