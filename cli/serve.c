/*
 * `evstream serve`: the SSE hub. Publishers POST events (or write lines
 * to stdin); subscribers GET /events and receive them as server-sent
 * events, by subject pattern, resuming after a disconnect from the
 * stream's history. SPEC.md, "The hub", is the design.
 *
 * The pieces: one TopicStream with history (the library), its SSE layer
 * (the library; push-mode clients), the HTTP front (http.c, events.c),
 * the publisher (publish.c) and the optional feeds (feed.c).
 *
 * Threads: the main thread sets everything up, prints the URL, then
 * waits for SIGINT or SIGTERM (blocked in every thread, taken with
 * sigwait) and stops: no new connections, the feeds stop, every stream
 * gets its final "server shutdown" frame and ends (clients that do not
 * read are cut after a second), then everything is freed. The whole
 * stop takes well under two seconds.
 *
 * With --nats the hub's stream is also bridged to NATS (the library's
 * evs_nats_bridge; SPEC.md, "NATS bridge" and "The hub"), so that hubs on
 * several machines share topics. Core mode exports and imports the
 * subjects and keeps ids per hub; durable mode (--nats-durable) makes
 * the stream a mirror of a JetStream stream whose sequence numbers are
 * the event ids on every hub, and sends every publish through JetStream.
 * The bridge is created after the stream and synchronised before the
 * hub listens; on stop it is flushed and destroyed after the SSE layer
 * and before the stream.
 *
 * This file also renders /metrics (render_metrics) and, with a bridge,
 * /health (render_health), on the HTTP thread.
 */
#include "cli.h"
#include "hub.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define MAX_ORIGINS 32
/* How long a stopping hub waits for its streams to end on their own. */
#define STOP_WAIT_MS 1000
/* Publishers wait at most this long for room in a full stream, then get
 * 503. An HTTP publish waits on a job thread (http.c), not the server's
 * own; short all the same, as only an overloaded hub fills its stream. */
#define PUBLISH_BLOCK_MS 100
/* Descriptors beyond the event streams' cap: the connections the HTTP
 * server allows beyond it (256) and the hub's own (listener, epoll,
 * eventfds, stdin...). */
#define FD_RESERVE 320
/* --nats-export and --nats-import patterns, each, at most. */
#define MAX_NATS_PATTERNS 32
/* Durable mode: the longest a starting hub waits for the JetStream
 * replay (evs_nats_bridge_sync) before it gives up (exit 1). Serving
 * before it would hand out ids that resuming clients already saw. */
#define NATS_SYNC_MS 30000
/* Core mode: the longest a starting hub waits for NATS (so that it
 * listens with its subscriptions in place); then it serves anyway and
 * keeps connecting in the background: local streams do not need NATS. */
#define NATS_CONNECT_MS 5000
/* The start-up wait is taken in slices this long, looking for a stop
 * signal between them, so that SIGINT/SIGTERM end it promptly. */
#define NATS_SLICE_MS 100
/* A stopping hub forwards what its bridge still holds for NATS for at
 * most this long after the signal (the streams' end included), so that
 * it exits within 2 s even with NATS unreachable. */
#define STOP_NATS_BY_MS 1400

/* The command line. */
struct serve_opts {
    const char *bind;
    uint64_t port, history, heartbeat_ms, retry_ms, max_clients, client_buffer;
    const char *token;
    const char *origins[MAX_ORIGINS];
    size_t norigins;
    bool stdin_feed, demo;
    const char *topic;
    const char *nats_url;    /* NULL = no bridge */
    const char *nats_exports[MAX_NATS_PATTERNS];
    size_t nnats_exports;
    const char *nats_imports[MAX_NATS_PATTERNS];
    size_t nnats_imports;
    const char *nats_durable; /* NULL = core mode */
    const char *nats_prefix;
    bool nats_prefix_set;     /* --nats-prefix given (it needs --nats) */
};

/* Everything the hub is made of, owned by the main thread. */
struct hub {
    struct serve_opts o;
    evs_stream *stream;
    evs_nats_bridge *bridge; /* --nats; NULL without */
    evs_sse *sse;
    evs_hub_pub *pub;
    evs_hub_events *events;
    evs_hub_http *http;
    evs_hub_feed *demo, *lines;
    int64_t started_ns; /* CLOCK_MONOTONIC at start */
    int64_t stop_ns;    /* CLOCK_MONOTONIC when stopping began */
};

