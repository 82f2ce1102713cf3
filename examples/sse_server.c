/*
 * Server-sent events over HTTP with libmicrohttpd: GET /events?topic=P
 * (repeatable; none means ">") streams a TopicStream's events, resuming
 * from a Last-Event-ID header. A ticker thread publishes a price for each
 * symbol every 100 ms to "ticker.<SYM>" with data {"sym":..,"price":..}.
 *
 *   sse_server [--port N] [--seconds S]
 *
 * --port 0 (the default) picks a free port; --seconds 0 serves until
 * SIGINT or SIGTERM. With no arguments it serves for one second on a
 * free port (what `make examples` runs). To watch it:
 *
 *   sse_server --port 8080 --seconds 0 &
 *   curl -N 'http://127.0.0.1:8080/events?topic=ticker.ABC'
 *
 * No thread per client. MHD's one internal polling thread calls each
 * response's content reader, which takes whole frames with
 * evs_sse_read(..., 0) and never waits. With nothing to send it suspends
 * the connection (MHD then leaves it alone) and arms the client's
 * evs_sse_fd, one-shot, in an epoll set; one watcher thread resumes a
 * connection when its descriptor turns readable. (Returning 0 from a
 * content reader without suspending would make MHD's internal thread spin.)
 */
#include <evstream.h>

#include <microhttpd.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

struct server {
    evs_stream *stream;
    evs_sse *sse;
    int epfd;               /* the clients' descriptors, armed while suspended */
    int stopfd;             /* wakes the watcher to stop */
    atomic_bool ticker_stop;
    pthread_mutex_t mu;     /* guards the two counts below */
    pthread_cond_t changed;
    unsigned active;        /* /events responses not yet freed */
    unsigned suspended;     /* connections suspended and not yet resumed */
};

/* One /events response. */
struct conn {
    struct server *srv;
    struct MHD_Connection *mc;
    evs_sse_client *client;
    int fd;                 /* evs_sse_fd(client) */
    char *big;              /* a frame larger than MHD's buffer, being sent */
    size_t big_len, big_off;
};

static void count_change(struct server *srv, int dactive, int dsuspended)
{
    pthread_mutex_lock(&srv->mu);
    srv->active += (unsigned)dactive;
    srv->suspended += (unsigned)dsuspended;
    pthread_cond_broadcast(&srv->changed);
    pthread_mutex_unlock(&srv->mu);
}

