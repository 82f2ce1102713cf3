/*
 * The bounded msgpack scanner: evs__mp_check, evs__mp_read,
 * evs__mp_map_find and the packer hook. Every format family, every
 * truncation, the never-used byte and the depth limit.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "evs_internal.h"
#include "mpscan.h"

/* Decode a hex string ("c4 01 ff", spaces ignored) into a static buffer. */
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

/* One encoded value of each format family and its full size. */
static const struct {
    const char *hex;
    msgpack_object_type type;
} families[] = {
    {"05", MSGPACK_OBJECT_POSITIVE_INTEGER},               /* positive fixint */
    {"e0", MSGPACK_OBJECT_NEGATIVE_INTEGER},               /* negative fixint */
    {"c0", MSGPACK_OBJECT_NIL},
    {"c2", MSGPACK_OBJECT_BOOLEAN},
    {"c3", MSGPACK_OBJECT_BOOLEAN},
    {"82 01 02 03 04", MSGPACK_OBJECT_MAP},                /* fixmap */
    {"92 01 02", MSGPACK_OBJECT_ARRAY},                    /* fixarray */
    {"a3 61 62 63", MSGPACK_OBJECT_STR},                   /* fixstr */
    {"d9 02 61 62", MSGPACK_OBJECT_STR},                   /* str8 */
    {"da 00 01 61", MSGPACK_OBJECT_STR},                   /* str16 */
    {"db 00 00 00 01 61", MSGPACK_OBJECT_STR},             /* str32 */
    {"c4 02 00 ff", MSGPACK_OBJECT_BIN},                   /* bin8 */
    {"c5 00 01 00", MSGPACK_OBJECT_BIN},                   /* bin16 */
    {"c6 00 00 00 01 00", MSGPACK_OBJECT_BIN},             /* bin32 */
    {"c7 01 05 aa", MSGPACK_OBJECT_EXT},                   /* ext8 */
    {"c8 00 01 05 aa", MSGPACK_OBJECT_EXT},                /* ext16 */
    {"c9 00 00 00 01 05 aa", MSGPACK_OBJECT_EXT},          /* ext32 */
    {"d4 05 aa", MSGPACK_OBJECT_EXT},                      /* fixext1 */
    {"d5 05 aa bb", MSGPACK_OBJECT_EXT},                   /* fixext2 */
    {"d6 05 aa bb cc dd", MSGPACK_OBJECT_EXT},             /* fixext4 */
    {"d7 05 00 01 02 03 04 05 06 07", MSGPACK_OBJECT_EXT}, /* fixext8 */
    {"d8 05 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f", MSGPACK_OBJECT_EXT},
    {"ca 3f c0 00 00", MSGPACK_OBJECT_FLOAT32},
    {"cb 3f f8 00 00 00 00 00 00", MSGPACK_OBJECT_FLOAT64},
    {"cc ff", MSGPACK_OBJECT_POSITIVE_INTEGER},
    {"cd ff ff", MSGPACK_OBJECT_POSITIVE_INTEGER},
    {"ce ff ff ff ff", MSGPACK_OBJECT_POSITIVE_INTEGER},
    {"cf ff ff ff ff ff ff ff ff", MSGPACK_OBJECT_POSITIVE_INTEGER},
    {"d0 80", MSGPACK_OBJECT_NEGATIVE_INTEGER},
    {"d1 80 00", MSGPACK_OBJECT_NEGATIVE_INTEGER},
    {"d2 80 00 00 00", MSGPACK_OBJECT_NEGATIVE_INTEGER},
    {"d3 80 00 00 00 00 00 00 00", MSGPACK_OBJECT_NEGATIVE_INTEGER},
    {"dc 00 02 01 02", MSGPACK_OBJECT_ARRAY},              /* array16 */
    {"dd 00 00 00 01 c0", MSGPACK_OBJECT_ARRAY},           /* array32 */
    {"de 00 01 01 02", MSGPACK_OBJECT_MAP},                /* map16 */
    {"df 00 00 00 01 01 02", MSGPACK_OBJECT_MAP},          /* map32 */
};

