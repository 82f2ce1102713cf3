/*
 * Events: refcounted, immutable once published.
 *
 * One pool block (pool.h) holds the event header, its topic and its data. The
 * custom type name and the metadata map, which are set after creation,
 * have allocations of their own. An event published a second time (to
 * another stream, or forwarded from a handler) becomes an "alias": a
 * small header with its own id that points at the original's body and
 * holds a reference on the original, so fan-out never copies payload.
 *
 * Threads: refs/published/id are touched only atomically. Before
 * publication an event belongs to its creator; the setters check
 * `published` and refuse with EVS_ESEALED afterwards. The stream that
 * wins evs__event_claim writes the id before the event can reach any
 * other thread through the stream (the ring slot's release store orders
 * it), so readers in handlers always see the final id.
 */
#include "event.h"

#include "evs_internal.h"
#include "json.h"
#include "mpscan.h"
#include "pool.h"

/* The payload. Immutable once the event is published. */
struct evs_body {
    evs_type    type;
    evs_content content;
    int64_t     timestamp;
    char       *type_name; /* own allocation, or NULL for built-in types */
    char       *topic;     /* points into the event's allocation */
    size_t      topic_len;
    uint8_t    *data;      /* points into the event's allocation; NULL if len 0 */
    size_t      len;
    uint8_t    *meta;      /* own allocation (a msgpack map), or NULL: empty */
    size_t      meta_len;
};

struct evs_event {
    /* References. The thread whose decrement reaches zero frees. */
    unsigned refs;
    /* 0 until a stream claims the event (CAS 0 -> 1, exactly once). */
    unsigned published;
    /* 0 until numbered; written once by the claimer before the event is
     * visible to other threads through the stream. */
    uint64_t id;
    /* The body readers use: &self->own, or the origin's body (alias). */
    const struct evs_body *body;
    /* Alias only: the event whose body we share; we hold a reference. */
    struct evs_event *origin;
    /* EVENT_HEAP: pool-allocated and refcounted. EVENT_SLOT: lives in a
     * stream's ring slot (evs_stream_claim); not refcounted: a reference
     * to it is a heap copy, and dropping one is a no-op. */
    unsigned kind;
    struct evs_body own;
    /* topic bytes, NUL, data bytes follow (own body only) */
};

enum { EVENT_HEAP = 0, EVENT_SLOT = 1 };

_Static_assert(sizeof(struct evs_event) % EVS_DATA_ALIGN == 0,
               "data alignment relies on the header size");

static const uint8_t empty_map[1] = {0x80};

static const char *const type_names[] = {
    [EVS_TYPE_MESSAGE] = "message",     [EVS_TYPE_ERROR] = "error",
    [EVS_TYPE_CONNECT] = "connect",     [EVS_TYPE_DISCONNECT] = "disconnect",
    [EVS_TYPE_HEARTBEAT] = "heartbeat",
};

const char *evs_type_name(evs_type type)
{
    if ((unsigned)type >= EVS_TYPE_CUSTOM)
        return NULL;
    return type_names[type];
}

static bool builtin_type(const char *name, size_t len, evs_type *out)
{
    for (unsigned t = 0; t < EVS_TYPE_CUSTOM; t++) {
        if (strlen(type_names[t]) == len && memcmp(type_names[t], name, len) == 0) {
            *out = (evs_type)t;
            return true;
        }
    }
    return false;
}

static bool has_crlfnul(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0')
            return true;
    return false;
}

