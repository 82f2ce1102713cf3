/*
 * SSE framing: the text/event-stream encoder and the incremental parser
 * of the WHATWG HTML standard, section 9.2 (SPEC.md, "SSE framing").
 * Pure: bytes in, bytes out; no threads, clocks, sockets or locks.
 *
 * Encoder. A frame is measured first and then written by the same code
 * (a writer whose destination is NULL only counts), so a caller's buffer
 * that is too small gets the exact size and no bytes, an evs_buf grows
 * once, and nothing is allocated per line. The one allocation is the
 * scratch buffer msgpack data is rendered into as JSON. Everything
 * written is UTF-8 (invalid sequences become U+FFFD, one per maximal
 * subpart, as the client's decoder would make them), and no value can
 * carry a line end into another field: data is split into one data: line
 * per line, type names with CR or LF are refused, ids are digits.
 *
 * Parser. Bytes are cut into lines at LF, CRLF or lone CR wherever the
 * feeds split them (`after_cr` remembers a CR whose LF may open the next
 * feed). A line that arrives whole inside one feed is interpreted in
 * place; only a line split across feeds is copied into `line`. Values
 * are UTF-8 decoded as they are stored: CR, LF, ':' and ' ' are ASCII,
 * which no multi-byte sequence contains and which end any ill-formed
 * one, so decoding each line equals decoding the stream as the standard
 * orders. Memory is bounded by max_message: `line` holds at most that
 * many bytes, `data` plus `type` at most that many, each id at most that
 * many; comments and over-long lines are skipped without being stored.
 * Invariant: every state change for a line happens after the last
 * allocation that line needs, so EVS_ENOMEM leaves the parser as it was
 * before the line and the caller can feed the rest again.
 */
#include "sse_codec.h"

#include <stdint.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "evs_internal.h"
#include "json.h"

/* ------------------------------------------------------------------ */
/* Writing: measure, then write                                        */
/* ------------------------------------------------------------------ */

/* Counts bytes; copies them too while they fit in dst[0..cap). Once one
 * piece does not fit, it stops copying (dst = NULL) and only counts, so
 * an optimistic single pass into a buffer that turns out too small
 * still learns the exact size for a second pass. */
typedef struct writer {
    char  *dst;
    size_t n;
    size_t cap;
} writer;

static void put(writer *w, const void *p, size_t len)
{
    if (w->dst != NULL) {
        if (len <= w->cap - w->n)
            memcpy(w->dst + w->n, p, len);
        else
            w->dst = NULL;
    }
    w->n += len;
}

/*
 * Scanning. Encoding is mostly looking for the few bytes that need care
 * (line ends, non-ASCII) in long runs that need none. With SSE2 (every
 * x86-64) sixteen bytes are tested at once and the test is exact: one
 * mask bit per byte that is CR, LF or has its high bit set. Elsewhere
 * eight at a time with the classic "has a zero byte" test on the word
 * XOR a repeated CR or LF; a false alarm only makes us finish that word
 * byte by byte.
 */
#define ONES  0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

static inline uint64_t zero_byte(uint64_t x) { return (x - ONES) & ~x & HIGHS; }

static inline bool is_plain(uint8_t c) { return c < 0x80 && c != '\n' && c != '\r'; }

#ifdef __SSE2__
/* Bit k set when byte k of x is CR, LF or non-ASCII. */
static inline unsigned special16(__m128i x)
{
    __m128i eol = _mm_or_si128(_mm_cmpeq_epi8(x, _mm_set1_epi8('\n')),
                               _mm_cmpeq_epi8(x, _mm_set1_epi8('\r')));
    return (unsigned)_mm_movemask_epi8(_mm_or_si128(eol, x)); /* x's high bits: non-ASCII */
}
#endif

/* Length of the prefix of s[0..n) that is ASCII with no CR or LF. */
static size_t plain_run(const uint8_t *s, size_t n)
{
    size_t i = 0;
#ifdef __SSE2__
    for (; i + 16 <= n; i += 16) {
        unsigned m = special16(_mm_loadu_si128((const __m128i *)(s + i)));
        if (m != 0)
            return i + (size_t)__builtin_ctz(m);
    }
#endif
    for (; i + 8 <= n; i += 8) {
        uint64_t x;
        memcpy(&x, s + i, 8);
        if (((x & HIGHS) | zero_byte(x ^ (ONES * '\n')) | zero_byte(x ^ (ONES * '\r'))) != 0)
            break;
    }
    while (i < n && is_plain(s[i]))
        i++;
    return i;
}

