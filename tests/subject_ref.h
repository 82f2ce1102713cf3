/*
 * A second, independently written implementation of the subject rules
 * (SPEC.md, "Subjects and patterns"), for checking src/subject.c and the
 * subscription index against: tests/test_subject.c runs it on generated
 * subjects, tests/fuzz/fuzz_subject.c on arbitrary bytes.
 *
 * It is written differently on purpose: the string is first split into
 * an array of tokens (keeping empty ones), the rules are then checked per
 * token, and matching recurses over the two token arrays. No allocation:
 * token arrays are caller-provided and bounded by the input length.
 * Header-only (static functions), needs only <stdbool.h>/<string.h>.
 */
#ifndef EVS_SUBJECT_REF_H
#define EVS_SUBJECT_REF_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

/* One token: s[off .. off + len). */
typedef struct ref_tok {
    size_t off, len;
} ref_tok;

/* Split s[0..len) at every '.', keeping empty tokens ("a..b" is three
 * tokens, "" is one empty token). `toks` has room for len + 1 entries.
 * Returns the number of tokens. */
static inline size_t ref_split(const char *s, size_t len, ref_tok *toks)
{
    size_t n = 0, start = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '.') {
            toks[n].off = start;
            toks[n].len = i - start;
            n++;
            start = i + 1;
        }
    }
    toks[n].off = start;
    toks[n].len = len - start;
    return n + 1;
}

static inline bool ref_tok_is(const char *s, const ref_tok *t, char c)
{
    return t->len == 1 && s[t->off] == c;
}

/*
 * Validity. `wild`: a pattern ("*" tokens anywhere, ">" last). `max` is
 * the longest length allowed. `toks` has room for len + 1 entries.
 */
static inline bool ref_valid(const char *s, size_t len, bool wild, size_t max, ref_tok *toks)
{
    if (s == NULL || len == 0 || len > max)
        return false;
    for (size_t i = 0; i < len; i++) {
        /* strchr would stop at NUL, so test it on its own. */
        if (s[i] == '\0' || memchr(" \t\r\n\f\v", s[i], 6) != NULL)
            return false;
    }
    size_t n = ref_split(s, len, toks);
    for (size_t k = 0; k < n; k++) {
        if (toks[k].len == 0)
            return false;
        if (ref_tok_is(s, &toks[k], '*') && !wild)
            return false;
        if (ref_tok_is(s, &toks[k], '>') && (!wild || k + 1 != n))
            return false;
    }
    return true;
}

static inline bool ref_match_toks(const char *s, const ref_tok *st, size_t sn, const char *p,
                                  const ref_tok *pt, size_t pn)
{
    if (pn == 0)
        return sn == 0;
    if (ref_tok_is(p, &pt[0], '>'))
        return sn >= 1;
    if (sn == 0)
        return false;
    if (!ref_tok_is(p, &pt[0], '*') &&
        (pt[0].len != st[0].len || memcmp(p + pt[0].off, s + st[0].off, pt[0].len) != 0))
        return false;
    return ref_match_toks(s, st + 1, sn - 1, p, pt + 1, pn - 1);
}

/*
 * Does subject s match pattern p? Both must be valid (ref_valid); the
 * arrays have room for slen + 1 and plen + 1 tokens. Recursion depth is
 * at most the number of pattern tokens.
 */
static inline bool ref_match(const char *s, size_t slen, const char *p, size_t plen,
                             ref_tok *stoks, ref_tok *ptoks)
{
    size_t sn = ref_split(s, slen, stoks);
    size_t pn = ref_split(p, plen, ptoks);
    return ref_match_toks(s, stoks, sn, p, ptoks, pn);
}

/* Does a valid pattern have a token that is exactly "*" or ">"? */
static inline bool ref_has_wildcard(const char *p, size_t plen, ref_tok *toks)
{
    size_t n = ref_split(p, plen, toks);
    for (size_t k = 0; k < n; k++)
        if (ref_tok_is(p, &toks[k], '*') || ref_tok_is(p, &toks[k], '>'))
            return true;
    return false;
}

#endif /* EVS_SUBJECT_REF_H */
