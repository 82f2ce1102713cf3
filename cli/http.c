/*
 * The hub's HTTP front, on libmicrohttpd: one internal polling thread
 * (epoll) serves every connection; event streams are suspended while
 * they have nothing to send (events.c), so no thread is held per client.
 *
 *   GET  /              the page (page.h)
 *   GET  /events        an event stream (events.c)
 *   POST /publish       publish the body as one event
 *   GET  /health        200 "ok" (with a NATS bridge: JSON, its state)
 *   GET  /metrics       Prometheus text (serve.c renders it)
 *   GET  /types         the event type names seen, a JSON array (the page
 *                       polls it)
 *   OPTIONS /publish, /events   CORS preflight
 *
 * POST /publish checks what it can from the headers (token, topic, type,
 * Content-Length) before any body arrives. A request refused there is
 * answered at once when no body is coming (no body, or the client waits
 * for "100 Continue", which is then never sent) or when the declared
 * body is absurdly large; otherwise its body is read and dropped, and
 * the answer sent after it, so the client reads it rather than a reset
 * connection. The body is kept only up to EVS_HUB_MAX_BODY: past it the
 * request is answered 413, whatever the body's length or encoding.
 *
 * A complete publish is handed to a job thread (jobs.c, publish_job)
 * with its connection suspended, since it may wait for room in the
 * stream and validates JSON; the job resumes the connection and the
 * access handler, called again, answers. A resumed GET /events is
 * opened the same way (events.c).
 *
 * Threads: every callback here runs on libmicrohttpd's thread (the
 * request-completed one also inside MHD_stop_daemon); publish_job on a
 * job thread, touching only its request's state until its last act,
 * MHD_resume_connection. The counters are atomics.
 */
#include "hub.h"

#include "cli.h"
#include "page.h"

#include <jansson.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* Connections beyond the event streams' cap: room for publishers and
 * for answering 503 to the streams past it. */
#define EXTRA_CONNECTIONS 256
/* A connection with no progress this long (seconds) is closed: a client
 * that stopped reading its stream, or sends a request at a trickle.
 * Suspended (idle) streams do not time out; their heartbeats resume them. */
#define CONN_TIMEOUT_S 30
/* Each connection's memory pool: the request's headers (so at most
 * about this much of them: more is answered 431), then the buffer
 * libmicrohttpd writes the stream from. Every connection touches all of
 * it, so it is most of what an idle client costs; 8 KiB (nginx's
 * default for large headers) keeps that near 12 KiB. */
#define CONN_MEMORY (8 * 1024)
/* A refused publish whose declared body is larger than this is answered
 * at once (the connection then closes) instead of being read first. */
#define DRAIN_MAX ((uint64_t)16 << 20)
#define MAX_ORIGINS 32
/* Threads that publish: a publish may wait PUBLISH_BLOCK_MS (serve.c)
 * for room, so a few, that one full stream does not queue every
 * publisher behind one wait. */
#define PUBLISH_THREADS 4

struct evs_hub_http {
    struct MHD_Daemon *d;
    MHD_socket listener;      /* taken back by quiesce; closed by stop */
    char *token;              /* NULL = publishing is open */
    char *origins[MAX_ORIGINS];
    size_t norigins;
    bool any_origin;          /* "*" was listed */
    evs_hub_pub *pub;
    evs_hub_events *events;
    evs_hub_jobs *jobs;       /* runs the publishes (publish_job) */
    evs_hub_render_fn metrics, health;
    void *metrics_user;
    atomic_uint_fast64_t connections, requests, published, unauthorized, too_large;
    atomic_uint_fast64_t status[6];
};

/* What *req points to between the access handler's calls: &not_publish
 * (a plain request), or a state whose first member is its kind. */
enum req_kind { REQ_PUBLISH = 1, REQ_EVENTS };

/* *req of a request other than a publish, between the first call and
 * the last. */
static char not_publish;

/* A GET /events that resumes: its open runs as a job (events.c). */
struct events_req {
    enum req_kind kind;  /* REQ_EVENTS */
    evs_hub_opening *op; /* NULL once finished */
};

