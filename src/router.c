/*
 * TopicStream routing (see router.h). A route is an index match (one hash
 * lookup plus a token-tree walk, O(tokens)) plus a topic-table lookup; the
 * dispatcher caches both per subject, stamped with the index generation
 * plus the eviction generation, so a hit costs one hash lookup and any
 * subscribe, unsubscribe or topic reclaim invalidates every entry at
 * once. A cached result is stored as one item array: [topic entry, sub,
 * sub, ...].
 *
 * Reclaiming topic entries. The sweep (a heartbeat-service timer, every
 * idle/2) and a full table (any thread that adds a subject) unlink
 * entries under topics_lock. Who may still hold one: the dispatcher,
 * through a cached route, and any publisher that routed to it, adding to
 * its `published`; both only inside their epoch sections. A subscription
 * holds its entry too, but an entry with subscribers is never reclaimed
 * (the count changes only under topics_lock). So, in order: unlink (no
 * lookup finds the entry), bump evict_gen (no cached route stamped before
 * is used again, so no new reader can reach it), then retire the chain
 * through the epoch (freed once every section that might have read it
 * has ended). A publish racing the reclaim of its subject may count on
 * the retired entry; that count goes with it (stats.topics_evicted says
 * how many entries went).
 */
#include "router.h"

#include <pthread.h>

#include "epoch.h"
#include "heartbeat.h"
#include "subject.h"

struct evs_router {
    pthread_rwlock_t index_lock;
    evs_sublist     *index;
    pthread_mutex_t  topics_lock;
    evs_topics      *topics;
    uint64_t         untracked; /* ck_pr RMW: publishers and the dispatcher */
    /* Entries reclaimed so far: written under topics_lock (evs_store),
     * read anywhere (evs_load). */
    uint64_t         evicted;
    /* Bumped (release, under topics_lock) after each batch of entries
     * is unlinked and before it is retired; read with acquire by the
     * dispatcher. Invariant: a cached route stamped with an older value
     * is never used, so its entry pointer, possibly retired, is never
     * read again. */
    uint64_t         evict_gen;
    /* The sweep timer (NULL: idle reclaim off). Set at create, removed
     * at destroy. */
    evs__hb_timer   *sweeper;
    /* The dispatcher's. */
    evs_subcache    *cache;
    evs_itemvec      scratch;
    uint64_t         cache_evict_gen; /* evict_gen when the cache was last cleared */
};

static void free_chain_cb(ck_epoch_entry_t *e)
{
    evs__epoch_reclaiming();
    evs__topics_free_chain(evs_container_of(e, evs_topic, epoch_entry));
}

/* After topics_lock is released: retire what the table unlinked. The
 * caller bumped evict_gen under the lock after the unlink, so neither a
 * lookup nor a cached route reaches these entries any more. */
static void retire(evs_topic *dead)
{
    if (dead != NULL)
        evs__epoch_retire(&dead->epoch_entry, free_chain_cb);
}

/* Under topics_lock, after the table unlinked `dead`: account for it and
 * invalidate the cached routes. */
static void unlinked_locked(evs_router *r, evs_topic *dead, size_t n)
{
    if (dead == NULL)
        return;
    evs_store(&r->evicted, evs_load(&r->evicted) + n);
    evs_store_release(&r->evict_gen, evs_load(&r->evict_gen) + 1);
}

static size_t chain_len(const evs_topic *dead)
{
    size_t n = 0;
    for (; dead != NULL; dead = dead->dead_next)
        n++;
    return n;
}

size_t evs__router_sweep(evs_router *r)
{
    evs_topic *dead = NULL;
    pthread_mutex_lock(&r->topics_lock);
    size_t n = evs__topics_sweep(r->topics, &dead);
    unlinked_locked(r, dead, n);
    pthread_mutex_unlock(&r->topics_lock);
    retire(dead);
    /* Free what earlier sweeps retired, even when this one retired
     * nothing: a retire only polls its own record, so without this the
     * last chain would wait for the next eviction. */
    ck_epoch_record_t *rec = evs__epoch_record();
    if (rec != NULL)
        ck_epoch_poll(rec);
    return n;
}

static int64_t sweep_fire(void *user, int64_t now_ns)
{
    (void)now_ns;
    evs__router_sweep(user);
    return -1; /* again in idle/2 */
}

