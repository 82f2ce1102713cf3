/*
 * The subscription index and its cache: insert, remove and match,
 * per-insertion semantics, generations, a randomised comparison with the
 * reference matcher, CLOCK eviction, and allocation failure.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "evs_internal.h"
#include "subject.h"
#include "sublist.h"

/* Items are small integers disguised as pointers. */
#define IT(i) ((void *)(uintptr_t)(i))

static int ins(evs_sublist *sl, const char *p, uintptr_t item)
{
    return evs__sublist_insert(sl, p, strlen(p), IT(item));
}

static int rem(evs_sublist *sl, const char *p, uintptr_t item)
{
    return evs__sublist_remove(sl, p, strlen(p), IT(item));
}

static int cmp_ptr(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)*(void *const *)a, y = (uintptr_t)*(void *const *)b;
    return x < y ? -1 : x > y;
}

/* The sorted match result for `subject`, written as "1,2,2,5" into buf. */
static const char *match_str(evs_sublist *sl, const char *subject, char *buf, size_t size)
{
    evs_itemvec v = {0};
    int rc = evs__sublist_match(sl, subject, strlen(subject), &v);
    cr_assert_geq(rc, 0, "match \"%s\": %s", subject, evs_errname(rc));
    cr_assert_eq((size_t)rc, v.n);
    if (v.n > 0)
        qsort(v.v, v.n, sizeof *v.v, cmp_ptr);
    size_t len = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < v.n; i++)
        len += (size_t)snprintf(buf + len, size - len, "%s%lu", i ? "," : "",
                                (unsigned long)(uintptr_t)v.v[i]);
    evs__itemvec_fini(&v);
    return buf;
}

#define EXPECT_MATCH(sl, subj, want)                                                       \
    do {                                                                                   \
        char b_[512];                                                                      \
        cr_expect_str_eq(match_str((sl), (subj), b_, sizeof b_), (want), "subject \"%s\"", \
                         (subj));                                                          \
    } while (0)

Test(sublist, exact_and_wildcard_patterns_match)
{
    evs_sublist *sl;
    cr_assert_eq(evs__sublist_create(&sl), 0);
    cr_assert_eq(ins(sl, "orders.eu.created", 1), 0);
    cr_assert_eq(ins(sl, "orders.*.created", 2), 0);
    cr_assert_eq(ins(sl, "orders.>", 3), 0);
    cr_assert_eq(ins(sl, ">", 4), 0);
    cr_assert_eq(ins(sl, "*.eu.*", 5), 0);
    cr_assert_eq(ins(sl, "orders.us.created", 6), 0);
    cr_assert_eq(ins(sl, "orders", 7), 0);
    cr_assert_eq(ins(sl, "*", 8), 0);
    cr_assert_eq(evs__sublist_count(sl), 8);

    EXPECT_MATCH(sl, "orders.eu.created", "1,2,3,4,5");
    EXPECT_MATCH(sl, "orders.us.created", "2,3,4,6");
    EXPECT_MATCH(sl, "orders.eu", "3,4");
    EXPECT_MATCH(sl, "orders", "4,7,8");
    EXPECT_MATCH(sl, "billing.eu.paid", "4,5");
    EXPECT_MATCH(sl, "billing", "4,8");
    EXPECT_MATCH(sl, "orders.eu.created.late", "3,4");
    evs__sublist_destroy(sl);
}

Test(sublist, an_empty_index_matches_nothing)
{
    evs_sublist *sl;
    cr_assert_eq(evs__sublist_create(&sl), 0);
    EXPECT_MATCH(sl, "a.b", "");
    cr_assert_eq(evs__sublist_count(sl), 0);
    evs__sublist_destroy(sl);
    evs__sublist_destroy(NULL);
}

Test(sublist, gt_needs_at_least_one_token)
{
    evs_sublist *sl;
    cr_assert_eq(evs__sublist_create(&sl), 0);
    cr_assert_eq(ins(sl, "foo.>", 1), 0);
    cr_assert_eq(ins(sl, "foo.*", 2), 0);
    EXPECT_MATCH(sl, "foo", "");
    EXPECT_MATCH(sl, "foo.bar", "1,2");
    EXPECT_MATCH(sl, "foo.bar.baz", "1");
    evs__sublist_destroy(sl);
}

Test(sublist, tokens_containing_wildcard_bytes_are_literal)
{
    evs_sublist *sl;
    cr_assert_eq(evs__sublist_create(&sl), 0);
    cr_assert_eq(ins(sl, "a*.b", 1), 0);
    cr_assert_eq(ins(sl, "x>", 2), 0);
    cr_assert_eq(ins(sl, "a*.*", 3), 0);
    cr_assert_eq(ins(sl, "**", 4), 0);
    EXPECT_MATCH(sl, "a*.b", "1,3");
    EXPECT_MATCH(sl, "ax.b", "");
    EXPECT_MATCH(sl, "x>", "2");
    EXPECT_MATCH(sl, "x.y", "");
    EXPECT_MATCH(sl, "**", "4");
    EXPECT_MATCH(sl, "a", "");
    evs__sublist_destroy(sl);
}