/* A POST /publish in progress: the access handler's per-request state.
 * Once the body is in, the publish itself is a job (publish_job) with
 * the connection suspended: it may wait for room in the stream, and
 * validating JSON costs time; the HTTP thread meanwhile serves others. */
struct publish {
    enum req_kind kind;  /* REQ_PUBLISH */
    struct evs_hub_job job;
    evs_hub_http *h;
    struct MHD_Connection *mc;
    const char *topic, *type; /* the query's, valid while the connection is */
    bool done;           /* the job ran: rc and id are its result */
    int rc;
    uint64_t id;
    unsigned status;     /* the refusal decided so far; 0 = none */
    const char *msg;     /* its reason */
    evs_content content;
    evs_buf body;
};

/* ------------------------------------------------------------------ */
/* Answers                                                             */

/* Access-Control-Allow-Origin for listed origins only; Vary: Origin
 * whenever the answer depends on the origin. */
static bool add_cors(evs_hub_http *h, struct MHD_Connection *mc, struct MHD_Response *r)
{
    const char *origin = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, "Origin");
    if (h->norigins == 0 || origin == NULL)
        return false;
    if (h->any_origin) {
        MHD_add_response_header(r, "Access-Control-Allow-Origin", "*");
        return true;
    }
    MHD_add_response_header(r, "Vary", "Origin");
    for (size_t i = 0; i < h->norigins; i++) {
        if (strcmp(h->origins[i], origin) == 0) {
            MHD_add_response_header(r, "Access-Control-Allow-Origin", origin);
            return true;
        }
    }
    return false;
}

static enum MHD_Result queue(evs_hub_http *h, struct MHD_Connection *mc, unsigned status,
                             struct MHD_Response *r)
{
    atomic_fetch_add(&h->requests, 1);
    if (status / 100 < 6)
        atomic_fetch_add(&h->status[status / 100], 1);
    enum MHD_Result ok = MHD_queue_response(mc, status, r);
    MHD_destroy_response(r); /* the connection keeps its own reference */
    return ok;
}

/* Answer with a copy of `len` bytes of `type`; CORS headers if `cors`. */
static enum MHD_Result reply(evs_hub_http *h, struct MHD_Connection *mc, unsigned status,
                             const char *type, const char *body, size_t len, bool cors)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (r == NULL)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (status == MHD_HTTP_UNAUTHORIZED)
        MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"evstream\"");
    if (status == MHD_HTTP_SERVICE_UNAVAILABLE)
        MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    if (cors)
        add_cors(h, mc, r);
    return queue(h, mc, status, r);
}

/* {"<key>":"<value>"} and a newline (for people reading curl's
 * output), with JSON escaping; NULL when out of memory. */
static char *json_pair(const char *key, const char *value)
{
    json_t *o = json_pack("{s:s}", key, value);
    char *text = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    size_t n = text != NULL ? strlen(text) : 0;
    char *line = text != NULL ? realloc(text, n + 2) : NULL;
    if (line == NULL) {
        free(text);
        return NULL;
    }
    memcpy(line + n, "\n", 2);
    return line;
}

static enum MHD_Result reply_json(evs_hub_http *h, struct MHD_Connection *mc, unsigned status,
                                  const char *key, const char *value, bool cors)
{
    char *text = json_pair(key, value);
    if (text == NULL)
        return MHD_NO;
    enum MHD_Result ok = reply(h, mc, status, "application/json", text, strlen(text), cors);
    free(text);
    return ok;
}

static enum MHD_Result reply_error(evs_hub_http *h, struct MHD_Connection *mc, unsigned status,
                                   const char *msg, bool cors)
{
    return reply_json(h, mc, status, "error", msg, cors);
}

static enum MHD_Result reply_buf(evs_hub_http *h, struct MHD_Connection *mc, const char *type,
                                 int rc, evs_buf *b)
{
    enum MHD_Result ok = rc == 0 ? reply(h, mc, MHD_HTTP_OK, type, b->data ? b->data : "",
                                         b->len, false)
                                 : reply_error(h, mc, MHD_HTTP_INTERNAL_SERVER_ERROR,
                                               "out of memory", false);
    evs_buf_free(b);
    return ok;
}

