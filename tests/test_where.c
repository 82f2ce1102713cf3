/*
 * `where` filter expressions: the language case by case over fixed
 * events, the position of every kind of syntax error, the nesting and
 * length limits, allocation failure, concurrent evaluation, and use as
 * a subscription filter on a stream.
 */
#include <math.h>
#include <msgpack.h>
#include <pthread.h>
#include <stdlib.h>

#include "evs_internal.h"
#include "evs_test.h"
#include "where.h"

/* ---- fixtures ----------------------------------------------------- */

enum { FX_MAIN, FX_NUM, FX_TEXT, FX_BIN, FX_JSON, FX_COUNT };

static const char main_json[] =
    "{\"user\":{\"plan\":\"pro\",\"age\":30,\"tags\":[\"a\",\"b\",{\"k\":1}],"
    "\"vip\":true,\"score\":1.5,\"none\":null},"
    "\"country\":\"US\",\"amount\":100,\"price\":9.99,"
    "\"name\":\"Zo\\u00eb \\\"Q\\\"\\n\",\"n\":-5,\"neg_f\":-2.5,"
    "\"and\":\"kw\",\"emoji\":\"\\ud83d\\ude00\"}";

/* The main event: msgpack data from JSON, metadata of several kinds,
 * published-style id 42 and timestamp 1000. */
static evs_event *make_main(void)
{
    evs_event *tmp, *ev;
    ASSERT_RC(evs_event_make(&tmp, "Purchase", "orders.eu", main_json,
                             (const char *[]){"region", "eu", "tier", "gold", NULL}),
              0);
    ASSERT_RC(evs_event_meta_set_i64(tmp, "retries", 3), 0);
    ASSERT_RC(evs_event_meta_set_bool(tmp, "beta", true), 0);
    size_t len, mlen;
    const void *data = evs_event_data(tmp, &len);
    const void *meta = evs_event_meta(tmp, &mlen);
    cr_assert_eq(evs_event_content(tmp), EVS_CONTENT_MSGPACK);
    ev = event_of(EVS_TYPE_CUSTOM, "Purchase", "orders.eu", EVS_CONTENT_MSGPACK, data, len,
                  meta, mlen, 42, 1000);
    evs_event_unref(tmp);
    return ev;
}

static void pack_key(msgpack_packer *pk, const char *k)
{
    msgpack_pack_str(pk, strlen(k));
    msgpack_pack_str_body(pk, k, strlen(k));
}

/* Numbers JSON cannot carry: the extremes of uint64 and int64, float32,
 * NaN, 2^64 as a double; and a binary value. */
static evs_event *make_num(void)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 8);
    pack_key(&pk, "u");    msgpack_pack_uint64(&pk, UINT64_MAX);
    pack_key(&pk, "u2");   msgpack_pack_uint64(&pk, UINT64_MAX - 1);
    pack_key(&pk, "imin"); msgpack_pack_int64(&pk, INT64_MIN);
    pack_key(&pk, "f");    msgpack_pack_double(&pk, 1.0);
    pack_key(&pk, "f32");  msgpack_pack_float(&pk, 0.5f);
    pack_key(&pk, "nan");  msgpack_pack_double(&pk, NAN);
    pack_key(&pk, "big");  msgpack_pack_double(&pk, 18446744073709551616.0);
    pack_key(&pk, "bin");  msgpack_pack_bin(&pk, 2); msgpack_pack_bin_body(&pk, "ab", 2);
    evs_event *ev = event_of(EVS_TYPE_MESSAGE, NULL, "nums", EVS_CONTENT_MSGPACK, sb.data,
                             sb.size, NULL, 0, 7, 0);
    msgpack_sbuffer_destroy(&sb);
    return ev;
}

static evs_event *make_fixture(int which)
{
    switch (which) {
    case FX_MAIN: return make_main();
    case FX_NUM: return make_num();
    case FX_TEXT:
        return event_of(EVS_TYPE_MESSAGE, NULL, "text", EVS_CONTENT_TEXT, "hello", 5, NULL, 0, 1, 0);
    case FX_BIN:
        return event_of(EVS_TYPE_MESSAGE, NULL, "bin", EVS_CONTENT_BINARY, "\x01\x02", 2, NULL, 0,
                        1, 0);
    default:
        return event_of(EVS_TYPE_MESSAGE, NULL, "json", EVS_CONTENT_JSON, "{\"a\":1}", 7, NULL, 0,
                        1, 0);
    }
}

