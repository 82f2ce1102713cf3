/*
 * GET /events: one server-sent event stream per client, with no thread
 * per client.
 *
 * Each stream is a push-mode client of the library's SSE layer
 * (evs_sse_connect with a push callback): the layer encodes frames and
 * pushes them, on the stream's dispatcher or the heartbeat thread (or
 * a job thread while connect replays history), into this stream's
 * byte queue. libmicrohttpd's one polling thread drains the queue from
 * the response's content reader. With nothing queued the reader
 * suspends the connection (MHD then leaves it alone); the push that
 * queues the next bytes resumes it. Push mode rather than a readiness
 * descriptor per client: 10,000 clients then cost 10,000 descriptors,
 * not 20,000, and no watcher thread.
 *
 * Bounded memory: a client whose queue holds more than client_buffer
 * bytes when a frame arrives is too slow; it gets a final
 * "event: disconnect" / "slow consumer" frame after what is queued and
 * its push returns non-zero, so the layer sends it nothing more. (One
 * frame is always accepted into an empty queue, whatever its size.) The
 * replay of a resumed stream does not count (connect_client). A
 * client that stops reading altogether is closed by the server's
 * connection timeout. Stopping the server works the same way with
 * "server shutdown".
 *
 * A stream resumed less than a millisecond ago is not resumed again at
 * once: the waker thread does it a millisecond after the last time, so
 * that a burst leaves in one write per client (resume_soon).
 *
 * Locks, in order: set->lock (the list of streams and the counts), then
 * conn->mu (one stream's queue and flags), then set->wake_lock (the
 * waker's list) or libmicrohttpd's own (MHD_suspend_connection /
 * MHD_resume_connection are called holding conn->mu, so that a suspend
 * always precedes its resume and a resume has finished once conn->mu is
 * released). No lock is held while the library runs a callback of ours
 * except conn->mu by our own code.
 *
 * Lifetime: a stream (struct conn) is owned by its libmicrohttpd
 * response from evs_hub_events_open on; the response's free callback
 * unlinks it, disconnects its SSE client (which waits for a push in
 * progress) and frees it. A suspended connection is never freed by
 * libmicrohttpd, so a push that resumes one always finds it alive.
 */
#include "hub.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The response's own buffer (libmicrohttpd allocates and clears it for
 * every stream). A chunked stream, what HTTP/1.1 clients get, is read
 * straight into the connection's write buffer instead, so this only
 * bounds reads for HTTP/1.0 clients; small, as each idle client pays it
 * (measured: 16 KiB here cost 15 KiB more resident memory per client). */
#define BLOCK_SIZE 1024
/* A drained queue larger than this is freed, so that a burst does not
 * leave an idle client holding memory. */
#define KEEP_BYTES (16 * 1024)
/* A stream is resumed at most once per this long; what arrives in
 * between leaves in one write (resume_soon). 1 ms: invisible next to a
 * network's latency, and at 1,000 events a second or more to many
 * clients it turns one send per event into one per millisecond. */
#define COALESCE_NS (1000 * 1000)
/* Threads that open resumed streams (flush, history copy, replay): two,
 * so that one resume stuck behind a slow flush holds up no other. */
#define OPEN_THREADS 2

/* One /events stream. */
struct conn {
    evs_hub_events *set;
    struct MHD_Connection *mc;
    evs_sse_client *client;  /* set by open before the response exists */
    struct conn *prev, *next; /* set->lock */
    pthread_mutex_t mu;      /* guards what follows */
    char *buf;               /* bytes [off, len) wait to be sent */
    size_t off, len, cap;
    bool suspended;          /* the reader suspended it: whoever makes
                                bytes pending (or ends it) resumes it */
    bool ended;              /* the final frame is queued: nothing more */
    bool deferred;           /* on the waker's list: only the waker
                                resumes it (it stays suspended until then) */
    bool connecting;         /* evs_sse_connect is pushing the replay:
                                client_buffer does not apply */
    size_t replay_left;      /* bytes of the replay still queued: they
                                lead the queue and do not count against
                                client_buffer */
    int64_t resumed_ns;      /* when it was last resumed (CLOCK_MONOTONIC) */
    struct conn *wake_next;  /* the waker's list; set->wake_lock */
};