int evs__event_new(evs_event **out, const evs_event_parts *p)
{
    *out = NULL;
    size_t tlen = p->topic ? p->topic_len : 0;
    if (tlen > evs__max_topic() || p->len > evs__max_data() || p->meta_len > evs__max_meta() ||
        p->type_name_len > evs__max_type_name())
        return EVS_ETOOBIG;

    evs_event *ev = evs__pool_alloc(sizeof(*ev) + evs__event_data_offset(tlen) + p->len);
    if (ev == NULL)
        return EVS_ENOMEM;
    memset(ev, 0, sizeof(*ev));
    ev->refs = 1;
    ev->body = &ev->own;
    struct evs_body *b = &ev->own;
    b->type = p->type;
    b->content = p->content;
    b->timestamp = p->timestamp;
    b->topic = (char *)(ev + 1);
    if (tlen > 0)
        memcpy(b->topic, p->topic, tlen);
    b->topic[tlen] = '\0';
    b->topic_len = tlen;
    if (p->len > 0) {
        b->data = (uint8_t *)b->topic + evs__event_data_offset(tlen);
        memcpy(b->data, p->data, p->len);
        b->len = p->len;
    }
    if (p->type_name != NULL) {
        b->type_name = evs__strndup(p->type_name, p->type_name_len);
        if (b->type_name == NULL)
            goto nomem;
    }
    if (p->meta != NULL && p->meta_len > 0) {
        b->meta = evs__malloc(p->meta_len);
        if (b->meta == NULL)
            goto nomem;
        memcpy(b->meta, p->meta, p->meta_len);
        b->meta_len = p->meta_len;
    }
    if (p->id != 0) {
        ev->id = p->id;
        ev->published = 1;
    }
    *out = ev;
    return 0;
nomem:
    evs__free(b->type_name);
    evs__pool_free(ev);
    return EVS_ENOMEM;
}

int evs_event_create(evs_event **out, evs_type type, const char *topic,
                     const void *data, size_t len)
{
    if (out == NULL)
        return EVS_EINVAL;
    *out = NULL;
    if ((unsigned)type >= EVS_TYPE_CUSTOM || (data == NULL && len > 0))
        return EVS_EINVAL;
    evs_event_parts p = {
        .type = type,
        .topic = topic,
        .topic_len = topic ? strnlen(topic, evs__max_topic() + 1) : 0,
        .content = EVS_CONTENT_BINARY,
        .data = data,
        .len = len,
        .timestamp = evs__now_real_ns(),
    };
    return evs__event_new(out, &p);
}

int evs_event_make(evs_event **out, const char *type_name, const char *topic,
                   const char *json, const char *const *meta)
{
    if (out == NULL)
        return EVS_EINVAL;
    *out = NULL;
    evs_buf mp = {0};
    evs_event *ev = NULL;
    int rc;

    if (json != NULL && (rc = evs__json_to_msgpack(json, strlen(json), &mp)) != 0)
        goto done;
    if ((rc = evs_event_create(&ev, EVS_TYPE_MESSAGE, topic, mp.data, mp.len)) != 0)
        goto done;
    if (json != NULL && (rc = evs_event_set_content(ev, EVS_CONTENT_MSGPACK)) != 0)
        goto done;
    if (type_name != NULL && (rc = evs_event_set_type_name(ev, type_name)) != 0)
        goto done;
    for (size_t i = 0; meta != NULL && meta[i] != NULL; i += 2) {
        if (meta[i + 1] == NULL) {
            rc = EVS_EINVAL;
            goto done;
        }
        if ((rc = evs_event_meta_set_str(ev, meta[i], meta[i + 1])) != 0)
            goto done;
    }
done:
    evs_buf_free(&mp);
    if (rc != 0)
        evs_event_unref(ev);
    else
        *out = ev;
    return rc;
}

/* A heap event equal in every field (the id included) to `ev`. */
static evs_event *event_copy(const evs_event *ev)
{
    const struct evs_body *b = ev->body;
    evs_event_parts p = {
        .type = b->type,
        .type_name = b->type_name,
        .type_name_len = b->type_name ? strlen(b->type_name) : 0,
        .topic = b->topic,
        .topic_len = b->topic_len,
        .content = b->content,
        .data = b->data,
        .len = b->len,
        .meta = b->meta,
        .meta_len = b->meta_len,
        .timestamp = b->timestamp,
        .id = evs_load(&((evs_event *)ev)->id),
    };
    evs_event *out;
    return evs__event_new(&out, &p) == 0 ? out : NULL;
}

evs_event *evs_event_ref(const evs_event *cev)
{
    evs_event *ev = (evs_event *)cev;
    if (ev == NULL)
        return NULL;
    if (evs_unlikely(ev->kind == EVENT_SLOT))
        return event_copy(ev); /* the slot is reused once delivered */
    ck_pr_inc_uint(&ev->refs);
    return ev;
}

