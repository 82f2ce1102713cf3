/*
 * Backpressure with the fail-fast policy: a small queue, a publisher
 * that backs off when the stream says EVS_EFULL, and the counters that
 * show nothing was lost.
 */
#include <evstream.h>

#include <stdio.h>

static int slow_sum(const evs_event *ev, void *user)
{
    size_t len;
    const unsigned char *d = evs_event_data(ev, &len);
    *(unsigned long *)user += len ? d[0] : 0;
    return 0;
}

int main(void)
{
    evs_stream_opts o = {.capacity = 4, .overflow = EVS_OVERFLOW_FAIL, .history = 3};
    evs_stream *s;
    evs_sub *sub;
    unsigned long sum = 0, full = 0;
    int rc;

    if ((rc = evs_stream_create(&s, &o)) != 0) {
        fprintf(stderr, "create: %s\n", evs_strerror(rc));
        return 1;
    }
    if ((rc = evs_subscribe(&sub, s, "numbers", slow_sum, NULL, &sum, NULL)) != 0) {
        fprintf(stderr, "subscribe: %s\n", evs_strerror(rc));
        evs_stream_destroy(s);
        return 1;
    }
    for (int i = 0; i < 1000; i++) {
        unsigned char byte = (unsigned char)(i % 7);
        evs_event *ev;
        if ((rc = evs_event_create(&ev, EVS_TYPE_MESSAGE, "numbers", &byte, 1)) != 0)
            break;
        while ((rc = evs_stream_publish(s, ev)) == EVS_EFULL) {
            full++;
            evs_stream_flush(s, 100, NULL); /* let the dispatcher catch up */
        }
        evs_event_unref(ev);
        if (rc != 0)
            break;
    }
    if (rc != 0)
        fprintf(stderr, "publish: %s\n", evs_strerror(rc));
    evs_stream_flush(s, EVS_FOREVER, NULL);

    evs_sub_stats ss;
    evs_sub_stats_get(sub, &ss);
    evs_stream_stats st;
    evs_stream_stats_get(s, &st);
    printf("delivered=%llu sum=%lu rejected_full counted=%s\n",
           (unsigned long long)ss.delivered, sum,
           st.rejected_full == full ? "yes" : "no");

    const evs_event *recent[3];
    int n = evs_stream_recent(s, recent, 3);
    printf("recent ids:");
    for (int i = 0; i < n; i++) {
        printf(" %llu", (unsigned long long)evs_event_id(recent[i]));
        evs_event_unref(recent[i]);
    }
    printf("\n");

    evs_unsubscribe(sub);
    evs_stream_destroy(s);
    return rc == 0 ? 0 : 1;
}