Test(mpscan, check_accepts_every_format_family_and_reports_its_size)
{
    for (size_t i = 0; i < sizeof(families) / sizeof(families[0]); i++) {
        uint8_t b[64];
        size_t n = hex(families[i].hex, b), used = 0;
        int rc = evs__mp_check(b, n, 4, &used);
        cr_assert_eq(rc, 0, "%s: got %s", families[i].hex, evs_errname(rc));
        cr_assert_eq(used, n, "%s: used %zu of %zu", families[i].hex, used, n);
        evs_mpval v;
        rc = evs__mp_read(b, n, &v);
        cr_assert_eq(rc, 0, "%s: read got %s", families[i].hex, evs_errname(rc));
        cr_assert_eq(v.type, families[i].type, "%s: type %d", families[i].hex, v.type);
    }
}

Test(mpscan, check_rejects_every_truncation_of_every_family)
{
    for (size_t i = 0; i < sizeof(families) / sizeof(families[0]); i++) {
        uint8_t b[64];
        size_t n = hex(families[i].hex, b);
        for (size_t cut = 0; cut < n; cut++) {
            /* Copy to a heap block of exactly `cut` bytes so ASan sees any
             * read past the end. */
            uint8_t *p = malloc(cut ? cut : 1);
            memcpy(p, b, cut);
            size_t used = 12345;
            int rc = evs__mp_check(p, cut, 4, &used);
            free(p);
            cr_assert_eq(rc, EVS_EBADMSG, "%s cut at %zu: got %s", families[i].hex, cut,
                         evs_errname(rc));
        }
    }
}

Test(mpscan, never_used_byte_c1_is_ebadmsg)
{
    const uint8_t b[] = {0xc1};
    size_t used;
    int rc = evs__mp_check(b, 1, 4, &used);
    cr_assert_eq(rc, EVS_EBADMSG, "got %s", evs_errname(rc));
    evs_mpval v;
    rc = evs__mp_read(b, 1, &v);
    cr_assert_eq(rc, EVS_EBADMSG, "got %s", evs_errname(rc));
    /* Inside a container too. */
    const uint8_t a[] = {0x92, 0x01, 0xc1};
    rc = evs__mp_check(a, sizeof(a), 4, &used);
    cr_assert_eq(rc, EVS_EBADMSG, "got %s", evs_errname(rc));
}

Test(mpscan, empty_input_is_ebadmsg)
{
    size_t used;
    evs_mpval v;
    uint8_t b[1] = {0};
    cr_assert_eq(evs__mp_check(b, 0, 4, &used), EVS_EBADMSG);
    cr_assert_eq(evs__mp_read(b, 0, &v), EVS_EBADMSG);
}

Test(mpscan, check_reports_size_of_first_object_only)
{
    uint8_t b[8];
    size_t n = hex("92 01 02 c0 c0", b), used = 0;
    int rc = evs__mp_check(b, n, 4, &used);
    cr_assert_eq(rc, 0, "got %s", evs_errname(rc));
    cr_assert_eq(used, 3);
}

Test(mpscan, depth_counts_non_empty_containers)
{
    uint8_t b[16];
    size_t used, n;

    n = hex("05", b);
    cr_assert_eq(evs__mp_check(b, n, 0, &used), 0, "a scalar is depth 0");
    n = hex("90", b);
    cr_assert_eq(evs__mp_check(b, n, 0, &used), 0, "an empty array adds no level");
    n = hex("91 01", b);
    int rc = evs__mp_check(b, n, 0, &used);
    cr_assert_eq(rc, EVS_ETOOBIG, "[1] at max 0: got %s", evs_errname(rc));
    cr_assert_eq(evs__mp_check(b, n, 1, &used), 0, "[1] is depth 1");
    n = hex("91 81 01 91 01", b); /* [{1:[1]}] is depth 3 */
    rc = evs__mp_check(b, n, 2, &used);
    cr_assert_eq(rc, EVS_ETOOBIG, "got %s", evs_errname(rc));
    cr_assert_eq(evs__mp_check(b, n, 3, &used), 0);
    cr_assert_eq(used, n);
}

