/*
 * The topic table (see topics.h for the bounds and the reclaim rules).
 *
 * Entries sit in a ck_hs keyed by subject (lookups) and in a slot array
 * (the CLOCK hand, sweeps and listing; removal moves the last entry into
 * the hole). Each entry is one allocation: the header, then the subject.
 * Entries begin with the key (subject pointer and length), so a lookup
 * passes a bare key and the hash and compare functions read the same
 * prefix of either.
 *
 * Everything here runs under the router's topics_lock, and no reader
 * uses the hash set or the slot array without it, so replaced ck_hs maps
 * are freed at once. Only the entries themselves outlive an unlink (the
 * caller retires them).
 */
#include "topics.h"

#include <ck_hs.h>

/* Slot arrays and hash maps smaller than this are never shrunk. */
#define MIN_CAP 64

struct evs_topics {
    ck_hs_t     hs;
    evs_topic **slots;     /* slots[0..used): every entry */
    size_t      used, cap; /* entries; slots allocated */
    size_t      hs_peak;   /* most entries since the map was last rebuilt */
    size_t      max;       /* at most this many entries */
    size_t      max_bytes; /* at most this many bytes of entries */
    size_t      bytes;     /* bytes of entries held */
    size_t      hand;      /* CLOCK hand, an index into slots */
    size_t      skip;      /* full-table misses left before reclaiming again */
    unsigned long seed;
};

/* What ck_hs compares: the leading fields of evs_topic. */
struct topic_key {
    const char *subject;
    uint32_t    len;
};

/* One entry's allocation: the header, then the subject and its NUL. */
static size_t entry_bytes(size_t len) { return sizeof(evs_topic) + len + 1; }

static unsigned long entry_hash(const evs_topics *t, const evs_topic *e);

static void *hs_malloc(size_t n) { return evs__malloc(n); }
static void hs_free(void *p, size_t n, bool defer)
{
    (void)n;
    (void)defer; /* no reader without the lock: free at once */
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

/* Object mode (we store pointers); DELETE: per-slot probe bounds, which
 * keep lookups short in a table that sees many removals. */
#define HS_MODE (CK_HS_MODE_OBJECT | CK_HS_MODE_DELETE)

static bool hs_init(ck_hs_t *hs, unsigned long seed, unsigned long cap)
{
    return ck_hs_init(hs, HS_MODE, key_hash, key_eq, &hs_allocator, cap, seed);
}

int evs__topics_create(evs_topics **out, size_t max, size_t max_bytes)
{
    evs_topics *t = evs__calloc(1, sizeof(*t));
    *out = NULL;
    if (t == NULL)
        return EVS_ENOMEM;
    t->seed = 0x9e3779b9ul ^ (unsigned long)(uintptr_t)t;
    if (!hs_init(&t->hs, t->seed, MIN_CAP)) {
        evs__free(t);
        return EVS_ENOMEM;
    }
    t->max = max;
    t->max_bytes = max_bytes;
    *out = t;
    return 0;
}

void evs__topics_destroy(evs_topics *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->used; i++)
        evs__free(t->slots[i]);
    ck_hs_destroy(&t->hs);
    evs__free(t->slots);
    evs__free(t);
}

void evs__topics_free_chain(evs_topic *dead)
{
    while (dead != NULL) {
        evs_topic *next = dead->dead_next;
        evs__free(dead);
        dead = next;
    }
}

/* Unlink slot i's entry and prepend it to *dead. The last entry moves
 * into the hole, so a scan at i must look at slot i again. */
static void unlink_at(evs_topics *t, size_t i, evs_topic **dead)
{
    evs_topic *e = t->slots[i];
    ck_hs_remove(&t->hs, entry_hash(t, e), e);
    t->slots[i] = t->slots[--t->used];
    t->bytes -= entry_bytes(e->len);
    e->dead_next = *dead;
    *dead = e;
}

/* Look at an entry: true if it was idle (no publish, no creation, no
 * unsubscribe) since it was last observed. Activity resets its idle run. */
static bool observe_idle(evs_topic *e)
{
    uint64_t p = evs_load(&e->published);
    if (e->touched || p != e->seen || evs_load(&e->subscribers) > 0) {
        e->seen = p;
        e->touched = false;
        e->idle = 0;
        return false;
    }
    return true;
}

/*
 * The table is full: the CLOCK hand reclaims up to `want` entries with
 * no subscribers that were idle since the hand or a sweep last looked
 * at them. At most two laps plus `want` steps, so the second lap looks
 * again at every entry the first one marked.
 */
static size_t reclaim(evs_topics *t, size_t want, size_t need_bytes, evs_topic **dead)
{
    size_t freed = 0;
    size_t budget = 2 * t->used + want;
    while (budget-- > 0 && t->used > 0 &&
           (freed < want || t->bytes + need_bytes > t->max_bytes)) {
        if (t->hand >= t->used)
            t->hand = 0;
        evs_topic *e = t->slots[t->hand];
        if (observe_idle(e)) {
            unlink_at(t, t->hand, dead); /* look at this slot again */
            freed++;
        } else {
            t->hand++;
        }
    }
    return freed;
}

