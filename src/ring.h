/*
 * The stream's sequenced ring: a bounded multi-producer, single-consumer
 * queue of event pointers in which every accepted event gets a sequence
 * number, and sequence order is consumption order.
 *
 * Why not ck_ring: the stream numbers events by their place in the queue
 * (ids must increase in the order subscribers see them, across
 * publishers), the consumer takes whole runs at once, and DROP_OLDEST
 * needs publishers to evict the oldest entry safely. ck_ring's MP enqueue
 * exposes no position, dequeues one entry per shared-cursor round trip,
 * and has no eviction. This ring follows the Disruptor: producers claim
 * positions with one CAS on `claim`, write the slot, then publish it by
 * storing its sequence; the consumer reads runs of published slots and
 * advances `head` once per run; each side reads the other's cursor only
 * when its cached copy says the ring is full or empty.
 *
 * Invariants (pos is a 64-bit position that never wraps in practice):
 *   head <= claim_pos(claim) <= head + limit <= head + size
 *   slot[pos & mask].seq == pos + 1  <=>  position pos is published
 *   A producer writes slot pos only after claiming pos, and it may claim
 *   pos only while pos < head + size (the slot's previous occupant,
 *   pos - size, has been taken).
 *   Whoever moves head from h by CAS owns the events of the slots it
 *   passes: the consumer takes a run [h, h+n), a DROP_OLDEST producer
 *   evicts [h, h+1). Pointers are read before the CAS and used only if
 *   it succeeds; a failed CAS means someone else owns them.
 */
#ifndef EVS_RING_H
#define EVS_RING_H

#include "evs_internal.h"

/* Set in `claim` by close: no position may be claimed afterwards. */
#define EVS_RING_CLOSED ((uint64_t)1 << 63)

struct evs_ring_slot {
    uint64_t         seq; /* pos + 1 once position pos is published here */
    const evs_event *ev;  /* the event at that position, or NULL (a hole) */
};

struct evs_ring {
    /* Producer side. claim: next position to hand out, plus the CLOSED
     * bit; changed only by CAS (publishers) and OR (close). */
    uint64_t claim EVS_ALIGNED;
    /* Producers' cached copy of head; may lag (that only makes the ring
     * look fuller, never emptier). Acquire loads, release stores. */
    uint64_t head_cache;
    /* Single-producer rings (sp): claim is written with plain stores by
     * the one producer, so close cannot set a bit in it; it sets this
     * flag instead, which the producer checks before claiming. */
    unsigned closed;

    /* Consumer side. head: first position not yet taken; moved by CAS
     * by the consumer (runs) and DROP_OLDEST producers (one at a time). */
    uint64_t head EVS_ALIGNED;

    /* Read-only after init. */
    struct evs_ring_slot *slots EVS_ALIGNED;
    uint64_t size;
    uint64_t mask;
    /* Positions that may be queued at once: size, or less when the
     * stream throttles publishers early (opts.backpressure_pct). The
     * ring is "full" at limit, so the overflow policy applies there. */
    uint64_t limit;
    bool sp; /* one producer at a time (evs_stream_opts.single_publisher) */
};

/* size: a power of two >= 2; sp: one producer at a time. Returns 0 or
 * EVS_ENOMEM. */
int evs__ring_init(struct evs_ring *r, uint64_t size, bool sp);
/* Frees the slots (not the events in them: drain first). */
void evs__ring_fini(struct evs_ring *r);

/* Is there room for position c? Refreshes the cached head if needed. */
static inline bool evs__ring_room(struct evs_ring *r, uint64_t c)
{
    /* Acquire/release on the cache too: a producer that trusts a value
     * another producer cached must also see the consumer's release of
     * those slots (their readers are done before we overwrite them). */
    if (evs_likely(c - evs_load_acquire(&r->head_cache) < r->limit))
        return true;
    uint64_t h = evs_load_acquire(&r->head);
    evs_store_release(&r->head_cache, h);
    return c - h < r->limit;
}

/*
 * Claim the next position. Returns 0 with *pos, EVS_EFULL when every
 * slot is in use, or EVS_ECLOSED.
 * Threads: any, concurrently; for an sp ring, one thread at a time.
 * Barriers: on an MP ring the claim is a locked CAS (a full barrier); on
 * an sp ring it is a plain store with no barrier at all.
 */
static inline int evs__ring_claim(struct evs_ring *r, uint64_t *pos)
{
    uint64_t c = evs_load(&r->claim);
    if (r->sp) {
        if (evs_unlikely(evs_load(&r->closed)))
            return EVS_ECLOSED;
        if (evs_unlikely(!evs__ring_room(r, c)))
            return EVS_EFULL;
        evs_store(&r->claim, c + 1);
        *pos = c;
        return 0;
    }
    for (;;) {
        if (evs_unlikely(c & EVS_RING_CLOSED))
            return EVS_ECLOSED;
        if (evs_unlikely(!evs__ring_room(r, c)))
            return EVS_EFULL;
        /* On failure c is reloaded with the current value. */
        if (ck_pr_cas_64_value(&r->claim, c, c + 1, &c))
            break;
    }
    *pos = c;
    return 0;
}

