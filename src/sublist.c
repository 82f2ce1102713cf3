/*
 * The subscription index and the subject -> result cache.
 *
 * Index. A pattern without wildcard tokens matches one subject, itself,
 * so it goes into `exact`, a ck_hs keyed by the whole string: publishing
 * to a subject finds all of them with one lookup. A pattern with a
 * wildcard goes into a token tree in the manner of nats-server's sublist:
 * each level holds its literal children in a ck_hs keyed by token, one
 * '*' child, and the items of patterns that end in '>' there. A match
 * walks the tree with the subject's tokens; at each level it takes the
 * '>' items, follows the literal child, and also follows the '*' child (a
 * branch, kept on an explicit stack so that deep patterns cannot exhaust
 * the C stack). Every node is reached by one prefix only, so each stored
 * (pattern, item) insertion is reported at most once per match.
 *
 * Invariant: every node in the tree holds items or has a child. Remove
 * prunes the nodes it empties, and a failed insert prunes the nodes it
 * had created (they are exactly the empty ones on its path), which is
 * what makes a failed insert leave no trace.
 *
 * Hash tables: ck_hs in object mode; every object starts with a struct
 * hkey (string, length, hash), so the hash is computed once per key and
 * growth never rehashes strings. Tables allocate through evs__malloc so
 * that failure injection reaches them. ck_hs's removals leave tombstones
 * that later insertions reuse; lookups are bounded by the table's probe
 * maximum, so they stay short.
 *
 * Cache. Subject -> a copy of the match result, stamped with the
 * sublist generation it was computed at; a stamp other than the current
 * generation is a miss, so a subscribe or unsubscribe invalidates the
 * whole cache in O(1). Entries sit in a ck_hs (by subject) and in a slot
 * array that a CLOCK hand sweeps when the cache is full: stale entries go
 * first, then entries not hit since the hand last passed.
 *
 * Threads: none of this is thread-safe; the caller serialises the
 * sublist (SPEC.md) and a cache belongs to one thread. ck_hs frees
 * replaced maps at once (the `defer` hint is ignored) because no reader
 * runs concurrently with a writer.
 */
#include "sublist.h"
#include "subject.h"

#include <ck_hs.h>
#include <limits.h>

/* ---- hashing -------------------------------------------------------- */

/*
 * MurmurHash64A (Austin Appleby, public domain): eight bytes per step,
 * well mixed, seeded per table so that chosen subjects cannot be made to
 * collide ahead of time.
 */
static uint64_t hash_bytes(const void *key, size_t len, uint64_t seed)
{
    const uint64_t m = 0xc6a4a7935bd1e995ull;
    const int r = 47;
    const unsigned char *p = key;
    uint64_t h = seed ^ ((uint64_t)len * m);
    size_t blocks = len / 8;
    for (size_t i = 0; i < blocks; i++) {
        uint64_t k;
        memcpy(&k, p + 8 * i, 8);
        k *= m;
        k ^= k >> r;
        k *= m;
        h ^= k;
        h *= m;
    }
    if (len & 7) {
        uint64_t k = 0;
        memcpy(&k, p + 8 * blocks, len & 7); /* little-endian, as the original */
        h ^= k;
        h *= m;
    }
    h ^= h >> r;
    h *= m;
    h ^= h >> r;
    return h;
}

/* The head of every object stored in a ck_hs here, and the lookup key. */
struct hkey {
    const char *s;      /* the key bytes (inside the object when stored) */
    size_t len;
    unsigned long hash; /* hash_bytes(s, len, table seed) */
};

static unsigned long hkey_hash(const void *o, unsigned long seed)
{
    (void)seed; /* already folded in when the hash was computed */
    return ((const struct hkey *)o)->hash;
}

static bool hkey_eq(const void *a, const void *b)
{
    const struct hkey *x = a, *y = b;
    return x->hash == y->hash && x->len == y->len && memcmp(x->s, y->s, x->len) == 0;
}

static void *hs_malloc(size_t n) { return evs__malloc(n); }

static void *hs_realloc(void *p, size_t old, size_t n, bool defer)
{
    (void)old;
    (void)defer;
    return evs__realloc(p, n);
}

static void hs_free(void *p, size_t n, bool defer)
{
    (void)n;
    (void)defer; /* no concurrent readers: free at once */
    evs__free(p);
}