/* ------------------------------------------------------------------ */
/* CORS preflight                                                      */

static enum MHD_Result preflight(evs_hub_http *h, struct MHD_Connection *mc, const char *methods,
                                 const char *headers)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    if (r == NULL)
        return MHD_NO;
    if (!add_cors(h, mc, r)) {
        MHD_destroy_response(r);
        return reply_error(h, mc, MHD_HTTP_FORBIDDEN, "origin not allowed", false);
    }
    MHD_add_response_header(r, "Access-Control-Allow-Methods", methods);
    MHD_add_response_header(r, "Access-Control-Allow-Headers", headers);
    MHD_add_response_header(r, "Access-Control-Max-Age", "600");
    return queue(h, mc, MHD_HTTP_NO_CONTENT, r);
}

/* ------------------------------------------------------------------ */
/* POST /publish                                                       */

/* The body's content from its Content-Type's media type. */
static evs_content content_of(struct MHD_Connection *mc)
{
    const char *ct = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    if (ct == NULL)
        return EVS_CONTENT_TEXT;
    size_t n = strcspn(ct, "; \t");
    if ((n == 16 && strncasecmp(ct, "application/json", n) == 0) ||
        (n > 5 && strncasecmp(ct + n - 5, "+json", 5) == 0))
        return EVS_CONTENT_JSON;
    if (n == 24 && strncasecmp(ct, "application/octet-stream", n) == 0)
        return EVS_CONTENT_BINARY;
    if ((n == 19 && strncasecmp(ct, "application/msgpack", n) == 0) ||
        (n == 21 && strncasecmp(ct, "application/x-msgpack", n) == 0))
        return EVS_CONTENT_MSGPACK;
    return EVS_CONTENT_TEXT;
}

static bool authorized(evs_hub_http *h, struct MHD_Connection *mc)
{
    if (h->token == NULL)
        return true;
    const char *auth = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (auth == NULL || strncasecmp(auth, "Bearer ", 7) != 0)
        return false;
    return evs_cli_secret_eq(auth + 7, strlen(auth + 7), h->token);
}

/* A query parameter with its length; NULL when absent. A parameter
 * without a value ("?topic") reads as "". */
static const char *arg_n(struct MHD_Connection *mc, const char *key, size_t *len)
{
    const char *v = NULL;
    *len = 0;
    if (MHD_lookup_connection_value_n(mc, MHD_GET_ARGUMENT_KIND, key, strlen(key), &v, len) !=
        MHD_YES)
        return NULL;
    return v != NULL ? v : "";
}

/* What the headers alone say against the request: 0 or a status. */
static unsigned check_publish(evs_hub_http *h, struct MHD_Connection *mc, uint64_t clen,
                              const char **msg)
{
    size_t tl, yl;
    const char *topic = arg_n(mc, "topic", &tl);
    const char *type = arg_n(mc, "type", &yl);
    if (!authorized(h, mc)) {
        atomic_fetch_add(&h->unauthorized, 1);
        *msg = "missing or wrong bearer token";
        return MHD_HTTP_UNAUTHORIZED;
    }
    if (topic == NULL || tl == 0) {
        *msg = "missing topic parameter";
        return MHD_HTTP_BAD_REQUEST;
    }
    if (strlen(topic) != tl) {
        *msg = "topic contains NUL";
        return MHD_HTTP_BAD_REQUEST;
    }
    if (type != NULL && (yl == 0 || strlen(type) != yl || strpbrk(type, "\r\n") != NULL)) {
        *msg = "type must be 1 or more bytes without CR, LF or NUL";
        return MHD_HTTP_BAD_REQUEST;
    }
    if (clen > EVS_HUB_MAX_BODY) {
        atomic_fetch_add(&h->too_large, 1);
        *msg = "body over 1 MiB";
        return MHD_HTTP_CONTENT_TOO_LARGE;
    }
    return 0;
}

