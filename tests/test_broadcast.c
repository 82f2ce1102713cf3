/*
 * evs_broadcast: one event to many streams without copying its payload;
 * per-stream results; a failing stream does not stop the others.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "evstream.h"
#include "evs_test.h"

static int hold_at_gate(const evs_event *ev, void *user)
{
    (void)ev;
    gate_pass(user);
    return 0;
}

Test(broadcast, every_stream_shares_the_payload, .timeout = 30)
{
    evs_stream *s[3];
    evs_stream_opts topic = {.topics = true};
    ASSERT_RC(evs_stream_create(&s[0], NULL), 0);
    ASSERT_RC(evs_stream_create(&s[1], &topic), 0);
    evs_stream_opts inl = {.delivery = EVS_DELIVERY_INLINE};
    ASSERT_RC(evs_stream_create(&s[2], &inl), 0);
    evs_event *ev;
    ASSERT_RC(evs_event_create(&ev, EVS_TYPE_MESSAGE, "a.b", "payload", 7), 0);
    int results[3] = {-99, -99, -99};
    cr_assert_eq(evs_broadcast(s, 3, ev, results), 3);
    for (int i = 0; i < 3; i++) {
        ASSERT_RC(results[i], 0);
        ASSERT_RC(evs_stream_flush(s[i], EVS_FOREVER, NULL), 0);
        const evs_event *got;
        cr_assert_eq(evs_stream_recent(s[i], &got, 1), 1);
        cr_assert_eq(evs_event_data(got, NULL), evs_event_data(ev, NULL),
                     "stream %d copied the payload", i);
        cr_assert_eq(evs_event_id(got), 1);
        evs_event_unref(got);
    }
    evs_event_unref(ev);
    for (int i = 0; i < 3; i++)
        ASSERT_RC(evs_stream_destroy(s[i]), 0);
}

Test(broadcast, a_failing_stream_does_not_stop_the_others, .timeout = 30)
{
    evs_stream *s[4] = {NULL};
    evs_stream_opts topic = {.topics = true};
    ASSERT_RC(evs_stream_create(&s[0], NULL), 0);
    ASSERT_RC(evs_stream_create(&s[1], NULL), 0);
    ASSERT_RC(evs_stream_create(&s[2], &topic), 0); /* "not a subject" is invalid there */
    ASSERT_RC(evs_stream_close(s[1], 0, NULL), 0);
    /* s[3] stays NULL */
    evs_event *ev;
    ASSERT_RC(evs_event_create(&ev, EVS_TYPE_MESSAGE, "not a subject", "x", 1), 0);
    int results[4];
    cr_assert_eq(evs_broadcast(s, 4, ev, results), 1);
    ASSERT_RC(results[0], 0);
    ASSERT_RC(results[1], EVS_ECLOSED);
    ASSERT_RC(results[2], EVS_EINVAL);
    ASSERT_RC(results[3], EVS_EINVAL);
    cr_assert_eq(evs_broadcast(s, 1, ev, NULL), 1, "results may be NULL");
    evs_event_unref(ev);
    for (int i = 0; i < 3; i++)
        ASSERT_RC(evs_stream_destroy(s[i]), 0);
}

Test(broadcast, bad_arguments_are_einval)
{
    evs_event *ev;
    ASSERT_RC(evs_event_create(&ev, EVS_TYPE_MESSAGE, "t", "x", 1), 0);
    ASSERT_RC(evs_broadcast(NULL, 2, ev, NULL), EVS_EINVAL);
    evs_stream *none[1] = {NULL};
    ASSERT_RC(evs_broadcast(none, 1, NULL, NULL), EVS_EINVAL);
    cr_assert_eq(evs_broadcast(NULL, 0, ev, NULL), 0);
    evs_event_unref(ev);
}

Test(broadcast, a_drop_under_drop_newest_is_not_counted_as_kept, .timeout = 30)
{
    evs_stream *s[2];
    evs_stream_opts drop = {.capacity = 2, .overflow = EVS_OVERFLOW_DROP_NEWEST};
    ASSERT_RC(evs_stream_create(&s[0], NULL), 0);
    ASSERT_RC(evs_stream_create(&s[1], &drop), 0);
    /* Hold s[1]'s dispatcher so its ring fills. */
    gate g;
    gate_init(&g);
    evs_sub *sub;
    ASSERT_RC(evs_subscribe(&sub, s[1], NULL, hold_at_gate, NULL, &g, NULL), 0);
    evs_event *ev;
    ASSERT_RC(evs_event_create(&ev, EVS_TYPE_MESSAGE, "t", "x", 1), 0);
    ASSERT_RC(evs_stream_publish(s[1], ev), 0);
    gate_wait_blocked(&g);
    ASSERT_RC(evs_stream_publish(s[1], ev), 0);
    ASSERT_RC(evs_stream_publish(s[1], ev), 0);
    int results[2] = {-99, -99};
    cr_assert_eq(evs_broadcast(s, 2, ev, results), 1, "the dropped copy was counted as kept");
    ASSERT_RC(results[0], 0);
    ASSERT_RC(results[1], 0); /* as evs_stream_publish returns it */
    evs_stream_stats st;
    ASSERT_RC(evs_stream_stats_get(s[1], &st), 0);
    cr_assert_eq(st.dropped_newest, 1);
    gate_open(&g);
    evs_event_unref(ev);
    for (int i = 0; i < 2; i++)
        ASSERT_RC(evs_stream_destroy(s[i]), 0);
    gate_destroy(&g);
}
