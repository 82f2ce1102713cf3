/*
 * Subject and pattern rules (SPEC.md, "Subjects"): the match table, the
 * validation tables, and a randomised check of the reference matcher
 * against a second, independently written one.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "evs_internal.h"
#include "subject.h"
#include "subject_ref.h"

static bool matches(const char *subj, const char *pat)
{
    return evs__subject_matches(subj, strlen(subj), pat, strlen(pat));
}

/* (subject, pattern, expected), grouped by the rule each row shows. */
static const struct {
    const char *subj, *pat;
    bool want;
} match_table[] = {
    /* Literal patterns: whole-subject, case-sensitive, token-exact. */
    {"foo", "foo", true},
    {"foo.bar", "foo.bar", true},
    {"orders.eu.created", "orders.eu.created", true},
    {"foo", "Foo", false},
    {"foo.bar", "foo", false},
    {"foo", "foo.bar", false},
    {"foo.bar", "foo.ba", false},
    {"foo.ba", "foo.bar", false},
    {"foobar", "foo.bar", false},
    {"foo.bar", "foobar", false},
    {"foo.bar.baz", "foo.bar", false},
    {"a.b.c", "a.c.b", false},
    {"$SYS.x", "$SYS.x", true},
    {"caf\xc3\xa9.menu", "caf\xc3\xa9.menu", true},
    {"-_=+~!@#", "-_=+~!@#", true},
    /* '*' matches exactly one token, anywhere. */
    {"foo", "*", true},
    {"foo.bar", "*", false},
    {"foo.bar", "foo.*", true},
    {"foo", "foo.*", false},
    {"foo.bar.baz", "foo.*", false},
    {"foo.bar.baz", "foo.*.baz", true},
    {"foo.bar.qux", "foo.*.baz", false},
    {"foo.baz", "foo.*.baz", false},
    {"foo.a.b.baz", "foo.*.baz", false},
    {"orders.eu.created", "*.eu.created", true},
    {"orders.eu.created", "*.*.*", true},
    {"orders.eu", "*.*.*", false},
    {"orders.eu.created.x", "*.*.*", false},
    {"orders.eu.created", "orders.*.*", true},
    {"orders.eu.created", "*.us.created", false},
    /* '>' matches one or more trailing tokens, never zero. */
    {"foo", ">", true},
    {"foo.bar.baz", ">", true},
    {"foo.bar", "foo.>", true},
    {"foo.bar.baz.qux", "foo.>", true},
    {"foo", "foo.>", false},
    {"bar.foo", "foo.>", false},
    {"foo.bar", "foo.bar.>", false},
    {"foo.bar.baz", "foo.bar.>", true},
    {"foo.bar", "*.>", true},
    {"foo", "*.>", false},
    {"foo.bar.baz", "*.bar.>", true},
    {"foo.baz.baz", "*.bar.>", false},
    {"foo.bar.baz", "foo.*.>", true},
    {"foo.bar", "foo.*.>", false},
    /* A token that only contains '*' or '>' is a literal token. */
    {"a*", "a*", true},
    {"a", "a*", false},
    {"ab", "a*", false},
    {"a*", "*", true},
    {"a*.b", "a*.b", true},
    {"ax.b", "a*.b", false},
    {"a*.b", "a*.*", true},
    {"x>", "x>", true},
    {"x.y", "x>", false},
    {"x>.y", "x>.>", true},
    {"x>", ">", true},
    {"**", "**", true},
    {"a.b", "**", false},
    {"*a", "*a", true},
    {"ba", "*a", false},
    {">>", ">>", true},
    {"a>b", "a>b", true},
    {"a.b", "a>b", false},
    {"foo.*x", "foo.*x", true},
    {"foo.bar", "foo.*x", false},
    /* An invalid subject or pattern matches nothing. */
    {"foo..bar", "foo.*.bar", false},
    {"foo..bar", ">", false},
    {".foo", ">", false},
    {"foo.", "foo.>", false},
    {"", ">", false},
    {"foo bar", ">", false},
    {"foo\tbar", "*", false},
    {"foo.*", "foo.*", false},  /* a wildcard token cannot be published */
    {"foo.>", "foo.>", false},
    {"foo.bar", "foo.>.bar", false}, /* '>' not last */
    {"foo.bar", "foo..bar", false},
    {"foo.bar", "", false},
    {"foo.bar", "foo.b r", false},
};

Test(subject, match_table_from_spec)
{
    size_t n = sizeof match_table / sizeof match_table[0];
    cr_assert_geq(n, 60, "the table has %zu rows", n);
    for (size_t i = 0; i < n; i++)
        cr_expect_eq(matches(match_table[i].subj, match_table[i].pat), match_table[i].want,
                     "row %zu: \"%s\" against \"%s\" should be %s", i, match_table[i].subj,
                     match_table[i].pat, match_table[i].want ? "a match" : "no match");
}

