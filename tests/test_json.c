/*
 * JSON: string escaping and UTF-8 repair, base64, RFC 3339 time,
 * msgpack -> JSON for every msgpack type, JSON -> msgpack with jansson,
 * the depth limit, evs_event_to_json, and allocation failure.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"
#include "evs_internal.h"
#include "json.h"
#include "mpscan.h"
#include "evs_test.h"

static size_t hex(const char *s, uint8_t *out)
{
    size_t n = 0;
    while (*s) {
        if (*s == ' ') {
            s++;
            continue;
        }
        unsigned v;
        cr_assert(sscanf(s, "%2x", &v) == 1, "bad hex at %s", s);
        out[n++] = (uint8_t)v;
        s += 2;
    }
    return n;
}

/* Assert that `b` holds exactly `want`, NUL-terminated. */
static void assert_buf(const evs_buf *b, const char *want, const char *what)
{
    cr_assert_not_null(b->data, "%s: no output", what);
    cr_assert_eq(b->len, strlen(want), "%s: len %zu, want %zu: %s", what, b->len,
                 strlen(want), b->data);
    cr_assert_eq(memcmp(b->data, want, b->len), 0, "%s: got %s want %s", what, b->data,
                 want);
    cr_assert_eq(b->data[b->len], '\0', "%s: not NUL-terminated", what);
}

/* ------------------------------------------------------------------ */
/* Strings                                                             */
/* ------------------------------------------------------------------ */

static const struct {
    const char *in;
    size_t len;
    const char *want;
} escapes[] = {
    {"", 0, "\"\""},
    {"abc", 3, "\"abc\""},
    {"\"", 1, "\"\\\"\""},
    {"\\", 1, "\"\\\\\""},
    {"/", 1, "\"/\""},
    {"\b", 1, "\"\\b\""},
    {"\f", 1, "\"\\f\""},
    {"\n", 1, "\"\\n\""},
    {"\r", 1, "\"\\r\""},
    {"\t", 1, "\"\\t\""},
    {"\0", 1, "\"\\u0000\""},
    {"\x01", 1, "\"\\u0001\""},
    {"\x0b", 1, "\"\\u000b\""},
    {"\x1f", 1, "\"\\u001f\""},
    {"\x7f", 1, "\"\\u007f\""},
    {" ~", 2, "\" ~\""},
    {"a\0b", 3, "\"a\\u0000b\""},
    /* Valid UTF-8 passes through, including the edges of each range. */
    {"\xc2\x80", 2, "\"\xc2\x80\""},                 /* U+0080 */
    {"\xc3\xa9", 2, "\"\xc3\xa9\""},                 /* é */
    {"\xdf\xbf", 2, "\"\xdf\xbf\""},                 /* U+07FF */
    {"\xe0\xa0\x80", 3, "\"\xe0\xa0\x80\""},         /* U+0800 */
    {"\xe2\x82\xac", 3, "\"\xe2\x82\xac\""},         /* € */
    {"\xed\x9f\xbf", 3, "\"\xed\x9f\xbf\""},         /* U+D7FF */
    {"\xee\x80\x80", 3, "\"\xee\x80\x80\""},         /* U+E000 */
    {"\xef\xbf\xbf", 3, "\"\xef\xbf\xbf\""},         /* U+FFFF */
    {"\xf0\x90\x80\x80", 4, "\"\xf0\x90\x80\x80\""}, /* U+10000 */
    {"\xf0\x9d\x84\x9e", 4, "\"\xf0\x9d\x84\x9e\""}, /* 𝄞 */
    {"\xf4\x8f\xbf\xbf", 4, "\"\xf4\x8f\xbf\xbf\""}, /* U+10FFFF */
    {"\xe2\x80\xa8", 3, "\"\xe2\x80\xa8\""},         /* U+2028 is legal JSON */
};

Test(json, append_string_escapes_per_rfc8259)
{
    for (size_t i = 0; i < sizeof(escapes) / sizeof(escapes[0]); i++) {
        evs_buf b = {0};
        int rc = evs__json_append_string(&b, escapes[i].in, escapes[i].len);
        cr_assert_eq(rc, 0, "case %zu: got %s", i, evs_errname(rc));
        char what[32];
        snprintf(what, sizeof(what), "case %zu", i);
        assert_buf(&b, escapes[i].want, what);
        evs_buf_free(&b);
    }
}

Test(json, every_control_character_is_escaped)
{
    for (unsigned c = 0; c < 0x20; c++) {
        char in = (char)c;
        evs_buf b = {0};
        cr_assert_eq(evs__json_append_string(&b, &in, 1), 0);
        cr_assert(b.len == 4 || b.len == 8, "0x%02x gave %s", c, b.data);
        cr_assert_eq(b.data[1], '\\', "0x%02x gave %s", c, b.data);
        evs_buf_free(&b);
    }
}

#define R "\xef\xbf\xbd" /* U+FFFD */

/* Each class of ill-formed UTF-8; one U+FFFD per maximal subpart. */
static const struct {
    const char *name;
    const char *in;
    const char *want; /* without quotes */
} invalid[] = {
    {"lone continuation 80", "\x80", R},
    {"lone continuation bf", "a\xbfz", "a" R "z"},
    {"two continuations", "\x80\xbf", R R},
    {"overlong 2-byte c0 80", "\xc0\x80", R R},
    {"overlong 2-byte c1 bf", "\xc1\xbf", R R},
    {"overlong 3-byte e0 80 80", "\xe0\x80\x80", R R R},
    {"overlong 3-byte e0 9f bf", "\xe0\x9f\xbf", R R R},
    {"overlong 4-byte f0 80 80 80", "\xf0\x80\x80\x80", R R R R},
    {"overlong 4-byte f0 8f bf bf", "\xf0\x8f\xbf\xbf", R R R R},
    {"surrogate D800", "\xed\xa0\x80", R R R},
    {"surrogate DBFF", "\xed\xaf\xbf", R R R},
    {"surrogate DC00", "\xed\xb0\x80", R R R},
    {"surrogate DFFF", "\xed\xbf\xbf", R R R},
    {"surrogate pair as CESU-8", "\xed\xa0\xbd\xed\xb8\x80", R R R R R R},
    {"above U+10FFFF f4 90", "\xf4\x90\x80\x80", R R R R},
    {"lead f5", "\xf5\x80\x80\x80", R R R R},
    {"lead f8 (5-byte form)", "\xf8\x88\x80\x80\x80", R R R R R},
    {"lead fc (6-byte form)", "\xfc\x84\x80\x80\x80\x80", R R R R R R},
    {"byte fe", "\xfe", R},
    {"byte ff", "\xff", R},
    {"truncated 2-byte at end", "a\xc3", "a" R},
    {"truncated 2-byte before ascii", "\xc3" "A", R "A"},
    {"truncated 3-byte at end", "\xe2\x82", R},
    {"truncated 3-byte before ascii", "\xe2\x82" "A", R "A"},
    {"truncated 3-byte lead only", "\xe2" "A", R "A"},
    {"truncated 4-byte at end", "\xf0\x9d\x84", R},
    {"truncated 4-byte before ascii", "\xf0\x9d\x84" "A", R "A"},
    {"truncated 4-byte then valid", "\xf0\x9d\xc3\xa9", R "\xc3\xa9"},
    /* The example of Unicode 15, section 3.9, Table 3-8. */
    {"unicode table 3-8", "\x61\xf1\x80\x80\xe1\x80\xc2\x62\x80\x63\x80\xbf\x64",
     "a" R R R "b" R "c" R R "d"},
};

