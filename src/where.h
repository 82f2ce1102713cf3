/*
 * The `where` filter compiler and evaluator (private interface).
 *
 * Pure core: compiling takes the expression's bytes and returns a
 * read-only program; evaluating takes the event's parts as bytes (type
 * name, topic, id, data, metadata) and returns a bool. No threads,
 * clocks or sockets, and evaluation never allocates, so it can be fed
 * bytes directly by tests and fuzzers. The public entry points
 * (evs_where_compile, evs_where_match, ...) are declared in evstream.h;
 * SPEC.md, "Filter expressions", defines the language.
 */
#ifndef EVS_WHERE_H
#define EVS_WHERE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "evstream.h"

/* An event as the evaluator sees it: borrowed bytes. */
typedef struct evs_where_input {
    const char    *type_name; /* NUL not required */
    size_t         type_name_len;
    const char    *topic;
    size_t         topic_len;
    uint64_t       id;
    int64_t        timestamp;
    evs_content    content;
    const uint8_t *data; /* one checked msgpack value when content is
                            EVS_CONTENT_MSGPACK; text for EVS_CONTENT_TEXT */
    size_t         len;
    const uint8_t *meta; /* a checked msgpack map, or NULL/0 for none */
    size_t         meta_len;
} evs_where_input;

/*
 * Evaluate `w` over `in`. The msgpack in data and meta must have been
 * checked (evs__mp_check); malformed bytes read as missing values, never
 * out of bounds. Allocates nothing; any thread, concurrently.
 */
bool evs__where_eval(const evs_where *w, const evs_where_input *in);

#endif /* EVS_WHERE_H */