void evs_event_unref(const evs_event *cev)
{
    evs_event *ev = (evs_event *)cev;
    if (ev == NULL || ev->kind == EVENT_SLOT)
        return;
    /* A count of one is ours alone: no other thread holds a reference
     * that could change it, so skip the locked instruction (the acquire
     * orders other threads' earlier unrefs before our free). Otherwise
     * the thread whose decrement takes the count to zero frees. */
    if (evs_load_acquire(&ev->refs) != 1 &&
        ck_pr_faa_uint(&ev->refs, (unsigned)-1) != 1)
        return;
    if (ev->origin != NULL) {
        evs_event_unref(ev->origin);
    } else {
        evs__free(ev->own.type_name);
        evs__free(ev->own.meta);
    }
    evs__pool_free(ev);
}

bool evs__event_claim(const evs_event *cev, bool add_ref)
{
    evs_event *ev = (evs_event *)cev;
    /* A plain load first: republishing is common (forwarding), and a
     * failed CAS would still take the line exclusive. */
    if (evs_load(&ev->published) != 0)
        return false;
    if (evs_load(&ev->refs) == 1) {
        /* Only the caller can reach the event. */
        evs_store(&ev->published, 1);
        if (add_ref)
            evs_store(&ev->refs, 2);
        return true;
    }
    if (!ck_pr_cas_uint(&ev->published, 0, 1))
        return false;
    if (add_ref)
        ck_pr_inc_uint(&ev->refs);
    return true;
}

evs_event *evs__event_alias(const evs_event *cev)
{
    evs_event *orig = (evs_event *)cev;
    if (orig->kind == EVENT_SLOT)
        return event_copy(orig); /* a slot cannot be shared past delivery */
    while (orig->origin != NULL)
        orig = orig->origin;
    evs_event *a = evs__pool_alloc(sizeof(*a));
    if (a == NULL)
        return NULL;
    memset(a, 0, sizeof(*a));
    a->refs = 1;
    a->published = 1;
    a->origin = evs_event_ref(orig);
    a->body = &orig->own;
    return a;
}

size_t evs__event_data_offset(size_t tlen)
{
    /* The header is a multiple of 16 bytes and blocks are 16-aligned, so
     * rounding the topic up to 16 aligns the data for any type. */
    return (tlen + 1 + EVS_DATA_ALIGN - 1) / EVS_DATA_ALIGN * EVS_DATA_ALIGN;
}

size_t evs__event_slot_stride(size_t slot_bytes)
{
    size_t n = sizeof(evs_event) + slot_bytes;
    return (n + EVS_CACHELINE - 1) / EVS_CACHELINE * EVS_CACHELINE;
}

evs_event *evs__event_slot_fill(void *mem, size_t slot_bytes, evs_type type,
                                const char *topic, size_t tlen, size_t len,
                                uint64_t id, int64_t timestamp, void **data)
{
    evs_event *ev = mem;
    struct evs_body *b = &ev->own;
    /* What the last lap's publisher added. */
    if (evs_unlikely(b->type_name != NULL || b->meta != NULL)) {
        evs__free(b->type_name);
        evs__free(b->meta);
    }
    (void)slot_bytes;
    ev->refs = 1;
    evs_store(&ev->published, 0);
    evs_store(&ev->id, id);
    ev->body = b;
    ev->origin = NULL;
    ev->kind = EVENT_SLOT;
    b->type = type;
    b->content = EVS_CONTENT_BINARY;
    b->timestamp = timestamp;
    b->type_name = NULL;
    b->meta = NULL;
    b->meta_len = 0;
    b->topic = (char *)(ev + 1);
    if (tlen > 0)
        memcpy(b->topic, topic, tlen);
    b->topic[tlen] = '\0';
    b->topic_len = tlen;
    b->data = (uint8_t *)b->topic + evs__event_data_offset(tlen);
    b->len = len;
    *data = b->data;
    return ev;
}

