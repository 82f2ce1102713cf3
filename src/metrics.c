/*
 * Metrics: the handler-time histogram, the throughput window, and the
 * Prometheus text exposition of stream and subscription stats (SPEC.md,
 * "Metrics"). The histogram and window are embedded by stream.c; the
 * renderer only reads plain stats structs.
 */
#include "metrics.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "evs_internal.h"

/* ------------------------------------------------------------------ */
/* Histogram                                                           */
/* ------------------------------------------------------------------ */

/* Values 0..15 map to themselves; above, bucket = 8 per power of two. */
static size_t bucket_of(uint64_t v)
{
    if (v < 2 * EVS__HIST_SUB)
        return (size_t)v;
    unsigned e = 63u - (unsigned)__builtin_clzll(v); /* >= 4 */
    if (e >= EVS__HIST_TOP)
        return EVS__HIST_BUCKETS - 1;
    size_t sub = (size_t)(v >> (e - 3)) & (EVS__HIST_SUB - 1);
    return (size_t)(e - 2) * EVS__HIST_SUB + sub;
}

/* The middle of bucket i (its value, for the exact buckets below 16). */
static uint64_t bucket_mid(size_t i)
{
    if (i < 2 * EVS__HIST_SUB)
        return i;
    unsigned e = (unsigned)(i / EVS__HIST_SUB) + 2;
    uint64_t lo = (uint64_t)(EVS__HIST_SUB + i % EVS__HIST_SUB) << (e - 3);
    return lo + ((uint64_t)1 << (e - 3)) / 2;
}

void evs__hist_add(evs__hist *h, uint64_t ns)
{
    ck_pr_add_64(&h->sum_ns, ns);
    ck_pr_add_64(&h->b[bucket_of(ns)], 1);
    /* max only grows; a lost race retries against the newer max. */
    uint64_t m = evs_load(&h->max_ns);
    while (ns > m && !__atomic_compare_exchange_n(&h->max_ns, &m, ns, true, __ATOMIC_RELAXED,
                                                  __ATOMIC_RELAXED)) {
    }
}

void evs__hist_read(const evs__hist *h, evs_latency *out)
{
    memset(out, 0, sizeof(*out));
    if (h == NULL)
        return;
    uint64_t b[EVS__HIST_BUCKETS], total = 0;
    for (size_t i = 0; i < EVS__HIST_BUCKETS; i++)
        total += b[i] = evs_load(&h->b[i]);
    out->count = total;
    out->sum_ns = evs_load(&h->sum_ns);
    out->max_ns = evs_load(&h->max_ns);
    if (total == 0)
        return;
    /* The q-quantile is the value of rank ceil(q * total) (1-based). */
    const double qs[3] = {0.50, 0.90, 0.99};
    uint64_t *dst[3] = {&out->p50_ns, &out->p90_ns, &out->p99_ns};
    uint64_t seen = 0;
    size_t i = 0, k = 0;
    for (; k < 3; k++) {
        uint64_t rank = (uint64_t)(qs[k] * (double)total);
        if ((double)rank < qs[k] * (double)total || rank == 0)
            rank++;
        while (i < EVS__HIST_BUCKETS && seen + b[i] < rank)
            seen += b[i++];
        uint64_t v = bucket_mid(i < EVS__HIST_BUCKETS ? i : EVS__HIST_BUCKETS - 1);
        /* A bucket's middle can lie above the largest value seen. */
        *dst[k] = v > out->max_ns && out->max_ns != 0 ? out->max_ns : v;
    }
}

/* ------------------------------------------------------------------ */
/* Throughput window                                                   */
/* ------------------------------------------------------------------ */

void evs__rate_init(evs__rate *r)
{
    memset(r, 0, sizeof(*r));
    pthread_mutex_init(&r->lock, NULL);
}

void evs__rate_destroy(evs__rate *r) { pthread_mutex_destroy(&r->lock); }

