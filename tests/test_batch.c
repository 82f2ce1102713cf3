/*
 * Batching subscribers: the size boundary, the time boundary (on a fake
 * clock, heartbeat.h), stop's remainder, no loss or duplicate across
 * stop with a concurrent publisher, pattern and filter, argument errors
 * and allocation failure.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "evs_internal.h"
#include "evstream.h"
#include "evs_test.h"
#include "heartbeat.h"

/* ------------------------------------------------------------------ */
/* A fake service clock, as in test_stream.c's heartbeat tests.        */


/* ------------------------------------------------------------------ */
/* What fn saw: every id in arrival order, and each batch's size.      */

#define MAX_IDS     (1u << 20)
#define MAX_BATCHES (1u << 18)

typedef struct seen {
    pthread_mutex_t mu;
    uint64_t *ids;
    size_t    nids;
    size_t   *sizes;
    size_t    nbatches;
    bool      overlap;    /* fn entered while another call ran */
    bool      in_fn;
    evs_batcher *self;    /* for the EDEADLK check */
    int       stop_rc;    /* what evs_batch_stop(self) gave inside fn */
} seen;

static void seen_init(seen *s)
{
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    s->ids = calloc(MAX_IDS, sizeof(uint64_t));
    s->sizes = calloc(MAX_BATCHES, sizeof(size_t));
    cr_assert_not_null(s->ids);
    cr_assert_not_null(s->sizes);
    s->stop_rc = 1;
}

static void seen_fini(seen *s)
{
    free(s->ids);
    free(s->sizes);
    pthread_mutex_destroy(&s->mu);
}

static size_t seen_batches(seen *s)
{
    pthread_mutex_lock(&s->mu);
    size_t n = s->nbatches;
    pthread_mutex_unlock(&s->mu);
    return n;
}

static int collect(const evs_event *const *events, size_t n, void *user)
{
    seen *s = user;
    pthread_mutex_lock(&s->mu);
    if (s->in_fn)
        s->overlap = true;
    s->in_fn = true;
    cr_assert_lt(s->nbatches, MAX_BATCHES);
    s->sizes[s->nbatches++] = n;
    for (size_t i = 0; i < n; i++) {
        cr_assert_lt(s->nids, MAX_IDS);
        s->ids[s->nids++] = evs_event_id(events[i]);
    }
    pthread_mutex_unlock(&s->mu);
    if (s->self != NULL)
        s->stop_rc = evs_batch_stop(s->self);
    pthread_mutex_lock(&s->mu);
    s->in_fn = false;
    pthread_mutex_unlock(&s->mu);
    return 0;
}

static evs_stream *mk_stream(const evs_stream_opts *o)
{
    evs_stream *s;
    ASSERT_RC(evs_stream_create(&s, o), 0);
    return s;
}

static uint64_t publish_named(evs_stream *s, const char *type, const char *topic)
{
    evs_event *ev;
    ASSERT_RC(evs_event_make(&ev, type, topic, NULL, NULL), 0);
    uint64_t id;
    ASSERT_RC(evs_stream_publish_id(s, ev, &id), 0);
    evs_event_unref(ev);
    return id;
}

static uint64_t publish(evs_stream *s)
{
    return publish_named(s, "message", "t");
}

/* Publish and wait until the stream has handed it to the batcher. */
static uint64_t publish_sync(evs_stream *s)
{
    uint64_t id = publish(s);
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    return id;
}

/* The ids fn saw are `first`, first + 1, ..., in order. */
static void assert_consecutive(seen *s, uint64_t first, size_t count)
{
    cr_assert_eq(s->nids, count, "saw %zu ids, want %zu", s->nids, count);
    for (size_t i = 0; i < s->nids; i++)
        cr_assert_eq(s->ids[i], first + i, "position %zu: id %llu, want %llu", i,
                     (unsigned long long)s->ids[i], (unsigned long long)(first + i));
    cr_assert_not(s->overlap, "fn ran concurrently with itself");
}