static evs_where *compile_ok(const char *expr)
{
    evs_where *w = NULL;
    evs_where_error err = {0};
    int rc = evs_where_compile(&w, expr, strlen(expr), &err);
    cr_assert_eq(rc, 0, "compile %s: %s at %zu: %s", expr, evs_errname(rc), err.pos, err.msg);
    cr_assert_not_null(w);
    return w;
}

/* ---- the language ------------------------------------------------- */

typedef struct match_case {
    const char *expr;
    int         fx;
    bool        want;
} match_case;

static const match_case cases[] = {
    /* field access, seed compatibility */
    {"data[\"user\"][\"plan\"] == \"pro\"", FX_MAIN, true},
    {"data.user.plan == 'pro'", FX_MAIN, true},
    {"properties[\"country\"]==\"US\"", FX_MAIN, true},
    {"properties[\"country\"]==\"CA\"", FX_MAIN, false},
    {"data.user[\"plan\"] == data[\"user\"].plan", FX_MAIN, true},
    {"data[\"and\"] == \"kw\"", FX_MAIN, true},
    {"data.and == \"kw\"", FX_MAIN, true},
    {"data.country==\"US\"and data.amount==100", FX_MAIN, true},
    /* every comparison operator, on numbers */
    {"data[\"country\"] != \"CA\"", FX_MAIN, true},
    {"data[\"country\"] != \"US\"", FX_MAIN, false},
    {"data.amount > 99", FX_MAIN, true},
    {"data.amount > 100", FX_MAIN, false},
    {"data.amount >= 100", FX_MAIN, true},
    {"data.amount < 100.5", FX_MAIN, true},
    {"data.amount <= 99.999", FX_MAIN, false},
    {"data.amount <= 100", FX_MAIN, true},
    {"data.amount == 100.0", FX_MAIN, true},
    {"data.amount == 1e2", FX_MAIN, true},
    {"1 == 1.0", FX_MAIN, true},
    {"data.price == 9.99", FX_MAIN, true},
    {"data.price < 10", FX_MAIN, true},
    {"data.n < 0", FX_MAIN, true},
    {"data.n == -5", FX_MAIN, true},
    {"data.n > -5.5", FX_MAIN, true},
    {"data.neg_f < data.n", FX_MAIN, false},
    {"data.user.score > 1", FX_MAIN, true},
    /* booleans and null */
    {"data.user.vip", FX_MAIN, true},
    {"data.user.plan", FX_MAIN, false},
    {"data.user.vip == true", FX_MAIN, true},
    {"data.user.vip != false", FX_MAIN, true},
    {"data.user.vip < true", FX_MAIN, false},
    {"data.user.vip >= true", FX_MAIN, false},
    {"data.user.none == null", FX_MAIN, true},
    {"data.user.none != null", FX_MAIN, false},
    {"null == null", FX_MAIN, true},
    {"true", FX_MAIN, true},
    {"false", FX_MAIN, false},
    /* missing values */
    {"defined(data.user.none)", FX_MAIN, true},
    {"defined(data.user.missing)", FX_MAIN, false},
    {"data.user.missing == 1", FX_MAIN, false},
    {"data.user.missing != 1", FX_MAIN, false},
    {"data.user.missing < 1", FX_MAIN, false},
    {"not data.user.missing == 1", FX_MAIN, true},
    {"not defined(data.nope)", FX_MAIN, true},
    {"data.country.x == 1", FX_MAIN, false},
    {"data.user.tags.x == 1", FX_MAIN, false},
    {"data.user[0] == 1", FX_MAIN, false},
    /* type mismatches */
    {"data.country == 1", FX_MAIN, false},
    {"data.country != 1", FX_MAIN, true},
    {"data.country < 1", FX_MAIN, false},
    {"data.amount == \"100\"", FX_MAIN, false},
    {"data.user.vip == 1", FX_MAIN, false},
    {"data.user.none == 0", FX_MAIN, false},
    {"data == 1", FX_MAIN, false},
    {"defined(data)", FX_MAIN, true},
    /* arrays */
    {"data.user.tags[0] == \"a\"", FX_MAIN, true},
    {"data.user.tags[1] == \"b\"", FX_MAIN, true},
    {"data.user.tags[2].k == 1", FX_MAIN, true},
    {"data.user.tags[3] == \"a\"", FX_MAIN, false},
    {"defined(data.user.tags[2][\"k\"])", FX_MAIN, true},
    {"data.user.tags == \"a\"", FX_MAIN, false},
    {"data.user.tags != \"a\"", FX_MAIN, true},
    /* in */
    {"data.user[\"tags\"][0] in [\"x\", \"a\"]", FX_MAIN, true},
    {"data.country in [\"CA\", \"MX\"]", FX_MAIN, false},
    {"data.country not in [\"CA\", \"MX\"]", FX_MAIN, true},
    {"data.country not in [\"US\"]", FX_MAIN, false},
    {"data.amount in [1, 100.0, \"x\"]", FX_MAIN, true},
    {"data.missing in [null]", FX_MAIN, false},
    {"data.missing not in [1]", FX_MAIN, true},
    {"data.country in []", FX_MAIN, false},
    {"\"US\" in [\"US\"]", FX_MAIN, true},
    /* strings: escapes, UTF-8, bytewise order */
    {"data.name == \"Zo\\u00eb \\\"Q\\\"\\n\"", FX_MAIN, true},
    {"data.name == 'Zo\xc3\xab \"Q\"\\n'", FX_MAIN, true},
    {"data.name == 'Zo\xc3\xab \\'Q\\'\\n'", FX_MAIN, false},
    {"data.name > \"Zo\"", FX_MAIN, true},
    {"data.name < \"Zz\"", FX_MAIN, true},
    {"data.name >= \"Zo\xc3\xab\"", FX_MAIN, true},
    {"data.emoji == \"\\ud83d\\ude00\"", FX_MAIN, true},
    {"data.emoji == \"\xf0\x9f\x98\x80\"", FX_MAIN, true},
    {"\"a\\\\b\\/\\t\" == 'a\\\\b/\\u0009'", FX_MAIN, true},
    {"\"\" < \"a\"", FX_MAIN, true},
    /* type, topic, id, timestamp */
    {"type == \"Purchase\"", FX_MAIN, true},
    {"type == \"message\"", FX_MAIN, false},
    {"topic == \"orders.eu\"", FX_MAIN, true},
    {"topic >= \"orders\"", FX_MAIN, true},
    {"id == 42", FX_MAIN, true},
    {"id > 41.5", FX_MAIN, true},
    {"id == 42.0", FX_MAIN, true},
    {"id in [1, 42]", FX_MAIN, true},
    {"timestamp == 1000", FX_MAIN, true},
    {"defined(type) and defined(topic) and defined(id)", FX_MAIN, true},
    /* metadata */
    {"metadata[\"region\"] == \"eu\"", FX_MAIN, true},
    {"metadata.tier in [\"gold\", \"silver\"]", FX_MAIN, true},
    {"metadata.retries >= 3", FX_MAIN, true},
    {"metadata.retries > 3", FX_MAIN, false},
    {"metadata.beta", FX_MAIN, true},
    {"metadata.nope == \"x\"", FX_MAIN, false},
    {"defined(metadata.region)", FX_MAIN, true},
    {"metadata.region == data.country", FX_MAIN, false},
    /* precedence and short-circuit shapes */
    {"true or false and false", FX_MAIN, true},
    {"false and false or true", FX_MAIN, true},
    {"not false and false", FX_MAIN, false},
    {"not (false and false)", FX_MAIN, true},
    {"not data.amount == 100", FX_MAIN, false},
    {"not not true", FX_MAIN, true},
    {"(true or false) and false", FX_MAIN, false},
    {"not (data.country == \"US\" and data.amount > 1000)", FX_MAIN, true},
    {"data.country == \"US\" and (data.amount < 50 or data.user.plan == \"pro\")", FX_MAIN, true},
    {"false or false or false or true", FX_MAIN, true},
    {"true and true and true and false", FX_MAIN, false},
    {"(false or (true and (false or true))) and not false", FX_MAIN, true},
    {"false or not true or (true and not (false))", FX_MAIN, true},
    {" \t\n data.amount\n==\r100 ", FX_MAIN, true},
    /* exact numbers */
    {"data.u == 18446744073709551615", FX_NUM, true},
    {"data.u == 18446744073709551614", FX_NUM, false},
    {"data.u2 < data.u", FX_NUM, true},
    {"data.u > 9223372036854775807", FX_NUM, true},
    {"data.u == 1.8446744073709552e19", FX_NUM, false},
    {"data.u < 1.8446744073709552e19", FX_NUM, true},
    {"data.big > data.u", FX_NUM, true},
    {"data.imin == -9223372036854775808", FX_NUM, true},
    {"data.imin < -9223372036854775807", FX_NUM, true},
    {"data.imin == -9.223372036854775808e18", FX_NUM, true},
    {"data.imin < data.u", FX_NUM, true},
    {"data.f == 1", FX_NUM, true},
    {"data.f32 == 0.5", FX_NUM, true},
    {"data.f32 < data.f", FX_NUM, true},
    {"data.nan == data.nan", FX_NUM, false},
    {"data.nan != 1", FX_NUM, true},
    {"data.nan < 1", FX_NUM, false},
    {"data.nan >= 1", FX_NUM, false},
    {"data.bin == \"ab\"", FX_NUM, false},
    {"defined(data.bin)", FX_NUM, true},
    {"id == 7 and type == \"message\"", FX_NUM, true},
    {"-0 == 0", FX_NUM, true},
    {"-0.0 == 0", FX_NUM, true},
    /* content other than msgpack */
    {"data == \"hello\"", FX_TEXT, true},
    {"data.x == 1", FX_TEXT, false},
    {"defined(data.x)", FX_TEXT, false},
    {"defined(data)", FX_BIN, false},
    {"topic == \"bin\"", FX_BIN, true},
    {"data.a == 1", FX_JSON, false},
    {"defined(data.a)", FX_JSON, false},
    {"metadata.x == 1", FX_JSON, false},
};