void evs__rate_sample(evs__rate *r, int64_t now_ns, int64_t interval_ns,
                      const uint64_t *counters, double *rates)
{
    pthread_mutex_lock(&r->lock);
    if (r->t[1] == 0) { /* the first sample */
        r->t[1] = now_ns;
        memcpy(r->c[1], counters, sizeof(r->c[1]));
    } else if (now_ns - r->t[1] >= interval_ns) {
        r->t[0] = r->t[1];
        memcpy(r->c[0], r->c[1], sizeof(r->c[0]));
        r->t[1] = now_ns;
        memcpy(r->c[1], counters, sizeof(r->c[1]));
    }
    for (int k = 0; k < EVS__RATE_COUNTERS; k++) {
        double dt;
        uint64_t dc;
        if (r->t[0] != 0) { /* between the last two samples */
            dt = (double)(r->t[1] - r->t[0]) / 1e9;
            dc = r->c[1][k] - r->c[0][k];
        } else { /* since the first sample */
            dt = (double)(now_ns - r->t[1]) / 1e9;
            dc = counters[k] - r->c[1][k];
        }
        rates[k] = dt > 0 ? (double)dc / dt : 0.0;
    }
    pthread_mutex_unlock(&r->lock);
}

/* ------------------------------------------------------------------ */
/* Prometheus text exposition (format 0.0.4)                           */
/* ------------------------------------------------------------------ */

/* Appends formatted text; remembers the first failure. */
typedef struct out {
    evs_buf *b;
    int      rc;
} out;

__attribute__((format(printf, 2, 3))) static void emit(out *o, const char *fmt, ...)
{
    if (o->rc != 0)
        return;
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(tmp))
        o->rc = EVS_EINVAL; /* our formats are short: cannot happen */
    else
        o->rc = evs_buf_append(o->b, tmp, (size_t)n);
}

/* A label value: backslash, double quote and line feed escaped. */
static void emit_label_value(out *o, const char *v)
{
    for (const char *p = v; *p != '\0' && o->rc == 0; p++) {
        if (*p == '\\')
            o->rc = evs_buf_append(o->b, "\\\\", 2);
        else if (*p == '"')
            o->rc = evs_buf_append(o->b, "\\\"", 2);
        else if (*p == '\n')
            o->rc = evs_buf_append(o->b, "\\n", 2);
        else
            o->rc = evs_buf_append(o->b, p, 1);
    }
}

/* name{stream="..",sub="..",extra} (extra: "" or `key="value"`) */
static void emit_series(out *o, const char *name, const evs_metrics_item *it,
                        const char *extra)
{
    emit(o, "%s{stream=\"", name);
    emit_label_value(o, it->stream != NULL ? it->stream : "");
    if (it->sub != NULL) {
        emit(o, "\",sub=\"");
        emit_label_value(o, it->sub);
    }
    emit(o, "\"%s%s} ", extra[0] != '\0' ? "," : "", extra);
}

enum { KIND_STREAM, KIND_SUB };

static bool is_kind(const evs_metrics_item *it, int kind)
{
    return kind == KIND_SUB ? it->sub != NULL && it->sub_stats != NULL
                            : it->sub == NULL && it->stream_stats != NULL;
}

/* A family of one plain value per item. `field` is an offset into the
 * kind's stats struct; gauges that are doubles say so. */
typedef struct family {
    const char *name;
    const char *help;
    const char *type; /* "counter" or "gauge" */
    int         kind;
    size_t      field;
    bool        is_double;
} family;

#define SF(f) offsetof(evs_stream_stats, f)
#define BF(f) offsetof(evs_sub_stats, f)

