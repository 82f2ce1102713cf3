/*
 * The hub (`evstream serve`) under load, measured from outside as a user
 * runs it: the hub is its own process (the `evstream` binary beside
 * evs-bench, or $EVS_HUB_BIN), on a free loopback port, with default
 * options; clients are libcurl transfers driven by one curl multi
 * handle on epoll in this process, each parsing its stream with the
 * library's SSE parser.
 *
 *   hub-idle    10,000 idle clients: the hub's resident memory (VmRSS)
 *               with them, less before them, per client.
 *   hub-fanout  1,000 clients on one subject, 10,000 events published
 *               with POST /publish by 1 or 4 publisher threads (each on
 *               a keep-alive connection, as fast as the hub answers):
 *               deliveries per second (first publish to last delivery)
 *               and publish -> client latency. Each event's data is
 *               "<seq> <CLOCK_MONOTONIC ns at publish>"; every client
 *               must get every event once, each publisher's in order, or
 *               the run fails. Latency is sampled (every SAMPLE_EVERY-th
 *               event of each publisher).
 *
 * Both run the hub, this process's clients and the publisher on the
 * same machine: on 2 vCPUs they share the CPUs.
 */
#include "bench.h"

#include <evstream.h>

#include <curl/curl.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#define IDLE_CLIENTS   10000
#define FANOUT_CLIENTS 1000
#define FANOUT_EVENTS  10000
/* Clients connecting at once (the rest wait their turn). */
#define CONNECT_BATCH  500
#define SAMPLE_EVERY   50
#define DEADLINE_NS    (120 * (int64_t)1000000000)

/* The variants of hub-fanout: how many publishers (each on its own
 * connection, publishing as fast as the hub answers). */
const int scn_hub_pub1 = 1;
const int scn_hub_pub4 = 4;

/* ------------------------------------------------------------------ */
/* The hub process                                                     */

struct hub {
    pid_t pid;
    char base[64]; /* http://127.0.0.1:PORT */
};

static void hub_binary(char *path, size_t cap)
{
    const char *env = getenv("EVS_HUB_BIN");
    if (env != NULL) {
        snprintf(path, cap, "%s", env);
        return;
    }
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
        self[n] = '\0';
        char *slash = strrchr(self, '/');
        if (slash != NULL) {
            *slash = '\0';
            snprintf(path, cap, "%s/evstream", self);
            if (access(path, X_OK) == 0)
                return;
        }
    }
    snprintf(path, cap, "build/evstream");
}

static int hub_start(struct hub *h, bench_result *r)
{
    char bin[PATH_MAX + 16];
    int out[2];
    hub_binary(bin, sizeof bin);
    if (access(bin, X_OK) != 0)
        return bench_fail(r, "no hub binary %s (make bench builds it; or set EVS_HUB_BIN)", bin);
    if (pipe(out) != 0)
        return bench_fail(r, "pipe: %s", strerror(errno));
    h->pid = fork();
    if (h->pid < 0)
        return bench_fail(r, "fork: %s", strerror(errno));
    if (h->pid == 0) {
        dup2(out[1], STDOUT_FILENO);
        close(out[0]);
        close(out[1]);
        execl(bin, bin, "serve", "--port", "0", (char *)NULL);
        _exit(127);
    }
    close(out[1]);
    char line[128];
    size_t len = 0;
    int64_t until = bench_now_ns() + 10 * (int64_t)1000000000;
    while (len < sizeof line - 1 && bench_now_ns() < until) {
        struct pollfd pf = {.fd = out[0], .events = POLLIN};
        if (poll(&pf, 1, 100) <= 0)
            continue;
        if (read(out[0], line + len, 1) != 1)
            break;
        if (line[len++] == '\n')
            break;
    }
    close(out[0]);
    line[len] = '\0';
    unsigned port;
    if (sscanf(line, "listening on http://127.0.0.1:%u", &port) != 1) {
        kill(h->pid, SIGKILL);
        waitpid(h->pid, NULL, 0);
        return bench_fail(r, "the hub did not start (%s)", line);
    }
    snprintf(h->base, sizeof h->base, "http://127.0.0.1:%u", port);
    return BENCH_OK;
}