Test(where, table_of_matches)
{
    size_t n = sizeof cases / sizeof cases[0];
    cr_assert_geq(n, 60);
    evs_event *fx[FX_COUNT];
    for (int i = 0; i < FX_COUNT; i++)
        fx[i] = make_fixture(i);
    for (size_t i = 0; i < n; i++) {
        evs_where *w = compile_ok(cases[i].expr);
        bool got = evs_where_match(w, fx[cases[i].fx]);
        cr_expect_eq(got, cases[i].want, "case %zu: %s: got %d", i, cases[i].expr, got);
        evs_where_destroy(w);
    }
    for (int i = 0; i < FX_COUNT; i++)
        evs_event_unref(fx[i]);
}

Test(where, match_and_destroy_accept_null)
{
    evs_where *w = compile_ok("true");
    cr_assert(!evs_where_match(w, NULL));
    cr_assert(!evs_where_match(NULL, NULL));
    cr_assert(!evs_where_filter(NULL, w));
    evs_where_destroy(w);
    evs_where_destroy(NULL);
}

Test(where, expression_need_not_be_nul_terminated)
{
    const char buf[] = "topic == \"nums\"XXXX";
    evs_where *w;
    ASSERT_RC(evs_where_compile(&w, buf, strlen(buf) - 4, NULL), 0);
    evs_event *ev = make_num();
    cr_assert(evs_where_match(w, ev));
    evs_event_unref(ev);
    evs_where_destroy(w);
}