/* Install the fake clock before anything with timers is made. */
static void fake_clock_on(void)
{
    evs_store_release(fake_ns_cell(), 0);
    ASSERT_RC(evs__hb_set_clock(&fake_clock), 0);
}

/* Let the service thread stop, then restore the real clock. */
static void fake_clock_off(void)
{
    ASSERT_RC(evs__hb_sync(), 0);
    ASSERT_RC(evs__hb_set_clock(NULL), 0);
}

/* ------------------------------------------------------------------ */

Test(batch, a_batch_is_handed_over_exactly_at_max_events, .timeout = 30)
{
    fake_clock_on();
    evs_stream *s = mk_stream(NULL);
    seen c;
    seen_init(&c);
    evs_batcher *b;
    evs_batch_opts o = {.max_events = 3, .flush_ms = 1000};
    ASSERT_RC(evs_batch_subscribe(&b, s, NULL, collect, NULL, &c, &o), 0);
    uint64_t first = publish_sync(s);
    publish_sync(s);
    cr_assert_eq(seen_batches(&c), 0, "2 of 3: no batch yet");
    publish_sync(s);
    cr_assert_eq(seen_batches(&c), 1, "the third event completes the batch");
    cr_assert_eq(c.sizes[0], 3);
    for (int i = 0; i < 5; i++)
        publish(s);
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    cr_assert_eq(seen_batches(&c), 2, "6 of 8: one more full batch");
    ASSERT_RC(evs_batch_stop(b), 0);
    cr_assert_eq(c.nbatches, 3);
    cr_assert_eq(c.sizes[1], 3);
    cr_assert_eq(c.sizes[2], 2, "stop hands over the remainder");
    assert_consecutive(&c, first, 8);
    ASSERT_RC(evs_stream_destroy(s), 0);
    fake_clock_off();
    seen_fini(&c);
}

Test(batch, default_options_batch_a_thousand, .timeout = 30)
{
    fake_clock_on();
    evs_stream *s = mk_stream(NULL);
    seen c;
    seen_init(&c);
    evs_batcher *b;
    ASSERT_RC(evs_batch_subscribe(&b, s, NULL, collect, NULL, &c, NULL), 0);
    uint64_t first = publish(s);
    for (int i = 1; i < 1001; i++)
        publish(s);
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    cr_assert_eq(seen_batches(&c), 1);
    cr_assert_eq(c.sizes[0], 1000);
    clock_at_ms(999);
    cr_assert_eq(seen_batches(&c), 1, "the 1001st waits for 1000 ms");
    clock_at_ms(1000);
    cr_assert_eq(seen_batches(&c), 2);
    cr_assert_eq(c.sizes[1], 1);
    ASSERT_RC(evs_batch_stop(b), 0);
    assert_consecutive(&c, first, 1001);
    ASSERT_RC(evs_stream_destroy(s), 0);
    fake_clock_off();
    seen_fini(&c);
}

Test(batch, a_batch_is_handed_over_flush_ms_after_its_first_event, .timeout = 30)
{
    fake_clock_on();
    evs_stream *s = mk_stream(NULL);
    seen c;
    seen_init(&c);
    evs_batcher *b;
    evs_batch_opts o = {.max_events = 100, .flush_ms = 1000};
    ASSERT_RC(evs_batch_subscribe(&b, s, NULL, collect, NULL, &c, &o), 0);
    clock_at_ms(100);
    uint64_t first = publish_sync(s);
    clock_at_ms(600);
    publish_sync(s);
    clock_at_ms(1099);
    cr_assert_eq(seen_batches(&c), 0, "not before 1000 ms after the first event");
    clock_at_ms(1100);
    cr_assert_eq(seen_batches(&c), 1, "at 1000 ms after the first event");
    cr_assert_eq(c.sizes[0], 2);
    /* The next batch's clock starts at its own first event. */
    clock_at_ms(1500);
    publish_sync(s);
    clock_at_ms(2499);
    cr_assert_eq(seen_batches(&c), 1);
    clock_at_ms(2500);
    cr_assert_eq(seen_batches(&c), 2);
    cr_assert_eq(c.sizes[1], 1);
    clock_at_ms(10000);
    cr_assert_eq(seen_batches(&c), 2, "an empty batch is never handed over");
    ASSERT_RC(evs_batch_stop(b), 0);
    cr_assert_eq(c.nbatches, 2, "nothing left for stop");
    assert_consecutive(&c, first, 3);
    ASSERT_RC(evs_stream_destroy(s), 0);
    fake_clock_off();
    seen_fini(&c);
}

