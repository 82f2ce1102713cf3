/*
 * The demo `make run` starts: a stream, two subscribers, a handful of
 * events in the spirit of create_event(data, type, **metadata), and what
 * each subscriber received, printed as JSON lines.
 */
#include <evstream.h>

#include <stdio.h>
#include <string.h>

/* Print every event as one JSON line. */
static int print_json(const evs_event *ev, void *user)
{
    evs_buf *line = user;
    evs_buf_reset(line);
    int rc = evs_event_to_json(ev, line);
    if (rc != 0)
        return rc;
    printf("subscriber A got %s\n", line->data);
    return 0;
}

/* Let only purchases from the EU through. */
static bool eu_purchases(const evs_event *ev, void *user)
{
    (void)user;
    const char *region;
    size_t len;
    return strcmp(evs_event_type_name(ev), "Purchase") == 0 &&
           evs_event_meta_get_str(ev, "region", &region, &len) == 0 &&
           len == 2 && memcmp(region, "eu", 2) == 0;
}

static int count(const evs_event *ev, void *user)
{
    (void)ev;
    (*(int *)user)++;
    printf("subscriber B counted EU purchase id=%llu\n",
           (unsigned long long)evs_event_id(ev));
    return 0;
}

int main(void)
{
    evs_stream *s;
    evs_sub *a, *b;
    evs_buf line = {0};
    int eu = 0, rc;

    if ((rc = evs_stream_create(&s, NULL)) != 0) {
        fprintf(stderr, "create: %s\n", evs_strerror(rc));
        return 1;
    }
    if ((rc = evs_subscribe(&a, s, NULL, print_json, NULL, &line, NULL)) != 0 ||
        (rc = evs_subscribe(&b, s, NULL, count, eu_purchases, &eu, NULL)) != 0) {
        fprintf(stderr, "subscribe: %s\n", evs_strerror(rc));
        evs_stream_destroy(s);
        return 1;
    }

    static const struct {
        const char *type, *topic, *json, *region;
    } samples[] = {
        {"Signup", "users", "{\"user\":\"ada\",\"plan\":\"pro\"}", "eu"},
        {"Purchase", "orders", "{\"sku\":\"book-42\",\"qty\":2,\"price\":19.5}", "eu"},
        {"Purchase", "orders", "{\"sku\":\"pen-7\",\"qty\":10,\"price\":1.25}", "us"},
        {"message", "chat", "\"hello, \\\"world\\\"\\n\"", "eu"},
    };
    for (size_t i = 0; i < sizeof(samples) / sizeof(samples[0]); i++) {
        evs_event *ev;
        const char *meta[] = {"region", samples[i].region, NULL};
        rc = evs_event_make(&ev, samples[i].type, samples[i].topic, samples[i].json, meta);
        if (rc != 0) {
            fprintf(stderr, "make: %s\n", evs_strerror(rc));
            break;
        }
        uint64_t id;
        rc = evs_stream_publish_id(s, ev, &id);
        evs_event_unref(ev); /* ours, whatever publish said */
        if (rc != 0) {
            fprintf(stderr, "publish: %s\n", evs_strerror(rc));
            break;
        }
        printf("published %s as id=%llu\n", samples[i].type, (unsigned long long)id);
    }

    /* Deliver everything accepted, then report. */
    uint64_t left;
    if ((rc = evs_stream_close(s, 5000, &left)) != 0)
        fprintf(stderr, "close: %s (%llu left)\n", evs_strerror(rc), (unsigned long long)left);

    evs_stream_stats st;
    evs_stream_stats_get(s, &st);
    printf("stats: published=%llu delivered=%llu filtered=%llu dropped=%llu\n",
           (unsigned long long)st.published, (unsigned long long)st.delivered,
           (unsigned long long)st.filtered,
           (unsigned long long)(st.dropped_newest + st.dropped_oldest));
    printf("EU purchases: %d\n", eu);

    evs_stream_destroy(s); /* ends a and b too */
    evs_buf_free(&line);
    return rc == 0 ? 0 : 1;
}
