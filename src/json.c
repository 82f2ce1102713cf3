/*
 * JSON in and out (see json.h), and evs_event_to_json.
 *
 * Reading: jansson parses (we never hand-parse JSON); we then check the
 * nesting depth on jansson's tree with the same rule as evs__mp_check (a
 * scalar or an empty container is depth 0, a non-empty container one more
 * than its deepest element), so a JSON value is accepted exactly when the
 * msgpack it becomes would be, and pack it with msgpack-c.
 *
 * Writing: msgpack is rendered by a recursive walk whose depth is capped
 * (RENDER_DEPTH), so even unchecked input cannot exhaust the stack; every
 * read is bounded by evs__mp_read against the bytes that remain.
 *
 * Every appending function either succeeds or leaves `out` as it found it
 * (len and the trailing NUL restored; capacity may have grown). Pure: no
 * threads, locks or clocks.
 *
 * jansson allocates through the library's allocator: jansson 2.14 reports
 * a failed allocation inside the parser with an ordinary parse error code
 * (never json_error_out_of_memory), so the only way to tell "out of
 * memory" from "malformed" is to see the failure ourselves. Our jansson
 * malloc notes each failure in a thread-local flag that load() clears
 * before and reads after every parse. json_set_alloc_funcs is process
 * state, so it is set once, when the library is loaded (a constructor,
 * before the program's threads exist, so no jansson call of the program's
 * races with the switch), to evs__malloc/evs__free: thin wrappers over
 * malloc/free, so memory jansson allocated before the switch, or that a
 * program frees with free() (json_dumps's result), is freed correctly.
 * A program that installs its own jansson allocator afterwards keeps it;
 * then an allocation failure inside jansson reads as EVS_EBADMSG again.
 */
#include "json.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "evs_internal.h"
#include "mpscan.h"

/*
 * Deepest msgpack nesting the renderer follows. Checked inputs are at
 * most EVS_MAX_DEPTH + 1 deep (a metadata map of EVS_MAX_DEPTH-deep
 * values); the cap only keeps unchecked input from recursing without
 * bound. Deeper input gives EVS_EBADMSG.
 */
#define RENDER_DEPTH (2 * EVS_LIMITS_DEPTH_CEILING)

/*
 * How deep map keys that are not strings may nest inside each other. Such
 * a key is rendered as JSON and then quoted as a string, and quoting
 * doubles its backslashes, so every level of a key inside a key doubles
 * the output: 24 levels (what EVS_MAX_DEPTH allows) would turn a 100-byte
 * event into gigabytes of JSON. Two levels bound the growth to four
 * times; deeper ones give EVS_EBADMSG.
 */
#define KEY_NEST_MAX 2

static void restore(evs_buf *out, size_t len)
{
    out->len = len;
    if (out->data != NULL)
        out->data[len] = '\0';
}

/* ------------------------------------------------------------------ */
/* Strings                                                             */
/* ------------------------------------------------------------------ */

static const char hexdig[] = "0123456789abcdef";

/*
 * Length of the well-formed UTF-8 sequence at s[0..n), or, when it is
 * ill-formed, the negated length of its maximal subpart (at least 1):
 * the bytes that one U+FFFD replaces (Unicode ch. 3, "U+FFFD Substitution
 * of Maximal Subparts"). Ranges are those of Table 3-7, which exclude
 * overlongs, surrogates (ED A0..BF) and code points above U+10FFFF.
 */
long evs__utf8_seq(const uint8_t *s, size_t n)
{
    uint8_t c = s[0];
    size_t need;
    uint8_t lo = 0x80, hi = 0xbf; /* allowed range of the second byte */

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        need = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        need = 3;
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        need = 4;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;
    } else {
        return -1; /* 80..C1 (continuation, overlong lead), F5..FF */
    }
    size_t i = 1;
    for (; i < need && i < n; i++) {
        uint8_t b = s[i];
        if (i == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xbf))
            break;
    }
    return i == need ? (long)need : -(long)i;
}