Test(sublist, invalid_pattern_is_einval_and_changes_nothing)
{
    evs_sublist *sl;
    cr_assert_eq(evs__sublist_create(&sl), 0);
    uint64_t g = evs__sublist_generation(sl);
    static const char *const bad[] = {"", "a..b", ".a", "a.", "a.>.b", "a b", "a\t"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int rc = ins(sl, bad[i], 1);
        cr_expect_eq(rc, EVS_EINVAL, "insert \"%s\": got %s", bad[i], evs_errname(rc));
        rc = rem(sl, bad[i], 1);
        cr_expect_eq(rc, EVS_EINVAL, "remove \"%s\": got %s", bad[i], evs_errname(rc));
    }
    int rc = evs__sublist_insert(sl, NULL, 0, NULL);
    cr_assert_eq(rc, EVS_EINVAL, "got %s", evs_errname(rc));
    rc = evs__sublist_insert(NULL, "a", 1, NULL);
    cr_assert_eq(rc, EVS_EINVAL, "got %s", evs_errname(rc));
    cr_assert_eq(evs__sublist_count(sl), 0);
    cr_assert_eq(evs__sublist_generation(sl), g);
    evs__sublist_destroy(sl);
}

Test(sublist, matching_an_invalid_subject_is_einval)
{
    evs_sublist *sl;
    cr_assert_eq(evs__sublist_create(&sl), 0);
    cr_assert_eq(ins(sl, ">", 1), 0);
    evs_itemvec v = {0};
    static const char *const bad[] = {"", "a..b", "a.*", ">", "a b", "a."};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int rc = evs__sublist_match(sl, bad[i], strlen(bad[i]), &v);
        cr_expect_eq(rc, EVS_EINVAL, "\"%s\": got %s", bad[i], evs_errname(rc));
    }
    cr_assert_eq(v.n, 0);
    int rc = evs__sublist_match(sl, "a", 1, NULL);
    cr_assert_eq(rc, EVS_EINVAL, "got %s", evs_errname(rc));
    evs__sublist_destroy(sl);
}

Test(sublist, removing_a_missing_pair_is_enotfound)
{
    evs_sublist *sl;
    cr_assert_eq(evs__sublist_create(&sl), 0);
    cr_assert_eq(ins(sl, "a.b", 1), 0);
    cr_assert_eq(ins(sl, "a.*", 1), 0);
    cr_assert_eq(ins(sl, "a.>", 1), 0);
    uint64_t g = evs__sublist_generation(sl);
    static const struct {
        const char *p;
        uintptr_t item;
    } missing[] = {
        {"a.b", 2},   /* pattern present, item not */
        {"a.c", 1},   /* exact pattern absent */
        {"a.*", 2},   {"a.>", 2}, {"*.b", 1}, /* wildcard pattern absent */
        {"a.*.c", 1}, /* a path that runs past the tree */
        {"a", 1},     /* a prefix of stored patterns */
        {">", 1},
    };
    for (size_t i = 0; i < sizeof missing / sizeof *missing; i++) {
        int rc = rem(sl, missing[i].p, missing[i].item);
        cr_expect_eq(rc, EVS_ENOTFOUND, "\"%s\"/%lu: got %s", missing[i].p,
                     (unsigned long)missing[i].item, evs_errname(rc));
    }
    cr_assert_eq(evs__sublist_generation(sl), g, "a failed remove changes nothing");
    cr_assert_eq(evs__sublist_count(sl), 3);
    EXPECT_MATCH(sl, "a.b", "1,1,1");
    evs__sublist_destroy(sl);
}

Test(sublist, a_pair_inserted_twice_is_stored_twice)
{
    evs_sublist *sl;
    cr_assert_eq(evs__sublist_create(&sl), 0);
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(ins(sl, "a.b", 7), 0);
        cr_assert_eq(ins(sl, "a.*", 8), 0);
    }
    EXPECT_MATCH(sl, "a.b", "7,7,8,8");
    cr_assert_eq(rem(sl, "a.b", 7), 0);
    cr_assert_eq(rem(sl, "a.*", 8), 0);
    EXPECT_MATCH(sl, "a.b", "7,8");
    cr_assert_eq(rem(sl, "a.b", 7), 0);
    cr_assert_eq(rem(sl, "a.*", 8), 0);
    EXPECT_MATCH(sl, "a.b", "");
    int rc = rem(sl, "a.b", 7);
    cr_assert_eq(rc, EVS_ENOTFOUND, "got %s", evs_errname(rc));
    rc = rem(sl, "a.*", 8);
    cr_assert_eq(rc, EVS_ENOTFOUND, "got %s", evs_errname(rc));
    cr_assert_eq(evs__sublist_count(sl), 0);
    evs__sublist_destroy(sl);
}

