/*
 * The hub (`evstream serve`): the private interface between its modules.
 *
 *   serve.c    options, start and graceful stop, the /metrics renderer
 *   http.c     the HTTP front (libmicrohttpd): routing, CORS, /publish,
 *              /, /health, /types, /metrics
 *   events.c   GET /events: one SSE response per client, fed by the
 *              library's SSE layer in push mode
 *   publish.c  turning bytes into an event on the hub's TopicStream;
 *              the event type names seen (for the page)
 *   feed.c     the --demo publisher and the --stdin reader
 *   jobs.c     the threads that publish and open resumed streams, so
 *              that the HTTP thread never waits for either
 *
 * With --nats, serve.c also owns the library's NATS bridge; publish.c
 * hands events to it in durable mode.
 *
 * Threads: the HTTP server runs one polling thread (libmicrohttpd's),
 * which hands publishes and event-stream opens to job threads (jobs.c);
 * the stream has its dispatcher and the library its heartbeat thread;
 * each feed has one thread; the main thread waits for a signal and
 * stops everything. No thread per client.
 */
#ifndef EVS_HUB_H
#define EVS_HUB_H

#include <evstream.h>
#include <microhttpd.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The most bytes a published event's data may have: 1 MiB exactly. */
#define EVS_HUB_MAX_BODY ((size_t)1 << 20)

/* ------------------------------------------------------------------ */
/* jobs.c                                                              */

typedef struct evs_hub_jobs evs_hub_jobs;

/* A job: embedded in its owner's state; fn gets the job back and may
 * free its owner (the pool does not touch the job after calling fn). */
struct evs_hub_job {
    void (*fn)(struct evs_hub_job *job);
    struct evs_hub_job *next; /* the pool's queue */
};

/* Start `nthreads` (1..16) threads that run submitted jobs in order of
 * submission. Returns 0, EVS_EINVAL, EVS_ENOMEM or EVS_ESYSTEM. */
int evs_hub_jobs_create(evs_hub_jobs **out, unsigned nthreads);

/* Queue `job`; false (nothing queued) once the pool is stopping.
 * Threads: any. Blocks: no. */
bool evs_hub_jobs_submit(evs_hub_jobs *j, struct evs_hub_job *job);

/* Refuse new jobs, run every queued one, and join the threads.
 * Idempotent; accepts NULL. Blocks: while the queued jobs run. */
void evs_hub_jobs_stop(evs_hub_jobs *j);

/* Stop, then free. Accepts NULL. */
void evs_hub_jobs_destroy(evs_hub_jobs *j);

/* ------------------------------------------------------------------ */
/* publish.c                                                           */

typedef struct evs_hub_pub evs_hub_pub;

/* Create the publisher for `s`. With `bridge` (NULL = none; durable
 * mode, a bridge with seq_ids) events go to the bridge instead, which
 * stores them in JetStream and brings them back to `s` with their
 * sequence as id. Both borrowed until destroy. Returns 0 or EVS_ENOMEM. */
int evs_hub_pub_create(evs_hub_pub **out, evs_stream *s, evs_nats_bridge *bridge);
void evs_hub_pub_destroy(evs_hub_pub *p);

/* evs_hub_pub_send: a JSON body whose validation would allocate more
 * than the publisher's budget (16 MiB; publish.c). Not a library code. */
#define EVS_HUB_EJSONCOST (-1000)

/* Install the JSON allocator that bounds validation (publish.c): once,
 * before anything in the process uses jansson. */
void evs_hub_pub_json_install(void);

/*
 * Publish `len` bytes of data as one event with `topic` (a subject) and
 * `type` (NULL = "message"), read as `content`. *id (may be NULL) gets
 * the event's id, or 0 when it is not known yet: with a bridge the
 * event is only queued for JetStream, whose sequence becomes its id.
 * Returns 0, EVS_EINVAL (bad subject or type name), EVS_EBADMSG (JSON
 * content that does not parse), EVS_HUB_EJSONCOST, EVS_ETOOBIG, EVS_ECLOSED,
 * EVS_ETIMEDOUT (the stream stayed full), EVS_EFULL (the bridge's
 * export queue is full), EVS_ENOMEM.
 * Ownership: copies everything.
 * Threads: any thread, concurrently.
 * Blocks: while the stream's queue is full, at most 100 ms (never with
 * a bridge).
 */
