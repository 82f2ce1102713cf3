/*
 * The process-wide epoch (see epoch.h). Each thread gets a record the
 * first time it needs one. When the thread exits, a pthread key
 * destructor reclaims what it can without waiting (waiting there could
 * deadlock: the thread joining this one may be inside a read section)
 * and unregisters the record, so the next new thread recycles it. A
 * record that still has frees pending becomes an orphan; every later
 * retire, and every stream destroy (evs__epoch_reap), polls the orphans
 * (under fallback_lock) and unregisters each once its frees have run.
 * Records are never freed.
 *
 * Polls, not waits: one ck_epoch_poll advances the global epoch only if
 * every active reader has seen the current one, and a free is due two
 * advances after its retire. With no reader in a section a few polls in
 * a row finish the grace period, so thread exit and reap poll up to
 * POLL_ROUNDS times before leaving the rest for later; they never block
 * on a reader (one may be the thread that is joining this one).
 */
#include "epoch.h"

#include "evs_internal.h"

#include <pthread.h>

#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
/* Section ends release it; reclaim callbacks acquire it. */
static char tsan_grace;
#define TSAN_RELEASE() __tsan_release(&tsan_grace)
#define TSAN_ACQUIRE() __tsan_acquire(&tsan_grace)
/* A record handed from the thread that unregisters it to the one that
 * recycles it: ck_epoch's state store and exchange are volatile
 * accesses with standalone fences, which TSan does not see, so the next
 * owner's use would look like a race with the previous owner's (worker
 * threads of pooled subscriptions exit without being joined). */
#define TSAN_RELEASE_RECORD(r) __tsan_release(r)
#define TSAN_ACQUIRE_RECORD(r) __tsan_acquire(r)
#else
#define TSAN_RELEASE() ((void)0)
#define TSAN_ACQUIRE() ((void)0)
#define TSAN_RELEASE_RECORD(r) ((void)(r))
#define TSAN_ACQUIRE_RECORD(r) ((void)(r))
#endif

static ck_epoch_t global_epoch;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static pthread_key_t record_key;
static _Thread_local ck_epoch_record_t *tl_record;

/* Used under fallback_lock by threads that could not get a record. */
static pthread_mutex_t fallback_lock = PTHREAD_MUTEX_INITIALIZER;
static ck_epoch_record_t fallback_record;

/* Exited threads' records with frees still pending, chained through
 * their `ct` pointer. Guarded by fallback_lock. */
static ck_epoch_record_t *orphans;

static void init_once(void);

/* Polls in a row at thread exit and reap: enough for the two epoch
 * advances a free needs when no reader is in a section. */
#define POLL_ROUNDS 4

/* Poll `r` until nothing is pending or POLL_ROUNDS polls are spent. */
static void poll_rounds(ck_epoch_record_t *r)
{
    for (int i = 0; i < POLL_ROUNDS && r->n_pending != 0; i++)
        ck_epoch_poll(r);
}

static void reap_orphans_locked(void)
{
    ck_epoch_record_t **pp = &orphans;
    while (*pp != NULL) {
        ck_epoch_record_t *r = *pp;
        poll_rounds(r);
        if (r->n_pending == 0) {
            *pp = r->ct;
            r->ct = NULL;
            TSAN_RELEASE_RECORD(r);
            ck_epoch_unregister(r);
        } else {
            pp = (ck_epoch_record_t **)&r->ct;
        }
    }
}

static void thread_exit(void *p)
{
    ck_epoch_record_t *r = p;
    poll_rounds(r);
    pthread_mutex_lock(&fallback_lock);
    if (r->n_pending == 0) {
        TSAN_RELEASE_RECORD(r);
        ck_epoch_unregister(r);
    } else {
        r->ct = orphans;
        orphans = r;
    }
    reap_orphans_locked();
    pthread_mutex_unlock(&fallback_lock);
}

static ck_epoch_record_t *record_get(void)
{
    ck_epoch_record_t *r = ck_epoch_recycle(&global_epoch, NULL);
    if (r != NULL)
        TSAN_ACQUIRE_RECORD(r);
    if (r == NULL) {
        /* Records are never freed: the epoch keeps them on its list. */
        r = evs__aligned_alloc(sizeof(*r));
        if (r == NULL)
            return NULL;
        ck_epoch_register(&global_epoch, r, NULL);
    }
    return r;
}

ck_epoch_record_t *evs__epoch_record_new(void)
{
    pthread_once(&once, init_once);
    return record_get();
}

void evs__epoch_record_release(ck_epoch_record_t *r)
{
    if (r != NULL) {
        TSAN_RELEASE_RECORD(r);
        ck_epoch_unregister(r);
    }
}

static void init_once(void)
{
    ck_epoch_init(&global_epoch);
    ck_epoch_register(&global_epoch, &fallback_record, NULL);
    pthread_key_create(&record_key, thread_exit);
}

ck_epoch_record_t *evs__epoch_record(void)
{
    if (evs_likely(tl_record != NULL))
        return tl_record;
    pthread_once(&once, init_once);
    ck_epoch_record_t *r = record_get();
    if (r == NULL)
        return NULL;
    if (pthread_setspecific(record_key, r) != 0) {
        ck_epoch_unregister(r);
        return NULL;
    }
    tl_record = r;
    return r;
}

void evs__epoch_begin(ck_epoch_record_t *r, ck_epoch_section_t *s)
{
    ck_epoch_begin(r, s);
}

void evs__epoch_end(ck_epoch_record_t *r, ck_epoch_section_t *s)
{
    TSAN_RELEASE();
    ck_epoch_end(r, s);
}

void evs__epoch_reclaiming(void)
{
    TSAN_ACQUIRE();
}

void evs__epoch_retire(ck_epoch_entry_t *entry, ck_epoch_cb_t *fn)
{
    ck_epoch_record_t *r = evs__epoch_record();
    if (r != NULL) {
        ck_epoch_call(r, entry, fn);
        ck_epoch_poll(r);
    }
    pthread_mutex_lock(&fallback_lock);
    if (r == NULL)
        ck_epoch_call(&fallback_record, entry, fn);
    ck_epoch_poll(&fallback_record);
    reap_orphans_locked();
    pthread_mutex_unlock(&fallback_lock);
}

void evs__epoch_reap(void)
{
    pthread_once(&once, init_once);
    if (tl_record != NULL)
        poll_rounds(tl_record);
    pthread_mutex_lock(&fallback_lock);
    poll_rounds(&fallback_record);
    reap_orphans_locked();
    pthread_mutex_unlock(&fallback_lock);
}

size_t evs__epoch_orphans(void)
{
    size_t n = 0;
    pthread_mutex_lock(&fallback_lock);
    for (ck_epoch_record_t *r = orphans; r != NULL; r = r->ct)
        n++;
    pthread_mutex_unlock(&fallback_lock);
    return n;
}