/* The pure core, fed bytes directly. */
Test(where, eval_over_raw_parts)
{
    evs_where *w = compile_ok("data[1] == 2 and type == \"t\" and id == 3");
    const uint8_t arr[] = {0x92, 0x01, 0x02}; /* [1, 2] */
    evs_where_input in = {.type_name = "t", .type_name_len = 1, .id = 3,
                          .content = EVS_CONTENT_MSGPACK, .data = arr, .len = sizeof arr};
    cr_assert(evs__where_eval(w, &in));
    in.id = 4;
    cr_assert(!evs__where_eval(w, &in));
    evs_where_destroy(w);
}

/* ---- errors ------------------------------------------------------- */

typedef struct bad_case {
    const char *expr;
    size_t      pos;
    int         rc;
} bad_case;

static const bad_case bad[] = {
    {"data.x == \"abc", 10, EVS_EINVAL},        /* unterminated string */
    {"data.x == 'abc\\'", 10, EVS_EINVAL},      /* ... ending in an escape */
    {"foo == 1", 0, EVS_EINVAL},                /* unknown identifier */
    {"data.x == bar", 10, EVS_EINVAL},
    {"data.x ==", 9, EVS_EINVAL},               /* == without rhs */
    {"== 1", 0, EVS_EINVAL},                    /* missing operand */
    {"data.x == 1 and", 15, EVS_EINVAL},
    {"data.x == 1 or", 14, EVS_EINVAL},
    {"and data.x", 0, EVS_EINVAL},
    {"not", 3, EVS_EINVAL},
    {"()", 1, EVS_EINVAL},
    {"data.x == 1 garbage", 12, EVS_EINVAL},    /* trailing garbage */
    {"data.x == 1 1", 12, EVS_EINVAL},
    {"data.x == 1.5.5", 13, EVS_EINVAL},
    {"(data.x == 1", 12, EVS_EINVAL},           /* unbalanced parens */
    {"((data.x == 1)", 14, EVS_EINVAL},
    {"data.x == 1)", 11, EVS_EINVAL},
    {"data.x in", 9, EVS_EINVAL},               /* in without list */
    {"data.x in \"a\"", 10, EVS_EINVAL},
    {"data.x in [\"a\", data.y]", 16, EVS_EINVAL},
    {"data.x in [\"a\",]", 15, EVS_EINVAL},
    {"data.x in [\"a\" \"b\"]", 15, EVS_EINVAL},
    {"data.x in [\"a\"", 14, EVS_EINVAL},
    {"data.x not 1", 7, EVS_EINVAL},
    {"", 0, EVS_EINVAL},                        /* empty */
    {"   ", 0, EVS_EINVAL},
    {"data.x = 1", 7, EVS_EINVAL},
    {"!data.x", 0, EVS_EINVAL},
    {"data.x == @", 10, EVS_EINVAL},
    {"data.x == \x01", 10, EVS_EINVAL},
    {"1 < data.x < 3", 11, EVS_EINVAL},         /* no chaining */
    {"\"abc\"", 0, EVS_EINVAL},                 /* a literal alone */
    {"1", 0, EVS_EINVAL},
    {"data[", 5, EVS_EINVAL},
    {"data[\"x\"", 8, EVS_EINVAL},
    {"data[-1]", 5, EVS_EINVAL},
    {"data[1.5]", 5, EVS_EINVAL},
    {"data[x]", 5, EVS_EINVAL},
    {"type[\"x\"]", 4, EVS_EINVAL},
    {"topic.x == 1", 5, EVS_EINVAL},
    {"data. == 1", 6, EVS_EINVAL},
    {"data.1 == 1", 5, EVS_EINVAL},
    {"defined(\"x\")", 8, EVS_EINVAL},
    {"defined data.x", 8, EVS_EINVAL},
    {"defined(data.x", 14, EVS_EINVAL},
    {"defined()", 8, EVS_EINVAL},
    {"data.x == \"\\q\"", 11, EVS_EINVAL},      /* bad escapes */
    {"data.x == \"\\u12\"", 11, EVS_EINVAL},
    {"data.x == \"\\ud800\"", 11, EVS_EINVAL},
    {"data.x == \"\\udc00\"", 11, EVS_EINVAL},
    {"data.x == \"\\ud800\\u0041\"", 11, EVS_EINVAL},
    {"data.x == 12abc", 10, EVS_EINVAL},        /* bad numbers */
    {"data.x == 99999999999999999999", 10, EVS_EINVAL},
    {"data.x == -9223372036854775809", 10, EVS_EINVAL},
    {"data.x == -", 10, EVS_EINVAL},
    {"data.x == 1e", 10, EVS_EINVAL},
    {"data.x == 1e999", 10, EVS_EINVAL},
    {"data.x == TRUE", 10, EVS_EINVAL},         /* keywords are lower case */
    {"data.x == 1 AND true", 12, EVS_EINVAL},
};