/* Is a refused request to be answered now rather than after its body? */
static bool answer_now(struct MHD_Connection *mc, bool has_len, uint64_t clen)
{
    const char *expect = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT);
    const char *te =
        MHD_lookup_connection_value(mc, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING);
    bool chunked = te != NULL && strcasestr(te, "chunked") != NULL;
    bool body = chunked || (has_len && clen > 0);
    return !body || (expect != NULL && strcasecmp(expect, "100-continue") == 0) ||
           clen > DRAIN_MAX;
}

/* The first call of a POST /publish: the headers are in. */
static enum MHD_Result publish_begin(evs_hub_http *h, struct MHD_Connection *mc, void **req)
{
    const char *cl = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    uint64_t clen = 0;
    bool has_len = cl != NULL && evs_cli_uint(cl, 0, UINT64_MAX, &clen) == 0;
    const char *msg = NULL;
    unsigned status = check_publish(h, mc, clen, &msg);
    if (status != 0 && answer_now(mc, has_len, clen))
        return reply_error(h, mc, status, msg, true);
    struct publish *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return MHD_NO;
    p->kind = REQ_PUBLISH;
    p->status = status;
    p->msg = msg;
    p->content = content_of(mc);
    if (status == 0 && has_len && clen > 0 && evs_buf_reserve(&p->body, (size_t)clen) != 0) {
        p->status = MHD_HTTP_INTERNAL_SERVER_ERROR;
        p->msg = "out of memory";
    }
    *req = p;
    return MHD_YES;
}

/* A part of the body: keep it while under the limit, else drop it. */
static void publish_data(evs_hub_http *h, struct publish *p, const char *data, size_t n)
{
    if (p->status != 0)
        return;
    if (n > EVS_HUB_MAX_BODY - p->body.len) {
        atomic_fetch_add(&h->too_large, 1);
        p->status = MHD_HTTP_CONTENT_TOO_LARGE;
        p->msg = "body over 1 MiB";
        evs_buf_free(&p->body);
    } else if (evs_buf_append(&p->body, data, n) != 0) {
        p->status = MHD_HTTP_INTERNAL_SERVER_ERROR;
        p->msg = "out of memory";
        evs_buf_free(&p->body);
    }
}

static unsigned publish_error(int rc, const char **msg)
{
    switch (rc) {
    case EVS_EINVAL:
        *msg = "invalid topic (a subject: tokens separated by '.', no wildcards) or type";
        return MHD_HTTP_BAD_REQUEST;
    case EVS_ETOOBIG:
        *msg = "topic or type too long";
        return MHD_HTTP_BAD_REQUEST;
    case EVS_EBADMSG:
        *msg = "body does not parse as its Content-Type says";
        return MHD_HTTP_BAD_REQUEST;
    case EVS_HUB_EJSONCOST:
        *msg = "JSON body too complex: validating it would take over 16 MiB";
        return MHD_HTTP_CONTENT_TOO_LARGE;
    case EVS_ETIMEDOUT:
        *msg = "busy: the stream is full";
        return MHD_HTTP_SERVICE_UNAVAILABLE;
    case EVS_EFULL: /* the hub's stream blocks; only the bridge says EFULL */
        *msg = "busy: the queue to NATS is full";
        return MHD_HTTP_SERVICE_UNAVAILABLE;
    case EVS_ECLOSED:
        *msg = "shutting down";
        return MHD_HTTP_SERVICE_UNAVAILABLE;
    default:
        *msg = evs_strerror(rc);
        return MHD_HTTP_INTERNAL_SERVER_ERROR;
    }
}

/* The publish, on a job thread; resumes the connection as its last act. */
static void publish_job(struct evs_hub_job *job)
{
    struct publish *p = (struct publish *)((char *)job - offsetof(struct publish, job));
    p->rc = evs_hub_pub_send(p->h->pub, p->topic, p->type, p->body.data, p->body.len, p->content,
                             &p->id);
    p->done = true;
    MHD_resume_connection(p->mc);
}

/* The last call: the whole body is in. The first time, hand the publish
 * to a job; the call after the job resumed the connection answers. */
