/*
 * A bounded msgpack scanner: validates and walks encoded msgpack without
 * allocating. Pure (bytes in, answers out). Every length and count is
 * checked against the bytes that remain before it is used, and nesting
 * against a depth limit, so hostile input cannot make it read out of
 * bounds, recurse deeply or allocate. The codec runs it over untrusted
 * input before msgpack-c ever sees the bytes.
 */
#ifndef EVS_MPSCAN_H
#define EVS_MPSCAN_H

#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

#include "evstream.h"

/*
 * Check that p[0..len) starts with one complete msgpack object nested at
 * most `max_depth` levels (a scalar is depth 0; [1] is depth 1). Writes
 * its encoded size to *used. Returns 0, EVS_EBADMSG (truncated or the
 * never-used byte 0xc1) or EVS_ETOOBIG (nested deeper than max_depth).
 */
int evs__mp_check(const uint8_t *p, size_t len, unsigned max_depth,
                  size_t *used);

/* A decoded scalar or container header, as read by evs__mp_read. */
typedef struct evs_mpval {
    msgpack_object_type type; /* msgpack-c's type tags */
    union {
        bool     b;
        uint64_t u;  /* POSITIVE_INTEGER */
        int64_t  i;  /* NEGATIVE_INTEGER */
        double   f;  /* FLOAT32 / FLOAT64 */
        struct { const uint8_t *p; uint32_t len; } raw; /* STR, BIN */
        struct { const uint8_t *p; uint32_t len; int8_t type; } ext;
        uint32_t n;  /* ARRAY: elements; MAP: pairs (contents follow) */
    } v;
    size_t size; /* bytes of this header (containers) or whole value */
} evs_mpval;

/*
 * Read the value (or container header) at p[0..len). For arrays and
 * maps only the header is consumed: the elements follow. Returns 0 or
 * EVS_EBADMSG. Does not check that a container's elements are present:
 * run evs__mp_check first on untrusted bytes.
 */
int evs__mp_read(const uint8_t *p, size_t len, evs_mpval *out);

/*
 * In a checked map p[0..len), find the value stored under the string
 * key `key` (klen bytes). Writes the value's encoding to *val and *vlen.
 * Returns 0, EVS_ENOTFOUND, or EVS_EBADMSG (p is not a map).
 */
int evs__mp_map_find(const uint8_t *p, size_t len, const char *key,
                     size_t klen, const uint8_t **val, size_t *vlen);

/* Initialise a msgpack-c packer that appends to `b`. Pack calls return
 * non-zero after an allocation failure (the buffer keeps what fit). */
void evs__mp_packer_init(msgpack_packer *pk, evs_buf *b);

#endif /* EVS_MPSCAN_H */
