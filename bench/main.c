/*
 * evs-bench: runs the scenarios of bench/scenarios.c and prints one
 * table (or, with --json, one JSON object per scenario).
 *
 * How a scenario runs. Each repetition ("round") first measures the
 * core-to-core latency (two threads pinned to two CPUs bounce one cache
 * line), then runs every side once: the evstream variants, then cmp1,
 * cmp2, ... in even rounds and the reverse in odd rounds, so each
 * evstream run sits next to each comparison's and a drift in the
 * machine's inter-core cost hits both. A side's figure is the median
 * over rounds; a ratio is the median of the per-round ratios (each
 * evstream variant / comparison: rates, or p50 latencies). Latency
 * percentiles are over all samples of all rounds.
 *
 * Every side verifies what its receivers got; a mismatch is printed at
 * once on stderr, shown as FAILED in the table, and makes the exit
 * status 1.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* pthread_setaffinity_np, CPU_SET */
#endif

#include "bench.h"

#include <evstream.h>

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define MAX_REPS 50
#define DEFAULT_REPS 5
#define DEFAULT_SECONDS 0.5
#define LAT_CAP 200000 /* latency samples per repetition at most */
/* Other processes' CPU (or steal) above this, % of a core, marks a
 * scenario as disturbed in the table. */
#define DISTURBED_PCT 10.0

/* ---------------------------------------------------------------- */
/* Helpers declared in bench.h                                       */

int64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void bench_sleep_ns(int64_t ns)
{
    struct timespec ts = {.tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

size_t bench_payload(const bench_params *p)
{
    size_t n = p->payload ? p->payload : 64;
    return n < BENCH_HDR ? BENCH_HDR : n;
}

void bench_fill(void *buf, size_t len)
{
    memset(buf, 0xab, len);
    if (len >= BENCH_HDR)
        bench_put_hdr(buf, 0, 0);
}

int bench_fail(bench_result *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->note, sizeof(r->note), fmt, ap);
    va_end(ap);
    return BENCH_FAIL;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

void bench_sort_i64(int64_t *v, size_t n) { qsort(v, n, sizeof(*v), cmp_i64); }

int64_t bench_percentile(int64_t *sorted, size_t n, double pct)
{
    if (n == 0)
        return 0;
    double rank = ceil(pct / 100.0 * (double)n);
    size_t i = rank < 1 ? 0 : (size_t)rank - 1;
    return sorted[i < n ? i : n - 1];
}

int bench_verify(bench_result *r, const char *who, const bench_tally *t,
                 int nsub, const uint64_t *sent, int npub, bool lossy)
{
    uint64_t want = 0, want_sum = 0;
    for (int p = 0; p < npub; p++) {
        want += sent[p];
        want_sum += sent[p] * ((uint64_t)p << BENCH_PUB_SHIFT) + sent[p] * (sent[p] + 1) / 2;
    }
    r->sent = want;
    r->received = 0;
    r->drops = 0;
    for (int s = 0; s < nsub; s++)
        r->received += t[s].count;
    for (int s = 0; s < nsub; s++) {
        const bench_tally *x = &t[s];
        if (x->order_errors != 0)
            return bench_fail(r, "%s: subscriber %d got %llu messages out of order", who, s,
                              (unsigned long long)x->order_errors);
        if (lossy) {
            /* In order per publisher (so no repeats), none beyond the
             * last sent: what arrived is a subset of what was sent. */
            for (int p = 0; p < npub; p++)
                if (x->last[p] > sent[p])
                    return bench_fail(r, "%s: subscriber %d got message %llu of publisher %d, "
                                      "which sent %llu", who, s,
                                      (unsigned long long)x->last[p], p,
                                      (unsigned long long)sent[p]);
            if (x->count > want)
                return bench_fail(r, "%s: subscriber %d got %llu messages, %llu were sent",
                                  who, s, (unsigned long long)x->count, (unsigned long long)want);
            r->drops += want - x->count;
            continue;
        }
        if (x->count != want || x->sum != want_sum)
            return bench_fail(r, "%s: subscriber %d got %llu messages with checksum %llu, "
                              "expected %llu with checksum %llu", who, s,
                              (unsigned long long)x->count, (unsigned long long)x->sum,
                              (unsigned long long)want, (unsigned long long)want_sum);
        for (int p = 0; p < npub; p++)
            if (x->last[p] != sent[p])
                return bench_fail(r, "%s: subscriber %d: last message of publisher %d was "
                                  "%llu, expected %llu", who, s, p,
                                  (unsigned long long)x->last[p], (unsigned long long)sent[p]);
    }
    return BENCH_OK;
}

/* ---------------------------------------------------------------- */
/* Core-to-core latency probe                                        */

struct probe {
    _Alignas(128) atomic_uint_fast64_t line; /* the bounced cache line */
};

#define PROBE_ROUNDS 4000
#define PROBE_MAX_NS (20 * 1000 * 1000) /* a batch gives up after 20 ms */
#define PROBE_STOP UINT64_MAX

static void pin(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

static int probe_cpus[2] = {-1, -1};

static void *probe_pong(void *arg)
{
    struct probe *pr = arg;
    pin(probe_cpus[1]);
    for (uint64_t i = 1;; i++) {
        uint64_t v;
        while ((v = atomic_load_explicit(&pr->line, memory_order_acquire)) != 2 * i - 1)
            if (v == PROBE_STOP)
                return NULL;
        atomic_store_explicit(&pr->line, 2 * i, memory_order_release);
    }
}

struct ping_arg {
    struct probe *pr;
    double        ns;
};

/* Bounce the line PROBE_ROUNDS times, or for PROBE_MAX_NS when the CPUs
 * are busy elsewhere; ns = one-way time. */
static void *probe_ping(void *arg)
{
    struct ping_arg *a = arg;
    struct probe *pr = a->pr;
    uint64_t i;
    pin(probe_cpus[0]);
    int64_t t0 = bench_now_ns(), t1 = t0;
    for (i = 1; i <= PROBE_ROUNDS; i++) {
        atomic_store_explicit(&pr->line, 2 * i - 1, memory_order_release);
        while (atomic_load_explicit(&pr->line, memory_order_acquire) != 2 * i)
            ;
        if (i % 64 == 0 && (t1 = bench_now_ns()) - t0 > PROBE_MAX_NS)
            break;
    }
    t1 = bench_now_ns();
    atomic_store_explicit(&pr->line, PROBE_STOP, memory_order_release);
    a->ns = (double)(t1 - t0) / (2.0 * (double)(i > PROBE_ROUNDS ? PROBE_ROUNDS : i));
    return NULL;
}

/* One-way cache-line transfer time in ns (median of 5 batches), or 0
 * when fewer than two CPUs are available. */
static double c2c_probe(void)
{
    double batch[5];
    if (probe_cpus[1] < 0)
        return 0;
    for (int b = 0; b < 5; b++) {
        struct probe *pr = aligned_alloc(128, sizeof(*pr));
        struct ping_arg a = {.pr = pr};
        pthread_t t1, t2;
        atomic_init(&pr->line, 0);
        pthread_create(&t2, NULL, probe_pong, pr);
        pthread_create(&t1, NULL, probe_ping, &a);
        pthread_join(t1, NULL);
        pthread_join(t2, NULL);
        batch[b] = a.ns;
        free(pr);
    }
    for (int i = 1; i < 5; i++)
        for (int j = i; j > 0 && batch[j] < batch[j - 1]; j--) {
            double t = batch[j];
            batch[j] = batch[j - 1];
            batch[j - 1] = t;
        }
    return batch[2];
}

static void probe_init(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) != 0)
        return;
    for (int c = 0, k = 0; c < CPU_SETSIZE && k < 2; c++)
        if (CPU_ISSET(c, &set))
            probe_cpus[k++] = c;
}

/* ---------------------------------------------------------------- */
/* Disturbance: what else used the CPUs while a scenario ran          */

struct cpu_snap {
    int64_t wall, own;       /* ns */
    uint64_t busy, steal;    /* jiffies, all CPUs */
};

static void cpu_snap(struct cpu_snap *c)
{
    unsigned long long v[8] = {0};
    struct timespec ts;
    FILE *f = fopen("/proc/stat", "r");
    if (f != NULL) {
        if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
                   &v[3], &v[4], &v[5], &v[6], &v[7]) != 8)
            memset(v, 0, sizeof(v));
        fclose(f);
    }
    /* user nice system idle iowait irq softirq steal */
    c->busy = v[0] + v[1] + v[2] + v[5] + v[6];
    c->steal = v[7];
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    c->own = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    c->wall = bench_now_ns();
}

