/*
 * The event wire format: evs_event_to_msgpack and evs_event_from_msgpack.
 *
 * Wire format. One msgpack map with exactly these seven string keys, in
 * this order when we encode:
 *
 *   "id"       uint      0 for an unpublished event, else the stream's id
 *   "type"     str       "message", "error", "connect", "disconnect",
 *                        "heartbeat", or the custom type name
 *                        (1..EVS_MAX_TYPE_NAME bytes, no CR, LF or NUL)
 *   "topic"    str       0..EVS_MAX_TOPIC bytes, no NUL
 *   "content"  str       "binary", "text", "json" or "msgpack"
 *   "data"     content "msgpack": the data's msgpack object, embedded as
 *                        is (nesting at most EVS_MAX_DEPTH);
 *              otherwise: bin (0..EVS_MAX_DATA bytes; for "json", one
 *                        JSON value)
 *   "meta"     map       the metadata map embedded as is (string keys,
 *                        values nested at most EVS_MAX_DEPTH); encoded
 *                        size at most EVS_MAX_META
 *   "ts"       int       the timestamp: ns since the Unix epoch (int64)
 *
 * A decoder accepts the keys in any order and ignores unknown string keys;
 * "meta" may be absent (no metadata); every other key above is required
 * and may appear once. The message is exactly one map: trailing bytes
 * are an error. The whole message may nest EVS_MAX_DEPTH + 2 levels
 * (top map, metadata map, a value of EVS_MAX_DEPTH levels).
 *
 * Decoding order matters for hostile input: evs__mp_check bounds every
 * length, count and the nesting against the bytes present before we walk
 * the map with evs__mp_read, and nothing is allocated until every field
 * has been validated; evs__event_new then makes one copy.
 *
 * Pure: no threads, locks or clocks.
 */
#include "evs_internal.h"

#include "event.h"
#include "json.h"
#include "mpscan.h"

static const char *const content_names[] = {
    [EVS_CONTENT_BINARY] = "binary",
    [EVS_CONTENT_TEXT] = "text",
    [EVS_CONTENT_JSON] = "json",
    [EVS_CONTENT_MSGPACK] = "msgpack",
};

static int pack_cstr(msgpack_packer *pk, const char *s)
{
    return msgpack_pack_str_with_body(pk, s, strlen(s));
}

int evs_event_to_msgpack(const evs_event *ev, evs_buf *out)
{
    if (ev == NULL || out == NULL)
        return EVS_EINVAL;
    evs_content content = evs_event_content(ev);
    size_t dlen, mlen;
    const void *data = evs_event_data(ev, &dlen);
    const void *meta = evs_event_meta(ev, &mlen);
    const char *tname = evs_event_type_name(ev);
    /* msgpack data is one object, never empty (evs_event_set_content
     * checks it); embedding nothing would make the map unreadable. */
    if ((unsigned)content > EVS_CONTENT_MSGPACK || tname == NULL ||
        (content == EVS_CONTENT_MSGPACK && dlen == 0))
        return EVS_EINVAL;

    size_t start = out->len;
    msgpack_packer pk;
    evs__mp_packer_init(&pk, out);
    /* Each pack call appends at once (no packer-side buffering), so raw
     * appends to `out` interleave correctly with them. */
    bool fail =
        msgpack_pack_map(&pk, 7) != 0 ||
        pack_cstr(&pk, "id") != 0 || msgpack_pack_uint64(&pk, evs_event_id(ev)) != 0 ||
        pack_cstr(&pk, "type") != 0 || pack_cstr(&pk, tname) != 0 ||
        pack_cstr(&pk, "topic") != 0 || pack_cstr(&pk, evs_event_topic(ev)) != 0 ||
        pack_cstr(&pk, "content") != 0 || pack_cstr(&pk, content_names[content]) != 0 ||
        pack_cstr(&pk, "data") != 0 ||
        (content == EVS_CONTENT_MSGPACK ? evs_buf_append(out, data, dlen)
                                        : msgpack_pack_bin_with_body(&pk, data, dlen)) != 0 ||
        pack_cstr(&pk, "meta") != 0 || evs_buf_append(out, meta, mlen) != 0 ||
        pack_cstr(&pk, "ts") != 0 || msgpack_pack_int64(&pk, evs_event_timestamp(ev)) != 0;
    if (fail) {
        out->len = start;
        if (out->data != NULL)
            out->data[start] = '\0';
        return EVS_ENOMEM;
    }
    return 0;
}

