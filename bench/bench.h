/*
 * evs-bench: the measurement framework shared by every scenario file.
 *
 * A scenario is one row of the table in bench/scenarios.c: a name, the
 * parameters, up to BENCH_MAX_EVS evstream variants (ways of using the
 * library: default options, the single-publisher move path, ...) and up
 * to BENCH_MAX_CMP comparisons. main.c runs the sides interleaved
 * (variants, then comparisons, then the reverse order, and again), so
 * that a change in the hypervisor's
 * core-to-core cost hits every side alike, probes the core-to-core
 * latency before each round, and reports medians and per-round ratios.
 *
 * A side is a bench_fn: it runs one timed repetition with the given
 * parameters, fills a bench_result, and returns BENCH_OK, BENCH_NOT_BUILT
 * (its library was missing at build time) or BENCH_FAIL (the receivers
 * did not get exactly what was sent; `note` says what). Every side
 * counts and checksums what its receivers got (bench_tally), so nothing
 * can be optimised away and a lost or duplicated message fails the run.
 *
 * Message layout, the same for every side: bytes 0..7 the sequence
 * number (publisher index << 48 | 1, 2, 3, ...), bytes 8..15 a
 * CLOCK_MONOTONIC stamp in ns (latency scenarios), the rest filler.
 * Sequence 0 is a sync message (sent before timing starts), UINT64_MAX
 * an end marker; receivers count neither.
 *
 * The benchmark uses only the public header <evstream.h>.
 */
#ifndef EVS_BENCH_H
#define EVS_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#define BENCH_MAX_EVS  4  /* evstream variants per scenario */
#define BENCH_MAX_CMP  6  /* comparisons per scenario */
#define BENCH_MAX_PUBS 4  /* publishers per scenario */
#define BENCH_MAX_SUBS 64 /* subscribers per scenario */
#define BENCH_MAX_GOALS 2 /* goals per scenario */

#define BENCH_SEQ_SYNC ((uint64_t)0)
#define BENCH_SEQ_END  UINT64_MAX
#define BENCH_PUB_SHIFT 48
#define BENCH_HDR 16 /* seq + stamp */

/* What a side returns. */
enum { BENCH_OK = 0, BENCH_NOT_BUILT = 1, BENCH_FAIL = -1 };

/* What a scenario measures; decides how main.c reads the results. */
typedef enum bench_kind {
    BENCH_RATE,    /* messages (or deliveries) per second, higher is better */
    BENCH_LATENCY, /* one-way publish -> receive ns, samples, lower is better */
    BENCH_IDLE,    /* % of one core used while nothing is published */
    BENCH_VALUE    /* a measured quantity in the scenario's unit (bytes per
                      client...), in bench_result.rate; run once; lower is
                      better */
} bench_kind;

/* One repetition's parameters. The table fills all but `seconds`. */
typedef struct bench_params {
    int     pubs;     /* publisher threads; 0 = 1 */
    int     subs;     /* subscribers; 0 = 1 */
    size_t  payload;  /* bytes per message; 0 = 64 (at least BENCH_HDR) */
    int     wait;     /* evstream: an evs_wait value */
    int64_t gap_ns;   /* latency: pause between samples (lets a parked
                         receiver fall asleep); 0 = none */
    double  seconds;  /* this repetition's duration (set by main.c) */
    const void *arg;  /* the side's bench_side.arg (set by main.c) */
} bench_params;

/* How a side's second figure (bench_result.extra) is shown. */
enum { BENCH_EXTRA_NONE = 0, BENCH_EXTRA_RATE, BENCH_EXTRA_NS };

/* One repetition's results. */
typedef struct bench_result {
    double   rate;      /* RATE: received messages or deliveries per second */
    uint64_t sent;      /* messages published (per subscriber) */
    uint64_t received;  /* messages or deliveries counted by receivers */
    uint64_t drops;     /* lossy comparisons (nng): deliveries missing */
    double   cpu_pct;   /* IDLE: CPU used, % of one core */
    int64_t *samples;   /* LATENCY: one-way ns; buffer owned by main.c */
    size_t   nsamples;  /* LATENCY: samples written */
    size_t   cap;       /* LATENCY: room in `samples` */
    char     note[200]; /* failure message, or a remark for the table */
    /* A second figure, shown beside the side's name as the median over
     * the repetitions, e.g. "(31.2 M deliveries/s)": extra_kind says
     * how to format it (a rate, or ns), extra_label what it counts. */
    double      extra;
    int         extra_kind; /* BENCH_EXTRA_* */
    const char *extra_label;
} bench_result;

typedef int (*bench_fn)(const bench_params *p, bench_result *r);