struct evs_hub_events {
    evs_sse *sse;                 /* borrowed */
    evs_hub_events_opts opts;
    evs_buf final_slow, final_shutdown; /* the last frames, made once */
    pthread_mutex_t lock;         /* guards the fields below */
    pthread_cond_t idle;          /* signalled when `open` drops to 0 */
    struct conn *conns;           /* linked streams */
    size_t open;                  /* streams reserved or linked */
    bool stopping;
    atomic_uint_fast64_t served, rejected, slow, bytes;
    evs_hub_jobs *jobs;           /* opens resumed streams (evs_hub_events_open) */
    /* The waker: resumes deferred streams (see resume_soon). */
    pthread_t waker;
    pthread_mutex_t wake_lock;    /* guards the four fields below; a leaf */
    pthread_cond_t wake_cond;     /* signalled when the list gets its first */
    struct conn *wake_head, *wake_tail;
    bool waker_running;           /* false: nobody defers, all resume now */
    bool waker_stop;
};

/* ------------------------------------------------------------------ */
/* The byte queue (conn->mu held)                                      */

static int queue_put(struct conn *k, const char *p, size_t n)
{
    if (k->off == k->len)
        k->off = k->len = 0;
    if (k->len + n > k->cap) {
        if (k->off > 0) { /* compact before growing */
            memmove(k->buf, k->buf + k->off, k->len - k->off);
            k->len -= k->off;
            k->off = 0;
        }
        if (k->len + n > k->cap) {
            size_t cap = k->cap ? k->cap : 512;
            while (cap < k->len + n)
                cap *= 2;
            char *nb = realloc(k->buf, cap);
            if (nb == NULL)
                return EVS_ENOMEM;
            k->buf = nb;
            k->cap = cap;
        }
    }
    memcpy(k->buf + k->len, p, n);
    k->len += n;
    return 0;
}

/* Queue the final frame (if the queue can take it) and end the stream. */
static void queue_end(struct conn *k, const evs_buf *final)
{
    if (!k->ended)
        (void)queue_put(k, final->data, final->len); /* no memory: end without it */
    k->ended = true;
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Resume a suspended connection now (conn->mu held). */
static void resume(struct conn *k, int64_t now)
{
    k->suspended = false;
    k->resumed_ns = now;
    MHD_resume_connection(k->mc);
}

/*
 * Bytes are pending for k (conn->mu held): get it resumed. At once if it
 * was last resumed at least COALESCE_NS ago (a quiet stream's next event
 * leaves without delay); otherwise the waker resumes it COALESCE_NS after
 * the last time, and whatever arrives meanwhile leaves in the same write.
 * Sending dominates the hub's CPU (one send per stream per wake), so a
 * burst of events to many clients costs one send per client per
 * COALESCE_NS rather than one per event. A deferred stream stays
 * suspended until the waker resumes it, so libmicrohttpd cannot free it
 * while it is on the list.
 */
static void resume_soon(evs_hub_events *e, struct conn *k)
{
    if (!k->suspended || k->deferred)
        return;
    int64_t now = now_ns();
    if (now - k->resumed_ns >= COALESCE_NS) {
        resume(k, now);
        return;
    }
    pthread_mutex_lock(&e->wake_lock);
    if (e->waker_running) {
        k->deferred = true;
        k->wake_next = NULL;
        if (e->wake_tail != NULL)
            e->wake_tail->wake_next = k;
        else
            pthread_cond_signal(&e->wake_cond);
        e->wake_tail = k;
        if (e->wake_head == NULL)
            e->wake_head = k;
    }
    pthread_mutex_unlock(&e->wake_lock);
    if (!k->deferred)
        resume(k, now); /* the waker has stopped */
}

/* The waker thread: resume each deferred stream when its time comes.
 * Runs until evs_hub_events_stop_waker, after emptying its list. */
static void *waker_main(void *arg)
{
    evs_hub_events *e = arg;
    pthread_mutex_lock(&e->wake_lock);
    for (;;) {
        while (e->wake_head == NULL && !e->waker_stop)
            pthread_cond_wait(&e->wake_cond, &e->wake_lock);
        struct conn *list = e->wake_head;
        if (list == NULL)
            break; /* stopping, and nothing left */
        e->wake_head = e->wake_tail = NULL;
        pthread_mutex_unlock(&e->wake_lock);
        /* In list order, which is the order of their last resumes. */
        for (struct conn *k = list, *next; k != NULL; k = next) {
            pthread_mutex_lock(&k->mu);
            next = k->wake_next;
            int64_t wait = k->resumed_ns + COALESCE_NS - now_ns();
            if (wait > 0) {
                pthread_mutex_unlock(&k->mu);
                struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)wait};
                nanosleep(&ts, NULL);
                pthread_mutex_lock(&k->mu);
            }
            k->deferred = false;
            resume(k, now_ns()); /* deferred streams are suspended */
            pthread_mutex_unlock(&k->mu);
        }
        pthread_mutex_lock(&e->wake_lock);
    }
    e->waker_running = false;
    pthread_mutex_unlock(&e->wake_lock);
    return NULL;
}

