/*
 * Bounded msgpack scanning (see mpscan.h). No allocation, no recursion:
 * evs__mp_check keeps one counter of pending elements per nesting level
 * on the C stack, sized by a compile-time maximum depth.
 */
#include "mpscan.h"

#include "evs_internal.h"

/* Deepest nesting any caller may ask for: bounds the check's stack. */
#define MP_DEPTH_CAP 64

static uint32_t be16(const uint8_t *p) { return (uint32_t)p[0] << 8 | p[1]; }
static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static uint64_t be64(const uint8_t *p) { return (uint64_t)be32(p) << 32 | be32(p + 4); }

/* Read the big-endian length of `w` bytes at p, if present. */
static int need(size_t len, size_t n) { return len >= n ? 0 : EVS_EBADMSG; }

int evs__mp_read(const uint8_t *p, size_t len, evs_mpval *o)
{
    if (len == 0)
        return EVS_EBADMSG;
    uint8_t c = p[0];
    size_t hdr = 1, body = 0;

    memset(o, 0, sizeof(*o));
    if (c <= 0x7f) {
        o->type = MSGPACK_OBJECT_POSITIVE_INTEGER;
        o->v.u = c;
    } else if (c >= 0xe0) {
        o->type = MSGPACK_OBJECT_NEGATIVE_INTEGER;
        o->v.i = (int8_t)c;
    } else if ((c & 0xf0) == 0x80) {
        o->type = MSGPACK_OBJECT_MAP;
        o->v.n = c & 0x0f;
    } else if ((c & 0xf0) == 0x90) {
        o->type = MSGPACK_OBJECT_ARRAY;
        o->v.n = c & 0x0f;
    } else if ((c & 0xe0) == 0xa0) {
        o->type = MSGPACK_OBJECT_STR;
        body = c & 0x1f;
    } else {
        switch (c) {
        case 0xc0: o->type = MSGPACK_OBJECT_NIL; break;
        case 0xc2: o->type = MSGPACK_OBJECT_BOOLEAN; o->v.b = false; break;
        case 0xc3: o->type = MSGPACK_OBJECT_BOOLEAN; o->v.b = true; break;
        case 0xc4: case 0xc5: case 0xc6:
        case 0xd9: case 0xda: case 0xdb: {
            size_t w = (c == 0xc4 || c == 0xd9) ? 1 : (c == 0xc5 || c == 0xda) ? 2 : 4;
            if (need(len, 1 + w))
                return EVS_EBADMSG;
            body = w == 1 ? p[1] : w == 2 ? be16(p + 1) : be32(p + 1);
            hdr = 1 + w;
            o->type = c <= 0xc6 ? MSGPACK_OBJECT_BIN : MSGPACK_OBJECT_STR;
            break;
        }
        case 0xc7: case 0xc8: case 0xc9: {
            size_t w = c == 0xc7 ? 1 : c == 0xc8 ? 2 : 4;
            if (need(len, 2 + w))
                return EVS_EBADMSG;
            body = w == 1 ? p[1] : w == 2 ? be16(p + 1) : be32(p + 1);
            o->v.ext.type = (int8_t)p[1 + w];
            hdr = 2 + w;
            o->type = MSGPACK_OBJECT_EXT;
            break;
        }
        case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8:
            if (need(len, 2))
                return EVS_EBADMSG;
            o->type = MSGPACK_OBJECT_EXT;
            o->v.ext.type = (int8_t)p[1];
            hdr = 2;
            body = (size_t)1 << (c - 0xd4);
            break;
        case 0xca:
            if (need(len, 5))
                return EVS_EBADMSG;
            {
                uint32_t u = be32(p + 1);
                float f;
                memcpy(&f, &u, sizeof(f));
                o->type = MSGPACK_OBJECT_FLOAT32;
                o->v.f = f;
            }
            hdr = 5;
            break;
        case 0xcb:
            if (need(len, 9))
                return EVS_EBADMSG;
            {
                uint64_t u = be64(p + 1);
                memcpy(&o->v.f, &u, sizeof(double));
                o->type = MSGPACK_OBJECT_FLOAT64;
            }
            hdr = 9;
            break;
        case 0xcc: case 0xcd: case 0xce: case 0xcf: {
            size_t w = (size_t)1 << (c - 0xcc);
            if (need(len, 1 + w))
                return EVS_EBADMSG;
            o->type = MSGPACK_OBJECT_POSITIVE_INTEGER;
            o->v.u = w == 1 ? p[1] : w == 2 ? be16(p + 1) : w == 4 ? be32(p + 1) : be64(p + 1);
            hdr = 1 + w;
            break;
        }
        case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
            size_t w = (size_t)1 << (c - 0xd0);
            if (need(len, 1 + w))
                return EVS_EBADMSG;
            int64_t v = w == 1 ? (int8_t)p[1] : w == 2 ? (int16_t)be16(p + 1)
                      : w == 4 ? (int32_t)be32(p + 1) : (int64_t)be64(p + 1);
            /* msgpack-c reports non-negative signed encodings as positive. */
            if (v >= 0) {
                o->type = MSGPACK_OBJECT_POSITIVE_INTEGER;
                o->v.u = (uint64_t)v;
            } else {
                o->type = MSGPACK_OBJECT_NEGATIVE_INTEGER;
                o->v.i = v;
            }
            hdr = 1 + w;
            break;
        }
        case 0xdc: case 0xdd: case 0xde: case 0xdf: {
            size_t w = (c == 0xdc || c == 0xde) ? 2 : 4;
            if (need(len, 1 + w))
                return EVS_EBADMSG;
            o->v.n = w == 2 ? be16(p + 1) : be32(p + 1);
            o->type = c <= 0xdd ? MSGPACK_OBJECT_ARRAY : MSGPACK_OBJECT_MAP;
            hdr = 1 + w;
            break;
        }
        default: /* 0xc1 is never used */
            return EVS_EBADMSG;
        }
    }
    if (body > len - hdr)
        return EVS_EBADMSG;
    if (o->type == MSGPACK_OBJECT_STR || o->type == MSGPACK_OBJECT_BIN) {
        o->v.raw.p = p + hdr;
        o->v.raw.len = (uint32_t)body;
    } else if (o->type == MSGPACK_OBJECT_EXT) {
        o->v.ext.p = p + hdr;
        o->v.ext.len = (uint32_t)body;
    }
    o->size = hdr + body;
    return 0;
}