/* Other processes' CPU and steal between two snapshots, % of one core. */
static void cpu_other(const struct cpu_snap *a, const struct cpu_snap *b, double *other,
                      double *steal)
{
    double tick = 1e9 / (double)sysconf(_SC_CLK_TCK);
    double wall = (double)(b->wall - a->wall);
    double busy = (double)(b->busy - a->busy) * tick - (double)(b->own - a->own);
    *other = wall > 0 && busy > 0 ? 100.0 * busy / wall : 0;
    *steal = wall > 0 ? 100.0 * (double)(b->steal - a->steal) * tick / wall : 0;
}

/* ---------------------------------------------------------------- */
/* Running a scenario                                                */

/* Everything measured for one side over all rounds. */
struct side_run {
    const bench_side *side;
    int      status;           /* BENCH_OK, BENCH_NOT_BUILT, BENCH_FAIL */
    char     note[200];
    int      n;                /* rounds completed */
    double   value[MAX_REPS];  /* rate, p50 ns or cpu % per round */
    /* Comparisons: evstream variant v / this, per round. */
    double   ratio[BENCH_MAX_EVS][MAX_REPS];
    int      nratio[BENCH_MAX_EVS];
    uint64_t drops, received;
    int64_t *pool;             /* latency: all samples */
    size_t   npool;
    double   p50, p99, p999;   /* latency: over the pool */
    double   extra[MAX_REPS];  /* the side's second figure per round */
    int      nextra;
    int      extra_kind;       /* BENCH_EXTRA_*, from the last round */
    const char *extra_label;
};

struct scn_run {
    const bench_scenario *sc;
    int             nevs;     /* evstream variants: side[0 .. nevs-1] */
    int             nsides;   /* nevs + comparisons */
    struct side_run side[BENCH_MAX_EVS + BENCH_MAX_CMP];
    double          c2c[MAX_REPS];
    int             rounds;
    double          seconds;  /* per repetition */
    double          other_pct; /* CPU used by other processes, % of a core */
    double          steal_pct; /* CPU the hypervisor gave elsewhere, % of a core */
};

