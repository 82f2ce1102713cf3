/*
 * Subject and pattern rules: validation and the reference matcher.
 *
 * The rules are NATS's (nats-server's IsValidSubject and
 * IsValidPublishSubject in server/sublist.go), with two deliberate
 * tightenings: a vertical tab counts as whitespace and a NUL byte is
 * invalid anywhere (nats-server checks NUL only on some paths). A wildcard
 * is a whole token; any other token is compared byte for byte, so "a*" and
 * "x>" are literal tokens. Pure code: no allocation, no state.
 */
#include "subject.h"

static bool is_bad_byte(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v' ||
           c == '\0';
}

/*
 * One pass over the bytes. `wild`: accept "*" tokens anywhere and a ">"
 * token last. Returns 0 or EVS_EINVAL.
 */
static int validate(const char *s, size_t len, bool wild)
{
    if (s == NULL || len == 0 || len > evs__max_topic())
        return EVS_EINVAL;
    size_t start = 0; /* first byte of the current token */
    for (size_t i = 0; i <= len; i++) {
        if (i < len && s[i] != '.') {
            if (is_bad_byte((unsigned char)s[i]))
                return EVS_EINVAL;
            continue;
        }
        /* Token [start, i) ends here, at a '.' or at the end. */
        size_t tl = i - start;
        if (tl == 0)
            return EVS_EINVAL;
        if (tl == 1 && (s[start] == '*' || s[start] == '>')) {
            if (!wild)
                return EVS_EINVAL;
            if (s[start] == '>' && i != len)
                return EVS_EINVAL; /* '>' must be the last token */
        }
        start = i + 1;
    }
    return 0;
}

int evs__subject_validate(const char *s, size_t len) { return validate(s, len, false); }

int evs__pattern_validate(const char *p, size_t len) { return validate(p, len, true); }

bool evs__pattern_has_wildcard(const char *p, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if ((p[i] == '*' || p[i] == '>') && (i == 0 || p[i - 1] == '.') &&
            (i + 1 == len || p[i + 1] == '.'))
            return true;
    }
    return false;
}

/* The token of s[0..len) starting at *pos; advances *pos past its '.'.
 * Returns false when no token is left. */
static bool next_token(const char *s, size_t len, size_t *pos, const char **tok, size_t *tl)
{
    if (*pos > len)
        return false;
    size_t i = *pos;
    while (i < len && s[i] != '.')
        i++;
    *tok = s + *pos;
    *tl = i - *pos;
    *pos = i + 1; /* len + 1 after the last token */
    return true;
}

bool evs__subject_matches(const char *subj, size_t slen, const char *pat, size_t plen)
{
    if (evs__subject_validate(subj, slen) != 0 || evs__pattern_validate(pat, plen) != 0)
        return false;
    size_t sp = 0, pp = 0;
    const char *st, *pt;
    size_t sl, pl;
    while (next_token(pat, plen, &pp, &pt, &pl)) {
        if (pl == 1 && pt[0] == '>')
            return next_token(subj, slen, &sp, &st, &sl); /* one or more left */
        if (!next_token(subj, slen, &sp, &st, &sl))
            return false; /* the pattern is longer than the subject */
        if (pl == 1 && pt[0] == '*')
            continue;
        if (pl != sl || memcmp(pt, st, pl) != 0)
            return false;
    }
    return sp > slen; /* true only if the subject is used up too */
}
