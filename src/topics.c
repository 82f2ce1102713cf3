/*
 * The topic table (see topics.h): a ck_hs hash set of entries keyed by
 * subject. Entries begin with the key (subject pointer and length), so
 * a lookup passes a bare key and the hash and compare functions read the
 * same prefix of either.
 */
#include "topics.h"

#include <ck_hs.h>

struct evs_topics {
    ck_hs_t hs;
    size_t  max;
};

/* What ck_hs compares: the leading fields of evs_topic. */
struct topic_key {
    const char *subject;
    size_t      len;
};

static void *hs_malloc(size_t n) { return evs__malloc(n); }
static void hs_free(void *p, size_t n, bool defer)
{
    (void)n;
    (void)defer;
    evs__free(p);
}
static struct ck_malloc hs_allocator = {.malloc = hs_malloc, .free = hs_free};

/* FNV-1a, seeded. */
static unsigned long key_hash(const void *obj, unsigned long seed)
{
    const struct topic_key *k = obj;
    uint64_t h = 1469598103934665603ULL ^ seed;
    for (size_t i = 0; i < k->len; i++) {
        h ^= (unsigned char)k->subject[i];
        h *= 1099511628211ULL;
    }
    return (unsigned long)h;
}

static bool key_eq(const void *a, const void *b)
{
    const struct topic_key *x = a, *y = b;
    return x->len == y->len && memcmp(x->subject, y->subject, x->len) == 0;
}

int evs__topics_create(evs_topics **out, size_t max)
{
    evs_topics *t = evs__calloc(1, sizeof(*t));
    *out = NULL;
    if (t == NULL)
        return EVS_ENOMEM;
    if (!ck_hs_init(&t->hs, CK_HS_MODE_OBJECT | CK_HS_MODE_SPMC, key_hash, key_eq,
                    &hs_allocator, 64, 0x9e3779b9)) {
        evs__free(t);
        return EVS_ENOMEM;
    }
    t->max = max;
    *out = t;
    return 0;
}

void evs__topics_destroy(evs_topics *t)
{
    if (t == NULL)
        return;
    ck_hs_iterator_t it = CK_HS_ITERATOR_INITIALIZER;
    void *obj;
    while (ck_hs_next(&t->hs, &it, &obj))
        evs__free(obj);
    ck_hs_destroy(&t->hs);
    evs__free(t);
}

evs_topic *evs__topics_get(evs_topics *t, const char *subject, size_t len, bool *full)
{
    *full = false;
    struct topic_key k = {subject, len};
    unsigned long h = CK_HS_HASH(&t->hs, key_hash, &k);
    evs_topic *e = ck_hs_get(&t->hs, h, &k);
    if (e != NULL)
        return e;
    if (t->max > 0 && ck_hs_count(&t->hs) >= t->max) {
        *full = true;
        return NULL;
    }
    e = evs__malloc(sizeof(*e) + len + 1);
    if (e == NULL)
        return NULL;
    char *copy = (char *)(e + 1);
    memcpy(copy, subject, len);
    copy[len] = '\0';
    e->subject = copy;
    e->len = len;
    e->published = 0;
    e->subscribers = 0;
    if (!ck_hs_put(&t->hs, h, e)) {
        evs__free(e);
        return NULL;
    }
    return e;
}

size_t evs__topics_count(evs_topics *t) { return ck_hs_count(&t->hs); }

size_t evs__topics_list(evs_topics *t, evs_topic **out, size_t max)
{
    ck_hs_iterator_t it = CK_HS_ITERATOR_INITIALIZER;
    void *obj;
    size_t n = 0;
    while (n < max && ck_hs_next(&t->hs, &it, &obj))
        out[n++] = obj;
    return n;
}