/* ------------------------------------------------------------------ */
/* The SSE layer's push callback                                       */

/*
 * Frames for this client: the dispatcher, the heartbeat thread, or the
 * HTTP thread inside evs_sse_connect (replay). One call at a time per
 * client (the layer's promise). Returns non-zero to be sent nothing more.
 */
static int on_frames(const char *frames, size_t len, void *user)
{
    struct conn *k = user;
    evs_hub_events *e = k->set;
    int r = 0;
    pthread_mutex_lock(&k->mu);
    if (k->ended) {
        r = 1;
    } else {
        /* Live bytes only: the replay leads the queue (replay_left). */
        size_t pending = k->len - k->off - k->replay_left;
        if ((!k->connecting && pending > 0 && pending + len > e->opts.client_buffer) ||
            queue_put(k, frames, len) != 0) {
            queue_end(k, &e->final_slow);
            atomic_fetch_add(&e->slow, 1);
            r = 1;
        }
        resume_soon(e, k);
    }
    pthread_mutex_unlock(&k->mu);
    return r;
}

/* ------------------------------------------------------------------ */
/* libmicrohttpd's callbacks for the response                          */

/* The content reader (the HTTP thread): what is queued, never a wait. */
static ssize_t read_frames(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct conn *k = cls;
    (void)pos;
    pthread_mutex_lock(&k->mu);
    size_t n = k->len - k->off;
    if (n > 0) {
        if (n > max)
            n = max;
        memcpy(buf, k->buf + k->off, n);
        k->off += n;
        k->replay_left -= n < k->replay_left ? n : k->replay_left;
        if (k->off == k->len) {
            k->off = k->len = 0;
            if (k->cap > KEEP_BYTES) {
                free(k->buf);
                k->buf = NULL;
                k->cap = 0;
            }
        }
        pthread_mutex_unlock(&k->mu);
        atomic_fetch_add(&k->set->bytes, n);
        return (ssize_t)n;
    }
    if (k->ended) {
        pthread_mutex_unlock(&k->mu);
        return MHD_CONTENT_READER_END_OF_STREAM;
    }
    /* Suspend under the lock: the push that queues the next bytes sees
     * `suspended` only once the suspension is real. Returning 0 without
     * suspending would make the HTTP thread spin. */
    MHD_suspend_connection(k->mc);
    k->suspended = true;
    pthread_mutex_unlock(&k->mu);
    return 0;
}

static void conn_free(struct conn *k)
{
    pthread_mutex_destroy(&k->mu);
    free(k->buf);
    free(k);
}

/* Release a reservation made by open (set->lock not held). */
static void release(evs_hub_events *e)
{
    pthread_mutex_lock(&e->lock);
    if (--e->open == 0)
        pthread_cond_broadcast(&e->idle);
    pthread_mutex_unlock(&e->lock);
}

/* The response is freed (the HTTP thread, or the stopping thread inside
 * MHD_stop_daemon): the client is gone. */
static void free_frames(void *cls)
{
    struct conn *k = cls;
    evs_hub_events *e = k->set;
    pthread_mutex_lock(&e->lock);
    if (k->prev != NULL)
        k->prev->next = k->next;
    else
        e->conns = k->next;
    if (k->next != NULL)
        k->next->prev = k->prev;
    pthread_mutex_unlock(&e->lock);
    /* After this no push for k runs: k may be freed. */
    int rc = evs_sse_disconnect(k->client);
    if (rc != 0)
        fprintf(stderr, "evstream serve: evs_sse_disconnect: %s\n", evs_strerror(rc));
    conn_free(k);
    release(e);
}

/* ------------------------------------------------------------------ */
/* Opening a stream                                                    */

struct query {
    const char *patterns[EVS_SSE_MAX_PATTERNS];
    size_t n;
    const char *error; /* the first problem found */
};

