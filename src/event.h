/*
 * The event module's private interface: how streams seal and number
 * events, and how the codec builds decoded ones.
 */
#ifndef EVS_EVENT_H
#define EVS_EVENT_H

#include "evstream.h"

/* Everything an event holds, for evs__event_new. */
typedef struct evs_event_parts {
    evs_type       type;
    const char    *type_name; /* custom name or NULL; not validated here */
    size_t         type_name_len;
    const char    *topic;     /* NULL = "" */
    size_t         topic_len;
    evs_content    content;
    const void    *data;
    size_t         len;
    const void    *meta;      /* an encoded map, or NULL for none */
    size_t         meta_len;
    int64_t        timestamp;
    uint64_t       id;        /* non-zero: the event is born published */
} evs_event_parts;

/*
 * Build an event from parts, copying every byte. Checks limits but not
 * content (the codec validates before it calls). Returns 0, EVS_ETOOBIG,
 * or EVS_ENOMEM.
 */
int evs__event_new(evs_event **out, const evs_event_parts *parts);

/*
 * The publishing stream's claim on `ev`: returns true exactly once per
 * event (the first stream to publish it numbers it); false afterwards,
 * and the stream publishes an alias instead. With `add_ref`, a
 * successful claim also adds the stream's reference.
 * An event whose only reference is the caller's cannot be reached by
 * any other thread, so then both are plain stores, not atomic
 * instructions.
 * Threads: any thread, concurrently.
 */
bool evs__event_claim(const evs_event *ev, bool add_ref);

/*
 * A new published event that shares `ev`'s payload (it holds a reference
 * on ev's owner, never copying). Returns NULL on allocation failure. The
 * caller owns the one reference.
 */
evs_event *evs__event_alias(const evs_event *ev);

/* Write the id. Only the stream that claimed the event (or made the
 * alias) calls it, before any other thread can reach the event. */
void evs__event_set_id(const evs_event *ev, uint64_t id);

/* Add n references at once (fan-out). */
void evs__event_ref_n(const evs_event *ev, unsigned n);

#endif /* EVS_EVENT_H */