int evs__router_create(evs_router **out, size_t cache_max, size_t max_topics, int idle_ms)
{
    *out = NULL;
    if (idle_ms < EVS_TOPIC_IDLE_NEVER)
        return EVS_EINVAL;
    evs_router *r = evs__calloc(1, sizeof(*r));
    if (r == NULL)
        return EVS_ENOMEM;
    if (max_topics == 0)
        max_topics = EVS__ROUTER_DEFAULT_MAX_TOPICS;
    size_t max_bytes = max_topics > SIZE_MAX / EVS__ROUTER_BYTES_PER_TOPIC
                           ? SIZE_MAX
                           : max_topics * EVS__ROUTER_BYTES_PER_TOPIC;
    int rc = EVS_ENOMEM;
    if (evs__sublist_create(&r->index) != 0 ||
        evs__topics_create(&r->topics, max_topics, max_bytes) != 0 ||
        evs__subcache_create(&r->cache, cache_max, 0) != 0)
        goto fail;
    if (pthread_rwlock_init(&r->index_lock, NULL) != 0) {
        rc = EVS_ESYSTEM;
        goto fail;
    }
    if (pthread_mutex_init(&r->topics_lock, NULL) != 0) {
        pthread_rwlock_destroy(&r->index_lock);
        rc = EVS_ESYSTEM;
        goto fail;
    }
    if (idle_ms != EVS_TOPIC_IDLE_NEVER) {
        int64_t period = (int64_t)(idle_ms ? idle_ms : EVS__ROUTER_DEFAULT_IDLE_MS) * 500000;
        if ((rc = evs__hb_add(&r->sweeper, period > 0 ? period : 1, sweep_fire, r)) != 0) {
            pthread_mutex_destroy(&r->topics_lock);
            pthread_rwlock_destroy(&r->index_lock);
            goto fail;
        }
    }
    *out = r;
    return 0;
fail:
    evs__subcache_destroy(r->cache);
    evs__topics_destroy(r->topics);
    evs__sublist_destroy(r->index);
    evs__free(r);
    return rc;
}

void evs__router_destroy(evs_router *r)
{
    if (r == NULL)
        return;
    if (r->sweeper != NULL)
        evs__hb_remove(r->sweeper); /* no sweep runs after this */
    pthread_rwlock_destroy(&r->index_lock);
    pthread_mutex_destroy(&r->topics_lock);
    evs__subcache_destroy(r->cache);
    evs__itemvec_fini(&r->scratch);
    /* Retired chains free themselves through the epoch; they hold no
     * pointer into the router. */
    evs__topics_destroy(r->topics);
    evs__sublist_destroy(r->index);
    evs__free(r);
}

/* The topic entry for `subject`, made if there is room; with
 * `subscribe`, its subscriber count raised under the same lock hold, so
 * no sweep can reclaim it in between. */
static evs_topic *topic_of(evs_router *r, const char *subject, size_t len, bool subscribe)
{
    evs_topic *dead = NULL;
    pthread_mutex_lock(&r->topics_lock);
    evs_topic *t = evs__topics_get(r->topics, subject, len, &dead);
    if (t != NULL && subscribe)
        evs_store(&t->subscribers, evs_load(&t->subscribers) + 1);
    unlinked_locked(r, dead, chain_len(dead));
    pthread_mutex_unlock(&r->topics_lock);
    retire(dead);
    return t;
}

int evs__router_add(evs_router *r, const char *pattern, void *sub, evs_topic **topic)
{
    size_t len = strlen(pattern);
    *topic = NULL;
    pthread_rwlock_wrlock(&r->index_lock);
    int rc = evs__sublist_insert(r->index, pattern, len, sub);
    pthread_rwlock_unlock(&r->index_lock);
    if (rc != 0)
        return rc;
    /* Listing is best effort: no entry (no room, no memory) leaves the
     * subscription working, just unlisted. */
    if (!evs__pattern_has_wildcard(pattern, len))
        *topic = topic_of(r, pattern, len, true);
    return 0;
}

void evs__router_remove(evs_router *r, const char *pattern, void *sub, evs_topic *topic)
{
    pthread_rwlock_wrlock(&r->index_lock);
    evs__sublist_remove(r->index, pattern, strlen(pattern), sub);
    pthread_rwlock_unlock(&r->index_lock);
    if (topic != NULL) {
        /* Our count kept the entry linked until now; once it is zero the
         * entry may be reclaimed, and the caller never uses it again. */
        pthread_mutex_lock(&r->topics_lock);
        evs_store(&topic->subscribers, evs_load(&topic->subscribers) - 1);
        evs__topics_touch(topic);
        pthread_mutex_unlock(&r->topics_lock);
    }
}