Test(json, invalid_utf8_becomes_one_replacement_per_maximal_subpart)
{
    for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
        evs_buf b = {0};
        int rc = evs__json_append_string(&b, invalid[i].in, strlen(invalid[i].in));
        cr_assert_eq(rc, 0, "%s: got %s", invalid[i].name, evs_errname(rc));
        char want[128];
        snprintf(want, sizeof(want), "\"%s\"", invalid[i].want);
        assert_buf(&b, want, invalid[i].name);
        evs_buf_free(&b);
    }
}

/* Random bytes always give a JSON string jansson accepts; when the input
 * is itself valid UTF-8 (jansson is the reference), it reads back exact. */
Test(json, random_bytes_always_give_valid_json)
{
    srand(12345);
    for (int iter = 0; iter < 20000; iter++) {
        uint8_t in[12];
        size_t n = (size_t)(rand() % (int)sizeof(in));
        for (size_t i = 0; i < n; i++) {
            /* Bias toward the interesting bytes. */
            int r = rand() % 4;
            in[i] = r == 0 ? (uint8_t)(0x80 + rand() % 0x80)
                  : r == 1 ? (uint8_t)(0xc0 + rand() % 0x40)
                           : (uint8_t)rand();
        }
        evs_buf b = {0};
        cr_assert_eq(evs__json_append_string(&b, in, n), 0);
        json_error_t err;
        json_t *j = json_loadb(b.data, b.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
        cr_assert_not_null(j, "iteration %d: %s: %s", iter, err.text, b.data);
        json_t *ref = json_stringn((const char *)in, n);
        if (ref != NULL) {
            cr_assert_eq(json_string_length(j), n, "iteration %d", iter);
            cr_assert_eq(memcmp(json_string_value(j), in, n), 0, "iteration %d", iter);
        } else {
            cr_assert(b.len >= 5 && memmem(b.data, b.len, R, 3) != NULL,
                      "iteration %d: invalid input without U+FFFD", iter);
        }
        json_decref(ref);
        json_decref(j);
        evs_buf_free(&b);
    }
}

Test(json, append_string_keeps_what_the_buffer_held)
{
    evs_buf b = {0};
    cr_assert_eq(evs_buf_append(&b, "x:", 2), 0);
    cr_assert_eq(evs__json_append_string(&b, "y", 1), 0);
    assert_buf(&b, "x:\"y\"", "append");
    evs_buf_free(&b);
}

/* ------------------------------------------------------------------ */
/* base64 and time                                                     */
/* ------------------------------------------------------------------ */

Test(json, base64_matches_rfc4648_vectors)
{
    static const struct {
        const char *in, *want;
    } v[] = {
        {"", ""},         {"f", "Zg=="},         {"fo", "Zm8="},
        {"foo", "Zm9v"},  {"foob", "Zm9vYg=="},  {"fooba", "Zm9vYmE="},
        {"foobar", "Zm9vYmFy"},
        {"\xff\xfe\xfd", "//79"},  /* the two last alphabet characters */
        {"\xfb\xff", "+/8="},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        evs_buf b = {0};
        int rc = evs__base64_append(&b, v[i].in, strlen(v[i].in));
        cr_assert_eq(rc, 0, "got %s", evs_errname(rc));
        if (v[i].want[0] == '\0') {
            cr_assert_eq(b.len, 0);
        } else {
            assert_buf(&b, v[i].want, v[i].in);
        }
        evs_buf_free(&b);
    }
}

Test(json, base64_of_binary_with_nul_bytes)
{
    const uint8_t in[] = {0, 0, 0, 0};
    evs_buf b = {0};
    cr_assert_eq(evs__base64_append(&b, in, sizeof(in)), 0);
    assert_buf(&b, "AAAAAA==", "zeros");
    evs_buf_free(&b);
}

Test(json, rfc3339_renders_utc_with_nanoseconds)
{
    static const struct {
        int64_t ns;
        const char *want;
    } v[] = {
        {0, "1970-01-01T00:00:00.000000000Z"},
        {1, "1970-01-01T00:00:00.000000001Z"},
        {999999999, "1970-01-01T00:00:00.999999999Z"},
        {1000000000, "1970-01-01T00:00:01.000000000Z"},
        {-1, "1969-12-31T23:59:59.999999999Z"},
        {-1000000000, "1969-12-31T23:59:59.000000000Z"},
        {-1576800000000000123, "1920-01-13T23:59:59.999999877Z"},
        {951782400000000000, "2000-02-29T00:00:00.000000000Z"},
        {1795280400000000001, "2026-11-21T17:00:00.000000001Z"},
        {INT64_MIN, "1677-09-21T00:12:43.145224192Z"},
        {INT64_MAX, "2262-04-11T23:47:16.854775807Z"},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        evs_buf b = {0};
        int rc = evs__rfc3339_append(&b, v[i].ns);
        cr_assert_eq(rc, 0, "got %s", evs_errname(rc));
        assert_buf(&b, v[i].want, v[i].want);
        evs_buf_free(&b);
    }
}

/* ------------------------------------------------------------------ */
/* msgpack -> JSON                                                     */
/* ------------------------------------------------------------------ */

static const struct {
    const char *hex, *json;
} renders[] = {
    {"c0", "null"},
    {"c2", "false"},
    {"c3", "true"},
    {"00", "0"},
    {"7f", "127"},
    {"ff", "-1"},
    {"e0", "-32"},
    {"cc ff", "255"},
    {"cd ff ff", "65535"},
    {"ce ff ff ff ff", "4294967295"},
    {"cf ff ff ff ff ff ff ff ff", "18446744073709551615"},
    {"d0 05", "5"},
    {"d0 80", "-128"},
    {"d1 80 00", "-32768"},
    {"d2 80 00 00 00", "-2147483648"},
    {"d3 80 00 00 00 00 00 00 00", "-9223372036854775808"},
    {"ca 3f c0 00 00", "1.5"},
    {"ca 3d cc cc cd", "0.1"},                 /* float32 0.1: 9 digits suffice */
    {"ca 3f 80 00 00", "1.0"},
    {"ca 7f c0 00 00", "null"},                /* float32 NaN */
    {"ca ff 80 00 00", "null"},                /* float32 -inf */
    {"cb 3f f0 00 00 00 00 00 00", "1.0"},
    {"cb 3f b9 99 99 99 99 99 9a", "0.1"},
    {"cb 3f d5 55 55 55 55 55 55", "0.3333333333333333"},
    {"cb 80 00 00 00 00 00 00 00", "-0.0"},
    {"cb 7e 37 e4 3c 88 00 75 9c", "1e+300"},
    {"cb 00 10 00 00 00 00 00 00", "2.2250738585072014e-308"}, /* DBL_MIN: 17 digits */
    {"cb 43 30 00 00 00 00 00 00", "4503599627370496.0"},
    {"cb 7f f8 00 00 00 00 00 00", "null"},    /* NaN */
    {"cb 7f f0 00 00 00 00 00 00", "null"},    /* +inf */
    {"cb ff f0 00 00 00 00 00 00", "null"},    /* -inf */
    {"a3 61 62 63", "\"abc\""},
    {"a0", "\"\""},
    {"d9 02 0a 22", "\"\\n\\\"\""},
    {"da 00 01 ff", "\"" R "\""},
    {"db 00 00 00 02 c3 a9", "\"\xc3\xa9\""},
    {"c4 03 66 6f 6f", "\"Zm9v\""},
    {"c5 00 00", "\"\""},
    {"c6 00 00 00 01 66", "\"Zg==\""},
    {"d4 01 41", "{\"ext\":1,\"data\":\"QQ==\"}"},
    {"d5 ff 41 42", "{\"ext\":-1,\"data\":\"QUI=\"}"},
    {"d6 02 66 6f 6f 62", "{\"ext\":2,\"data\":\"Zm9vYg==\"}"},
    {"d7 7f 00 00 00 00 00 00 00 00", "{\"ext\":127,\"data\":\"AAAAAAAAAAA=\"}"},
    {"d8 80 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00",
     "{\"ext\":-128,\"data\":\"AAAAAAAAAAAAAAAAAAAAAA==\"}"},
    {"c7 00 05", "{\"ext\":5,\"data\":\"\"}"},
    {"c8 00 03 05 66 6f 6f", "{\"ext\":5,\"data\":\"Zm9v\"}"},
    {"c9 00 00 00 01 05 66", "{\"ext\":5,\"data\":\"Zg==\"}"},
    {"90", "[]"},
    {"80", "{}"},
    {"93 01 02 03", "[1,2,3]"},
    {"dc 00 02 c0 c3", "[null,true]"},
    {"dd 00 00 00 01 a1 78", "[\"x\"]"},
    {"82 a1 62 01 a1 61 c0", "{\"b\":1,\"a\":null}"},          /* order kept */
    {"de 00 01 a1 61 91 90", "{\"a\":[[]]}"},
    {"df 00 00 00 01 a0 80", "{\"\":{}}"},
    {"81 a1 22 01", "{\"\\\"\":1}"},
    /* Keys that are not strings are rendered, then quoted. */
    {"81 01 02", "{\"1\":2}"},
    {"81 ff 02", "{\"-1\":2}"},
    {"81 c0 c3", "{\"null\":true}"},
    {"81 c2 00", "{\"false\":0}"},
    {"81 cb 3f f8 00 00 00 00 00 00 00", "{\"1.5\":0}"},
    {"81 92 01 02 c3", "{\"[1,2]\":true}"},
    {"81 81 a1 61 01 02", "{\"{\\\"a\\\":1}\":2}"},
    {"81 c4 01 66 00", "{\"\\\"Zg==\\\"\":0}"},
    {"81 d4 01 41 00", "{\"{\\\"ext\\\":1,\\\"data\\\":\\\"QQ==\\\"}\":0}"},
};

Test(json, msgpack_renders_every_type)
{
    for (size_t i = 0; i < sizeof(renders) / sizeof(renders[0]); i++) {
        uint8_t b[64];
        size_t n = hex(renders[i].hex, b), used;
        cr_assert_eq(evs__mp_check(b, n, EVS_MAX_DEPTH, &used), 0, "%s", renders[i].hex);
        evs_buf out = {0};
        int rc = evs__mp_to_json(b, n, &out);
        cr_assert_eq(rc, 0, "%s: got %s", renders[i].hex, evs_errname(rc));
        assert_buf(&out, renders[i].json, renders[i].hex);
        /* Whatever we render is valid JSON (jansson's integers stop at
         * INT64_MAX, so larger ones are only checked above). */
        json_error_t err;
        json_t *j = json_loadb(out.data, out.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
        cr_assert(j != NULL || json_error_code(&err) == json_error_numeric_overflow,
                  "%s: %s", renders[i].hex, err.text);
        json_decref(j);
        evs_buf_free(&out);
    }
}

/* Strings are copied sixteen bytes a step up to the first byte that
 * needs care: put each kind at every position around those blocks. */
Test(json, string_escapes_at_every_position)
{
    static const struct {
        const char *in, *out;
    } specials[] = {
        {"\"", "\\\""}, {"\\", "\\\\"}, {"\n", "\\n"}, {"\x01", "\\u0001"},
        {"\x7f", "\\u007f"}, {"\xc3\xa9", "\xc3\xa9"}, {"\xff", "\xef\xbf\xbd"},
    };
    for (size_t len = 1; len <= 40; len++) {
        for (size_t k = 0; k < sizeof(specials) / sizeof(specials[0]); k++) {
            for (size_t pos = 0; pos < len; pos++) {
                char in[64], want[128];
                size_t n = 0, w = 0;
                want[w++] = '"';
                for (size_t i = 0; i < len; i++) {
                    if (i == pos) {
                        size_t a = strlen(specials[k].in), b = strlen(specials[k].out);
                        memcpy(in + n, specials[k].in, a);
                        memcpy(want + w, specials[k].out, b);
                        n += a;
                        w += b;
                    } else {
                        in[n++] = want[w++] = (char)('a' + i % 26);
                    }
                }
                want[w++] = '"';
                want[w] = '\0';
                evs_buf out = {0};
                cr_assert_eq(evs__json_append_string(&out, in, n), 0);
                cr_assert_str_eq(out.data, want, "len %zu, special %zu at %zu", len, k, pos);
                evs_buf_free(&out);
            }
        }
    }
}

/* The slow, obviously right rendering of a double: the fewest of 15..17
 * significant digits that read back exactly, kept a JSON real. */
static void shortest_double(double v, char *out, size_t cap)
{
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(out, cap, "%.*g", prec, v);
        if (strtod(out, NULL) == v)
            break;
    }
    if (strpbrk(out, ".e") == NULL)
        strcat(out, ".0");
}

/* append_float has a fast path for short decimals (prices, ratios): it
 * must write exactly what the slow path writes, for those and for any
 * other double. */
Test(json, doubles_render_as_the_shortest_exact_text)
{
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < 200000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        double v;
        switch (i % 4) {
        case 0: { /* a short decimal: up to 8 digits after the point */
            static const double p10[9] = {1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8};
            v = (double)(x % 100000000000ull) / p10[(x >> 40) % 9];
            break;
        }
        case 1: /* a price */
            v = (double)(int64_t)(x % 2000000) / 100.0 - 10000.0;
            break;
        case 2: /* any finite bit pattern */
            memcpy(&v, &x, sizeof(v));
            if (!isfinite(v))
                v = 1.5;
            break;
        default: /* around the fast path's edges */
            v = ((x & 1) ? 1e15 : 1e-4) * (1.0 + (double)(x % 1000 - 500) / 1e6);
            break;
        }
        uint8_t b[9] = {0xcb};
        uint64_t bits;
        memcpy(&bits, &v, sizeof(bits));
        for (int k = 0; k < 8; k++)
            b[1 + k] = (uint8_t)(bits >> (56 - 8 * k));
        evs_buf out = {0};
        cr_assert_eq(evs__mp_to_json(b, sizeof(b), &out), 0);
        char want[64];
        shortest_double(v, want, sizeof(want));
        cr_assert_str_eq(out.data, want, "%.17g", v);
        evs_buf_free(&out);
    }
}