/* MHD's content reader: whole frames, never a wait. */
static ssize_t read_frames(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct conn *k = cls;
    (void)pos;
    if (k->big == NULL) {
        int n = evs_sse_read(k->client, buf, max, 0);
        if (n > 0)
            return n;
        if (n == 0) {
            /* Suspend first, then arm: the watcher can only resume a
             * connection that is already suspended. A frame queued
             * since the read leaves the descriptor readable, so the
             * watcher fires at once. */
            struct epoll_event e = {.events = EPOLLIN | EPOLLONESHOT, .data.ptr = k};
            count_change(k->srv, 0, 1);
            MHD_suspend_connection(k->mc);
            if (epoll_ctl(k->srv->epfd, EPOLL_CTL_MOD, k->fd, &e) != 0) {
                perror("epoll_ctl");
                MHD_resume_connection(k->mc);
                count_change(k->srv, 0, -1);
                return MHD_CONTENT_READER_END_WITH_ERROR;
            }
            return 0;
        }
        if (n == EVS_ECLOSED) /* after the final "event: disconnect" frame */
            return MHD_CONTENT_READER_END_OF_STREAM;
        if (n != EVS_ETOOBIG) {
            fprintf(stderr, "evs_sse_read: %s\n", evs_strerror(n));
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        /* The next frame alone is larger than MHD's buffer: read it
         * whole into our own and hand it over in pieces. */
        size_t need = evs_sse_next_size(k->client);
        if ((k->big = malloc(need)) == NULL)
            return MHD_CONTENT_READER_END_WITH_ERROR;
        n = evs_sse_read(k->client, k->big, need, 0);
        if (n <= 0) {
            fprintf(stderr, "evs_sse_read: %s\n", evs_strerror(n));
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        k->big_len = (size_t)n;
        k->big_off = 0;
    }
    size_t len = k->big_len - k->big_off < max ? k->big_len - k->big_off : max;
    memcpy(buf, k->big + k->big_off, len);
    if ((k->big_off += len) == k->big_len) {
        free(k->big);
        k->big = NULL;
    }
    return (ssize_t)len;
}

/* MHD frees the response: the connection is done with this client. */
static void free_conn(void *cls)
{
    struct conn *k = cls;
    struct server *srv = k->srv;
    /* Out of the loop before evs_sse_disconnect closes the descriptor. */
    if (epoll_ctl(srv->epfd, EPOLL_CTL_DEL, k->fd, NULL) != 0)
        perror("epoll_ctl");
    int rc = evs_sse_disconnect(k->client);
    if (rc != 0)
        fprintf(stderr, "evs_sse_disconnect: %s\n", evs_strerror(rc));
    free(k->big);
    free(k);
    count_change(srv, -1, 0);
}

/* The one thread that wakes suspended connections. */
static void *watcher(void *arg)
{
    struct server *srv = arg;
    struct epoll_event evs[64];
    for (;;) {
        int n = epoll_wait(srv->epfd, evs, 64, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("epoll_wait");
            return NULL;
        }
        for (int i = 0; i < n; i++) {
            struct conn *k = evs[i].data.ptr;
            if (k == NULL) /* stopfd */
                return NULL;
            /* One-shot: disarmed now, re-armed by the next suspend. */
            MHD_resume_connection(k->mc);
            count_change(srv, 0, -1);
        }
    }
}

static enum MHD_Result reply(struct MHD_Connection *mc, unsigned status, const char *text)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_PERSISTENT);
    if (r == NULL)
        return MHD_NO;
    enum MHD_Result ok = MHD_queue_response(mc, status, r);
    MHD_destroy_response(r);
    return ok;
}

struct topics {
    const char *p[EVS_SSE_MAX_PATTERNS + 1];
    size_t n;
};

static enum MHD_Result collect_topic(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *value)
{
    struct topics *t = cls;
    (void)kind;
    if (strcmp(key, "topic") == 0) {
        if (t->n == EVS_SSE_MAX_PATTERNS + 1)
            return MHD_NO; /* too many: connect refuses EVS_SSE_MAX_PATTERNS + 1 */
        t->p[t->n++] = value != NULL ? value : "";
    }
    return MHD_YES;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *mc, const char *url,
                              const char *method, const char *version,
                              const char *upload_data, size_t *upload_size, void **req)
{
    static int headers_seen;
    struct server *srv = cls;
    (void)version;
    (void)upload_data;
    if (*req == NULL) { /* first call: headers only */
        *req = &headers_seen;
        return MHD_YES;
    }
    if (*upload_size != 0)
        return reply(mc, MHD_HTTP_BAD_REQUEST, "no body expected\n");
    if (strcmp(url, "/events") != 0)
        return reply(mc, MHD_HTTP_NOT_FOUND, "try GET /events?topic=ticker.>\n");
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0)
        return reply(mc, MHD_HTTP_METHOD_NOT_ALLOWED, "GET only\n");

    struct topics t = {.n = 0};
    MHD_get_connection_values(mc, MHD_GET_ARGUMENT_KIND, collect_topic, &t);
    evs_sse_client_opts co = {
        .patterns = t.p,
        .npatterns = t.n,
        .last_event_id = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, "Last-Event-ID"),
    };
    struct conn *k = calloc(1, sizeof(*k));
    if (k == NULL)
        return reply(mc, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
    k->srv = srv;
    k->mc = mc;
    int rc = evs_sse_connect(&k->client, srv->sse, &co);
    if (rc != 0) {
        free(k);
        if (rc == EVS_EINVAL)
            return reply(mc, MHD_HTTP_BAD_REQUEST, "bad topic pattern or Last-Event-ID\n");
        if (rc == EVS_ECLOSED)
            return reply(mc, MHD_HTTP_SERVICE_UNAVAILABLE, "shutting down\n");
        fprintf(stderr, "evs_sse_connect: %s\n", evs_strerror(rc));
        return reply(mc, MHD_HTTP_INTERNAL_SERVER_ERROR, "cannot connect\n");
    }
    struct epoll_event e = {.events = 0, .data.ptr = k}; /* disarmed until suspended */
    if ((k->fd = evs_sse_fd(k->client)) < 0 ||
        epoll_ctl(srv->epfd, EPOLL_CTL_ADD, k->fd, &e) != 0) {
        fprintf(stderr, "client descriptor: %s\n",
                k->fd < 0 ? evs_strerror(k->fd) : strerror(errno));
        if ((rc = evs_sse_disconnect(k->client)) != 0)
            fprintf(stderr, "evs_sse_disconnect: %s\n", evs_strerror(rc));
        free(k);
        return reply(mc, MHD_HTTP_INTERNAL_SERVER_ERROR, "cannot connect\n");
    }
    count_change(srv, 1, 0);
    /* From here free_conn owns k, whatever happens. */
    struct MHD_Response *r =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, read_frames, k, free_conn);
    if (r == NULL) {
        free_conn(k);
        return MHD_NO;
    }
    enum MHD_Result ok = MHD_NO;
    if (MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream") == MHD_YES &&
        MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache") == MHD_YES)
        ok = MHD_queue_response(mc, MHD_HTTP_OK, r);
    MHD_destroy_response(r); /* the connection holds its own reference */
    return ok;
}

