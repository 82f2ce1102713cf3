/*
 * What the libFuzzer harnesses share: a check that aborts with a message
 * (libFuzzer then saves the input as a crash), a reader that slices the
 * fuzz input into fields, and a UTF-8 validity check for what the
 * library promises is valid UTF-8.
 *
 * Built only by `make fuzz` (clang, -fsanitize=fuzzer,address,undefined):
 * see SPEC.md, "Testing". Header-only.
 */
#ifndef EVS_FUZZ_COMMON_H
#define EVS_FUZZ_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "evs_internal.h"
#include "evstream.h"
#include "json.h"
#include "mpscan.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A property that must hold for every input. */
#define FUZZ_CHECK(cond, ...)                                                \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, \
                    #cond);                                                  \
            fprintf(stderr, __VA_ARGS__);                                    \
            fputc('\n', stderr);                                             \
            abort();                                                         \
        }                                                                    \
    } while (0)

/* Reads fields off the front of the input; past the end it reads zeros
 * and empty strings, so every input is a valid encoding of something. */
typedef struct fuzz_in {
    const uint8_t *p;
    size_t n;
} fuzz_in;

static inline uint8_t fuzz_u8(fuzz_in *in)
{
    if (in->n == 0)
        return 0;
    in->n--;
    return *in->p++;
}

static inline uint64_t fuzz_u64(fuzz_in *in, unsigned bytes)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < bytes; i++)
        v = v << 8 | fuzz_u8(in);
    return v;
}

/* Up to `max` bytes, the length taken from one input byte. */
static inline const uint8_t *fuzz_bytes(fuzz_in *in, size_t max, size_t *len)
{
    size_t want = fuzz_u8(in);
    if (want > max)
        want = max;
    if (want > in->n)
        want = in->n;
    const uint8_t *p = in->p;
    in->p += want;
    in->n -= want;
    *len = want;
    return p;
}

/* Everything that is left. */
static inline const uint8_t *fuzz_rest(fuzz_in *in, size_t *len)
{
    const uint8_t *p = in->p;
    *len = in->n;
    in->p += in->n;
    in->n = 0;
    return p;
}

/* Is s[0..n) well-formed UTF-8? */
static inline bool fuzz_utf8_ok(const void *s, size_t n)
{
    const uint8_t *b = s;
    for (size_t i = 0; i < n;) {
        long k = evs__utf8_seq(b + i, n - i);
        if (k <= 0)
            return false;
        i += (size_t)k;
    }
    return true;
}

/* s[0..n) with each ill-formed subpart replaced by U+FFFD, as every
 * UTF-8 writer in the library does (and as a WHATWG decoder reads it).
 * Appends to `out`; returns 0 or EVS_ENOMEM. */
static inline int fuzz_utf8_fix(evs_buf *out, const void *s, size_t n)
{
    const uint8_t *b = s;
    for (size_t i = 0; i < n;) {
        long k = evs__utf8_seq(b + i, n - i);
        int rc = k > 0 ? evs_buf_append(out, b + i, (size_t)k)
                       : evs_buf_append(out, "\xef\xbf\xbd", 3);
        if (rc != 0)
            return rc;
        i += (size_t)(k > 0 ? k : -k);
    }
    return 0;
}

/*
 * How deep map keys that are not strings nest inside each other in the
 * checked msgpack value at p[0..len) (0: none; 1: a non-string key; 2:
 * one inside the rendering of another). JSON rendering refuses more than
 * two (src/json.c, KEY_NEST_MAX). Writes the value's size to *used.
 */
static inline unsigned fuzz_key_nest(const uint8_t *p, size_t len, size_t *used)
{
    evs_mpval v;
    unsigned best = 0;
    if (evs__mp_read(p, len, &v) != 0) {
        *used = len;
        return 0;
    }
    size_t off = v.size, u;
    if (v.type == MSGPACK_OBJECT_ARRAY || v.type == MSGPACK_OBJECT_MAP) {
        bool map = v.type == MSGPACK_OBJECT_MAP;
        for (uint32_t i = 0; i < v.v.n && off < len; i++) {
            if (map) {
                evs_mpval k;
                unsigned kn = fuzz_key_nest(p + off, len - off, &u);
                if (evs__mp_read(p + off, len - off, &k) == 0 && k.type != MSGPACK_OBJECT_STR)
                    kn++;
                best = kn > best ? kn : best;
                off += u;
            }
            unsigned vn = fuzz_key_nest(p + off, len - off, &u);
            best = vn > best ? vn : best;
            off += u;
        }
    }
    *used = off;
    return best;
}