int evs__mp_check(const uint8_t *p, size_t len, unsigned max_depth, size_t *used)
{
    /* pending[d]: elements still expected at nesting level d. Each
     * element costs at least one byte, so a count larger than the bytes
     * left is rejected at once (this is what stops "dd ff 00 00 00"). */
    uint64_t pending[MP_DEPTH_CAP + 1];
    unsigned depth = 0;
    size_t off = 0;

    if (max_depth > MP_DEPTH_CAP)
        max_depth = MP_DEPTH_CAP;
    pending[0] = 1;
    while (pending[depth] > 0) {
        evs_mpval v;
        int rc = evs__mp_read(p + off, len - off, &v);
        if (rc != 0)
            return rc;
        off += v.size;
        pending[depth]--;
        if (v.type == MSGPACK_OBJECT_ARRAY || v.type == MSGPACK_OBJECT_MAP) {
            uint64_t n = v.type == MSGPACK_OBJECT_MAP ? 2 * (uint64_t)v.v.n : v.v.n;
            if (n > len - off)
                return EVS_EBADMSG;
            if (n > 0) {
                if (depth + 1 > max_depth)
                    return EVS_ETOOBIG;
                pending[++depth] = n;
            }
        }
        while (depth > 0 && pending[depth] == 0)
            depth--;
    }
    *used = off;
    return 0;
}

int evs__mp_map_find(const uint8_t *p, size_t len, const char *key, size_t klen,
                     const uint8_t **val, size_t *vlen)
{
    evs_mpval m;
    if (evs__mp_read(p, len, &m) != 0 || m.type != MSGPACK_OBJECT_MAP)
        return EVS_EBADMSG;
    size_t off = m.size;
    for (uint32_t i = 0; i < m.v.n; i++) {
        evs_mpval k;
        size_t ksz, vsz;
        if (evs__mp_check(p + off, len - off, MP_DEPTH_CAP, &ksz) != 0)
            return EVS_EBADMSG;
        if (evs__mp_read(p + off, len - off, &k) != 0)
            return EVS_EBADMSG;
        off += ksz;
        if (evs__mp_check(p + off, len - off, MP_DEPTH_CAP, &vsz) != 0)
            return EVS_EBADMSG;
        if (k.type == MSGPACK_OBJECT_STR && k.v.raw.len == klen &&
            memcmp(k.v.raw.p, key, klen) == 0) {
            *val = p + off;
            *vlen = vsz;
            return 0;
        }
        off += vsz;
    }
    return EVS_ENOTFOUND;
}

static int buf_write(void *data, const char *p, size_t len)
{
    return evs_buf_append(data, p, len) == 0 ? 0 : -1;
}

void evs__mp_packer_init(msgpack_packer *pk, evs_buf *b)
{
    msgpack_packer_init(pk, b, buf_write);
}