static enum MHD_Result collect_topic(void *cls, enum MHD_ValueKind kind, const char *key,
                                     size_t key_size, const char *value, size_t value_size)
{
    struct query *q = cls;
    (void)kind;
    if (key_size != 5 || memcmp(key, "topic", 5) != 0)
        return MHD_YES;
    if (value == NULL || value_size == 0)
        q->error = "empty topic pattern";
    else if (strlen(value) != value_size)
        q->error = "topic pattern contains NUL";
    else if (q->n == EVS_SSE_MAX_PATTERNS)
        q->error = "too many topic parameters (at most 64)";
    else
        q->patterns[q->n++] = value;
    return q->error == NULL ? MHD_YES : MHD_NO;
}

/* The id to resume after: the Last-Event-ID header when it is given
 * (a browser reconnects to the same URL, so the header is the newer
 * one), else the last_event_id parameter; NULL = live only. */
static const char *resume_id(struct MHD_Connection *mc)
{
    const char *h = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, "Last-Event-ID");
    if (h != NULL && h[0] != '\0')
        return h;
    const char *q = MHD_lookup_connection_value(mc, MHD_GET_ARGUMENT_KIND, "last_event_id");
    return q != NULL && q[0] != '\0' ? q : NULL;
}

/* An id this hub could have handed out: 1..20 digits, at most 2^64 - 1. */
static bool valid_id(const char *s)
{
    size_t n = strspn(s, "0123456789");
    if (n == 0 || s[n] != '\0' || n > 20)
        return false;
    return n < 20 || strcmp(s, "18446744073709551615") <= 0;
}

/* Reserve a place under the cap; 0 or the status to answer. */
static unsigned reserve(evs_hub_events *e, const char **msg)
{
    unsigned status = 0;
    pthread_mutex_lock(&e->lock);
    if (e->stopping) {
        status = MHD_HTTP_SERVICE_UNAVAILABLE;
        *msg = "shutting down";
    } else if (e->open >= e->opts.max_clients) {
        status = MHD_HTTP_SERVICE_UNAVAILABLE;
        *msg = "too many clients";
        atomic_fetch_add(&e->rejected, 1);
    } else {
        e->open++;
    }
    pthread_mutex_unlock(&e->lock);
    return status;
}

/* Put k on the list; if the server began stopping meanwhile, stop()
 * did not see it, so end it here. */
static void link_conn(evs_hub_events *e, struct conn *k)
{
    pthread_mutex_lock(&e->lock);
    k->next = e->conns;
    if (e->conns != NULL)
        e->conns->prev = k;
    e->conns = k;
    if (e->stopping) {
        pthread_mutex_lock(&k->mu);
        queue_end(k, &e->final_shutdown);
        pthread_mutex_unlock(&k->mu);
    }
    pthread_mutex_unlock(&e->lock);
}

static unsigned connect_error(int rc, const char **msg)
{
    switch (rc) {
    case EVS_EINVAL:
        *msg = "invalid topic pattern";
        return MHD_HTTP_BAD_REQUEST;
    case EVS_ECLOSED:
        *msg = "shutting down";
        return MHD_HTTP_SERVICE_UNAVAILABLE;
    default:
        fprintf(stderr, "evstream serve: evs_sse_connect: %s\n", evs_strerror(rc));
        *msg = "cannot open the stream";
        return MHD_HTTP_INTERNAL_SERVER_ERROR;
    }
}

/* A resumed stream being opened on a job thread (evs_hub_events_open
 * returned 0): the connection stays suspended until the job is done. */
struct evs_hub_opening {
    struct evs_hub_job job;   /* first: the job is the opening */
    evs_hub_events *e;
    struct MHD_Connection *mc;
    struct conn *k;           /* NULL once connect failed (freed) */
    struct query q;           /* point into the connection's memory, which
                                 lives while the connection does */
    const char *last;
    int rc;                   /* evs_sse_connect's */
};

/*
 * Connect k's client. The frames pushed before connect returns are the
 * replay (and the few live events merged into it): they are not held
 * against client_buffer (on_frames, `connecting`), and bytes the reader
 * sends first count against the replay before the live ones
 * (replay_left), so a resumed client that keeps up is never cut for its
 * replay. That queue is bounded by the history (--history events) plus
 * the SSE layer's mailbox. If the layer closed the client meanwhile (as
 * a slow consumer: its mailbox overflowed during the hand-off, and it
 * pushed its final frame; or the server is stopping), the stream ends
 * after what is queued: nothing else would end it.
 */
