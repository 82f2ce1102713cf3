/*
 * The two fast paths through a stream, each with one publishing thread
 * (a promise the stream turns into publishes without atomic
 * instructions) and a dispatcher that spins instead of sleeping:
 *   1. events made with evs_event_create and handed over with
 *      evs_stream_publish_move (no reference counting on the way);
 *   2. events written in place into the stream's ring slots with
 *      evs_stream_claim / evs_stream_commit (no allocation at all).
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

/* Run one path; returns 0 and prints whether the handler saw it all. */
static int run(const char *name, bool slots)
{
    evs_stream_opts o = {
        .single_publisher = true,        /* only this thread publishes */
        .wait = EVS_WAIT_SPIN,           /* lowest latency, one busy core */
        .history = EVS_HISTORY_NONE,     /* nobody reads recent events */
        .slot_bytes = slots ? 128 : 0,   /* room in each slot for topic + data */
        .coarse_timestamps = slots,      /* kernel-tick timestamps: cheaper */
    };
    evs_stream *s;
    evs_sub *sub;
    uint64_t total = 0;
    int rc;

    if ((rc = evs_stream_create(&s, &o)) != 0) {
        fprintf(stderr, "create: %s\n", evs_strerror(rc));
        return rc;
    }
    if ((rc = evs_subscribe(&sub, s, NULL, sum, NULL, &total, NULL)) != 0) {
        fprintf(stderr, "subscribe: %s\n", evs_strerror(rc));
        evs_stream_destroy(s);
        return rc;
    }
    for (uint64_t i = 1; i <= EVENTS && rc == 0; i++) {
        unsigned char payload[64] = {0};
        memcpy(payload, &i, sizeof(i));
        evs_event *ev;
        void *data;
        if (slots) {
            /* The event lives in the ring: fill it in place, then commit. */
            if ((rc = evs_stream_claim(s, EVS_TYPE_MESSAGE, "ticks", sizeof(payload), &ev,
                                       &data)) == 0) {
                memcpy(data, payload, sizeof(payload));
                rc = evs_stream_commit(s, ev);
            }
        } else if ((rc = evs_event_create(&ev, EVS_TYPE_MESSAGE, "ticks", payload,
                                          sizeof(payload))) == 0) {
            /* The stream takes our reference, whatever the result. */
            rc = evs_stream_publish_move(s, ev, NULL);
        }
    }
    if (rc != 0)
        fprintf(stderr, "%s: %s\n", name, evs_strerror(rc));
    evs_stream_close(s, EVS_FOREVER, NULL);
    printf("%s: delivered sum %s\n", name,
           total == (uint64_t)EVENTS * (EVENTS + 1) / 2 ? "matches" : "DIFFERS");
    evs_stream_destroy(s);
    return rc;
}

/* A single publisher means exactly one: heartbeats would come from the
 * timer thread, a second publisher, so the stream refuses them and
 * evs_last_error says why. */
static void no_second_publisher(void)
{
    evs_stream_opts o = {.single_publisher = true, .heartbeat_ms = 1000};
    evs_stream *s;
    int rc = evs_stream_create(&s, &o);
    printf("single_publisher + heartbeat_ms: %s (%s)\n", evs_errname(rc), evs_last_error());
    if (rc == 0)
        evs_stream_destroy(s);
}

int main(void)
{
    no_second_publisher();
    int rc = run("publish_move", false);
    if (rc == 0)
        rc = run("claim/commit", true);
    return rc == 0 ? 0 : 1;
}
