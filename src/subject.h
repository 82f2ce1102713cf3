/*
 * Subjects and patterns (SPEC.md, "Subjects"): validation and the plain
 * reference matcher. Pure: no allocation, no state, safe from any thread.
 *
 * A subject is a non-empty string of tokens separated by '.': no empty
 * token, no whitespace (space, \t, \r, \n, \f, \v), no NUL, at most
 * EVS_MAX_TOPIC bytes. A pattern is a subject in which a token that is
 * exactly "*" matches any one token and a last token that is exactly ">"
 * matches one or more trailing tokens. A token that merely contains '*' or
 * '>' ("a*", "x>", "**") is a literal token. A publishable subject has no
 * whole-token '*' or '>'.
 */
#ifndef EVS_SUBJECT_H
#define EVS_SUBJECT_H

#include "evs_internal.h"

#include <stdbool.h>
#include <stddef.h>

/*
 * Is `s[0..len)` a publishable subject (no wildcard tokens)?
 * Returns 0 or EVS_EINVAL (NULL, empty, over EVS_MAX_TOPIC bytes, an empty
 * token, whitespace or NUL, a token that is exactly "*" or ">").
 * Threads: any.
 */
int evs__subject_validate(const char *s, size_t len);

/*
 * Is `p[0..len)` a valid subscription pattern?
 * Returns 0 or EVS_EINVAL (as for subjects, except that a token "*" may
 * stand anywhere and a token ">" may be the last token).
 * Threads: any.
 */
int evs__pattern_validate(const char *p, size_t len);

/*
 * Does a (valid) pattern contain a wildcard token ("*" or ">")? Patterns
 * without one match exactly one subject: themselves.
 * Threads: any.
 */
bool evs__pattern_has_wildcard(const char *p, size_t len);

/*
 * The reference matcher: does subject `subj` match pattern `pat`? Token by
 * token, with no index and no cleverness, so that it is obviously right;
 * the subscription index (sublist.c) is tested against it.
 * Returns false when the subject or the pattern is not valid.
 * Threads: any.
 */
bool evs__subject_matches(const char *subj, size_t slen, const char *pat, size_t plen);

#endif /* EVS_SUBJECT_H */