/* Match under the read lock into `out` (emptied first), with slot 0
 * reserved for the topic entry. Returns the index generation matched. */
static int match_into(evs_router *r, const char *subject, size_t len, evs_itemvec *out,
                      uint64_t *gen)
{
    out->n = 0;
    if (evs__itemvec_push(out, NULL) != 0)
        return EVS_ENOMEM;
    pthread_rwlock_rdlock(&r->index_lock);
    *gen = evs__sublist_generation(r->index);
    int rc = evs__sublist_match(r->index, subject, len, out);
    pthread_rwlock_unlock(&r->index_lock);
    if (rc < 0)
        return rc;
    evs_topic *t = topic_of(r, subject, len, false);
    if (t == NULL)
        ck_pr_inc_64(&r->untracked);
    out->v[0] = t;
    return 0;
}

int evs__router_route_cached(evs_router *r, const char *subject, size_t len,
                             void *const **subs, size_t *n, evs_topic **topic)
{
    void *const *items;
    size_t cnt;
    /* Read before any topic lookup below: an entry reclaimed after this
     * read bumps evict_gen past `eg`, so a route stamped with it fails
     * every later lookup. */
    uint64_t eg = evs_load_acquire(&r->evict_gen);
    if (eg != r->cache_evict_gen) {
        /* Every entry is stale now: free them (and the cache's storage)
         * rather than wait for CLOCK to reuse them. */
        evs__subcache_clear(r->cache);
        r->cache_evict_gen = eg;
    }
    /* Both generations only grow, so their sum equals a stamp only while
     * neither has moved since the stamp was taken. */
    uint64_t gen = evs__sublist_generation(r->index) + eg;
    if (!evs__subcache_lookup(r->cache, subject, len, gen, &items, &cnt)) {
        int rc = match_into(r, subject, len, &r->scratch, &gen);
        if (rc != 0)
            return rc;
        gen += eg;
        /* Not cached (no memory, too large): still routed, from scratch. */
        if (evs__subcache_insert(r->cache, subject, len, gen, r->scratch.v, r->scratch.n) != 0 ||
            !evs__subcache_lookup(r->cache, subject, len, gen, &items, &cnt)) {
            items = r->scratch.v;
            cnt = r->scratch.n;
        }
    } else if (items[0] == NULL) {
        ck_pr_inc_64(&r->untracked); /* counted on a miss by match_into */
    }
    *topic = items[0];
    *subs = items + 1;
    *n = cnt - 1;
    return 0;
}

int evs__router_route(evs_router *r, const char *subject, size_t len, evs_itemvec *out,
                      evs_topic **topic)
{
    uint64_t gen;
    int rc = match_into(r, subject, len, out, &gen);
    if (rc == 0)
        *topic = out->v[0];
    return rc;
}

uint64_t evs__router_untracked(evs_router *r) { return evs_load(&r->untracked); }

uint64_t evs__router_evicted(evs_router *r) { return evs_load(&r->evicted); }

size_t evs__router_topic_count(evs_router *r)
{
    pthread_mutex_lock(&r->topics_lock);
    size_t n = evs__topics_count(r->topics);
    pthread_mutex_unlock(&r->topics_lock);
    return n;
}

/* One subject of a listing snapshot; the subjects follow the array. */
struct snap {
    const char     *subject;
    evs_topic_stats st;
};

int evs__router_topics(evs_router *r, evs_topic_fn fn, void *user)
{
    /* Copy under the lock: an entry may be reclaimed as soon as the lock
     * is released, and fn runs with no lock held. The copy is bounded
     * by the table's own bounds (max_topics entries, their bytes). */
    pthread_mutex_lock(&r->topics_lock);
    size_t n = evs__topics_count(r->topics);
    size_t text = evs__topics_bytes(r->topics); /* covers every subject + NUL */
    struct snap *list = evs__malloc(n * sizeof(*list) + text + 1);
    if (list != NULL) {
        char *p = (char *)(list + n);
        for (size_t i = 0; i < n; i++) {
            const evs_topic *e = evs__topics_at(r->topics, i);
            memcpy(p, e->subject, e->len + 1);
            list[i].subject = p;
            list[i].st.published = evs_load(&e->published);
            list[i].st.subscribers = evs_load(&e->subscribers);
            p += e->len + 1;
        }
    }
    pthread_mutex_unlock(&r->topics_lock);
    if (list == NULL)
        return EVS_ENOMEM;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = fn(list[i].subject, &list[i].st, user);
    evs__free(list);
    return rc;
}