void evs__event_slot_fini(void *mem)
{
    evs_event *ev = mem;
    if (ev->kind != EVENT_SLOT)
        return;
    evs__free(ev->own.type_name);
    evs__free(ev->own.meta);
    ev->own.type_name = NULL;
    ev->own.meta = NULL;
}

bool evs__event_is_slot(const evs_event *ev) { return ev->kind == EVENT_SLOT; }

bool evs__event_slot_commit(evs_event *ev)
{
    if (ev->kind != EVENT_SLOT || evs_load(&ev->published) != 0)
        return false;
    evs_store(&ev->published, 1);
    return true;
}

void evs__event_set_id(const evs_event *ev, uint64_t id)
{
    evs_store(&((evs_event *)ev)->id, id);
}

static bool sealed(const evs_event *ev)
{
    return evs_load(&((evs_event *)ev)->published) != 0;
}

int evs_event_set_content(evs_event *ev, evs_content content)
{
    if (ev == NULL || (unsigned)content > EVS_CONTENT_MSGPACK)
        return EVS_EINVAL;
    if (sealed(ev))
        return EVS_ESEALED;
    struct evs_body *b = &ev->own;
    if (content == EVS_CONTENT_JSON) {
        int rc = evs__json_validate(b->data, b->len);
        if (rc != 0)
            return rc;
    } else if (content == EVS_CONTENT_MSGPACK) {
        size_t used;
        int rc = evs__mp_check(b->data, b->len, evs__max_depth(), &used);
        if (rc != 0)
            return rc;
        if (used != b->len)
            return EVS_EBADMSG;
    }
    b->content = content;
    return 0;
}

int evs_event_set_type_name(evs_event *ev, const char *name)
{
    if (ev == NULL || name == NULL)
        return EVS_EINVAL;
    if (sealed(ev))
        return EVS_ESEALED;
    /* The limit is on custom names; built-in ones ("disconnect") are
     * always accepted, so look at least that far. */
    size_t max = evs__max_type_name();
    size_t len = strnlen(name, (max > 16 ? max : 16) + 1);
    evs_type t;
    bool builtin = builtin_type(name, len, &t);
    if (len > max && !builtin)
        return EVS_ETOOBIG;
    if (len == 0 || has_crlfnul(name, len))
        return EVS_EINVAL;
    struct evs_body *b = &ev->own;
    char *copy = NULL;
    if (!builtin) {
        t = EVS_TYPE_CUSTOM;
        if ((copy = evs__strndup(name, len)) == NULL)
            return EVS_ENOMEM;
    }
    evs__free(b->type_name);
    b->type_name = copy;
    b->type = t;
    return 0;
}

/*
 * Replace or add `key` in the metadata map: rebuild the map with every
 * other entry copied as encoded, then the new pair. The old map stays
 * in place until the new one is complete, so failure changes nothing.
 */
