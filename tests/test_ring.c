/*
 * The sequenced ring (src/ring.h): what a DROP_OLDEST producer does when
 * the oldest slot is claimed but not yet published by its producer.
 */
#include <criterion/criterion.h>

#include "evs_test.h"
#include "ring.h"

/* Stand-in events: the ring stores pointers and never reads them. */
static const int dummy[5];
#define FAKE(i) ((const evs_event *)(const void *)&dummy[i])

static struct evs_ring *stalled_ring;
static unsigned pauses;
static bool rounds_in_order = true;

/* The evicter's pause: rounds must grow one by one across retries
 * (evs__backoff turns them into spin, yield, sleep); at round 300 the
 * stalled producer finally publishes position 0. */
static void pause_then_publish(unsigned round)
{
    if (round != pauses)
        rounds_in_order = false;
    pauses++;
    if (round == 300)
        evs__ring_publish(stalled_ring, 0, FAKE(0));
}

static void must_not_pause(unsigned round)
{
    (void)round;
    cr_assert_fail("the oldest was published: nothing to wait for");
}

Test(ring, evicting_a_slot_still_being_written_backs_off_until_it_is_published)
{
    struct evs_ring r;
    ASSERT_RC(evs__ring_init(&r, 4, false), 0);
    uint64_t pos = UINT64_MAX;
    for (uint64_t i = 0; i < 4; i++) {
        ASSERT_RC(evs__ring_claim(&r, &pos), 0);
        cr_assert_eq(pos, i);
        if (i > 0) /* position 0 stays claimed, unpublished */
            evs__ring_publish(&r, i, FAKE(i));
    }
    ASSERT_RC(evs__ring_claim(&r, &pos), EVS_EFULL);

    stalled_ring = &r;
    const evs_event *old = NULL;
    unsigned round = 0;
    int calls = 0;
    while (!evs__ring_evict(&r, &old, pause_then_publish, &round))
        cr_assert_lt(++calls, 1000, "never evicted");
    cr_assert_eq(old, FAKE(0));
    cr_assert_eq(pauses, 301, "paused %u times", pauses);
    cr_assert(rounds_in_order, "the pause round must grow by one each time");

    /* The next oldest is published: evicted at once, no pause. */
    cr_assert(evs__ring_evict(&r, &old, must_not_pause, &round));
    cr_assert_eq(old, FAKE(1));
    ASSERT_RC(evs__ring_claim(&r, &pos), 0);
    cr_assert_eq(pos, 4);
    evs__ring_fini(&r);
}