Test(json, msgpack_render_rejects_malformed_and_restores_the_buffer)
{
    static const char *const bad[] = {
        "c1", "92 01", "a3 61", "93 01 c1 02", "01 02" /* trailing byte */, "81 a1 61",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint8_t b[16];
        size_t n = hex(bad[i], b);
        evs_buf out = {0};
        cr_assert_eq(evs_buf_append(&out, "keep", 4), 0);
        int rc = evs__mp_to_json(b, n, &out);
        cr_assert_eq(rc, EVS_EBADMSG, "%s: got %s", bad[i], evs_errname(rc));
        assert_buf(&out, "keep", bad[i]);
        evs_buf_free(&out);
    }
    evs_buf out = {0};
    int rc = evs__mp_to_json(NULL, 0, &out);
    cr_assert_eq(rc, EVS_EBADMSG, "empty: got %s", evs_errname(rc));
    evs_buf_free(&out);
}

Test(json, msgpack_render_stops_unchecked_deep_input)
{
    size_t n = 10000;
    uint8_t *b = malloc(n);
    memset(b, 0x91, n - 1);
    b[n - 1] = 0x01;
    evs_buf out = {0};
    int rc = evs__mp_to_json(b, n, &out);
    free(b);
    cr_assert_eq(rc, EVS_EBADMSG, "got %s", evs_errname(rc));
    cr_assert_eq(out.len, 0);
    evs_buf_free(&out);
}