static int meta_put(evs_event *ev, const char *key, const uint8_t *val, size_t vlen)
{
    struct evs_body *b = &ev->own;
    const uint8_t *map = b->meta ? b->meta : empty_map;
    size_t map_len = b->meta ? b->meta_len : sizeof(empty_map);
    size_t klen = strlen(key);
    evs_mpval m;
    if (evs__mp_read(map, map_len, &m) != 0 || m.type != MSGPACK_OBJECT_MAP)
        return EVS_EBADMSG;

    /* Copy the other entries into `body`, count them, then write the map
     * header and the body into `out`. */
    evs_buf out = {0}, body = {0};
    uint32_t n = 0;
    size_t off = m.size;
    int rc = 0;
    for (uint32_t i = 0; i < m.v.n; i++) {
        size_t ksz, vsz;
        evs_mpval k;
        /* The stored map was checked when it was built; check again so a
         * bug elsewhere cannot turn into an out-of-bounds read here. (At
         * the ceiling, not the limit: the limits may have been lowered
         * since the entries were stored.) */
        if (evs__mp_check(map + off, map_len - off, EVS_LIMITS_DEPTH_CEILING, &ksz) != 0 ||
            evs__mp_read(map + off, map_len - off, &k) != 0 ||
            evs__mp_check(map + off + ksz, map_len - off - ksz, EVS_LIMITS_DEPTH_CEILING,
                          &vsz) != 0) {
            rc = EVS_EBADMSG;
            goto out;
        }
        bool same = k.type == MSGPACK_OBJECT_STR && k.v.raw.len == klen &&
                    memcmp(k.v.raw.p, key, klen) == 0;
        if (!same) {
            if ((rc = evs_buf_append(&body, map + off, ksz + vsz)) != 0)
                goto out;
            n++;
        }
        off += ksz + vsz;
    }
    msgpack_packer pk;
    evs__mp_packer_init(&pk, &body);
    if (msgpack_pack_str_with_body(&pk, key, klen) != 0 ||
        evs_buf_append(&body, val, vlen) != 0) {
        rc = EVS_ENOMEM;
        goto out;
    }
    n++;
    evs__mp_packer_init(&pk, &out);
    if (msgpack_pack_map(&pk, n) != 0 || evs_buf_append(&out, body.data, body.len) != 0) {
        rc = EVS_ENOMEM;
        goto out;
    }
    if (out.len > evs__max_meta()) {
        rc = EVS_ETOOBIG;
        goto out;
    }
    evs__free(b->meta);
    b->meta = (uint8_t *)out.data;
    b->meta_len = out.len;
    out.data = NULL;
out:
    evs_buf_free(&out);
    evs_buf_free(&body);
    return rc;
}

/* Check the arguments every metadata setter shares, in the order the
 * header documents: bad arguments, then a published event. */
static int meta_args(evs_event *ev, const char *key)
{
    if (ev == NULL || key == NULL || key[0] == '\0')
        return EVS_EINVAL;
    return sealed(ev) ? EVS_ESEALED : 0;
}

/* Encode one scalar with msgpack-c into a heap buffer, then store it. */
#define META_SCALAR(ev, key, packcall)                                      \
    do {                                                                    \
        int rc_ = meta_args(ev, key);                                       \
        if (rc_ != 0)                                                       \
            return rc_;                                                     \
        evs_buf v = {0};                                                    \
        msgpack_packer pk;                                                  \
        evs__mp_packer_init(&pk, &v);                                       \
        rc_ = (packcall) != 0 ? EVS_ENOMEM : meta_put(ev, key, (const uint8_t *)v.data, v.len); \
        evs_buf_free(&v);                                                   \
        return rc_;                                                         \
    } while (0)

int evs_event_meta_set_str(evs_event *ev, const char *key, const char *value)
{
    int rc = value == NULL ? EVS_EINVAL : meta_args(ev, key);
    if (rc != 0)
        return rc;
    size_t max = evs__max_meta();
    size_t len = strnlen(value, max + 1);
    if (len > max)
        return EVS_ETOOBIG;
    META_SCALAR(ev, key, msgpack_pack_str_with_body(&pk, value, len));
}

int evs_event_meta_set_i64(evs_event *ev, const char *key, int64_t value)
{
    META_SCALAR(ev, key, msgpack_pack_int64(&pk, value));
}

int evs_event_meta_set_f64(evs_event *ev, const char *key, double value)
{
    META_SCALAR(ev, key, msgpack_pack_double(&pk, value));
}

int evs_event_meta_set_bool(evs_event *ev, const char *key, bool value)
{
    META_SCALAR(ev, key, value ? msgpack_pack_true(&pk) : msgpack_pack_false(&pk));
}

int evs_event_meta_set_raw(evs_event *ev, const char *key, const void *mp, size_t len)
{
    if (mp == NULL)
        return EVS_EINVAL;
    int rc = meta_args(ev, key);
    if (rc != 0)
        return rc;
    if (len > evs__max_meta())
        return EVS_ETOOBIG;
    size_t used;
    if ((rc = evs__mp_check(mp, len, evs__max_depth(), &used)) != 0)
        return rc;
    if (used != len)
        return EVS_EBADMSG;
    return meta_put(ev, key, mp, len);
}