static struct ck_malloc hs_allocator = {hs_malloc, hs_realloc, hs_free};

/* Object mode (we store pointers); DELETE: probe bounds per slot, which
 * keep lookups short in tables that see many removals. */
#define HS_MODE (CK_HS_MODE_OBJECT | CK_HS_MODE_DELETE)

static bool hs_init(ck_hs_t *hs, unsigned long capacity, unsigned long seed)
{
    return ck_hs_init(hs, HS_MODE, hkey_hash, hkey_eq, &hs_allocator, capacity, seed);
}

static void *hs_get(const ck_hs_t *hs, const char *s, size_t len, unsigned long h)
{
    struct hkey k = {s, len, h};
    /* ck_hs_get does not modify the table; its prototype is not const. */
    return ck_hs_get((ck_hs_t *)(uintptr_t)hs, h, &k);
}

static unsigned long make_seed(const void *salt)
{
    uint64_t x = (uint64_t)evs__now_mono_ns() ^ (uint64_t)(uintptr_t)salt;
    return (unsigned long)hash_bytes(&x, sizeof x, 0x9e3779b97f4a7c15ull);
}

/* ---- item vectors --------------------------------------------------- */

static int vec_reserve(evs_itemvec *vec, size_t extra)
{
    if (extra <= vec->cap - vec->n)
        return 0;
    if (extra > SIZE_MAX / sizeof(void *) / 2 - vec->n)
        return EVS_ENOMEM;
    size_t cap = vec->cap ? vec->cap : 2;
    while (cap < vec->n + extra)
        cap *= 2;
    void **v = evs__realloc(vec->v, cap * sizeof(void *));
    if (v == NULL)
        return EVS_ENOMEM;
    vec->v = v;
    vec->cap = cap;
    return 0;
}

int evs__itemvec_push(evs_itemvec *vec, void *item)
{
    if (vec_reserve(vec, 1) != 0)
        return EVS_ENOMEM;
    vec->v[vec->n++] = item;
    return 0;
}

void evs__itemvec_fini(evs_itemvec *vec)
{
    evs__free(vec->v);
    vec->v = NULL;
    vec->n = vec->cap = 0;
}

static int vec_append(evs_itemvec *vec, void *const *items, size_t n)
{
    if (n == 0)
        return 0;
    if (vec_reserve(vec, n) != 0)
        return EVS_ENOMEM;
    memcpy(vec->v + vec->n, items, n * sizeof(void *));
    vec->n += n;
    return 0;
}

/* Remove one copy of item (the latest added); order is not kept.
 * Frees the storage when the vector empties. */
static bool vec_remove(evs_itemvec *vec, void *item)
{
    for (size_t i = vec->n; i-- > 0;) {
        if (vec->v[i] == item) {
            vec->v[i] = vec->v[--vec->n];
            if (vec->n == 0)
                evs__itemvec_fini(vec);
            return true;
        }
    }
    return false;
}

/* ---- the index ------------------------------------------------------ */

/* A wildcard-free pattern and its items. */
struct exact {
    struct hkey k; /* first: the object the table stores; k.s = name */
    evs_itemvec items;
    char name[];
};

struct node;

/* The children of one token position. */
struct level {
    ck_hs_t lits;      /* struct node * by token; initialised iff nlits > 0 */
    size_t nlits;      /* literal children */
    struct node *pwc;  /* the '*' child, or NULL */
    evs_itemvec fwc;   /* items of patterns ending in '>' at this level */
};

/* One token of one or more wildcard patterns. */
struct node {
    struct hkey k;              /* first; the token (unused for '*') */
    struct node *parent;        /* owner of the level this node is in; NULL: root */
    struct node *all_prev, *all_next; /* every node, for destroy */
    bool is_pwc;                /* this is its level's '*' child */
    evs_itemvec items;          /* patterns that end at this token */
    struct level next;          /* the following token */
    char tok[];
};

struct evs_sublist {
    ck_hs_t exact;        /* struct exact * by whole pattern */
    struct level root;    /* first token of wildcard patterns */
    struct node *all;     /* list of every tree node */
    unsigned long seed;   /* hash seed of every table of this sublist */
    size_t count;         /* live (pattern, item) pairs */
    /* Bumped (release store) after every successful change. Written only
     * under the caller's lock; read by anyone (acquire). */
    uint64_t gen;
};