Test(sublist, one_item_under_two_matching_patterns_appears_twice)
{
    evs_sublist *sl;
    cr_assert_eq(evs__sublist_create(&sl), 0);
    cr_assert_eq(ins(sl, "orders.*", 1), 0);
    cr_assert_eq(ins(sl, "orders.>", 1), 0);
    cr_assert_eq(ins(sl, "orders.eu", 1), 0);
    EXPECT_MATCH(sl, "orders.eu", "1,1,1");
    EXPECT_MATCH(sl, "orders.us", "1,1");
    cr_assert_eq(rem(sl, "orders.>", 1), 0);
    EXPECT_MATCH(sl, "orders.eu", "1,1");
    evs__sublist_destroy(sl);
}

Test(sublist, null_items_are_stored_like_any_other)
{
    evs_sublist *sl;
    cr_assert_eq(evs__sublist_create(&sl), 0);
    cr_assert_eq(ins(sl, "a.*", 0), 0);
    EXPECT_MATCH(sl, "a.b", "0");
    cr_assert_eq(rem(sl, "a.*", 0), 0);
    EXPECT_MATCH(sl, "a.b", "");
    evs__sublist_destroy(sl);
}

Test(sublist, generation_moves_on_every_change_only)
{
    evs_sublist *sl;
    cr_assert_eq(evs__sublist_create(&sl), 0);
    uint64_t g0 = evs__sublist_generation(sl);
    cr_assert_eq(ins(sl, "a.b", 1), 0);
    uint64_t g1 = evs__sublist_generation(sl);
    cr_assert_gt(g1, g0);
    cr_assert_eq(ins(sl, "a.>", 1), 0);
    uint64_t g2 = evs__sublist_generation(sl);
    cr_assert_gt(g2, g1);
    EXPECT_MATCH(sl, "a.b", "1,1");
    cr_assert_eq(evs__sublist_generation(sl), g2, "matching is not a change");
    cr_assert_eq(rem(sl, "a.b", 1), 0);
    uint64_t g3 = evs__sublist_generation(sl);
    cr_assert_gt(g3, g2);
    cr_assert_eq(rem(sl, "a.b", 1), EVS_ENOTFOUND);
    cr_assert_eq(ins(sl, "a..b", 1), EVS_EINVAL);
    cr_assert_eq(evs__sublist_generation(sl), g3, "failures are not changes");
    evs__sublist_destroy(sl);
}

Test(sublist, match_appends_to_what_the_vector_holds)
{
    evs_sublist *sl;
    cr_assert_eq(evs__sublist_create(&sl), 0);
    cr_assert_eq(ins(sl, "a", 5), 0);
    evs_itemvec v = {0};
    cr_assert_eq(evs__itemvec_push(&v, IT(99)), 0);
    cr_assert_eq(evs__sublist_match(sl, "a", 1, &v), 1);
    cr_assert_eq(v.n, 2);
    cr_assert_eq(v.v[0], IT(99));
    cr_assert_eq(v.v[1], IT(5));
    evs__itemvec_fini(&v);
    cr_assert_eq(v.n, 0);
    cr_assert_null(v.v);
    evs__sublist_destroy(sl);
}

Test(sublist, removing_everything_empties_the_tree)
{
    evs_sublist *sl;
    cr_assert_eq(evs__sublist_create(&sl), 0);
    static const char *const pats[] = {"a.b.c.>", "a.b.*", "a.*.c", "*.*.*", "a.b.c", "a.>",
                                       "*",       ">",     "a.b.c.d.e.f"};
    size_t n = sizeof pats / sizeof *pats;
    for (int round = 0; round < 3; round++) {
        for (size_t i = 0; i < n; i++)
            cr_assert_eq(ins(sl, pats[i], i + 1), 0);
        EXPECT_MATCH(sl, "a.b.c", "2,3,4,5,6,8");
        for (size_t i = n; i-- > 0;)
            cr_assert_eq(rem(sl, pats[i], i + 1), 0, "%s", pats[i]);
        cr_assert_eq(evs__sublist_count(sl), 0);
        EXPECT_MATCH(sl, "a.b.c", "");
        EXPECT_MATCH(sl, "a", "");
    }
    evs__sublist_destroy(sl);
}

/* Insert "x.x...x.*.>" with d literal tokens for d in [0, n): walking the
 * subject x.x.x... then branches at every level, more times than the
 * walk keeps on the C stack. Items are base + d. */
static void insert_branching_chain(evs_sublist *sl, const char *tok, int n, uintptr_t base)
{
    static char p[2048];
    for (int d = 0; d < n; d++) {
        size_t len = 0;
        for (int i = 0; i < d; i++)
            len += (size_t)sprintf(p + len, "%s.", tok);
        len += (size_t)sprintf(p + len, "*.>");
        cr_assert_eq(evs__sublist_insert(sl, p, len, IT(base + (uintptr_t)d)), 0, "%s", p);
    }
}

