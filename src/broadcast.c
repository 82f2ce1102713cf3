/*
 * evs_broadcast: one event to many streams with no payload copy. Each
 * stream publishes through its own evs_stream_publish, which numbers the
 * event itself the first time and publishes an alias (a small header
 * sharing the original's body by reference) every other time, so the
 * payload is never copied whatever kinds of stream receive it.
 */
#include "evs_internal.h"

int evs_broadcast(evs_stream *const *streams, size_t n, const evs_event *ev, int *results)
{
    if ((streams == NULL && n > 0) || ev == NULL)
        return EVS_EINVAL;
    int accepted = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t id = 0;
        int rc = streams[i] != NULL ? evs_stream_publish_id(streams[i], ev, &id) : EVS_EINVAL;
        if (results != NULL)
            results[i] = rc;
        /* A drop under DROP_NEWEST returns 0 with no id: the stream
         * counted it as dropped, so neither do we count it as kept. */
        if (rc == 0 && id != 0)
            accepted++;
    }
    return accepted;
}