static bool level_empty(const struct level *l)
{
    return l->nlits == 0 && l->pwc == NULL && l->fwc.n == 0;
}

static bool node_empty(const struct node *n)
{
    return n->items.n == 0 && level_empty(&n->next);
}

static struct level *parent_level(evs_sublist *sl, struct node *n)
{
    return n->parent ? &n->parent->next : &sl->root;
}

static struct node *level_find(const struct level *l, const char *tok, size_t len,
                               unsigned long h)
{
    return l->nlits == 0 ? NULL : hs_get(&l->lits, tok, len, h);
}

static struct node *node_new(evs_sublist *sl, struct node *parent, const char *tok,
                             size_t len, unsigned long h, bool pwc)
{
    struct node *n = evs__calloc(1, sizeof *n + len);
    if (n == NULL)
        return NULL;
    memcpy(n->tok, tok, len);
    n->k.s = n->tok;
    n->k.len = len;
    n->k.hash = h;
    n->parent = parent;
    n->is_pwc = pwc;
    n->all_next = sl->all;
    if (sl->all != NULL)
        sl->all->all_prev = n;
    sl->all = n;
    return n;
}

static void node_free(evs_sublist *sl, struct node *n)
{
    if (n->all_prev != NULL)
        n->all_prev->all_next = n->all_next;
    else
        sl->all = n->all_next;
    if (n->all_next != NULL)
        n->all_next->all_prev = n->all_prev;
    if (n->next.nlits > 0)
        ck_hs_destroy(&n->next.lits);
    evs__itemvec_fini(&n->items);
    evs__itemvec_fini(&n->next.fwc);
    evs__free(n);
}

/* Add a literal child for tok to l. Returns it, or NULL (no memory; l is
 * unchanged). */
static struct node *level_add_lit(evs_sublist *sl, struct level *l, struct node *parent,
                                  const char *tok, size_t len, unsigned long h)
{
    struct node *n = node_new(sl, parent, tok, len, h, false);
    if (n == NULL)
        return NULL;
    if (l->nlits == 0 && !hs_init(&l->lits, 8, sl->seed)) {
        node_free(sl, n);
        return NULL;
    }
    if (!ck_hs_put(&l->lits, h, &n->k)) {
        if (l->nlits == 0)
            ck_hs_destroy(&l->lits);
        node_free(sl, n);
        return NULL;
    }
    l->nlits++;
    return n;
}

/* Take empty nodes out of the tree, from n up towards the root. */
static void prune(evs_sublist *sl, struct node *n)
{
    while (n != NULL && node_empty(n)) {
        struct node *up = n->parent;
        struct level *l = parent_level(sl, n);
        if (n->is_pwc) {
            l->pwc = NULL;
        } else {
            ck_hs_remove(&l->lits, n->k.hash, &n->k);
            if (--l->nlits == 0)
                ck_hs_destroy(&l->lits);
        }
        node_free(sl, n);
        n = up;
    }
}

/* The token at *pos of s[0..len) (a valid pattern or subject); moves *pos
 * past it and its '.'. */
static size_t token_at(const char *s, size_t len, size_t *pos)
{
    const char *p = s + *pos;
    const char *dot = memchr(p, '.', len - *pos);
    size_t tl = dot ? (size_t)(dot - p) : len - *pos;
    *pos += tl + 1;
    return tl;
}

static bool is_wild(const char *tok, size_t tl, char w) { return tl == 1 && tok[0] == w; }

int evs__sublist_create(evs_sublist **out)
{
    if (out == NULL)
        return EVS_EINVAL;
    *out = NULL;
    evs_sublist *sl = evs__calloc(1, sizeof *sl);
    if (sl == NULL)
        return EVS_ENOMEM;
    sl->seed = make_seed(sl);
    if (!hs_init(&sl->exact, 64, sl->seed)) {
        evs__free(sl);
        return EVS_ENOMEM;
    }
    *out = sl;
    return 0;
}

