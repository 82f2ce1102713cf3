/*
 * JSON: rendering msgpack values and events as JSON text, and reading
 * JSON text (with jansson) into msgpack. Pure: bytes in, bytes out.
 */
#ifndef EVS_JSON_H
#define EVS_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "evstream.h"

/* Check that p[0..len) is exactly one JSON value nested at most
 * EVS_MAX_DEPTH deep. Returns 0, EVS_EBADMSG or EVS_ETOOBIG. */
int evs__json_validate(const void *p, size_t len);

/* Parse one JSON value and append it encoded as msgpack. Returns 0,
 * EVS_EBADMSG, EVS_ETOOBIG (too deep) or EVS_ENOMEM; on error `out` is
 * restored to its previous length. */
int evs__json_to_msgpack(const void *p, size_t len, evs_buf *out);

/* Append one msgpack value (already checked with evs__mp_check) as JSON.
 * Returns 0, EVS_EBADMSG or EVS_ENOMEM (out restored on error). */
int evs__mp_to_json(const uint8_t *p, size_t len, evs_buf *out);

/* Length of the well-formed UTF-8 sequence at s[0..n) (n >= 1), or,
 * when it is ill-formed, the negated length of its maximal subpart (at
 * least 1): the bytes one U+FFFD replaces, as the WHATWG UTF-8 decoder
 * does. Shared by the JSON renderer and the SSE codec. */
long evs__utf8_seq(const uint8_t *s, size_t n);

/* Append `s` as a quoted JSON string: RFC 8259 escapes, invalid UTF-8
 * replaced by U+FFFD. Returns 0 or EVS_ENOMEM. */
int evs__json_append_string(evs_buf *out, const void *s, size_t len);

/* Append standard base64 (RFC 4648, with padding). 0 or EVS_ENOMEM. */
int evs__base64_append(evs_buf *out, const void *p, size_t len);

/* Append an RFC 3339 UTC timestamp with nanoseconds
 * ("2026-11-21T17:00:00.000000001Z"). 0 or EVS_ENOMEM. */
int evs__rfc3339_append(evs_buf *out, int64_t ns);

#endif /* EVS_JSON_H */