static const family families[] = {
    {"evs_stream_published_total", "Events accepted by the stream.", "counter", KIND_STREAM,
     SF(published), false},
    {"evs_stream_delivered_total", "Handler calls.", "counter", KIND_STREAM, SF(delivered),
     false},
    {"evs_stream_filtered_total", "Events a filter kept from a handler.", "counter",
     KIND_STREAM, SF(filtered), false},
    {"evs_stream_handler_errors_total", "Handler calls that returned an error.", "counter",
     KIND_STREAM, SF(handler_errors), false},
    {"evs_stream_heartbeats_total", "Heartbeat events published for idleness.", "counter",
     KIND_STREAM, SF(heartbeats), false},
    {"evs_stream_unroutable_total", "Accepted events no pattern matched.", "counter",
     KIND_STREAM, SF(unroutable), false},
    {"evs_stream_queue_depth", "Events accepted but not yet dispatched.", "gauge", KIND_STREAM,
     SF(queued), false},
    {"evs_stream_queue_depth_max", "Most events ever queued at once.", "gauge", KIND_STREAM,
     SF(queue_hwm), false},
    {"evs_stream_subscribers", "Live subscriptions.", "gauge", KIND_STREAM, SF(subscribers),
     false},
    {"evs_stream_published_per_second", "Publish rate over the last interval.", "gauge",
     KIND_STREAM, SF(published_per_s), true},
    {"evs_stream_delivered_per_second", "Delivery rate over the last interval.", "gauge",
     KIND_STREAM, SF(delivered_per_s), true},
    {"evs_sub_delivered_total", "Handler calls of the subscription.", "counter", KIND_SUB,
     BF(delivered), false},
    {"evs_sub_filtered_total", "Events the subscription's filter rejected.", "counter",
     KIND_SUB, BF(filtered), false},
    {"evs_sub_handler_errors_total", "Handler calls that returned an error.", "counter",
     KIND_SUB, BF(handler_errors), false},
    {"evs_sub_dropped_total", "Events the stream dropped while the subscription was live.",
     "counter", KIND_SUB, BF(dropped), false},
    {"evs_sub_queue_depth_max", "Deepest queue seen when the subscription was served.",
     "gauge", KIND_SUB, BF(queue_hwm), false},
    {"evs_sub_delivered_per_second", "Delivery rate over the last interval.", "gauge",
     KIND_SUB, BF(delivered_per_s), true},
};

static const void *stats_of(const evs_metrics_item *it, int kind)
{
    return kind == KIND_SUB ? (const void *)it->sub_stats : (const void *)it->stream_stats;
}

static void emit_family(out *o, const family *f, const evs_metrics_item *items, size_t n)
{
    emit(o, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help, f->name, f->type);
    for (size_t i = 0; i < n; i++) {
        if (!is_kind(&items[i], f->kind))
            continue;
        const char *base = (const char *)stats_of(&items[i], f->kind) + f->field;
        emit_series(o, f->name, &items[i], "");
        if (f->is_double) {
            double v;
            memcpy(&v, base, sizeof(v));
            emit(o, "%.6g\n", v);
        } else {
            uint64_t v;
            memcpy(&v, base, sizeof(v));
            emit(o, "%" PRIu64 "\n", v);
        }
    }
}

/* The stream's drops, one series per reason. */
static void emit_drops(out *o, const evs_metrics_item *items, size_t n)
{
    static const struct {
        const char *reason;
        size_t      field;
    } reasons[] = {
        {"newest", SF(dropped_newest)},  {"oldest", SF(dropped_oldest)},
        {"full", SF(rejected_full)},     {"timeout", SF(timed_out)},
        {"nomem", SF(dropped_nomem)},
    };
    const char *name = "evs_stream_dropped_total";
    emit(o, "# HELP %s Events lost or refused, by reason.\n# TYPE %s counter\n", name, name);
    for (size_t i = 0; i < n; i++) {
        if (!is_kind(&items[i], KIND_STREAM))
            continue;
        for (size_t r = 0; r < sizeof(reasons) / sizeof(reasons[0]); r++) {
            char extra[32];
            snprintf(extra, sizeof(extra), "reason=\"%s\"", reasons[r].reason);
            uint64_t v;
            memcpy(&v, (const char *)items[i].stream_stats + reasons[r].field, sizeof(v));
            emit_series(o, name, &items[i], extra);
            emit(o, "%" PRIu64 "\n", v);
        }
    }
}