Test(where, bad_expressions_report_position)
{
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        evs_where *w = (evs_where *)&w;
        evs_where_error err = {.pos = 999};
        int rc = evs_where_compile(&w, bad[i].expr, strlen(bad[i].expr), &err);
        cr_expect_eq(rc, bad[i].rc, "%s: got %s", bad[i].expr, evs_errname(rc));
        cr_expect_eq(err.pos, bad[i].pos, "%s: pos %zu, want %zu (%s)", bad[i].expr, err.pos,
                     bad[i].pos, err.msg);
        cr_expect_neq(err.msg[0], '\0', "%s: no message", bad[i].expr);
        cr_expect_null(w, "%s: out not NULL", bad[i].expr);
        /* without an error struct too */
        ASSERT_RC(evs_where_compile(&w, bad[i].expr, strlen(bad[i].expr), NULL), bad[i].rc);
    }
}

Test(where, messages_say_what_was_wrong)
{
    evs_where *w;
    evs_where_error err;
    ASSERT_RC(evs_where_compile(&w, "data.x == \"abc", 14, &err), EVS_EINVAL);
    cr_assert_str_eq(err.msg, "unterminated string");
    ASSERT_RC(evs_where_compile(&w, "colour == 1", 11, &err), EVS_EINVAL);
    cr_assert_str_eq(err.msg, "unknown identifier 'colour'");
    ASSERT_RC(evs_where_compile(&w, "data.x ==", 9, &err), EVS_EINVAL);
    cr_assert_str_eq(err.msg, "expected a value, found end of expression");
}