static int connect_client(evs_hub_events *e, struct conn *k, const struct query *q,
                          const char *last)
{
    evs_sse_client_opts co = {
        .patterns = q->n > 0 ? q->patterns : NULL,
        .npatterns = q->n,
        .last_event_id = last,
        .push = on_frames,
        .push_user = k,
    };
    k->connecting = true; /* nobody else sees k yet */
    int rc = evs_sse_connect(&k->client, e->sse, &co);
    if (rc != 0)
        return rc;
    evs_sse_client_stats cs;
    const char *reason = evs_sse_client_stats_get(k->client, &cs) == 0 ? cs.close_reason : NULL;
    pthread_mutex_lock(&k->mu);
    k->connecting = false;
    k->replay_left = k->len - k->off;
    if (reason != NULL && !k->ended) {
        if (strcmp(reason, "slow consumer") == 0) {
            k->ended = true; /* the layer pushed the final frame */
            atomic_fetch_add(&e->slow, 1);
        } else {
            queue_end(k, &e->final_shutdown);
        }
    }
    pthread_mutex_unlock(&k->mu);
    return 0;
}

static void open_job(struct evs_hub_job *job)
{
    struct evs_hub_opening *op = (struct evs_hub_opening *)job;
    op->rc = connect_client(op->e, op->k, &op->q, op->last);
    if (op->rc != 0) {
        conn_free(op->k);
        op->k = NULL;
        release(op->e);
    }
    /* The last touch: the HTTP thread then calls evs_hub_events_finish
     * (or _abandon) and frees op. */
    MHD_resume_connection(op->mc);
}

/* Make the response for a connected k, which it then owns. */
static unsigned respond(evs_hub_events *e, struct conn *k, struct MHD_Response **resp,
                        const char **msg)
{
    *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, BLOCK_SIZE, read_frames, k,
                                              free_frames);
    if (*resp == NULL) {
        evs_sse_disconnect(k->client);
        conn_free(k);
        release(e);
        *msg = "out of memory";
        return MHD_HTTP_INTERNAL_SERVER_ERROR;
    }
    link_conn(e, k); /* from here the response owns k */
    atomic_fetch_add(&e->served, 1);
    return MHD_HTTP_OK;
}

unsigned evs_hub_events_open(evs_hub_events *e, struct MHD_Connection *mc,
                             struct MHD_Response **resp, const char **msg,
                             evs_hub_opening **pending)
{
    struct query q = {.n = 0};
    *pending = NULL;
    MHD_get_connection_values_n(mc, MHD_GET_ARGUMENT_KIND, collect_topic, &q);
    if (q.error != NULL) {
        *msg = q.error;
        return MHD_HTTP_BAD_REQUEST;
    }
    const char *last = resume_id(mc);
    if (last != NULL && !valid_id(last)) {
        *msg = "Last-Event-ID must be an event id (decimal digits)";
        return MHD_HTTP_BAD_REQUEST;
    }
    unsigned status = reserve(e, msg);
    if (status != 0)
        return status;

    struct conn *k = calloc(1, sizeof(*k));
    struct evs_hub_opening *op = last != NULL ? calloc(1, sizeof(*op)) : NULL;
    if (k == NULL || (last != NULL && op == NULL)) {
        free(k);
        free(op);
        release(e);
        *msg = "out of memory";
        return MHD_HTTP_INTERNAL_SERVER_ERROR;
    }
    k->set = e;
    k->mc = mc;
    pthread_mutex_init(&k->mu, NULL);
    if (op != NULL) {
        /* A resume flushes the stream, copies its history and pushes the
         * replay: a job's work, not the HTTP thread's. */
        *op = (struct evs_hub_opening){
            .job = {.fn = open_job}, .e = e, .mc = mc, .k = k, .q = q, .last = last};
        MHD_suspend_connection(mc);
        if (evs_hub_jobs_submit(e->jobs, &op->job)) {
            *pending = op;
            return 0;
        }
        MHD_resume_connection(mc);
        free(op);
        conn_free(k);
        release(e);
        *msg = "shutting down";
        return MHD_HTTP_SERVICE_UNAVAILABLE;
    }
    int rc = connect_client(e, k, &q, NULL);
    if (rc != 0) {
        conn_free(k);
        release(e);
        return connect_error(rc, msg);
    }
    return respond(e, k, resp, msg);
}

unsigned evs_hub_events_finish(evs_hub_opening *op, struct MHD_Response **resp, const char **msg)
{
    evs_hub_events *e = op->e;
    struct conn *k = op->k;
    int rc = op->rc;
    free(op);
    if (k == NULL)
        return connect_error(rc, msg);
    return respond(e, k, resp, msg);
}

void evs_hub_events_abandon(evs_hub_opening *op)
{
    if (op == NULL)
        return;
    if (op->k != NULL) {
        evs_sse_disconnect(op->k->client);
        conn_free(op->k);
        release(op->e);
    }
    free(op);
}

