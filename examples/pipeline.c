/*
 * A pipeline: orders flow through filter -> map -> batch -> sink.
 *
 *   orders (TopicStream) --where country == "US"--> add tax (map)
 *       --> taxed (stream) --> batches of 10 --> print one line a batch
 *
 * The processor runs on the orders stream's dispatcher thread; the
 * batcher on the taxed stream's. Stopping in source-to-sink order, each
 * after a flush, hands every order on before the program ends.
 */
#include <evstream.h>

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* Map: replace the order by one whose metadata holds amount_with_tax. */
static int add_tax(const evs_event *in, evs_event **out, void *user)
{
    (void)user;
    int64_t cents;
    int rc = evs_event_meta_get_i64(in, "cents", &cents);
    if (rc != 0)
        return rc; /* reported to on_error; the order is dropped */
    evs_event *ev;
    if ((rc = evs_event_create(&ev, EVS_TYPE_MESSAGE, evs_event_topic(in), NULL, 0)) != 0)
        return rc;
    if ((rc = evs_event_meta_set_i64(ev, "cents", cents)) != 0 ||
        (rc = evs_event_meta_set_i64(ev, "with_tax", cents + cents * 8 / 100)) != 0) {
        evs_event_unref(ev);
        return rc;
    }
    *out = ev;
    return 0;
}

/* Sink of the batcher: one line per batch. */
static int print_batch(const evs_event *const *evs, size_t n, void *user)
{
    int *batches = user;
    int64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t v = 0;
        evs_event_meta_get_i64(evs[i], "with_tax", &v);
        total += v;
    }
    printf("batch %d: %zu orders, %" PRId64 " cents with tax\n", ++*batches, n, total);
    return 0;
}

static void on_stage_error(const char *stage, size_t index, const evs_event *ev, int code,
                           void *user)
{
    (void)user;
    printf("stage %s (#%zu) failed on order %" PRIu64 ": %s\n", stage, index,
           evs_event_id(ev), evs_strerror(code));
}

int main(void)
{
    evs_stream *orders = NULL, *taxed = NULL;
    evs_processor *proc = NULL;
    evs_batcher *batcher = NULL;
    evs_where *us = NULL;
    int batches = 0, rc;
    evs_where_error err;

    evs_stream_opts topics = {.topics = true};
    if ((rc = evs_stream_create(&orders, &topics)) != 0 ||
        (rc = evs_stream_create(&taxed, NULL)) != 0)
        goto fail;
    const char *expr = "metadata[\"country\"] == \"US\"";
    if ((rc = evs_where_compile(&us, expr, strlen(expr), &err)) != 0) {
        fprintf(stderr, "where: %s at %zu\n", err.msg, err.pos);
        goto fail;
    }
    evs_processor_opts po = {.pattern = "orders.>", .on_error = on_stage_error};
    if ((rc = evs_processor_create(&proc, orders, &po)) != 0 ||
        (rc = evs_processor_filter(proc, "us-only", evs_where_filter, us)) != 0 ||
        (rc = evs_processor_map(proc, "add-tax", add_tax, NULL)) != 0 ||
        (rc = evs_processor_sink(proc, taxed)) != 0)
        goto fail;
    evs_batch_opts bo = {.max_events = 10, .flush_ms = 60000};
    if ((rc = evs_batch_subscribe(&batcher, taxed, NULL, print_batch, NULL, &batches, &bo)) != 0 ||
        (rc = evs_processor_start(proc)) != 0)
        goto fail;

    /* 100 orders, every other one from the US; order 99 has no amount. */
    for (int i = 0; i < 100; i++) {
        evs_event *ev;
        if ((rc = evs_event_create(&ev, EVS_TYPE_MESSAGE, "orders.web", NULL, 0)) != 0)
            goto fail;
        evs_event_meta_set_str(ev, "country", i % 2 ? "US" : "DE");
        if (i != 99)
            evs_event_meta_set_i64(ev, "cents", 1000 + i);
        if ((rc = evs_stream_publish_move(orders, ev, NULL)) != 0)
            goto fail;
    }

    /* Drain source to sink: every order reaches its batch. */
    evs_stream_flush(orders, EVS_FOREVER, NULL);
    evs_processor_stop(proc);
    evs_stream_flush(taxed, EVS_FOREVER, NULL);
    evs_batch_stop(batcher); /* hands over the last, partial batch */
    batcher = NULL;

    evs_processor_stats st;
    evs_processor_stats_get(proc, &st);
    printf("received=%" PRIu64 " emitted=%" PRIu64 " dropped=%" PRIu64 " errors=%" PRIu64 "\n",
           st.received, st.emitted, st.dropped, st.errors);
    rc = 0;
fail:
    if (rc != 0)
        fprintf(stderr, "pipeline: %s\n", evs_strerror(rc));
    evs_batch_stop(batcher);
    evs_processor_destroy(proc);
    evs_where_destroy(us);
    evs_stream_destroy(orders);
    evs_stream_destroy(taxed);
    return rc == 0 ? 0 : 1;
}