/* n copies of tok joined by '.', then `tail`. */
static size_t repeat(char *buf, const char *tok, int n, const char *tail)
{
    size_t len = 0;
    for (int i = 0; i < n; i++)
        len += (size_t)sprintf(buf + len, "%s%s", i ? "." : "", tok);
    len += (size_t)sprintf(buf + len, "%s", tail);
    return len;
}

Test(sublist, deep_star_chains_match)
{
    static char pat[1024], subj[1024];
    evs_sublist *sl;
    cr_assert_eq(evs__sublist_create(&sl), 0);
    size_t pl = repeat(pat, "*", 200, "");
    cr_assert_eq(evs__sublist_insert(sl, pat, pl, IT(1)), 0);
    pl = repeat(pat, "x", 200, "");
    cr_assert_eq(evs__sublist_insert(sl, pat, pl, IT(2)), 0);
    insert_branching_chain(sl, "x", 100, 100);

    evs_itemvec v = {0};
    size_t len = repeat(subj, "x", 200, "");
    cr_assert_eq(evs__sublist_match(sl, subj, len, &v), 102);
    len = repeat(subj, "x", 199, ".y");
    v.n = 0;
    cr_assert_eq(evs__sublist_match(sl, subj, len, &v), 101);
    len = repeat(subj, "x", 201, "");
    v.n = 0;
    cr_assert_eq(evs__sublist_match(sl, subj, len, &v), 100);
    len = repeat(subj, "x", 1, "");
    v.n = 0;
    cr_assert_eq(evs__sublist_match(sl, subj, len, &v), 0);
    evs__itemvec_fini(&v);
    evs__sublist_destroy(sl);
}

/* ---- randomised comparison with the reference matcher ---------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

static const char *const subj_tokens[] = {"a", "b", "c", "a*", "x>", "**", "bb"};
static const char *const pat_tokens[] = {"a", "b", "c", "a*", "x>", "**", "bb", "*", "*"};

static void random_string(char *buf, bool pattern)
{
    size_t ntok = 1 + rnd() % 4, len = 0;
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
}

#define NPAT 1000

/* Check every subject against every live pattern: the index must return
 * exactly the items (pattern numbers) whose patterns the reference
 * matcher says match. Returns the number of pairs checked. */
static size_t check_against_reference(evs_sublist *sl, char pats[][32], const bool *live,
                                      int nsubj, size_t *hits)
{
    static unsigned want[NPAT + 1], got[NPAT + 1];
    evs_itemvec v = {0};
    size_t pairs = 0;
    for (int k = 0; k < nsubj; k++) {
        char s[32];
        random_string(s, false);
        memset(want, 0, sizeof want);
        memset(got, 0, sizeof got);
        for (int i = 0; i < NPAT; i++) {
            if (!live[i])
                continue;
            pairs++;
            if (evs__subject_matches(s, strlen(s), pats[i], strlen(pats[i]))) {
                want[i + 1]++;
                (*hits)++;
            }
        }
        v.n = 0;
        int rc = evs__sublist_match(sl, s, strlen(s), &v);
        cr_assert_geq(rc, 0, "%s", evs_errname(rc));
        for (size_t j = 0; j < v.n; j++)
            got[(uintptr_t)v.v[j]]++;
        for (int i = 0; i <= NPAT; i++)
            cr_assert_eq(got[i], want[i], "subject \"%s\", pattern %d \"%s\": index %u, reference %u",
                         s, i - 1, i ? pats[i - 1] : "-", got[i], want[i]);
    }
    evs__itemvec_fini(&v);
    return pairs;
}

Test(sublist, index_agrees_with_reference_matcher_on_random_pairs, .timeout = 60)
{
    static char pats[NPAT][32];
    static bool live[NPAT];
    evs_sublist *sl;
    cr_assert_eq(evs__sublist_create(&sl), 0);
    for (int i = 0; i < NPAT; i++) {
        random_string(pats[i], true);
        cr_assert_eq(evs__sublist_insert(sl, pats[i], strlen(pats[i]), IT(i + 1)), 0, "%s",
                     pats[i]);
        live[i] = true;
    }
    size_t hits = 0, pairs = check_against_reference(sl, pats, live, 100, &hits);

    /* Remove a random half and check again: pruning keeps the rest. */
    for (int i = 0; i < NPAT; i++) {
        if (rnd() % 2) {
            cr_assert_eq(evs__sublist_remove(sl, pats[i], strlen(pats[i]), IT(i + 1)), 0);
            live[i] = false;
        }
    }
    pairs += check_against_reference(sl, pats, live, 100, &hits);

    /* Put some back under new patterns and check once more. */
    for (int i = 0; i < NPAT; i++) {
        if (!live[i] && rnd() % 2) {
            random_string(pats[i], true);
            cr_assert_eq(evs__sublist_insert(sl, pats[i], strlen(pats[i]), IT(i + 1)), 0);
            live[i] = true;
        }
    }
    pairs += check_against_reference(sl, pats, live, 100, &hits);
    cr_assert_geq(pairs, 100000, "checked %zu pairs", pairs);
    cr_assert_gt(hits, pairs / 50, "only %zu of %zu pairs match", hits, pairs);
    evs__sublist_destroy(sl);
}

