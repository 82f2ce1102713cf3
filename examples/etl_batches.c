/*
 * ETL in batches: extract events from a stream, batch them by 1000, and
 * hand each batch to a loader (here it checks and counts rows; a real
 * one would write them to a database in one transaction).
 *
 * The batcher hands a batch over when it holds 1000 events or a second
 * after its first event, whichever comes first; evs_batch_stop hands
 * over the remainder, so every event is loaded exactly once.
 */
#include <evstream.h>

#include <inttypes.h>
#include <stdio.h>

#define ROWS 10500

typedef struct loader {
    int      batches;
    uint64_t rows;
    uint64_t next_id; /* batches arrive in id order, none skipped */
    int64_t  total;
    int      gaps;
} loader;

/* Transform and load one batch. Runs on the stream's dispatcher (a size
 * flush), on the timer thread (a time flush), or in evs_batch_stop. */
static int load_batch(const evs_event *const *evs, size_t n, void *user)
{
    loader *l = user;
    for (size_t i = 0; i < n; i++) {
        if (evs_event_id(evs[i]) != l->next_id)
            l->gaps++;
        l->next_id = evs_event_id(evs[i]) + 1;
        int64_t qty = 0;
        evs_event_meta_get_i64(evs[i], "qty", &qty);
        l->total += qty;
    }
    l->rows += n;
    printf("loaded batch %d: %zu rows (ids %" PRIu64 "-%" PRIu64 ")\n", ++l->batches, n,
           evs_event_id(evs[0]), evs_event_id(evs[n - 1]));
    return 0;
}

int main(void)
{
    evs_stream *s;
    evs_batcher *b = NULL;
    loader l = {.next_id = 1};
    int rc;
    if ((rc = evs_stream_create(&s, NULL)) != 0) {
        fprintf(stderr, "create: %s\n", evs_strerror(rc));
        return 1;
    }
    evs_batch_opts bo = {.max_events = 1000, .flush_ms = 1000};
    if ((rc = evs_batch_subscribe(&b, s, NULL, load_batch, NULL, &l, &bo)) != 0)
        goto out;
    /* Extract: rows arrive as events with their fields as metadata. */
    for (int i = 0; i < ROWS; i++) {
        evs_event *ev;
        if ((rc = evs_event_create(&ev, EVS_TYPE_MESSAGE, "sales", NULL, 0)) != 0)
            goto out;
        if ((rc = evs_event_meta_set_i64(ev, "qty", i % 10)) != 0) {
            evs_event_unref(ev);
            goto out;
        }
        if ((rc = evs_stream_publish_move(s, ev, NULL)) != 0)
            goto out;
    }
    rc = evs_batch_stop(b); /* waits for delivery, then loads the last 500 */
    b = NULL;
    printf("loaded %" PRIu64 " rows in %d batches, qty total %" PRId64 ", gaps %d\n", l.rows,
           l.batches, l.total, l.gaps);
out:
    if (rc != 0)
        fprintf(stderr, "etl: %s\n", evs_strerror(rc));
    evs_batch_stop(b);
    evs_stream_destroy(s);
    return rc == 0 && l.rows == ROWS && l.gaps == 0 ? 0 : 1;
}