static void hub_stop(struct hub *h)
{
    kill(h->pid, SIGTERM);
    for (int i = 0; i < 100; i++) {
        if (waitpid(h->pid, NULL, WNOHANG) == h->pid)
            return;
        bench_sleep_ns(50 * 1000000);
    }
    kill(h->pid, SIGKILL);
    waitpid(h->pid, NULL, 0);
}

/* The hub's resident set in bytes, from /proc. */
static long long hub_rss(const struct hub *h)
{
    char path[64], line[256];
    long long kb = -1;
    snprintf(path, sizeof path, "/proc/%d/status", (int)h->pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    while (fgets(line, sizeof line, f) != NULL)
        if (sscanf(line, "VmRSS: %lld kB", &kb) == 1)
            break;
    fclose(f);
    return kb * 1024;
}

/* CPU seconds the hub has used (user + system), from /proc. */
static double hub_cpu(const struct hub *h)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)h->pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* the name may contain spaces */
    unsigned long long ut, st;
    if (p == NULL || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut,
                            &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* CPU seconds this process has used. */
static double self_cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

/* ------------------------------------------------------------------ */
/* Clients: a curl multi handle on epoll                               */

struct loadgen;

struct client {
    struct loadgen *lg;
    CURL *easy;
    evs_sse_parser *parser;
    int index;
    bool open;      /* answered 200 */
    uint64_t got;   /* events received */
    uint64_t last[BENCH_MAX_PUBS]; /* each publisher's last number */
};

struct loadgen {
    CURLM *multi;
    int epfd;
    long timeout_ms;      /* libcurl's timer; -1: none */
    struct client *c;
    int n, added;
    int open, ended;      /* answered 200; transfers that ended */
    uint64_t bad_order;   /* sequence numbers not one more than the last */
    uint64_t deliveries;
    int64_t last_delivery_ns;
    bench_result *r;      /* latency samples go to r->samples */
};

static int on_socket(CURL *e, curl_socket_t s, int what, void *user, void *socketp)
{
    struct loadgen *lg = user;
    (void)e;
    if (what == CURL_POLL_REMOVE) {
        epoll_ctl(lg->epfd, EPOLL_CTL_DEL, s, NULL);
        return 0;
    }
    struct epoll_event ev = {.events = (what & CURL_POLL_IN ? EPOLLIN : 0u) |
                                       (what & CURL_POLL_OUT ? EPOLLOUT : 0u),
                             .data.fd = s};
    if (socketp == NULL) {
        epoll_ctl(lg->epfd, EPOLL_CTL_ADD, s, &ev);
        curl_multi_assign(lg->multi, s, (void *)1);
    } else {
        epoll_ctl(lg->epfd, EPOLL_CTL_MOD, s, &ev);
    }
    return 0;
}

static int on_timer(CURLM *m, long timeout_ms, void *user)
{
    (void)m;
    ((struct loadgen *)user)->timeout_ms = timeout_ms;
    return 0;
}

/* One event: "<seq> <stamp ns>". */
static int on_message(const evs_sse_message *m, void *user)
{
    struct client *c = user;
    struct loadgen *lg = c->lg;
    char *end;
    uint64_t seq = strtoull(m->data, &end, 10);
    int64_t stamp = strtoll(end, NULL, 10);
    int64_t now = bench_now_ns();
    unsigned pub = (unsigned)(seq >> BENCH_PUB_SHIFT);
    uint64_t i = seq & (((uint64_t)1 << BENCH_PUB_SHIFT) - 1);
    if (pub >= BENCH_MAX_PUBS || i != c->last[pub] + 1)
        lg->bad_order++;
    else
        c->last[pub] = i;
    c->got++;
    lg->deliveries++;
    lg->last_delivery_ns = now;
    bench_result *r = lg->r;
    if ((i + (uint64_t)c->index) % SAMPLE_EVERY == 0 && r->nsamples < r->cap)
        r->samples[r->nsamples++] = now - stamp;
    return 0;
}

static size_t on_body(char *p, size_t size, size_t n, void *user)
{
    struct client *c = user;
    return evs_sse_parser_feed(c->parser, p, size * n, NULL, on_message, c) == 0 ? size * n : 0;
}

static size_t on_header(char *p, size_t size, size_t n, void *user)
{
    struct client *c = user;
    long code = 0;
    if (size * n == 2 && p[0] == '\r' && !c->open) { /* the end of the headers */
        curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &code);
        if (code == 200) {
            c->open = true;
            c->lg->open++;
        }
    }
    return size * n;
}