/* Length of the ASCII prefix of s[0..n). */
static size_t ascii_run(const uint8_t *s, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t x;
        memcpy(&x, s + i, 8);
        if ((x & HIGHS) != 0)
            break;
    }
    while (i < n && s[i] < 0x80)
        i++;
    return i;
}

/*
 * copy_plain_*(d, s, n): copy the plain prefix of s[0..n) (plain_run) to
 * d, which has room for n bytes, and return its length. Scanning and
 * copying are one pass: each block is stored as it is tested. A block
 * that holds the first special byte is stored whole; the bytes after
 * that byte lie inside the room (the block lies inside s[0..n)) and are
 * overwritten by whatever is written next, or are past the frame's end,
 * never read.
 */
#if defined(__x86_64__) && defined(__GNUC__)
/*
 * With AVX2, 32 bytes a step (n >= 32), for CPUs that have it (checked
 * once, at run time; the library is built for baseline x86-64).
 */
#include <immintrin.h>
#define EVS_HAVE_AVX2_COPY 1
__attribute__((target("avx2"))) static size_t copy_plain_avx2(char *d, const uint8_t *s,
                                                              size_t n)
{
    const __m256i lf = _mm256_set1_epi8('\n'), cr = _mm256_set1_epi8('\r');
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256i x = _mm256_loadu_si256((const __m256i *)(s + i));
        _mm256_storeu_si256((__m256i *)(d + i), x);
        __m256i sp = _mm256_or_si256(_mm256_or_si256(_mm256_cmpeq_epi8(x, lf),
                                                     _mm256_cmpeq_epi8(x, cr)), x);
        unsigned m = (unsigned)_mm256_movemask_epi8(sp);
        if (m != 0)
            return i + (size_t)__builtin_ctz(m);
    }
    if (i < n) { /* the last, overlapping block: bits below i are seen */
        size_t k = n - 32;
        __m256i x = _mm256_loadu_si256((const __m256i *)(s + k));
        _mm256_storeu_si256((__m256i *)(d + k), x);
        __m256i sp = _mm256_or_si256(_mm256_or_si256(_mm256_cmpeq_epi8(x, lf),
                                                     _mm256_cmpeq_epi8(x, cr)), x);
        unsigned m = (unsigned)_mm256_movemask_epi8(sp) >> (i - k);
        i = m != 0 ? i + (size_t)__builtin_ctz(m) : n;
    }
    return i;
}

/* Whether this CPU has AVX2: 0 unknown, 1 yes, -1 no. Racing first
 * callers compute the same answer; relaxed atomics keep TSan quiet. */
static int have_avx2;

static bool use_avx2(void)
{
    int v = __atomic_load_n(&have_avx2, __ATOMIC_RELAXED);
    if (v == 0) {
        __builtin_cpu_init();
        v = __builtin_cpu_supports("avx2") ? 1 : -1;
        __atomic_store_n(&have_avx2, v, __ATOMIC_RELAXED);
    }
    return v > 0;
}
#endif

#ifdef __SSE2__
/* The same with SSE2, 16 bytes a step (n >= 16). */
static size_t copy_plain_sse2(char *d, const uint8_t *s, size_t n)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m128i x = _mm_loadu_si128((const __m128i *)(s + i));
        _mm_storeu_si128((__m128i *)(d + i), x);
        unsigned m = special16(x);
        if (m != 0)
            return i + (size_t)__builtin_ctz(m);
    }
    if (i < n) { /* the last, overlapping block: bits below i are seen */
        size_t k = n - 16;
        __m128i x = _mm_loadu_si128((const __m128i *)(s + k));
        _mm_storeu_si128((__m128i *)(d + k), x);
        unsigned m = special16(x) >> (i - k);
        i = m != 0 ? i + (size_t)__builtin_ctz(m) : n;
    }
    return i;
}
#endif

