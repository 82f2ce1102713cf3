/*
 * The topic table of a TopicStream: the subjects published to or
 * subscribed to exactly, with their counts, for evs_stream_topics.
 *
 * Bounded two ways (SPEC.md, "Topics"):
 *   - at most `max` entries and `max_bytes` bytes of entries. A new
 *     subject that finds the table full reclaims entries with no
 *     subscribers that saw no activity since they were last observed,
 *     in CLOCK order (an approximation of least recently used first),
 *     up to max/16 at once; if none qualifies it is not tracked.
 *   - evs__topics_sweep, called periodically by the router, observes
 *     every entry: one with no subscribers that was idle at two
 *     sweeps in a row is reclaimed. With sweeps every idle/2, an entry
 *     goes between idle and 1.5 x idle after its last activity.
 * "Activity" is a publish (its `published` count moved), creation, or
 * an unsubscribe. An entry with subscribers is never reclaimed.
 *
 * Reclaiming unlinks entries and hands them to the caller as a chain
 * (evs_topic.dead_next); the caller makes them unreachable to every
 * lock-free holder (the route cache) and retires the chain through the
 * epoch (evs__topics_free_chain), because publishers may still be
 * adding to `published` of an entry they routed to. The table shrinks
 * its hash map and slot array as it empties, so the memory goes back.
 *
 * Threads: not thread-safe; the router serialises every call with its
 * topics_lock. Fields of an entry marked below may be touched without
 * it.
 */
#ifndef EVS_TOPICS_H
#define EVS_TOPICS_H

#include "evs_internal.h"

#include <ck_epoch.h>

typedef struct evs_topic {
    /* The key, first: a lookup passes a bare (subject, len) pair. */
    const char *subject; /* NUL-terminated, in this allocation */
    uint32_t    len;     /* subjects are at most 64 KiB (limits.c) */
    /* The table's, under the lock only. */
    uint8_t     idle;    /* sweeps in a row that found it idle */
    bool        touched; /* created or unsubscribed since last observed */
    /* Events routed to this subject. One writer at a time, without the
     * lock: the dispatcher (plain evs_store) or inline publishers
     * (ck_pr_add_64), always inside an epoch section, which is what
     * keeps a reclaimed entry allocated while they finish. Read with
     * evs_load. */
    uint64_t    published;
    /* Live wildcard-free subscriptions to this subject. Changed only
     * under the router's topics_lock (so a sweep never reclaims an
     * entry between a subscriber's lookup and its increment); read with
     * evs_load. */
    uint64_t    subscribers;
    uint64_t    seen;    /* the table's: `published` when last observed */
    struct evs_topic *dead_next;  /* reclaimed chain (see above) */
    ck_epoch_entry_t  epoch_entry; /* the chain's head retires the chain */
} evs_topic;

typedef struct evs_topics evs_topics;

/* Returns 0, EVS_ENOMEM. `max`, `max_bytes` > 0. */
int evs__topics_create(evs_topics **out, size_t max, size_t max_bytes);
/* Frees every linked entry (no holder may remain). NULL is accepted. */
void evs__topics_destroy(evs_topics *t);

/*
 * The entry for `subject`, made if needed. NULL when the table is full
 * and nothing could be reclaimed, or out of memory. Entries reclaimed to
 * make room are prepended to *dead (see above).
 */
evs_topic *evs__topics_get(evs_topics *t, const char *subject, size_t len, evs_topic **dead);

/* One observation of every entry (see above); reclaimed entries are
 * prepended to *dead. Returns how many. Then shrinks the table's
 * storage if it is mostly empty (best effort: no memory, no shrink). */
size_t evs__topics_sweep(evs_topics *t, evs_topic **dead);

/* An unsubscribe happened: counts as activity. */
void evs__topics_touch(evs_topic *e);

size_t evs__topics_count(evs_topics *t);
/* Bytes of entries held (the subjects and their headers). */
size_t evs__topics_bytes(evs_topics *t);

/* Entry i, for i < evs__topics_count (in no particular order). */
evs_topic *evs__topics_at(evs_topics *t, size_t i);

/* Free a reclaimed chain at once (its retire callback, or when no
 * holder can remain). NULL is accepted. */
void evs__topics_free_chain(evs_topic *dead);

#endif /* EVS_TOPICS_H */