static const char usage_text[] =
    "usage: evstream serve [options]\n"
    "\n"
    "Serve server-sent events: POST /publish?topic=SUBJECT[&type=NAME] publishes\n"
    "the body as one event; GET /events?topic=PATTERN (repeatable) streams them.\n"
    "Also: GET / (a live page), /health, /metrics (Prometheus), /types.\n"
    "\n"
    "  --bind ADDR            address to listen on (default 127.0.0.1; IPv6 too)\n"
    "  --port N               port (default 8080; 0 = any free port)\n"
    "  --history N            events kept for resuming clients (default 1024;\n"
    "                         0 = none)\n"
    "  --heartbeat-ms N       a comment to a client idle this long (default 15000;\n"
    "                         0 = never)\n"
    "  --retry-ms N           the reconnection delay sent to clients (default: none,\n"
    "                         the client's own)\n"
    "  --publish-token TOKEN  publishing needs 'Authorization: Bearer TOKEN'\n"
    "                         (default: $EVSTREAM_PUBLISH_TOKEN; unset = open)\n"
    "  --allow-origin ORIGIN  let pages from ORIGIN use the hub (CORS); repeatable;\n"
    "                         '*' = any origin\n"
    "  --max-clients N        open event streams at most; more get 503 (default\n"
    "                         10000)\n"
    "  --client-buffer BYTES  unsent bytes a client may have before it is\n"
    "                         disconnected as slow (default 262144)\n"
    "  --stdin                also publish each line of standard input: a JSON\n"
    "                         object {\"topic\":..,\"type\":..,\"data\":..}, or else\n"
    "                         the line as text to --topic\n"
    "  --topic SUBJECT        the subject for plain stdin lines (default stdin)\n"
    "  --demo                 publish sample events on demo.* subjects\n"
    "  --help                 this text\n"
    "\n"
    "Several hubs (NATS; see README, \"Several hubs behind a load balancer\"):\n"
    "  --nats URL             share topics with other hubs through NATS (a comma-\n"
    "                         separated list names servers of one cluster). Core\n"
    "                         mode: events published to any hub reach the clients\n"
    "                         of every hub, at most once; ids are per hub, so a\n"
    "                         client resumes only on the hub it came from\n"
    "  --nats-export PATTERN  core mode: local subjects sent to NATS; repeatable\n"
    "                         (default '>')\n"
    "  --nats-import PATTERN  subjects taken from NATS; repeatable (default '>');\n"
    "                         durable mode takes one\n"
    "  --nats-prefix P        NATS subjects are P.<subject> (default evs; '' = none)\n"
    "  --nats-durable NAME    durable mode: every publish goes through the JetStream\n"
    "                         stream NAME (created if missing; nats-server -js),\n"
    "                         whose sequence numbers are the event ids on every\n"
    "                         hub: a client may resume on any hub, and a hub\n"
    "                         replays the stream before it listens. /publish then\n"
    "                         answers 202 {\"id\":null,\"queued\":true}\n"
    "\n"
    "Event ids are decimal and increasing. Without --nats-durable they start over\n"
    "when the hub restarts: a client resuming with an id newer than any this hub\n"
    "issued first gets 'event: reset' (data {\"issued\":\"N\"}; forget the ids you\n"
    "keep), then everything the hub retains (SPEC.md, \"Ids across a restart\").\n"
    "\n"
    "Prints 'listening on http://ADDR:PORT' when ready; SIGINT or SIGTERM stops it.\n";

/* ------------------------------------------------------------------ */
/* Options                                                             */

/* Parse an option's number: -1 (go on), or the exit status. */
static int number(const char *name, const char *v, uint64_t min, uint64_t max, uint64_t *out)
{
    if (evs_cli_uint(v, min, max, out) != 0)
        return evs_cli_usage_error("serve", "%s wants a number in %" PRIu64 "..%" PRIu64
                                   ", not '%s'", name, min, max, v);
    return -1;
}

/* Options that take a number: name, where, bounds. Returns 1 when
 * argv[*i] was one, with *rc = -1 (go on) or the exit status. */
static int number_opt(int argc, char **argv, int *i, struct serve_opts *o, int *rc)
{
    const struct {
        const char *name;
        uint64_t *dst, min, max;
    } nums[] = {
        {"--port", &o->port, 0, 65535},
        {"--history", &o->history, 0, 1u << 24},
        {"--heartbeat-ms", &o->heartbeat_ms, 0, INT32_MAX},
        {"--retry-ms", &o->retry_ms, 0, INT32_MAX},
        {"--max-clients", &o->max_clients, 1, 1000000},
        {"--client-buffer", &o->client_buffer, 1024, (uint64_t)1 << 30},
    };
    for (size_t k = 0; k < sizeof nums / sizeof nums[0]; k++) {
        const char *v;
        int m = evs_cli_opt(argc, argv, i, nums[k].name, &v);
        if (m < 0)
            *rc = evs_cli_usage_error("serve", "%s needs a value", nums[k].name);
        else if (m > 0)
            *rc = number(nums[k].name, v, nums[k].min, nums[k].max, nums[k].dst);
        if (m != 0)
            return 1;
    }
    return 0;
}

