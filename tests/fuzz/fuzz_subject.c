/*
 * Fuzz subject and pattern validation and matching against the plain
 * reference in tests/subject_ref.h (written independently of
 * src/subject.c), and the subscription index and its cache against both.
 *
 * Input: one configuration byte, the topic limit (0: the default), then
 * length-prefixed strings: the subject, then up to 8 patterns.
 * Properties:
 *   - evs__subject_validate / evs__pattern_validate agree with the
 *     reference on every byte string, under any topic limit;
 *   - evs__subject_matches agrees with the reference matcher (and is
 *     false when either side is invalid); evs__pattern_has_wildcard too;
 *   - the sublist holding the patterns returns, for the subject, exactly
 *     the patterns the reference matches (a multiset: duplicates count),
 *     before and after removing some; invalid ones are refused with
 *     EVS_EINVAL; the subject cache answers the same and never serves a
 *     result from an older generation.
 * Seeds: tests/fuzz/corpus/subject/.
 */
#include "../subject_ref.h"
#include "fuzz_common.h"
#include "subject.h"
#include "sublist.h"

#define NPAT 8

typedef struct str {
    const char *p;
    size_t n;
} str;

/* items[] holds indexes + 1; count how often `want` appears. */
static size_t count_item(void *const *items, size_t n, uintptr_t want)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += (uintptr_t)items[i] == want;
    return c;
}

static void check_index(const evs_sublist *sl, evs_subcache *cache, const str *subj,
                        bool subj_ok, const str *pats, const bool *present, const bool *expect)
{
    evs_itemvec v = {0};
    int rc = evs__sublist_match(sl, subj->p, subj->n, &v);
    if (!subj_ok) {
        FUZZ_CHECK(rc == EVS_EINVAL, "invalid subject matched: %s", evs_errname(rc));
        evs__itemvec_fini(&v);
        return;
    }
    FUZZ_CHECK(rc >= 0 && (size_t)rc == v.n, "match: %s", evs_errname(rc));
    size_t want_total = 0;
    for (int i = 0; i < NPAT; i++) {
        size_t want = present[i] && expect[i];
        want_total += want;
        FUZZ_CHECK(count_item(v.v, v.n, (uintptr_t)i + 1) == want,
                   "pattern %d (%.*s): index says %zu, reference %zu", i, (int)pats[i].n,
                   pats[i].p, count_item(v.v, v.n, (uintptr_t)i + 1), want);
    }
    FUZZ_CHECK(v.n == want_total, "index returned extra items");

    void *const *items;
    size_t n;
    evs_itemvec scratch = {0};
    rc = evs__subcache_match(cache, sl, subj->p, subj->n, &scratch, &items, &n);
    FUZZ_CHECK(rc == 0, "cache match: %s", evs_errname(rc));
    FUZZ_CHECK(n == v.n, "cache: %zu items, index %zu", n, v.n);
    for (int i = 0; i < NPAT; i++)
        FUZZ_CHECK(count_item(items, n, (uintptr_t)i + 1) == count_item(v.v, v.n, (uintptr_t)i + 1),
                   "cache differs for pattern %d", i);
    evs__itemvec_fini(&scratch);
    evs__itemvec_fini(&v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_in in = {data, size};
    uint8_t cfg = fuzz_u8(&in);
    /* The topic limit (evs_limits_set): 0 = the default, else 1..255. */
    uint8_t lim = fuzz_u8(&in);
    size_t max = lim ? lim : EVS_MAX_TOPIC;
    evs_limits limits = {.max_topic = lim};
    FUZZ_CHECK(evs_limits_set(&limits) == 0, "limits");

    str subj, pats[NPAT];
    subj.p = (const char *)fuzz_bytes(&in, 255, &subj.n);
    int npat = 0;
    while (npat < NPAT && in.n > 0) {
        pats[npat].p = (const char *)fuzz_bytes(&in, 255, &pats[npat].n);
        npat++;
    }
    for (int i = npat; i < NPAT; i++)
        pats[i] = (str){"", 0};

    ref_tok st[257], pt[257];
    bool subj_ok = ref_valid(subj.p, subj.n, false, max, st);
    FUZZ_CHECK((evs__subject_validate(subj.p, subj.n) == 0) == subj_ok, "subject validity");
    FUZZ_CHECK((evs__pattern_validate(subj.p, subj.n) == 0) == ref_valid(subj.p, subj.n, true, max, st),
               "subject as pattern validity");

    bool pat_ok[NPAT], expect[NPAT], present[NPAT] = {0};
    for (int i = 0; i < NPAT; i++) {
        const str *p = &pats[i];
        pat_ok[i] = ref_valid(p->p, p->n, true, max, pt);
        FUZZ_CHECK((evs__pattern_validate(p->p, p->n) == 0) == pat_ok[i], "pattern %d validity", i);
        FUZZ_CHECK((evs__subject_validate(p->p, p->n) == 0) == ref_valid(p->p, p->n, false, max, pt),
                   "pattern %d as subject validity", i);
        expect[i] = subj_ok && pat_ok[i] && ref_match(subj.p, subj.n, p->p, p->n, st, pt);
        FUZZ_CHECK(evs__subject_matches(subj.p, subj.n, p->p, p->n) == expect[i],
                   "match \"%.*s\" against \"%.*s\": reference says %d", (int)subj.n, subj.p,
                   (int)p->n, p->p, expect[i]);
        if (pat_ok[i])
            FUZZ_CHECK(evs__pattern_has_wildcard(p->p, p->n) == ref_has_wildcard(p->p, p->n, pt),
                       "has_wildcard %d", i);
    }

    /* The index and the cache, against the reference. */
    evs_sublist *sl;
    evs_subcache *cache;
    if (evs__sublist_create(&sl) != 0)
        return 0;
    if (evs__subcache_create(&cache, 1 + (cfg & 3), 0) != 0) {
        evs__sublist_destroy(sl);
        return 0;
    }
    for (int i = 0; i < npat; i++) {
        int rc = evs__sublist_insert(sl, pats[i].p, pats[i].n, (void *)((uintptr_t)i + 1));
        if (!pat_ok[i]) {
            FUZZ_CHECK(rc == EVS_EINVAL, "invalid pattern %d inserted: %s", i, evs_errname(rc));
            continue;
        }
        FUZZ_CHECK(rc == 0 || rc == EVS_ENOMEM, "insert %d: %s", i, evs_errname(rc));
        present[i] = rc == 0;
    }
    check_index(sl, cache, &subj, subj_ok, pats, present, expect);
    /* Remove the patterns the configuration picks; a stale cache entry
     * must not be served. */
    for (int i = 0; i < npat; i++) {
        if (!present[i] || !((cfg >> 2) & (1u << (i % 6))))
            continue;
        int rc = evs__sublist_remove(sl, pats[i].p, pats[i].n, (void *)((uintptr_t)i + 1));
        FUZZ_CHECK(rc == 0, "remove %d: %s", i, evs_errname(rc));
        present[i] = false;
        rc = evs__sublist_remove(sl, pats[i].p, pats[i].n, (void *)((uintptr_t)i + 1));
        FUZZ_CHECK(rc == EVS_ENOTFOUND, "second remove %d: %s", i, evs_errname(rc));
    }
    check_index(sl, cache, &subj, subj_ok, pats, present, expect);
    size_t live = 0;
    for (int i = 0; i < NPAT; i++)
        live += present[i];
    FUZZ_CHECK(evs__sublist_count(sl) == live, "count");
    evs__subcache_destroy(cache);
    evs__sublist_destroy(sl);
    return 0;
}