static int lg_init(struct loadgen *lg, int n, bench_result *r)
{
    memset(lg, 0, sizeof(*lg));
    lg->r = r;
    lg->timeout_ms = -1;
    lg->n = n;
    lg->c = calloc((size_t)n, sizeof(*lg->c));
    lg->epfd = epoll_create1(EPOLL_CLOEXEC);
    lg->multi = curl_multi_init();
    if (lg->c == NULL || lg->epfd < 0 || lg->multi == NULL)
        return bench_fail(r, "client setup");
    curl_multi_setopt(lg->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(lg->multi, CURLMOPT_SOCKETDATA, lg);
    curl_multi_setopt(lg->multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(lg->multi, CURLMOPT_TIMERDATA, lg);
    return BENCH_OK;
}

static int lg_add(struct loadgen *lg, const char *url, long bufsize)
{
    struct client *c = &lg->c[lg->added];
    c->lg = lg;
    c->index = lg->added;
    if (evs_sse_parser_create(&c->parser, NULL) != 0 || (c->easy = curl_easy_init()) == NULL)
        return -1;
    curl_easy_setopt(c->easy, CURLOPT_URL, url);
    curl_easy_setopt(c->easy, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c->easy, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(c->easy, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c->easy, CURLOPT_HEADERDATA, c);
    curl_easy_setopt(c->easy, CURLOPT_PRIVATE, c);
    curl_easy_setopt(c->easy, CURLOPT_BUFFERSIZE, bufsize);
    curl_easy_setopt(c->easy, CURLOPT_NOSIGNAL, 1L);
    curl_multi_add_handle(lg->multi, c->easy);
    lg->added++;
    return 0;
}

/* Run the loop for up to `ms`. */
static void lg_run(struct loadgen *lg, int ms)
{
    struct epoll_event evs[256];
    int running;
    int wait = lg->timeout_ms >= 0 && lg->timeout_ms < ms ? (int)lg->timeout_ms : ms;
    int n = epoll_wait(lg->epfd, evs, 256, wait);
    for (int i = 0; i < n; i++) {
        int flags = (evs[i].events & EPOLLIN ? CURL_CSELECT_IN : 0) |
                    (evs[i].events & EPOLLOUT ? CURL_CSELECT_OUT : 0) |
                    (evs[i].events & (EPOLLERR | EPOLLHUP) ? CURL_CSELECT_ERR : 0);
        curl_multi_socket_action(lg->multi, evs[i].data.fd, flags, &running);
    }
    if (n <= 0)
        curl_multi_socket_action(lg->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(lg->multi, &left)) != NULL)
        if (msg->msg == CURLMSG_DONE)
            lg->ended++;
}

/* Connect n clients to url, CONNECT_BATCH at a time; false on failure. */
static bool lg_connect(struct loadgen *lg, const char *url, long bufsize, int64_t until)
{
    while (lg->open < lg->n && lg->ended == 0 && bench_now_ns() < until) {
        while (lg->added < lg->n && lg->added - lg->open < CONNECT_BATCH)
            if (lg_add(lg, url, bufsize) != 0)
                return false;
        lg_run(lg, 10);
    }
    return lg->open == lg->n;
}

static void lg_free(struct loadgen *lg)
{
    for (int i = 0; i < lg->added; i++) {
        curl_multi_remove_handle(lg->multi, lg->c[i].easy);
        curl_easy_cleanup(lg->c[i].easy);
        evs_sse_parser_destroy(lg->c[i].parser);
    }
    if (lg->multi != NULL)
        curl_multi_cleanup(lg->multi);
    if (lg->epfd >= 0)
        close(lg->epfd);
    free(lg->c);
}

static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* ------------------------------------------------------------------ */
/* hub-idle                                                            */

int scn_hub_idle_memory(const bench_params *p, bench_result *r)
{
    (void)p;
    struct hub h;
    struct loadgen lg;
    raise_fd_limit();
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (hub_start(&h, r) != BENCH_OK)
        return BENCH_FAIL;
    int rc = lg_init(&lg, IDLE_CLIENTS, r);
    char url[128];
    snprintf(url, sizeof url, "%s/events?topic=idle.nobody", h.base);
    bench_sleep_ns(200 * 1000000); /* the hub settles */
    long long before = hub_rss(&h);
    int64_t t0 = bench_now_ns();
    /* The smallest receive buffer: these clients read nothing. */
    if (rc == BENCH_OK && !lg_connect(&lg, url, 1024, t0 + DEADLINE_NS))
        rc = bench_fail(r, "%d of %d clients connected (%d ended)", lg.open, IDLE_CLIENTS,
                        lg.ended);
    int64_t t1 = bench_now_ns();
    for (int i = 0; i < 20 && rc == BENCH_OK; i++) /* some idle time */
        lg_run(&lg, 10);
    long long after = hub_rss(&h);
    lg_free(&lg);
    hub_stop(&h);
    if (rc != BENCH_OK)
        return rc;
    if (before < 0 || after < 0)
        return bench_fail(r, "cannot read the hub's VmRSS");
    r->rate = (double)(after - before) / IDLE_CLIENTS;
    r->sent = r->received = IDLE_CLIENTS;
    r->extra = IDLE_CLIENTS / ((double)(t1 - t0) / 1e9);
    r->extra_kind = BENCH_EXTRA_RATE;
    r->extra_label = "connects/s";
    snprintf(r->note, sizeof r->note, "hub RSS %.1f MB -> %.1f MB", before / 1e6, after / 1e6);
    return BENCH_OK;
}

/* ------------------------------------------------------------------ */
/* hub-fanout                                                          */

#define MAX_PUBLISHERS BENCH_MAX_PUBS

/* One publisher thread: events pub << 48 | 1, 2, ... n on its own
 * keep-alive connection, as fast as the hub answers. */
struct publisher {
    char url[128];
    int index;
    int events;
    int failed;              /* publishes not answered 202 */
    long busy;               /* 503 answers (retried) */
    char error[128];
};

static size_t discard(char *p, size_t size, size_t n, void *user)
{
    (void)p;
    (void)user;
    return size * n;
}

static void *publish_main(void *arg)
{
    struct publisher *pb = arg;
    CURL *e = curl_easy_init();
    char body[64];
    if (e == NULL) {
        pb->failed = pb->events;
        return NULL;
    }
    curl_easy_setopt(e, CURLOPT_URL, pb->url);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    for (int i = 1; i <= pb->events; i++) {
        long code = 0;
        CURLcode res;
        do { /* 503: the hub's stream is full; back off as its answer asks */
            if (code == 503) {
                pb->busy++;
                bench_sleep_ns(1000000);
            }
            snprintf(body, sizeof body, "%llu %lld",
                     (unsigned long long)bench_seq(pb->index, (uint64_t)i),
                     (long long)bench_now_ns());
            curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
            res = curl_easy_perform(e);
            curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
        } while (res == CURLE_OK && code == 503);
        if ((res != CURLE_OK || code != 202) && pb->failed++ == 0)
            snprintf(pb->error, sizeof pb->error, "publish %d: %s, HTTP %ld", i,
                     curl_easy_strerror(res), code);
    }
    curl_easy_cleanup(e);
    return NULL;
}

/* Every client got every event, once, each publisher's in order. */
static int check_fanout(struct loadgen *lg, int events, bench_result *r)
{
    for (int i = 0; i < lg->n; i++)
        if (lg->c[i].got != (uint64_t)events)
            return bench_fail(r, "client %d got %llu of %d events", i,
                              (unsigned long long)lg->c[i].got, events);
    if (lg->bad_order != 0)
        return bench_fail(r, "%llu events out of order", (unsigned long long)lg->bad_order);
    return BENCH_OK;
}

/* Start the publishers, run the clients until every event is in, join. */
static int fanout_run(struct loadgen *lg, struct publisher *pb, int npub, int events,
                      int64_t until, bench_result *r)
{
    pthread_t t[MAX_PUBLISHERS];
    int started = 0;
    while (started < npub && pthread_create(&t[started], NULL, publish_main, &pb[started]) == 0)
        started++;
    uint64_t want = (uint64_t)events * (uint64_t)lg->n;
    while (started == npub && lg->deliveries < want && lg->ended == 0 && bench_now_ns() < until)
        lg_run(lg, 10);
    for (int k = 0; k < started; k++)
        pthread_join(t[k], NULL);
    if (started < npub)
        return bench_fail(r, "publisher threads");
    for (int k = 0; k < npub; k++)
        if (pb[k].failed != 0)
            return bench_fail(r, "%d publishes failed (%s)", pb[k].failed, pb[k].error);
    if (lg->ended != 0)
        return bench_fail(r, "%d streams ended early (slow clients?)", lg->ended);
    return check_fanout(lg, events, r);
}

int scn_hub_fanout(const bench_params *p, bench_result *r)
{
    struct hub h;
    struct loadgen lg;
    struct publisher pb[MAX_PUBLISHERS];
    int npub = p->arg != NULL ? *(const int *)p->arg : 1;
    /* The warm-up run (p->seconds below 2) publishes a tenth. */
    int events = p->seconds >= 2 ? FANOUT_EVENTS : FANOUT_EVENTS / 10;
    raise_fd_limit();
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (hub_start(&h, r) != BENCH_OK)
        return BENCH_FAIL;
    int rc = lg_init(&lg, FANOUT_CLIENTS, r);
    char url[128];
    snprintf(url, sizeof url, "%s/events?topic=bench.fanout", h.base);
    for (int k = 0; k < npub; k++) {
        memset(&pb[k], 0, sizeof pb[k]);
        snprintf(pb[k].url, sizeof pb[k].url, "%s/publish?topic=bench.fanout", h.base);
        pb[k].index = k;
        pb[k].events = events / npub + (k < events % npub);
    }
    int64_t until = bench_now_ns() + DEADLINE_NS;
    if (rc == BENCH_OK && !lg_connect(&lg, url, 16384, until))
        rc = bench_fail(r, "%d of %d clients connected", lg.open, FANOUT_CLIENTS);
    double hub0 = hub_cpu(&h), self0 = self_cpu();
    int64_t t0 = bench_now_ns();
    if (rc == BENCH_OK)
        rc = fanout_run(&lg, pb, npub, events, until, r);
    double secs = (double)(lg.last_delivery_ns - t0) / 1e9;
    double hub_s = hub_cpu(&h) - hub0, self_s = self_cpu() - self0;
    long busy = 0;
    for (int k = 0; k < npub; k++)
        busy += pb[k].busy;
    lg_free(&lg);
    hub_stop(&h);
    if (rc != BENCH_OK)
        return rc;
    r->sent = (uint64_t)events;
    r->received = (uint64_t)events * FANOUT_CLIENTS;
    r->extra = (double)r->received / secs;
    r->extra_kind = BENCH_EXTRA_RATE;
    r->extra_label = "deliveries/s";
    r->rate = r->extra;
    snprintf(r->note, sizeof r->note,
             "%.1f s; CPU: hub %.1f s, clients + publishers %.1f s; %ld publishes retried on 503",
             secs, hub_s, self_s, busy);
    return BENCH_OK;
}