/*
 * A strict RFC 8259 syntax check, written from the grammar: exactly one
 * value with optional whitespace around it, strings of valid UTF-8 with
 * no raw control characters, numbers in JSON's form. (jansson cannot be
 * the judge: it refuses "\u0000" inside object keys, which is valid
 * JSON and which we write for a msgpack key holding a NUL.)
 */
typedef struct fuzz_json {
    const uint8_t *s;
    size_t n, i;
} fuzz_json;

static inline void fj_ws(fuzz_json *j)
{
    while (j->i < j->n && (j->s[j->i] == ' ' || j->s[j->i] == '\t' || j->s[j->i] == '\n' ||
                           j->s[j->i] == '\r'))
        j->i++;
}

static inline bool fj_lit(fuzz_json *j, const char *w)
{
    size_t k = strlen(w);
    if (j->n - j->i < k || memcmp(j->s + j->i, w, k) != 0)
        return false;
    j->i += k;
    return true;
}

static inline bool fj_digits(fuzz_json *j)
{
    size_t start = j->i;
    while (j->i < j->n && j->s[j->i] >= '0' && j->s[j->i] <= '9')
        j->i++;
    return j->i > start;
}

static inline bool fj_number(fuzz_json *j)
{
    if (j->i < j->n && j->s[j->i] == '-')
        j->i++;
    if (j->i < j->n && j->s[j->i] == '0')
        j->i++;
    else if (j->i >= j->n || j->s[j->i] < '1' || j->s[j->i] > '9' || !fj_digits(j))
        return false;
    if (j->i < j->n && j->s[j->i] == '.') {
        j->i++;
        if (!fj_digits(j))
            return false;
    }
    if (j->i < j->n && (j->s[j->i] == 'e' || j->s[j->i] == 'E')) {
        j->i++;
        if (j->i < j->n && (j->s[j->i] == '+' || j->s[j->i] == '-'))
            j->i++;
        if (!fj_digits(j))
            return false;
    }
    return true;
}

static inline bool fj_string(fuzz_json *j)
{
    if (j->i >= j->n || j->s[j->i] != '"')
        return false;
    j->i++;
    while (j->i < j->n) {
        uint8_t c = j->s[j->i];
        if (c == '"') {
            j->i++;
            return true;
        }
        if (c < 0x20)
            return false;
        if (c == '\\') {
            if (++j->i >= j->n)
                return false;
            c = j->s[j->i++];
            if (c == 'u') {
                for (int k = 0; k < 4; k++, j->i++)
                    if (j->i >= j->n || !strchr("0123456789abcdefABCDEF", j->s[j->i]) ||
                        j->s[j->i] == 0)
                        return false;
            } else if (!strchr("\"\\/bfnrt", c) || c == 0) {
                return false;
            }
            continue;
        }
        long k = evs__utf8_seq(j->s + j->i, j->n - j->i);
        if (k <= 0)
            return false;
        j->i += (size_t)k;
    }
    return false;
}

static inline bool fj_value(fuzz_json *j, unsigned depth)
{
    if (depth > 512)
        return false;
    fj_ws(j);
    if (j->i >= j->n)
        return false;
    uint8_t c = j->s[j->i];
    bool ok;
    if (c == '{' || c == '[') {
        uint8_t close = c == '{' ? '}' : ']';
        j->i++;
        fj_ws(j);
        if (j->i < j->n && j->s[j->i] == close) {
            j->i++;
            ok = true;
        } else {
            for (;;) {
                if (c == '{') {
                    fj_ws(j);
                    if (!fj_string(j))
                        return false;
                    fj_ws(j);
                    if (j->i >= j->n || j->s[j->i++] != ':')
                        return false;
                }
                if (!fj_value(j, depth + 1))
                    return false;
                if (j->i < j->n && j->s[j->i] == ',') {
                    j->i++;
                    continue;
                }
                if (j->i < j->n && j->s[j->i] == close) {
                    j->i++;
                    break;
                }
                return false;
            }
            ok = true;
        }
    } else if (c == '"') {
        ok = fj_string(j);
    } else if (c == 't' || c == 'f' || c == 'n') {
        ok = fj_lit(j, "true") || fj_lit(j, "false") || fj_lit(j, "null");
    } else {
        ok = fj_number(j);
    }
    fj_ws(j);
    return ok;
}

/* Is s[0..n) exactly one JSON value (RFC 8259)? */
static inline bool fuzz_json_ok(const void *s, size_t n)
{
    fuzz_json j = {s, n, 0};
    return fj_value(&j, 0) && j.i == n;
}

#endif /* EVS_FUZZ_COMMON_H */