static bool is_full(const evs_topics *t, size_t bytes)
{
    return t->used >= t->max || t->bytes + bytes > t->max_bytes;
}

/* Grow the slot array for one more entry. */
static bool slots_reserve(evs_topics *t)
{
    if (t->used < t->cap)
        return true;
    size_t ncap = t->cap ? 2 * t->cap : MIN_CAP;
    evs_topic **s = evs__realloc(t->slots, ncap * sizeof(*s));
    if (s == NULL)
        return false;
    t->slots = s;
    t->cap = ncap;
    return true;
}

static unsigned long entry_hash(const evs_topics *t, const evs_topic *e)
{
    struct topic_key k = {e->subject, e->len};
    return key_hash(&k, t->seed);
}

evs_topic *evs__topics_get(evs_topics *t, const char *subject, size_t len, evs_topic **dead)
{
    if (len > UINT32_MAX)
        return NULL;
    struct topic_key k = {subject, (uint32_t)len};
    unsigned long h = CK_HS_HASH(&t->hs, key_hash, &k);
    evs_topic *e = ck_hs_get(&t->hs, h, &k);
    if (e != NULL)
        return e;
    size_t bytes = entry_bytes(len);
    if (bytes > t->max_bytes)
        return NULL;
    if (is_full(t, bytes)) {
        /* After a lap that found nothing, skip the next max/16 misses:
         * a table held by subscribed or busy subjects costs a lap per
         * max/16 new subjects, not one per publish. */
        if (t->skip > 0) {
            t->skip--;
            return NULL;
        }
        size_t want = t->max / 16 ? t->max / 16 : 1;
        if (reclaim(t, want, bytes, dead) == 0 || is_full(t, bytes)) {
            t->skip = want;
            return NULL;
        }
    }
    if (!slots_reserve(t))
        return NULL;
    e = evs__malloc(bytes);
    if (e == NULL)
        return NULL;
    char *copy = (char *)(e + 1);
    memcpy(copy, subject, len);
    copy[len] = '\0';
    *e = (evs_topic){.subject = copy, .len = (uint32_t)len, .touched = true};
    if (!ck_hs_put(&t->hs, h, e)) {
        evs__free(e);
        return NULL;
    }
    t->slots[t->used++] = e;
    t->bytes += bytes;
    if (t->used > t->hs_peak)
        t->hs_peak = t->used;
    return e;
}

/* Give memory back once the table is mostly empty: a quarter of the
 * peak or of the slots is in use. Allocation failure keeps the old
 * storage, which is still correct. */
static void shrink(evs_topics *t)
{
    if (t->hs_peak > MIN_CAP && t->used * 4 < t->hs_peak) {
        ck_hs_t n;
        size_t cap = t->used * 2 > MIN_CAP ? t->used * 2 : MIN_CAP;
        if (hs_init(&n, t->seed, (unsigned long)cap)) {
            bool ok = true;
            for (size_t i = 0; ok && i < t->used; i++)
                ok = ck_hs_put(&n, entry_hash(t, t->slots[i]), t->slots[i]);
            if (ok) {
                ck_hs_destroy(&t->hs);
                ck_hs_move(&t->hs, &n, key_hash, key_eq, &hs_allocator);
                t->hs_peak = t->used;
            } else {
                ck_hs_destroy(&n);
            }
        }
    }
    if (t->cap > MIN_CAP && t->used * 4 < t->cap) {
        size_t ncap = t->used * 2 > MIN_CAP ? t->used * 2 : MIN_CAP;
        evs_topic **s = evs__realloc(t->slots, ncap * sizeof(*s));
        if (s != NULL) {
            t->slots = s;
            t->cap = ncap;
        }
    }
}

size_t evs__topics_sweep(evs_topics *t, evs_topic **dead)
{
    size_t freed = 0;
    for (size_t i = 0; i < t->used;) {
        evs_topic *e = t->slots[i];
        if (observe_idle(e) && ++e->idle >= 2) {
            unlink_at(t, i, dead); /* slot i now holds another entry */
            freed++;
        } else {
            i++;
        }
    }
    t->skip = 0; /* entries may have gone idle: the next full miss looks */
    if (t->hand >= t->used)
        t->hand = 0;
    shrink(t);
    return freed;
}

void evs__topics_touch(evs_topic *e) { e->touched = true; }

size_t evs__topics_count(evs_topics *t) { return t->used; }

size_t evs__topics_bytes(evs_topics *t) { return t->bytes; }

evs_topic *evs__topics_at(evs_topics *t, size_t i) { return t->slots[i]; }