/* ------------------------------------------------------------------ */
/* The set                                                             */

/* The last frame a stream gets: "event: disconnect", the reason as
 * data, no id (the client's last event id stays the last event's). */
static int render_final(evs_buf *out, const char *reason)
{
    evs_event *ev;
    int rc = evs_event_create(&ev, EVS_TYPE_DISCONNECT, NULL, reason, strlen(reason));
    if (rc != 0)
        return rc;
    evs_sse_opts so = {.omit_id = true};
    if ((rc = evs_event_set_content(ev, EVS_CONTENT_TEXT)) == 0)
        rc = evs_sse_encode_buf(ev, &so, out);
    evs_event_unref(ev);
    return rc;
}

int evs_hub_events_create(evs_hub_events **out, evs_sse *sse, const evs_hub_events_opts *o)
{
    *out = NULL;
    if (sse == NULL || o == NULL || o->max_clients == 0 || o->client_buffer == 0)
        return EVS_EINVAL;
    evs_hub_events *e = calloc(1, sizeof(*e));
    if (e == NULL)
        return EVS_ENOMEM;
    e->sse = sse;
    e->opts = *o;
    int rc = render_final(&e->final_slow, "slow consumer");
    if (rc == 0)
        rc = render_final(&e->final_shutdown, "server shutdown");
    if (rc != 0) {
        evs_buf_free(&e->final_slow);
        evs_buf_free(&e->final_shutdown);
        free(e);
        return rc;
    }
    pthread_mutex_init(&e->lock, NULL);
    pthread_cond_init(&e->idle, NULL);
    pthread_mutex_init(&e->wake_lock, NULL);
    pthread_cond_init(&e->wake_cond, NULL);
    e->waker_running = pthread_create(&e->waker, NULL, waker_main, e) == 0;
    if (!e->waker_running) {
        evs_hub_events_destroy(e);
        return EVS_ESYSTEM;
    }
    if ((rc = evs_hub_jobs_create(&e->jobs, OPEN_THREADS)) != 0) {
        evs_hub_events_destroy(e);
        return rc;
    }
    *out = e;
    return 0;
}

void evs_hub_events_stop(evs_hub_events *e)
{
    pthread_mutex_lock(&e->lock);
    e->stopping = true;
    for (struct conn *k = e->conns; k != NULL; k = k->next) {
        pthread_mutex_lock(&k->mu);
        queue_end(k, &e->final_shutdown);
        if (k->suspended && !k->deferred) /* a deferred one: the waker's */
            resume(k, now_ns());
        pthread_mutex_unlock(&k->mu);
    }
    pthread_mutex_unlock(&e->lock);
}

bool evs_hub_events_wait(evs_hub_events *e, int ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&e->lock);
    while (e->open != 0)
        if (pthread_cond_timedwait(&e->idle, &e->lock, &until) == ETIMEDOUT)
            break;
    bool done = e->open == 0;
    pthread_mutex_unlock(&e->lock);
    return done;
}

void evs_hub_events_stats_get(evs_hub_events *e, evs_hub_events_stats *out)
{
    pthread_mutex_lock(&e->lock);
    out->open = e->open;
    pthread_mutex_unlock(&e->lock);
    out->served = atomic_load(&e->served);
    out->rejected = atomic_load(&e->rejected);
    out->slow = atomic_load(&e->slow);
    out->bytes = atomic_load(&e->bytes);
}

void evs_hub_events_stop_waker(evs_hub_events *e)
{
    /* Opens in progress first: each resumes its connection when done. */
    evs_hub_jobs_stop(e->jobs);
    pthread_mutex_lock(&e->wake_lock);
    bool join = e->waker_running && !e->waker_stop;
    e->waker_stop = true;
    pthread_cond_signal(&e->wake_cond);
    pthread_mutex_unlock(&e->wake_lock);
    if (join)
        pthread_join(e->waker, NULL);
}

void evs_hub_events_destroy(evs_hub_events *e)
{
    if (e == NULL)
        return;
    evs_hub_events_stop_waker(e);
    evs_hub_jobs_destroy(e->jobs);
    pthread_cond_destroy(&e->wake_cond);
    pthread_mutex_destroy(&e->wake_lock);
    pthread_cond_destroy(&e->idle);
    pthread_mutex_destroy(&e->lock);
    evs_buf_free(&e->final_slow);
    evs_buf_free(&e->final_shutdown);
    free(e);
}