/*
 * One side of a scenario: a label, the function that runs it, an
 * argument handed to it as bench_params.arg (the evstream variant), and
 * a family name that goals can refer to ("zmq": the goal compares with
 * the fastest comparison of that family in the same run).
 */
typedef struct bench_side {
    const char *name;
    bench_fn    run;
    const void *arg;
    const char *family;
} bench_side;

/* A goal from the issue, checked against the run's own figures. */
typedef enum bench_metric {
    GOAL_NONE = 0,
    GOAL_RATIO_MIN,    /* median rate ratio vs cmp[cmp] >= value */
    GOAL_P50_RATIO_MAX,/* median p50 ratio (evstream / cmp[cmp]) <= value */
    GOAL_P999_MAX_NS,  /* evstream p99.9 (all samples) < value ns */
    GOAL_CPU_MAX_PCT,  /* evstream idle CPU < value % */
    GOAL_RATE_MIN,     /* evstream median rate >= value (per second) */
    GOAL_VALUE_MAX     /* evstream median value (BENCH_VALUE) <= value */
} bench_metric;

/*
 * Goals are checked for every evstream variant of the scenario. A ratio
 * goal compares with `family`'s fastest comparison in the run (highest
 * median; for a latency goal, lowest median p50) when `family` is set,
 * else with cmp[cmp].
 */
typedef struct bench_goal {
    bench_metric metric;
    int          cmp;    /* index into cmp[] for ratio goals (no family) */
    double       value;
    const char  *family; /* ratio goals: against this family's fastest */
    unsigned     variants; /* bit v set: check for variant [v + 1] only;
                              0 = every variant */
} bench_goal;

/* A row of the scenario table. */
typedef struct bench_scenario {
    const char  *name;        /* --scenario NAME */
    const char  *desc;        /* one line for the table and --list */
    const char  *unit;        /* "events/s", "deliveries/s", "ns", "% core" */
    bench_kind   kind;
    bench_params params;
    double       time_scale;  /* repetition time = --seconds * this; 0 = 1 */
    double       fixed_seconds; /* when > 0: this long, once, unless
                                   --seconds is given (idle) */
    bench_side   evs[BENCH_MAX_EVS]; /* evstream variants; ends at the
                                        first NULL name; at least one */
    bench_side   cmp[BENCH_MAX_CMP]; /* ends at the first NULL name */
    bench_goal   goals[BENCH_MAX_GOALS];
} bench_scenario;

extern const bench_scenario bench_scenarios[];
extern const size_t bench_nscenarios;

/* ---------------------------------------------------------------- */
/* Helpers (main.c)                                                  */