Test(batch, a_size_flush_restarts_the_clock_for_the_next_batch, .timeout = 30)
{
    fake_clock_on();
    evs_stream *s = mk_stream(NULL);
    seen c;
    seen_init(&c);
    evs_batcher *b;
    evs_batch_opts o = {.max_events = 2, .flush_ms = 1000};
    ASSERT_RC(evs_batch_subscribe(&b, s, NULL, collect, NULL, &c, &o), 0);
    uint64_t first = publish_sync(s);
    publish_sync(s);
    cr_assert_eq(seen_batches(&c), 1, "full at 0 ms");
    clock_at_ms(500);
    publish_sync(s);
    clock_at_ms(1000);
    cr_assert_eq(seen_batches(&c), 1, "the first batch's deadline is not the second's");
    clock_at_ms(1499);
    cr_assert_eq(seen_batches(&c), 1);
    clock_at_ms(1500);
    cr_assert_eq(seen_batches(&c), 2);
    cr_assert_eq(c.sizes[1], 1);
    ASSERT_RC(evs_batch_stop(b), 0);
    assert_consecutive(&c, first, 3);
    ASSERT_RC(evs_stream_destroy(s), 0);
    fake_clock_off();
    seen_fini(&c);
}

Test(batch, stop_hands_over_the_remainder_and_fn_is_never_called_again, .timeout = 30)
{
    fake_clock_on();
    evs_stream *s = mk_stream(NULL);
    seen c;
    seen_init(&c);
    evs_batcher *b;
    evs_batch_opts o = {.max_events = 10, .flush_ms = 1000};
    ASSERT_RC(evs_batch_subscribe(&b, s, NULL, collect, NULL, &c, &o), 0);
    uint64_t first = publish(s);
    publish(s);
    publish(s);
    ASSERT_RC(evs_batch_stop(b), 0);
    cr_assert_eq(c.nbatches, 1);
    cr_assert_eq(c.sizes[0], 3);
    for (int i = 0; i < 20; i++)
        publish(s);
    clock_at_ms(5000);
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    cr_assert_eq(seen_batches(&c), 1, "nothing after stop");
    assert_consecutive(&c, first, 3);
    ASSERT_RC(evs_stream_destroy(s), 0);
    fake_clock_off();
    seen_fini(&c);
}