static struct {
    double seconds;
    bool   seconds_set;
    int    reps;
    bool   reps_set;
    bool   json;
    bool   failed;
} cfg = {DEFAULT_SECONDS, false, DEFAULT_REPS, false, false, false};

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(const double *v, int n)
{
    double tmp[MAX_REPS];
    if (n <= 0)
        return NAN;
    memcpy(tmp, v, sizeof(double) * (size_t)n);
    qsort(tmp, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? tmp[n / 2] : (tmp[n / 2 - 1] + tmp[n / 2]) / 2;
}

static void run_side(struct scn_run *run, int i, double seconds, bool record)
{
    const bench_scenario *sc = run->sc;
    struct side_run *sr = &run->side[i];
    bench_params p = sc->params;
    bench_result r;

    if (sr->status != BENCH_OK)
        return;
    memset(&r, 0, sizeof(r));
    p.seconds = seconds;
    p.arg = sr->side->arg;
    if (sc->kind == BENCH_LATENCY) {
        r.cap = LAT_CAP;
        r.samples = malloc(sizeof(int64_t) * r.cap);
        if (r.samples == NULL) {
            fprintf(stderr, "evs-bench: out of memory\n");
            exit(2);
        }
    }
    int rc = sr->side->run(&p, &r);
    if (rc != BENCH_OK) {
        sr->status = rc;
        snprintf(sr->note, sizeof(sr->note), "%s", r.note);
        if (rc == BENCH_FAIL) {
            fprintf(stderr, "evs-bench: FAIL: scenario %s, %s: %s\n", sc->name,
                    sr->side->name, r.note);
            cfg.failed = true;
        }
        free(r.samples);
        return;
    }
    if (!record) {
        free(r.samples);
        return;
    }
    if (r.note[0] != 0)
        snprintf(sr->note, sizeof(sr->note), "%s", r.note);
    sr->drops += r.drops;
    sr->received += r.received;
    if (r.extra_kind != BENCH_EXTRA_NONE) {
        sr->extra[sr->nextra++] = r.extra;
        sr->extra_kind = r.extra_kind;
        sr->extra_label = r.extra_label;
    }
    switch (sc->kind) {
    case BENCH_RATE:
        sr->value[sr->n] = r.rate;
        break;
    case BENCH_IDLE:
        sr->value[sr->n] = r.cpu_pct;
        break;
    case BENCH_VALUE:
        sr->value[sr->n] = r.rate;
        break;
    case BENCH_LATENCY:
        bench_sort_i64(r.samples, r.nsamples);
        sr->value[sr->n] = (double)bench_percentile(r.samples, r.nsamples, 50);
        memcpy(sr->pool + sr->npool, r.samples, sizeof(int64_t) * r.nsamples);
        sr->npool += r.nsamples;
        break;
    }
    sr->n++;
    free(r.samples);
}

static void run_scenario(struct scn_run *run, const bench_scenario *sc)
{
    struct cpu_snap snap0, snap1;
    memset(run, 0, sizeof(*run));
    cpu_snap(&snap0);
    run->sc = sc;
    for (int i = 0; i < BENCH_MAX_EVS && sc->evs[i].name != NULL; i++)
        run->side[run->nevs++].side = &sc->evs[i];
    run->nsides = run->nevs;
    for (int i = 0; i < BENCH_MAX_CMP && sc->cmp[i].name != NULL; i++)
        run->side[run->nsides++].side = &sc->cmp[i];

    int reps = cfg.reps;
    double seconds = cfg.seconds * (sc->time_scale > 0 ? sc->time_scale : 1);
    if (sc->fixed_seconds > 0 && !cfg.seconds_set) {
        seconds = sc->fixed_seconds;
        reps = 1;
    }
    if (sc->kind == BENCH_IDLE || sc->kind == BENCH_VALUE)
        reps = cfg.reps_set ? cfg.reps : 1; /* nothing to interleave with */
    run->seconds = seconds;
    for (int i = 0; i < run->nsides; i++) {
        if (sc->kind == BENCH_LATENCY) {
            run->side[i].pool = malloc(sizeof(int64_t) * LAT_CAP * (size_t)reps);
            if (run->side[i].pool == NULL) {
                fprintf(stderr, "evs-bench: out of memory\n");
                exit(2);
            }
        }
    }
    if (!cfg.json)
        fprintf(stderr, "evs-bench: %-13s %d x %.2f s per side, %d sides ...\n", sc->name, reps,
                seconds, run->nsides);

    /* Warm-up: one short unrecorded run of each side (allocator arenas,
     * page faults, lazy binding). */
    if (sc->kind != BENCH_IDLE && sc->kind != BENCH_VALUE)
        for (int i = 0; i < run->nsides; i++)
            run_side(run, i, seconds * 0.1 < 0.05 ? 0.05 : seconds * 0.1, false);

    for (int round = 0; round < reps; round++) {
        run->c2c[round] = c2c_probe();
        for (int k = 0; k < run->nsides; k++) {
            int i = round % 2 == 0 ? k : run->nsides - 1 - k;
            run_side(run, i, seconds, true);
        }
        run->rounds++;
        /* Per-round ratios, from rounds where both sides ran. */
        for (int v = 0; v < run->nevs; v++) {
            struct side_run *e = &run->side[v];
            for (int i = run->nevs; i < run->nsides; i++) {
                struct side_run *c = &run->side[i];
                if (e->status != BENCH_OK || c->status != BENCH_OK || e->n != round + 1 ||
                    c->n != round + 1)
                    continue;
                double ev = e->value[round], cv = c->value[round];
                if (cv > 0 && ev > 0)
                    c->ratio[v][c->nratio[v]++] = ev / cv;
            }
        }
    }
    for (int i = 0; i < run->nsides; i++) {
        struct side_run *sr = &run->side[i];
        if (sc->kind == BENCH_LATENCY && sr->npool > 0) {
            bench_sort_i64(sr->pool, sr->npool);
            sr->p50 = (double)bench_percentile(sr->pool, sr->npool, 50);
            sr->p99 = (double)bench_percentile(sr->pool, sr->npool, 99);
            sr->p999 = (double)bench_percentile(sr->pool, sr->npool, 99.9);
        }
    }
    cpu_snap(&snap1);
    cpu_other(&snap0, &snap1, &run->other_pct, &run->steal_pct);
}

static void free_run(struct scn_run *run)
{
    for (int i = 0; i < run->nsides; i++)
        free(run->side[i].pool);
}

/* ---------------------------------------------------------------- */
/* Goals                                                             */

struct goal_eval {
    bool   known;   /* the figures it needs were measured */
    bool   met;
    double value;
    char   text[160];
};

/*
 * The comparison a ratio goal is checked against: cmp[g->cmp], or with
 * a family the family's fastest comparison that ran (highest median
 * rate; lowest median p50 for latency). NULL when there is none.
 */
static const struct side_run *goal_cmp(const struct scn_run *run, const bench_goal *g)
{
    const struct side_run *best = NULL;
    if (g->family == NULL)
        return run->nevs + g->cmp < run->nsides ? &run->side[run->nevs + g->cmp] : NULL;
    for (int i = run->nevs; i < run->nsides; i++) {
        const struct side_run *c = &run->side[i];
        if (c->side->family == NULL || strcmp(c->side->family, g->family) != 0 ||
            c->status != BENCH_OK || c->n == 0)
            continue;
        double m = median(c->value, c->n);
        if (best == NULL || (run->sc->kind == BENCH_LATENCY ? m < median(best->value, best->n)
                                                            : m > median(best->value, best->n)))
            best = c;
    }
    return best;
}

/* The goal's title line: what it asks, and against which comparison. */
static void goal_title(const struct scn_run *run, const bench_goal *g, char *buf, size_t n)
{
    const struct side_run *c = goal_cmp(run, g);
    char fig[96] = "";
    if (c != NULL && g->family != NULL && c->n > 0) {
        if (run->sc->kind == BENCH_RATE)
            snprintf(fig, sizeof(fig), "%.2f M/s", median(c->value, c->n) / 1e6);
        else
            snprintf(fig, sizeof(fig), "p50 %.2f us", median(c->value, c->n) / 1e3);
    }
    switch (g->metric) {
    case GOAL_RATIO_MIN:
        if (g->family != NULL)
            snprintf(buf, n, "evstream >= %gx the fastest %s (%s, %s)", g->value, g->family,
                     c ? c->side->name : "none ran", fig);
        else
            snprintf(buf, n, "evstream >= %gx %s", g->value, c ? c->side->name : "?");
        break;
    case GOAL_P50_RATIO_MAX:
        if (g->family != NULL)
            snprintf(buf, n, "p50 <= %gx the fastest %s (%s, %s)", g->value, g->family,
                     c ? c->side->name : "none ran", fig);
        else
            snprintf(buf, n, "p50 <= %gx %s", g->value, c ? c->side->name : "?");
        break;
    case GOAL_P999_MAX_NS:
        snprintf(buf, n, "p99.9 < %g us", g->value / 1000);
        break;
    case GOAL_CPU_MAX_PCT:
        snprintf(buf, n, "idle CPU < %g%% of a core", g->value);
        break;
    case GOAL_RATE_MIN:
        snprintf(buf, n, "%s >= %g M/s", run->sc->unit, g->value / 1e6);
        break;
    case GOAL_VALUE_MAX:
        snprintf(buf, n, "%s <= %g", run->sc->unit, g->value);
        break;
    case GOAL_NONE:
        buf[0] = 0;
        break;
    }
}

/* Whether goal `g` is checked for evstream variant `v` (0-based). */
static bool goal_applies(const bench_goal *g, int v)
{
    return g->variants == 0 || (g->variants >> v & 1u) != 0;
}

/* Check goal `g` for evstream variant `v`. */
static void eval_goal(const struct scn_run *run, const bench_goal *g, int v,
                      struct goal_eval *out)
{
    const struct side_run *e = &run->side[v];
    const struct side_run *c = goal_cmp(run, g);
    memset(out, 0, sizeof(*out));
    goal_title(run, g, out->text, sizeof(out->text));
    switch (g->metric) {
    case GOAL_NONE:
        return;
    case GOAL_RATIO_MIN:
        out->known = c != NULL && c->nratio[v] > 0;
        out->value = out->known ? median(c->ratio[v], c->nratio[v]) : NAN;
        out->met = out->known && out->value >= g->value;
        break;
    case GOAL_P50_RATIO_MAX:
        out->known = c != NULL && c->nratio[v] > 0;
        out->value = out->known ? median(c->ratio[v], c->nratio[v]) : NAN;
        out->met = out->known && out->value <= g->value;
        break;
    case GOAL_P999_MAX_NS:
        out->known = e->status == BENCH_OK && e->npool > 0;
        out->value = e->p999;
        out->met = out->known && e->p999 < g->value;
        break;
    case GOAL_CPU_MAX_PCT:
        out->known = e->status == BENCH_OK && e->n > 0;
        out->value = median(e->value, e->n);
        out->met = out->known && out->value < g->value;
        break;
    case GOAL_RATE_MIN:
        out->known = e->status == BENCH_OK && e->n > 0;
        out->value = median(e->value, e->n);
        out->met = out->known && out->value >= g->value;
        break;
    case GOAL_VALUE_MAX:
        out->known = e->status == BENCH_OK && e->n > 0;
        out->value = median(e->value, e->n);
        out->met = out->known && out->value <= g->value;
        break;
    }
}

/* "MET (2.10x)", "MISSED (1.68x; needs 5.9x more)", "not measured". */
static void goal_verdict(const bench_goal *g, const struct goal_eval *ge, char *buf, size_t n)
{
    if (!ge->known) {
        snprintf(buf, n, "not measured");
        return;
    }
    const char *v = ge->met ? "MET" : "MISSED";
    switch (g->metric) {
    case GOAL_RATIO_MIN:
        if (ge->met)
            snprintf(buf, n, "%s (%.2fx)", v, ge->value);
        else
            snprintf(buf, n, "%s (%.2fx; needs %.1fx more)", v, ge->value,
                     g->value / ge->value);
        break;
    case GOAL_P50_RATIO_MAX:
        if (ge->met)
            snprintf(buf, n, "%s (%.2fx)", v, ge->value);
        else
            snprintf(buf, n, "%s (%.2fx; %.0f%% over)", v, ge->value,
                     100.0 * (ge->value / g->value - 1));
        break;
    case GOAL_P999_MAX_NS:
        snprintf(buf, n, "%s (%.1f us)", v, ge->value / 1000);
        break;
    case GOAL_CPU_MAX_PCT:
        snprintf(buf, n, "%s (%.3f%%)", v, ge->value);
        break;
    case GOAL_RATE_MIN:
        if (ge->met)
            snprintf(buf, n, "%s (%.2f M/s)", v, ge->value / 1e6);
        else
            snprintf(buf, n, "%s (%.2f M/s; needs %.2fx more)", v, ge->value / 1e6,
                     g->value / ge->value);
        break;
    case GOAL_VALUE_MAX:
        snprintf(buf, n, "%s (%.0f)", v, ge->value);
        break;
    case GOAL_NONE:
        buf[0] = 0;
        break;
    }
}

/* ---------------------------------------------------------------- */
/* Table                                                             */

static void fmt_rate(char *buf, size_t n, double v)
{
    if (v >= 1e6)
        snprintf(buf, n, "%.2f M/s", v / 1e6);
    else if (v >= 1e3)
        snprintf(buf, n, "%.1f k/s", v / 1e3);
    else
        snprintf(buf, n, "%.0f /s", v);
}

/* Latency in microseconds with about three significant digits. */
static void fmt_us(char *buf, size_t n, double ns)
{
    double us = ns / 1000;
    snprintf(buf, n, us < 10 ? "%.2f" : us < 100 ? "%.1f" : "%.0f", us);
}

/* The figure of a side as the table shows it. */
static void fmt_side(const struct scn_run *run, const struct side_run *sr, char *buf, size_t n)
{
    char a[24], b[24], c[24];
    if (sr->status == BENCH_NOT_BUILT) {
        snprintf(buf, n, "not built");
        return;
    }
    if (sr->status == BENCH_FAIL) {
        snprintf(buf, n, "FAILED");
        return;
    }
    if (sr->n == 0) {
        snprintf(buf, n, "-");
        return;
    }
    switch (run->sc->kind) {
    case BENCH_RATE:
        fmt_rate(buf, n, median(sr->value, sr->n));
        break;
    case BENCH_LATENCY:
        fmt_us(a, sizeof(a), sr->p50);
        fmt_us(b, sizeof(b), sr->p99);
        fmt_us(c, sizeof(c), sr->p999);
        snprintf(buf, n, "%s/%s/%s us", a, b, c);
        break;
    case BENCH_IDLE:
        snprintf(buf, n, "%.3f%% core", median(sr->value, sr->n));
        break;
    case BENCH_VALUE:
        snprintf(buf, n, "%.0f %s", median(sr->value, sr->n), run->sc->unit);
        break;
    }
}

/* The side's second figure, median over the rounds: "31.2 M
 * deliveries/s", "812 ns per new subject"; "" when it has none. */
static void fmt_extra(const struct side_run *sr, char *buf, size_t n)
{
    double m = median(sr->extra, sr->nextra);
    const char *label = sr->extra_label ? sr->extra_label : "";
    buf[0] = 0;
    if (sr->nextra == 0 || sr->status != BENCH_OK)
        return;
    if (sr->extra_kind == BENCH_EXTRA_NS)
        snprintf(buf, n, "%.0f ns %s", m, label);
    else if (m >= 1e6)
        snprintf(buf, n, "%.2f M %s", m / 1e6, label);
    else if (m >= 1e3)
        snprintf(buf, n, "%.1f k %s", m / 1e3, label);
    else
        snprintf(buf, n, "%.0f %s", m, label);
}

static void fmt_c2c(const struct scn_run *run, char *buf, size_t n)
{
    double lo = INFINITY, hi = 0;
    for (int i = 0; i < run->rounds; i++) {
        lo = run->c2c[i] < lo ? run->c2c[i] : lo;
        hi = run->c2c[i] > hi ? run->c2c[i] : hi;
    }
    if (run->rounds == 0 || hi == 0)
        snprintf(buf, n, "n/a");
    else if (run->rounds == 1)
        snprintf(buf, n, "%.0f", hi);
    else
        snprintf(buf, n, "%.0f (%.0f-%.0f)", median(run->c2c, run->rounds), lo, hi);
}

/*
 * One line per side: the evstream variants first, numbered [1], [2], ...,
 * then the comparisons with one ratio per variant (variant / comparison)
 * at the end of the line, in variant order.
 */
/* One table line, without trailing blanks. */
static void print_row(const char *scn, const char *side, const char *fig, const char *c2c,
                      const char *ratios)
{
    char line[512];
    int n = snprintf(line, sizeof(line), "%-14s %-44s %-19s %-14s %s", scn, side, fig, c2c,
                     ratios);
    if (n < 0)
        return;
    n = n < (int)sizeof(line) ? n : (int)sizeof(line) - 1;
    while (n > 0 && line[n - 1] == ' ')
        n--;
    printf("%.*s\n", n, line);
}

static void print_table_head(void)
{
    print_row("scenario", "side", "figure", "c2c ns", "ratio [1] [2] ...");
    print_row("--------------", "--------------------------------------------",
              "-------------------", "--------------", "-----------------");
}

static void print_table_rows(const struct scn_run *run)
{
    const bench_scenario *sc = run->sc;
    char fig[96], ratios[160], c2c[48], name[240], unit[32];

    fmt_c2c(run, c2c, sizeof(c2c));
    snprintf(unit, sizeof(unit), "  %s", sc->kind == BENCH_LATENCY ? "p50/99/99.9" : sc->unit);
    int line = 0; /* lines printed for this scenario */
    for (int i = 0; i < run->nsides; i++) {
        const struct side_run *c = &run->side[i];
        char extra[64];
        size_t k = 0;
        fmt_side(run, c, fig, sizeof(fig));
        ratios[0] = 0;
        for (int v = 0; i >= run->nevs && v < run->nevs; v++) {
            char one[32];
            double m = c->nratio[v] > 0 ? median(c->ratio[v], c->nratio[v]) : 0;
            if (c->nratio[v] > 0)
                snprintf(one, sizeof(one), m >= 100 ? "%.0fx" : "%.2fx", m);
            else
                snprintf(one, sizeof(one), "-");
            k += (size_t)snprintf(ratios + k, sizeof(ratios) - k, "%-8s", one);
            if (k >= sizeof(ratios))
                break;
        }
        const char *label = c->side->name;
        char num[8] = "";
        if (i < run->nevs)
            snprintf(num, sizeof(num), "[%d] ", i + 1);
        if (c->status == BENCH_OK && c->note[0] != 0)
            snprintf(name, sizeof(name), "%s%s (%s)", num, label, c->note);
        else
            snprintf(name, sizeof(name), "%s%s", num, label);
        print_row(line == 0 ? sc->name : (line == 1 ? unit : ""), name, fig,
                  line == 0 ? c2c : "", ratios);
        line++;
        /* A second figure goes on a line of its own, under the side. */
        fmt_extra(c, extra, sizeof(extra));
        if (extra[0] != 0) {
            snprintf(name, sizeof(name), "%*s= %s", i < run->nevs ? 4 : 2, "", extra);
            print_row(line == 1 ? unit : "", name, "", "", "");
            line++;
        }
    }
    if (line == 1)
        print_row(unit, "", "", "", "");
    for (int g = 0; g < BENCH_MAX_GOALS; g++) {
        const bench_goal *goal = &sc->goals[g];
        struct goal_eval ge;
        char verdict[160];
        if (goal->metric == GOAL_NONE)
            continue;
        int napply = 0, only = 0;
        for (int v = 0; v < run->nevs; v++)
            if (goal_applies(goal, v)) {
                napply++;
                only = v;
            }
        eval_goal(run, goal, only, &ge);
        if (run->nevs == 1) {
            goal_verdict(goal, &ge, verdict, sizeof(verdict));
            printf("%-14s goal: %s: %s\n", "", ge.text, verdict);
            continue;
        }
        printf("%-14s goal: %s:\n", "", ge.text);
        for (int v = 0; v < run->nevs; v++) {
            if (!goal_applies(goal, v))
                continue;
            eval_goal(run, goal, v, &ge);
            goal_verdict(goal, &ge, verdict, sizeof(verdict));
            printf("%-14s   [%d] %s\n", "", v + 1, verdict);
        }
    }
    for (int i = 0; i < run->nsides; i++)
        if (run->side[i].status == BENCH_FAIL)
            printf("%-14s FAILED %s: %s\n", "", run->side[i].side->name, run->side[i].note);
    if (run->other_pct >= DISTURBED_PCT || run->steal_pct >= DISTURBED_PCT)
        printf("%-14s DISTURBED: other processes used %.0f%% of a core, steal %.0f%%\n", "",
               run->other_pct, run->steal_pct);
}

/* ---------------------------------------------------------------- */
/* JSON                                                              */

static void json_str(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            printf("\\%c", ch);
        else if (ch < 0x20)
            printf("\\u%04x", ch);
        else
            putchar(ch);
    }
    putchar('"');
}