/* Byte by byte, for short runs and other CPUs. */
static size_t copy_plain_bytes(char *d, const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n && is_plain(s[i])) {
        d[i] = (char)s[i];
        i++;
    }
    return i;
}

/* put() the plain prefix of s[0..n) and return its length: copied in
 * one pass when the writer has room for all n bytes, else measured. */
static size_t put_plain(writer *w, const uint8_t *s, size_t n)
{
    size_t i;
    if (w->dst == NULL || n > w->cap - w->n) {
        i = plain_run(s, n);
        put(w, s, i);
        return i;
    }
    char *d = w->dst + w->n;
#ifdef EVS_HAVE_AVX2_COPY
    if (n >= 64 && use_avx2())
        i = copy_plain_avx2(d, s, n);
    else
#endif
#ifdef __SSE2__
    if (n >= 16)
        i = copy_plain_sse2(d, s, n);
    else
#endif
        i = copy_plain_bytes(d, s, n);
    w->n += i;
    return i;
}

/* s[0..n) with every ill-formed UTF-8 subpart replaced by U+FFFD.
 * Well-formed runs are copied whole. */
static void put_utf8(writer *w, const uint8_t *s, size_t n)
{
    size_t start = 0, i = 0;
    while (i < n) {
        if (s[i] < 0x80) {
            i += ascii_run(s + i, n - i);
            continue;
        }
        long k = evs__utf8_seq(s + i, n - i);
        if (k > 0) {
            i += (size_t)k;
            continue;
        }
        put(w, s + start, i - start);
        put(w, "\xef\xbf\xbd", 3);
        i += (size_t)-k;
        start = i;
    }
    put(w, s + start, n - start);
}

/* Where the line starting at s[0] ends: the first CR or LF, or n. */
static size_t line_end(const uint8_t *s, size_t n)
{
    size_t e = plain_run(s, n);
    while (e < n && s[e] != '\n' && s[e] != '\r')
        e += 1 + plain_run(s + e + 1, n - e - 1); /* past a non-ASCII byte */
    return e;
}

/* One field line: "name: value\n", or "name:\n" for an empty value
 * (`name` is the name with ":" after it). The space is there because the
 * parser removes exactly one after the colon: a value that starts with a
 * space keeps it. The value ends at its first CR or LF (which no
 * multi-byte UTF-8 sequence contains); returns the value's length. */
static size_t put_field(writer *w, const char *name_colon, size_t len,
                        const uint8_t *v, size_t n)
{
    put(w, name_colon, len);
    if (n == 0 || v[0] == '\n' || v[0] == '\r') {
        put(w, "\n", 1);
        return 0;
    }
    put(w, " ", 1);
    size_t j = put_plain(w, v, n);
    if (j < n && v[j] >= 0x80) { /* the rest of the line as checked UTF-8 */
        size_t e = j + line_end(v + j, n - j);
        put_utf8(w, v + j, e - j);
        j = e;
    }
    put(w, "\n", 1);
    return j;
}

/* One field line per line of s[0..n), cut at LF, CRLF and lone CR (a
 * client ends a line at each). n = 0 is one empty line, and so is the
 * end after a final line end: "a\n" is the lines "a" and "". */
static void put_lines(writer *w, const char *name_colon, size_t len,
                      const uint8_t *s, size_t n)
{
    size_t i = 0;
    for (;;) {
        i += put_field(w, name_colon, len, s + i, n - i);
        if (i == n)
            return;
        i += (s[i] == '\r' && i + 1 < n && s[i + 1] == '\n' ? 2 : 1);
    }
}