Test(where, bad_arguments_are_einval)
{
    evs_where *w = (evs_where *)&w;
    evs_where_error err;
    ASSERT_RC(evs_where_compile(NULL, "true", 4, &err), EVS_EINVAL);
    ASSERT_RC(evs_where_compile(&w, NULL, 4, &err), EVS_EINVAL);
    cr_assert_null(w);
    ASSERT_RC(evs_where_compile(&w, NULL, 0, &err), EVS_EINVAL); /* empty */
}

/* ---- limits ------------------------------------------------------- */

static char *repeat_wrap(size_t depth, const char *open, const char *mid, const char *close)
{
    size_t lo = strlen(open), lm = strlen(mid), lc = strlen(close);
    char *s = malloc(depth * (lo + lc) + lm + 1);
    cr_assert_not_null(s);
    char *o = s;
    for (size_t i = 0; i < depth; i++, o += lo)
        memcpy(o, open, lo);
    memcpy(o, mid, lm);
    o += lm;
    for (size_t i = 0; i < depth; i++, o += lc)
        memcpy(o, close, lc);
    *o = '\0';
    return s;
}

Test(where, nesting_at_the_limit_compiles_one_deeper_is_etoobig)
{
    evs_where *w;
    evs_where_error err;
    char *s = repeat_wrap(EVS_WHERE_MAX_DEPTH, "(", "true", ")");
    ASSERT_RC(evs_where_compile(&w, s, strlen(s), &err), 0);
    cr_assert(evs_where_match(w, NULL) == false);
    evs_where_destroy(w);
    free(s);
    s = repeat_wrap(EVS_WHERE_MAX_DEPTH + 1, "(", "true", ")");
    ASSERT_RC(evs_where_compile(&w, s, strlen(s), &err), EVS_ETOOBIG);
    cr_assert_eq(err.pos, EVS_WHERE_MAX_DEPTH);
    cr_assert_null(w);
    free(s);
    s = repeat_wrap(EVS_WHERE_MAX_DEPTH + 1, "not ", "true", "");
    ASSERT_RC(evs_where_compile(&w, s, strlen(s), &err), EVS_ETOOBIG);
    free(s);
    s = repeat_wrap(EVS_WHERE_MAX_DEPTH, "not ", "true", "");
    ASSERT_RC(evs_where_compile(&w, s, strlen(s), &err), 0);
    evs_event *ev = make_num();
    cr_assert(evs_where_match(w, ev)); /* an even number of nots */
    evs_event_unref(ev);
    evs_where_destroy(w);
    free(s);
}

