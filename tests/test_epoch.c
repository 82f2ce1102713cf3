/*
 * The process-wide epoch (src/epoch.c): frees left on the record of a
 * thread that exited while a reader was in a section run when a stream
 * is destroyed, not at some later, unrelated retire.
 */
#include <criterion/criterion.h>
#include <stdatomic.h>

#include "epoch.h"
#include "evs_test.h"

typedef struct self_end {
    evs_sub *sub;
    atomic_int ended;
} self_end;

/* A pooled handler that ends its own subscription: the retire runs on
 * the worker's record, and the worker exits right after. */
static int end_self(const evs_event *ev, void *user)
{
    self_end *e = user;
    (void)ev;
    if (!atomic_exchange(&e->ended, 1))
        cr_assert_eq(evs_unsubscribe(e->sub), 0);
    return 0;
}

static void wait_until_orphans(bool want_some)
{
    for (int i = 0; i < 10000; i++) {
        if ((evs__epoch_orphans() > 0) == want_some)
            return;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    cr_assert_fail("orphans never became %s", want_some ? "some" : "none");
}

Test(epoch, destroy_runs_the_frees_an_exited_worker_left_pending, .timeout = 30)
{
    evs_stream *s;
    ASSERT_RC(evs_stream_create(&s, NULL), 0);
    self_end e = {0};
    evs_sub_opts so = {.max_concurrent = 1};
    ASSERT_RC(evs_subscribe(&e.sub, s, NULL, end_self, NULL, &e, &so), 0);

    /* Hold a read section, so the worker cannot finish its frees before
     * it exits: its record becomes an orphan. */
    ck_epoch_record_t *rec = evs__epoch_record();
    cr_assert_not_null(rec);
    ck_epoch_section_t section;
    evs__epoch_begin(rec, &section);
    evs_event *ev;
    ASSERT_RC(evs_event_create(&ev, EVS_TYPE_MESSAGE, "t", "x", 1), 0);
    ASSERT_RC(evs_stream_publish(s, ev), 0);
    evs_event_unref(ev);
    wait_until_orphans(true);
    evs__epoch_end(rec, &section);

    /* Nothing retires from here on but the destroy itself. */
    ASSERT_RC(evs_stream_destroy(s), 0);
    cr_assert_eq(evs__epoch_orphans(), 0, "%zu exited records still hold frees",
                 evs__epoch_orphans());
}