int evs_hub_pub_send(evs_hub_pub *p, const char *topic, const char *type, const void *data,
                     size_t len, evs_content content, uint64_t *id);

/* Append the event type names published so far (at most 64, first come)
 * as a JSON array of strings. Returns 0 or EVS_ENOMEM. Threads: any. */
int evs_hub_pub_types_json(evs_hub_pub *p, evs_buf *out);

/* Publishes that succeeded and that failed. Threads: any. */
void evs_hub_pub_counts(evs_hub_pub *p, uint64_t *ok, uint64_t *failed);

/* ------------------------------------------------------------------ */
/* events.c                                                            */

typedef struct evs_hub_events evs_hub_events;

typedef struct evs_hub_events_opts {
    size_t max_clients;   /* open streams at most; more get 503 */
    size_t client_buffer; /* bytes one client may have waiting to be sent;
                             past it the client is disconnected as slow
                             (one frame is always accepted) */
} evs_hub_events_opts;

/* Counters of the /events streams (a snapshot). */
typedef struct evs_hub_events_stats {
    uint64_t open;     /* streams open now */
    uint64_t served;   /* streams opened since start */
    uint64_t rejected; /* answered 503: the cap was reached */
    uint64_t slow;     /* disconnected: more than client_buffer waiting */
    uint64_t bytes;    /* bytes handed to the HTTP server */
} evs_hub_events_stats;

/* Create the set of streams over `sse` (borrowed until destroy), with
 * its waker thread. Returns 0, EVS_EINVAL, EVS_ENOMEM or EVS_ESYSTEM. */
int evs_hub_events_create(evs_hub_events **out, evs_sse *sse, const evs_hub_events_opts *o);

typedef struct evs_hub_opening evs_hub_opening;

/*
 * Open an event stream for the GET /events request on `mc` (topic and
 * last_event_id from the query, Last-Event-ID from the headers).
 * Returns 200 with *resp the streaming response (the caller adds its
 * headers, queues it and drops its reference); 0 with *pending when the
 * stream resumes: connecting then runs on a job thread with `mc`
 * suspended, and when libmicrohttpd calls the access handler again (the
 * job resumed `mc`), evs_hub_events_finish answers; or the status of
 * the error with *msg saying why (400, 503, 500).
 * Threads: the HTTP server's thread.
 * Blocks: no (a live-only open subscribes; a resume is a job).
 */
unsigned evs_hub_events_open(evs_hub_events *e, struct MHD_Connection *mc,
                             struct MHD_Response **resp, const char **msg,
                             evs_hub_opening **pending);

/* The resumed open is done: as evs_hub_events_open (200 with *resp, or
 * an error status with *msg). Frees `op`. Threads: the HTTP thread. */
unsigned evs_hub_events_finish(evs_hub_opening *op, struct MHD_Response **resp,
                               const char **msg);

/* The request ended before evs_hub_events_finish (the client went
 * away): free `op` and its stream. Only once its job is done (the
 * connection was resumed). Accepts NULL. */
void evs_hub_events_abandon(evs_hub_opening *op);

/*
 * The server is stopping: every stream gets a final "event: disconnect"
 * frame with "server shutdown" after what is queued, then ends; no new
 * stream opens. Call after evs_sse_close. Idempotent.
 * Threads: any thread but the HTTP server's.
 */
void evs_hub_events_stop(evs_hub_events *e);

/* Wait up to `ms` for every stream to end. Returns whether they all did. */
bool evs_hub_events_wait(evs_hub_events *e, int ms);

/*
 * Finish the opens in progress (resumes refuse new ones with 503), then
 * stop the thread that resumes streams a little later to batch their
 * writes, once it has resumed every stream it holds; from then on
 * streams are resumed at once. After evs_hub_events_stop and this, no
 * stream is suspended, so the HTTP server may stop. Idempotent.
 */
