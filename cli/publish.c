/*
 * Publishing into the hub: bytes, a subject and a type name become one
 * event on the hub's TopicStream, whoever sends them (POST /publish,
 * the --stdin reader, the demo feed).
 *
 * It also remembers the event type names it has seen, so that the page
 * at / can listen for them: an EventSource delivers a named event only
 * to a listener registered for that name. The set is bounded (a
 * publisher inventing names must not grow the hub): past TYPES_MAX
 * names, new ones are published but not listed.
 *
 * In durable mode (--nats-durable) events go to the NATS bridge instead
 * of the stream: JetStream stores them and the bridge brings them back
 * to the stream numbered by their sequence, so their id is not known
 * when the publish returns.
 *
 * JSON bodies are validated by the library with jansson, whose tree for
 * a 1 MiB body can take 70 times that ('[{},{},...]': about 71 MiB).
 * The hub owns the process, so it installs jansson's allocator
 * (evs_hub_pub_json_install) and gives each validation a budget of
 * JSON_BUDGET bytes held, counted per thread: past it jansson's
 * allocation fails, the parse stops, and the publish is refused
 * (EVS_HUB_EJSONCOST, answered 413). So validating one body never holds
 * more than JSON_BUDGET (16 MiB) of tree, bodies over BIG_JSON are
 * validated one at a time, and the hub's JSON memory is at most one
 * budget plus about 70 times BIG_JSON for each other publish thread.
 *
 * Threads: evs_hub_pub_send from any thread at once. `lock` guards the
 * type set only and is a leaf; the counters are atomics.
 */
#include "hub.h"

#include <jansson.h>

#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define TYPES_MAX 64
/* What jansson may hold while one JSON body is validated: 16 MiB, 16
 * times the largest body. Ordinary documents need far less (objects
 * with short string members about 4 bytes of tree per byte of text,
 * arrays of 3-digit numbers about 9); a 1 MiB body of empty objects
 * (70 per byte) or of one-digit numbers (about 21) is refused. */
#define JSON_BUDGET ((size_t)16 << 20)
/* Bodies above this are validated one at a time (big_json), so that the
 * hub holds at most one large budget at once; a smaller body cannot
 * reach more than about 70 times its size. */
#define BIG_JSON ((size_t)64 << 10)

/* The budget of the validation running on this thread: bytes jansson
 * holds, as malloc_usable_size counts them (what the heap really gives,
 * not what was asked), added on allocation and taken off on free. */
static _Thread_local struct {
    bool on;     /* a validation is running: count */
    bool over;   /* an allocation was refused */
    size_t used; /* bytes held now, at most JSON_BUDGET */
} tl_json;

static pthread_mutex_t big_json = PTHREAD_MUTEX_INITIALIZER;

static void *json_alloc(size_t n)
{
    if (!tl_json.on)
        return malloc(n);
    if (n > JSON_BUDGET - tl_json.used) {
        tl_json.over = true;
        return NULL;
    }
    void *p = malloc(n);
    size_t got = p != NULL ? malloc_usable_size(p) : 0;
    if (got > JSON_BUDGET - tl_json.used) {
        free(p);
        tl_json.over = true;
        return NULL;
    }
    tl_json.used += got;
    return p;
}

static void json_free(void *p)
{
    if (tl_json.on && p != NULL) {
        size_t got = malloc_usable_size(p);
        tl_json.used -= got < tl_json.used ? got : tl_json.used;
    }
    free(p);
}

void evs_hub_pub_json_install(void)
{
    /* What jansson hands out stays plain malloc memory, so code that
     * frees json_dumps's strings with free() keeps working. */
    json_set_alloc_funcs(json_alloc, json_free);
}

struct evs_hub_pub {
    evs_stream *stream;    /* borrowed */
    evs_nats_bridge *bridge; /* borrowed; NULL = publish to `stream` */
    atomic_uint_fast64_t ok, failed;
    pthread_mutex_t lock;  /* guards types and ntypes */
    char *types[TYPES_MAX];
    size_t ntypes;
};

