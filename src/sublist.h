/*
 * The subscription index (sublist) and the subject -> result cache
 * (subcache) that TopicStream routes with (SPEC.md, "Subjects").
 *
 * The index maps patterns to opaque items (the caller's subscription
 * pointers). Patterns without wildcards live in a hash table keyed by the
 * whole subject; patterns with a wildcard live in a token tree, one level
 * per token: literal children in a hash table keyed by token, one '*'
 * child and one list of '>' items. A match is one hash lookup plus a walk
 * of the tree: O(tokens) plus the size of the result (more only where '*'
 * branches), never a scan of all items.
 *
 * Semantics are per insertion: the index is a multiset of (pattern, item)
 * pairs. Inserting the same pair twice stores it twice, a match returns it
 * twice, and each remove takes one copy away. An item inserted under two
 * patterns that both match a subject is returned twice, once for each.
 *
 * Threads: neither structure is thread-safe. The sublist's caller
 * serialises insert, remove and match (one mutex);
 * evs__sublist_generation alone may be read without it. A subcache is
 * owned by one thread.
 */
#ifndef EVS_SUBLIST_H
#define EVS_SUBLIST_H

#include "evs_internal.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A growable array of items. Zero-initialised = empty. */
typedef struct evs_itemvec {
    void **v;   /* v[0..n) are the items */
    size_t n;   /* items held */
    size_t cap; /* slots allocated */
} evs_itemvec;

/* Append one item. Returns 0 or EVS_ENOMEM (vec unchanged). */
int evs__itemvec_push(evs_itemvec *vec, void *item);
/* Free the storage and leave the vector empty (reusable). */
void evs__itemvec_fini(evs_itemvec *vec);

typedef struct evs_sublist evs_sublist;

/*
 * Create an empty index. Returns 0 or EVS_ENOMEM (*out = NULL then).
 * Ownership: the caller destroys *out.
 */
int evs__sublist_create(evs_sublist **out);

/* Free the index. Items are the caller's and are not touched. NULL is
 * accepted. */
void evs__sublist_destroy(evs_sublist *sl);

/*
 * Add the pair (pattern, item). The item may be any pointer, NULL too.
 * Returns 0, EVS_EINVAL (NULL sl, pattern not valid by
 * evs__pattern_validate) or EVS_ENOMEM. A failure changes nothing.
 * Ownership: copies the pattern; stores `item` without touching it.
 */
int evs__sublist_insert(evs_sublist *sl, const char *pattern, size_t len, void *item);

/*
 * Remove one copy of the pair (pattern, item). Never allocates. Costs
 * O(tokens) plus a scan of the items stored under that same pattern.
 * Returns 0, EVS_EINVAL (NULL sl, invalid pattern) or EVS_ENOTFOUND (no
 * such pair; nothing changes).
 */
int evs__sublist_remove(evs_sublist *sl, const char *pattern, size_t len, void *item);

/*
 * Append to `out` every item whose pattern matches `subject`, once per
 * matching insertion, in no particular order.
 * Returns the number appended (>= 0), EVS_EINVAL (NULL argument, subject
 * not valid by evs__subject_validate) or EVS_ENOMEM (out unchanged).
 */
int evs__sublist_match(const evs_sublist *sl, const char *subject, size_t len, evs_itemvec *out);

/* Live (pattern, item) pairs. `sl` must not be NULL. */
size_t evs__sublist_count(const evs_sublist *sl);

/*
 * A number that every successful insert and remove increases: a result
 * computed at generation g is current while the generation is still g.
 * Threads: may be read without the caller's lock (an acquire load; the
 * increment is a release store after the change).
 */
uint64_t evs__sublist_generation(const evs_sublist *sl);