Test(where, ten_thousand_nested_parens_is_etoobig)
{
    evs_where *w;
    evs_where_error err;
    char *s = repeat_wrap(10000, "(", "true", ")");
    ASSERT_RC(evs_where_compile(&w, s, strlen(s), &err), EVS_ETOOBIG);
    cr_assert_null(w);
    free(s);
    /* unclosed ones too */
    s = repeat_wrap(10000, "(", "", "");
    ASSERT_RC(evs_where_compile(&w, s, strlen(s), &err), EVS_ETOOBIG);
    free(s);
    /* and within the length limit */
    s = repeat_wrap(2000, "(", "", "");
    ASSERT_RC(evs_where_compile(&w, s, strlen(s), &err), EVS_ETOOBIG);
    cr_assert_eq(err.pos, EVS_WHERE_MAX_DEPTH);
    free(s);
}

Test(where, one_megabyte_expression_is_etoobig)
{
    size_t n = 1u << 20;
    char *s = malloc(n);
    cr_assert_not_null(s);
    memset(s, ' ', n);
    memcpy(s, "true", 4);
    evs_where *w;
    evs_where_error err;
    ASSERT_RC(evs_where_compile(&w, s, n, &err), EVS_ETOOBIG);
    cr_assert_eq(err.pos, EVS_WHERE_MAX_LEN);
    cr_assert_null(w);
    /* exactly at the limit is fine */
    ASSERT_RC(evs_where_compile(&w, s, EVS_WHERE_MAX_LEN, &err), 0);
    evs_where_destroy(w);
    ASSERT_RC(evs_where_compile(&w, s, EVS_WHERE_MAX_LEN + 1, &err), EVS_ETOOBIG);
    free(s);
}

/* Long flat chains are loops, not recursion: no depth limit applies. */
Test(where, long_chains_compile_and_evaluate)
{
    char buf[EVS_WHERE_MAX_LEN + 1];
    size_t n = 0;
    while (n + 40 < sizeof buf)
        n += (size_t)sprintf(buf + n, "%sdata.u2 < data.u", n ? " and " : "");
    evs_where *w;
    ASSERT_RC(evs_where_compile(&w, buf, n, NULL), 0);
    evs_event *ev = make_num();
    cr_assert(evs_where_match(w, ev));
    evs_where_destroy(w);
    n = 0;
    while (n + 40 < sizeof buf)
        n += (size_t)sprintf(buf + n, "%sfalse", n ? " or " : "");
    n += (size_t)sprintf(buf + n, " or true");
    ASSERT_RC(evs_where_compile(&w, buf, n, NULL), 0);
    cr_assert(evs_where_match(w, ev));
    evs_where_destroy(w);
    evs_event_unref(ev);
}

/* ---- allocation failure ------------------------------------------- */

Test(where, every_allocation_failure_is_enomem)
{
    const char *expr = "data.user[\"tags\"][2].k == 1 and (metadata.region in ['eu', \"us\", 3, "
                       "null] or not defined(data.x) or type != \"\\u00e9\") and data.user.vip or "
                       "data.b < 2.5 and data.c not in [1,2,3,4,5,6,7,8,9,10,11,12,13]";
    evs_event *ev = make_main();
    long failures = 0;
    for (long k = 0;; k++) {
        cr_assert_lt(k, 1000, "never succeeded");
        evs_where *w = (evs_where *)&w;
        evs_where_error err;
        evs__alloc_fail_after(k);
        int rc = evs_where_compile(&w, expr, strlen(expr), &err);
        evs__alloc_fail_after(-1);
        if (rc == 0) {
            cr_assert(evs_where_match(w, ev));
            evs_where_destroy(w);
            break;
        }
        cr_assert_eq(rc, EVS_ENOMEM, "k=%ld: got %s", k, evs_errname(rc));
        cr_assert_null(w);
        failures++;
    }
    cr_assert_geq(failures, 3); /* pool, vectors, the final block */
    evs_event_unref(ev);
}