static const char b64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* One data line of standard, padded base64 (base64 has no line ends). */
static void put_base64_line(writer *w, const uint8_t *s, size_t n)
{
    if (n == 0) {
        put(w, "data:\n", 6);
        return;
    }
    put(w, "data: ", 6);
    size_t olen = (n + 2) / 3 * 4;
    if (w->dst != NULL && olen > w->cap - w->n)
        w->dst = NULL; /* as put(): too little room, count only */
    if (w->dst == NULL) {
        w->n += olen;
    } else {
        char *o = w->dst + w->n;
        size_t i = 0;
        for (; i + 3 <= n; i += 3) {
            uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
            *o++ = b64[v >> 18];
            *o++ = b64[(v >> 12) & 63];
            *o++ = b64[(v >> 6) & 63];
            *o++ = b64[v & 63];
        }
        if (i < n) {
            uint32_t v = (uint32_t)s[i] << 16 | (i + 1 < n ? (uint32_t)s[i + 1] << 8 : 0);
            *o++ = b64[v >> 18];
            *o++ = b64[(v >> 12) & 63];
            *o++ = i + 1 < n ? b64[(v >> 6) & 63] : '=';
            *o++ = '=';
        }
        w->n = (size_t)(o - w->dst);
    }
    put(w, "\n", 1);
}

/* "name: digits\n"; `name` includes the ": ". */
static void put_u64_field(writer *w, const char *name, size_t len, uint64_t v)
{
    char tmp[24];
    size_t i = sizeof(tmp);
    tmp[--i] = '\n';
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    put(w, name, len);
    put(w, tmp + i, sizeof(tmp) - i);
}

/* ------------------------------------------------------------------ */
/* Encoder                                                             */
/* ------------------------------------------------------------------ */

/* What one frame is made of, checked and (for msgpack) rendered once. */
typedef struct frame {
    uint64_t       id;       /* 0 = no id: line */
    const char    *type;     /* NULL = no event: line ("message") */
    const uint8_t *data;
    size_t         len;
    bool           base64;   /* binary content */
    int            retry_ms; /* 0 = no retry: line */
    evs_buf        scratch;  /* msgpack data rendered as JSON */
} frame;

static int frame_init(frame *f, const evs_event *ev, const evs_sse_opts *opts)
{
    evs_sse_opts o = {0};
    if (opts != NULL)
        o = *opts;
    memset(f, 0, sizeof(*f));
    if (o.retry_ms < 0)
        return EVS_EINVAL;
    evs_type t = evs_event_type(ev);
    if (t == EVS_TYPE_CUSTOM) {
        const char *name = evs_event_type_name(ev);
        /* A custom name is validated when set, but decoders and future
         * constructors may be less careful; a CR or LF here would let the
         * name end its line and start a field of its choosing. (NUL
         * cannot be seen through a C string and cannot be stored: names
         * are copied with strndup.) */
        if (name == NULL || name[0] == '\0' || strpbrk(name, "\r\n") != NULL)
            return EVS_EINVAL;
        if (strcmp(name, "message") != 0)
            f->type = name;
    } else if (t != EVS_TYPE_MESSAGE) {
        f->type = evs_event_type_name(ev); /* built-in names: plain words */
        if (f->type == NULL)
            return EVS_EINVAL;
    }
    if (!o.omit_id)
        f->id = evs_event_id(ev);
    f->retry_ms = o.retry_ms;

    size_t n;
    const uint8_t *d = evs_event_data(ev, &n);
    if (d == NULL)
        d = (const uint8_t *)""; /* empty data: the writers do s + i on it */
    switch (evs_event_content(ev)) {
    case EVS_CONTENT_BINARY:
        f->base64 = true;
        break;
    case EVS_CONTENT_TEXT:
    case EVS_CONTENT_JSON:
        break;
    case EVS_CONTENT_MSGPACK:
        if (n > 0) {
            /* evs__mp_to_json escapes every control character inside
             * strings and writes no whitespace, so its JSON is one line. */
            int rc = evs__mp_to_json(d, n, &f->scratch);
            if (rc != 0)
                return rc;
            d = (const uint8_t *)f->scratch.data;
            n = f->scratch.len;
        }
        break;
    default:
        return EVS_EINVAL;
    }
    f->data = d;
    f->len = n;
    return 0;
}

static void frame_write(writer *w, const frame *f)
{
    if (f->id != 0)
        put_u64_field(w, "id: ", 4, f->id);
    if (f->type != NULL)
        put_field(w, "event:", 6, (const uint8_t *)f->type, strlen(f->type));
    if (f->base64)
        put_base64_line(w, f->data, f->len);
    else
        put_lines(w, "data:", 5, f->data, f->len);
    if (f->retry_ms > 0)
        put_u64_field(w, "retry: ", 7, (uint64_t)f->retry_ms);
    put(w, "\n", 1);
}