/* The fields of a message, as located by the walk. */
enum { F_ID, F_TYPE, F_TOPIC, F_CONTENT, F_DATA, F_META, F_TS, F_COUNT };

static const char *const field_names[F_COUNT] = {
    [F_ID] = "id",         [F_TYPE] = "type", [F_TOPIC] = "topic", [F_CONTENT] = "content",
    [F_DATA] = "data",     [F_META] = "meta", [F_TS] = "ts",
};

static bool builtin_type(const uint8_t *name, size_t len, evs_type *out)
{
    for (unsigned t = 0; t < EVS_TYPE_CUSTOM; t++) {
        const char *n = evs_type_name((evs_type)t);
        if (strlen(n) == len && memcmp(n, name, len) == 0) {
            *out = (evs_type)t;
            return true;
        }
    }
    return false;
}

/* Validate the metadata map: string keys, values at most the depth limit
 * deep. Input is already checked, so every read stays in bounds. */
static int check_meta(const uint8_t *p, size_t len)
{
    evs_mpval m;
    if (evs__mp_read(p, len, &m) != 0 || m.type != MSGPACK_OBJECT_MAP)
        return EVS_EBADMSG;
    if (len > evs__max_meta())
        return EVS_ETOOBIG;
    unsigned depth = evs__max_depth();
    size_t off = m.size;
    for (uint32_t i = 0; i < m.v.n; i++) {
        evs_mpval k;
        size_t u;
        int rc;
        if (evs__mp_read(p + off, len - off, &k) != 0 || k.type != MSGPACK_OBJECT_STR)
            return EVS_EBADMSG;
        off += k.size;
        if ((rc = evs__mp_check(p + off, len - off, depth, &u)) != 0)
            return rc;
        off += u;
    }
    return off == len ? 0 : EVS_EBADMSG;
}