static enum MHD_Result publish_end(evs_hub_http *h, struct MHD_Connection *mc, struct publish *p)
{
    if (p->status != 0)
        return reply_error(h, mc, p->status, p->msg, true);
    if (!p->done) {
        size_t tl, yl;
        p->topic = arg_n(mc, "topic", &tl);
        p->type = arg_n(mc, "type", &yl);
        p->h = h;
        p->mc = mc;
        p->job.fn = publish_job;
        MHD_suspend_connection(mc);
        if (evs_hub_jobs_submit(h->jobs, &p->job))
            return MHD_YES;
        MHD_resume_connection(mc);
        return reply_error(h, mc, MHD_HTTP_SERVICE_UNAVAILABLE, "shutting down", true);
    }
    int rc = p->rc;
    uint64_t id = p->id;
    if (rc != 0) {
        const char *msg;
        unsigned status = publish_error(rc, &msg);
        return reply_error(h, mc, status, msg, true);
    }
    atomic_fetch_add(&h->published, 1);
    if (id == 0) { /* durable mode: queued; JetStream's sequence will be its id */
        static const char queued[] = "{\"id\":null,\"queued\":true}\n";
        return reply(h, mc, MHD_HTTP_ACCEPTED, "application/json", queued, sizeof queued - 1,
                     true);
    }
    char ids[24];
    snprintf(ids, sizeof ids, "%llu", (unsigned long long)id);
    return reply_json(h, mc, MHD_HTTP_ACCEPTED, "id", ids, true);
}

/* ------------------------------------------------------------------ */
/* Routing                                                             */

/* GET /events; called again with *req an events_req once a resume's
 * open is done. */
static enum MHD_Result events(evs_hub_http *h, struct MHD_Connection *mc, void **req)
{
    struct MHD_Response *r = NULL;
    const char *msg = NULL;
    unsigned status;
    if (*req != &not_publish) {
        struct events_req *er = *req;
        status = evs_hub_events_finish(er->op, &r, &msg);
        er->op = NULL;
    } else {
        struct events_req *er = malloc(sizeof(*er));
        if (er == NULL)
            return MHD_NO;
        er->kind = REQ_EVENTS;
        er->op = NULL;
        status = evs_hub_events_open(h->events, mc, &r, &msg, &er->op);
        if (status == 0) { /* suspended until the open is done */
            *req = er;
            return MHD_YES;
        }
        free(er);
    }
    if (status != MHD_HTTP_OK)
        return reply_error(h, mc, status, msg, true);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(r, "X-Accel-Buffering", "no");
    add_cors(h, mc, r);
    return queue(h, mc, MHD_HTTP_OK, r);
}

static enum MHD_Result wrong_method(evs_hub_http *h, struct MHD_Connection *mc, const char *allow)
{
    char *text = json_pair("error", "method not allowed");
    struct MHD_Response *r =
        text ? MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_COPY) : NULL;
    free(text);
    if (r == NULL)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
    return queue(h, mc, MHD_HTTP_METHOD_NOT_ALLOWED, r);
}

/* GET or HEAD of a plain resource. */
static enum MHD_Result resource(evs_hub_http *h, struct MHD_Connection *mc, const char *url)
{
    evs_buf b = {0};
    if (strcmp(url, "/") == 0)
        return reply(h, mc, MHD_HTTP_OK, "text/html; charset=utf-8", evs_hub_page,
                     sizeof evs_hub_page - 1, false);
    if (strcmp(url, "/health") == 0 && h->health != NULL)
        return reply_buf(h, mc, "application/json", h->health(h->metrics_user, h, &b), &b);
    if (strcmp(url, "/health") == 0)
        return reply(h, mc, MHD_HTTP_OK, "text/plain; charset=utf-8", "ok\n", 3, false);
    if (strcmp(url, "/metrics") == 0)
        return reply_buf(h, mc, "text/plain; version=0.0.4; charset=utf-8",
                         h->metrics(h->metrics_user, h, &b), &b);
    if (strcmp(url, "/types") == 0)
        return reply_buf(h, mc, "application/json", evs_hub_pub_types_json(h->pub, &b), &b);
    return reply_error(h, mc, MHD_HTTP_NOT_FOUND,
                       "no such resource (try /, /events, /publish, /health, /metrics)", false);
}