/*
 * The cache: subject -> the result of evs__sublist_match, each stamped
 * with the generation it was computed at. A lookup hits only when the
 * stamp equals the generation the caller passes, so any insert or remove
 * invalidates every entry at once without touching them. At most
 * max_entries subjects and max_bytes bytes are kept; when full, an
 * insert evicts entries chosen by CLOCK (stale entries first, then ones
 * not hit since the hand last passed). A cache serves one sublist for its whole life
 * (generations of different sublists are not comparable).
 *
 * Cost: a hit is one hash of the subject and one table probe, with no
 * allocation. A lookup never reads the sublist, so a reader may check the
 * cache with evs__sublist_generation and take the sublist's lock only on
 * a miss; what it then does with items that a concurrent remove may
 * retire is its own affair (the stream's epoch rules).
 */
typedef struct evs_subcache evs_subcache;

/* Entries kept when max_entries is 0: room for a large working set of
 * subjects at about 100 bytes each plus their results. */
#define EVS_SUBCACHE_DEFAULT_MAX 65536u
/* Bytes of entries kept when max_bytes is 0: the default entry count at
 * about 256 bytes each (a subject and a few subscriptions). A result
 * over max_bytes / 64 (here 256 KiB, 32,000 subscriptions) is never
 * cached, so one huge fan-out cannot empty the cache. */
#define EVS_SUBCACHE_DEFAULT_BYTES ((size_t)16 << 20)
/* max_bytes limits: at least one longest subject per entry; the per-entry
 * bound (max_bytes / 64) fits in 32 bits. */
#define EVS_SUBCACHE_MIN_BYTES ((size_t)1 << 20)
#define EVS_SUBCACHE_MAX_BYTES ((size_t)1 << 38)

/*
 * Create an empty cache of at most `max_entries` subjects and
 * `max_bytes` bytes of entries (header, subject and results; 0 = the
 * defaults). The hash map and slot array add at most 24 bytes per entry
 * on top. Returns 0, EVS_EINVAL (out NULL, max_entries over 2^30,
 * max_bytes outside [EVS_SUBCACHE_MIN_BYTES, EVS_SUBCACHE_MAX_BYTES])
 * or EVS_ENOMEM (*out = NULL then).
 */
int evs__subcache_create(evs_subcache **out, size_t max_entries, size_t max_bytes);

/* Free the cache (not the items). NULL is accepted. */
void evs__subcache_destroy(evs_subcache *c);

/*
 * Look `subject` (not NULL) up. On a hit (an entry stamped `gen`) returns true with
 * *items and *n set; the array is the cache's and stays valid until the
 * next insert, clear or destroy on this cache. On a miss returns false.
 */
bool evs__subcache_lookup(evs_subcache *c, const char *subject, size_t len, uint64_t gen,
                          void *const **items, size_t *n);

/*
 * Store a copy of items[0..n) for `subject`, stamped `gen`, replacing an
 * entry for the same subject and evicting others when full (by count or
 * by bytes).
 * Returns 0, EVS_EINVAL (NULL c or subject, NULL items with n > 0, len
 * over EVS_MAX_TOPIC) or EVS_ENOMEM (out of memory, or the entry would
 * be over max_bytes / 64: the subject is then not cached and lookups
 * answer as before, except that a full cache may have evicted other
 * entries).
 */
int evs__subcache_insert(evs_subcache *c, const char *subject, size_t len, uint64_t gen,
                         void *const *items, size_t n);

/*
 * The usual path: a hit, or a match in `sl` stored in the cache. Sets
 * *items and *n as for a lookup (valid until the next call on `c`).
 * `scratch` is the caller's reusable buffer for the match; it is emptied
 * first. Returns 0, EVS_EINVAL (invalid subject) or EVS_ENOMEM (nothing
 * set). The caller holds the sublist's lock across this call.
 */
int evs__subcache_match(evs_subcache *c, const evs_sublist *sl, const char *subject,
                        size_t len, evs_itemvec *scratch, void *const **items, size_t *n);

/* Drop every entry and give the storage back (the map and the slot
 * array shrink to their initial size). */
void evs__subcache_clear(evs_subcache *c);

/* Entries held (stale ones included). */
size_t evs__subcache_count(const evs_subcache *c);
/* Bytes of entries held: at most max_bytes. */
size_t evs__subcache_bytes(const evs_subcache *c);

#endif /* EVS_SUBLIST_H */
