/*
 * Event-name filters: a set of type names ("Purchase", "Signup", or the
 * built-in "message", "heartbeat", ...) compared with
 * evs_event_type_name(), shaped as an evs_filter_fn so that it can be
 * passed straight to evs_subscribe.
 *
 * The names are copied into one allocation, sorted and deduplicated at
 * create time, and looked up by binary search: a set is a handful of
 * names, for which a sorted array beats a hash table on both memory and
 * speed, and O(log n) strcmp calls stay cheap even for hundreds.
 *
 * Threads: the set is never written after evs_names_create returns, so
 * any number of threads (dispatchers, publishers running inline
 * delivery) may match against it at once without a lock.
 */
#include "evs_internal.h"

#include <stdlib.h>
#include <string.h>

/* A sorted, duplicate-free array of names; the strings follow the
 * pointer array in the same allocation. */
struct evs_names {
    size_t n;        /* distinct names, >= 1 */
    const char **v;  /* sorted by strcmp; points into this allocation */
};

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int evs_names_create(evs_names **out, const char *const *names, size_t n)
{
    if (out != NULL)
        *out = NULL;
    if (out == NULL || names == NULL || n == 0)
        return EVS_EINVAL;
    /* Size the one allocation; reject NULL and empty names first so that
     * a failed call allocates nothing. */
    size_t bytes = sizeof(evs_names);
    if (n > (SIZE_MAX - bytes) / sizeof(char *))
        return EVS_EINVAL;
    bytes += n * sizeof(char *);
    for (size_t i = 0; i < n; i++) {
        if (names[i] == NULL || names[i][0] == '\0')
            return EVS_EINVAL;
        size_t len = strlen(names[i]) + 1;
        if (len > SIZE_MAX - bytes)
            return EVS_EINVAL;
        bytes += len;
    }
    evs_names *f = evs__malloc(bytes);
    if (f == NULL)
        return EVS_ENOMEM;
    f->v = (const char **)(void *)(f + 1);
    char *p = (char *)(f->v + n);
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(names[i]) + 1;
        memcpy(p, names[i], len);
        f->v[i] = p;
        p += len;
    }
    qsort(f->v, n, sizeof(char *), cmp_name);
    /* Drop duplicates so that the array is a set (bsearch finds any
     * equal element, so duplicates would only cost a step). */
    size_t k = 1;
    for (size_t i = 1; i < n; i++)
        if (strcmp(f->v[i], f->v[k - 1]) != 0)
            f->v[k++] = f->v[i];
    f->n = k;
    *out = f;
    return 0;
}

bool evs_names_match(const evs_names *f, const evs_event *ev)
{
    if (f == NULL || ev == NULL)
        return false;
    const char *name = evs_event_type_name(ev);
    size_t lo = 0, hi = f->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, f->v[mid]);
        if (c == 0)
            return true;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return false;
}

bool evs_names_filter(const evs_event *ev, void *user)
{
    return evs_names_match(user, ev);
}

void evs_names_destroy(evs_names *f)
{
    evs__free(f);
}