/* Options that take a string; returns as number_opt. */
static int string_opt(int argc, char **argv, int *i, struct serve_opts *o, int *rc)
{
    const char *names[] = {"--bind", "--publish-token", "--allow-origin", "--topic"};
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        const char *v;
        int m = evs_cli_opt(argc, argv, i, names[k], &v);
        if (m == 0)
            continue;
        if (m < 0)
            *rc = evs_cli_usage_error("serve", "%s needs a value", names[k]);
        else if (k == 0)
            o->bind = v;
        else if (k == 1)
            o->token = v;
        else if (k == 3)
            o->topic = v;
        else if (o->norigins == MAX_ORIGINS)
            *rc = evs_cli_usage_error("serve", "at most %d --allow-origin", MAX_ORIGINS);
        else if (v[0] == '\0')
            *rc = evs_cli_usage_error("serve", "--allow-origin needs an origin");
        else
            o->origins[o->norigins++] = v;
        return 1;
    }
    return 0;
}

/* The --nats options; returns as number_opt. */
static int nats_opt(int argc, char **argv, int *i, struct serve_opts *o, int *rc)
{
    const char *names[] = {"--nats", "--nats-export", "--nats-import", "--nats-durable",
                           "--nats-prefix"};
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        const char *v;
        int m = evs_cli_opt(argc, argv, i, names[k], &v);
        if (m == 0)
            continue;
        if (m < 0) {
            *rc = evs_cli_usage_error("serve", "%s needs a value", names[k]);
        } else if (k == 0) {
            o->nats_url = v;
        } else if (k == 1 || k == 2) {
            const char **list = k == 1 ? o->nats_exports : o->nats_imports;
            size_t *n = k == 1 ? &o->nnats_exports : &o->nnats_imports;
            if (*n == MAX_NATS_PATTERNS)
                *rc = evs_cli_usage_error("serve", "at most %d %s", MAX_NATS_PATTERNS, names[k]);
            else
                list[(*n)++] = v;
        } else if (k == 3) {
            o->nats_durable = v;
        } else {
            o->nats_prefix = v;
            o->nats_prefix_set = true;
        }
        return 1;
    }
    return 0;
}

/* Is the first token of `pattern` a wildcard? */
static bool wild_first(const char *pattern)
{
    return (pattern[0] == '>' || pattern[0] == '*') && (pattern[1] == '\0' || pattern[1] == '.');
}

/* The --nats options together. The bridge checks the rest (patterns,
 * the prefix, the name, the URL) when it is created. Returns -1 to go
 * on, or the exit status. */
static int check_nats(const struct serve_opts *o)
{
    if (o->nats_url == NULL) {
        const char *orphan = o->nnats_exports > 0   ? "--nats-export"
                             : o->nnats_imports > 0 ? "--nats-import"
                             : o->nats_durable      ? "--nats-durable"
                             : o->nats_prefix_set   ? "--nats-prefix"
                                                    : NULL;
        if (orphan != NULL)
            return evs_cli_usage_error("serve", "%s needs --nats URL", orphan);
        return -1;
    }
    if (!evs_nats_supported())
        return evs_cli_usage_error("serve", "--nats: %s (this build has no libnats)",
                                   evs_strerror(EVS_ENOTSUP));
    if (o->nats_url[0] == '\0')
        return evs_cli_usage_error("serve", "--nats needs a URL (nats://HOST:PORT)");
    if (o->nats_durable == NULL)
        return -1;
    if (o->nnats_exports > 0)
        return evs_cli_usage_error("serve", "--nats-export does not go with --nats-durable: "
                                   "in durable mode every publish goes through JetStream");
    if (o->nnats_imports > 1)
        return evs_cli_usage_error("serve", "--nats-durable takes one --nats-import (a "
                                   "JetStream consumer has one filter subject): use a wildcard");
    const char *imp = o->nnats_imports > 0 ? o->nats_imports[0] : ">";
    if (o->nats_prefix[0] == '\0' && wild_first(imp))
        return evs_cli_usage_error("serve", "--nats-durable with the import pattern '%s' needs "
                                   "a --nats-prefix (a JetStream stream cannot take every "
                                   "subject)", imp);
    return -1;
}

