/*
 * Metrics internals: the handler-time histogram and the throughput
 * window that streams and subscriptions embed (SPEC.md, "Metrics").
 */
#ifndef EVS_METRICS_H
#define EVS_METRICS_H

#include "evstream.h"

#include <pthread.h>

/*
 * Log-linear histogram of nanoseconds: values below 8 have a bucket
 * each; above, every power of two is cut into 8 equal buckets, so a
 * quantile read from it is within 1/16 (6.25%) of the true value (the
 * middle of its bucket). Values of 2^36 ns (~69 s) and more share the
 * last bucket. 273 buckets: 2.2 KiB, allocated only for streams created
 * with opts.metrics.
 *
 * Writers: whoever calls handlers (the dispatcher, or inline
 * publishers at once), so every field is updated with a relaxed atomic
 * add (max with a CAS loop). Readers take relaxed loads: each counter is
 * exact, a snapshot taken while events flow may mix instants.
 */
#define EVS__HIST_SUB     8
#define EVS__HIST_TOP     36
/* Buckets 0..15 exact, then 8 per power of two from 2^4 to 2^35, then
 * one for everything from 2^36 on. */
#define EVS__HIST_BUCKETS ((EVS__HIST_TOP - 2) * EVS__HIST_SUB + 1)

typedef struct evs__hist {
    uint64_t sum_ns;      /* (the count is the buckets' total) */
    uint64_t max_ns;
    uint64_t b[EVS__HIST_BUCKETS];
} evs__hist;

/* Record one value. Threads: any, concurrently. */
void evs__hist_add(evs__hist *h, uint64_t ns);

/* Summarise into *out (count, sum, p50/p90/p99, max); zeros when h is
 * NULL. Threads: any, concurrently with writers. */
void evs__hist_read(const evs__hist *h, evs_latency *out);

/*
 * Throughput over the last interval, measured at reads: a read that
 * finds the newest sample at least `interval_ns` old takes a new one and
 * keeps the one before; the rate reported is between those two samples.
 * So a reader polling at least once per interval sees the rate over the
 * last interval; one that polls less often sees the rate since its
 * previous poll. Until two samples exist it reports the rate since the
 * first. Guarded by its own mutex (only readers touch it).
 */
#define EVS__RATE_COUNTERS 2

typedef struct evs__rate {
    pthread_mutex_t lock;
    int64_t         t[2];                     /* [0] older, [1] newer; 0 = none */
    uint64_t        c[2][EVS__RATE_COUNTERS];
} evs__rate;

void evs__rate_init(evs__rate *r);
void evs__rate_destroy(evs__rate *r);

/* Feed the counters' current values at monotonic time now_ns; write
 * the per-second rates into rates[0..EVS__RATE_COUNTERS). */
void evs__rate_sample(evs__rate *r, int64_t now_ns, int64_t interval_ns,
                      const uint64_t *counters, double *rates);

#endif