/* ---- the cache ------------------------------------------------------- */

static void *const items3[] = {IT(1), IT(2), IT(3)};

Test(subcache, a_stored_result_is_a_hit_at_its_generation)
{
    evs_subcache *c;
    cr_assert_eq(evs__subcache_create(&c, 8, 0), 0);
    void *const *it;
    size_t n;
    cr_assert(!evs__subcache_lookup(c, "a.b", 3, 1, &it, &n));
    cr_assert_eq(evs__subcache_insert(c, "a.b", 3, 1, items3, 3), 0);
    cr_assert(evs__subcache_lookup(c, "a.b", 3, 1, &it, &n));
    cr_assert_eq(n, 3);
    cr_assert_arr_eq(it, items3, sizeof items3);
    cr_assert(!evs__subcache_lookup(c, "a.c", 3, 1, &it, &n));
    cr_assert(!evs__subcache_lookup(c, "a.b", 3, 2, &it, &n), "another generation misses");
    cr_assert_eq(evs__subcache_insert(c, "a.c", 3, 1, NULL, 0), 0);
    cr_assert(evs__subcache_lookup(c, "a.c", 3, 1, &it, &n));
    cr_assert_eq(n, 0, "an empty result is cached too");
    cr_assert_eq(evs__subcache_count(c), 2);
    evs__subcache_destroy(c);
    evs__subcache_destroy(NULL);
}

Test(subcache, reinserting_a_subject_replaces_its_entry)
{
    evs_subcache *c;
    cr_assert_eq(evs__subcache_create(&c, 8, 0), 0);
    cr_assert_eq(evs__subcache_insert(c, "a", 1, 1, items3, 3), 0);
    cr_assert_eq(evs__subcache_insert(c, "a", 1, 2, items3 + 1, 1), 0);
    cr_assert_eq(evs__subcache_count(c), 1);
    void *const *it;
    size_t n;
    cr_assert(!evs__subcache_lookup(c, "a", 1, 1, &it, &n));
    cr_assert(evs__subcache_lookup(c, "a", 1, 2, &it, &n));
    cr_assert_eq(n, 1);
    cr_assert_eq(it[0], IT(2));
    evs__subcache_destroy(c);
}

Test(subcache, a_full_cache_evicts_an_entry_not_hit_recently)
{
    evs_subcache *c;
    cr_assert_eq(evs__subcache_create(&c, 4, 0), 0);
    static const char *const s[] = {"a", "b", "c", "d", "e"};
    void *const *it;
    size_t n;
    for (int i = 0; i < 4; i++)
        cr_assert_eq(evs__subcache_insert(c, s[i], 1, 1, items3, 1), 0);
    for (int i = 0; i < 3; i++) /* a, b, c are hit; d is not */
        cr_assert(evs__subcache_lookup(c, s[i], 1, 1, &it, &n));
    cr_assert_eq(evs__subcache_insert(c, "e", 1, 1, items3, 1), 0);
    cr_assert_eq(evs__subcache_count(c), 4);
    for (int i = 0; i < 5; i++)
        cr_expect_eq(evs__subcache_lookup(c, s[i], 1, 1, &it, &n), i != 3, "\"%s\"", s[i]);
    /* Keep inserting: the count never passes the bound. */
    char key[16];
    for (int i = 0; i < 1000; i++) {
        int len = snprintf(key, sizeof key, "k%d", i);
        cr_assert_eq(evs__subcache_insert(c, key, (size_t)len, 1, items3, 2), 0);
        cr_assert_leq(evs__subcache_count(c), 4);
    }
    cr_assert(evs__subcache_lookup(c, "k999", 4, 1, &it, &n));
    evs__subcache_destroy(c);
}

Test(subcache, stale_entries_are_evicted_first)
{
    evs_subcache *c;
    cr_assert_eq(evs__subcache_create(&c, 2, 0), 0);
    void *const *it;
    size_t n;
    cr_assert_eq(evs__subcache_insert(c, "old", 3, 1, items3, 1), 0);
    cr_assert(evs__subcache_lookup(c, "old", 3, 1, &it, &n)); /* hit, but will go stale */
    cr_assert_eq(evs__subcache_insert(c, "new", 3, 2, items3, 1), 0);
    cr_assert(evs__subcache_lookup(c, "new", 3, 2, &it, &n));
    cr_assert_eq(evs__subcache_insert(c, "newer", 5, 2, items3, 1), 0);
    cr_assert(evs__subcache_lookup(c, "new", 3, 2, &it, &n), "the current entry stays");
    cr_assert(evs__subcache_lookup(c, "newer", 5, 2, &it, &n));
    cr_assert(!evs__subcache_lookup(c, "old", 3, 1, &it, &n), "the stale one went");
    evs__subcache_destroy(c);
}