int evs_sse_encode(const evs_event *ev, const evs_sse_opts *opts, char *buf,
                   size_t cap, size_t *len)
{
    if (len != NULL)
        *len = 0;
    if (ev == NULL || len == NULL || (buf == NULL && cap > 0))
        return EVS_EINVAL;
    frame f;
    int rc = frame_init(&f, ev, opts);
    if (rc == 0) {
        /* Measure first: a buffer that is too small gets no bytes. */
        writer w = {NULL, 0, 0};
        frame_write(&w, &f);
        *len = w.n;
        if (w.n > cap) {
            rc = EVS_ETOOBIG;
        } else {
            writer o = {buf, 0, cap};
            frame_write(&o, &f);
        }
    }
    evs_buf_free(&f.scratch);
    return rc;
}

int evs_sse_encode_buf(const evs_event *ev, const evs_sse_opts *opts, evs_buf *out)
{
    if (ev == NULL || out == NULL)
        return EVS_EINVAL;
    frame f;
    int rc = frame_init(&f, ev, opts);
    if (rc == 0) {
        /* Optimistic: one pass into the room the buffer already has (or
         * a guess); a second, exact pass only if that was too little. */
        if (out->cap - out->len < f.len + 128 + 1)
            rc = evs_buf_reserve(out, f.len + 128);
        writer w = {out->data, out->len, out->cap > 0 ? out->cap - 1 : 0};
        if (rc == 0) {
            frame_write(&w, &f);
            if (w.dst == NULL && (rc = evs_buf_reserve(out, w.n - out->len)) == 0) {
                w = (writer){out->data, out->len, out->cap - 1};
                frame_write(&w, &f);
            }
        }
        if (rc == 0) {
            out->len = w.n;
            out->data[out->len] = '\0';
        }
    }
    evs_buf_free(&f.scratch);
    return rc;
}

int evs_sse_comment(evs_buf *out, const char *text, size_t len)
{
    if (out == NULL || (text == NULL && len > 0))
        return EVS_EINVAL;
    const uint8_t *s = (const uint8_t *)text;
    writer w = {NULL, 0, 0};
    put_lines(&w, ":", 1, s, len);
    put(&w, "\n", 1);
    int rc = evs_buf_reserve(out, w.n);
    if (rc != 0)
        return rc;
    writer o = {out->data + out->len, 0, SIZE_MAX};
    put_lines(&o, ":", 1, s, len);
    put(&o, "\n", 1);
    out->len += o.n;
    out->data[out->len] = '\0';
    return 0;
}

/* ------------------------------------------------------------------ */
/* Parser                                                              */
/* ------------------------------------------------------------------ */

/* One client's stream. The buffers are those the standard names. */
struct evs_sse_parser {
    size_t   max;        /* opts.max_message */
    evs_buf  line;       /* raw bytes of a line split across feeds (never
                            a comment); at most max */
    evs_buf  data;       /* the data buffer, decoded */
    evs_buf  type;       /* the event type buffer, decoded; data.len +
                            type.len <= max */
    evs_buf  id_buf;     /* the last event ID buffer, while it differs from
                            last_id (id_dirty) */
    evs_buf  last_id;    /* the last event ID string, set at dispatch */
    int64_t  retry;      /* the reconnection time; -1 = none received */
    uint64_t dropped;    /* messages over max, not dispatched */
    uint8_t  bom;        /* BOM bytes matched so far at the stream start */
    bool     at_start;   /* no byte of this stream consumed yet */
    bool     after_cr;   /* the last line ended with CR: an LF next ends
                            nothing (it is that line end's second byte) */
    bool     skip_line;  /* discard bytes up to the line end: a comment,
                            or a line longer than max */
    bool     oversized;  /* this message passed max: drop it at its blank
                            line; ignore its data and event fields */
    bool     id_dirty;   /* an id field set id_buf since the last dispatch */
};

static const uint8_t bom_bytes[3] = {0xef, 0xbb, 0xbf};