int64_t bench_now_ns(void);
/* Sleep `ns` nanoseconds. */
void bench_sleep_ns(int64_t ns);
/* The payload size a scenario means (0 -> 64, at least BENCH_HDR). */
size_t bench_payload(const bench_params *p);
/* A message buffer of `len` bytes: filler with header (seq, stamp). */
void bench_fill(void *buf, size_t len);
/* Set printf-style text in r->note; returns BENCH_FAIL. */
int bench_fail(bench_result *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Sort the samples and pick a percentile (0..100). */
int64_t bench_percentile(int64_t *sorted, size_t n, double pct);
void bench_sort_i64(int64_t *v, size_t n);

static inline void bench_put_hdr(void *buf, uint64_t seq, int64_t stamp)
{
    memcpy(buf, &seq, 8);
    memcpy((char *)buf + 8, &stamp, 8);
}

static inline uint64_t bench_get_seq(const void *buf)
{
    uint64_t seq;
    memcpy(&seq, buf, 8);
    return seq;
}

static inline int64_t bench_get_stamp(const void *buf)
{
    int64_t t;
    memcpy(&t, (const char *)buf + 8, 8);
    return t;
}

static inline uint64_t bench_seq(int pub, uint64_t i)
{
    return ((uint64_t)pub << BENCH_PUB_SHIFT) | i;
}

/*
 * What one receiver got: count, checksum (the sum of sequence numbers),
 * and order errors (a sequence number from a publisher not one more than
 * the previous, or for lossy receivers not larger). One cache line each
 * so that receivers of different subscribers do not share lines.
 */
typedef struct bench_tally {
    uint64_t count;
    uint64_t sum;
    uint64_t order_errors;
    uint64_t last[BENCH_MAX_PUBS];
} __attribute__((aligned(128))) bench_tally;

static inline void bench_tally_add(bench_tally *t, uint64_t seq, bool lossy)
{
    uint64_t pub = seq >> BENCH_PUB_SHIFT;
    uint64_t i = seq & (((uint64_t)1 << BENCH_PUB_SHIFT) - 1);
    if (pub >= BENCH_MAX_PUBS) {
        t->order_errors++;
    } else if (lossy) {
        if (i > t->last[pub])
            t->last[pub] = i;
        else
            t->order_errors++;
    } else {
        if (i != t->last[pub] + 1)
            t->order_errors++; /* a gap or a repeat: count it once */
        t->last[pub] = i;
    }
    t->count++;
    t->sum += seq;
}

/*
 * Check `nsub` tallies against what `npub` publishers sent (sent[p]
 * messages each, numbered 1..sent[p]). Lossless: every receiver got
 * exactly every message, in order, with the exact checksum (sums wrap
 * mod 2^64 alike on both sides). Lossy: strictly increasing per
 * publisher and none beyond the last sent, i.e. a subset of what was
 * sent; the rest count as drops. Fills r->sent, r->received, r->drops;
 * on a mismatch fills r->note and returns BENCH_FAIL naming `who`.
 */
int bench_verify(bench_result *r, const char *who, const bench_tally *t,
                 int nsub, const uint64_t *sent, int npub, bool lossy);

/* ---------------------------------------------------------------- */
/* Sides                                                             */

/* scn_stream.c: evstream. scn_stream_rate runs the variant that
 * bench_params.arg points to (a struct scn_variant, scn_stream.h). */
int scn_stream_rate(const bench_params *p, bench_result *r);
int scn_stream_latency(const bench_params *p, bench_result *r);
int scn_stream_idle(const bench_params *p, bench_result *r);

/* scn_topic.c: TopicStream routing. scn_topic_rate runs the
 * configuration bench_params.arg points to (one of the topic_cfg objects
 * below); scn_topic_naive is the reference that scans every pattern. */
typedef struct topic_cfg topic_cfg;
int scn_topic_rate(const bench_params *p, bench_result *r);
int scn_topic_naive(const bench_params *p, bench_result *r);
/* publish flat out, 10,000 subscriptions, working set of 1,000 or
 * 100,000 subjects, cache warm */
extern const topic_cfg scn_t_pub_1k, scn_t_pub_100k;
/* the dispatcher alone on one CPU, same working sets */
extern const topic_cfg scn_t_drain_1k, scn_t_drain_100k;
/* topic_cache = 1: every route a miss */
extern const topic_cfg scn_t_pub_cold, scn_t_drain_cold;
/* every subject new to the stream, 10,000 or 1,000 subscriptions */
extern const topic_cfg scn_t_new_10k, scn_t_new_1k;

/* cmp_zmq.c: ZeroMQ inproc XPUB/SUB, lossless (XPUB_NODROP, HWM 4096,
 * one receiver thread) */
int cmp_zmq_rate(const bench_params *p, bench_result *r);
/* cmp_zmq.c: ZeroMQ inproc plain PUB/SUB, HWM 0 (unbounded queues),
 * one receiver thread per SUB socket or one for all */
int cmp_zmq_pub_rate(const bench_params *p, bench_result *r);
int cmp_zmq_pub1_rate(const bench_params *p, bench_result *r);
const char *cmp_zmq_version(void);

/* cmp_nng.c: nng inproc pub0/sub0 (drops reported, not failed) */
int cmp_nng_rate(const bench_params *p, bench_result *r);
const char *cmp_nng_version(void);

/* cmp_mutex.c: a bounded mutex + condition variable queue */
int cmp_mutex_rate(const bench_params *p, bench_result *r);
int cmp_mutex_latency(const bench_params *p, bench_result *r);

/* cmp_ckring.c: raw ck_ring pointer passing */
int cmp_ckring_prealloc_rate(const bench_params *p, bench_result *r);
int cmp_ckring_malloc_rate(const bench_params *p, bench_result *r);
int cmp_ckring_latency(const bench_params *p, bench_result *r);

/* SSE scenarios (scn_sse.c). */
int scn_sse_encode_rate(const bench_params *p, bench_result *r);
int scn_sse_memcpy_rate(const bench_params *p, bench_result *r);
int scn_sse_idle_memory(const bench_params *p, bench_result *r);
extern const int scn_sse_json;    /* side arg: events with JSON data */
extern const int scn_sse_msgpack; /* side arg: msgpack data rendered as JSON */
extern const int scn_sse_json_4k; /* side arg: ~4 KiB JSON snapshots */

/* The hub (scn_hub.c): `evstream serve` as its own process, loaded
 * over loopback HTTP by libcurl clients in this one. */
int scn_hub_idle_memory(const bench_params *p, bench_result *r);
int scn_hub_fanout(const bench_params *p, bench_result *r);
extern const int scn_hub_pub1; /* side arg: 1 publisher */
extern const int scn_hub_pub4; /* side arg: 4 publishers */

#endif /* EVS_BENCH_H */