/* {K: 0} nested `levels` times, each map being the key of the next:
 * {{{1: 0}: 0}: 0} for 3. Returns the encoded length. */
static size_t nested_keys(uint8_t *b, size_t levels)
{
    size_t n = 0;
    for (size_t i = 0; i < levels; i++)
        b[n++] = 0x81; /* a map of one pair whose key follows */
    b[n++] = 0x01;     /* the innermost key */
    for (size_t i = 0; i < levels; i++)
        b[n++] = 0x00; /* each map's value */
    return n;
}

/* Regression (fuzz_json, fuzz_event_decode): a non-string key is rendered
 * as JSON and quoted, and quoting doubles the backslashes, so keys nested
 * in keys doubled the output per level: a 49-byte value at the depth
 * limit rendered to gigabytes. Two levels render; three are refused. */
Test(json, regression_nested_non_string_keys_are_bounded)
{
    uint8_t b[64];
    size_t n = nested_keys(b, 2), used;
    evs_buf out = {0};
    cr_assert_eq(evs__mp_to_json(b, n, &out), 0);
    assert_buf(&out, "{\"{\\\"1\\\":0}\":0}", "two levels");
    evs_buf_free(&out);

    for (size_t levels = 3; levels <= EVS_MAX_DEPTH; levels++) {
        n = nested_keys(b, levels);
        cr_assert_eq(evs__mp_check(b, n, EVS_MAX_DEPTH, &used), 0, "valid msgpack");
        cr_assert_eq(evs_buf_append(&out, "keep", 4), 0);
        int rc = evs__mp_to_json(b, n, &out);
        cr_assert_eq(rc, EVS_EBADMSG, "%zu levels: got %s", levels, evs_errname(rc));
        assert_buf(&out, "keep", "unchanged");
        evs_buf_free(&out);
    }

    /* Through the public renderers: data and metadata. */
    n = nested_keys(b, EVS_MAX_DEPTH);
    evs_event *ev = event_of(EVS_TYPE_MESSAGE, NULL, "t", EVS_CONTENT_MSGPACK, b, n, NULL, 0, 1, 0);
    ASSERT_RC(evs_event_to_json(ev, &out), EVS_EBADMSG);
    cr_assert_eq(out.len, 0);
    ASSERT_RC(evs_sse_encode_buf(ev, NULL, &out), EVS_EBADMSG);
    evs_event_unref(ev);
    uint8_t meta[80] = {0x81, 0xa1, 'k'};
    memcpy(meta + 3, b, n);
    ev = event_of(EVS_TYPE_MESSAGE, NULL, "t", EVS_CONTENT_BINARY, "x", 1, meta, n + 3, 1, 0);
    ASSERT_RC(evs_event_to_json(ev, &out), EVS_EBADMSG);
    ASSERT_RC(evs_sse_encode_buf(ev, NULL, &out), 0); /* the metadata is not sent */
    evs_event_unref(ev);
    evs_buf_free(&out);
}