int evs_hub_pub_create(evs_hub_pub **out, evs_stream *s, evs_nats_bridge *bridge)
{
    evs_hub_pub *p = calloc(1, sizeof(*p));
    *out = NULL;
    if (p == NULL)
        return EVS_ENOMEM;
    p->stream = s;
    p->bridge = bridge;
    pthread_mutex_init(&p->lock, NULL);
    *out = p;
    return 0;
}

void evs_hub_pub_destroy(evs_hub_pub *p)
{
    if (p == NULL)
        return;
    for (size_t i = 0; i < p->ntypes; i++)
        free(p->types[i]);
    pthread_mutex_destroy(&p->lock);
    free(p);
}

/* Add `name` to the set if it is new and there is room. */
static void remember_type(evs_hub_pub *p, const char *name)
{
    pthread_mutex_lock(&p->lock);
    bool seen = false;
    for (size_t i = 0; i < p->ntypes && !seen; i++)
        seen = strcmp(p->types[i], name) == 0;
    if (!seen && p->ntypes < TYPES_MAX) {
        char *copy = strdup(name);
        if (copy != NULL) /* out of memory: only the page's list misses it */
            p->types[p->ntypes++] = copy;
    }
    pthread_mutex_unlock(&p->lock);
}

static int build(evs_event **out, const char *topic, const char *type, const void *data,
                 size_t len, evs_content content)
{
    evs_event *ev;
    int rc = evs_event_create(&ev, EVS_TYPE_MESSAGE, topic, data, len);
    if (rc != 0)
        return rc;
    if (content != EVS_CONTENT_BINARY)
        rc = evs_event_set_content(ev, content);
    if (rc == 0 && type != NULL)
        rc = evs_event_set_type_name(ev, type);
    if (rc != 0) {
        evs_event_unref(ev);
        return rc;
    }
    *out = ev;
    return 0;
}

int evs_hub_pub_send(evs_hub_pub *p, const char *topic, const char *type, const void *data,
                     size_t len, evs_content content, uint64_t *id)
{
    evs_event *ev = NULL; /* set by build when rc is 0 (-O1 cannot see it) */
    bool json = content == EVS_CONTENT_JSON, big = json && len > BIG_JSON;
    if (big)
        pthread_mutex_lock(&big_json);
    if (json)
        tl_json.on = true, tl_json.over = false, tl_json.used = 0;
    int rc = build(&ev, topic, type, data, len, content);
    if (json) {
        tl_json.on = false;
        if (big)
            pthread_mutex_unlock(&big_json);
        if (rc != 0 && tl_json.over)
            rc = EVS_HUB_EJSONCOST;
    }
    if (rc == 0 && p->bridge != NULL) {
        rc = evs_nats_bridge_publish(p->bridge, ev); /* takes its own reference */
        evs_event_unref(ev);
        if (id != NULL)
            *id = 0;
    } else if (rc == 0) {
        rc = evs_stream_publish_move(p->stream, ev, id); /* takes our reference */
    }
    if (rc != 0) {
        atomic_fetch_add(&p->failed, 1);
        return rc;
    }
    atomic_fetch_add(&p->ok, 1);
    if (type != NULL && strcmp(type, "message") != 0)
        remember_type(p, type);
    return 0;
}

int evs_hub_pub_types_json(evs_hub_pub *p, evs_buf *out)
{
    json_t *a = json_array();
    int rc = a != NULL ? 0 : EVS_ENOMEM;
    pthread_mutex_lock(&p->lock);
    for (size_t i = 0; i < p->ntypes && rc == 0; i++) {
        /* Names are valid UTF-8 only if the publisher sent UTF-8: the
         * others cannot be put in JSON, and are left out. */
        json_t *s = json_string(p->types[i]);
        if (s != NULL && json_array_append_new(a, s) != 0)
            rc = EVS_ENOMEM;
    }
    pthread_mutex_unlock(&p->lock);
    char *text = rc == 0 ? json_dumps(a, JSON_COMPACT) : NULL;
    if (rc == 0)
        rc = text != NULL ? evs_buf_append(out, text, strlen(text)) : EVS_ENOMEM;
    free(text);
    json_decref(a);
    return rc;
}

void evs_hub_pub_counts(evs_hub_pub *p, uint64_t *ok, uint64_t *failed)
{
    *ok = atomic_load(&p->ok);
    *failed = atomic_load(&p->failed);
}