static void json_num(double v)
{
    if (isnan(v) || isinf(v))
        printf("null");
    else
        printf("%.6g", v);
}

static void json_side(const struct scn_run *run, const struct side_run *sr, bool cmp)
{
    static const char *st[] = {"ok", "not_built"};
    printf("{\"name\":");
    json_str(sr->side->name);
    printf(",\"status\":\"%s\"", sr->status == BENCH_FAIL ? "failed" : st[sr->status]);
    if (sr->note[0]) {
        printf(",\"note\":");
        json_str(sr->note);
    }
    printf(",\"median\":");
    json_num(sr->n ? median(sr->value, sr->n) : NAN);
    printf(",\"reps\":[");
    for (int i = 0; i < sr->n; i++) {
        if (i)
            putchar(',');
        json_num(sr->value[i]);
    }
    printf("]");
    if (run->sc->kind == BENCH_LATENCY) {
        printf(",\"samples\":%zu,\"p50_ns\":", sr->npool);
        json_num(sr->p50);
        printf(",\"p99_ns\":");
        json_num(sr->p99);
        printf(",\"p999_ns\":");
        json_num(sr->p999);
    }
    if (run->sc->kind == BENCH_RATE)
        printf(",\"received\":%llu,\"drops\":%llu", (unsigned long long)sr->received,
               (unsigned long long)sr->drops);
    if (sr->nextra > 0) {
        printf(",\"extra\":{\"label\":");
        json_str(sr->extra_label ? sr->extra_label : "");
        printf(",\"unit\":\"%s\",\"median\":", sr->extra_kind == BENCH_EXTRA_NS ? "ns" : "/s");
        json_num(median(sr->extra, sr->nextra));
        printf("}");
    }
    if (sr->side->family != NULL) {
        printf(",\"family\":");
        json_str(sr->side->family);
    }
    if (cmp) {
        /* "ratio" and "ratios": against the first evstream variant;
         * "ratio_by_variant": the median against each, in order. */
        printf(",\"ratio\":");
        json_num(sr->nratio[0] ? median(sr->ratio[0], sr->nratio[0]) : NAN);
        printf(",\"ratios\":[");
        for (int i = 0; i < sr->nratio[0]; i++) {
            if (i)
                putchar(',');
            json_num(sr->ratio[0][i]);
        }
        printf("],\"ratio_by_variant\":[");
        for (int v = 0; v < run->nevs; v++) {
            if (v)
                putchar(',');
            json_num(sr->nratio[v] ? median(sr->ratio[v], sr->nratio[v]) : NAN);
        }
        printf("]");
    }
    printf("}");
}

