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
 * This file also renders /metrics (render_metrics), on the HTTP thread.
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
 * 503. Short: an HTTP publish waits on the server's one thread, which
 * meanwhile serves nobody (only an overloaded hub fills its stream). */
#define PUBLISH_BLOCK_MS 100
/* Descriptors beyond the event streams' cap: the connections the HTTP
 * server allows beyond it (256) and the hub's own (listener, epoll,
 * eventfds, stdin...). */
#define FD_RESERVE 320

/* The command line. */
struct serve_opts {
    const char *bind;
    uint64_t port, history, heartbeat_ms, retry_ms, max_clients, client_buffer;
    const char *token;
    const char *origins[MAX_ORIGINS];
    size_t norigins;
    bool stdin_feed, demo;
    const char *topic;
};

/* Everything the hub is made of, owned by the main thread. */
struct hub {
    struct serve_opts o;
    evs_stream *stream;
    evs_sse *sse;
    evs_hub_pub *pub;
    evs_hub_events *events;
    evs_hub_http *http;
    evs_hub_feed *demo, *lines;
    int64_t started_ns; /* CLOCK_MONOTONIC at start */
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
    };
    for (int i = 1; i < argc; i++) {
        int rc = -1;
        if (number_opt(argc, argv, &i, o, &rc) || string_opt(argc, argv, &i, o, &rc)) {
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
    return -1;
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

/*
 * /metrics: the library's counters (evs_stream_stats_get,
 * evs_sse_stats_get) and the hub's own (streams, HTTP answers,
 * publishes) as Prometheus text, format 0.0.4. One table, one pass: a
 * family's HELP and TYPE go before its first sample, and a family's
 * samples are adjacent in the table, as the format requires.
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
#define C(n, l, h, v) {"evstream_" n, l, "counter", h, (double)(v)}
#define G(n, l, h, v) {"evstream_" n, l, "gauge", h, (double)(v)}
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
        C("hub_published_total", "", "Events published (HTTP, stdin, demo).", pub_ok),
        C("hub_publish_failed_total", "", "Publishes refused by the stream.", pub_failed),
        C("hub_publish_unauthorized_total", "", "Publishes answered 401.", hs.unauthorized),
        C("hub_publish_too_large_total", "", "Publishes answered 413.", hs.too_large),
        G("hub_uptime_seconds", "", "Seconds since the hub started.",
          (double)(now_ns() - hub->started_ns) / 1e9),
    };
#undef C
#undef G
    int rc = 0;
    for (size_t i = 0; i < sizeof m / sizeof m[0] && rc == 0; i++) {
        if (i == 0 || strcmp(m[i].name, m[i - 1].name) != 0)
            rc = evs_cli_bprintf(out, "# HELP %s %s\n# TYPE %s %s\n", m[i].name, m[i].help,
                                 m[i].name, m[i].type);
        if (rc == 0)
            rc = evs_cli_bprintf(out, "%s%s %.17g\n", m[i].name, m[i].labels, m[i].value);
    }
    return rc;
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

static int start_core(struct hub *hub)
{
    const struct serve_opts *o = &hub->o;
    evs_stream_opts so = {
        .topics = true,
        .history = o->history == 0 ? EVS_HISTORY_NONE : (size_t)o->history,
        .overflow = EVS_OVERFLOW_BLOCK,
        .block_timeout_ms = PUBLISH_BLOCK_MS,
    };
    evs_sse_stream_opts sseo = {
        .heartbeat_ms = o->heartbeat_ms == 0 ? EVS_SSE_NO_HEARTBEAT : (int)o->heartbeat_ms,
        .retry_ms = (int)o->retry_ms,
    };
    evs_hub_events_opts eo = {.max_clients = o->max_clients, .client_buffer = o->client_buffer};
    int rc;
    if ((rc = evs_stream_create(&hub->stream, &so)) != 0 ||
        (rc = evs_sse_create(&hub->sse, hub->stream, &sseo)) != 0 ||
        (rc = evs_hub_pub_create(&hub->pub, hub->stream)) != 0 ||
        (rc = evs_hub_events_create(&hub->events, hub->sse, &eo)) != 0)
        fprintf(stderr, "evstream serve: %s\n", evs_strerror(rc));
    return rc;
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

/* Stop in order: intake first (connections, feeds), then the streams
 * (each gets its final frame and ends), then free. Every step accepts
 * what a failed start left. */
static void stop(struct hub *hub)
{
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
    if (rc == 0)
        rc = evs_stream_destroy(hub->stream);
    if (rc != 0)
        fprintf(stderr, "evstream serve: stopping: %s\n", evs_strerror(rc));
    evs_hub_pub_destroy(hub->pub);
}

int evs_cli_serve(int argc, char **argv)
{
    struct hub hub = {.started_ns = now_ns()};
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

    status = 1;
    if (start_core(&hub) == 0 && start_http(&hub) == 0 && start_feeds(&hub) == 0) {
        int sig;
        while (sigwait(&stop_signals, &sig) != 0)
            ;
        status = 0;
    }
    stop(&hub);
    return status;
}