Test(subcache, clear_drops_every_entry)
{
    evs_subcache *c;
    cr_assert_eq(evs__subcache_create(&c, 0, 0), 0);
    cr_assert_eq(evs__subcache_insert(c, "a", 1, 1, items3, 3), 0);
    cr_assert_eq(evs__subcache_insert(c, "b", 1, 1, items3, 3), 0);
    evs__subcache_clear(c);
    cr_assert_eq(evs__subcache_count(c), 0);
    void *const *it;
    size_t n;
    cr_assert(!evs__subcache_lookup(c, "a", 1, 1, &it, &n));
    cr_assert_eq(evs__subcache_insert(c, "a", 1, 1, items3, 3), 0);
    cr_assert(evs__subcache_lookup(c, "a", 1, 1, &it, &n));
    evs__subcache_destroy(c);
}

Test(subcache, bad_arguments_are_einval)
{
    evs_subcache *c = (void *)1;
    int rc = evs__subcache_create(NULL, 4, 0);
    cr_assert_eq(rc, EVS_EINVAL, "got %s", evs_errname(rc));
    rc = evs__subcache_create(&c, ((size_t)1 << 30) + 1, 0);
    cr_assert_eq(rc, EVS_EINVAL, "got %s", evs_errname(rc));
    cr_assert_null(c);
    cr_assert_eq(evs__subcache_create(&c, 4, 0), 0);
    rc = evs__subcache_insert(c, NULL, 0, 1, NULL, 0);
    cr_assert_eq(rc, EVS_EINVAL, "got %s", evs_errname(rc));
    rc = evs__subcache_insert(c, "a", 1, 1, NULL, 2);
    cr_assert_eq(rc, EVS_EINVAL, "got %s", evs_errname(rc));
    rc = evs__subcache_insert(c, "a", EVS_MAX_TOPIC + 1, 1, NULL, 0);
    cr_assert_eq(rc, EVS_EINVAL, "got %s", evs_errname(rc));
    cr_assert_eq(evs__subcache_count(c), 0);
    evs__subcache_destroy(c);
}

Test(subcache, bytes_never_exceed_max_bytes_and_huge_results_are_not_cached)
{
    evs_subcache *c;
    const size_t max = EVS_SUBCACHE_MIN_BYTES;
    cr_assert_eq(evs__subcache_create(&c, 0, max), 0);
    static void *items[4096];
    for (size_t i = 0; i < 4096; i++)
        items[i] = IT(i + 1);
    char subject[32];
    for (int i = 0; i < 1000; i++) { /* 1000 x 8 KiB: eight times the bound */
        snprintf(subject, sizeof subject, "s.%d", i);
        cr_assert_eq(evs__subcache_insert(c, subject, strlen(subject), 1, items, 1000), 0);
        cr_assert_leq(evs__subcache_bytes(c), max, "after %d: %zu", i, evs__subcache_bytes(c));
    }
    cr_assert_lt(evs__subcache_count(c), 1000 / 7, "evicted to stay under the byte bound");
    void *const *it;
    size_t n;
    cr_assert(evs__subcache_lookup(c, "s.999", 5, 1, &it, &n), "the newest is kept");
    cr_assert_eq(n, 1000);
    /* Over max / 64 (16 KiB here): refused, and nothing else goes. */
    size_t before = evs__subcache_count(c);
    int rc = evs__subcache_insert(c, "big", 3, 1, items, 4096);
    cr_assert_eq(rc, EVS_ENOMEM, "got %s", evs_errname(rc));
    cr_assert(!evs__subcache_lookup(c, "big", 3, 1, &it, &n));
    cr_assert_eq(evs__subcache_count(c), before);
    evs__subcache_clear(c);
    cr_assert_eq(evs__subcache_count(c), 0);
    cr_assert_eq(evs__subcache_bytes(c), 0);
    cr_assert_eq(evs__subcache_insert(c, "a", 1, 2, items, 1), 0, "usable after clear");
    cr_assert(evs__subcache_lookup(c, "a", 1, 2, &it, &n));
    evs__subcache_destroy(c);
    rc = evs__subcache_create(&c, 0, EVS_SUBCACHE_MIN_BYTES - 1);
    cr_assert_eq(rc, EVS_EINVAL, "got %s", evs_errname(rc));
    rc = evs__subcache_create(&c, 0, EVS_SUBCACHE_MAX_BYTES + 1);
    cr_assert_eq(rc, EVS_EINVAL, "got %s", evs_errname(rc));
}

