/*
 * evstream variants for the rate scenarios: the ways a user can hand
 * events to a stream, each measured as its own row.
 *
 * A variant is a publish function, which hands over one event made from
 * `buf` (len bytes, the header already written), and the stream options
 * it needs. scn_stream_rate (scn_stream.c) creates the stream from the
 * variant's options (overflow and wait are set by the scenario:
 * EVS_OVERFLOW_BLOCK and its wait strategy) and calls the function once
 * per event from each publisher thread.
 *
 * Adding a variant: write its publish function in scn_stream.c, declare
 * it and its scn_variant below, and give it one line in the variant
 * lists at the top of scenarios.c.
 */
#ifndef EVS_BENCH_SCN_STREAM_H
#define EVS_BENCH_SCN_STREAM_H

#include <evstream.h>

#include <stddef.h>

/* Hand over one event; returns 0 or an EVS_E* code. */
typedef int (*scn_publish_fn)(evs_stream *s, const void *buf, size_t len);

/* opts.single_publisher variants refuse scenarios with two publishers. */
typedef struct scn_variant {
    scn_publish_fn  publish;
    evs_stream_opts opts; /* overflow and wait are overwritten */
} scn_variant;

/* evs_event_create, evs_stream_publish, evs_event_unref; default options. */
int scn_publish_copy(evs_stream *s, const void *buf, size_t len);
extern const scn_variant scn_v_publish;

/* evs_event_create, evs_stream_publish_move; single_publisher = true. */
int scn_publish_move(evs_stream *s, const void *buf, size_t len);
extern const scn_variant scn_v_move;
/* As scn_v_move with history = EVS_HISTORY_NONE (large payloads). */
extern const scn_variant scn_v_move_nohist;

/* evs_stream_claim, memcpy into the slot, evs_stream_commit: the
 * zero-allocation path (single publisher, slot storage for up to 1 KiB,
 * no history, coarse timestamps). */
int scn_publish_claim(evs_stream *s, const void *buf, size_t len);
extern const scn_variant scn_v_claim;

#endif /* EVS_BENCH_SCN_STREAM_H */