void evs__sublist_destroy(evs_sublist *sl)
{
    if (sl == NULL)
        return;
    ck_hs_iterator_t it = CK_HS_ITERATOR_INITIALIZER;
    void *o;
    while (ck_hs_next(&sl->exact, &it, &o)) {
        struct exact *e = o;
        evs__itemvec_fini(&e->items);
        evs__free(e);
    }
    ck_hs_destroy(&sl->exact);
    while (sl->all != NULL)
        node_free(sl, sl->all); /* no unlinking from levels: all go */
    if (sl->root.nlits > 0)
        ck_hs_destroy(&sl->root.lits);
    evs__itemvec_fini(&sl->root.fwc);
    evs__free(sl);
}

static void bump(evs_sublist *sl) { evs_store_release(&sl->gen, sl->gen + 1); }

static int insert_exact(evs_sublist *sl, const char *p, size_t len, void *item)
{
    unsigned long h = (unsigned long)hash_bytes(p, len, sl->seed);
    struct exact *e = hs_get(&sl->exact, p, len, h);
    if (e != NULL)
        return evs__itemvec_push(&e->items, item);
    e = evs__calloc(1, sizeof *e + len);
    if (e == NULL)
        return EVS_ENOMEM;
    memcpy(e->name, p, len);
    e->k.s = e->name;
    e->k.len = len;
    e->k.hash = h;
    if (evs__itemvec_push(&e->items, item) != 0 || !ck_hs_put(&sl->exact, h, &e->k)) {
        evs__itemvec_fini(&e->items);
        evs__free(e);
        return EVS_ENOMEM;
    }
    return 0;
}

static int insert_tree(evs_sublist *sl, const char *p, size_t len, void *item)
{
    struct level *l = &sl->root;
    struct node *n = NULL; /* owner of l */
    size_t pos = 0;
    while (pos <= len) {
        const char *tok = p + pos;
        size_t tl = token_at(p, len, &pos);
        if (is_wild(tok, tl, '>')) { /* validation made it the last token */
            if (evs__itemvec_push(&l->fwc, item) != 0)
                goto nomem;
            return 0;
        }
        struct node *c;
        if (is_wild(tok, tl, '*')) {
            if ((c = l->pwc) == NULL) {
                if ((c = node_new(sl, n, tok, tl, 0, true)) == NULL)
                    goto nomem;
                l->pwc = c;
            }
        } else {
            unsigned long h = (unsigned long)hash_bytes(tok, tl, sl->seed);
            if ((c = level_find(l, tok, tl, h)) == NULL &&
                (c = level_add_lit(sl, l, n, tok, tl, h)) == NULL)
                goto nomem;
        }
        n = c;
        l = &c->next;
    }
    if (evs__itemvec_push(&n->items, item) == 0)
        return 0;
nomem:
    prune(sl, n); /* the nodes this call created, and only those, are empty */
    return EVS_ENOMEM;
}

int evs__sublist_insert(evs_sublist *sl, const char *pattern, size_t len, void *item)
{
    if (sl == NULL || evs__pattern_validate(pattern, len) != 0)
        return EVS_EINVAL;
    int rc = evs__pattern_has_wildcard(pattern, len) ? insert_tree(sl, pattern, len, item)
                                                     : insert_exact(sl, pattern, len, item);
    if (rc != 0)
        return rc;
    sl->count++;
    bump(sl);
    return 0;
}

static int remove_exact(evs_sublist *sl, const char *p, size_t len, void *item)
{
    unsigned long h = (unsigned long)hash_bytes(p, len, sl->seed);
    struct exact *e = hs_get(&sl->exact, p, len, h);
    if (e == NULL || !vec_remove(&e->items, item))
        return EVS_ENOTFOUND;
    if (e->items.n == 0) {
        ck_hs_remove(&sl->exact, h, &e->k);
        evs__free(e);
    }
    return 0;
}

static int remove_tree(evs_sublist *sl, const char *p, size_t len, void *item)
{
    struct level *l = &sl->root;
    struct node *n = NULL;
    size_t pos = 0;
    while (pos <= len) {
        const char *tok = p + pos;
        size_t tl = token_at(p, len, &pos);
        if (is_wild(tok, tl, '>')) {
            if (!vec_remove(&l->fwc, item))
                return EVS_ENOTFOUND;
            prune(sl, n);
            return 0;
        }
        struct node *c;
        if (is_wild(tok, tl, '*'))
            c = l->pwc;
        else
            c = level_find(l, tok, tl, (unsigned long)hash_bytes(tok, tl, sl->seed));
        if (c == NULL)
            return EVS_ENOTFOUND;
        n = c;
        l = &c->next;
    }
    if (!vec_remove(&n->items, item))
        return EVS_ENOTFOUND;
    prune(sl, n);
    return 0;
}

