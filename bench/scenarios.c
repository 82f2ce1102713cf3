/*
 * The scenario table: adding a scenario is adding a row. Each row names
 * its parameters, the evstream variants and the comparisons that run
 * interleaved with them, and the goals its figures are checked against.
 * Later modules (topics, SSE, hub) put their sides in their own
 * scn_<module>.c and add rows here.
 */
#include "bench.h"
#include "scn_stream.h"

#include <evstream.h>

#define KIB 1024

/*
 * evstream variants (scn_stream.h). "(park)": the rate rows use
 * EVS_WAIT_PARK. To add a variant, define it in scn_stream.c and add one
 * line to each list below: EVS_1PUB for the 64 B and 1 KiB
 * single-publisher rows, EVS_1PUB_BIG for 64 KiB (where the fast rows
 * keep no history, so that 1000 x 64 KiB of past events do not
 * dominate).
 */
#define VARIANT(label, v) {.name = (label), .run = scn_stream_rate, .arg = &(v)}
#define VARIANT_FN(label, fn, a) {.name = (label), .run = (fn), .arg = (a)}
#define EVS_PUBLISH  VARIANT("evstream publish (park)", scn_v_publish)
#define EVS_MOVE     VARIANT("evstream 1-publisher move (park)", scn_v_move)
#define EVS_MOVE_NOH VARIANT("evstream 1-pub move, no history (park)", scn_v_move_nohist)
#define EVS_CLAIM    VARIANT("evstream 1-pub claim/commit (park)", scn_v_claim)

#define EVS_1PUB     {EVS_PUBLISH, EVS_MOVE, EVS_CLAIM}
#define EVS_1PUB_BIG {EVS_PUBLISH, EVS_MOVE_NOH}
#define EVS_MULTIPUB {EVS_PUBLISH}

#define SIDE(label, fn)          {.name = (label), .run = (fn)}
#define FAMILY(label, fn, fam)   {.name = (label), .run = (fn), .family = (fam)}
#define GOAL(metric_, cmp_, v)   {.metric = (metric_), .cmp = (cmp_), .value = (v)}
#define GOAL_VS(metric_, fam, v) {.metric = (metric_), .value = (v), .family = (fam)}
#define NO_GOAL                  {.metric = GOAL_NONE}
/* An absolute rate goal checked only for the variants in `mask` (bit
 * v for variant [v + 1]). */
#define GOAL_RATE(v, mask)       {.metric = GOAL_RATE_MIN, .value = (v), .variants = (mask)}

/*
 * TopicStream sides (scn_topic.c): 100,000 subjects "t.<R>.<K>", 10,000
 * wildcard subscriptions, 2.89 matches per event. "publish": events
 * published flat out, dispatcher on another CPU; "dispatcher alone":
 * the dispatcher routes a queued batch with the publisher asleep, both
 * on one CPU (the routing capacity of one core).
 */
#define TOPIC(label, cfg)  {.name = (label), .run = scn_topic_rate, .arg = &(cfg)}
#define TOPIC_NAIVE        SIDE("naive scan of 10,000 patterns", scn_topic_naive)

/*
 * Comparisons used by several rows. The ZeroMQ ones form the "zmq"
 * family: a goal against "zmq" is checked against the fastest of them in
 * the same run. With one SUB socket ZMQ_PUB and ZMQ_PUB_1T are the same
 * set-up; for fan-out the rows use ZMQ_PUB_1T, which was the faster on
 * the 2-vCPU machine of BENCHMARKS.md (a thread per SUB socket puts 5 or
 * 65 busy threads on 2 CPUs); put ZMQ_PUB_TPS in a row to measure that.
 */
#define ZMQ         FAMILY("zmq XPUB/SUB NODROP, HWM 4096", cmp_zmq_rate, "zmq")
#define ZMQ_PUB     FAMILY("zmq PUB/SUB, HWM 0", cmp_zmq_pub_rate, "zmq")
#define ZMQ_PUB_TPS FAMILY("zmq PUB/SUB, HWM 0, thread per SUB", cmp_zmq_pub_rate, "zmq")
#define ZMQ_PUB_1T  FAMILY("zmq PUB/SUB, HWM 0, 1 thread", cmp_zmq_pub1_rate, "zmq")
#define NNG         SIDE("nng pub0/sub0", cmp_nng_rate)
#define MUTEX       SIDE("mutex+condvar queue", cmp_mutex_rate)
#define RING_PA     SIDE("ck_ring prealloc (floor)", cmp_ckring_prealloc_rate)
#define RING_MA     SIDE("ck_ring malloc+free", cmp_ckring_malloc_rate)

