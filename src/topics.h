/*
 * The topic table of a TopicStream: every subject that was published to
 * or subscribed to exactly, with its counts, for evs_stream_topics. At
 * most `max` subjects are kept; the table only grows while the stream
 * lives (subjects are few compared with events, and a bound stops a
 * publisher that invents subjects from exhausting memory).
 *
 * Threads: not thread-safe; the stream serialises calls with its topic
 * lock. An entry's counters may be read and written without it through
 * evs_load/evs_store (one writer each: the dispatcher for `published`,
 * subscribers under the stream's subscription lock for `subscribers`).
 * Entries stay allocated until the table is destroyed.
 */
#ifndef EVS_TOPICS_H
#define EVS_TOPICS_H

#include "evs_internal.h"

typedef struct evs_topic {
    const char *subject; /* NUL-terminated, in this allocation */
    size_t      len;
    uint64_t    published;
    uint64_t    subscribers;
} evs_topic;

typedef struct evs_topics evs_topics;

/* Returns 0, EVS_ENOMEM. `max` = 0 means no bound. */
int evs__topics_create(evs_topics **out, size_t max);
void evs__topics_destroy(evs_topics *t);

/* The entry for `subject`, made if needed. NULL when the table is full
 * (*full set) or out of memory (*full clear). */
evs_topic *evs__topics_get(evs_topics *t, const char *subject, size_t len, bool *full);

size_t evs__topics_count(evs_topics *t);

/* Copy up to `max` entry pointers into out[]; returns how many. */
size_t evs__topics_list(evs_topics *t, evs_topic **out, size_t max);

#endif /* EVS_TOPICS_H */