static const char *const valid_subjects[] = {
    "foo", "foo.bar", "orders.eu.created", "a.b.c.d.e.f.g", "$SYS.ACCOUNT", "_INBOX.x1",
    "a*", "x>", "**", ">>", "*a", "a>b", "foo.*x", "caf\xc3\xa9", "1.2.3", "-", "a-b_c:d/e",
};

static const char *const invalid_subjects[] = {
    "",        ".",       "..",      ".foo",    "foo.",    "foo..bar", "*",
    ">",       "foo.*",   "*.foo",   "foo.>",   "a.*.b",   "foo bar",  " foo",
    "foo ",    "foo\t",   "foo\nx",  "foo\r",   "a.\f",    "\v",       "foo.b\vr",
};

static const char *const valid_patterns[] = {
    "foo", "foo.bar", "*", ">", "foo.*", "*.foo", "foo.>", "*.>", "*.*.*", "a.*.b.>",
    "a*", "x>", "**", "a*.>", "*.x>", ">>.*",
};

static const char *const invalid_patterns[] = {
    "",      ".",       ".foo",    "foo.",    "foo..bar", ">.foo", "foo.>.bar",
    ">.>",   "foo.>.*", "foo bar", "* ",      "*.\t",     "a\n",   "a.\r.b",
};

Test(subject, valid_subjects_are_accepted)
{
    for (size_t i = 0; i < sizeof valid_subjects / sizeof *valid_subjects; i++) {
        int rc = evs__subject_validate(valid_subjects[i], strlen(valid_subjects[i]));
        cr_expect_eq(rc, 0, "\"%s\": got %s", valid_subjects[i], evs_errname(rc));
        rc = evs__pattern_validate(valid_subjects[i], strlen(valid_subjects[i]));
        cr_expect_eq(rc, 0, "a subject is a pattern: \"%s\": got %s", valid_subjects[i],
                     evs_errname(rc));
    }
}

Test(subject, invalid_subjects_are_einval)
{
    for (size_t i = 0; i < sizeof invalid_subjects / sizeof *invalid_subjects; i++) {
        int rc = evs__subject_validate(invalid_subjects[i], strlen(invalid_subjects[i]));
        cr_expect_eq(rc, EVS_EINVAL, "\"%s\": got %s", invalid_subjects[i], evs_errname(rc));
    }
}

Test(subject, valid_patterns_are_accepted)
{
    for (size_t i = 0; i < sizeof valid_patterns / sizeof *valid_patterns; i++) {
        int rc = evs__pattern_validate(valid_patterns[i], strlen(valid_patterns[i]));
        cr_expect_eq(rc, 0, "\"%s\": got %s", valid_patterns[i], evs_errname(rc));
    }
}

Test(subject, invalid_patterns_are_einval)
{
    for (size_t i = 0; i < sizeof invalid_patterns / sizeof *invalid_patterns; i++) {
        int rc = evs__pattern_validate(invalid_patterns[i], strlen(invalid_patterns[i]));
        cr_expect_eq(rc, EVS_EINVAL, "\"%s\": got %s", invalid_patterns[i], evs_errname(rc));
    }
}

Test(subject, gt_only_as_last_token)
{
    cr_assert_eq(evs__pattern_validate("a.>", 3), 0);
    int rc = evs__pattern_validate("a.>.b", 5);
    cr_assert_eq(rc, EVS_EINVAL, "got %s", evs_errname(rc));
    rc = evs__pattern_validate(">.a", 3);
    cr_assert_eq(rc, EVS_EINVAL, "got %s", evs_errname(rc));
}

Test(subject, nul_byte_inside_length_is_einval)
{
    int rc = evs__subject_validate("foo\0bar", 7);
    cr_assert_eq(rc, EVS_EINVAL, "got %s", evs_errname(rc));
    rc = evs__pattern_validate("foo.\0", 5);
    cr_assert_eq(rc, EVS_EINVAL, "got %s", evs_errname(rc));
    /* The length decides, not a terminator: a prefix is fine. */
    cr_assert_eq(evs__subject_validate("foo\0bar", 3), 0);
}

Test(subject, null_is_einval)
{
    int rc = evs__subject_validate(NULL, 3);
    cr_assert_eq(rc, EVS_EINVAL, "got %s", evs_errname(rc));
    rc = evs__pattern_validate(NULL, 0);
    cr_assert_eq(rc, EVS_EINVAL, "got %s", evs_errname(rc));
    cr_assert(!evs__subject_matches(NULL, 0, ">", 1));
}

Test(subject, longest_subject_is_max_topic_bytes)
{
    static char s[EVS_MAX_TOPIC + 2];
    for (size_t i = 0; i < sizeof s; i++)
        s[i] = (i % 2) ? '.' : 'a'; /* "a.a.a..." */
    size_t max = EVS_MAX_TOPIC % 2 ? EVS_MAX_TOPIC : EVS_MAX_TOPIC - 1; /* ends in 'a' */
    cr_assert_eq(evs__subject_validate(s, max), 0);
    cr_assert_eq(evs__pattern_validate(s, max), 0);
    s[EVS_MAX_TOPIC] = 'a';
    int rc = evs__subject_validate(s, EVS_MAX_TOPIC + 1);
    cr_assert_eq(rc, EVS_EINVAL, "got %s", evs_errname(rc));
    rc = evs__pattern_validate(s, EVS_MAX_TOPIC + 1);
    cr_assert_eq(rc, EVS_EINVAL, "got %s", evs_errname(rc));
}