/* ---- concurrency -------------------------------------------------- */

typedef struct eval_job {
    const evs_where *w;
    evs_event       *ev;
    bool             want;
    long             wrong;
} eval_job;

static void *eval_loop(void *arg)
{
    eval_job *j = arg;
    for (int i = 0; i < 20000; i++)
        if (evs_where_match(j->w, j->ev) != j->want)
            j->wrong++;
    return NULL;
}

Test(where, one_compiled_expression_on_four_threads)
{
    evs_where *w = compile_ok("data.n in [1, 3] or (data.s == \"x\" and defined(metadata.k))");
    eval_job jobs[4];
    const char *json[4] = {"{\"n\":1}", "{\"n\":2}", "{\"s\":\"x\"}", "{\"n\":3}"};
    const char *const meta[] = {"k", "v", NULL};
    bool want[4] = {true, false, true, true};
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (eval_job){.w = w, .want = want[i]};
        ASSERT_RC(evs_event_make(&jobs[i].ev, "m", "t", json[i], meta), 0);
        cr_assert_eq(pthread_create(&t[i], NULL, eval_loop, &jobs[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        cr_expect_eq(jobs[i].wrong, 0, "thread %d: %ld wrong answers", i, jobs[i].wrong);
        evs_event_unref(jobs[i].ev);
    }
    evs_where_destroy(w);
}

/* ---- as a subscription filter ------------------------------------- */

static int delivered;
static char delivered_topics[16][16];

static int record_topic(const evs_event *ev, void *user)
{
    (void)user;
    if (delivered < 16)
        snprintf(delivered_topics[delivered], sizeof delivered_topics[0], "%s",
                 evs_event_topic(ev));
    __atomic_add_fetch(&delivered, 1, __ATOMIC_RELAXED);
    return 0;
}

Test(where, filters_a_subscription_on_a_real_stream)
{
    evs_stream *s;
    evs_sub *sub;
    ASSERT_RC(evs_stream_create(&s, NULL), 0);
    evs_where *w = compile_ok("properties[\"country\"] == \"US\" and metadata.region != \"ap\"");
    ASSERT_RC(evs_subscribe(&sub, s, NULL, record_topic, evs_where_filter, w, NULL), 0);
    static const struct { const char *topic, *json, *region; } evs[] = {
        {"e0", "{\"country\":\"US\"}", "eu"},
        {"e1", "{\"country\":\"CA\"}", "eu"},
        {"e2", "{\"country\":\"US\"}", "ap"},
        {"e3", "{\"other\":1}", "eu"},
        {"e4", "[\"US\"]", "eu"},
        {"e5", "{\"country\":\"US\",\"n\":5}", "us"},
        {"e6", NULL, "eu"},
    };
    for (size_t i = 0; i < sizeof evs / sizeof evs[0]; i++) {
        evs_event *ev;
        ASSERT_RC(evs_event_make(&ev, NULL, evs[i].topic, evs[i].json,
                                 (const char *[]){"region", evs[i].region, NULL}),
                  0);
        ASSERT_RC(evs_stream_publish(s, ev), 0);
        evs_event_unref(ev);
    }
    ASSERT_RC(evs_stream_close(s, EVS_FOREVER, NULL), 0);
    cr_assert_eq(__atomic_load_n(&delivered, __ATOMIC_RELAXED), 2);
    cr_assert_str_eq(delivered_topics[0], "e0");
    cr_assert_str_eq(delivered_topics[1], "e5");
    ASSERT_RC(evs_unsubscribe(sub), 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
    evs_where_destroy(w);
}