/* Everything but POST /publish. */
static enum MHD_Result route(evs_hub_http *h, struct MHD_Connection *mc, const char *url,
                             const char *method, void **req)
{
    bool get = strcmp(method, MHD_HTTP_METHOD_GET) == 0;
    bool head = strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
    bool options = strcmp(method, MHD_HTTP_METHOD_OPTIONS) == 0;
    if (strcmp(url, "/publish") == 0) {
        if (options)
            return preflight(h, mc, "POST, OPTIONS", "Authorization, Content-Type");
        return wrong_method(h, mc, "POST, OPTIONS");
    }
    if (strcmp(url, "/events") == 0) {
        if (get)
            return events(h, mc, req);
        if (options)
            return preflight(h, mc, "GET, OPTIONS", "Last-Event-ID, Cache-Control");
        return wrong_method(h, mc, "GET, OPTIONS");
    }
    if (!get && !head)
        return wrong_method(h, mc, "GET, HEAD");
    return resource(h, mc, url);
}


/* libmicrohttpd's access handler: called once the headers are in, then
 * for each part of the body, then once it is all in. A publish keeps
 * its state in *req meanwhile; anything else is answered at the last
 * call (an answer before it would make libmicrohttpd close the
 * connection instead of keeping it alive), its body ignored. */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *mc, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_size, void **req)
{
    evs_hub_http *h = cls;
    (void)version;
    if (*req == NULL) {
        if (strcmp(url, "/publish") == 0 && strcmp(method, MHD_HTTP_METHOD_POST) == 0)
            return publish_begin(h, mc, req);
        *req = &not_publish;
        return MHD_YES;
    }
    if (*req == &not_publish) {
        if (*upload_size > 0) {
            *upload_size = 0;
            return MHD_YES;
        }
        return route(h, mc, url, method, req);
    }
    if (*(enum req_kind *)*req == REQ_EVENTS)
        return events(h, mc, req);
    struct publish *p = *req;
    if (*upload_size > 0) {
        publish_data(h, p, upload_data, *upload_size);
        *upload_size = 0;
        return MHD_YES;
    }
    return publish_end(h, mc, p);
}

static void on_completed(void *cls, struct MHD_Connection *mc, void **req,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)mc;
    (void)toe;
    if (*req == NULL || *req == &not_publish)
        return;
    if (*(enum req_kind *)*req == REQ_EVENTS) {
        struct events_req *er = *req;
        evs_hub_events_abandon(er->op); /* NULL once finished */
        free(er);
    } else {
        struct publish *p = *req;
        evs_buf_free(&p->body);
        free(p);
    }
    *req = NULL;
}

static void on_connection(void *cls, struct MHD_Connection *mc, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    evs_hub_http *h = cls;
    (void)mc;
    (void)socket_context;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED)
        atomic_fetch_add(&h->connections, 1);
    else
        atomic_fetch_sub(&h->connections, 1);
}

/* ------------------------------------------------------------------ */
/* Start and stop                                                      */

/* The listening address from `bind` (IPv4, or IPv6 with or without
 * brackets) and its text for the URL. */
static int parse_bind(const char *bind, unsigned port, struct sockaddr_storage *ss, char *host,
                      size_t cap)
{
    char tmp[INET6_ADDRSTRLEN + 2];
    size_t n = strlen(bind);
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
    if (inet_pton(AF_INET, bind, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        snprintf(host, cap, "%s", bind);
        return 0;
    }
    if (n >= 2 && bind[0] == '[' && bind[n - 1] == ']' && n - 2 < sizeof tmp) {
        memcpy(tmp, bind + 1, n - 2);
        tmp[n - 2] = '\0';
        bind = tmp;
    }
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET6, bind, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        snprintf(host, cap, "[%s]", bind);
        return 0;
    }
    return EVS_EINVAL;
}