Test(subject, wildcard_means_a_whole_token)
{
    static const struct {
        const char *p;
        bool wild;
    } t[] = {
        {"foo", false}, {"a*", false}, {"x>", false}, {"**", false}, {"a.*b", false},
        {"*", true},    {">", true},   {"a.*", true}, {"*.a", true}, {"a.*.b", true},
        {"a.>", true},  {"*x.*", true},
    };
    for (size_t i = 0; i < sizeof t / sizeof *t; i++)
        cr_expect_eq(evs__pattern_has_wildcard(t[i].p, strlen(t[i].p)), t[i].wild, "\"%s\"",
                     t[i].p);
}

/* ---- randomised check ------------------------------------------------ */

static uint64_t rng_state = 0x243f6a8885a308d3ull;

static uint64_t rnd(void)
{
    uint64_t x = rng_state; /* xorshift64: reproducible across runs */
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

static const char *const subj_tokens[] = {"a", "b", "c", "a*", "x>", "**"};
static const char *const pat_tokens[] = {"a", "b", "c", "a*", "x>", "**", "*", "*"};

/* Writes 1..5 random tokens; a pattern may end in ">". */
static size_t random_string(char *buf, bool pattern)
{
    size_t ntok = 1 + rnd() % 5, len = 0;
    for (size_t i = 0; i < ntok; i++) {
        const char *t;
        if (pattern && i + 1 == ntok && rnd() % 4 == 0)
            t = ">";
        else if (pattern)
            t = pat_tokens[rnd() % (sizeof pat_tokens / sizeof *pat_tokens)];
        else
            t = subj_tokens[rnd() % (sizeof subj_tokens / sizeof *subj_tokens)];
        if (i > 0)
            buf[len++] = '.';
        memcpy(buf + len, t, strlen(t));
        len += strlen(t);
    }
    buf[len] = '\0';
    return len;
}

/* The second matcher, written differently (tests/subject_ref.h, shared
 * with the fuzzer): split both into token arrays, then recurse. */
static bool other_match(const char *subj, const char *pat)
{
    ref_tok st[64], pt[64];
    return ref_match(subj, strlen(subj), pat, strlen(pat), st, pt);
}

Test(subject, reference_matcher_agrees_with_a_second_matcher)
{
    char s[64], p[64];
    size_t hits = 0;
    for (int i = 0; i < 100000; i++) {
        size_t sl = random_string(s, false);
        size_t pl = random_string(p, true);
        cr_assert_eq(evs__subject_validate(s, sl), 0, "generated subject \"%s\"", s);
        cr_assert_eq(evs__pattern_validate(p, pl), 0, "generated pattern \"%s\"", p);
        bool want = other_match(s, p);
        hits += want;
        cr_assert_eq(evs__subject_matches(s, sl, p, pl), want, "\"%s\" against \"%s\"", s, p);
    }
    cr_assert_gt(hits, 1000, "only %zu matches: the generator is too sparse", hits);
}

Test(subject, generalising_a_subject_keeps_the_match)
{
    /* Every subject matches itself, ">", its own shape in "*", and any
     * prefix of itself followed by ">". */
    char s[64], p[64];
    for (int i = 0; i < 20000; i++) {
        size_t sl = random_string(s, false);
        cr_assert(matches(s, s), "\"%s\"", s);
        cr_assert(matches(s, ">"), "\"%s\"", s);
        size_t pl = 0;
        for (size_t j = 0; j < sl; j++) {
            if (s[j] == '.')
                continue;
            if (j > 0 && s[j - 1] != '.')
                continue;
            if (pl > 0)
                p[pl++] = '.';
            p[pl++] = rnd() % 2 ? '*' : '\0';
            if (p[pl - 1] == '\0') { /* keep this token literally */
                pl--;
                size_t k = j;
                while (k < sl && s[k] != '.')
                    p[pl++] = s[k++];
            }
        }
        p[pl] = '\0';
        cr_assert(matches(s, p), "\"%s\" against \"%s\"", s, p);
        /* Replace everything after the first token with ">". */
        const char *dot = strchr(s, '.');
        if (dot != NULL) {
            size_t first = (size_t)(dot - s);
            memcpy(p, s, first);
            memcpy(p + first, ".>", 3);
            cr_assert(matches(s, p), "\"%s\" against \"%s\"", s, p);
        } else {
            memcpy(p, s, sl);
            memcpy(p + sl, ".>", 3);
            cr_assert(!matches(s, p), "'>' needs a token: \"%s\" against \"%s\"", s, p);
        }
    }
}