const bench_scenario bench_scenarios[] = {
    {"1to1", "1 publisher -> 1 subscriber callback, 64 B", "events/s", BENCH_RATE,
     {.pubs = 1, .subs = 1, .payload = 64, .wait = EVS_WAIT_PARK}, 0, 0,
     EVS_1PUB,
     {ZMQ, ZMQ_PUB, NNG, MUTEX, RING_PA, RING_MA},
     {GOAL_VS(GOAL_RATIO_MIN, "zmq", 10.0)}},

    {"1to4", "1 publisher -> 4 subscribers, 64 B", "deliveries/s", BENCH_RATE,
     {.pubs = 1, .subs = 4, .payload = 64, .wait = EVS_WAIT_PARK}, 0, 0,
     EVS_1PUB,
     {ZMQ, ZMQ_PUB_1T, NNG},
     {GOAL_VS(GOAL_RATIO_MIN, "zmq", 20.0)}},

    {"1to64", "1 publisher -> 64 subscribers, 64 B", "deliveries/s", BENCH_RATE,
     {.pubs = 1, .subs = 64, .payload = 64, .wait = EVS_WAIT_PARK}, 0, 0,
     EVS_1PUB,
     {ZMQ, ZMQ_PUB_1T, NNG},
     {NO_GOAL}},

    {"2to1", "2 publishers -> 1 subscriber, 64 B", "events/s", BENCH_RATE,
     {.pubs = 2, .subs = 1, .payload = 64, .wait = EVS_WAIT_PARK}, 0, 0,
     EVS_MULTIPUB,
     {ZMQ, ZMQ_PUB, NNG, MUTEX, SIDE("ck_ring mpsc prealloc (floor)", cmp_ckring_prealloc_rate),
      SIDE("ck_ring mpsc malloc+free", cmp_ckring_malloc_rate)},
     {NO_GOAL}},

    {"latency-spin", "publish -> callback one-way, dispatcher spinning", "ns", BENCH_LATENCY,
     {.pubs = 1, .subs = 1, .payload = 64, .wait = EVS_WAIT_SPIN}, 0, 0,
     {SIDE("evstream (spin)", scn_stream_latency)},
     {SIDE("ck_ring spsc ping-pong (floor)", cmp_ckring_latency)},
     {GOAL(GOAL_P50_RATIO_MAX, 0, 2.0), GOAL(GOAL_P999_MAX_NS, 0, 10000.0)}},

    {"latency-park", "publish -> callback one-way, dispatcher parked (300 us apart)", "ns",
     BENCH_LATENCY,
     {.pubs = 1, .subs = 1, .payload = 64, .wait = EVS_WAIT_PARK, .gap_ns = 300 * 1000}, 2.0, 0,
     {SIDE("evstream (park)", scn_stream_latency)},
     {SIDE("condvar hand-off", cmp_mutex_latency)},
     {GOAL(GOAL_P50_RATIO_MAX, 0, 1.0)}},

    {"idle", "CPU of a stream with 1 subscriber, nothing published", "% core", BENCH_IDLE,
     {.pubs = 0, .subs = 1, .wait = EVS_WAIT_PARK}, 0, 5.0,
     {SIDE("evstream (park)", scn_stream_idle)},
     {{0}},
     {GOAL(GOAL_CPU_MAX_PCT, 0, 1.0)}},

    {"1to1-1k", "1 publisher -> 1 subscriber, 1 KiB", "events/s", BENCH_RATE,
     {.pubs = 1, .subs = 1, .payload = KIB, .wait = EVS_WAIT_PARK}, 0, 0,
     EVS_1PUB,
     {ZMQ, ZMQ_PUB, MUTEX, RING_PA, RING_MA},
     {NO_GOAL}},

    {"1to1-64k", "1 publisher -> 1 subscriber, 64 KiB", "events/s", BENCH_RATE,
     {.pubs = 1, .subs = 1, .payload = 64 * KIB, .wait = EVS_WAIT_PARK}, 0, 0,
     EVS_1PUB_BIG,
     {ZMQ, ZMQ_PUB, MUTEX, RING_PA, RING_MA},
     {NO_GOAL}},

    /* Routing has no comparison library; the naive scan shows what
     * matching every pattern per event would cost. */
    {"topic-warm", "TopicStream, 10,000 wildcard subs, route cache warm", "events/s",
     BENCH_RATE, {.pubs = 1, .wait = EVS_WAIT_PARK}, 0.4, 0,
     {TOPIC("publish, 1k subjects (park)", scn_t_pub_1k),
      TOPIC("publish, 100k subjects (park)", scn_t_pub_100k),
      TOPIC("dispatcher alone, 1k subjects, 1 CPU", scn_t_drain_1k),
      TOPIC("dispatcher alone, 100k subjects, 1 CPU", scn_t_drain_100k)},
     {TOPIC_NAIVE},
     {GOAL_RATE(10e6, 0xc)}},

    {"topic-cold", "TopicStream, 10,000 wildcard subs, cache of 1: every route a miss",
     "events/s", BENCH_RATE, {.pubs = 1, .wait = EVS_WAIT_PARK}, 0.4, 0,
     {TOPIC("publish, 100k subjects (park)", scn_t_pub_cold),
      TOPIC("dispatcher alone, 100k subjects, 1 CPU", scn_t_drain_cold)},
     {TOPIC_NAIVE},
     {NO_GOAL}},

    /* O(tokens), not O(subscriptions): both sets route these subjects to
     * the same subscriptions; the larger has 9,000 more patterns on the
     * path each match walks. */
    {"topic-new", "TopicStream, every subject new: 10,000 vs 1,000 subs", "subjects/s",
     BENCH_RATE, {.pubs = 1, .wait = EVS_WAIT_PARK}, 0.4, 0,
     {TOPIC("dispatcher alone, 10,000 subs, 1 CPU", scn_t_new_10k)},
     {TOPIC("dispatcher alone, 1,000 subs, 1 CPU", scn_t_new_1k)},
     {GOAL(GOAL_RATIO_MIN, 0, 0.5)}},
    {"sse-encode", "SSE frame encoding, 64 ticker events (~200 B frames)", "bytes/s", BENCH_RATE,
     {.pubs = 1, .subs = 1}, 0, 0,
     {VARIANT_FN("evstream SSE encode, JSON data", scn_sse_encode_rate, &scn_sse_json),
      VARIANT_FN("evstream SSE encode, msgpack data as JSON", scn_sse_encode_rate, &scn_sse_msgpack)},
     {SIDE("memcpy of the same frames", scn_sse_memcpy_rate)},
     {{.metric = GOAL_RATE_MIN, .value = 1e9, .variants = 1},
      {.metric = GOAL_RATIO_MIN, .cmp = 0, .value = 0.3, .variants = 1}}},
    /* The same with payloads the size of a dashboard snapshot, where the
     * per-byte work, not the per-frame work, sets the rate. */
    {"sse-encode-4k", "SSE frame encoding, 64 snapshot events (~4 KiB frames)", "bytes/s",
     BENCH_RATE, {.pubs = 1, .subs = 1}, 0, 0,
     {VARIANT_FN("evstream SSE encode, JSON data", scn_sse_encode_rate, &scn_sse_json_4k)},
     {{.name = "memcpy of the same frames", .run = scn_sse_memcpy_rate, .arg = &scn_sse_json_4k}},
     {{.metric = GOAL_RATE_MIN, .value = 1e9, .variants = 1},
      {.metric = GOAL_RATIO_MIN, .cmp = 0, .value = 0.3, .variants = 1}}},
    {"sse-idle-mem", "heap per idle SSE client, 10,000 clients", "bytes/client", BENCH_VALUE,
     {.pubs = 1, .subs = 1}, 0, 0,
     {VARIANT_FN("evstream SSE client (mailbox 64, heartbeat on)", scn_sse_idle_memory, NULL)},
     {{.name = NULL}},
     {{.metric = GOAL_VALUE_MAX, .value = 2048}}},
    /* The hub as a user runs it: its own process, HTTP on loopback,
     * libcurl clients (scn_hub.c). Run once (10 s fixed: the row is a
     * fixed amount of work, not a timed loop). */
    {"hub-idle", "evstream serve: resident memory per idle client, 10,000 clients",
     "bytes/client", BENCH_VALUE, {.pubs = 1, .subs = 1}, 0, 0,
     {VARIANT_FN("evstream serve (defaults)", scn_hub_idle_memory, NULL)},
     {{.name = NULL}},
     {NO_GOAL}},
    {"hub-fanout", "evstream serve: 1,000 clients, 10,000 events by POST, publish -> client",
     "ns", BENCH_LATENCY, {.pubs = 1, .subs = 1}, 0, 10.0,
     {VARIANT_FN("evstream serve, 1 publisher", scn_hub_fanout, &scn_hub_pub1),
      VARIANT_FN("evstream serve, 4 publishers", scn_hub_fanout, &scn_hub_pub4)},
     {{.name = NULL}},
     {NO_GOAL}},
};

const size_t bench_nscenarios = sizeof(bench_scenarios) / sizeof(bench_scenarios[0]);