static int copy_opts(evs_hub_http *h, const evs_hub_http_opts *o)
{
    if (o->norigins > MAX_ORIGINS)
        return EVS_EINVAL;
    if (o->token != NULL && o->token[0] != '\0' && (h->token = strdup(o->token)) == NULL)
        return EVS_ENOMEM;
    for (size_t i = 0; i < o->norigins; i++) {
        if ((h->origins[i] = strdup(o->origins[i])) == NULL)
            return EVS_ENOMEM;
        h->norigins++;
        h->any_origin |= strcmp(o->origins[i], "*") == 0;
    }
    h->pub = o->pub;
    h->events = o->events;
    h->metrics = o->metrics;
    h->health = o->health;
    h->metrics_user = o->metrics_user;
    return 0;
}

static void http_free(evs_hub_http *h)
{
    evs_hub_jobs_destroy(h->jobs);
    for (size_t i = 0; i < h->norigins; i++)
        free(h->origins[i]);
    free(h->token);
    free(h);
}

bool evs_hub_http_valid_bind(const char *bind)
{
    struct sockaddr_storage ss;
    char host[128];
    return parse_bind(bind, 0, &ss, host, sizeof host) == 0;
}

int evs_hub_http_start(evs_hub_http **out, const evs_hub_http_opts *o, char *url, size_t cap)
{
    struct sockaddr_storage ss;
    char host[128];
    *out = NULL;
    if (o->port > 65535 || parse_bind(o->bind, o->port, &ss, host, sizeof host) != 0)
        return EVS_EINVAL;
    evs_hub_http *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return EVS_ENOMEM;
    h->listener = MHD_INVALID_SOCKET;
    int rc = copy_opts(h, o);
    if (rc == 0)
        rc = evs_hub_jobs_create(&h->jobs, PUBLISH_THREADS);
    if (rc != 0) {
        http_free(h);
        return rc;
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                     (ss.ss_family == AF_INET6 ? MHD_USE_IPv6 : 0);
    /* No MHD_USE_ERROR_LOG: it reports every client that goes away, the
     * normal end of an event stream. */
    errno = 0;
    h->d = MHD_start_daemon(flags, (uint16_t)o->port, NULL, NULL, on_request, h,
                            MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                            MHD_OPTION_CONNECTION_LIMIT,
                            (unsigned)(o->max_clients + EXTRA_CONNECTIONS),
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)CONN_TIMEOUT_S,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONN_MEMORY,
                            MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024u,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
                            MHD_OPTION_NOTIFY_CONNECTION, on_connection, h, MHD_OPTION_END);
    const union MHD_DaemonInfo *info =
        h->d != NULL ? MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT) : NULL;
    if (info == NULL) {
        fprintf(stderr, "evstream serve: cannot listen on %s:%u%s%s\n", host, o->port,
                errno ? ": " : "", errno ? strerror(errno) : "");
        if (h->d != NULL)
            MHD_stop_daemon(h->d);
        http_free(h);
        return EVS_ESYSTEM;
    }
    snprintf(url, cap, "http://%s:%u", host, (unsigned)info->port);
    *out = h;
    return 0;
}

void evs_hub_http_quiesce(evs_hub_http *h)
{
    if (h != NULL && h->listener == MHD_INVALID_SOCKET)
        h->listener = MHD_quiesce_daemon(h->d);
}

void evs_hub_http_stop(evs_hub_http *h)
{
    if (h == NULL)
        return;
    /* Publishes in progress resume their connections: none is suspended
     * when the daemon stops. Later ones are answered 503. */
    evs_hub_jobs_stop(h->jobs);
    MHD_stop_daemon(h->d);
    /* Only now: libmicrohttpd's thread may use it until it stops. */
    if (h->listener != MHD_INVALID_SOCKET)
        close(h->listener);
    http_free(h);
}

void evs_hub_http_stats_get(evs_hub_http *h, evs_hub_http_stats *out)
{
    out->connections = atomic_load(&h->connections);
    out->requests = atomic_load(&h->requests);
    for (int i = 0; i < 6; i++)
        out->status[i] = atomic_load(&h->status[i]);
    out->published = atomic_load(&h->published);
    out->unauthorized = atomic_load(&h->unauthorized);
    out->too_large = atomic_load(&h->too_large);
}
