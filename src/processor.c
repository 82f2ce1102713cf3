/*
 * StreamProcessor: a subscription to a source stream that runs each
 * event through a chain of filter and map stages and hands what comes
 * out to its sinks (streams it publishes to, or callbacks). SPEC.md,
 * "Pipelines".
 *
 * Threads. The chain runs inside the subscription's handler: on the
 * source's dispatcher thread (one event at a time, in id order), or on
 * publishing threads at once under inline delivery. Stages therefore
 * need no locking of their own on a dispatcher stream. The stage list is
 * built before start and frozen while running (EVS_EBUSY), so the
 * handler reads it without a lock; start and stop publish the change
 * through evs_subscribe / evs_unsubscribe, whose handshakes order it.
 * Counters are relaxed atomic adds (several inline publishers may count
 * at once) and are read one by one by stats.
 *
 * Memory. An event that a map replaces is owned by the processor from
 * the map's return until every sink has it (publishing takes the sink's
 * own reference), then unreffed; the source's event is only borrowed.
 */
#include "evs_internal.h"

#include <stdlib.h>
#include <string.h>

enum stage_kind { STAGE_FILTER, STAGE_MAP, SINK_STREAM, SINK_FN };

typedef struct stage {
    enum stage_kind kind;
    char           *name;
    union {
        evs_filter_fn  filter;
        evs_map_fn     map;
        evs_handler_fn fn;
    } u;
    evs_stream *sink;   /* SINK_STREAM */
    void       *user;
    /* Counters (relaxed atomic adds by the handler; read by stats). */
    uint64_t in, out, dropped, replaced, errors;
} stage;

struct evs_processor {
    evs_stream        *source;   /* borrowed */
    char              *pattern;
    evs_stage_error_fn on_error;
    void              *on_error_user;
    stage             *stages;   /* frozen while running */
    size_t             n, cap;
    size_t             nsinks;
    evs_sub           *sub;      /* non-NULL while running */
    /* Counters, as the stages'. */
    uint64_t received, emitted, dropped, errors;
};

/* The processor whose chain this thread is running (destroy refuses to
 * free it under itself). */
static _Thread_local const evs_processor *tl_running;

static void add(uint64_t *c, uint64_t n) { ck_pr_add_64(c, n); }
static uint64_t get(const uint64_t *c) { return evs_load(c); }

int evs_processor_create(evs_processor **out, evs_stream *source,
                         const evs_processor_opts *opts)
{
    if (out == NULL)
        return EVS_EINVAL;
    *out = NULL;
    if (source == NULL)
        return EVS_EINVAL;
    evs_processor_opts o = {0};
    if (opts != NULL)
        o = *opts;
    evs_processor *p = evs__calloc(1, sizeof(*p));
    if (p == NULL)
        return EVS_ENOMEM;
    const char *pat = o.pattern != NULL ? o.pattern : ">";
    if ((p->pattern = evs__strndup(pat, strlen(pat))) == NULL) {
        evs__free(p);
        return EVS_ENOMEM;
    }
    p->source = source;
    p->on_error = o.on_error;
    p->on_error_user = o.on_error_user;
    *out = p;
    return 0;
}

/* Append a stage; `name` NULL gets a default. */
static int add_stage(evs_processor *p, enum stage_kind kind, const char *name, stage init)
{
    if (p == NULL)
        return EVS_EINVAL;
    if (p->sub != NULL)
        return EVS_EBUSY;
    if (name == NULL)
        name = kind == STAGE_FILTER ? "filter" : kind == STAGE_MAP ? "map" : "sink";
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 4;
        stage *a = evs__realloc(p->stages, cap * sizeof(*a));
        if (a == NULL)
            return EVS_ENOMEM;
        p->stages = a;
        p->cap = cap;
    }
    init.kind = kind;
    if ((init.name = evs__strndup(name, strlen(name))) == NULL)
        return EVS_ENOMEM;
    p->stages[p->n++] = init;
    if (kind == SINK_STREAM || kind == SINK_FN)
        p->nsinks++;
    return 0;
}

int evs_processor_filter(evs_processor *p, const char *name, evs_filter_fn fn, void *user)
{
    if (fn == NULL)
        return EVS_EINVAL;
    return add_stage(p, STAGE_FILTER, name, (stage){.u.filter = fn, .user = user});
}

int evs_processor_map(evs_processor *p, const char *name, evs_map_fn fn, void *user)
{
    if (fn == NULL)
        return EVS_EINVAL;
    return add_stage(p, STAGE_MAP, name, (stage){.u.map = fn, .user = user});
}

int evs_processor_sink(evs_processor *p, evs_stream *sink)
{
    /* Publishing into the source from its own handler would feed the
     * chain its own output forever. */
    if (sink == NULL || (p != NULL && sink == p->source))
        return EVS_EINVAL;
    return add_stage(p, SINK_STREAM, "sink", (stage){.sink = sink});
}