int evs_sse_parser_create(evs_sse_parser **out, const evs_sse_parser_opts *opts)
{
    if (out == NULL)
        return EVS_EINVAL;
    *out = NULL;
    size_t max = opts != NULL ? opts->max_message : 0;
    if (max == 0)
        max = EVS__SSE_DEFAULT_MAX;
    if (max < EVS__SSE_MIN_MAX || max > EVS__SSE_MAX_MAX)
        return EVS_EINVAL;
    evs_sse_parser *p = evs__calloc(1, sizeof(*p));
    if (p == NULL)
        return EVS_ENOMEM;
    p->max = max;
    p->retry = -1;
    p->at_start = true;
    *out = p;
    return 0;
}

void evs_sse_parser_destroy(evs_sse_parser *p)
{
    if (p == NULL)
        return;
    evs_buf_free(&p->line);
    evs_buf_free(&p->data);
    evs_buf_free(&p->type);
    evs_buf_free(&p->id_buf);
    evs_buf_free(&p->last_id);
    evs__free(p);
}

void evs_sse_parser_reset(evs_sse_parser *p)
{
    if (p == NULL)
        return;
    evs_buf_reset(&p->line);
    evs_buf_reset(&p->data);
    evs_buf_reset(&p->type);
    /* Each stream starts with an empty last event ID buffer, so the first
     * dispatch of a stream without id fields sets the id string to "". */
    evs_buf_reset(&p->id_buf);
    p->id_dirty = true;
    p->bom = 0;
    p->at_start = true;
    p->after_cr = false;
    p->skip_line = false;
    p->oversized = false;
}

int64_t evs_sse_parser_retry(const evs_sse_parser *p)
{
    return p != NULL ? p->retry : -1;
}

const char *evs_sse_parser_last_id(const evs_sse_parser *p, size_t *len)
{
    if (len != NULL)
        *len = p != NULL ? p->last_id.len : 0;
    return p != NULL && p->last_id.data != NULL ? p->last_id.data : "";
}

uint64_t evs_sse_parser_dropped(const evs_sse_parser *p)
{
    return p != NULL ? p->dropped : 0;
}

/* Size of s[0..n) once decoded (ill-formed subparts become 3 bytes). */
static size_t decoded_len(const uint8_t *s, size_t n)
{
    writer w = {NULL, 0, 0};
    put_utf8(&w, s, n);
    return w.n;
}

/* Append s[0..n) decoded, then `tail` (one byte, or NULL for none), to
 * b, which the caller has reserved room in (the decoded size, the tail
 * and the NUL). Cannot fail. */
static void store_decoded(evs_buf *b, const uint8_t *s, size_t n, const char *tail)
{
    writer w = {b->data + b->len, 0, SIZE_MAX};
    put_utf8(&w, s, n);
    if (tail != NULL)
        put(&w, tail, 1);
    b->len += w.n;
    b->data[b->len] = '\0';
}

/* The message passed max: forget what it holds; its blank line counts it. */
static void oversize(evs_sse_parser *p)
{
    p->oversized = true;
    evs_buf_reset(&p->data);
    evs_buf_reset(&p->type);
}

static bool name_is(const uint8_t *s, size_t n, const char *name)
{
    return n == strlen(name) && memcmp(s, name, n) == 0;
}

/* "Dispatch the event", at a blank line. Allocates nothing, so it cannot
 * fail; returns fn's value. */
static int dispatch(evs_sse_parser *p, evs_sse_message_fn fn, void *user)
{
    /* Step 1 comes before the empty-data check: a blank line after an id
     * field updates the last event ID even when nothing is dispatched. The
     * buffer keeps its value, so swapping it into the string is the copy
     * the standard describes (id_buf is not read again until it is set). */
    if (p->id_dirty) {
        evs_buf t = p->last_id;
        p->last_id = p->id_buf;
        p->id_buf = t;
        evs_buf_reset(&p->id_buf);
        p->id_dirty = false;
    }
    if (p->oversized) {
        p->oversized = false;
        p->dropped++;
        evs_buf_reset(&p->data);
        evs_buf_reset(&p->type);
        return 0;
    }
    if (p->data.len == 0) {
        evs_buf_reset(&p->type);
        return 0;
    }
    /* Every data field appends an LF; the last one is removed. */
    p->data.data[--p->data.len] = '\0';
    int rc = 0;
    if (fn != NULL) {
        evs_sse_message m = {
            .event = p->type.len > 0 ? p->type.data : "message",
            .event_len = p->type.len > 0 ? p->type.len : 7,
            .data = p->data.data,
            .data_len = p->data.len,
            .id = p->last_id.data != NULL ? p->last_id.data : "",
            .id_len = p->last_id.len,
        };
        rc = fn(&m, user);
    }
    evs_buf_reset(&p->data);
    evs_buf_reset(&p->type);
    return rc;
}