Test(batch, stop_with_nothing_pending_calls_nothing_and_accepts_null, .timeout = 30)
{
    evs_stream *s = mk_stream(NULL);
    seen c;
    seen_init(&c);
    evs_batcher *b;
    ASSERT_RC(evs_batch_subscribe(&b, s, NULL, collect, NULL, &c, NULL), 0);
    ASSERT_RC(evs_batch_stop(b), 0);
    cr_assert_eq(c.nbatches, 0);
    ASSERT_RC(evs_batch_stop(NULL), 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
    seen_fini(&c);
}

Test(batch, stop_inside_fn_is_edeadlk, .timeout = 30)
{
    fake_clock_on();
    evs_stream *s = mk_stream(NULL);
    seen c;
    seen_init(&c);
    evs_batcher *b;
    evs_batch_opts o = {.max_events = 1};
    ASSERT_RC(evs_batch_subscribe(&b, s, NULL, collect, NULL, &c, &o), 0);
    c.self = b;
    publish_sync(s);
    cr_assert_eq(c.stop_rc, EVS_EDEADLK, "got %s", evs_errname(c.stop_rc));
    c.self = NULL;
    ASSERT_RC(evs_batch_stop(b), 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
    fake_clock_off();
    seen_fini(&c);
}

Test(batch, pattern_and_filter_are_honoured, .timeout = 30)
{
    fake_clock_on();
    evs_stream_opts so = {.topics = true};
    evs_stream *s = mk_stream(&so);
    const char *names[] = {"Purchase", "Signup"};
    evs_names *f;
    ASSERT_RC(evs_names_create(&f, names, 2), 0);
    seen c;
    seen_init(&c);
    evs_batcher *b;
    evs_batch_opts o = {.max_events = 2, .filter_user = f};
    ASSERT_RC(evs_batch_subscribe(&b, s, "orders.>", collect, evs_names_filter, &c, &o), 0);
    uint64_t want[3];
    want[0] = publish_named(s, "Purchase", "orders.eu");
    publish_named(s, "Purchase", "users.eu");  /* pattern */
    publish_named(s, "Refund", "orders.eu");   /* filter */
    want[1] = publish_named(s, "Signup", "orders.us.west");
    publish_named(s, "message", "orders.us");  /* filter */
    want[2] = publish_named(s, "Signup", "orders.x");
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    cr_assert_eq(seen_batches(&c), 1);
    ASSERT_RC(evs_batch_stop(b), 0);
    cr_assert_eq(c.nids, 3);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(c.ids[i], want[i], "position %d", i);
    cr_assert_eq(c.sizes[0], 2);
    cr_assert_eq(c.sizes[1], 1);
    ASSERT_RC(evs_stream_destroy(s), 0);
    evs_names_destroy(f);
    fake_clock_off();
    seen_fini(&c);
}

/* A filter whose user is fn's user when filter_user is NULL. */
static bool only_even_ids(const evs_event *ev, void *user)
{
    cr_assert_not_null(((seen *)user)->ids, "the filter gets `user`");
    return evs_event_id(ev) % 2 == 0;
}

Test(batch, the_filter_gets_user_when_filter_user_is_null, .timeout = 30)
{
    evs_stream *s = mk_stream(NULL);
    seen c;
    seen_init(&c);
    evs_batcher *b;
    ASSERT_RC(evs_batch_subscribe(&b, s, NULL, collect, only_even_ids, &c, NULL), 0);
    for (int i = 0; i < 10; i++)
        publish(s);
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    ASSERT_RC(evs_batch_stop(b), 0);
    cr_assert_eq(c.nids, 5);
    for (size_t i = 0; i < c.nids; i++)
        cr_assert_eq(c.ids[i] % 2, 0);
    ASSERT_RC(evs_stream_destroy(s), 0);
    seen_fini(&c);
}

Test(batch, bad_arguments_are_einval)
{
    evs_stream *s = mk_stream(NULL);
    seen c;
    seen_init(&c);
    evs_batcher *b = (evs_batcher *)1;
    ASSERT_RC(evs_batch_subscribe(NULL, s, NULL, collect, NULL, &c, NULL), EVS_EINVAL);
    ASSERT_RC(evs_batch_subscribe(&b, NULL, NULL, collect, NULL, &c, NULL), EVS_EINVAL);
    cr_assert_null(b);
    ASSERT_RC(evs_batch_subscribe(&b, s, NULL, NULL, NULL, &c, NULL), EVS_EINVAL);
    cr_assert_null(b);
    evs_batch_opts o = {.flush_ms = -1};
    ASSERT_RC(evs_batch_subscribe(&b, s, NULL, collect, NULL, &c, &o), EVS_EINVAL);
    cr_assert_null(b);
    o = (evs_batch_opts){.max_events = SIZE_MAX};
    ASSERT_RC(evs_batch_subscribe(&b, s, NULL, collect, NULL, &c, &o), EVS_EINVAL);
    cr_assert_null(b);
    ASSERT_RC(evs_stream_close(s, EVS_FOREVER, NULL), 0);
    ASSERT_RC(evs_batch_subscribe(&b, s, NULL, collect, NULL, &c, NULL), EVS_ECLOSED);
    cr_assert_null(b);
    ASSERT_RC(evs_stream_destroy(s), 0);
    seen_fini(&c);
}

Test(batch, subscribe_survives_allocation_failure, .timeout = 30)
{
    evs_stream *s = mk_stream(NULL);
    seen c;
    seen_init(&c);
    evs_batcher *b = NULL;
    int rc;
    for (long k = 0;; k++) {
        evs__alloc_fail_after(k);
        rc = evs_batch_subscribe(&b, s, "x", collect, NULL, &c, NULL);
        evs__alloc_fail_after(-1);
        if (rc == 0)
            break;
        cr_assert_eq(rc, EVS_ENOMEM, "k=%ld: got %s", k, evs_errname(rc));
        cr_assert_null(b);
    }
    uint64_t first = publish(s);
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    ASSERT_RC(evs_batch_stop(b), 0);
    assert_consecutive(&c, first, 1);
    ASSERT_RC(evs_stream_destroy(s), 0);
    seen_fini(&c);
}

/* ------------------------------------------------------------------ */
/* Stop racing a publisher, on the real clock so that size flushes,    */
/* time flushes and stop's flush all compete.                          */

typedef struct pub {
    evs_stream *s;
    atomic_bool stop;
    uint64_t first;
    atomic_ulong published;
} pub;

static void *publisher(void *arg)
{
    pub *p = arg;
    while (!atomic_load(&p->stop)) {
        uint64_t id = publish(p->s);
        if (atomic_fetch_add(&p->published, 1) == 0)
            p->first = id;
    }
    return NULL;
}

static void stop_during_publishing(evs_delivery delivery, size_t max, int flush_ms)
{
    evs_stream_opts so = {.delivery = delivery};
    evs_stream *s = mk_stream(&so);
    seen c;
    seen_init(&c);
    evs_batcher *b;
    evs_batch_opts o = {.max_events = max, .flush_ms = flush_ms};
    ASSERT_RC(evs_batch_subscribe(&b, s, NULL, collect, NULL, &c, &o), 0);
    pub p = {.s = s};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, publisher, &p), 0);
    /* Wait (with a deadline) for a few batches, then stop mid-stream. */
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (seen_batches(&c) < 20 || atomic_load(&p.published) < 2000) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        cr_assert_lt(now.tv_sec - t0.tv_sec, 20, "no batches arrived");
        sched_yield();
    }
    ASSERT_RC(evs_batch_stop(b), 0);
    size_t after_stop = c.nids;
    atomic_store(&p.stop, true);
    cr_assert_eq(pthread_join(th, NULL), 0);
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    cr_assert_eq(c.nids, after_stop, "fn was called after stop returned");
    cr_assert_leq(c.nids, atomic_load(&p.published));
    /* Every id from the first, exactly once, in order, across batches. */
    assert_consecutive(&c, p.first, c.nids);
    size_t total = 0;
    for (size_t i = 0; i < c.nbatches; i++) {
        cr_assert_gt(c.sizes[i], 0);
        cr_assert_leq(c.sizes[i], max);
        total += c.sizes[i];
    }
    cr_assert_eq(total, c.nids);
    ASSERT_RC(evs_stream_destroy(s), 0);
    seen_fini(&c);
}

Test(batch, no_event_is_lost_or_repeated_across_stop, .timeout = 60)
{
    for (int round = 0; round < 5; round++)
        stop_during_publishing(EVS_DELIVERY_DISPATCHER, 7, 1);
}

Test(batch, no_event_is_lost_or_repeated_across_stop_inline, .timeout = 60)
{
    for (int round = 0; round < 5; round++)
        stop_during_publishing(EVS_DELIVERY_INLINE, 50, 1);
}