/* Parse argv into `o`. Returns -1 to go on, or the exit status. */
static int parse_args(int argc, char **argv, struct serve_opts *o)
{
    *o = (struct serve_opts){
        .bind = "127.0.0.1",
        .port = 8080,
        .history = 1024,
        .heartbeat_ms = EVS_SSE_HEARTBEAT_DEFAULT_MS,
        .max_clients = 10000,
        .client_buffer = 256 * 1024,
        .token = getenv("EVSTREAM_PUBLISH_TOKEN"),
        .topic = "stdin",
        .nats_prefix = "evs",
    };
    for (int i = 1; i < argc; i++) {
        int rc = -1;
        if (number_opt(argc, argv, &i, o, &rc) || string_opt(argc, argv, &i, o, &rc) ||
            nats_opt(argc, argv, &i, o, &rc)) {
            if (rc >= 0)
                return rc;
        } else if (strcmp(argv[i], "--stdin") == 0) {
            o->stdin_feed = true;
        } else if (strcmp(argv[i], "--demo") == 0) {
            o->demo = true;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(usage_text, stdout);
            return 0;
        } else {
            return evs_cli_usage_error("serve", "unknown option '%s'", argv[i]);
        }
    }
    if (!evs_hub_http_valid_bind(o->bind))
        return evs_cli_usage_error("serve", "--bind wants a numeric IPv4 or IPv6 address, not '%s'",
                                   o->bind);
    return check_nats(o);
}

/* ------------------------------------------------------------------ */
/* /metrics                                                            */

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* One sample: `name` with its optional labels ("" or "{...}"). The
 * HELP and TYPE lines come once per family, before its first sample. */
struct metric {
    const char *name, *labels, *type, *help;
    double value;
};

/* Append a table of samples: a family's HELP and TYPE go before its
 * first sample, and a family's samples are adjacent in the table, as
 * the format requires. */
static int emit_table(evs_buf *out, const struct metric *m, size_t n)
{
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (i == 0 || strcmp(m[i].name, m[i - 1].name) != 0)
            rc = evs_cli_bprintf(out, "# HELP %s %s\n# TYPE %s %s\n", m[i].name, m[i].help,
                                 m[i].name, m[i].type);
        if (rc == 0)
            rc = evs_cli_bprintf(out, "%s%s %.17g\n", m[i].name, m[i].labels, m[i].value);
    }
    return rc;
}

#define C(n, l, h, v) {"evstream_" n, l, "counter", h, (double)(v)}
#define G(n, l, h, v) {"evstream_" n, l, "gauge", h, (double)(v)}

/* The bridge's counters (evs_nats_bridge_stats_get), evstream_nats_*. */
static int render_nats(evs_nats_bridge *b, evs_buf *out)
{
    evs_nats_stats ns;
    if (evs_nats_bridge_stats_get(b, &ns) != 0)
        return EVS_EINVAL;
    const struct metric m[] = {
        G("nats_connected", "", "1 while the NATS bridge is connected.", ns.connected),
        G("nats_ready", "", "1 once the bridge is set up (durable: JetStream stream and consumer).",
          ns.ready),
        C("nats_exported_total", "", "Events NATS accepted (durable: stored by JetStream).",
          ns.exported),
        C("nats_export_buffered_total", "", "Exports kept while reconnecting (core mode).",
          ns.export_buffered),
        C("nats_export_failed_total", "",
          "Exports NATS refused (core: lost; durable: attempts, retried).", ns.export_failed),
        C("nats_export_dropped_total", "", "Exports lost to the full export queue.",
          ns.export_dropped),
        G("nats_export_queued", "", "Events waiting for export.", ns.export_queued),
        C("nats_imported_total", "", "NATS messages published to the hub's stream.", ns.imported),
        C("nats_import_failed_total", "", "NATS messages that did not decode or were refused.",
          ns.import_failed),
        C("nats_import_dropped_total", "", "NATS messages dropped because imports fell behind.",
          ns.import_dropped),
        C("nats_dropped_loops_total", "", "NATS messages dropped for carrying our origin.",
          ns.dropped_loops),
        C("nats_duplicates_total", "", "Redelivered JetStream messages skipped.", ns.duplicates),
        C("nats_id_gaps_total", "", "Heartbeats that filled JetStream sequence gaps.", ns.id_gaps),
        C("nats_id_mismatches_total", "", "Imports whose id is not their JetStream sequence.",
          ns.id_mismatches),
        G("nats_last_seq", "", "The last JetStream sequence imported or skipped.", ns.last_seq),
        C("nats_disconnects_total", "", "NATS connections lost.", ns.disconnects),
        C("nats_reconnects_total", "", "NATS connections re-established.", ns.reconnects),
    };
    return emit_table(out, m, sizeof m / sizeof m[0]);
}

