/*
 * The router of a TopicStream: which subscriptions an event's subject
 * reaches. It owns the subscription index (sublist.h), the topic table
 * (topics.h) and the dispatcher's cache of subject -> subscriptions.
 *
 * Locks (see the order in evs_internal.h): `index_lock`, a rwlock, guards
 * the index (subscribe and unsubscribe write, route misses read);
 * `topics_lock`, a mutex, guards the topic table's structure. The cache
 * belongs to the dispatcher thread alone. No user code runs under either
 * lock.
 */
#ifndef EVS_ROUTER_H
#define EVS_ROUTER_H

#include "sublist.h"
#include "topics.h"

typedef struct evs_router evs_router;

/* cache_max, max_topics: 0 = defaults (65536, 100000). Returns 0,
 * EVS_ENOMEM or EVS_ESYSTEM (lock init). */
int evs__router_create(evs_router **out, size_t cache_max, size_t max_topics);
void evs__router_destroy(evs_router *r);

/*
 * Add `sub` under `pattern` (validated by the caller). For a pattern
 * without wildcards, *topic is its topic-table entry (its subscriber
 * count raised), or NULL if the table is full. Returns 0 or EVS_ENOMEM
 * (no change). Threads: any, serialised by the caller's sub_lock.
 */
int evs__router_add(evs_router *r, const char *pattern, void *sub, evs_topic **topic);

/* Remove what evs__router_add added. Threads: as add. */
void evs__router_remove(evs_router *r, const char *pattern, void *sub, evs_topic *topic);

/*
 * The dispatcher's route: the subscriptions matching `subject` (from the
 * cache, or matched and cached) and its topic entry (NULL past
 * max_topics). The array is valid until the next call. Returns 0 or
 * EVS_ENOMEM. Threads: the dispatcher only.
 */
int evs__router_route_cached(evs_router *r, const char *subject, size_t len,
                             void *const **subs, size_t *n, evs_topic **topic);

/*
 * Route without the cache, appending the matches to `out` (inline
 * delivery: any publishing thread). Returns 0 or EVS_ENOMEM.
 */
int evs__router_route(evs_router *r, const char *subject, size_t len, evs_itemvec *out,
                      evs_topic **topic);

/* Publishes to subjects the table had no room for. */
uint64_t evs__router_untracked(evs_router *r);
size_t evs__router_topic_count(evs_router *r);

/* Snapshot the table and call fn per subject, with no lock held.
 * Returns 0, fn's non-zero value, or EVS_ENOMEM. */
int evs__router_topics(evs_router *r, evs_topic_fn fn, void *user);

#endif /* EVS_ROUTER_H */