int evs_event_from_msgpack(evs_event **out, const void *buf, size_t len)
{
    if (out == NULL)
        return EVS_EINVAL;
    *out = NULL;
    if (buf == NULL && len > 0)
        return EVS_EINVAL;
    if (len == 0)
        return EVS_EBADMSG;
    /* Longer than the largest event the limits allow: refuse it before
     * reading it (1 KiB covers the keys, headers and fixed fields). */
    unsigned depth = evs__max_depth();
    size_t max_topic = evs__max_topic(), max_name = evs__max_type_name();
    size_t max_data = evs__max_data(), max_meta = evs__max_meta();
    if (len > max_data + max_meta + max_topic + max_name + 1024)
        return EVS_ETOOBIG;

    const uint8_t *p = buf;
    size_t used;
    int rc = evs__mp_check(p, len, depth + 2, &used);
    if (rc != 0)
        return rc;
    if (used != len)
        return EVS_EBADMSG;

    evs_mpval top;
    if (evs__mp_read(p, len, &top) != 0 || top.type != MSGPACK_OBJECT_MAP)
        return EVS_EBADMSG;

    /* Where each known field's value is encoded (NULL: not seen). */
    const uint8_t *fv[F_COUNT] = {0};
    size_t fl[F_COUNT] = {0};
    size_t off = top.size;
    for (uint32_t i = 0; i < top.v.n; i++) {
        evs_mpval k;
        size_t vsz;
        if (evs__mp_read(p + off, len - off, &k) != 0 || k.type != MSGPACK_OBJECT_STR)
            return EVS_EBADMSG;
        off += k.size;
        if (evs__mp_check(p + off, len - off, depth + 1, &vsz) != 0)
            return EVS_EBADMSG;
        for (unsigned f = 0; f < F_COUNT; f++) {
            if (strlen(field_names[f]) == k.v.raw.len &&
                memcmp(field_names[f], k.v.raw.p, k.v.raw.len) == 0) {
                if (fv[f] != NULL)
                    return EVS_EBADMSG; /* a field given twice is ambiguous */
                fv[f] = p + off;
                fl[f] = vsz;
                break;
            }
        }
        off += vsz;
    }
    for (unsigned f = 0; f < F_COUNT; f++)
        if (fv[f] == NULL && f != F_META)
            return EVS_EBADMSG;

    evs_mpval id, ty, topic, content, data, ts;
    if (evs__mp_read(fv[F_ID], fl[F_ID], &id) != 0 ||
        id.type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return EVS_EBADMSG;

    evs_type builtin;
    if (evs__mp_read(fv[F_TYPE], fl[F_TYPE], &ty) != 0 || ty.type != MSGPACK_OBJECT_STR ||
        ty.v.raw.len == 0 ||
        (ty.v.raw.len > max_name && !builtin_type(ty.v.raw.p, ty.v.raw.len, &builtin)))
        return EVS_EBADMSG; /* the limit is on custom names */
    for (uint32_t i = 0; i < ty.v.raw.len; i++) {
        uint8_t c = ty.v.raw.p[i];
        if (c == '\r' || c == '\n' || c == '\0')
            return EVS_EBADMSG;
    }

    if (evs__mp_read(fv[F_TOPIC], fl[F_TOPIC], &topic) != 0 ||
        topic.type != MSGPACK_OBJECT_STR)
        return EVS_EBADMSG;
    if (topic.v.raw.len > max_topic)
        return EVS_ETOOBIG;
    /* Topics are C strings to their readers: a NUL would cut one short. */
    if (topic.v.raw.len > 0 && memchr(topic.v.raw.p, '\0', topic.v.raw.len) != NULL)
        return EVS_EBADMSG;

    if (evs__mp_read(fv[F_CONTENT], fl[F_CONTENT], &content) != 0 ||
        content.type != MSGPACK_OBJECT_STR)
        return EVS_EBADMSG;
    unsigned c = 0;
    for (; c <= EVS_CONTENT_MSGPACK; c++)
        if (strlen(content_names[c]) == content.v.raw.len &&
            memcmp(content_names[c], content.v.raw.p, content.v.raw.len) == 0)
            break;
    if (c > EVS_CONTENT_MSGPACK)
        return EVS_EBADMSG;

    const void *dp;
    size_t dlen;
    if (c == EVS_CONTENT_MSGPACK) {
        size_t u;
        if ((rc = evs__mp_check(fv[F_DATA], fl[F_DATA], depth, &u)) != 0)
            return rc;
        dp = fv[F_DATA];
        dlen = fl[F_DATA];
    } else {
        if (evs__mp_read(fv[F_DATA], fl[F_DATA], &data) != 0 ||
            data.type != MSGPACK_OBJECT_BIN)
            return EVS_EBADMSG;
        dp = data.v.raw.p;
        dlen = data.v.raw.len;
    }
    if (dlen > max_data)
        return EVS_ETOOBIG;
    if (c == EVS_CONTENT_JSON && (rc = evs__json_validate(dp, dlen)) != 0)
        return rc;

    if (fv[F_META] != NULL && (rc = check_meta(fv[F_META], fl[F_META])) != 0)
        return rc;

    if (evs__mp_read(fv[F_TS], fl[F_TS], &ts) != 0)
        return EVS_EBADMSG;
    int64_t stamp;
    if (ts.type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        stamp = ts.v.i;
    else if (ts.type == MSGPACK_OBJECT_POSITIVE_INTEGER && ts.v.u <= INT64_MAX)
        stamp = (int64_t)ts.v.u;
    else
        return EVS_EBADMSG;

    evs_event_parts parts = {
        .topic = (const char *)topic.v.raw.p,
        .topic_len = topic.v.raw.len,
        .content = (evs_content)c,
        .data = dp,
        .len = dlen,
        .timestamp = stamp,
        .id = id.v.u,
    };
    if (!builtin_type(ty.v.raw.p, ty.v.raw.len, &parts.type)) {
        parts.type = EVS_TYPE_CUSTOM;
        parts.type_name = (const char *)ty.v.raw.p;
        parts.type_name_len = ty.v.raw.len;
    }
    /* An empty map is the same as none; keep the event canonical. */
    if (fv[F_META] != NULL && !(fl[F_META] == 1 && fv[F_META][0] == 0x80)) {
        parts.meta = fv[F_META];
        parts.meta_len = fl[F_META];
    }
    return evs__event_new(out, &parts);
}