/*
 * /metrics: the library's counters (evs_stream_stats_get,
 * evs_sse_stats_get) and the hub's own (streams, HTTP answers,
 * publishes) as Prometheus text, format 0.0.4, from one table; then the
 * NATS bridge's (evstream_nats_*, with --nats); then the library's own
 * exposition of the stream (evs_stream_prometheus: the evs_stream_* and
 * evs_sub_* families, handler-time quantiles included). The hub's
 * families are all named evstream_*, the library's evs_*, so no family
 * is written twice.
 * Threads: the HTTP thread (so it reads the server's counters from
 * `http`, not from hub->http, which the main thread writes once the
 * server already runs); every source is safe to read from any thread.
 */
static int render_metrics(void *user, evs_hub_http *http, evs_buf *out)
{
    struct hub *hub = user;
    evs_stream_stats st;
    evs_sse_stats se;
    evs_hub_events_stats ev;
    evs_hub_http_stats hs;
    uint64_t pub_ok, pub_failed;
    if (evs_stream_stats_get(hub->stream, &st) != 0 || evs_sse_stats_get(hub->sse, &se) != 0)
        return EVS_EINVAL;
    evs_hub_events_stats_get(hub->events, &ev);
    evs_hub_http_stats_get(http, &hs);
    evs_hub_pub_counts(hub->pub, &pub_ok, &pub_failed);
    const struct metric m[] = {
        C("stream_published_total", "", "Events the hub's stream accepted.", st.published),
        C("stream_delivered_total", "", "Deliveries to subscriptions (one per client pattern).",
          st.delivered),
        C("stream_dropped_total", "{reason=\"newest\"}", "Events the stream dropped.",
          st.dropped_newest),
        C("stream_dropped_total", "{reason=\"oldest\"}", "", st.dropped_oldest),
        C("stream_dropped_total", "{reason=\"full\"}", "", st.rejected_full),
        C("stream_dropped_total", "{reason=\"timeout\"}", "", st.timed_out),
        C("stream_dropped_total", "{reason=\"nomem\"}", "", st.dropped_nomem),
        C("stream_handler_errors_total", "", "Delivery calls that failed.", st.handler_errors),
        C("stream_unroutable_total", "", "Events no client pattern matched.", st.unroutable),
        G("stream_queue_depth", "", "Events accepted and not yet dispatched.", st.queued),
        G("stream_queue_depth_max", "", "Most events ever queued at once.", st.queue_hwm),
        G("stream_subscribers", "", "Live subscriptions (client patterns).", st.subscribers),
        G("stream_topics", "", "Subjects tracked.", st.topics),
        G("sse_clients", "", "Clients of the SSE layer.", se.clients),
        C("sse_connects_total", "", "Clients connected since start.", se.connects),
        C("sse_replayed_total", "", "Events replayed to resuming clients.", se.replayed),
        C("sse_gaps_total", "", "Resumes from before the history (gap frames).", se.gaps),
        C("sse_heartbeats_total", "", "Heartbeat comments sent to idle clients.", se.heartbeats),
        C("sse_skipped_total", "", "Events clients lost (announced to them).", se.skipped),
        C("sse_frames_total", "", "Frames handed to the HTTP layer.", se.frames),
        G("hub_clients", "", "Open /events streams.", ev.open),
        G("hub_clients_max", "", "The cap on open /events streams.", hub->o.max_clients),
        C("hub_clients_served_total", "", "/events streams opened since start.", ev.served),
        C("hub_clients_rejected_total", "", "/events answered 503 at the cap.", ev.rejected),
        C("hub_clients_slow_total", "", "Streams ended for too many unsent bytes.", ev.slow),
        C("hub_sent_bytes_total", "", "Event-stream bytes handed to HTTP.", ev.bytes),
        G("hub_connections", "", "Open HTTP connections.", hs.connections),
        C("hub_responses_total", "{code=\"2xx\"}", "HTTP answers by status class.", hs.status[2]),
        C("hub_responses_total", "{code=\"3xx\"}", "", hs.status[3]),
        C("hub_responses_total", "{code=\"4xx\"}", "", hs.status[4]),
        C("hub_responses_total", "{code=\"5xx\"}", "", hs.status[5]),
        C("hub_published_total", "", "Events published (HTTP, stdin, demo; durable mode: "
          "queued for JetStream).", pub_ok),
        C("hub_publish_failed_total", "", "Publishes refused by the stream.", pub_failed),
        C("hub_publish_unauthorized_total", "", "Publishes answered 401.", hs.unauthorized),
        C("hub_publish_too_large_total", "", "Publishes answered 413.", hs.too_large),
        G("hub_uptime_seconds", "", "Seconds since the hub started.",
          (double)(now_ns() - hub->started_ns) / 1e9),
    };
    int rc = emit_table(out, m, sizeof m / sizeof m[0]);
    if (rc == 0 && hub->bridge != NULL)
        rc = render_nats(hub->bridge, out);
    if (rc == 0)
        rc = evs_stream_prometheus(hub->stream, "hub", out);
    return rc;
}