/* Replace b's contents with s[0..n) decoded (d bytes). A new buffer is
 * allocated when it must grow, so the old value is neither copied nor
 * lost on failure. Returns 0 or EVS_ENOMEM (b unchanged). */
static int set_decoded(evs_buf *b, const uint8_t *s, size_t n, size_t d)
{
    if (b->data == NULL || d >= b->cap) {
        evs_buf t = {0};
        if (evs_buf_reserve(&t, d) != 0)
            return EVS_ENOMEM;
        evs_buf_free(b);
        *b = t;
    }
    evs_buf_reset(b);
    store_decoded(b, s, n, NULL);
    return 0;
}

/* Interpret one complete line (without its line end), no longer than
 * max. Returns 0 or EVS_ENOMEM (then nothing changed); a dispatch puts
 * fn's value in *stop. */
static int process_line(evs_sse_parser *p, const uint8_t *s, size_t n,
                        evs_sse_message_fn fn, void *user, int *stop)
{
    if (n == 0) {
        *stop = dispatch(p, fn, user);
        return 0;
    }
    if (s[0] == ':')
        return 0; /* a comment */
    const uint8_t *colon = memchr(s, ':', n);
    size_t nlen = colon != NULL ? (size_t)(colon - s) : n;
    const uint8_t *v = colon != NULL ? colon + 1 : s + n;
    size_t vlen = n - (size_t)(v - s);
    if (vlen > 0 && v[0] == ' ') {
        v++;
        vlen--;
    }

    if (name_is(s, nlen, "data")) {
        if (p->oversized)
            return 0;
        size_t d = decoded_len(v, vlen);
        /* With its LF, the value must fit beside what the message holds. */
        if (d >= p->max - p->data.len - p->type.len) {
            oversize(p);
            return 0;
        }
        if (evs_buf_reserve(&p->data, d + 1) != 0)
            return EVS_ENOMEM;
        store_decoded(&p->data, v, vlen, "\n");
    } else if (name_is(s, nlen, "event")) {
        if (p->oversized)
            return 0;
        size_t d = decoded_len(v, vlen);
        if (d > p->max - p->data.len) {
            oversize(p);
            return 0;
        }
        if (set_decoded(&p->type, v, vlen, d) != 0)
            return EVS_ENOMEM;
    } else if (name_is(s, nlen, "id")) {
        if (memchr(v, '\0', vlen) != NULL)
            return 0; /* the standard ignores an id containing NUL */
        size_t d = decoded_len(v, vlen);
        if (d > p->max) {
            /* Ids are small; one this long is treated as an over-long
             * line: the message is dropped and the id ignored. */
            oversize(p);
            return 0;
        }
        if (set_decoded(&p->id_buf, v, vlen, d) != 0)
            return EVS_ENOMEM;
        p->id_dirty = true;
    } else if (name_is(s, nlen, "retry")) {
        if (vlen == 0)
            return 0;
        int64_t ms = 0;
        for (size_t i = 0; i < vlen; i++) {
            if (v[i] < '0' || v[i] > '9')
                return 0; /* only ASCII digits set the reconnection time */
            int dig = v[i] - '0';
            ms = ms > (INT64_MAX - dig) / 10 ? INT64_MAX : ms * 10 + dig;
        }
        p->retry = ms;
    }
    /* Any other field is ignored. */
    return 0;
}

/*
 * A line longer than max is never stored. The standard would ignore a
 * comment, an unknown field or a retry value that long anyway (a retry
 * over max digits is ignored rather than capped); a data, event or id
 * field that long drops its message. The field is known from the line's
 * first bytes: "data:", "event:", "id:" (max >= 64 exceeds every known
 * name, so a line without a colon in its first max bytes is unknown).
 */
