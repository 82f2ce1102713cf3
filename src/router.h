/*
 * The router of a TopicStream: which subscriptions an event's subject
 * reaches. It owns the subscription index (sublist.h), the topic table
 * (topics.h) and the dispatcher's cache of subject -> (topic entry,
 * subscriptions).
 *
 * Every table is bounded (SPEC.md, "Topics"): the topic table by
 * max_topics entries and max_topics x 256 bytes, with idle entries
 * reclaimed every idle/2 by a timer on the heartbeat service thread
 * (heartbeat.h); the route cache by cache_max entries and
 * EVS_SUBCACHE_DEFAULT_BYTES. The index holds what subscribers put in.
 *
 * Locks (see the order in evs_internal.h): `index_lock`, a rwlock, guards
 * the index (subscribe and unsubscribe write, route misses read);
 * `topics_lock`, a mutex, guards the topic table's structure and every
 * entry's subscriber count. The cache belongs to the dispatcher thread
 * alone. No user code runs under either lock.
 *
 * Topic entries are reclaimed while publishers may hold them: a holder
 * is always inside an epoch section (the dispatcher's, an inline
 * publisher's), and a reclaimed entry is unlinked, then made unreachable
 * through the cache (evict_gen), then retired through the epoch.
 */
#ifndef EVS_ROUTER_H
#define EVS_ROUTER_H

#include "sublist.h"
#include "topics.h"

typedef struct evs_router evs_router;

/* Defaults for 0: see evs_stream_opts. */
#define EVS__ROUTER_DEFAULT_MAX_TOPICS 100000u
#define EVS__ROUTER_DEFAULT_IDLE_MS 60000
/* The topic table's byte bound, per max_topics: an entry is about 100
 * bytes plus its subject, so this is an average subject of 150 bytes. */
#define EVS__ROUTER_BYTES_PER_TOPIC 256u

/*
 * cache_max, max_topics, idle_ms: 0 = defaults (65536, 100000, 60000);
 * idle_ms = EVS_TOPIC_IDLE_NEVER: no timed reclaim (the count bounds
 * still hold). Returns 0, EVS_EINVAL (idle_ms below
 * EVS_TOPIC_IDLE_NEVER), EVS_ENOMEM or EVS_ESYSTEM (lock init, the
 * timer thread).
 */
int evs__router_create(evs_router **out, size_t cache_max, size_t max_topics, int idle_ms);
/* Stops the sweep timer (waits for a sweep in progress), then frees.
 * Not from inside a heartbeat-service callback of this router. */
void evs__router_destroy(evs_router *r);

/*
 * Add `sub` under `pattern` (validated by the caller). For a pattern
 * without wildcards, *topic is its topic-table entry (its subscriber
 * count raised, so it is not reclaimed until the matching remove), or
 * NULL if the table is full. Returns 0 or EVS_ENOMEM (no change).
 * Threads: any, serialised by the caller's sub_lock.
 */
int evs__router_add(evs_router *r, const char *pattern, void *sub, evs_topic **topic);

/* Remove what evs__router_add added; `topic` is not used afterwards.
 * Threads: as add. */
void evs__router_remove(evs_router *r, const char *pattern, void *sub, evs_topic *topic);

/*
 * The dispatcher's route: the subscriptions matching `subject` (from the
 * cache, or matched and cached) and its topic entry (NULL when the table
 * has no room). The array is valid until the next call; the entry until
 * the caller's epoch section ends. Returns 0 or EVS_ENOMEM.
 * Threads: the dispatcher only, inside its epoch section.
 */
int evs__router_route_cached(evs_router *r, const char *subject, size_t len,
                             void *const **subs, size_t *n, evs_topic **topic);

/*
 * Route without the cache, appending the matches to `out` (inline
 * delivery: any publishing thread, inside its epoch section, which keeps
 * *topic allocated). Returns 0 or EVS_ENOMEM.
 */
int evs__router_route(evs_router *r, const char *subject, size_t len, evs_itemvec *out,
                      evs_topic **topic);

/*
 * One sweep of the topic table (the timer calls it every idle/2): an
 * entry with no subscribers idle at two sweeps in a row is reclaimed.
 * Returns how many were. Tests call it directly for a deterministic
 * clock. Threads: any thread.
 */
size_t evs__router_sweep(evs_router *r);

/* Publishes to subjects the table had no room for. */
uint64_t evs__router_untracked(evs_router *r);
/* Entries reclaimed so far (idle, or to make room). */
uint64_t evs__router_evicted(evs_router *r);
size_t evs__router_topic_count(evs_router *r);

/* Snapshot the table (subjects copied) and call fn per subject, with no
 * lock held. Returns 0, fn's non-zero value, or EVS_ENOMEM. */
int evs__router_topics(evs_router *r, evs_topic_fn fn, void *user);

#endif /* EVS_ROUTER_H */