/*
 * Write the escaped body of s[0..n) to dst (when not NULL) and return
 * its length. Run twice: once to size, once to write, so the buffer
 * grows once and a failure changes nothing.
 */
/* Printable ASCII other than '"' and '\\': copied as is. */
static inline bool json_plain(uint8_t c) { return c >= 0x20 && c < 0x7f && c != '"' && c != '\\'; }

/* Length of the prefix of s[0..n) that json_plain keeps as is: sixteen
 * bytes a step with SSE2 (a signed compare below 0x20 also catches the
 * bytes >= 0x80, which need the UTF-8 check). */
static size_t json_plain_run(const uint8_t *s, size_t n)
{
    size_t i = 0;
#ifdef __SSE2__
    const __m128i sp = _mm_set1_epi8(0x20), del = _mm_set1_epi8(0x7f),
                  q = _mm_set1_epi8('"'), bs = _mm_set1_epi8('\\');
    for (; i + 16 <= n; i += 16) {
        __m128i x = _mm_loadu_si128((const __m128i *)(s + i));
        __m128i bad = _mm_or_si128(_mm_or_si128(_mm_cmplt_epi8(x, sp), _mm_cmpeq_epi8(x, del)),
                                   _mm_or_si128(_mm_cmpeq_epi8(x, q), _mm_cmpeq_epi8(x, bs)));
        unsigned m = (unsigned)_mm_movemask_epi8(bad);
        if (m != 0)
            return i + (size_t)__builtin_ctz(m);
    }
#endif
    while (i < n && json_plain(s[i]))
        i++;
    return i;
}

static size_t escape(char *dst, const uint8_t *s, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t run = json_plain_run(s + i, n - i);
        if (run > 0) {
            if (dst)
                memcpy(dst + o, s + i, run);
            o += run;
            i += run;
            continue;
        }
        uint8_t c = s[i];
        const char *esc = NULL;
        switch (c) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        default: break;
        }
        if (esc != NULL) {
            if (dst)
                memcpy(dst + o, esc, 2);
            o += 2;
            i++;
        } else if (c < 0x20 || c == 0x7f) {
            if (dst) {
                memcpy(dst + o, "\\u00", 4);
                dst[o + 4] = hexdig[c >> 4];
                dst[o + 5] = hexdig[c & 15];
            }
            o += 6;
            i++;
        } else {
            long k = evs__utf8_seq(s + i, n - i);
            if (k > 0) {
                if (dst)
                    memcpy(dst + o, s + i, (size_t)k);
                o += (size_t)k;
                i += (size_t)k;
            } else {
                if (dst)
                    memcpy(dst + o, "\xef\xbf\xbd", 3);
                o += 3;
                i += (size_t)-k;
            }
        }
    }
    return o;
}

int evs__json_append_string(evs_buf *out, const void *s, size_t len)
{
    if (out == NULL || (s == NULL && len > 0))
        return EVS_EINVAL;
    /* Each input byte becomes at most 6 output bytes. */
    if (len > (SIZE_MAX / 2 - 2) / 6)
        return EVS_ENOMEM;
    size_t body = escape(NULL, s, len);
    int rc = evs_buf_reserve(out, body + 2);
    if (rc != 0)
        return rc;
    char *d = out->data + out->len;
    d[0] = '"';
    escape(d + 1, s, len);
    d[body + 1] = '"';
    out->len += body + 2;
    out->data[out->len] = '\0';
    return 0;
}

/* ------------------------------------------------------------------ */
/* base64 and time                                                     */
/* ------------------------------------------------------------------ */