void evs_hub_events_stop_waker(evs_hub_events *e);

void evs_hub_events_stats_get(evs_hub_events *e, evs_hub_events_stats *out);

/* Free the set. Every stream must have ended (the HTTP server stopped). */
void evs_hub_events_destroy(evs_hub_events *e);

/* ------------------------------------------------------------------ */
/* http.c                                                              */

typedef struct evs_hub_http evs_hub_http;

/* Renders a resource (/metrics, /health): appends its text to `out`
 * (`h` is the server asking, for its own counters); 0 or EVS_ENOMEM. */
typedef int (*evs_hub_render_fn)(void *user, struct evs_hub_http *h, evs_buf *out);

typedef struct evs_hub_http_opts {
    const char *bind;           /* a numeric IPv4 or IPv6 address */
    unsigned port;              /* 0 = any free port */
    size_t max_clients;         /* the event streams' cap (connections get
                                   some room beyond it for the 503) */
    const char *token;          /* publishing needs "Bearer <token>"; NULL
                                   or "" = no token */
    const char *const *origins; /* CORS: allowed origins ("*" = any) */
    size_t norigins;
    evs_hub_pub *pub;           /* borrowed */
    evs_hub_events *events;     /* borrowed */
    evs_hub_render_fn metrics;  /* Prometheus text for /metrics */
    evs_hub_render_fn health;   /* JSON for /health; NULL = "ok" as text */
    void *metrics_user;         /* passed to both */
} evs_hub_http_opts;

/* Counters of the HTTP front (a snapshot). */
typedef struct evs_hub_http_stats {
    uint64_t connections; /* TCP connections open now */
    uint64_t requests;    /* requests answered */
    uint64_t status[6];   /* answers by class: [2] 2xx ... [5] 5xx */
    uint64_t published;   /* events published over /publish */
    uint64_t unauthorized;/* publishes answered 401 */
    uint64_t too_large;   /* publishes answered 413 */
} evs_hub_http_stats;

/*
 * Start serving. Writes the base URL ("http://127.0.0.1:8080",
 * "http://[::1]:8080") to url[0..cap).
 * Returns 0, EVS_EINVAL (bad address) or EVS_ESYSTEM (cannot listen;
 * the reason is on stderr).
 * Ownership: copies the options, the origins and the token.
 */
int evs_hub_http_start(evs_hub_http **out, const evs_hub_http_opts *o, char *url, size_t cap);

/* Whether `bind` is an address evs_hub_http_start accepts. */
bool evs_hub_http_valid_bind(const char *bind);

/* Stop accepting connections; open ones go on. Idempotent. */
void evs_hub_http_quiesce(evs_hub_http *h);

/* Close every connection, stop the server's thread and free it. No
 * connection may be suspended (events: stop, then wait). Accepts NULL. */
void evs_hub_http_stop(evs_hub_http *h);

void evs_hub_http_stats_get(evs_hub_http *h, evs_hub_http_stats *out);

/* ------------------------------------------------------------------ */
/* feed.c                                                              */

typedef struct evs_hub_feed evs_hub_feed;

/* Start the demo publisher: a few sample events a second on demo.*
 * subjects. Returns 0, EVS_ENOMEM or EVS_ESYSTEM. */
int evs_hub_feed_demo(evs_hub_feed **out, evs_hub_pub *p);

/*
 * Start reading lines from `fd`: each line that is a JSON object with a
 * "topic", "type" or "data" member is published as that event (a string
 * data as text, any other JSON value as JSON), any other line as text
 * data to `topic`. Returns 0, EVS_ENOMEM or EVS_ESYSTEM.
 * Ownership: copies `topic`; `fd` stays the caller's.
 */
int evs_hub_feed_lines(evs_hub_feed **out, evs_hub_pub *p, int fd, const char *topic);

/* Stop the feed's thread, wait for it and free the feed. Accepts NULL. */
void evs_hub_feed_stop(evs_hub_feed *f);

#endif /* EVS_HUB_H */