Test(json, helpers_refuse_null_and_impossible_sizes)
{
    evs_buf out = {0};
    ASSERT_RC(evs__json_append_string(NULL, "a", 1), EVS_EINVAL);
    ASSERT_RC(evs__json_append_string(&out, NULL, 1), EVS_EINVAL);
    ASSERT_RC(evs__json_append_string(&out, "a", SIZE_MAX / 2), EVS_ENOMEM);
    ASSERT_RC(evs__base64_append(NULL, "a", 1), EVS_EINVAL);
    ASSERT_RC(evs__base64_append(&out, NULL, 1), EVS_EINVAL);
    ASSERT_RC(evs__base64_append(&out, "a", SIZE_MAX / 4), EVS_ENOMEM);
    ASSERT_RC(evs__rfc3339_append(NULL, 0), EVS_EINVAL);
    ASSERT_RC(evs__mp_to_json((const uint8_t *)"\x01", 1, NULL), EVS_EINVAL);
    ASSERT_RC(evs__mp_to_json(NULL, 1, &out), EVS_EINVAL);
    ASSERT_RC(evs__json_to_msgpack("1", 1, NULL), EVS_EINVAL);
    ASSERT_RC(evs__json_validate(NULL, 1), EVS_EINVAL);
    cr_assert_eq(out.len, 0, "nothing written");
    evs_buf_free(&out);
}

/* ------------------------------------------------------------------ */
/* JSON -> msgpack                                                     */
/* ------------------------------------------------------------------ */

Test(json, json_to_msgpack_encodes_each_json_type)
{
    static const struct {
        const char *json, *hex;
    } v[] = {
        {"null", "c0"},
        {"true", "c3"},
        {"false", "c2"},
        {"0", "00"},
        {"-1", "ff"},
        {"300", "cd 01 2c"},
        {"-9223372036854775808", "d3 80 00 00 00 00 00 00 00"},
        {"9223372036854775807", "cf 7f ff ff ff ff ff ff ff"},
        {"9223372036854775808", "cf 80 00 00 00 00 00 00 00"},
        {"18446744073709551615", "cf ff ff ff ff ff ff ff ff"},
        {"[18446744073709551615,-2,1.5,-0,\"9\",{\"u\":9223372036854775809}]",
         "96 cf ff ff ff ff ff ff ff ff fe cb 3f f8 00 00 00 00 00 00 00 a1 39 "
         "81 a1 75 cf 80 00 00 00 00 00 00 01"},
        {"1.5", "cb 3f f8 00 00 00 00 00 00"},
        {"1.0", "cb 3f f0 00 00 00 00 00 00"},
        {"\"a\\u0000b\"", "a3 61 00 62"},
        {"\"\\u00e9\"", "a2 c3 a9"},
        {"[]", "90"},
        {"{}", "80"},
        {" [1, \"x\"] ", "92 01 a1 78"},
        {"{\"z\":1,\"a\":{\"k\":[null]}}", "82 a1 7a 01 a1 61 81 a1 6b 91 c0"},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        uint8_t want[64];
        size_t n = hex(v[i].hex, want);
        evs_buf out = {0};
        int rc = evs__json_to_msgpack(v[i].json, strlen(v[i].json), &out);
        cr_assert_eq(rc, 0, "%s: got %s", v[i].json, evs_errname(rc));
        cr_assert_eq(out.len, n, "%s: len %zu", v[i].json, out.len);
        cr_assert_eq(memcmp(out.data, want, n), 0, "%s: bytes differ", v[i].json);
        evs_buf_free(&out);
    }
}

Test(json, json_to_msgpack_to_json_round_trips)
{
    static const char *const docs[] = {
        "null", "true", "false", "0", "-7", "123456789012345678",
        "-9223372036854775808", "1.5", "1.0", "0.1", "-0.0", "1e+300", "2.5e-308",
        "\"\"", "\"plain\"", "\"\\\"\\\\\\b\\f\\n\\r\\t\\u0000\\u001f\\u007f\"",
        "\"\xc3\xa9\xe2\x82\xac\xf0\x9d\x84\x9e\"", "[]", "{}", "[[],{}]",
        "{\"z\":1,\"a\":2,\"m\":[true,false,null,\"s\",1.25,{\"deep\":[1,[2,[3]]]}]}",
        "{\"\":\"empty key\"}",
        "9223372036854775808", "18446744073709551615",
        "[18446744073709551615,-9223372036854775808,0.5,\"1e3\",{\"\\\"k\":[1e+300]}]",
    };
    for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
        evs_buf mp = {0}, js = {0}, mp2 = {0};
        int rc = evs__json_to_msgpack(docs[i], strlen(docs[i]), &mp);
        cr_assert_eq(rc, 0, "%s: got %s", docs[i], evs_errname(rc));
        size_t used;
        cr_assert_eq(evs__mp_check((uint8_t *)mp.data, mp.len, EVS_MAX_DEPTH, &used), 0);
        cr_assert_eq(used, mp.len);
        rc = evs__mp_to_json((uint8_t *)mp.data, mp.len, &js);
        cr_assert_eq(rc, 0, "%s: got %s", docs[i], evs_errname(rc));
        assert_buf(&js, docs[i], docs[i]);
        /* And the rendering reads back to the same msgpack bytes. */
        cr_assert_eq(evs__json_to_msgpack(js.data, js.len, &mp2), 0);
        cr_assert_eq(mp2.len, mp.len, "%s", docs[i]);
        cr_assert_eq(memcmp(mp2.data, mp.data, mp.len), 0, "%s", docs[i]);
        evs_buf_free(&mp);
        evs_buf_free(&js);
        evs_buf_free(&mp2);
    }
}