Test(mpscan, depth_limit_at_max_depth)
{
    uint8_t b[64];
    size_t used;
    /* EVS_MAX_DEPTH nested one-element arrays around a 1 pass; one more fails. */
    memset(b, 0x91, EVS_MAX_DEPTH);
    b[EVS_MAX_DEPTH] = 0x01;
    int rc = evs__mp_check(b, EVS_MAX_DEPTH + 1, EVS_MAX_DEPTH, &used);
    cr_assert_eq(rc, 0, "got %s", evs_errname(rc));
    memset(b, 0x91, EVS_MAX_DEPTH + 1);
    b[EVS_MAX_DEPTH + 1] = 0x01;
    rc = evs__mp_check(b, EVS_MAX_DEPTH + 2, EVS_MAX_DEPTH, &used);
    cr_assert_eq(rc, EVS_ETOOBIG, "got %s", evs_errname(rc));
}

Test(mpscan, very_deep_input_is_bounded_even_with_huge_max_depth)
{
    size_t n = 100000, used;
    uint8_t *b = malloc(n);
    memset(b, 0x91, n - 1);
    b[n - 1] = 0x01;
    int rc = evs__mp_check(b, n, 1u << 30, &used);
    free(b);
    cr_assert_eq(rc, EVS_ETOOBIG, "got %s", evs_errname(rc));
}

Test(mpscan, huge_declared_counts_and_lengths_are_ebadmsg)
{
    static const char *const cases[] = {
        "dd ff 00 00 00",          /* array of 4278190080 elements */
        "df ff ff ff ff 01 02",    /* map32 count far beyond the bytes */
        "dc ff ff",                /* array16 */
        "db ff ff ff ff 61",       /* str32 */
        "c6 ff ff ff ff 00",       /* bin32 */
        "c9 ff ff ff ff 01 00",    /* ext32 */
        "da 00 05 61",             /* str16 short by 4 */
        "8f",                      /* fixmap with 15 pairs and no bytes */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint8_t b[16];
        size_t n = hex(cases[i], b), used;
        int rc = evs__mp_check(b, n, EVS_MAX_DEPTH, &used);
        cr_assert_eq(rc, EVS_EBADMSG, "%s: got %s", cases[i], evs_errname(rc));
    }
}

Test(mpscan, read_decodes_integers_as_msgpack_c_does)
{
    static const struct {
        const char *hex;
        msgpack_object_type type;
        int64_t i;
        uint64_t u;
    } cases[] = {
        {"7f", MSGPACK_OBJECT_POSITIVE_INTEGER, 0, 127},
        {"ff", MSGPACK_OBJECT_NEGATIVE_INTEGER, -1, 0},
        {"e0", MSGPACK_OBJECT_NEGATIVE_INTEGER, -32, 0},
        {"cc 80", MSGPACK_OBJECT_POSITIVE_INTEGER, 0, 128},
        {"cd 01 2c", MSGPACK_OBJECT_POSITIVE_INTEGER, 0, 300},
        {"ce 00 01 00 00", MSGPACK_OBJECT_POSITIVE_INTEGER, 0, 65536},
        {"cf ff ff ff ff ff ff ff ff", MSGPACK_OBJECT_POSITIVE_INTEGER, 0, UINT64_MAX},
        {"d0 05", MSGPACK_OBJECT_POSITIVE_INTEGER, 0, 5}, /* non-negative signed */
        {"d0 80", MSGPACK_OBJECT_NEGATIVE_INTEGER, -128, 0},
        {"d1 80 00", MSGPACK_OBJECT_NEGATIVE_INTEGER, -32768, 0},
        {"d2 80 00 00 00", MSGPACK_OBJECT_NEGATIVE_INTEGER, INT32_MIN, 0},
        {"d3 80 00 00 00 00 00 00 00", MSGPACK_OBJECT_NEGATIVE_INTEGER, INT64_MIN, 0},
        {"d3 7f ff ff ff ff ff ff ff", MSGPACK_OBJECT_POSITIVE_INTEGER, 0, INT64_MAX},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint8_t b[16];
        size_t n = hex(cases[i].hex, b);
        evs_mpval v;
        cr_assert_eq(evs__mp_read(b, n, &v), 0, "%s", cases[i].hex);
        cr_assert_eq(v.type, cases[i].type, "%s: type %d", cases[i].hex, v.type);
        if (v.type == MSGPACK_OBJECT_POSITIVE_INTEGER)
            cr_assert_eq(v.v.u, cases[i].u, "%s", cases[i].hex);
        else
            cr_assert_eq(v.v.i, cases[i].i, "%s", cases[i].hex);
        cr_assert_eq(v.size, n, "%s", cases[i].hex);
    }
}