#undef C
#undef G

/*
 * /health with a bridge: JSON, {"status":"ok"|"degraded","nats":{...}}:
 * "degraded" while the bridge is not connected or not ready. Still 200:
 * the hub serves its clients from its own stream meanwhile (durable
 * mode: publishes wait in the export queue). Threads: the HTTP thread.
 */
static int render_health(void *user, evs_hub_http *http, evs_buf *out)
{
    struct hub *hub = user;
    evs_nats_stats ns;
    (void)http;
    if (evs_nats_bridge_stats_get(hub->bridge, &ns) != 0)
        return EVS_EINVAL;
    return evs_cli_bprintf(
        out,
        "{\"status\":\"%s\",\"nats\":{\"mode\":\"%s\",\"connected\":%s,\"ready\":%s,"
        "\"exported\":%" PRIu64 ",\"imported\":%" PRIu64 ",\"export_dropped\":%" PRIu64
        ",\"import_dropped\":%" PRIu64 ",\"reconnects\":%" PRIu64 "}}\n",
        ns.connected && ns.ready ? "ok" : "degraded", hub->o.nats_durable ? "durable" : "core",
        ns.connected ? "true" : "false", ns.ready ? "true" : "false", ns.exported, ns.imported,
        ns.export_dropped, ns.import_dropped, ns.reconnects);
}

/* ------------------------------------------------------------------ */
/* Start and stop                                                      */

/* Raise the descriptor limit to its hard maximum (each client is one
 * socket) and make sure the cap fits in it. */
static void fit_descriptors(struct serve_opts *o)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl); /* on failure: the old limit */
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur != RLIM_INFINITY && o->max_clients + FD_RESERVE > rl.rlim_cur) {
        uint64_t fit = rl.rlim_cur > FD_RESERVE + 16 ? rl.rlim_cur - FD_RESERVE : 16;
        fprintf(stderr,
                "evstream serve: --max-clients %" PRIu64 " exceeds the descriptor limit (%" PRIu64
                "); using %" PRIu64 "\n",
                o->max_clients, (uint64_t)rl.rlim_cur, fit);
        o->max_clients = fit;
    }
}

/*
 * Create the bridge for --nats. Core mode exports and imports the
 * patterns (default '>'); durable mode imports one pattern through
 * JetStream with seq_ids and exports nothing: the hub publishes with
 * evs_nats_bridge_publish (publish.c). Returns -1 to go on or the exit
 * status: 2 when the bridge refuses the options (they all come from the
 * command line), 1 otherwise.
 */
static int start_nats(struct hub *hub)
{
    const struct serve_opts *o = &hub->o;
    static const char *const all[] = {">"};
    evs_nats_opts no = {
        .url = o->nats_url,
        .prefix = o->nats_prefix,
        .imports = o->nnats_imports > 0 ? o->nats_imports : all,
        .nimports = o->nnats_imports > 0 ? o->nnats_imports : 1,
    };
    if (o->nats_durable == NULL) {
        no.exports = o->nnats_exports > 0 ? o->nats_exports : all;
        no.nexports = o->nnats_exports > 0 ? o->nnats_exports : 1;
    } else {
        no.durable = o->nats_durable;
        no.seq_ids = true;
    }
    int rc = evs_nats_bridge_create(&hub->bridge, hub->stream, &no);
    if (rc == EVS_EINVAL)
        return evs_cli_usage_error("serve", "the NATS bridge refused its options (%s): check "
                                   "--nats URL, the patterns, --nats-prefix and "
                                   "--nats-durable NAME ([A-Za-z0-9_-], at most %u bytes)",
                                   evs_strerror(rc), EVS_NATS_MAX_NAME);
    if (rc != 0) {
        fprintf(stderr, "evstream serve: NATS bridge: %s\n", evs_strerror(rc));
        return 1;
    }
    return -1;
}