Test(subcache, match_through_the_cache_follows_the_index)
{
    evs_sublist *sl;
    evs_subcache *c;
    cr_assert_eq(evs__sublist_create(&sl), 0);
    cr_assert_eq(evs__subcache_create(&c, 16, 0), 0);
    evs_itemvec scratch = {0};
    void *const *it, *const *it2;
    size_t n, n2;
    cr_assert_eq(ins(sl, "a.*", 1), 0);
    cr_assert_eq(evs__subcache_match(c, sl, "a.b", 3, &scratch, &it, &n), 0);
    cr_assert_eq(n, 1);
    cr_assert_eq(it[0], IT(1));
    cr_assert_eq(evs__subcache_match(c, sl, "a.b", 3, &scratch, &it2, &n2), 0);
    cr_assert_eq(it2, it, "the second call is a hit on the same entry");
    cr_assert_eq(ins(sl, "a.>", 2), 0); /* subscribe: the entry is stale */
    cr_assert_eq(evs__subcache_match(c, sl, "a.b", 3, &scratch, &it, &n), 0);
    cr_assert_eq(n, 2);
    cr_assert_eq(rem(sl, "a.*", 1), 0); /* unsubscribe */
    cr_assert_eq(evs__subcache_match(c, sl, "a.b", 3, &scratch, &it, &n), 0);
    cr_assert_eq(n, 1);
    cr_assert_eq(it[0], IT(2));
    int rc = evs__subcache_match(c, sl, "a..b", 4, &scratch, &it, &n);
    cr_assert_eq(rc, EVS_EINVAL, "got %s", evs_errname(rc));
    evs__itemvec_fini(&scratch);
    evs__subcache_destroy(c);
    evs__sublist_destroy(sl);
}

Test(subcache, cached_results_agree_with_the_index_under_churn, .timeout = 60)
{
    static char pats[200][32];
    static bool live[200];
    evs_sublist *sl;
    evs_subcache *c;
    cr_assert_eq(evs__sublist_create(&sl), 0);
    cr_assert_eq(evs__subcache_create(&c, 32, 0), 0); /* smaller than the subject set */
    evs_itemvec scratch = {0}, direct = {0};
    for (int step = 0; step < 20000; step++) {
        int i = (int)(rnd() % 200);
        if (rnd() % 8 == 0) { /* subscribe or unsubscribe */
            if (live[i]) {
                cr_assert_eq(evs__sublist_remove(sl, pats[i], strlen(pats[i]), IT(i + 1)), 0);
            } else {
                random_string(pats[i], true);
                cr_assert_eq(evs__sublist_insert(sl, pats[i], strlen(pats[i]), IT(i + 1)), 0);
            }
            live[i] = !live[i];
            continue;
        }
        char s[32];
        random_string(s, false);
        void *const *it;
        size_t n;
        cr_assert_eq(evs__subcache_match(c, sl, s, strlen(s), &scratch, &it, &n), 0);
        direct.n = 0;
        cr_assert_geq(evs__sublist_match(sl, s, strlen(s), &direct), 0);
        cr_assert_eq(n, direct.n, "\"%s\"", s);
        if (n == 0)
            continue;
        void **a = malloc(n * sizeof *a);
        memcpy(a, it, n * sizeof *a);
        qsort(a, n, sizeof *a, cmp_ptr);
        qsort(direct.v, n, sizeof *direct.v, cmp_ptr);
        cr_assert_arr_eq(a, direct.v, n * sizeof *a, "\"%s\"", s);
        free(a);
    }
    evs__itemvec_fini(&scratch);
    evs__itemvec_fini(&direct);
    evs__subcache_destroy(c);
    evs__sublist_destroy(sl);
}

/* ---- allocation failure ------------------------------------------------ */

static const char *const probe_subjects[] = {
    "a",     "a.b",     "a.b.c", "a.b.c.d", "x.y", "x.y.z", "new", "n.e.w",
    "a.x.c", "q.r.s.t", "a*.b",  "m.n",     "m",   "a.b.d", "z.b.c",
};
#define NPROBE (sizeof probe_subjects / sizeof *probe_subjects)

static void snapshot(evs_sublist *sl, char out[NPROBE][512])
{
    for (size_t i = 0; i < NPROBE; i++)
        match_str(sl, probe_subjects[i], out[i], 512);
}

Test(sublist, failed_inserts_are_enomem_and_change_nothing)
{
    static const char *const base[] = {"a.b", "a.*", "a.>", "x.*.z", "a.b.c.>", "m.n"};
    /* New exact subjects, new and shared tree paths, a deep new branch,
     * the root's '*' and '>', and items added to existing lists. */
    static const char *const more[] = {"new",     "n.e.w",     "a.b",   "a.*",      "a.>",
                                       "q.*.s.t", "q.r.*.t.>", "*",     ">",        "a*.b",
                                       "x.*.z",   "*.b.c",     "m.*",   "a.*.*.*.>"};
    static char before[NPROBE][512], after[NPROBE][512];
    evs_sublist *sl;
    cr_assert_eq(evs__sublist_create(&sl), 0);
    for (size_t i = 0; i < sizeof base / sizeof *base; i++)
        cr_assert_eq(ins(sl, base[i], 100 + i), 0);

    for (size_t m = 0; m < sizeof more / sizeof *more; m++) {
        snapshot(sl, before);
        size_t count = evs__sublist_count(sl);
        uint64_t gen = evs__sublist_generation(sl);
        int rc = 0;
        long k;
        for (k = 0; k < 1000; k++) {
            evs__alloc_fail_after(k);
            rc = ins(sl, more[m], 200 + m);
            evs__alloc_fail_after(-1);
            if (rc == 0)
                break;
            cr_assert_eq(rc, EVS_ENOMEM, "\"%s\", k=%ld: got %s", more[m], k, evs_errname(rc));
            cr_assert_eq(evs__sublist_count(sl), count);
            cr_assert_eq(evs__sublist_generation(sl), gen);
            snapshot(sl, after);
            for (size_t i = 0; i < NPROBE; i++)
                cr_assert_str_eq(after[i], before[i], "\"%s\", k=%ld, subject \"%s\"", more[m],
                                 k, probe_subjects[i]);
        }
        cr_assert_eq(rc, 0, "\"%s\" never succeeded", more[m]);
        cr_assert_eq(evs__sublist_count(sl), count + 1);
        /* Every insert here needs at least one allocation except when it
         * joins an existing list with room: k = 0 must have failed for
         * the brand-new patterns. */
        if (m < 2)
            cr_assert_gt(k, 0, "\"%s\" allocated nothing", more[m]);
    }
    EXPECT_MATCH(sl, "a.b", "100,101,102,202,203,204,208");
    evs__sublist_destroy(sl);
}