Test(mpscan, read_decodes_floats_strings_bins_exts_and_headers)
{
    uint8_t b[32];
    size_t n;
    evs_mpval v;

    n = hex("ca 3f c0 00 00", b);
    cr_assert_eq(evs__mp_read(b, n, &v), 0);
    cr_assert_eq(v.type, MSGPACK_OBJECT_FLOAT32);
    cr_assert_float_eq(v.v.f, 1.5, 0);
    n = hex("cb c0 04 00 00 00 00 00 00", b);
    cr_assert_eq(evs__mp_read(b, n, &v), 0);
    cr_assert_eq(v.type, MSGPACK_OBJECT_FLOAT64);
    cr_assert_float_eq(v.v.f, -2.5, 0);

    n = hex("d9 03 61 62 63", b);
    cr_assert_eq(evs__mp_read(b, n, &v), 0);
    cr_assert_eq(v.type, MSGPACK_OBJECT_STR);
    cr_assert_eq(v.v.raw.len, 3);
    cr_assert_eq(v.v.raw.p, b + 2);
    cr_assert_eq(v.size, 5);

    n = hex("c5 00 02 aa bb", b);
    cr_assert_eq(evs__mp_read(b, n, &v), 0);
    cr_assert_eq(v.type, MSGPACK_OBJECT_BIN);
    cr_assert_eq(v.v.raw.len, 2);
    cr_assert_eq(v.v.raw.p, b + 3);

    n = hex("c7 02 fe aa bb", b);
    cr_assert_eq(evs__mp_read(b, n, &v), 0);
    cr_assert_eq(v.type, MSGPACK_OBJECT_EXT);
    cr_assert_eq(v.v.ext.type, -2);
    cr_assert_eq(v.v.ext.len, 2);
    cr_assert_eq(v.v.ext.p, b + 3);

    n = hex("d6 07 01 02 03 04", b);
    cr_assert_eq(evs__mp_read(b, n, &v), 0);
    cr_assert_eq(v.v.ext.type, 7);
    cr_assert_eq(v.v.ext.len, 4);
    cr_assert_eq(v.size, 6);

    /* Container reads consume the header only. */
    n = hex("de 00 02 01 02 03 04", b);
    cr_assert_eq(evs__mp_read(b, n, &v), 0);
    cr_assert_eq(v.type, MSGPACK_OBJECT_MAP);
    cr_assert_eq(v.v.n, 2);
    cr_assert_eq(v.size, 3);
    n = hex("dd 00 00 00 03 01 02 03", b);
    cr_assert_eq(evs__mp_read(b, n, &v), 0);
    cr_assert_eq(v.type, MSGPACK_OBJECT_ARRAY);
    cr_assert_eq(v.v.n, 3);
    cr_assert_eq(v.size, 5);
}