/* Create the stream (and its bridge), the SSE layer, the publisher and
 * the event streams. Returns -1 to go on, or the exit status. */
static int start_core(struct hub *hub)
{
    const struct serve_opts *o = &hub->o;
    bool durable = o->nats_url != NULL && o->nats_durable != NULL;
    evs_stream_opts so = {
        .topics = true,
        .history = o->history == 0 ? EVS_HISTORY_NONE : (size_t)o->history,
        .overflow = EVS_OVERFLOW_BLOCK,
        /* Durable mode: the bridge is the stream's only publisher, and a
         * refused import would be a hole in the mirror, so it waits for
         * room (NATS then waits for the stream: flow control). */
        .block_timeout_ms = durable ? 0 : PUBLISH_BLOCK_MS,
        /* No stream heartbeats (the SSE layer's comments keep clients
         * alive); a mirror with seq_ids requires it. */
        .heartbeat_ms = 0,
        /* Handler times for /metrics (evs_stream_handler_seconds): one
         * histogram for the stream, nothing per client. */
        .metrics = EVS_METRICS_STREAM,
    };
    evs_sse_stream_opts sseo = {
        .heartbeat_ms = o->heartbeat_ms == 0 ? EVS_SSE_NO_HEARTBEAT : (int)o->heartbeat_ms,
        .retry_ms = (int)o->retry_ms,
        /* Ids start over when a hub without JetStream restarts: an id
         * from before is answered with a reset frame (SPEC.md, "The
         * hub"). Durable mode's ids are JetStream's, and a hub still
         * catching up may be behind an id another hub issued. */
        .reset_future_ids = !durable,
    };
    evs_hub_events_opts eo = {.max_clients = o->max_clients, .client_buffer = o->client_buffer};
    int rc, status;
    if ((rc = evs_stream_create(&hub->stream, &so)) != 0) {
        fprintf(stderr, "evstream serve: %s\n", evs_strerror(rc));
        return 1;
    }
    if (o->nats_url != NULL && (status = start_nats(hub)) >= 0)
        return status;
    if ((rc = evs_sse_create(&hub->sse, hub->stream, &sseo)) != 0 ||
        (rc = evs_hub_pub_create(&hub->pub, hub->stream, durable ? hub->bridge : NULL)) != 0 ||
        (rc = evs_hub_events_create(&hub->events, hub->sse, &eo)) != 0) {
        fprintf(stderr, "evstream serve: %s\n", evs_strerror(rc));
        return 1;
    }
    return -1;
}

/*
 * Wait for the bridge before listening. Durable mode: until the stream
 * holds what JetStream holds (the start-up replay), at most NATS_SYNC_MS,
 * else give up (exit 1). Core mode: until connected with the imports
 * subscribed, at most NATS_CONNECT_MS, then serve anyway. A stop signal
 * meanwhile ends the wait (exit 0). Returns -1 to go on, or the exit
 * status.
 */
static int sync_nats(struct hub *hub, const sigset_t *stop_signals)
{
    if (hub->bridge == NULL)
        return -1;
    bool durable = hub->o.nats_durable != NULL;
    int64_t end = now_ns() + (int64_t)(durable ? NATS_SYNC_MS : NATS_CONNECT_MS) * 1000000;
    const struct timespec poll_now = {0, 0};
    for (;;) {
        int rc = evs_nats_bridge_sync(hub->bridge, NATS_SLICE_MS);
        if (rc == 0)
            return -1;
        if (rc != EVS_ETIMEDOUT) {
            fprintf(stderr, "evstream serve: NATS: %s\n", evs_strerror(rc));
            return 1;
        }
        if (sigtimedwait(stop_signals, NULL, &poll_now) >= 0)
            return 0;
        if (now_ns() >= end)
            break;
    }
    if (durable) {
        fprintf(stderr,
                "evstream serve: NATS: the JetStream replay of '%s' from %s did not finish "
                "within %d s (is nats-server running there, with -js?)\n",
                hub->o.nats_durable, hub->o.nats_url, NATS_SYNC_MS / 1000);
        return 1;
    }
    fprintf(stderr, "evstream serve: NATS at %s not reachable yet; serving, and connecting "
                    "in the background\n", hub->o.nats_url);
    return -1;
}

