/*
 * The scenario table: adding a scenario is adding a row. Each row names
 * its parameters, the evstream side and the comparisons that run
 * interleaved with it, and the goals its figures are checked against.
 * Later modules (topics, SSE, hub) put their sides in their own
 * scn_<module>.c and add rows here.
 */
#include "bench.h"

#include <evstream.h>

#define KIB 1024

/* Comparisons used by several rows. */
#define ZMQ     {"zmq XPUB/SUB", cmp_zmq_rate}
#define NNG     {"nng pub0/sub0", cmp_nng_rate}
#define MUTEX   {"mutex+condvar queue", cmp_mutex_rate}
#define RING_PA {"ck_ring prealloc (floor)", cmp_ckring_prealloc_rate}
#define RING_MA {"ck_ring malloc+free", cmp_ckring_malloc_rate}

const bench_scenario bench_scenarios[] = {
    {"1to1", "1 publisher -> 1 subscriber callback, 64 B", "events/s", BENCH_RATE,
     {.pubs = 1, .subs = 1, .payload = 64, .wait = EVS_WAIT_PARK}, 0, 0,
     {"evstream (park)", scn_stream_rate},
     {ZMQ, NNG, MUTEX, RING_PA, RING_MA},
     {{GOAL_RATIO_MIN, 0, 10.0}}},

    {"1to4", "1 publisher -> 4 subscribers, 64 B", "deliveries/s", BENCH_RATE,
     {.pubs = 1, .subs = 4, .payload = 64, .wait = EVS_WAIT_PARK}, 0, 0,
     {"evstream (park)", scn_stream_rate},
     {ZMQ, NNG},
     {{GOAL_RATIO_MIN, 0, 20.0}}},

    {"1to64", "1 publisher -> 64 subscribers, 64 B", "deliveries/s", BENCH_RATE,
     {.pubs = 1, .subs = 64, .payload = 64, .wait = EVS_WAIT_PARK}, 0, 0,
     {"evstream (park)", scn_stream_rate},
     {ZMQ, NNG},
     {{GOAL_NONE, 0, 0}}},

    {"2to1", "2 publishers -> 1 subscriber, 64 B", "events/s", BENCH_RATE,
     {.pubs = 2, .subs = 1, .payload = 64, .wait = EVS_WAIT_PARK}, 0, 0,
     {"evstream (park)", scn_stream_rate},
     {ZMQ, NNG, MUTEX, {"ck_ring mpsc prealloc (floor)", cmp_ckring_prealloc_rate},
      {"ck_ring mpsc malloc+free", cmp_ckring_malloc_rate}},
     {{GOAL_NONE, 0, 0}}},

    {"latency-spin", "publish -> callback one-way, dispatcher spinning", "ns", BENCH_LATENCY,
     {.pubs = 1, .subs = 1, .payload = 64, .wait = EVS_WAIT_SPIN}, 0, 0,
     {"evstream (spin)", scn_stream_latency},
     {{"ck_ring spsc ping-pong (floor)", cmp_ckring_latency}},
     {{GOAL_P50_RATIO_MAX, 0, 2.0}, {GOAL_P999_MAX_NS, 0, 10000.0}}},

    {"latency-park", "publish -> callback one-way, dispatcher parked (300 us apart)", "ns",
     BENCH_LATENCY,
     {.pubs = 1, .subs = 1, .payload = 64, .wait = EVS_WAIT_PARK, .gap_ns = 300 * 1000}, 2.0, 0,
     {"evstream (park)", scn_stream_latency},
     {{"condvar hand-off", cmp_mutex_latency}},
     {{GOAL_P50_RATIO_MAX, 0, 1.0}}},

    {"idle", "CPU of a stream with 1 subscriber, nothing published", "% core", BENCH_IDLE,
     {.pubs = 0, .subs = 1, .wait = EVS_WAIT_PARK}, 0, 5.0,
     {"evstream (park)", scn_stream_idle},
     {{0}},
     {{GOAL_CPU_MAX_PCT, 0, 1.0}}},

    {"1to1-1k", "1 publisher -> 1 subscriber, 1 KiB", "events/s", BENCH_RATE,
     {.pubs = 1, .subs = 1, .payload = KIB, .wait = EVS_WAIT_PARK}, 0, 0,
     {"evstream (park)", scn_stream_rate},
     {ZMQ, MUTEX, RING_PA, RING_MA},
     {{GOAL_NONE, 0, 0}}},

    {"1to1-64k", "1 publisher -> 1 subscriber, 64 KiB", "events/s", BENCH_RATE,
     {.pubs = 1, .subs = 1, .payload = 64 * KIB, .wait = EVS_WAIT_PARK}, 0, 0,
     {"evstream (park)", scn_stream_rate},
     {ZMQ, MUTEX, RING_PA, RING_MA},
     {{GOAL_NONE, 0, 0}}},
};

const size_t bench_nscenarios = sizeof(bench_scenarios) / sizeof(bench_scenarios[0]);
