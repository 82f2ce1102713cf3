/*
 * TopicStream routing (see router.h). A route is an index match (one hash
 * lookup plus a token-tree walk, O(tokens)) plus a topic-table lookup; the
 * dispatcher caches both per subject, stamped with the index generation,
 * so a hit costs one hash lookup and any subscribe or unsubscribe
 * invalidates every entry at once. A cached result is stored as one item
 * array: [topic entry, sub, sub, ...].
 */
#include "router.h"

#include <pthread.h>

#include "subject.h"

#define DEFAULT_MAX_TOPICS 100000

struct evs_router {
    pthread_rwlock_t index_lock;
    evs_sublist     *index;
    pthread_mutex_t  topics_lock;
    evs_topics      *topics;
    uint64_t         untracked; /* ck_pr RMW: publishers and the dispatcher */
    /* The dispatcher's. */
    evs_subcache    *cache;
    evs_itemvec      scratch;
};

int evs__router_create(evs_router **out, size_t cache_max, size_t max_topics)
{
    *out = NULL;
    evs_router *r = evs__calloc(1, sizeof(*r));
    if (r == NULL)
        return EVS_ENOMEM;
    int rc = EVS_ENOMEM;
    if (evs__sublist_create(&r->index) != 0 ||
        evs__topics_create(&r->topics, max_topics ? max_topics : DEFAULT_MAX_TOPICS) != 0 ||
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
    pthread_rwlock_destroy(&r->index_lock);
    pthread_mutex_destroy(&r->topics_lock);
    evs__subcache_destroy(r->cache);
    evs__itemvec_fini(&r->scratch);
    evs__topics_destroy(r->topics);
    evs__sublist_destroy(r->index);
    evs__free(r);
}

/* The topic entry for `subject`, made if there is room. */
static evs_topic *topic_of(evs_router *r, const char *subject, size_t len)
{
    bool full;
    pthread_mutex_lock(&r->topics_lock);
    evs_topic *t = evs__topics_get(r->topics, subject, len, &full);
    pthread_mutex_unlock(&r->topics_lock);
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
    if (!evs__pattern_has_wildcard(pattern, len)) {
        /* Listing is best effort: no entry (no room, no memory) leaves
         * the subscription working, just unlisted. */
        *topic = topic_of(r, pattern, len);
        if (*topic != NULL)
            evs_store(&(*topic)->subscribers, evs_load(&(*topic)->subscribers) + 1);
    }
    return 0;
}

void evs__router_remove(evs_router *r, const char *pattern, void *sub, evs_topic *topic)
{
    pthread_rwlock_wrlock(&r->index_lock);
    evs__sublist_remove(r->index, pattern, strlen(pattern), sub);
    pthread_rwlock_unlock(&r->index_lock);
    if (topic != NULL)
        evs_store(&topic->subscribers, evs_load(&topic->subscribers) - 1);
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
    evs_topic *t = topic_of(r, subject, len);
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
    uint64_t gen = evs__sublist_generation(r->index);
    if (!evs__subcache_lookup(r->cache, subject, len, gen, &items, &cnt)) {
        int rc = match_into(r, subject, len, &r->scratch, &gen);
        if (rc != 0)
            return rc;
        /* Not cached for lack of memory: still routed, from scratch. */
        if (evs__subcache_insert(r->cache, subject, len, gen, r->scratch.v, r->scratch.n) != 0 ||
            !evs__subcache_lookup(r->cache, subject, len, gen, &items, &cnt)) {
            items = r->scratch.v;
            cnt = r->scratch.n;
        }
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

size_t evs__router_topic_count(evs_router *r)
{
    pthread_mutex_lock(&r->topics_lock);
    size_t n = evs__topics_count(r->topics);
    pthread_mutex_unlock(&r->topics_lock);
    return n;
}

int evs__router_topics(evs_router *r, evs_topic_fn fn, void *user)
{
    pthread_mutex_lock(&r->topics_lock);
    size_t n = evs__topics_count(r->topics);
    evs_topic **list = evs__malloc((n ? n : 1) * sizeof(*list));
    if (list != NULL)
        n = evs__topics_list(r->topics, list, n);
    pthread_mutex_unlock(&r->topics_lock);
    if (list == NULL)
        return EVS_ENOMEM;
    /* Entries live as long as the table: safe to read unlocked. */
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        evs_topic_stats st = {
            .published = evs_load(&list[i]->published),
            .subscribers = evs_load(&list[i]->subscribers),
        };
        rc = fn(list[i]->subject, &st, user);
    }
    evs__free(list);
    return rc;
}