static int start_http(struct hub *hub)
{
    const struct serve_opts *o = &hub->o;
    evs_hub_http_opts ho = {
        .bind = o->bind,
        .port = (unsigned)o->port,
        .max_clients = o->max_clients,
        .token = o->token,
        .origins = o->origins,
        .norigins = o->norigins,
        .pub = hub->pub,
        .events = hub->events,
        .metrics = render_metrics,
        .health = hub->bridge != NULL ? render_health : NULL,
        .metrics_user = hub,
    };
    char url[128];
    int rc = evs_hub_http_start(&hub->http, &ho, url, sizeof url);
    if (rc != 0)
        return rc; /* the reason is on stderr */
    printf("listening on %s\n", url);
    fflush(stdout);
    return 0;
}

static int start_feeds(struct hub *hub)
{
    int rc = 0;
    if (hub->o.demo)
        rc = evs_hub_feed_demo(&hub->demo, hub->pub);
    if (rc == 0 && hub->o.stdin_feed)
        rc = evs_hub_feed_lines(&hub->lines, hub->pub, STDIN_FILENO, hub->o.topic);
    if (rc != 0)
        fprintf(stderr, "evstream serve: starting a feed: %s\n", evs_strerror(rc));
    return rc;
}

/* Forward what the bridge still holds (durable mode: publishes answered
 * 202 and not yet stored by JetStream) for as long as the 2-s exit
 * allows, then destroy it. Said on stderr when some were lost. */
static void stop_nats(struct hub *hub)
{
    if (hub->bridge == NULL)
        return;
    int64_t left_ms = STOP_NATS_BY_MS - (now_ns() - hub->stop_ns) / 1000000;
    if (left_ms < 0)
        left_ms = 0;
    int rc = evs_nats_bridge_flush(hub->bridge, (int)left_ms);
    evs_nats_stats ns;
    if (rc != 0 && evs_nats_bridge_stats_get(hub->bridge, &ns) == 0 && ns.export_queued > 0)
        fprintf(stderr,
                "evstream serve: stopping: NATS: %s; %" PRIu64 " events not yet sent are lost\n",
                evs_strerror(rc), ns.export_queued);
    evs_nats_bridge_destroy(hub->bridge);
    hub->bridge = NULL;
}

/* Stop in order: intake first (connections, feeds), then the streams
 * (each gets its final frame and ends), then the bridge (flushed), then
 * free. Every step accepts what a failed start left. */
static void stop(struct hub *hub)
{
    hub->stop_ns = now_ns();
    evs_hub_http_quiesce(hub->http);
    evs_hub_feed_stop(hub->demo);
    evs_hub_feed_stop(hub->lines);
    if (hub->sse != NULL)
        evs_sse_close(hub->sse); /* no more pushes to the streams */
    if (hub->events != NULL) {
        evs_hub_events_stop(hub->events);
        (void)evs_hub_events_wait(hub->events, STOP_WAIT_MS);
        evs_hub_events_stop_waker(hub->events);
    }
    /* Closes what is left (clients that did not read their last frame)
     * and frees each stream; none is suspended after events_stop. */
    evs_hub_http_stop(hub->http);
    evs_hub_events_destroy(hub->events);
    int rc = evs_sse_destroy(hub->sse);
    /* The bridge borrows the stream (imports publish to it): first. */
    stop_nats(hub);
    if (rc == 0)
        rc = evs_stream_destroy(hub->stream);
    if (rc != 0)
        fprintf(stderr, "evstream serve: stopping: %s\n", evs_strerror(rc));
    evs_hub_pub_destroy(hub->pub);
}

int evs_cli_serve(int argc, char **argv)
{
    struct hub hub = {.started_ns = now_ns()};
    evs_hub_pub_json_install(); /* before any jansson allocation */
    int status = parse_args(argc, argv, &hub.o);
    if (status >= 0)
        return status;
    if (hub.o.token != NULL && hub.o.token[0] == '\0')
        hub.o.token = NULL;

    /* Before any thread starts, so that every thread inherits the mask:
     * the signals are taken by sigwait below, nowhere else. A client
     * gone mid-write must not kill the hub. */
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    signal(SIGPIPE, SIG_IGN);
    fit_descriptors(&hub.o);

    status = start_core(&hub);
    if (status < 0)
        status = sync_nats(&hub, &stop_signals);
    if (status < 0) {
        status = 1;
        if (start_http(&hub) == 0 && start_feeds(&hub) == 0) {
            int sig;
            while (sigwait(&stop_signals, &sig) != 0)
                ;
            status = 0;
        }
    }
    stop(&hub);
    return status;
}
