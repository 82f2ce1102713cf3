/*
 * Safe memory reclamation for lock-free readers: one process-wide
 * ck_epoch, one record per thread that reads or retires (registered on
 * first use, recycled when the thread exits: records are never freed).
 *
 * Readers bracket their reads with evs__epoch_begin/end. Writers unlink
 * a node first, so no new reader can reach it, and then retire it; the
 * free runs once every reader that could have seen it has left its
 * section.
 */
#ifndef EVS_EPOCH_H
#define EVS_EPOCH_H

#include <ck_epoch.h>

/* The calling thread's record, or NULL if it could not be allocated. */
ck_epoch_record_t *evs__epoch_record(void);

/* A record owned by the caller rather than by a thread (a stream's
 * dispatcher takes one at create so failure is reported there). Use it
 * for read sections only, one thread at a time; give it back with
 * evs__epoch_record_release. NULL on allocation failure. */
ck_epoch_record_t *evs__epoch_record_new(void);
void evs__epoch_record_release(ck_epoch_record_t *r);

/* Enter/leave a read section (nestable). */
void evs__epoch_begin(ck_epoch_record_t *r, ck_epoch_section_t *s);
void evs__epoch_end(ck_epoch_record_t *r, ck_epoch_section_t *s);

/*
 * Free `entry`'s owner with `fn` once no reader can hold it. Retires
 * through the calling thread's record (or, if the thread has none and
 * none can be allocated, a shared fallback record under a mutex) and
 * reclaims what is already due. Never waits, so it is safe inside a
 * read section (for example from a handler).
 */
void evs__epoch_retire(ck_epoch_entry_t *entry, ck_epoch_cb_t *fn);

/*
 * Every retire callback calls this first. Under ThreadSanitizer it
 * tells TSan that the free comes after every read section that ended
 * before it (ck_epoch's grace period is invisible to TSan, which would
 * otherwise report each reclaimed object as a race). Elsewhere it does
 * nothing.
 */
void evs__epoch_reclaiming(void);

/*
 * Run the frees that are due: the calling thread's, the fallback
 * record's, and those left on the records of threads that have exited
 * (orphans, unregistered once empty). Polls a few times, never waits
 * for a reader. evs_stream_destroy calls it, so a stream's pool workers
 * that exited with frees pending do not keep them past the stream.
 */
void evs__epoch_reap(void);

/* Test hook: exited threads' records that still have frees pending. */
size_t evs__epoch_orphans(void);


#endif /* EVS_EPOCH_H */