static void *ticker(void *arg)
{
    struct server *srv = arg;
    static const char *syms[] = {"ABC", "XYZ", "QRS"};
    long cents[] = {10000, 25000, 4200};
    unsigned seed = 1;
    while (!atomic_load(&srv->ticker_stop)) {
        for (int i = 0; i < 3; i++) {
            seed = seed * 1103515245u + 12345u;
            cents[i] += (long)((seed >> 16) % 21) - 10; /* a small random walk */
            char subject[32], json[80];
            snprintf(subject, sizeof(subject), "ticker.%s", syms[i]);
            snprintf(json, sizeof(json), "{\"sym\":\"%s\",\"price\":%ld.%02ld}", syms[i],
                     cents[i] / 100, cents[i] % 100);
            evs_event *ev;
            int rc = evs_event_make(&ev, NULL, subject, json, NULL);
            if (rc == 0)
                rc = evs_stream_publish_move(srv->stream, ev, NULL);
            if (rc != 0) {
                fprintf(stderr, "ticker: %s\n", evs_strerror(rc));
                return NULL;
            }
        }
        nanosleep(&(struct timespec){.tv_nsec = 100 * 1000 * 1000}, NULL);
    }
    return NULL;
}

/* Wait until no response is left (want_idle) or no connection is
 * suspended, or until `ms` pass (ms < 0: no limit). */
static void wait_counts(struct server *srv, bool want_idle, int ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&srv->mu);
    while (want_idle ? srv->active != 0 : srv->suspended != 0) {
        if (ms < 0)
            pthread_cond_wait(&srv->changed, &srv->mu);
        else if (pthread_cond_timedwait(&srv->changed, &srv->mu, &until) != 0)
            break;
    }
    pthread_mutex_unlock(&srv->mu);
}

static int usage(void)
{
    fprintf(stderr, "usage: sse_server [--port N] [--seconds S]\n");
    return 2;
}