int evs_processor_sink_fn(evs_processor *p, const char *name, evs_handler_fn fn, void *user)
{
    if (fn == NULL)
        return EVS_EINVAL;
    return add_stage(p, SINK_FN, name, (stage){.u.fn = fn, .user = user});
}

static void stage_error(evs_processor *p, size_t i, const evs_event *ev, int code)
{
    add(&p->stages[i].errors, 1);
    add(&p->errors, 1);
    if (p->on_error != NULL)
        p->on_error(p->stages[i].name, i, ev, code, p->on_error_user);
}

/* Hand ev to every sink. Returns true if at least one took it. */
static bool to_sinks(evs_processor *p, const evs_event *ev)
{
    bool any = false;
    for (size_t i = 0; i < p->n; i++) {
        stage *st = &p->stages[i];
        int rc;
        if (st->kind == SINK_STREAM)
            rc = evs_stream_publish(st->sink, (evs_event *)ev);
        else if (st->kind == SINK_FN)
            rc = st->u.fn(ev, st->user);
        else
            continue;
        add(&st->in, 1);
        if (rc != 0) {
            stage_error(p, i, ev, rc);
        } else {
            add(&st->out, 1);
            any = true;
        }
    }
    return any;
}

/* The chain, then the sinks. */
static int chain(evs_processor *p, const evs_event *src)
{
    add(&p->received, 1);
    const evs_event *ev = src;
    evs_event *owned = NULL; /* the latest replacement, ours to unref */
    for (size_t i = 0; i < p->n; i++) {
        stage *st = &p->stages[i];
        if (st->kind != STAGE_FILTER && st->kind != STAGE_MAP)
            continue;
        add(&st->in, 1);
        if (st->kind == STAGE_FILTER) {
            if (!st->u.filter(ev, st->user)) {
                add(&st->dropped, 1);
                goto drop;
            }
            add(&st->out, 1);
            continue;
        }
        evs_event *next = (evs_event *)ev;
        int rc = st->u.map(ev, &next, st->user);
        if (rc != 0) {
            if (next != NULL && next != ev)
                evs_event_unref(next); /* a replacement made before the error */
            stage_error(p, i, ev, rc);
            goto drop;
        }
        if (next == NULL) {
            add(&st->dropped, 1);
            goto drop;
        }
        add(&st->out, 1);
        if (next != ev) {
            add(&st->replaced, 1);
            if (owned != NULL)
                evs_event_unref(owned);
            owned = next;
            ev = next;
        }
    }
    if (to_sinks(p, ev) || p->nsinks == 0)
        add(&p->emitted, 1);
    if (owned != NULL)
        evs_event_unref(owned);
    return 0;
drop:
    add(&p->dropped, 1);
    if (owned != NULL)
        evs_event_unref(owned);
    return 0;
}

/* The subscription's handler. */
static int run_chain(const evs_event *src, void *user)
{
    evs_processor *p = user;
    const evs_processor *outer = tl_running;
    tl_running = p;
    int rc = chain(p, src);
    tl_running = outer;
    return rc;
}

int evs_processor_start(evs_processor *p)
{
    if (p == NULL)
        return EVS_EINVAL;
    if (p->sub != NULL)
        return EVS_EBUSY;
    return evs_subscribe(&p->sub, p->source, p->pattern, run_chain, NULL, p, NULL);
}

int evs_processor_stop(evs_processor *p)
{
    if (p == NULL)
        return EVS_EINVAL;
    if (p->sub == NULL)
        return 0;
    /* When it returns, run_chain is not running and never runs again
     * (inside our own handler it returns at once: that call is the last). */
    int rc = evs_unsubscribe(p->sub);
    p->sub = NULL;
    return rc;
}

int evs_processor_stats_get(const evs_processor *p, evs_processor_stats *out)
{
    if (p == NULL || out == NULL)
        return EVS_EINVAL;
    out->received = get(&p->received);
    out->emitted = get(&p->emitted);
    out->dropped = get(&p->dropped);
    out->errors = get(&p->errors);
    out->stages = p->n;
    out->running = p->sub != NULL;
    return 0;
}

int evs_processor_stage_stats_get(const evs_processor *p, size_t index, evs_stage_stats *out)
{
    if (p == NULL || out == NULL || index >= p->n)
        return EVS_EINVAL;
    const stage *st = &p->stages[index];
    out->name = st->name;
    out->in = get(&st->in);
    out->out = get(&st->out);
    out->dropped = get(&st->dropped);
    out->replaced = get(&st->replaced);
    out->errors = get(&st->errors);
    return 0;
}

int evs_processor_destroy(evs_processor *p)
{
    if (p == NULL)
        return 0;
    if (tl_running == p)
        return EVS_EDEADLK;
    int rc = evs_processor_stop(p);
    if (rc != 0)
        return rc;
    for (size_t i = 0; i < p->n; i++)
        evs__free(p->stages[i].name);
    evs__free(p->stages);
    evs__free(p->pattern);
    evs__free(p);
    return 0;
}