/* Fill claimed position `pos` (ev may be NULL: a hole the consumer
 * skips) and make it visible to the consumer. */
static inline void evs__ring_publish(struct evs_ring *r, uint64_t pos, const evs_event *ev)
{
    struct evs_ring_slot *s = &r->slots[pos & r->mask];
    evs_store(&s->ev, ev);
    /* Release: the event (and its id) is written before seq says so. */
    evs_store_release(&s->seq, pos + 1);
}

/* Read the run of published slots at h, up to max, into out[]. */
static inline size_t evs__ring_peek(struct evs_ring *r, uint64_t h, const evs_event **out,
                                    size_t max)
{
    size_t n = 0;
    while (n < max) {
        struct evs_ring_slot *s = &r->slots[(h + n) & r->mask];
        /* Acquire: the slot's event is read after its seq. */
        if (evs_load_acquire(&s->seq) != h + n + 1)
            break;
        out[n++] = evs_load(&s->ev);
    }
    return n;
}

/*
 * Consumer: take up to `max` published events starting at head, in
 * order, into out[], and advance head past them at once (their slots can
 * be reused right away: the caller owns the references now). Returns how
 * many; *first is the position of out[0].
 * Threads: the single consumer, concurrently with producers.
 */
static inline size_t evs__ring_take(struct evs_ring *r, const evs_event **out,
                                    size_t max, uint64_t *first)
{
    for (;;) {
        uint64_t h = evs_load_acquire(&r->head);
        size_t n = evs__ring_peek(r, h, out, max);
        if (n == 0)
            return 0;
        if (ck_pr_cas_64(&r->head, h, h + n)) {
            *first = h;
            return n;
        }
        /* A DROP_OLDEST producer evicted the oldest; read again. */
    }
}

/*
 * Consumer, for rings whose slots hold the events themselves (slot
 * storage): read the run at head without advancing it, so producers
 * cannot reuse those slots while the run is delivered; then
 * evs__ring_release. No producer ever moves head on such a ring (they
 * do not evict), so the consumer is the only writer.
 */
static inline size_t evs__ring_take_deferred(struct evs_ring *r, const evs_event **out,
                                             size_t max, uint64_t *first)
{
    uint64_t h = evs_load(&r->head);
    *first = h;
    return evs__ring_peek(r, h, out, max);
}

/* Let producers reuse every slot before position `upto`. */
static inline void evs__ring_release(struct evs_ring *r, uint64_t upto)
{
    evs_store_release(&r->head, upto);
}

/*
 * Producer under DROP_OLDEST: evict the oldest queued event. Returns
 * true and the evicted event (the caller now owns the ring's reference;
 * it may be NULL for a hole), or false when nothing could be evicted
 * right now: claim again (the ring may have room, or be closed, by
 * then). When the oldest slot is claimed but not yet published (its
 * producer was preempted between claim and publish), nobody can pass
 * it: the call first pauses with pause(*round) and increments *round,
 * so a caller retrying with the same counter backs off more each time
 * (evs__backoff: spin, then yield, then sleep) and never burns the CPU
 * the stalled producer needs. A lost race (the consumer or another
 * evicter took the oldest) returns false at once.
 */
static inline bool evs__ring_evict(struct evs_ring *r, const evs_event **ev,
                                   void (*pause)(unsigned round), unsigned *round)
{
    uint64_t h = evs_load_acquire(&r->head);
    struct evs_ring_slot *s = &r->slots[h & r->mask];
    if (evs_load_acquire(&s->seq) != h + 1) {
        pause((*round)++);
        return false;
    }
    const evs_event *e = evs_load(&s->ev);
    if (!ck_pr_cas_64(&r->head, h, h + 1))
        return false;
    *ev = e;
    return true;
}

/* Positions handed out so far (= ids issued). */
static inline uint64_t evs__ring_claimed(struct evs_ring *r)
{
    return evs_load(&r->claim) & ~EVS_RING_CLOSED;
}

/* Close: no claim that starts afterwards succeeds. Returns the positions
 * handed out before the close (every one of them will be published). On
 * an sp ring a claim overlapping the close may still succeed after this
 * read: it is published and delivered all the same. */
static inline uint64_t evs__ring_close(struct evs_ring *r)
{
    if (r->sp) {
        evs_store(&r->closed, 1);
        ck_pr_fence_memory();
        return evs_load(&r->claim);
    }
    uint64_t c = evs_load(&r->claim);
    while (!(c & EVS_RING_CLOSED) &&
           !ck_pr_cas_64_value(&r->claim, c, c | EVS_RING_CLOSED, &c))
        ;
    return c & ~EVS_RING_CLOSED;
}

static inline bool evs__ring_closed(struct evs_ring *r)
{
    if (r->sp)
        return evs_load(&r->closed) != 0;
    return (evs_load(&r->claim) & EVS_RING_CLOSED) != 0;
}

#endif /* EVS_RING_H */