Test(mpscan, map_find_returns_the_value_encoding)
{
    uint8_t b[64];
    /* {1: "x", "ab": 2, "a": [1, 2], "b": nil} */
    size_t n = hex("84 01 a1 78 a2 61 62 02 a1 61 92 01 02 a1 62 c0", b);
    const uint8_t *val;
    size_t vlen;
    int rc = evs__mp_map_find(b, n, "a", 1, &val, &vlen);
    cr_assert_eq(rc, 0, "got %s", evs_errname(rc));
    cr_assert_eq(val, b + 10);
    cr_assert_eq(vlen, 3);
    rc = evs__mp_map_find(b, n, "ab", 2, &val, &vlen);
    cr_assert_eq(rc, 0, "got %s", evs_errname(rc));
    cr_assert_eq(val[0], 0x02);
    cr_assert_eq(vlen, 1);
    rc = evs__mp_map_find(b, n, "b", 1, &val, &vlen);
    cr_assert_eq(rc, 0, "got %s", evs_errname(rc));
    cr_assert_eq(val[0], 0xc0);
}

Test(mpscan, map_find_missing_key_is_enotfound)
{
    uint8_t b[16];
    size_t n = hex("82 a1 61 01 01 02", b);
    const uint8_t *val;
    size_t vlen;
    int rc = evs__mp_map_find(b, n, "b", 1, &val, &vlen);
    cr_assert_eq(rc, EVS_ENOTFOUND, "got %s", evs_errname(rc));
    rc = evs__mp_map_find(b, n, "", 0, &val, &vlen);
    cr_assert_eq(rc, EVS_ENOTFOUND, "got %s", evs_errname(rc));
    n = hex("80", b);
    rc = evs__mp_map_find(b, n, "a", 1, &val, &vlen);
    cr_assert_eq(rc, EVS_ENOTFOUND, "got %s", evs_errname(rc));
}

Test(mpscan, map_find_on_a_non_map_is_ebadmsg)
{
    uint8_t b[16];
    size_t n = hex("92 a1 61 01", b);
    const uint8_t *val;
    size_t vlen;
    int rc = evs__mp_map_find(b, n, "a", 1, &val, &vlen);
    cr_assert_eq(rc, EVS_EBADMSG, "got %s", evs_errname(rc));
    /* A truncated map is malformed, not merely missing the key. */
    n = hex("82 a1 61 01 a1", b);
    rc = evs__mp_map_find(b, n, "z", 1, &val, &vlen);
    cr_assert_eq(rc, EVS_EBADMSG, "got %s", evs_errname(rc));
}

Test(mpscan, packer_appends_to_the_buffer)
{
    evs_buf b = {0};
    msgpack_packer pk;
    evs__mp_packer_init(&pk, &b);
    cr_assert_eq(msgpack_pack_array(&pk, 2), 0);
    cr_assert_eq(msgpack_pack_int(&pk, 300), 0);
    cr_assert_eq(msgpack_pack_str_with_body(&pk, "hi", 2), 0);
    const uint8_t want[] = {0x92, 0xcd, 0x01, 0x2c, 0xa2, 'h', 'i'};
    cr_assert_eq(b.len, sizeof(want));
    cr_assert_arr_eq(b.data, want, sizeof(want));
    evs_buf_free(&b);
}

Test(mpscan, packer_reports_allocation_failure)
{
    evs_buf b = {0};
    msgpack_packer pk;
    evs__mp_packer_init(&pk, &b);
    evs__alloc_fail_after(0);
    int rc = msgpack_pack_int(&pk, 1);
    evs__alloc_fail_after(-1);
    cr_assert_neq(rc, 0);
    cr_assert_eq(b.len, 0);
    cr_assert_eq(msgpack_pack_int(&pk, 1), 0);
    cr_assert_eq(b.len, 1);
    evs_buf_free(&b);
}