Test(json, json_to_msgpack_appends_after_existing_bytes)
{
    evs_buf out = {0};
    cr_assert_eq(evs_buf_append(&out, "\x01", 1), 0);
    cr_assert_eq(evs__json_to_msgpack("[2]", 3, &out), 0);
    const uint8_t want[] = {0x01, 0x91, 0x02};
    cr_assert_eq(out.len, sizeof(want));
    cr_assert_arr_eq(out.data, want, sizeof(want));
    evs_buf_free(&out);
}

/* A string of `levels` nested arrays around `inner`. */
static char *nested(unsigned levels, const char *open, const char *inner,
                    const char *close)
{
    size_t lo = strlen(open), lc = strlen(close), li = strlen(inner);
    char *s = malloc(levels * (lo + lc) + li + 1), *p = s;
    for (unsigned i = 0; i < levels; i++, p += lo)
        memcpy(p, open, lo);
    memcpy(p, inner, li);
    p += li;
    for (unsigned i = 0; i < levels; i++, p += lc)
        memcpy(p, close, lc);
    *p = '\0';
    return s;
}

Test(json, nesting_up_to_max_depth_is_accepted)
{
    char *a = nested(EVS_MAX_DEPTH, "[", "1", "]");
    char *o = nested(EVS_MAX_DEPTH, "{\"k\":", "1", "}");
    char *e = nested(EVS_MAX_DEPTH + 1, "[", "", "]"); /* innermost [] adds no level */
    const char *docs[] = {a, o, e};
    for (size_t i = 0; i < 3; i++) {
        int rc = evs__json_validate(docs[i], strlen(docs[i]));
        cr_assert_eq(rc, 0, "%s: got %s", docs[i], evs_errname(rc));
        evs_buf mp = {0};
        rc = evs__json_to_msgpack(docs[i], strlen(docs[i]), &mp);
        cr_assert_eq(rc, 0, "%s: got %s", docs[i], evs_errname(rc));
        size_t used;
        rc = evs__mp_check((uint8_t *)mp.data, mp.len, EVS_MAX_DEPTH, &used);
        cr_assert_eq(rc, 0, "the msgpack passes the same limit: %s", evs_errname(rc));
        evs_buf_free(&mp);
    }
    free(a);
    free(o);
    free(e);
}

Test(json, nesting_past_max_depth_is_etoobig)
{
    char *a = nested(EVS_MAX_DEPTH + 1, "[", "1", "]");
    char *o = nested(EVS_MAX_DEPTH + 1, "{\"k\":", "{\"x\":null}", "}");
    char *huge = nested(5000, "[", "", "]"); /* past jansson's own limit too */
    const char *docs[] = {a, o, huge};
    for (size_t i = 0; i < 3; i++) {
        int rc = evs__json_validate(docs[i], strlen(docs[i]));
        cr_assert_eq(rc, EVS_ETOOBIG, "doc %zu: got %s", i, evs_errname(rc));
        evs_buf mp = {0};
        cr_assert_eq(evs_buf_append(&mp, "ab", 2), 0);
        rc = evs__json_to_msgpack(docs[i], strlen(docs[i]), &mp);
        cr_assert_eq(rc, EVS_ETOOBIG, "doc %zu: got %s", i, evs_errname(rc));
        assert_buf(&mp, "ab", "unchanged");
        evs_buf_free(&mp);
    }
    free(a);
    free(o);
    free(huge);
}

Test(json, bad_json_is_ebadmsg)
{
    static const char *const bad[] = {
        "", " ", "{", "}", "[1,]", "[1 2]", "nul", "1 2", "{\"a\"}", "{\"a\":}",
        "{a:1}", "'a'", "NaN", "Infinity", "01", "\"unterminated", "\"\xff\"",
        "\"\\ud800\"", "[\"a\" \"b\"]", "true false",
        "18446744073709551616",      /* beyond uint64 */
        "-9223372036854775809",      /* beyond int64 */
        "[18446744073709551615,123456789012345678901234567890]",
        "[18446744073709551615,1e400]", /* a real past double, on the uint64 path */
        "{\"a\":1,\"a\":2}",            /* duplicate keys */
        "[18446744073709551615,{\"k\":1,\"k\":1}]",
        "{\"a\\u0000b\":1}",         /* jansson cannot hold NUL in keys */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = evs__json_validate(bad[i], strlen(bad[i]));
        cr_assert_eq(rc, EVS_EBADMSG, "'%s': got %s", bad[i], evs_errname(rc));
        evs_buf out = {0};
        cr_assert_eq(evs_buf_append(&out, "q", 1), 0);
        rc = evs__json_to_msgpack(bad[i], strlen(bad[i]), &out);
        cr_assert_eq(rc, EVS_EBADMSG, "'%s': got %s", bad[i], evs_errname(rc));
        assert_buf(&out, "q", bad[i]);
        evs_buf_free(&out);
    }
}

Test(json, duplicate_keys_are_ebadmsg_with_a_message)
{
    /* jansson keeps the last value of a repeated key unless told not to:
     * {"a":1,"a":2} became {"a":2} with no error. */
    static const char *const docs[] = {
        "{\"a\":1,\"a\":2}",
        "{\"x\":{\"k\":[1],\"k\":[1]}}",
        "[1,{\"b\":null,\"c\":0,\"b\":null}]",
    };
    for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
        int rc = evs__json_validate(docs[i], strlen(docs[i]));
        cr_assert_eq(rc, EVS_EBADMSG, "%s: got %s", docs[i], evs_errname(rc));
        cr_assert(strstr(evs_last_error(), "duplicate object key") != NULL, "%s: '%s'",
                  docs[i], evs_last_error());
        evs_event *ev = (evs_event *)1;
        rc = evs_event_make(&ev, NULL, "t", docs[i], NULL);
        cr_assert_eq(rc, EVS_EBADMSG, "%s: got %s", docs[i], evs_errname(rc));
        cr_assert_null(ev);
        cr_assert(strstr(evs_last_error(), "duplicate object key") != NULL, "%s: '%s'",
                  docs[i], evs_last_error());
        ASSERT_RC(evs_event_create(&ev, EVS_TYPE_MESSAGE, "t", docs[i], strlen(docs[i])), 0);
        ASSERT_RC(evs_event_set_content(ev, EVS_CONTENT_JSON), EVS_EBADMSG);
        evs_event_unref(ev);
    }
    /* The same key in different objects is fine. */
    ASSERT_RC(evs__json_validate("[{\"a\":1},{\"a\":2}]", 17), 0);
}

