/*
 * The fastest way through a stream: one publishing thread (a promise
 * the stream turns into publishes without atomic instructions), events
 * handed over with evs_stream_publish_move, and a dispatcher that spins
 * instead of sleeping.
 */
#include <evstream.h>

#include <stdio.h>
#include <string.h>

#define EVENTS 1000000

static int sum(const evs_event *ev, void *user)
{
    size_t len;
    const void *d = evs_event_data(ev, &len);
    uint64_t v;
    memcpy(&v, d, sizeof(v));
    *(uint64_t *)user += v;
    return 0;
}

int main(void)
{
    evs_stream_opts o = {
        .single_publisher = true,        /* only this thread publishes */
        .wait = EVS_WAIT_SPIN,           /* lowest latency, one busy core */
        .history = EVS_HISTORY_NONE,     /* nobody reads recent events */
    };
    evs_stream *s;
    evs_sub *sub;
    uint64_t total = 0;
    int rc;

    if ((rc = evs_stream_create(&s, &o)) != 0) {
        fprintf(stderr, "create: %s\n", evs_strerror(rc));
        return 1;
    }
    if ((rc = evs_subscribe(&sub, s, NULL, sum, NULL, &total, NULL)) != 0) {
        fprintf(stderr, "subscribe: %s\n", evs_strerror(rc));
        evs_stream_destroy(s);
        return 1;
    }
    for (uint64_t i = 1; i <= EVENTS; i++) {
        unsigned char payload[64] = {0};
        memcpy(payload, &i, sizeof(i));
        evs_event *ev;
        if ((rc = evs_event_create(&ev, EVS_TYPE_MESSAGE, "ticks", payload, sizeof(payload))) != 0)
            break;
        /* The stream takes our reference, whatever the result. */
        if ((rc = evs_stream_publish_move(s, ev, NULL)) != 0)
            break;
    }
    if (rc != 0)
        fprintf(stderr, "publish: %s\n", evs_strerror(rc));
    evs_stream_close(s, EVS_FOREVER, NULL);
    printf("delivered sum %s\n",
           total == (uint64_t)EVENTS * (EVENTS + 1) / 2 ? "matches" : "DIFFERS");
    evs_stream_destroy(s);
    return rc == 0 ? 0 : 1;
}