int main(int argc, char **argv)
{
    long port = 0, seconds = 1;
    for (int i = 1; i < argc; i++) {
        char *end;
        long *dst = strcmp(argv[i], "--port") == 0      ? &port
                    : strcmp(argv[i], "--seconds") == 0 ? &seconds
                                                        : NULL;
        if (dst == NULL || i + 1 == argc)
            return usage();
        *dst = strtol(argv[++i], &end, 10);
        if (*end != '\0' || *dst < 0 || (dst == &port && *dst > 65535))
            return usage();
    }

    /* SIGINT and SIGTERM are taken by sigtimedwait below; every thread
     * started from here on inherits the mask. */
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);

    struct server srv = {.epfd = -1, .stopfd = -1};
    struct MHD_Daemon *d = NULL;
    pthread_t tick, watch;
    bool ticking = false, watching = false;
    int rc, status = 1;
    pthread_mutex_init(&srv.mu, NULL);
    pthread_cond_init(&srv.changed, NULL);

    evs_stream_opts so = {.topics = true};
    /* Heartbeats also make MHD look at an idle suspended connection
     * now and then, and so notice a client that went away. */
    evs_sse_stream_opts sseo = {.heartbeat_ms = 5000, .retry_ms = 1000};
    if ((rc = evs_stream_create(&srv.stream, &so)) != 0 ||
        (rc = evs_sse_create(&srv.sse, srv.stream, &sseo)) != 0) {
        fprintf(stderr, "setup: %s\n", evs_strerror(rc));
        goto out;
    }
    struct epoll_event stop_ev = {.events = EPOLLIN, .data.ptr = NULL};
    if ((srv.epfd = epoll_create1(EPOLL_CLOEXEC)) < 0 ||
        (srv.stopfd = eventfd(0, EFD_CLOEXEC)) < 0 ||
        epoll_ctl(srv.epfd, EPOLL_CTL_ADD, srv.stopfd, &stop_ev) != 0) {
        perror("epoll");
        goto out;
    }
    if ((rc = pthread_create(&watch, NULL, watcher, &srv)) != 0) {
        fprintf(stderr, "watcher thread: %s\n", strerror(rc));
        goto out;
    }
    watching = true;

    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    /* No MHD_USE_ERROR_LOG: it reports every client that goes away,
     * the normal end of an event stream. */
    d = MHD_start_daemon(MHD_USE_AUTO_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME, 0, NULL,
                         NULL, handle, &srv, MHD_OPTION_SOCK_ADDR, &addr, MHD_OPTION_END);
    const union MHD_DaemonInfo *info = d ? MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT) : NULL;
    if (info == NULL) {
        fprintf(stderr, "cannot listen on 127.0.0.1:%ld\n", port);
        goto out;
    }
    if ((rc = pthread_create(&tick, NULL, ticker, &srv)) != 0) {
        fprintf(stderr, "ticker thread: %s\n", strerror(rc));
        goto out;
    }
    ticking = true;
    printf("listening on http://127.0.0.1:%u\n", (unsigned)info->port);
    fflush(stdout);

    struct timespec limit = {.tv_sec = seconds};
    int sig = sigtimedwait(&stop_signals, NULL, seconds > 0 ? &limit : NULL);
    if (sig > 0)
        printf("%s: stopping\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    status = 0;

out:
    if (ticking) {
        atomic_store(&srv.ticker_stop, true);
        pthread_join(tick, NULL);
    }
    if (srv.sse != NULL) {
        /* Every client reads what is queued, then "event: disconnect"
         * with "server shutdown"; its response then ends. */
        if ((rc = evs_sse_close(srv.sse)) != 0)
            fprintf(stderr, "evs_sse_close: %s\n", evs_strerror(rc));
        wait_counts(&srv, true, 1000);
        /* MHD must not be stopped with a connection suspended; the close
         * woke them all, so the watcher resumes each one promptly. */
        wait_counts(&srv, false, -1);
    }
    if (watching) {
        if (eventfd_write(srv.stopfd, 1) != 0)
            perror("eventfd_write");
        pthread_join(watch, NULL);
    }
    if (d != NULL)
        MHD_stop_daemon(d); /* frees what is left: free_conn for each */
    if (srv.sse != NULL) {
        evs_sse_stats st;
        if (evs_sse_stats_get(srv.sse, &st) == 0)
            printf("served %llu clients, %llu frames\n", (unsigned long long)st.connects,
                   (unsigned long long)st.frames);
    }
    if ((rc = evs_sse_destroy(srv.sse)) != 0)
        fprintf(stderr, "evs_sse_destroy: %s\n", evs_strerror(rc));
    if ((rc = evs_stream_destroy(srv.stream)) != 0)
        fprintf(stderr, "evs_stream_destroy: %s\n", evs_strerror(rc));
    if (srv.stopfd >= 0)
        close(srv.stopfd);
    if (srv.epfd >= 0)
        close(srv.epfd);
    pthread_cond_destroy(&srv.changed);
    pthread_mutex_destroy(&srv.mu);
    if (status == 0)
        printf("stopped cleanly\n");
    return status;
}
