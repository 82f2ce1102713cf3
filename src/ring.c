/*
 * Ring setup and teardown; the lock-free operations are inline in
 * ring.h because they sit on the publish and dispatch paths.
 */
#include "ring.h"

int evs__ring_init(struct evs_ring *r, uint64_t size, bool sp)
{
    memset(r, 0, sizeof(*r));
    /* Slots start with seq 0: position 0 is published when seq == 1. */
    r->slots = evs__calloc(size, sizeof(*r->slots));
    if (r->slots == NULL)
        return EVS_ENOMEM;
    r->size = size;
    r->mask = size - 1;
    r->limit = size;
    r->sp = sp;
    return 0;
}

void evs__ring_fini(struct evs_ring *r)
{
    evs__free(r->slots);
    r->slots = NULL;
}