int evs__sublist_remove(evs_sublist *sl, const char *pattern, size_t len, void *item)
{
    if (sl == NULL || evs__pattern_validate(pattern, len) != 0)
        return EVS_EINVAL;
    int rc = evs__pattern_has_wildcard(pattern, len) ? remove_tree(sl, pattern, len, item)
                                                     : remove_exact(sl, pattern, len, item);
    if (rc != 0)
        return rc;
    sl->count--;
    bump(sl);
    return 0;
}

/* A branch still to walk: level l against the subject from byte pos. */
struct frame {
    const struct level *l;
    size_t pos;
};

/* Frames kept on the C stack; deeper '*' chains spill to the heap. */
#define MATCH_STACK 32

static int match_tree(const evs_sublist *sl, const char *s, size_t len, evs_itemvec *out)
{
    struct frame local[MATCH_STACK];
    struct frame *stack = local;
    size_t cap = MATCH_STACK, top = 0;
    int rc = 0;

    stack[top++] = (struct frame){&sl->root, 0};
    while (top > 0) {
        const struct level *l = stack[top - 1].l;
        size_t pos = stack[top - 1].pos;
        top--;
        for (;;) {
            const char *tok = s + pos;
            size_t tl = token_at(s, len, &pos);
            bool last = pos > len;
            if (l->fwc.n > 0 && (rc = vec_append(out, l->fwc.v, l->fwc.n)) != 0)
                goto done;
            const struct node *w = l->pwc;
            if (w != NULL) {
                if (last) {
                    if ((rc = vec_append(out, w->items.v, w->items.n)) != 0)
                        goto done;
                } else if (!level_empty(&w->next)) {
                    if (top == cap) {
                        struct frame *ns = evs__malloc(2 * cap * sizeof *ns);
                        if (ns == NULL) {
                            rc = EVS_ENOMEM;
                            goto done;
                        }
                        memcpy(ns, stack, top * sizeof *ns);
                        if (stack != local)
                            evs__free(stack);
                        stack = ns;
                        cap *= 2;
                    }
                    stack[top++] = (struct frame){&w->next, pos};
                }
            }
            if (l->nlits == 0)
                break;
            const struct node *c =
                level_find(l, tok, tl, (unsigned long)hash_bytes(tok, tl, sl->seed));
            if (c == NULL)
                break;
            if (last) {
                if ((rc = vec_append(out, c->items.v, c->items.n)) != 0)
                    goto done;
                break;
            }
            l = &c->next;
        }
    }
done:
    if (stack != local)
        evs__free(stack);
    return rc;
}

int evs__sublist_match(const evs_sublist *sl, const char *subject, size_t len, evs_itemvec *out)
{
    if (sl == NULL || out == NULL || evs__subject_validate(subject, len) != 0)
        return EVS_EINVAL;
    size_t n0 = out->n;
    unsigned long h = (unsigned long)hash_bytes(subject, len, sl->seed);
    const struct exact *e = hs_get(&sl->exact, subject, len, h);
    if (e != NULL && vec_append(out, e->items.v, e->items.n) != 0)
        goto nomem;
    if (!level_empty(&sl->root) && match_tree(sl, subject, len, out) != 0)
        goto nomem;
    if (out->n - n0 > INT_MAX)
        goto nomem; /* cannot report the count */
    return (int)(out->n - n0);
nomem:
    out->n = n0;
    return EVS_ENOMEM;
}

size_t evs__sublist_count(const evs_sublist *sl) { return sl->count; }

uint64_t evs__sublist_generation(const evs_sublist *sl) { return evs_load_acquire(&sl->gen); }

/* ---- the cache ------------------------------------------------------ */

/*
 * One cached result. The subject's bytes follow the header so that a hit
 * reads one or two cache lines before the items; the items follow the
 * subject, 8-byte aligned. A lookup over a large cache is bound by
 * memory latency, so this layout matters more than instruction counts.
 */
struct centry {
    struct hkey k;  /* first; k.s = key */
    uint64_t gen;   /* sublist generation the result was computed at */
    void **items;   /* n items, inside this allocation */
    uint32_t n;
    uint32_t slot;  /* index in slots[] */
    uint32_t size;  /* bytes of this allocation (at most max_bytes / 64) */
    bool ref;       /* CLOCK: hit since the hand last passed */
    char key[];
};