static void print_json(const struct scn_run *run)
{
    const bench_scenario *sc = run->sc;
    static const char *kinds[] = {"rate", "latency", "idle"};
    printf("{\"scenario\":");
    json_str(sc->name);
    printf(",\"description\":");
    json_str(sc->desc);
    printf(",\"unit\":");
    json_str(sc->unit);
    printf(",\"kind\":\"%s\",\"payload\":%zu,\"seconds\":", kinds[sc->kind],
           bench_payload(&sc->params));
    json_num(run->seconds);
    printf(",\"rounds\":%d,\"c2c_ns\":{\"median\":", run->rounds);
    json_num(run->rounds ? median(run->c2c, run->rounds) : NAN);
    printf(",\"all\":[");
    for (int i = 0; i < run->rounds; i++) {
        if (i)
            putchar(',');
        json_num(run->c2c[i]);
    }
    printf("]},\"other_cpu_pct\":");
    json_num(run->other_pct);
    printf(",\"steal_pct\":");
    json_num(run->steal_pct);
    /* "evstream" is the first variant (the default-options path);
     * "evstream_variants" lists them all. */
    printf(",\"evstream\":");
    json_side(run, &run->side[0], false);
    printf(",\"evstream_variants\":[");
    for (int v = 0; v < run->nevs; v++) {
        if (v)
            putchar(',');
        json_side(run, &run->side[v], false);
    }
    printf("],\"comparisons\":[");
    for (int i = run->nevs; i < run->nsides; i++) {
        if (i > run->nevs)
            putchar(',');
        json_side(run, &run->side[i], true);
    }
    printf("],\"goals\":[");
    bool first = true;
    for (int g = 0; g < BENCH_MAX_GOALS; g++) {
        if (sc->goals[g].metric == GOAL_NONE)
            continue;
        for (int v = 0; v < run->nevs; v++) {
            struct goal_eval ge;
            if (!goal_applies(&sc->goals[g], v))
                continue;
            eval_goal(run, &sc->goals[g], v, &ge);
            printf("%s{\"goal\":", first ? "" : ",");
            json_str(ge.text);
            printf(",\"variant\":");
            json_str(run->side[v].side->name);
            printf(",\"target\":");
            json_num(sc->goals[g].value);
            printf(",\"value\":");
            json_num(ge.known ? ge.value : NAN);
            printf(",\"met\":%s}", ge.known ? (ge.met ? "true" : "false") : "null");
            first = false;
        }
    }
    bool failed = false;
    for (int i = 0; i < run->nsides; i++)
        failed |= run->side[i].status == BENCH_FAIL;
    printf("],\"failed\":%s}\n", failed ? "true" : "false");
    fflush(stdout);
}