Test(json, uint64_past_int64_max_round_trips_exactly)
{
    /* msgpack -> JSON: the digits, exactly. */
    static const struct {
        const char *hex, *json;
    } v[] = {
        {"cf 80 00 00 00 00 00 00 00", "9223372036854775808"},
        {"cf ff ff ff ff ff ff ff fe", "18446744073709551614"},
        {"cf ff ff ff ff ff ff ff ff", "18446744073709551615"},
        {"92 cf ff ff ff ff ff ff ff ff d3 80 00 00 00 00 00 00 00",
         "[18446744073709551615,-9223372036854775808]"},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        uint8_t mp[64];
        size_t n = hex(v[i].hex, mp);
        evs_buf js = {0}, back = {0};
        ASSERT_RC(evs__mp_to_json(mp, n, &js), 0);
        assert_buf(&js, v[i].json, v[i].hex);
        /* ... and JSON -> msgpack gives the same positive integers. */
        ASSERT_RC(evs__json_validate(js.data, js.len), 0);
        ASSERT_RC(evs__json_to_msgpack(js.data, js.len, &back), 0);
        cr_assert_eq(back.len, n, "%s", v[i].json);
        cr_assert_eq(memcmp(back.data, mp, n), 0, "%s: bytes differ", v[i].json);
        evs_buf_free(&js);
        evs_buf_free(&back);
    }
    /* Through an event: stored as msgpack, rendered back exactly. */
    evs_event *ev;
    ASSERT_RC(evs_event_make(&ev, NULL, "t", "{\"n\":18446744073709551615}", NULL), 0);
    evs_buf b = {0};
    ASSERT_RC(evs_event_to_json(ev, &b), 0);
    cr_assert(strstr(b.data, "\"data\":{\"n\":18446744073709551615}") != NULL, "%s", b.data);
    evs_buf_free(&b);
    evs_event_unref(ev);
    /* Past uint64 stays an error, with a message. */
    ASSERT_RC(evs__json_validate("[18446744073709551615,18446744073709551616]", 43), EVS_EBADMSG);
    cr_assert(strstr(evs_last_error(), "18446744073709551616") != NULL, "'%s'", evs_last_error());
}

Test(json, validate_takes_exactly_len_bytes)
{
    /* The bytes after len are not read; the NUL inside is data. */
    cr_assert_eq(evs__json_validate("[1]garbage", 3), 0);
    int rc = evs__json_validate("\"a\0b\"", 5);
    cr_assert_eq(rc, EVS_EBADMSG, "raw NUL in a string: got %s", evs_errname(rc));
    cr_assert_eq(evs__json_validate("\"a\\u0000b\"", 10), 0);
}

/* ------------------------------------------------------------------ */
/* evs_event_to_json                                                   */
/* ------------------------------------------------------------------ */


static void assert_event_json(const evs_event *ev, const char *want)
{
    evs_buf b = {0};
    int rc = evs_event_to_json(ev, &b);
    cr_assert_eq(rc, 0, "got %s", evs_errname(rc));
    assert_buf(&b, want, "event");
    json_error_t err;
    json_t *j = json_loadb(b.data, b.len, 0, &err);
    cr_assert_not_null(j, "not JSON: %s", err.text);
    json_decref(j);
    evs_buf_free(&b);
}

Test(json, event_renders_the_documented_shape)
{
    const uint8_t data[] = {0x81, 0xa3, 's', 'k', 'u', 0x07};
    const uint8_t meta[] = {0x82, 0xa6, 'r', 'e', 'g', 'i', 'o', 'n', 0xa2, 'e', 'u',
                            0xa1, 'n', 0x03};
    evs_event *ev = event_of(EVS_TYPE_MESSAGE, NULL, "a.b", EVS_CONTENT_MSGPACK, data,
                             sizeof(data), meta, sizeof(meta), 7, 1795280400000000001);
    assert_event_json(ev, "{\"id\":\"7\",\"type\":\"message\",\"topic\":\"a.b\","
                          "\"content\":\"msgpack\",\"data\":{\"sku\":7},"
                          "\"metadata\":{\"region\":\"eu\",\"n\":3},"
                          "\"timestamp\":\"2026-11-21T17:00:00.000000001Z\"}");
    evs_event_unref(ev);
}

Test(json, event_id_is_a_decimal_string_even_at_uint64_max)
{
    evs_event *ev = event_of(EVS_TYPE_HEARTBEAT, NULL, "", EVS_CONTENT_BINARY, NULL, 0,
                             NULL, 0, UINT64_MAX, -1);
    assert_event_json(ev, "{\"id\":\"18446744073709551615\",\"type\":\"heartbeat\","
                          "\"topic\":\"\",\"content\":\"binary\",\"data\":\"\","
                          "\"metadata\":{},"
                          "\"timestamp\":\"1969-12-31T23:59:59.999999999Z\"}");
    evs_event_unref(ev);
}

Test(json, event_data_renders_by_content)
{
    static const struct {
        evs_content content;
        const char *data;
        size_t len;
        const char *want;
    } v[] = {
        {EVS_CONTENT_BINARY, "foo", 3, "\"Zm9v\""},
        {EVS_CONTENT_BINARY, "", 0, "\"\""},
        {EVS_CONTENT_TEXT, "hi \"x\"\n\xff", 8, "\"hi \\\"x\\\"\\n" R "\""},
        {EVS_CONTENT_TEXT, "", 0, "\"\""},
        {EVS_CONTENT_JSON, " [1, {\"a\": 2}] ", 15, " [1, {\"a\": 2}] "},
        {EVS_CONTENT_JSON, "", 0, "null"},
        {EVS_CONTENT_MSGPACK, "\x92\x01\xc3", 3, "[1,true]"},
        {EVS_CONTENT_MSGPACK, "", 0, "null"},
    };
    static const char *const names[] = {"binary", "text", "json", "msgpack"};
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        evs_event *ev = event_of(EVS_TYPE_MESSAGE, NULL, "t", v[i].content, v[i].data,
                                 v[i].len, NULL, 0, 1, 0);
        char want[256];
        snprintf(want, sizeof(want),
                 "{\"id\":\"1\",\"type\":\"message\",\"topic\":\"t\",\"content\":\"%s\","
                 "\"data\":%s,\"metadata\":{},"
                 "\"timestamp\":\"1970-01-01T00:00:00.000000000Z\"}",
                 names[v[i].content], v[i].want);
        assert_event_json(ev, want);
        evs_event_unref(ev);
    }
}