struct evs_subcache {
    ck_hs_t hs;             /* struct centry * by subject */
    struct centry **slots;  /* slots[0..used): every entry, for CLOCK */
    size_t used, cap;       /* entries; slots allocated */
    size_t max;             /* at most this many entries */
    size_t max_bytes;       /* and at most this many bytes of entries */
    size_t bytes;           /* bytes of entries held */
    size_t hand;            /* CLOCK hand, an index into slots */
    uint64_t last_gen;      /* newest generation inserted: older entries are stale */
    unsigned long seed;
};

int evs__subcache_create(evs_subcache **out, size_t max_entries, size_t max_bytes)
{
    if (out == NULL)
        return EVS_EINVAL;
    *out = NULL;
    if (max_entries > ((size_t)1 << 30) || max_bytes > EVS_SUBCACHE_MAX_BYTES ||
        (max_bytes > 0 && max_bytes < EVS_SUBCACHE_MIN_BYTES))
        return EVS_EINVAL;
    evs_subcache *c = evs__calloc(1, sizeof *c);
    if (c == NULL)
        return EVS_ENOMEM;
    c->max = max_entries ? max_entries : EVS_SUBCACHE_DEFAULT_MAX;
    c->max_bytes = max_bytes ? max_bytes : EVS_SUBCACHE_DEFAULT_BYTES;
    c->seed = make_seed(c);
    /* No CK_HS_MODE_DELETE: its per-slot probe bounds cost a second cache
     * miss per lookup, and cache lookups are mostly hits, which stop at
     * their entry whatever the tombstones. */
    if (!ck_hs_init(&c->hs, CK_HS_MODE_OBJECT, hkey_hash, hkey_eq, &hs_allocator, 64, c->seed)) {
        evs__free(c);
        return EVS_ENOMEM;
    }
    *out = c;
    return 0;
}

void evs__subcache_clear(evs_subcache *c)
{
    for (size_t i = 0; i < c->used; i++) {
        ck_hs_remove(&c->hs, c->slots[i]->k.hash, &c->slots[i]->k);
        evs__free(c->slots[i]);
    }
    c->used = 0;
    c->hand = 0;
    c->bytes = 0;
    /* Give the map and the slot array back too; a failed reset keeps
     * the old (empty) map, which is still correct. */
    (void)ck_hs_reset_size(&c->hs, 64);
    evs__free(c->slots);
    c->slots = NULL;
    c->cap = 0;
}

void evs__subcache_destroy(evs_subcache *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < c->used; i++)
        evs__free(c->slots[i]);
    ck_hs_destroy(&c->hs);
    evs__free(c->slots);
    evs__free(c);
}

size_t evs__subcache_count(const evs_subcache *c) { return c->used; }

size_t evs__subcache_bytes(const evs_subcache *c) { return c->bytes; }

bool evs__subcache_lookup(evs_subcache *c, const char *subject, size_t len, uint64_t gen,
                          void *const **items, size_t *n)
{
    unsigned long h = (unsigned long)hash_bytes(subject, len, c->seed);
    struct centry *e = hs_get(&c->hs, subject, len, h);
    if (e == NULL || e->gen != gen)
        return false;
    if (!e->ref)
        e->ref = true; /* no store when set: keep hot lines clean */
    *items = e->items;
    *n = e->n;
    return true;
}

/* CLOCK: the first entry at or after the hand that is stale or was not
 * hit since the hand last passed; clears the bits it passes over. Ends
 * within two turns. */
static struct centry *clock_victim(evs_subcache *c)
{
    for (;;) {
        if (c->hand >= c->used)
            c->hand = 0;
        struct centry *e = c->slots[c->hand++];
        if (e->gen != c->last_gen || !e->ref)
            return e;
        e->ref = false;
    }
}

/* Remove the CLOCK victim outright (its slot filled by the last entry),
 * to make room in bytes. */
static void drop_victim(evs_subcache *c)
{
    struct centry *v = clock_victim(c);
    ck_hs_remove(&c->hs, v->k.hash, &v->k);
    struct centry *last = c->slots[--c->used];
    if (v->slot != c->used) {
        c->slots[v->slot] = last;
        last->slot = v->slot;
    }
    c->bytes -= v->size;
    evs__free(v);
}