Test(sublist, failed_match_is_enomem_and_leaves_the_vector)
{
    evs_sublist *sl;
    cr_assert_eq(evs__sublist_create(&sl), 0);
    for (uintptr_t i = 0; i < 40; i++) {
        cr_assert_eq(ins(sl, "a.*", i), 0);
        cr_assert_eq(ins(sl, "a.b", i), 0);
        cr_assert_eq(ins(sl, ">", i), 0);
    }
    insert_branching_chain(sl, "a", 40, 500); /* the walk's stack spills */
    char subj[256];
    size_t dl = repeat(subj, "a", 34, "");
    for (size_t t = 0; t < 2; t++) {
        const char *s = t ? subj : "a.b";
        size_t len = t ? dl : 3;
        int want = t ? 40 + 33 : 121; /* ">" + "a^d.*.>" for d <= 32; all of a.b */
        evs_itemvec v = {0};
        cr_assert_eq(evs__itemvec_push(&v, IT(999)), 0);
        int rc;
        long k;
        for (k = 0;; k++) {
            evs__alloc_fail_after(k);
            rc = evs__sublist_match(sl, s, len, &v);
            evs__alloc_fail_after(-1);
            if (rc >= 0)
                break;
            cr_assert_eq(rc, EVS_ENOMEM, "k=%ld: got %s", k, evs_errname(rc));
            cr_assert_eq(v.n, 1, "the vector keeps what it held");
            cr_assert_eq(v.v[0], IT(999));
        }
        cr_assert_gt(k, 0, "the first allocation failed at least once");
        cr_assert_eq(rc, want);
        cr_assert_eq(v.n, 1 + (size_t)want);
        evs__itemvec_fini(&v);
    }
    evs__sublist_destroy(sl);
}

Test(sublist, failed_create_is_enomem)
{
    for (long k = 0;; k++) {
        evs_sublist *sl = (void *)1;
        evs__alloc_fail_after(k);
        int rc = evs__sublist_create(&sl);
        evs__alloc_fail_after(-1);
        if (rc == 0) {
            evs__sublist_destroy(sl);
            cr_assert_gt(k, 0);
            break;
        }
        cr_assert_eq(rc, EVS_ENOMEM, "got %s", evs_errname(rc));
        cr_assert_null(sl);
    }
    for (long k = 0;; k++) {
        evs_subcache *c = (void *)1;
        evs__alloc_fail_after(k);
        int rc = evs__subcache_create(&c, 4, 0);
        evs__alloc_fail_after(-1);
        if (rc == 0) {
            evs__subcache_destroy(c);
            break;
        }
        cr_assert_eq(rc, EVS_ENOMEM, "got %s", evs_errname(rc));
        cr_assert_null(c);
    }
}

Test(subcache, failed_inserts_are_enomem_and_the_cache_still_answers)
{
    evs_subcache *c;
    cr_assert_eq(evs__subcache_create(&c, 4, 0), 0);
    void *const *it;
    size_t n;
    char key[16];
    for (int round = 0; round < 12; round++) { /* fill, then insert into a full cache */
        int len = snprintf(key, sizeof key, "s%d", round);
        int rc;
        for (long k = 0;; k++) {
            evs__alloc_fail_after(k);
            rc = evs__subcache_insert(c, key, (size_t)len, 1, items3, 3);
            evs__alloc_fail_after(-1);
            if (rc == 0)
                break;
            cr_assert_eq(rc, EVS_ENOMEM, "got %s", evs_errname(rc));
            cr_assert(!evs__subcache_lookup(c, key, (size_t)len, 1, &it, &n));
            cr_assert_leq(evs__subcache_count(c), 4);
        }
        cr_assert(evs__subcache_lookup(c, key, (size_t)len, 1, &it, &n));
        cr_assert_eq(n, 3);
    }
    evs__subcache_destroy(c);
}