static const char b64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int evs__base64_append(evs_buf *out, const void *p, size_t len)
{
    if (out == NULL || (p == NULL && len > 0))
        return EVS_EINVAL;
    if (len > SIZE_MAX / 8)
        return EVS_ENOMEM;
    size_t olen = (len + 2) / 3 * 4;
    int rc = evs_buf_reserve(out, olen);
    if (rc != 0)
        return rc;
    const uint8_t *s = p;
    char *d = out->data + out->len;
    size_t i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
        *d++ = b64[v >> 18];
        *d++ = b64[(v >> 12) & 63];
        *d++ = b64[(v >> 6) & 63];
        *d++ = b64[v & 63];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)s[i] << 16;
        *d++ = b64[v >> 18];
        *d++ = b64[(v >> 12) & 63];
        *d++ = '=';
        *d++ = '=';
    } else if (len - i == 2) {
        uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8;
        *d++ = b64[v >> 18];
        *d++ = b64[(v >> 12) & 63];
        *d++ = b64[(v >> 6) & 63];
        *d++ = '=';
    }
    out->len += olen;
    out->data[out->len] = '\0';
    return 0;
}

/* Civil date from days since 1970-01-01 (proleptic Gregorian), after
 * Howard Hinnant's civil_from_days: exact for every int64 ns instant. */
