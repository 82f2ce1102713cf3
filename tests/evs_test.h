/*
 * What several test files share: an assertion that shows error codes by
 * name, and a gate a callback can be held at while the test thread
 * checks what happens meanwhile. Header-only (static functions), so each
 * test file stays a module of its own.
 */
#ifndef EVS_TEST_H
#define EVS_TEST_H

#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>

#include "event.h"
#include "evs_internal.h"
#include "evstream.h"
#include "heartbeat.h"

/* Assert an exact return code and show both names on failure. */
#define ASSERT_RC(call, want)                                                \
    do {                                                                     \
        int rc_ = (call);                                                    \
        cr_assert_eq(rc_, (want), "%s: got %s, want %s", #call,              \
                     evs_errname(rc_), evs_errname(want));                   \
    } while (0)

/* An event with every field chosen, id and timestamp included (an id
 * makes it published), built through the event module's constructor. */
static inline evs_event *event_of(evs_type type, const char *name, const char *topic,
                                  evs_content content, const void *data, size_t len,
                                  const void *meta, size_t meta_len, uint64_t id, int64_t ts)
{
    evs_event_parts p = {
        .type = type,
        .type_name = name,
        .type_name_len = name ? strlen(name) : 0,
        .topic = topic,
        .topic_len = topic ? strlen(topic) : 0,
        .content = content,
        .data = data,
        .len = len,
        .meta = meta,
        .meta_len = meta_len,
        .timestamp = ts,
        .id = id,
    };
    evs_event *ev;
    int rc = evs__event_new(&ev, &p);
    cr_assert_eq(rc, 0, "got %s", evs_errname(rc));
    return ev;
}

/* A gate: callbacks block in gate_pass until the test opens it. */
typedef struct gate {
    pthread_mutex_t mu;
    pthread_cond_t  cv;
    bool            open;
    int             waiting; /* callbacks blocked at the gate now */
} gate;

static inline void gate_init(gate *g)
{
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    g->open = false;
    g->waiting = 0;
}

static inline void gate_destroy(gate *g)
{
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
}

static inline void gate_pass(gate *g)
{
    pthread_mutex_lock(&g->mu);
    g->waiting++;
    pthread_cond_broadcast(&g->cv);
    while (!g->open)
        pthread_cond_wait(&g->cv, &g->mu);
    g->waiting--;
    pthread_mutex_unlock(&g->mu);
}

static inline void gate_open(gate *g)
{
    pthread_mutex_lock(&g->mu);
    g->open = true;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

/* Wait, at most 10 s, until a callback is blocked at the gate. */
static inline void gate_wait_blocked(gate *g)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 10;
    pthread_mutex_lock(&g->mu);
    while (g->waiting == 0) {
        int rc = pthread_cond_timedwait(&g->cv, &g->mu, &dl);
        cr_assert_neq(rc, ETIMEDOUT, "no callback reached the gate");
    }
    pthread_mutex_unlock(&g->mu);
}

/*
 * A fake clock for the heartbeat service (heartbeat.h), so tests of
 * anything that ticks run in milliseconds: install it with
 * evs__hb_set_clock(&fake_clock) before any timer exists, then move time
 * with clock_at_ms, which returns once everything due has run.
 */
static inline int64_t *fake_ns_cell(void)
{
    static int64_t ns;
    return &ns;
}

static inline int64_t fake_now(void *ctx)
{
    (void)ctx;
    return evs_load_acquire(fake_ns_cell());
}

static const struct evs__hb_clock fake_clock = {.now = fake_now};

static inline void clock_at_ms(int64_t ms)
{
    evs_store_release(fake_ns_cell(), ms * 1000000);
    ASSERT_RC(evs__hb_sync(), 0);
}

#endif /* EVS_TEST_H */