Test(json, event_custom_type_and_topic_are_escaped)
{
    evs_event *ev = event_of(EVS_TYPE_CUSTOM, "Purchase \"big\"", "a\tb\x01", EVS_CONTENT_BINARY,
                             NULL, 0, NULL, 0, 0, 0);
    assert_event_json(ev, "{\"id\":\"0\",\"type\":\"Purchase \\\"big\\\"\","
                          "\"topic\":\"a\\tb\\u0001\",\"content\":\"binary\",\"data\":\"\","
                          "\"metadata\":{},"
                          "\"timestamp\":\"1970-01-01T00:00:00.000000000Z\"}");
    evs_event_unref(ev);
}

Test(json, event_made_with_public_api_renders)
{
    evs_event *ev;
    int rc = evs_event_make(&ev, "Purchase", "orders", "{\"sku\":7,\"price\":9.5}",
                            (const char *[]){"region", "eu", NULL});
    cr_assert_eq(rc, 0, "got %s", evs_errname(rc));
    evs_buf b = {0};
    cr_assert_eq(evs_event_to_json(ev, &b), 0);
    cr_assert_not_null(strstr(b.data, "\"type\":\"Purchase\",\"topic\":\"orders\","
                                      "\"content\":\"msgpack\","
                                      "\"data\":{\"sku\":7,\"price\":9.5},"
                                      "\"metadata\":{\"region\":\"eu\"},"),
                       "%s", b.data);
    cr_assert_eq(strncmp(b.data, "{\"id\":\"0\",", 10), 0, "%s", b.data);
    evs_buf_free(&b);
    evs_event_unref(ev);
}

Test(json, event_to_json_null_args_are_einval)
{
    evs_buf b = {0};
    int rc = evs_event_to_json(NULL, &b);
    cr_assert_eq(rc, EVS_EINVAL, "got %s", evs_errname(rc));
    evs_event *ev;
    cr_assert_eq(evs_event_create(&ev, EVS_TYPE_MESSAGE, "t", NULL, 0), 0);
    rc = evs_event_to_json(ev, NULL);
    cr_assert_eq(rc, EVS_EINVAL, "got %s", evs_errname(rc));
    evs_event_unref(ev);
}

/* ------------------------------------------------------------------ */
/* Allocation failure                                                  */
/* ------------------------------------------------------------------ */

/*
 * Call fn with the k-th allocation failing, for k = 0, 1, ... until it
 * succeeds. Every failure must be EVS_ENOMEM and leave the buffer's
 * contents as they were ("pre" plus nothing). Returns how many failed.
 */
typedef int (*append_fn)(evs_buf *out, const void *arg);

static int sweep(append_fn fn, const void *arg, const char *what)
{
    int failures = 0;
    for (long k = 0;; k++) {
        cr_assert_lt(k, 10000, "%s: never succeeded", what);
        evs_buf b = {0};
        cr_assert_eq(evs_buf_append(&b, "pre", 3), 0);
        evs__alloc_fail_after(k);
        int rc = fn(&b, arg);
        evs__alloc_fail_after(-1);
        if (rc == 0) {
            cr_assert_gt(b.len, 3, "%s: nothing appended", what);
            evs_buf_free(&b);
            return failures;
        }
        cr_assert_eq(rc, EVS_ENOMEM, "%s k=%ld: got %s", what, k, evs_errname(rc));
        assert_buf(&b, "pre", what);
        evs_buf_free(&b);
        failures++;
    }
}

static int do_string(evs_buf *b, const void *arg)
{
    return evs__json_append_string(b, arg, strlen(arg));
}
static int do_base64(evs_buf *b, const void *arg)
{
    return evs__base64_append(b, arg, strlen(arg));
}
static int do_rfc3339(evs_buf *b, const void *arg)
{
    (void)arg;
    return evs__rfc3339_append(b, 1795280400000000001);
}
static int do_json_to_mp(evs_buf *b, const void *arg)
{
    return evs__json_to_msgpack(arg, strlen(arg), b);
}
static int do_mp_to_json(evs_buf *b, const void *arg)
{
    const evs_buf *mp = arg;
    return evs__mp_to_json((const uint8_t *)mp->data, mp->len, b);
}
static int do_event(evs_buf *b, const void *arg)
{
    return evs_event_to_json(arg, b);
}

#define LONG_TEXT                                                                 \
    "a long string with \"quotes\", \\ backslashes \\, \n newlines and \xff bad " \
    "bytes, long enough to make the buffer grow"

Test(json, allocation_failure_leaves_the_buffer_unchanged)
{
    static const char doc[] =
        "{\"list\":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20],"
        "\"text\":\"" "0123456789012345678901234567890123456789" "\","
        "\"more\":{\"nested\":[true,false,null,1.5,-2],\"k\":\"0123456789abcdef\"},"
        "\"tail\":\"0123456789012345678901234567890123456789012345678901234567890\"}";
    cr_assert_gt(sweep(do_string, LONG_TEXT, "string"), 0);
    cr_assert_gt(sweep(do_base64, LONG_TEXT LONG_TEXT, "base64"), 0);
    sweep(do_rfc3339, NULL, "rfc3339");
    cr_assert_gt(sweep(do_json_to_mp, doc, "json_to_msgpack"), 0);

    /* msgpack with non-string keys, so rendering allocates scratch too. */
    evs_buf mp = {0};
    cr_assert_eq(evs__json_to_msgpack(doc, strlen(doc), &mp), 0);
    cr_assert_gt(sweep(do_mp_to_json, &mp, "mp_to_json"), 1);
    const uint8_t keyed[] = {0x82, 0x92, 0x01, 0x02, 0xc3, 0x81, 0x05, 0x06, 0xc0};
    evs_buf k = {0};
    cr_assert_eq(evs_buf_append(&k, keyed, sizeof(keyed)), 0);
    cr_assert_gt(sweep(do_mp_to_json, &k, "mp_to_json keys"), 0);

    evs_event *ev = event_of(EVS_TYPE_CUSTOM, "custom-type", "some.topic.name",
                             EVS_CONTENT_MSGPACK, mp.data, mp.len, keyed + 5, 3, 42,
                             1795280400000000001);
    cr_assert_gt(sweep(do_event, ev, "event"), 1);
    evs_event_unref(ev);
    evs_buf_free(&mp);
    evs_buf_free(&k);
}