/* Handler time as a summary (quantiles, sum, count) plus a max gauge;
 * only items whose latency was measured (count > 0 or metrics on). */
static const evs_latency *latency_of(const evs_metrics_item *it, int kind)
{
    return kind == KIND_SUB ? &it->sub_stats->handler : &it->stream_stats->handler;
}

static void emit_latency(out *o, int kind, const evs_metrics_item *items, size_t n)
{
    const char *name = kind == KIND_SUB ? "evs_sub_handler_seconds" : "evs_stream_handler_seconds";
    emit(o, "# HELP %s Handler time (streams created with opts.metrics).\n# TYPE %s summary\n",
         name, name);
    for (size_t i = 0; i < n; i++) {
        if (!is_kind(&items[i], kind))
            continue;
        const evs_latency *l = latency_of(&items[i], kind);
        static const char *const q[3] = {"quantile=\"0.5\"", "quantile=\"0.9\"",
                                         "quantile=\"0.99\""};
        const uint64_t v[3] = {l->p50_ns, l->p90_ns, l->p99_ns};
        for (int k = 0; k < 3; k++) {
            emit_series(o, name, &items[i], q[k]);
            emit(o, "%.9g\n", (double)v[k] / 1e9);
        }
        char sum[64], count[64];
        snprintf(sum, sizeof(sum), "%s_sum", name);
        snprintf(count, sizeof(count), "%s_count", name);
        emit_series(o, sum, &items[i], "");
        emit(o, "%.9g\n", (double)l->sum_ns / 1e9);
        emit_series(o, count, &items[i], "");
        emit(o, "%" PRIu64 "\n", l->count);
    }
    char max[64];
    snprintf(max, sizeof(max), "%s_max", name);
    emit(o, "# HELP %s Longest handler call.\n# TYPE %s gauge\n", max, max);
    for (size_t i = 0; i < n; i++) {
        if (!is_kind(&items[i], kind))
            continue;
        emit_series(o, max, &items[i], "");
        emit(o, "%.9g\n", (double)latency_of(&items[i], kind)->max_ns / 1e9);
    }
}

int evs_metrics_prometheus(const evs_metrics_item *items, size_t n, evs_buf *b)
{
    if (b == NULL || (items == NULL && n > 0))
        return EVS_EINVAL;
    for (size_t i = 0; i < n; i++) {
        const evs_metrics_item *it = &items[i];
        if (!is_kind(it, KIND_STREAM) && !is_kind(it, KIND_SUB))
            return EVS_EINVAL;
    }
    /* Families of a kind no item has are left out (a page of one
     * stream has no evs_sub_* lines). */
    bool streams = false, subs = false;
    for (size_t i = 0; i < n; i++) {
        streams |= is_kind(&items[i], KIND_STREAM);
        subs |= is_kind(&items[i], KIND_SUB);
    }
    size_t start = b->len;
    out o = {b, 0};
    size_t nf = sizeof(families) / sizeof(families[0]);
    if (streams) {
        for (size_t f = 0; f < nf; f++)
            if (families[f].kind == KIND_STREAM)
                emit_family(&o, &families[f], items, n);
        emit_drops(&o, items, n);
        emit_latency(&o, KIND_STREAM, items, n);
    }
    if (subs) {
        for (size_t f = 0; f < nf; f++)
            if (families[f].kind == KIND_SUB)
                emit_family(&o, &families[f], items, n);
        emit_latency(&o, KIND_SUB, items, n);
    }
    if (o.rc != 0 && b->data != NULL) { /* leave the buffer as it was */
        b->len = start;
        b->data[start] = '\0';
    }
    return o.rc;
}

int evs_stream_prometheus(evs_stream *s, const char *name, evs_buf *b)
{
    if (s == NULL || name == NULL || b == NULL)
        return EVS_EINVAL;
    evs_stream_stats st;
    int rc = evs_stream_stats_get(s, &st);
    if (rc != 0)
        return rc;
    evs_metrics_item it = {.stream = name, .stream_stats = &st};
    return evs_metrics_prometheus(&it, 1, b);
}