static int meta_find(const evs_event *ev, const char *key, evs_mpval *v,
                     const uint8_t **raw, size_t *rlen)
{
    if (ev == NULL || key == NULL)
        return EVS_EINVAL;
    const struct evs_body *b = ev->body;
    if (b->meta == NULL)
        return EVS_ENOTFOUND;
    const uint8_t *p;
    size_t n;
    int rc = evs__mp_map_find(b->meta, b->meta_len, key, strlen(key), &p, &n);
    if (rc != 0)
        return rc;
    if (raw != NULL) {
        *raw = p;
        *rlen = n;
    }
    return v != NULL ? evs__mp_read(p, n, v) : 0;
}

int evs_event_meta_get_str(const evs_event *ev, const char *key,
                           const char **value, size_t *len)
{
    evs_mpval v;
    if (value == NULL || len == NULL)
        return EVS_EINVAL;
    int rc = meta_find(ev, key, &v, NULL, NULL);
    if (rc != 0)
        return rc;
    if (v.type != MSGPACK_OBJECT_STR)
        return EVS_ETYPE;
    *value = (const char *)v.v.raw.p;
    *len = v.v.raw.len;
    return 0;
}

int evs_event_meta_get_i64(const evs_event *ev, const char *key, int64_t *value)
{
    evs_mpval v;
    if (value == NULL)
        return EVS_EINVAL;
    int rc = meta_find(ev, key, &v, NULL, NULL);
    if (rc != 0)
        return rc;
    if (v.type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        *value = v.v.i;
    else if (v.type == MSGPACK_OBJECT_POSITIVE_INTEGER && v.v.u <= INT64_MAX)
        *value = (int64_t)v.v.u;
    else
        return EVS_ETYPE;
    return 0;
}

int evs_event_meta_get_f64(const evs_event *ev, const char *key, double *value)
{
    evs_mpval v;
    if (value == NULL)
        return EVS_EINVAL;
    int rc = meta_find(ev, key, &v, NULL, NULL);
    if (rc != 0)
        return rc;
    switch (v.type) {
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: *value = v.v.f; return 0;
    case MSGPACK_OBJECT_POSITIVE_INTEGER: *value = (double)v.v.u; return 0;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: *value = (double)v.v.i; return 0;
    default: return EVS_ETYPE;
    }
}

int evs_event_meta_get_bool(const evs_event *ev, const char *key, bool *value)
{
    evs_mpval v;
    if (value == NULL)
        return EVS_EINVAL;
    int rc = meta_find(ev, key, &v, NULL, NULL);
    if (rc != 0)
        return rc;
    if (v.type != MSGPACK_OBJECT_BOOLEAN)
        return EVS_ETYPE;
    *value = v.v.b;
    return 0;
}

int evs_event_meta_get_raw(const evs_event *ev, const char *key,
                           const void **mp, size_t *len)
{
    if (mp == NULL || len == NULL)
        return EVS_EINVAL;
    const uint8_t *p;
    int rc = meta_find(ev, key, NULL, &p, len);
    if (rc == 0)
        *mp = p;
    return rc;
}

uint64_t evs_event_id(const evs_event *ev)
{
    return evs_load(&((evs_event *)ev)->id);
}

evs_type evs_event_type(const evs_event *ev) { return ev->body->type; }

const char *evs_event_type_name(const evs_event *ev)
{
    const struct evs_body *b = ev->body;
    return b->type == EVS_TYPE_CUSTOM ? b->type_name : type_names[b->type];
}

const char *evs_event_topic(const evs_event *ev) { return ev->body->topic; }

const void *evs_event_data(const evs_event *ev, size_t *len)
{
    if (len != NULL)
        *len = ev->body->len;
    return ev->body->data;
}

evs_content evs_event_content(const evs_event *ev) { return ev->body->content; }

const void *evs_event_meta(const evs_event *ev, size_t *len)
{
    const struct evs_body *b = ev->body;
    if (b->meta == NULL) {
        if (len != NULL)
            *len = sizeof(empty_map);
        return empty_map;
    }
    if (len != NULL)
        *len = b->meta_len;
    return b->meta;
}

int64_t evs_event_timestamp(const evs_event *ev) { return ev->body->timestamp; }

bool evs_event_published(const evs_event *ev) { return sealed(ev); }
