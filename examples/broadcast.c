/*
 * One event, three streams, no copy: evs_broadcast publishes the event
 * to each stream; the first numbers the event itself and the others get
 * aliases that share its payload. A closed stream fails on its own and
 * does not stop the rest.
 */
#include <evstream.h>

#include <stdio.h>

struct watcher {
    const char *name;
    const void *original; /* the payload bytes of the event we broadcast */
};

static int show(const evs_event *ev, void *user)
{
    const struct watcher *w = user;
    size_t len;
    const char *data = evs_event_data(ev, &len);
    printf("%s got id=%llu \"%.*s\", payload shared: %s\n", w->name,
           (unsigned long long)evs_event_id(ev), (int)len, data,
           (const void *)data == w->original ? "yes" : "no");
    return 0;
}

int main(void)
{
    evs_stream *streams[4] = {NULL};
    struct watcher watchers[4];
    const char *names[4] = {"audit", "metrics", "search", "archive"};
    evs_event *ev;
    int rc;

    if ((rc = evs_event_create(&ev, EVS_TYPE_MESSAGE, "users.signup", "ada", 3)) != 0) {
        fprintf(stderr, "create: %s\n", evs_strerror(rc));
        return 1;
    }
    for (int i = 0; i < 4; i++) {
        evs_sub *sub;
        watchers[i] = (struct watcher){names[i], evs_event_data(ev, NULL)};
        if ((rc = evs_stream_create(&streams[i], NULL)) != 0 ||
            (rc = evs_subscribe(&sub, streams[i], NULL, show, NULL, &watchers[i], NULL)) != 0) {
            fprintf(stderr, "setup: %s\n", evs_strerror(rc));
            goto out;
        }
    }
    /* The archive is closed: its publish fails, the others go on. */
    evs_stream_close(streams[3], 0, NULL);

    int results[4];
    int accepted = evs_broadcast(streams, 4, ev, results);
    for (int i = 0; i < 4; i++)
        evs_stream_flush(streams[i], EVS_FOREVER, NULL);
    printf("accepted by %d of 4; archive said %s\n", accepted, evs_errname(results[3]));
    rc = accepted == 3 ? 0 : 1;
out:
    evs_event_unref(ev); /* ours; each stream holds its own reference */
    for (int i = 0; i < 4; i++)
        evs_stream_destroy(streams[i]);
    return rc == 0 ? 0 : 1;
}