static struct centry *cache_put(evs_subcache *c, const char *subject, size_t len, uint64_t gen,
                                void *const *items, size_t n)
{
    size_t off = (offsetof(struct centry, key) + len + 7) & ~(size_t)7;
    /* A result over max_bytes / 64 is not cached: one huge fan-out must
     * not empty the cache, and the bound keeps `size` in 32 bits. */
    if (off > c->max_bytes / 64 || n > (c->max_bytes / 64 - off) / sizeof(void *))
        return NULL;
    size_t size = off + n * sizeof(void *);
    struct centry *e = evs__malloc(size);
    if (e == NULL)
        return NULL;
    e->size = (uint32_t)size;
    memcpy(e->key, subject, len);
    e->items = (void **)(void *)((char *)e + off);
    if (n > 0)
        memcpy(e->items, items, n * sizeof(void *));
    e->k.s = e->key;
    e->k.len = len;
    e->k.hash = (unsigned long)hash_bytes(subject, len, c->seed);
    e->gen = gen;
    e->n = (uint32_t)n;
    e->ref = false;
    if (gen > c->last_gen)
        c->last_gen = gen;

    /* Over the byte bound: drop victims until the new entry fits as an
     * addition (an old entry for the same subject may go too; the put
     * below then adds instead of replacing). So bytes <= max_bytes. */
    while (c->used > 0 && c->bytes + e->size > c->max_bytes)
        drop_victim(c);
    void *old = NULL;
    /* Same subject: swap the object in place (no allocation). */
    if (ck_hs_fas(&c->hs, e->k.hash, &e->k, &old)) {
        struct centry *o = old;
        e->slot = o->slot;
        c->slots[e->slot] = e;
        c->bytes = c->bytes - o->size + e->size;
        evs__free(o);
        return e;
    }
    struct centry *victim = NULL;
    if (c->used == c->max) {
        victim = clock_victim(c);
        ck_hs_remove(&c->hs, victim->k.hash, &victim->k);
        e->slot = victim->slot;
        c->bytes -= victim->size;
        evs__free(victim);
    } else {
        if (c->used == c->cap) {
            size_t ncap = c->cap ? 2 * c->cap : 64;
            if (ncap > c->max)
                ncap = c->max;
            struct centry **s = evs__realloc(c->slots, ncap * sizeof *s);
            if (s == NULL) {
                evs__free(e);
                return NULL;
            }
            c->slots = s;
            c->cap = ncap;
        }
        e->slot = (uint32_t)c->used; /* used < max <= 2^30 */
    }
    if (!ck_hs_put(&c->hs, e->k.hash, &e->k)) {
        if (victim != NULL) { /* its slot is a hole now: move the last entry in */
            struct centry *last = c->slots[--c->used];
            if (e->slot != c->used) {
                c->slots[e->slot] = last;
                last->slot = e->slot;
            }
        }
        evs__free(e);
        return NULL;
    }
    c->slots[e->slot] = e;
    c->bytes += e->size;
    if (victim == NULL)
        c->used++;
    return e;
}

int evs__subcache_insert(evs_subcache *c, const char *subject, size_t len, uint64_t gen,
                         void *const *items, size_t n)
{
    if (c == NULL || subject == NULL || (items == NULL && n > 0) || len > evs__max_topic())
        return EVS_EINVAL;
    return cache_put(c, subject, len, gen, items, n) ? 0 : EVS_ENOMEM;
}

int evs__subcache_match(evs_subcache *c, const evs_sublist *sl, const char *subject,
                        size_t len, evs_itemvec *scratch, void *const **items, size_t *n)
{
    uint64_t gen = evs__sublist_generation(sl);
    if (evs__subcache_lookup(c, subject, len, gen, items, n))
        return 0;
    scratch->n = 0;
    int rc = evs__sublist_match(sl, subject, len, scratch);
    if (rc < 0)
        return rc;
    struct centry *e = cache_put(c, subject, len, gen, scratch->v, scratch->n);
    if (e != NULL) {
        *items = e->items;
        *n = e->n;
    } else { /* not cached, but the answer is right: hand out the scratch */
        *items = scratch->v;
        *n = scratch->n;
    }
    return 0;
}