/* ---------------------------------------------------------------- */
/* Main                                                              */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: evs-bench [--scenario NAME]... [--seconds S] [--reps N] [--json] [--list]\n"
            "  --scenario NAME  run only NAME (repeatable; default: every scenario)\n"
            "  --seconds S      seconds per repetition of each side (default %.1f;\n"
            "                   idle runs once, for 5 s unless this is given)\n"
            "  --reps N         repetitions per side, interleaved (default %d, 3..%d)\n"
            "  --json           one JSON object per scenario on stdout, no table\n"
            "  --list           list the scenarios and exit\n",
            DEFAULT_SECONDS, DEFAULT_REPS, MAX_REPS);
}

static const char *cpu_model(char *buf, size_t n)
{
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[256];
    snprintf(buf, n, "unknown CPU");
    if (f == NULL)
        return buf;
    while (fgets(line, sizeof(line), f)) {
        char *c = strchr(line, ':');
        if (strncmp(line, "model name", 10) == 0 && c) {
            c += 2;
            c[strcspn(c, "\n")] = 0;
            snprintf(buf, n, "%s", c);
            break;
        }
    }
    fclose(f);
    return buf;
}

int main(int argc, char **argv)
{
    const char *only[64];
    int nonly = 0;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--scenario") == 0 && i + 1 < argc && nonly < 64) {
            only[nonly++] = argv[++i];
        } else if (strcmp(a, "--seconds") == 0 && i + 1 < argc) {
            char *end;
            cfg.seconds = strtod(argv[++i], &end);
            cfg.seconds_set = true;
            if (*end != 0 || !(cfg.seconds > 0 && cfg.seconds <= 3600)) {
                fprintf(stderr, "evs-bench: bad --seconds\n");
                return 2;
            }
        } else if (strcmp(a, "--reps") == 0 && i + 1 < argc) {
            cfg.reps = atoi(argv[++i]);
            cfg.reps_set = true;
            if (cfg.reps < 1 || cfg.reps > MAX_REPS) {
                fprintf(stderr, "evs-bench: bad --reps\n");
                return 2;
            }
        } else if (strcmp(a, "--json") == 0) {
            cfg.json = true;
        } else if (strcmp(a, "--list") == 0) {
            for (size_t s = 0; s < bench_nscenarios; s++)
                printf("%-13s %s [%s]\n", bench_scenarios[s].name, bench_scenarios[s].desc,
                       bench_scenarios[s].unit);
            return 0;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    for (int k = 0; k < nonly; k++) {
        bool found = false;
        for (size_t s = 0; s < bench_nscenarios; s++)
            found |= strcmp(only[k], bench_scenarios[s].name) == 0;
        if (!found) {
            fprintf(stderr, "evs-bench: no scenario '%s' (--list shows them)\n", only[k]);
            return 2;
        }
    }
    if (cfg.reps < 3)
        fprintf(stderr, "evs-bench: note: fewer than 3 repetitions; medians are weak\n");

    probe_init();
    char model[128];
    const char *zv = cmp_zmq_version(), *nv = cmp_nng_version();
    int64_t t_start = bench_now_ns();
    if (!cfg.json) {
        printf("evs-bench: evstream %s; %ld CPUs online (%s); libzmq %s; nng %s\n",
               EVS_VERSION_STRING, sysconf(_SC_NPROCESSORS_ONLN),
               cpu_model(model, sizeof(model)), zv ? zv : "not built", nv ? nv : "not built");
        printf("%d repetitions x %.2f s per side, sides interleaved; figures are medians of the "
               "repetitions;\n[1], [2] ...: evstream variants; ratio = median of per-repetition "
               "ratios variant / comparison,\none per variant in order (latency rows: p50 / p50, "
               "lower is better);\nc2c ns = one-way core-to-core cache-line latency, median "
               "(min-max) of the probes before each repetition.\n\n",
               cfg.reps, cfg.seconds);
    }

    bool head = false;
    for (size_t s = 0; s < bench_nscenarios; s++) {
        const bench_scenario *sc = &bench_scenarios[s];
        bool want = nonly == 0;
        for (int k = 0; k < nonly; k++)
            want |= strcmp(only[k], sc->name) == 0;
        if (!want)
            continue;
        struct scn_run *run = malloc(sizeof(*run));
        if (run == NULL) {
            fprintf(stderr, "evs-bench: out of memory\n");
            return 2;
        }
        run_scenario(run, sc);
        if (cfg.json) {
            print_json(run);
        } else {
            if (!head)
                print_table_head();
            head = true;
            print_table_rows(run);
            fflush(stdout);
        }
        free_run(run);
        free(run);
    }
    if (!cfg.json) {
        printf("\nscenarios:\n");
        for (size_t s = 0; s < bench_nscenarios; s++)
            printf("  %-13s %s [%s]\n", bench_scenarios[s].name, bench_scenarios[s].desc,
                   bench_scenarios[s].unit);
        printf("total %.1f s%s\n", (double)(bench_now_ns() - t_start) / 1e9,
               cfg.failed ? "; SOME SIDES FAILED (see above)" : "");
    }
    return cfg.failed ? 1 : 0;
}
