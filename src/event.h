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

/* Event data is aligned to this many bytes (max_align_t on x86-64). */
#define EVS_DATA_ALIGN 16

/* Bytes from an event's topic to its data: the topic, its NUL, padding
 * up to EVS_DATA_ALIGN. */
size_t evs__event_data_offset(size_t tlen);

/*
 * Slot events: events stored in a stream's ring slots (evs_stream_claim).
 * A slot is `stride` bytes: the event header, then up to slot_bytes of
 * topic, NUL, padding to EVS_DATA_ALIGN and data. evs_event_ref on a slot event returns a heap copy
 * and evs_event_unref ignores it: the slot is reused once delivered.
 */
size_t evs__event_slot_stride(size_t slot_bytes);

/* (Re)initialise the slot at `mem` (zeroed once at stream creation) as an
 * unpublished event with the given id and timestamp, copying the topic and leaving `len`
 * data bytes for the caller at *data. The caller checks that
 * evs__event_data_offset(tlen) + len <= slot_bytes. Frees what the slot's previous event
 * held (type name, metadata). */
evs_event *evs__event_slot_fill(void *mem, size_t slot_bytes, evs_type type,
                                const char *topic, size_t tlen, size_t len,
                                uint64_t id, int64_t timestamp, void **data);

/* Free what the slot's event holds (stream destroy). */
void evs__event_slot_fini(void *mem);

bool evs__event_is_slot(const evs_event *ev);

/* Mark a claimed slot event published (immutable). False if `ev` is not a
 * claimed, uncommitted slot event. */
bool evs__event_slot_commit(evs_event *ev);

#endif /* EVS_EVENT_H */