static void civil(int64_t days, int64_t *y, unsigned *m, unsigned *d)
{
    days += 719468;
    int64_t era = (days >= 0 ? days : days - 146096) / 146097;
    unsigned doe = (unsigned)(days - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

int evs__rfc3339_append(evs_buf *out, int64_t ns)
{
    if (out == NULL)
        return EVS_EINVAL;
    /* Floor division, so instants before 1970 keep a positive fraction. */
    int64_t secs = ns / 1000000000, frac = ns % 1000000000;
    if (frac < 0) {
        frac += 1000000000;
        secs--;
    }
    int64_t days = secs / 86400, sod = secs % 86400;
    if (sod < 0) {
        sod += 86400;
        days--;
    }
    int64_t y;
    unsigned mo, d;
    civil(days, &y, &mo, &d);
    /* int64 ns spans years 1677..2262: always four digits. */
    char tmp[48];
    int n = snprintf(tmp, sizeof(tmp), "%04" PRId64 "-%02u-%02uT%02u:%02u:%02u.%09uZ", y,
                     mo, d, (unsigned)(sod / 3600), (unsigned)(sod / 60 % 60),
                     (unsigned)(sod % 60), (unsigned)frac);
    return evs_buf_append(out, tmp, (size_t)n);
}

/* ------------------------------------------------------------------ */
/* msgpack -> JSON                                                     */
/* ------------------------------------------------------------------ */

/*
 * Format a float with the fewest significant digits (from `min` up to
 * `max`, which always round-trips) that read back as the same value, and
 * keep it a JSON real: "1" becomes "1.0", so JSON -> msgpack -> JSON
 * keeps floats floats. NaN and infinities have no JSON form: null.
 */
/*
 * The fast path of append_float for the common double with few decimals
 * (prices, ratios): the smallest k <= 8 for which m = v * 10^k is an
 * integer below 10^15 and m / 10^k == v. Then the decimal m/10^k reads
 * back as v (strtod and the division round the same exact rational), it
 * has at most 15 significant digits, and it is what "%.15g" prints (v is
 * within half an ulp of it, far less than half a unit of the 15th digit).
 * Only for 1e-4 <= |v| < 1e15, where "%g" writes no exponent. Returns the
 * length written to tmp, or 0 when the slow path must decide.
 */
static int short_decimal(char *tmp, double v)
{
    static const double p10[9] = {1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8};
    double a = v < 0 ? -v : v;
    if (!(a >= 1e-4 && a < 1e15))
        return 0;
    for (int k = 0; k <= 8; k++) {
        double m = a * p10[k];
        if (m >= 1e15) /* 15 digits at most (and below 2^53: exact) */
            return 0;
        if (m != (double)(uint64_t)m || m / p10[k] != a)
            continue;
        /* a * 10^j may round off an integer for some j < k: the same
         * decimal, found with trailing zeros; drop them. */
        uint64_t mi = (uint64_t)m;
        while (k > 0 && mi % 10 == 0) {
            mi /= 10;
            k--;
        }
        char digits[24];
        int nd = snprintf(digits, sizeof(digits), "%" PRIu64, mi);
        int n = 0;
        if (v < 0)
            tmp[n++] = '-';
        if (k == 0) {
            memcpy(tmp + n, digits, (size_t)nd);
            return n + nd;
        }
        if (nd <= k) { /* 0.00ddd */
            tmp[n++] = '0';
            tmp[n++] = '.';
            memset(tmp + n, '0', (size_t)(k - nd));
            n += k - nd;
            memcpy(tmp + n, digits, (size_t)nd);
            return n + nd;
        }
        memcpy(tmp + n, digits, (size_t)(nd - k));
        n += nd - k;
        tmp[n++] = '.';
        memcpy(tmp + n, digits + nd - k, (size_t)k);
        return n + k;
    }
    return 0;
}

static int append_float(evs_buf *out, double v, bool single)
{
    if (!isfinite(v))
        return evs_buf_append(out, "null", 4);
    char tmp[40];
    int n = single ? 0 : short_decimal(tmp, v);
    if (n > 0) {
        if (memchr(tmp, '.', (size_t)n) == NULL) {
            memcpy(tmp + n, ".0", 2);
            n += 2;
        }
        return evs_buf_append(out, tmp, (size_t)n);
    }
    for (int prec = single ? 6 : 15; prec <= (single ? 9 : 17); prec++) {
        n = snprintf(tmp, sizeof(tmp) - 2, "%.*g", prec, v);
        if (single ? strtof(tmp, NULL) == (float)v : strtod(tmp, NULL) == v)
            break;
    }
    bool real = false;
    for (int i = 0; i < n; i++) {
        /* A locale may use another decimal separator; JSON wants '.'. */
        if (tmp[i] == ',')
            tmp[i] = '.';
        if (tmp[i] == '.' || tmp[i] == 'e')
            real = true;
    }
    if (!real) {
        memcpy(tmp + n, ".0", 2);
        n += 2;
    }
    return evs_buf_append(out, tmp, (size_t)n);
}

static int render(const uint8_t *p, size_t len, size_t *used, unsigned depth,
                  unsigned keys, evs_buf *out);

/* A map key: a str as is; anything else rendered, then quoted. `keys`:
 * how many non-string keys enclose this one. */
static int render_key(const uint8_t *p, size_t len, size_t *used, unsigned depth,
                      unsigned keys, evs_buf *out)
{
    evs_mpval k;
    int rc = evs__mp_read(p, len, &k);
    if (rc != 0)
        return rc;
    if (k.type == MSGPACK_OBJECT_STR) {
        *used = k.size;
        return evs__json_append_string(out, k.v.raw.p, k.v.raw.len);
    }
    if (keys >= KEY_NEST_MAX)
        return EVS_EBADMSG;
    evs_buf tmp = {0};
    rc = render(p, len, used, depth, keys + 1, &tmp);
    if (rc == 0)
        rc = evs__json_append_string(out, tmp.data, tmp.len);
    evs_buf_free(&tmp);
    return rc;
}

/* Render the value at p[0..len); write its encoded size to *used. */
static int render(const uint8_t *p, size_t len, size_t *used, unsigned depth,
                  unsigned keys, evs_buf *out)
{
    evs_mpval v;
    char tmp[32];
    int rc = evs__mp_read(p, len, &v);
    if (rc != 0)
        return rc;
    *used = v.size;
    switch (v.type) {
    case MSGPACK_OBJECT_NIL:
        return evs_buf_append(out, "null", 4);
    case MSGPACK_OBJECT_BOOLEAN:
        return v.v.b ? evs_buf_append(out, "true", 4) : evs_buf_append(out, "false", 5);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        return evs_buf_append(out, tmp,
                              (size_t)snprintf(tmp, sizeof(tmp), "%" PRIu64, v.v.u));
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return evs_buf_append(out, tmp,
                              (size_t)snprintf(tmp, sizeof(tmp), "%" PRId64, v.v.i));
    case MSGPACK_OBJECT_FLOAT32:
        return append_float(out, v.v.f, true);
    case MSGPACK_OBJECT_FLOAT64:
        return append_float(out, v.v.f, false);
    case MSGPACK_OBJECT_STR:
        return evs__json_append_string(out, v.v.raw.p, v.v.raw.len);
    case MSGPACK_OBJECT_BIN:
        if ((rc = evs_buf_append(out, "\"", 1)) != 0 ||
            (rc = evs__base64_append(out, v.v.raw.p, v.v.raw.len)) != 0)
            return rc;
        return evs_buf_append(out, "\"", 1);
    case MSGPACK_OBJECT_EXT: {
        int n = snprintf(tmp, sizeof(tmp), "{\"ext\":%d,\"data\":\"", (int)v.v.ext.type);
        if ((rc = evs_buf_append(out, tmp, (size_t)n)) != 0 ||
            (rc = evs__base64_append(out, v.v.ext.p, v.v.ext.len)) != 0)
            return rc;
        return evs_buf_append(out, "\"}", 2);
    }
    case MSGPACK_OBJECT_ARRAY:
    case MSGPACK_OBJECT_MAP: {
        bool map = v.type == MSGPACK_OBJECT_MAP;
        if (v.v.n > 0 && depth >= RENDER_DEPTH)
            return EVS_EBADMSG;
        if ((rc = evs_buf_append(out, map ? "{" : "[", 1)) != 0)
            return rc;
        size_t off = v.size;
        /* Each element takes at least one byte, and a short read fails,
         * so a hostile count ends the loop at the end of the input. */
        for (uint32_t i = 0; i < v.v.n; i++) {
            size_t u;
            if (i > 0 && (rc = evs_buf_append(out, ",", 1)) != 0)
                return rc;
            if (map) {
                if ((rc = render_key(p + off, len - off, &u, depth + 1, keys, out)) != 0)
                    return rc;
                off += u;
                if ((rc = evs_buf_append(out, ":", 1)) != 0)
                    return rc;
            }
            if ((rc = render(p + off, len - off, &u, depth + 1, keys, out)) != 0)
                return rc;
            off += u;
        }
        *used = off;
        return evs_buf_append(out, map ? "}" : "]", 1);
    }
    default:
        return EVS_EBADMSG;
    }
}

int evs__mp_to_json(const uint8_t *p, size_t len, evs_buf *out)
{
    if (out == NULL || (p == NULL && len > 0))
        return EVS_EINVAL;
    size_t start = out->len, used = 0;
    int rc = render(p, len, &used, 0, 0, out);
    if (rc == 0 && used != len)
        rc = EVS_EBADMSG; /* one value, exactly */
    if (rc != 0)
        restore(out, start);
    return rc;
}

/* ------------------------------------------------------------------ */
/* JSON -> msgpack                                                     */
/* ------------------------------------------------------------------ */

/* True once jansson_malloc has failed on this thread since load() last
 * cleared it: whatever jansson then reports is out of memory. */
static _Thread_local bool tl_jansson_nomem;

static void *jansson_malloc(size_t n)
{
    void *p = evs__malloc(n);
    if (p == NULL)
        tl_jansson_nomem = true;
    return p;
}

static void jansson_free(void *p) { evs__free(p); }

static pthread_once_t jansson_once = PTHREAD_ONCE_INIT;

static void jansson_install(void) { json_set_alloc_funcs(jansson_malloc, jansson_free); }

/* At load time, before the program's own threads can be using jansson
 * (load() also runs the once, should a loader skip constructors). */
__attribute__((constructor)) static void jansson_at_load(void)
{
    pthread_once(&jansson_once, jansson_install);
}

static int parse_error(const json_error_t *err)
{
    int rc;
    switch (json_error_code(err)) {
    case json_error_out_of_memory: return EVS_ENOMEM;
    case json_error_stack_overflow: rc = EVS_ETOOBIG; break; /* past jansson's own cap */
    default: rc = EVS_EBADMSG; break;
    }
    (void)evs__set_error(EVS_EBADMSG, "JSON line %d column %d: %s", err->line, err->column,
                         err->text);
    return rc;
}

/*
 * Integers past int64. jansson's integers are int64 (json_int_t), so it
 * refuses 9223372036854775808 .. 18446744073709551615, which msgpack holds
 * exactly as positive integers; reading them as reals would lose digits.
 * When (and only when) jansson reports a numeric overflow, the document is
 * parsed again with JSON_DECODE_INT_AS_REAL, so that every number in the
 * tree is a real, and each number's own text is read back from the
 * document: an integer's text (no '.', 'e' or 'E') gives its exact value,
 * a real's the value jansson read. This is not a second parser: jansson
 * has accepted the document, and the scan below only skips strings and
 * takes number tokens in document order, which is the order pack() meets
 * them (arrays in order, objects in insertion order, with duplicate keys
 * refused so nothing collapses).
 */
typedef struct numscan {
    const char *p, *end;
} numscan;

static bool num_char(char c)
{
    return (c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E';
}

/* The next number token of a document jansson accepted; false at the end. */
static bool next_number(numscan *ns, const char **tok, size_t *len)
{
    const char *p = ns->p, *end = ns->end;
    while (p < end) {
        char c = *p;
        if (c == '"') {
            /* A valid string: up to the first '"' not escaped. */
            for (p++; p < end && *p != '"'; p++)
                if (*p == '\\')
                    p++;
            p++;
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            const char *t = p;
            while (p < end && num_char(*p))
                p++;
            *tok = t;
            *len = (size_t)(p - t);
            ns->p = p;
            return true;
        } else {
            p++; /* punctuation, whitespace, true/false/null */
        }
    }
    ns->p = end;
    return false;
}

typedef enum { NUM_REAL, NUM_INT, NUM_UINT, NUM_RANGE } numkind;

/* Classify a number token; an integer's value goes to *i or *u. */
static numkind read_number(const char *tok, size_t len, int64_t *i, uint64_t *u)
{
    for (size_t k = 0; k < len; k++)
        if (tok[k] == '.' || tok[k] == 'e' || tok[k] == 'E')
            return NUM_REAL;
    /* JSON integers have no leading zeros: more than 20 digits (and a
     * sign) is past uint64 whatever they are. */
    char buf[24];
    if (len >= sizeof buf)
        return NUM_RANGE;
    memcpy(buf, tok, len);
    buf[len] = '\0';
    errno = 0;
    if (tok[0] == '-') {
        long long v = strtoll(buf, NULL, 10);
        if (errno == ERANGE)
            return NUM_RANGE;
        *i = v;
        return NUM_INT;
    }
    unsigned long long v = strtoull(buf, NULL, 10);
    if (errno == ERANGE)
        return NUM_RANGE;
    *u = v;
    return NUM_UINT;
}

/* Apply evs__mp_check's depth rule to a jansson tree; recursion stops at
 * `max` + 1 levels. */
static int check_depth(const json_t *j, unsigned depth, unsigned max)
{
    if (json_is_array(j)) {
        size_t n = json_array_size(j);
        if (n > 0 && depth + 1 > max)
            return EVS_ETOOBIG;
        for (size_t i = 0; i < n; i++) {
            int rc = check_depth(json_array_get(j, i), depth + 1, max);
            if (rc != 0)
                return rc;
        }
    } else if (json_is_object(j)) {
        if (json_object_size(j) > 0 && depth + 1 > max)
            return EVS_ETOOBIG;
        for (void *it = json_object_iter((json_t *)j); it != NULL;
             it = json_object_iter_next((json_t *)j, it)) {
            int rc = check_depth(json_object_iter_value(it), depth + 1, max);
            if (rc != 0)
                return rc;
        }
    }
    return 0;
}

/* Duplicate keys are refused: jansson would otherwise keep the last
 * value silently, and the msgpack map could not say there were two. */
#define LOAD_FLAGS (JSON_DECODE_ANY | JSON_ALLOW_NUL | JSON_REJECT_DUPLICATES)

/* Parse p[0..len). *big is set when the tree was read with
 * JSON_DECODE_INT_AS_REAL (integers past int64: see numscan), after every
 * integer's text was checked to fit int64 or uint64. */
static int load(const void *p, size_t len, json_t **out, bool *big)
{
    json_error_t err;
    *out = NULL;
    *big = false;
    if (len == 0) {
        (void)evs__set_error(EVS_EBADMSG, "JSON: empty input");
        return EVS_EBADMSG;
    }
    if (p == NULL)
        return EVS_EINVAL;
    pthread_once(&jansson_once, jansson_install);
    tl_jansson_nomem = false;
    json_t *j = json_loadb(p, len, LOAD_FLAGS, &err);
    if (j == NULL && !tl_jansson_nomem && json_error_code(&err) == json_error_numeric_overflow) {
        j = json_loadb(p, len, LOAD_FLAGS | JSON_DECODE_INT_AS_REAL, &err);
        *big = true;
    }
    if (tl_jansson_nomem) {
        /* Whatever jansson said (a parse error, or a tree built around
         * the failure), the input was not judged: out of memory. */
        json_decref(j);
        return EVS_ENOMEM;
    }
    if (j == NULL)
        return parse_error(&err);
    int rc = check_depth(j, 0, evs__max_depth());
    if (rc == 0 && *big) {
        numscan ns = {p, (const char *)p + len};
        const char *tok;
        size_t n;
        int64_t i;
        uint64_t u;
        while (rc == 0 && next_number(&ns, &tok, &n)) {
            if (read_number(tok, n, &i, &u) == NUM_RANGE) {
                (void)evs__set_error(EVS_EBADMSG, "JSON: integer %.*s is outside -2^63 .. 2^64-1",
                                    n > 40 ? 40 : (int)n, tok);
                rc = EVS_EBADMSG;
            }
        }
    }
    if (rc != 0) {
        json_decref(j);
        return rc;
    }
    *out = j;
    return 0;
}

int evs__json_validate(const void *p, size_t len)
{
    json_t *j;
    bool big;
    int rc = load(p, len, &j, &big);
    json_decref(j);
    return rc;
}

/* Pack a depth-checked tree (so recursion is bounded by the depth limit).
 * `ns` is NULL, or, for a tree read with JSON_DECODE_INT_AS_REAL, the
 * document's number tokens, taken one per real in document order.
 * Returns 0 or non-zero after an allocation failure in the buffer. */
static int pack(msgpack_packer *pk, const json_t *j, numscan *ns)
{
    switch (json_typeof(j)) {
    case JSON_NULL: return msgpack_pack_nil(pk);
    case JSON_TRUE: return msgpack_pack_true(pk);
    case JSON_FALSE: return msgpack_pack_false(pk);
    case JSON_INTEGER: return msgpack_pack_int64(pk, (int64_t)json_integer_value(j));
    case JSON_REAL: {
        const char *tok;
        size_t n;
        int64_t i;
        uint64_t u;
        if (ns != NULL && next_number(ns, &tok, &n)) {
            switch (read_number(tok, n, &i, &u)) {
            case NUM_INT: return msgpack_pack_int64(pk, i);
            case NUM_UINT: return msgpack_pack_uint64(pk, u);
            default: break; /* a real (ranges were checked in load) */
            }
        }
        return msgpack_pack_double(pk, json_real_value(j));
    }
    case JSON_STRING:
        return msgpack_pack_str_with_body(pk, json_string_value(j), json_string_length(j));
    case JSON_ARRAY: {
        size_t n = json_array_size(j);
        if (msgpack_pack_array(pk, n) != 0)
            return -1;
        for (size_t i = 0; i < n; i++)
            if (pack(pk, json_array_get(j, i), ns) != 0)
                return -1;
        return 0;
    }
    case JSON_OBJECT: {
        if (msgpack_pack_map(pk, json_object_size(j)) != 0)
            return -1;
        /* jansson iterates in insertion order: the document's order. */
        for (void *it = json_object_iter((json_t *)j); it != NULL;
             it = json_object_iter_next((json_t *)j, it)) {
            if (msgpack_pack_str_with_body(pk, json_object_iter_key(it),
                                           json_object_iter_key_len(it)) != 0 ||
                pack(pk, json_object_iter_value(it), ns) != 0)
                return -1;
        }
        return 0;
    }
    }
    return -1;
}

int evs__json_to_msgpack(const void *p, size_t len, evs_buf *out)
{
    if (out == NULL)
        return EVS_EINVAL;
    json_t *j;
    bool big;
    int rc = load(p, len, &j, &big);
    if (rc != 0)
        return rc;
    size_t start = out->len;
    msgpack_packer pk;
    evs__mp_packer_init(&pk, out);
    numscan ns = {p, (const char *)p + len};
    if (pack(&pk, j, big ? &ns : NULL) != 0) {
        /* The only way the packer fails is the buffer failing to grow. */
        restore(out, start);
        rc = EVS_ENOMEM;
    }
    json_decref(j);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Events                                                              */
/* ------------------------------------------------------------------ */

static const char *const content_names[] = {
    [EVS_CONTENT_BINARY] = "binary",
    [EVS_CONTENT_TEXT] = "text",
    [EVS_CONTENT_JSON] = "json",
    [EVS_CONTENT_MSGPACK] = "msgpack",
};

static int append_data(evs_buf *out, evs_content content, const uint8_t *d, size_t n)
{
    int rc;
    switch (content) {
    case EVS_CONTENT_MSGPACK:
        return n == 0 ? evs_buf_append(out, "null", 4) : evs__mp_to_json(d, n, out);
    case EVS_CONTENT_JSON:
        /* Validated by jansson when set, so already one JSON value. */
        return n == 0 ? evs_buf_append(out, "null", 4) : evs_buf_append(out, d, n);
    case EVS_CONTENT_TEXT:
        return evs__json_append_string(out, d, n);
    case EVS_CONTENT_BINARY:
        if ((rc = evs_buf_append(out, "\"", 1)) != 0 ||
            (rc = evs__base64_append(out, d, n)) != 0)
            return rc;
        return evs_buf_append(out, "\"", 1);
    }
    return EVS_EINVAL;
}

int evs_event_to_json(const evs_event *ev, evs_buf *out)
{
    if (ev == NULL || out == NULL)
        return EVS_EINVAL;
    evs_content content = evs_event_content(ev);
    if ((unsigned)content > EVS_CONTENT_MSGPACK)
        return EVS_EINVAL;
    size_t start = out->len, dlen, mlen;
    const uint8_t *data = evs_event_data(ev, &dlen);
    const uint8_t *meta = evs_event_meta(ev, &mlen);
    const char *tname = evs_event_type_name(ev);
    const char *topic = evs_event_topic(ev);
    char tmp[64];
    int n = snprintf(tmp, sizeof(tmp), "{\"id\":\"%" PRIu64 "\",\"type\":", evs_event_id(ev));
    int rc;

    if ((rc = evs_buf_append(out, tmp, (size_t)n)) != 0 ||
        (rc = evs__json_append_string(out, tname, tname ? strlen(tname) : 0)) != 0 ||
        (rc = evs_buf_append(out, ",\"topic\":", 9)) != 0 ||
        (rc = evs__json_append_string(out, topic, strlen(topic))) != 0 ||
        (rc = evs_buf_append(out, ",\"content\":\"", 12)) != 0 ||
        (rc = evs_buf_append(out, content_names[content], strlen(content_names[content]))) != 0 ||
        (rc = evs_buf_append(out, "\",\"data\":", 9)) != 0 ||
        (rc = append_data(out, content, data, dlen)) != 0 ||
        (rc = evs_buf_append(out, ",\"metadata\":", 12)) != 0 ||
        (rc = evs__mp_to_json(meta, mlen, out)) != 0 ||
        (rc = evs_buf_append(out, ",\"timestamp\":\"", 14)) != 0 ||
        (rc = evs__rfc3339_append(out, evs_event_timestamp(ev))) != 0 ||
        (rc = evs_buf_append(out, "\"}", 2)) != 0)
        restore(out, start);
    return rc;
}