static void overlong_line(evs_sse_parser *p, const uint8_t *head, size_t n)
{
    static const char *const dropping[] = {"data:", "event:", "id:"};
    for (size_t i = 0; i < 3; i++) {
        size_t k = strlen(dropping[i]);
        if (n >= k && memcmp(head, dropping[i], k) == 0) {
            oversize(p);
            return;
        }
    }
}

/* The first 6 bytes of the line made of the buffered part and s[0..n). */
static size_t line_head(const evs_sse_parser *p, const uint8_t *s, size_t n,
                        uint8_t head[6])
{
    size_t h = p->line.len < 6 ? p->line.len : 6;
    if (h > 0)
        memcpy(head, p->line.data, h);
    size_t more = 6 - h < n ? 6 - h : n;
    memcpy(head + h, s, more);
    return h + more;
}

static int consume_bom(evs_sse_parser *p, const uint8_t *b, size_t len, size_t *i)
{
    while (p->at_start && *i < len) {
        if (b[*i] == bom_bytes[p->bom]) {
            (*i)++;
            if (++p->bom == 3) {
                p->at_start = false;
                p->bom = 0;
            }
            continue;
        }
        /* Not a BOM: the bytes matched so far begin the first line. */
        if (p->bom > 0 && evs_buf_append(&p->line, bom_bytes, p->bom) != 0)
            return EVS_ENOMEM;
        p->bom = 0;
        p->at_start = false;
    }
    return 0;
}

int evs_sse_parser_feed(evs_sse_parser *p, const void *bytes, size_t len,
                        size_t *used, evs_sse_message_fn fn, void *user)
{
    if (used != NULL)
        *used = 0;
    if (p == NULL || (bytes == NULL && len > 0))
        return EVS_EINVAL;
    const uint8_t *b = bytes;
    size_t i = 0;
    int rc = 0, stop = 0;

    if ((rc = consume_bom(p, b, len, &i)) != 0)
        goto out;
    while (i < len) {
        if (p->after_cr) {
            p->after_cr = false;
            if (b[i] == '\n') {
                i++;
                continue;
            }
        }
        /* The line end at or after i, if this feed has one. */
        size_t j = i;
        while (j < len && b[j] != '\n' && b[j] != '\r')
            j++;
        size_t seg = j - i;

        if (p->skip_line) {
            i = j;
            if (j == len)
                break;
            p->skip_line = false;
            p->after_cr = b[j] == '\r';
            i++;
            continue;
        }
        if (p->line.len == 0 && seg > 0 && b[i] == ':') {
            p->skip_line = true; /* a comment: nothing of it is kept */
            continue;
        }
        if (seg > p->max - p->line.len) {
            uint8_t head[6];
            overlong_line(p, head, line_head(p, b + i, seg, head));
            evs_buf_reset(&p->line);
            p->skip_line = true;
            continue;
        }
        if (j == len) {
            /* The line goes on in a later feed. */
            if (evs_buf_append(&p->line, b + i, seg) != 0) {
                rc = EVS_ENOMEM;
                goto out;
            }
            i = len;
            break;
        }
        if (p->line.len == 0) {
            /* The whole line is in this feed: interpret it in place. */
            rc = process_line(p, b + i, seg, fn, user, &stop);
        } else {
            size_t keep = p->line.len;
            if ((rc = evs_buf_append(&p->line, b + i, seg)) == 0)
                rc = process_line(p, (const uint8_t *)p->line.data, p->line.len,
                                  fn, user, &stop);
            if (rc == 0) {
                evs_buf_reset(&p->line);
            } else if (p->line.data != NULL) {
                p->line.len = keep;
                p->line.data[keep] = '\0';
            }
        }
        if (rc != 0)
            goto out; /* EVS_ENOMEM: the line stays unconsumed */
        p->after_cr = b[j] == '\r';
        i = j + 1;
        if (stop != 0) {
            rc = stop;
            goto out;
        }
    }
out:
    if (used != NULL)
        *used = i;
    return rc;
}
