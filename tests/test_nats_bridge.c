/*
 * The NATS bridge against a real nats-server: each test that needs one
 * starts its own on a free loopback port (with -js and a temporary
 * store directory for JetStream) and kills it at the end, so tests may
 * run in parallel. Without nats-server installed those tests skip,
 * saying so, except in CI (CI=true), where they fail: CI must not pass
 * with tests that never ran. A server that is installed but does not
 * start is a failure everywhere; it gets SERVER_START_MS to come up
 * (generous: a loaded two-core machine running the suite under ASan),
 * and the tests' timeouts allow for two such starts (a restart).
 * EVS_TEST_NATS_SERVER names the binary to run instead of the one on
 * PATH (empty: as if none were installed). Without libnats at build
 * time only the EVS_ENOTSUP test runs.
 *
 * Waiting is always for a condition, polled every few milliseconds with
 * a deadline, never a fixed sleep.
 */
#include "evs_test.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#ifdef EVS_HAVE_NATS
#include <nats/nats.h>
#endif

Test(nats_bridge, enotsup_has_its_own_code_and_message)
{
    cr_assert_eq(EVS_ENOTSUP, -14);
    cr_assert_str_eq(evs_strerror(EVS_ENOTSUP), "not compiled in");
    cr_assert_str_eq(evs_errname(EVS_ENOTSUP), "EVS_ENOTSUP");
}

#ifndef EVS_HAVE_NATS

Test(nats_bridge, create_without_libnats_is_enotsup)
{
    evs_stream *s;
    ASSERT_RC(evs_stream_create(&s, &(evs_stream_opts){.topics = true}), 0);
    evs_nats_bridge *b = (evs_nats_bridge *)1;
    ASSERT_RC(evs_nats_bridge_create(&b, s, NULL), EVS_ENOTSUP);
    cr_assert_null(b);
    cr_assert_not(evs_nats_supported());
    evs_stream_destroy(s);
}

#else /* EVS_HAVE_NATS */

/* ------------------------------------------------------------------ */
/* A nats-server per test                                              */

typedef struct server {
    pid_t pid;
    int   port;
    bool  js;
    char  dir[64]; /* JetStream store and the server's log */
    char  url[64];
} server;

/* The fixture's server, killed by fini even when an assertion failed
 * (the server also dies with the test process: PR_SET_PDEATHSIG). */
static server srv;

/* How long a starting nats-server may take to accept connections. */
#define SERVER_START_MS 15000
/* A test's timeout: its own seconds plus two server starts. */
#define WITH_STARTS(s) ((s) + 2 * SERVER_START_MS / 1000)

static bool in_ci(void)
{
    const char *ci = getenv("CI");
    return ci != NULL && (strcmp(ci, "true") == 0 || strcmp(ci, "1") == 0);
}

static const char *server_path(void)
{
    static char path[512];
    const char *forced = getenv("EVS_TEST_NATS_SERVER");
    if (forced != NULL)
        return forced[0] != '\0' && access(forced, X_OK) == 0 ? forced : NULL;
    const char *env = getenv("PATH");
    char dirs[1024];
    snprintf(dirs, sizeof(dirs), "%s:/usr/sbin:/usr/local/sbin:/usr/local/bin:/usr/bin",
             env ? env : "");
    for (char *save = NULL, *d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        snprintf(path, sizeof(path), "%s/nats-server", d);
        if (access(path, X_OK) == 0)
            return path;
    }
    return NULL;
}

/* A loopback port nobody listens on now: bind port 0, read it, close. */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(fd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    socklen_t len = sizeof(a);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static bool port_open(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bool ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    close(fd);
    return ok;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Start (or restart, same port and store) the server; false if it
 * exited or did not come up within SERVER_START_MS. */
static bool server_run(server *sv)
{
    const char *path = server_path();
    if (path == NULL)
        return false;
    char port[16], log[96];
    snprintf(port, sizeof(port), "%d", sv->port);
    snprintf(log, sizeof(log), "%s/log", sv->dir);
    pid_t parent = getpid();
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(1);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        if (sv->js)
            execl(path, "nats-server", "-a", "127.0.0.1", "-p", port, "-js", "-sd", sv->dir,
                  (char *)NULL);
        else
            execl(path, "nats-server", "-a", "127.0.0.1", "-p", port, (char *)NULL);
        _exit(127);
    }
    sv->pid = pid;
    for (int i = 0; i < SERVER_START_MS / 5; i++) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) { /* it exited: port taken? */
            sv->pid = 0;
            return false;
        }
        if (port_open(sv->port))
            return true;
        sleep_ms(5);
    }
    return false;
}

static void server_kill(server *sv, int sig)
{
    if (sv->pid > 0) {
        kill(sv->pid, sig);
        waitpid(sv->pid, NULL, 0);
        sv->pid = 0;
    }
}

/* A new server on a free port (retrying if another process takes the
 * port first). */
static bool server_start(server *sv, bool js)
{
    if (server_path() == NULL)
        return false;
    sv->js = js;
    snprintf(sv->dir, sizeof(sv->dir), "/tmp/evs-nats-XXXXXX");
    cr_assert_not_null(mkdtemp(sv->dir));
    for (int attempt = 0; attempt < 5; attempt++) {
        sv->port = free_port();
        snprintf(sv->url, sizeof(sv->url), "nats://127.0.0.1:%d", sv->port);
        if (server_run(sv))
            return true;
        server_kill(sv, SIGKILL);
    }
    /* What it said, for the failure message (the store is removed). */
    char log[96], line[256];
    snprintf(log, sizeof(log), "%s/log", sv->dir);
    FILE *f = fopen(log, "r");
    while (f != NULL && fgets(line, sizeof(line), f) != NULL)
        fprintf(stderr, "  nats-server: %s", line);
    if (f != NULL)
        fclose(f);
    return false;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void srv_fini(void)
{
    server_kill(&srv, SIGKILL);
    if (srv.dir[0] != '\0')
        nftw(srv.dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    srv.dir[0] = '\0';
}

/* nats-server is installed, or the test skips (outside CI) or fails
 * (in CI), saying which. */
#define NEED_SERVER_BINARY()                                                   \
    do {                                                                       \
        if (server_path() == NULL) {                                           \
            if (in_ci())                                                       \
                cr_assert_fail("nats-server is not installed, and CI=true: "   \
                               "install the Debian package nats-server");      \
            cr_skip_test("nats-server is not installed: skipping; install "    \
                         "the Debian package nats-server");                    \
        }                                                                      \
    } while (0)

/* A running server in `srv`; one that does not start fails the test. */
#define NEED_SERVER(js)                                                        \
    do {                                                                       \
        NEED_SERVER_BINARY();                                                  \
        cr_assert(server_start(&srv, (js)),                                    \
                  "nats-server (%s) did not start within %d s on a free port " \
                  "(5 tries; its log is above)",                               \
                  server_path(), SERVER_START_MS / 1000);                      \
    } while (0)

/* Poll `cond` every 2 ms for up to `ms`; true if it held. */
#define WAIT_FOR(cond, ms)                                                   \
    ({                                                                       \
        bool ok_ = false;                                                    \
        for (int i_ = 0; i_ < (ms) / 2 && !(ok_ = (cond)); i_++)             \
            sleep_ms(2);                                                     \
        ok_ || (cond);                                                       \
    })

/* ------------------------------------------------------------------ */
/* Local sinks                                                         */

#define SINK_MAX 256

typedef struct sink {
    pthread_mutex_t mu;
    size_t   n;
    uint64_t ids[SINK_MAX];
    char     topics[SINK_MAX][32];
    char     types[SINK_MAX][32];
    char     data[SINK_MAX][32];
    gate    *hold; /* if set, each call waits at it */
} sink;

static int sink_fn(const evs_event *ev, void *user)
{
    sink *k = user;
    if (k->hold != NULL)
        gate_pass(k->hold);
    if (evs_event_type(ev) == EVS_TYPE_HEARTBEAT)
        return 0;
    pthread_mutex_lock(&k->mu);
    if (k->n < SINK_MAX) {
        size_t len;
        const void *d = evs_event_data(ev, &len);
        k->ids[k->n] = evs_event_id(ev);
        snprintf(k->topics[k->n], 32, "%s", evs_event_topic(ev));
        snprintf(k->types[k->n], 32, "%s", evs_event_type_name(ev));
        if (evs_event_content(ev) == EVS_CONTENT_MSGPACK) {
            evs_buf j = {0};
            evs_event_to_json(ev, &j);
            /* the "data" member of the JSON rendering */
            const char *p = j.data ? strstr(j.data, "\"data\":") : NULL;
            snprintf(k->data[k->n], 32, "%.*s", p ? (int)strcspn(p + 7, ",}") : 0, p ? p + 7 : "");
            evs_buf_free(&j);
        } else {
            snprintf(k->data[k->n], 32, "%.*s", (int)(len < 31 ? len : 31), (const char *)d);
        }
    }
    k->n++;
    pthread_mutex_unlock(&k->mu);
    return 0;
}

static size_t sink_n(sink *k)
{
    pthread_mutex_lock(&k->mu);
    size_t n = k->n;
    pthread_mutex_unlock(&k->mu);
    return n;
}

typedef struct local {
    evs_stream *s;
    evs_sub    *sub;
    sink        k;
} local;

static void local_open(local *l, const evs_stream_opts *o)
{
    memset(l, 0, sizeof(*l));
    pthread_mutex_init(&l->k.mu, NULL);
    evs_stream_opts so = o ? *o : (evs_stream_opts){0};
    so.topics = true;
    ASSERT_RC(evs_stream_create(&l->s, &so), 0);
    ASSERT_RC(evs_subscribe(&l->sub, l->s, ">", sink_fn, NULL, &l->k, NULL), 0);
}

static void local_close(local *l)
{
    ASSERT_RC(evs_stream_destroy(l->s), 0);
    pthread_mutex_destroy(&l->k.mu);
}

static void publish_json(evs_stream *s, const char *topic, const char *json)
{
    evs_event *ev;
    ASSERT_RC(evs_event_make(&ev, "Purchase", topic, json, NULL), 0);
    ASSERT_RC(evs_stream_publish(s, ev), 0);
    evs_event_unref(ev);
}

static evs_nats_stats stats_of(evs_nats_bridge *b)
{
    evs_nats_stats st;
    ASSERT_RC(evs_nats_bridge_stats_get(b, &st), 0);
    return st;
}

static evs_nats_bridge *bridge(evs_stream *s, evs_nats_opts o)
{
    if (o.url == NULL)
        o.url = srv.url;
    if (o.reconnect_wait_ms == 0)
        o.reconnect_wait_ms = 50;
    evs_nats_bridge *b = NULL;
    ASSERT_RC(evs_nats_bridge_create(&b, s, &o), 0);
    cr_assert_not_null(b);
    return b;
}

static natsConnection *raw_connect(void)
{
    natsConnection *nc = NULL;
    natsStatus st = natsConnection_ConnectTo(&nc, srv.url);
    cr_assert_eq(st, NATS_OK, "raw connect: %s", natsStatus_GetText(st));
    return nc;
}

#define ONE(p) ((const char *const[]){p}), 1

/* ------------------------------------------------------------------ */
/* Options                                                             */

Test(nats_bridge, is_supported_when_compiled_in)
{
    cr_assert(evs_nats_supported());
}

Test(nats_bridge, bad_options_are_einval_and_create_nothing, .timeout = 10)
{
    evs_stream *plain, *s;
    ASSERT_RC(evs_stream_create(&plain, NULL), 0);
    ASSERT_RC(evs_stream_create(&s, &(evs_stream_opts){.topics = true}), 0);
    evs_nats_bridge *b = (evs_nats_bridge *)1;
    ASSERT_RC(evs_nats_bridge_create(NULL, s, NULL), EVS_EINVAL);
    ASSERT_RC(evs_nats_bridge_create(&b, NULL, NULL), EVS_EINVAL);
    cr_assert_null(b);
    ASSERT_RC(evs_nats_bridge_create(&b, plain, NULL), EVS_EINVAL);
    struct {
        const char   *why;
        evs_nats_opts o;
    } bad[] = {
        {"bad export", {.exports = ONE("a..b")}},
        {"bad import", {.imports = ONE("a.>.b")}},
        {"exports NULL", {.exports = NULL, .nexports = 1}},
        {"wildcard prefix", {.prefix = "a.*"}},
        {"bad origin", {.origin = "has space"}},
        {"long origin", {.origin = "0123456789012345678901234567890123456789012345678901234567890123456789"}},
        {"negative timeout", {.timeout_ms = -1}},
        {"negative pending", {.import_pending = -1}},
        {"consumer without durable", {.consumer = "c"}},
        {"seq_ids without durable", {.seq_ids = true}},
        {"bad durable name", {.durable = "a.b"}},
        {"two durable imports", {.durable = "D", .prefix = "p",
                                 .imports = (const char *const[]){"a.>", "b.>"}, .nimports = 2}},
        {"> without prefix, durable", {.durable = "D", .exports = ONE(">")}},
        {"seq_ids with exports", {.durable = "D", .prefix = "p", .seq_ids = true,
                                  .exports = ONE("a.>")}},
        {"replay seq 0", {.durable = "D", .replay = EVS_NATS_REPLAY_SEQ}},
        {"replay time 0", {.durable = "D", .replay = EVS_NATS_REPLAY_TIME}},
        {"replay out of range", {.durable = "D", .replay = (evs_nats_replay)9}},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        b = (evs_nats_bridge *)1;
        int rc = evs_nats_bridge_create(&b, s, &bad[i].o);
        cr_assert_eq(rc, EVS_EINVAL, "%s: got %s", bad[i].why, evs_errname(rc));
        cr_assert_null(b, "%s", bad[i].why);
    }
    ASSERT_RC(evs_nats_bridge_stats_get(NULL, &(evs_nats_stats){0}), EVS_EINVAL);
    ASSERT_RC(evs_nats_bridge_sync(NULL, 0), EVS_EINVAL);
    ASSERT_RC(evs_nats_bridge_flush(NULL, 0), EVS_EINVAL);
    ASSERT_RC(evs_nats_bridge_publish(NULL, NULL), EVS_EINVAL);
    ASSERT_RC(evs_nats_bridge_destroy(NULL), 0);
    cr_assert_str_eq(evs_nats_bridge_origin(NULL), "");
    evs_stream_destroy(plain);
    evs_stream_destroy(s);
}

/* ------------------------------------------------------------------ */
/* Export, import, prefix                                              */

Test(nats_bridge, export_publishes_matching_events_with_headers, .fini = srv_fini,
     .timeout = WITH_STARTS(15))
{
    NEED_SERVER(false);
    local l;
    local_open(&l, NULL);
    evs_nats_bridge *b = bridge(l.s, (evs_nats_opts){.prefix = "evs", .exports = ONE("orders.>")});
    natsConnection *nc = raw_connect();
    natsSubscription *sub = NULL;
    cr_assert_eq(natsConnection_SubscribeSync(&sub, nc, "evs.>"), NATS_OK);
    cr_assert_eq(natsConnection_Flush(nc), NATS_OK);
    ASSERT_RC(evs_nats_bridge_sync(b, 3000), 0);

    publish_json(l.s, "other.x", "1");  /* not exported */
    publish_json(l.s, "orders.eu", "{\"sku\":7}");
    natsMsg *m = NULL;
    natsStatus st = natsSubscription_NextMsg(&m, sub, 3000);
    cr_assert_eq(st, NATS_OK, "%s", natsStatus_GetText(st));
    cr_assert_str_eq(natsMsg_GetSubject(m), "evs.orders.eu");
    const char *h = NULL;
    cr_assert_eq(natsMsgHeader_Get(m, EVS_NATS_HDR_ORIGIN, &h), NATS_OK);
    cr_assert_str_eq(h, evs_nats_bridge_origin(b));
    cr_assert_eq(strlen(h), 16, "a random origin is 16 hex digits");
    cr_assert_eq(natsMsgHeader_Get(m, EVS_NATS_HDR_ID, &h), NATS_OK);
    cr_assert_str_eq(h, "2");
    cr_assert_eq(natsMsgHeader_Get(m, EVS_NATS_HDR_TYPE, &h), NATS_OK);
    cr_assert_str_eq(h, "Purchase");
    evs_event *ev = NULL;
    ASSERT_RC(evs_event_from_msgpack(&ev, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m)), 0);
    cr_assert_str_eq(evs_event_topic(ev), "orders.eu");
    cr_assert_str_eq(evs_event_type_name(ev), "Purchase");
    cr_assert_eq(evs_event_id(ev), 2);
    evs_event_unref(ev);
    natsMsg_Destroy(m);
    cr_assert_eq(natsSubscription_NextMsg(&m, sub, 100), NATS_TIMEOUT, "other.x was exported");

    cr_assert(WAIT_FOR(stats_of(b).exported == 1, 3000)); /* counted after the send */
    evs_nats_stats bs = stats_of(b);
    cr_assert(bs.connected && bs.ready);
    cr_assert_eq(bs.export_failed + bs.export_dropped + bs.export_buffered, 0);
    cr_assert_eq(sink_n(&l.k), 2, "local delivery is unchanged");
    natsSubscription_Destroy(sub);
    natsConnection_Destroy(nc);
    ASSERT_RC(evs_nats_bridge_destroy(b), 0);
    local_close(&l);
}

Test(nats_bridge, import_publishes_matching_messages_locally, .fini = srv_fini,
     .timeout = WITH_STARTS(15))
{
    NEED_SERVER(false);
    local l;
    local_open(&l, NULL);
    evs_nats_bridge *b = bridge(l.s, (evs_nats_opts){.prefix = "evs", .imports = ONE("orders.*")});
    ASSERT_RC(evs_nats_bridge_sync(b, 3000), 0);
    natsConnection *nc = raw_connect();
    /* From another NATS client: no headers, taken as binary data. */
    cr_assert_eq(natsConnection_PublishString(nc, "evs.orders.us", "raw bytes"), NATS_OK);
    /* Not imported: wrong depth, no prefix. */
    cr_assert_eq(natsConnection_PublishString(nc, "evs.orders.us.deep", "x"), NATS_OK);
    cr_assert_eq(natsConnection_PublishString(nc, "orders.us", "x"), NATS_OK);
    /* From another bridge: an encoded event with an origin. */
    evs_event *ev;
    evs_buf buf = {0};
    ASSERT_RC(evs_event_make(&ev, "Signup", "orders.eu", "{\"plan\":\"pro\"}", NULL), 0);
    ASSERT_RC(evs_event_to_msgpack(ev, &buf), 0);
    natsMsg *m = NULL;
    cr_assert_eq(natsMsg_Create(&m, "evs.orders.eu", NULL, buf.data, (int)buf.len), NATS_OK);
    cr_assert_eq(natsMsgHeader_Set(m, EVS_NATS_HDR_ORIGIN, "elsewhere"), NATS_OK);
    cr_assert_eq(natsConnection_PublishMsg(nc, m), NATS_OK);
    /* Encoded under another subject than its topic: refused. */
    natsMsg *m2 = NULL;
    cr_assert_eq(natsMsg_Create(&m2, "evs.orders.xx", NULL, buf.data, (int)buf.len), NATS_OK);
    cr_assert_eq(natsMsgHeader_Set(m2, EVS_NATS_HDR_ORIGIN, "elsewhere"), NATS_OK);
    cr_assert_eq(natsConnection_PublishMsg(nc, m2), NATS_OK);
    cr_assert_eq(natsConnection_Flush(nc), NATS_OK);
    cr_assert(WAIT_FOR(stats_of(b).imported + stats_of(b).import_failed == 3, 3000));
    ASSERT_RC(evs_stream_flush(l.s, EVS_FOREVER, NULL), 0);
    cr_assert_eq(sink_n(&l.k), 2);
    cr_assert_str_eq(l.k.topics[0], "orders.us");
    cr_assert_str_eq(l.k.types[0], "message");
    cr_assert_str_eq(l.k.data[0], "raw bytes");
    cr_assert_str_eq(l.k.topics[1], "orders.eu");
    cr_assert_str_eq(l.k.types[1], "Signup");
    cr_assert_str_eq(l.k.data[1], "{\"plan\":\"pro\"");
    cr_assert_eq(l.k.ids[1], 2, "a local id, not the sender's");
    evs_nats_stats bs = stats_of(b);
    cr_assert_eq(bs.imported, 2);
    cr_assert_eq(bs.import_failed, 1);
    cr_assert_eq(bs.dropped_loops, 0);
    natsMsg_Destroy(m);
    natsMsg_Destroy(m2);
    evs_event_unref(ev);
    evs_buf_free(&buf);
    natsConnection_Destroy(nc);
    ASSERT_RC(evs_nats_bridge_destroy(b), 0);
    local_close(&l);
}

Test(nats_bridge, bridges_with_different_prefixes_do_not_meet, .fini = srv_fini,
     .timeout = WITH_STARTS(15))
{
    NEED_SERVER(false);
    local a, b1, b2;
    local_open(&a, NULL);
    local_open(&b1, NULL);
    local_open(&b2, NULL);
    evs_nats_bridge *ba = bridge(a.s, (evs_nats_opts){.prefix = "one", .exports = ONE(">")});
    evs_nats_bridge *bb1 = bridge(b1.s, (evs_nats_opts){.prefix = "one", .imports = ONE(">")});
    evs_nats_bridge *bb2 = bridge(b2.s, (evs_nats_opts){.prefix = "two", .imports = ONE(">")});
    ASSERT_RC(evs_nats_bridge_sync(bb1, 3000), 0);
    ASSERT_RC(evs_nats_bridge_sync(bb2, 3000), 0);
    publish_json(a.s, "t.x", "1");
    cr_assert(WAIT_FOR(sink_n(&b1.k) == 1, 3000));
    cr_assert_str_eq(b1.k.topics[0], "t.x", "the prefix is stripped on import");
    ASSERT_RC(evs_nats_bridge_flush(ba, 3000), 0);
    ASSERT_RC(evs_nats_bridge_sync(bb2, 3000), 0);
    cr_assert_eq(sink_n(&b2.k), 0);
    evs_nats_bridge_destroy(ba);
    evs_nats_bridge_destroy(bb1);
    evs_nats_bridge_destroy(bb2);
    local_close(&a);
    local_close(&b1);
    local_close(&b2);
}

/* ------------------------------------------------------------------ */
/* Loops                                                               */

Test(nats_bridge, two_bridges_pass_each_event_across_once, .fini = srv_fini,
     .timeout = WITH_STARTS(15))
{
    NEED_SERVER(false);
    local a, b;
    local_open(&a, NULL);
    local_open(&b, NULL);
    evs_nats_opts o = {.prefix = "x", .exports = ONE(">"), .imports = (const char *const[]){">"},
                       .nimports = 1};
    evs_nats_bridge *ba = bridge(a.s, o), *bb = bridge(b.s, o);
    ASSERT_RC(evs_nats_bridge_sync(ba, 3000), 0);
    ASSERT_RC(evs_nats_bridge_sync(bb, 3000), 0);
    for (int i = 0; i < 10; i++)
        publish_json(a.s, "t.a", "1");
    cr_assert(WAIT_FOR(sink_n(&b.k) == 10, 3000));
    for (int i = 0; i < 5; i++)
        publish_json(b.s, "t.b", "2");
    cr_assert(WAIT_FOR(sink_n(&a.k) == 15, 3000));
    /* Give an echo every chance to come back, then count exactly. */
    ASSERT_RC(evs_nats_bridge_flush(ba, 3000), 0);
    ASSERT_RC(evs_nats_bridge_flush(bb, 3000), 0);
    ASSERT_RC(evs_nats_bridge_sync(ba, 3000), 0);
    ASSERT_RC(evs_nats_bridge_sync(bb, 3000), 0);
    ASSERT_RC(evs_stream_flush(a.s, EVS_FOREVER, NULL), 0);
    ASSERT_RC(evs_stream_flush(b.s, EVS_FOREVER, NULL), 0);
    cr_assert_eq(sink_n(&a.k), 15);
    cr_assert_eq(sink_n(&b.k), 15);
    /* Imports are counted after their publish returns. */
    cr_assert(WAIT_FOR(stats_of(ba).imported == 5 && stats_of(bb).imported == 10, 3000));
    evs_nats_stats sa = stats_of(ba), sb = stats_of(bb);
    cr_assert_eq(sa.exported, 10, "imports are not exported again");
    cr_assert_eq(sb.exported, 5);
    evs_nats_bridge_destroy(ba);
    evs_nats_bridge_destroy(bb);
    local_close(&a);
    local_close(&b);
}

Test(nats_bridge, a_message_with_our_origin_is_dropped_as_a_loop, .fini = srv_fini,
     .timeout = WITH_STARTS(15))
{
    NEED_SERVER(false);
    local a, b;
    local_open(&a, NULL);
    local_open(&b, NULL);
    evs_nats_bridge *ba = bridge(a.s, (evs_nats_opts){.origin = "hub-1", .exports = ONE("t.>")});
    evs_nats_bridge *bb = bridge(b.s, (evs_nats_opts){.origin = "hub-1", .imports = ONE("t.>")});
    cr_assert_str_eq(evs_nats_bridge_origin(bb), "hub-1");
    ASSERT_RC(evs_nats_bridge_sync(bb, 3000), 0);
    for (int i = 0; i < 4; i++)
        publish_json(a.s, "t.x", "1");
    cr_assert(WAIT_FOR(stats_of(bb).dropped_loops == 4, 3000));
    cr_assert_eq(stats_of(bb).imported, 0);
    cr_assert_eq(sink_n(&b.k), 0);
    evs_nats_bridge_destroy(ba);
    evs_nats_bridge_destroy(bb);
    local_close(&a);
    local_close(&b);
}

Test(nats_bridge, overlapping_patterns_forward_once, .fini = srv_fini, .timeout = WITH_STARTS(15))
{
    NEED_SERVER(false);
    local a, b;
    local_open(&a, NULL);
    local_open(&b, NULL);
    evs_nats_bridge *ba = bridge(a.s, (evs_nats_opts){
        .exports = (const char *const[]){"a.>", "a.b", "z.*"}, .nexports = 3});
    evs_nats_bridge *bb = bridge(b.s, (evs_nats_opts){
        .imports = (const char *const[]){"a.*", "a.>", "z.>"}, .nimports = 3});
    ASSERT_RC(evs_nats_bridge_sync(bb, 3000), 0);
    publish_json(a.s, "a.b", "1");
    publish_json(a.s, "a.c.d", "2");
    publish_json(a.s, "q.r", "3"); /* matches no export */
    publish_json(a.s, "z.y", "4");
    cr_assert(WAIT_FOR(sink_n(&b.k) == 3, 3000));
    ASSERT_RC(evs_nats_bridge_flush(ba, 3000), 0);
    ASSERT_RC(evs_nats_bridge_sync(bb, 3000), 0);
    ASSERT_RC(evs_stream_flush(b.s, EVS_FOREVER, NULL), 0);
    cr_assert_eq(sink_n(&b.k), 3);
    cr_assert_str_eq(b.k.topics[0], "a.b");
    cr_assert_str_eq(b.k.topics[1], "a.c.d");
    cr_assert_str_eq(b.k.topics[2], "z.y");
    cr_assert_eq(stats_of(ba).exported, 3);
    evs_nats_bridge_destroy(ba);
    evs_nats_bridge_destroy(bb);
    local_close(&a);
    local_close(&b);
}

/* ------------------------------------------------------------------ */
/* Failures                                                            */

Test(nats_bridge, nats_restarted_mid_stream_reconnects, .fini = srv_fini,
     .timeout = WITH_STARTS(20))
{
    NEED_SERVER(false);
    local a, b;
    local_open(&a, NULL);
    local_open(&b, NULL);
    evs_nats_bridge *ba = bridge(a.s, (evs_nats_opts){.exports = ONE("t.>")});
    evs_nats_bridge *bb = bridge(b.s, (evs_nats_opts){.imports = ONE("t.>")});
    ASSERT_RC(evs_nats_bridge_sync(ba, 3000), 0);
    ASSERT_RC(evs_nats_bridge_sync(bb, 3000), 0);
    for (int i = 0; i < 5; i++)
        publish_json(a.s, "t.before", "1");
    cr_assert(WAIT_FOR(sink_n(&b.k) == 5, 3000));

    server_kill(&srv, SIGKILL);
    cr_assert(WAIT_FOR(!stats_of(ba).connected && !stats_of(bb).connected, 3000));
    for (int i = 0; i < 5; i++)
        publish_json(a.s, "t.during", "2");
    ASSERT_RC(evs_stream_flush(a.s, EVS_FOREVER, NULL), 0);
    cr_assert_eq(sink_n(&a.k), 10, "the local stream works while NATS is away");
    cr_assert(WAIT_FOR(stats_of(ba).export_queued == 0, 3000));
    evs_nats_stats sa = stats_of(ba);
    cr_assert_eq(sa.exported, 5);
    cr_assert_eq(sa.export_buffered + sa.export_failed, 5, "each is counted: %llu buffered, %llu failed",
                 (unsigned long long)sa.export_buffered, (unsigned long long)sa.export_failed);
    cr_assert(WAIT_FOR(stats_of(ba).disconnects >= 1, 3000)); /* an asynchronous callback */

    cr_assert(server_run(&srv), "restart");
    cr_assert(WAIT_FOR(stats_of(ba).reconnects >= 1 && stats_of(bb).reconnects >= 1, 4000));
    ASSERT_RC(evs_nats_bridge_sync(bb, 3000), 0);
    size_t before = sink_n(&b.k);
    for (int i = 0; i < 5; i++)
        publish_json(a.s, "t.after", "3");
    cr_assert(WAIT_FOR(sink_n(&b.k) == before + 5, 3000));
    /* Core NATS: the buffered five arrive if B re-subscribed first. */
    cr_assert_geq(before, 5);
    cr_assert_leq(before, 10);
    cr_assert_str_eq(b.k.topics[before + 4], "t.after");
    evs_nats_bridge_destroy(ba);
    evs_nats_bridge_destroy(bb);
    local_close(&a);
    local_close(&b);
}

Test(nats_bridge, nats_down_at_create_connects_in_the_background, .fini = srv_fini,
     .timeout = WITH_STARTS(20))
{
    NEED_SERVER_BINARY();
    local a, b;
    local_open(&a, NULL);
    local_open(&b, NULL);
    /* Reserve the port and the store, but start nothing yet. */
    snprintf(srv.dir, sizeof(srv.dir), "/tmp/evs-nats-XXXXXX");
    cr_assert_not_null(mkdtemp(srv.dir));
    srv.port = free_port();
    snprintf(srv.url, sizeof(srv.url), "nats://127.0.0.1:%d", srv.port);
    evs_nats_bridge *ba = bridge(a.s, (evs_nats_opts){.exports = ONE("t.>")});
    evs_nats_bridge *bb = bridge(b.s, (evs_nats_opts){.imports = ONE("t.>")});
    cr_assert_not(stats_of(ba).connected);
    ASSERT_RC(evs_nats_bridge_sync(ba, 50), EVS_ETIMEDOUT);
    publish_json(a.s, "t.x", "1");
    ASSERT_RC(evs_stream_flush(a.s, EVS_FOREVER, NULL), 0);
    cr_assert_eq(sink_n(&a.k), 1);

    cr_assert(server_run(&srv), "start");
    ASSERT_RC(evs_nats_bridge_sync(ba, 4000), 0);
    ASSERT_RC(evs_nats_bridge_sync(bb, 4000), 0);
    cr_assert(stats_of(bb).connected);
    publish_json(a.s, "t.y", "2");
    cr_assert(WAIT_FOR(sink_n(&b.k) >= 1 && strcmp(b.k.topics[sink_n(&b.k) - 1], "t.y") == 0, 3000));
    evs_nats_bridge_destroy(ba);
    evs_nats_bridge_destroy(bb);
    local_close(&a);
    local_close(&b);
}

Test(nats_bridge, a_slow_local_stream_makes_nats_drop_imports_counted, .fini = srv_fini,
     .timeout = WITH_STARTS(20))
{
    NEED_SERVER(false);
    local l;
    gate g;
    gate_init(&g);
    local_open(&l, &(evs_stream_opts){.capacity = 2});
    l.k.hold = &g;
    evs_nats_bridge *b = bridge(l.s, (evs_nats_opts){.imports = ONE("s.>"), .import_pending = 4});
    ASSERT_RC(evs_nats_bridge_sync(b, 3000), 0);
    natsConnection *nc = raw_connect();
    for (int i = 0; i < 100; i++)
        cr_assert_eq(natsConnection_PublishString(nc, "s.x", "m"), NATS_OK);
    cr_assert_eq(natsConnection_Flush(nc), NATS_OK);
    cr_assert(WAIT_FOR(stats_of(b).import_dropped > 0, 3000));
    gate_open(&g);
    cr_assert(WAIT_FOR(stats_of(b).imported + stats_of(b).import_dropped == 100, 3000));
    ASSERT_RC(evs_stream_flush(l.s, EVS_FOREVER, NULL), 0);
    cr_assert_eq(sink_n(&l.k), stats_of(b).imported);
    natsConnection_Destroy(nc);
    evs_nats_bridge_destroy(b);
    local_close(&l);
    gate_destroy(&g);
}

Test(nats_bridge, a_full_export_queue_drops_and_counts, .timeout = 10)
{
    /* Durable mode with no server: nothing leaves the queue. */
    local l;
    local_open(&l, NULL);
    char url[64];
    snprintf(url, sizeof(url), "nats://127.0.0.1:%d", free_port());
    evs_nats_bridge *b = NULL;
    ASSERT_RC(evs_nats_bridge_create(&b, l.s, &(evs_nats_opts){
        .url = url, .durable = "Q", .prefix = "p", .exports = ONE(">"), .queue = 4}), 0);
    for (int i = 0; i < 10; i++)
        publish_json(l.s, "t.x", "1");
    ASSERT_RC(evs_stream_flush(l.s, EVS_FOREVER, NULL), 0);
    cr_assert_eq(sink_n(&l.k), 10);
    evs_event *ev;
    ASSERT_RC(evs_event_make(&ev, NULL, "t.y", NULL, NULL), 0);
    ASSERT_RC(evs_nats_bridge_publish(b, ev), EVS_EFULL);
    evs_event_unref(ev);
    ASSERT_RC(evs_event_make(&ev, NULL, "t.*", NULL, NULL), 0);
    ASSERT_RC(evs_nats_bridge_publish(b, ev), EVS_EINVAL);
    evs_event_unref(ev);
    evs_nats_stats st = stats_of(b);
    cr_assert_eq(st.export_queued, 4);
    cr_assert_eq(st.export_dropped, 7);
    cr_assert_not(st.ready);
    ASSERT_RC(evs_nats_bridge_flush(b, 20), EVS_ETIMEDOUT);
    ASSERT_RC(evs_nats_bridge_destroy(b), 0);
    local_close(&l);
}

/* ------------------------------------------------------------------ */
/* Durable mode (JetStream)                                            */

static void publish_n(evs_stream *s, const char *fmt, int from, int to)
{
    for (int i = from; i < to; i++) {
        char topic[32], json[32];
        snprintf(topic, sizeof(topic), fmt, i);
        snprintf(json, sizeof(json), "%d", i);
        publish_json(s, topic, json);
    }
}

Test(nats_bridge, durable_exports_survive_a_restart_and_replay_in_order, .fini = srv_fini,
     .timeout = WITH_STARTS(25))
{
    NEED_SERVER(true);
    local a, b;
    local_open(&a, NULL);
    local_open(&b, NULL);
    evs_nats_bridge *ba =
        bridge(a.s, (evs_nats_opts){.durable = "EVS", .prefix = "d", .exports = ONE(">")});
    ASSERT_RC(evs_nats_bridge_sync(ba, 4000), 0);
    publish_n(a.s, "e.%d", 0, 20);
    ASSERT_RC(evs_nats_bridge_flush(ba, 4000), 0);
    cr_assert_eq(stats_of(ba).exported, 20);

    server_kill(&srv, SIGKILL);
    cr_assert(WAIT_FOR(!stats_of(ba).connected, 3000));
    publish_n(a.s, "e.%d", 20, 30);
    ASSERT_RC(evs_nats_bridge_flush(ba, 50), EVS_ETIMEDOUT);
    cr_assert(server_run(&srv), "restart");
    ASSERT_RC(evs_nats_bridge_flush(ba, 5000), 0);
    evs_nats_stats sa = stats_of(ba);
    cr_assert_eq(sa.exported, 30);
    cr_assert_eq(sa.export_dropped, 0, "durable mode loses nothing");
    cr_assert(WAIT_FOR(stats_of(ba).reconnects >= 1, 3000));

    /* A bridge started later replays everything, in order. */
    evs_nats_bridge *bb =
        bridge(b.s, (evs_nats_opts){.durable = "EVS", .prefix = "d", .imports = ONE(">")});
    ASSERT_RC(evs_nats_bridge_sync(bb, 4000), 0);
    ASSERT_RC(evs_stream_flush(b.s, EVS_FOREVER, NULL), 0);
    cr_assert_eq(sink_n(&b.k), 30);
    for (int i = 0; i < 30; i++) {
        char t[32];
        snprintf(t, sizeof(t), "e.%d", i);
        cr_assert_str_eq(b.k.topics[i], t);
    }
    cr_assert_eq(stats_of(bb).last_seq, 30);
    evs_nats_bridge_destroy(ba);
    evs_nats_bridge_destroy(bb);
    local_close(&a);
    local_close(&b);
}

Test(nats_bridge, durable_replay_starts_at_a_sequence_or_a_time, .fini = srv_fini,
     .timeout = WITH_STARTS(20))
{
    NEED_SERVER(true);
    local a, b, c;
    local_open(&a, NULL);
    local_open(&b, NULL);
    local_open(&c, NULL);
    evs_nats_bridge *ba =
        bridge(a.s, (evs_nats_opts){.durable = "R", .prefix = "r", .exports = ONE("t.>")});
    ASSERT_RC(evs_nats_bridge_sync(ba, 4000), 0);
    publish_n(a.s, "t.%d", 1, 6);
    ASSERT_RC(evs_nats_bridge_flush(ba, 4000), 0);
    sleep_ms(20); /* JetStream stamps messages with the server's clock */
    int64_t t = evs__now_real_ns();
    sleep_ms(20);
    publish_n(a.s, "t.%d", 6, 11);
    ASSERT_RC(evs_nats_bridge_flush(ba, 4000), 0);

    evs_nats_bridge *bb = bridge(b.s, (evs_nats_opts){
        .durable = "R", .prefix = "r", .imports = ONE("t.>"), .replay = EVS_NATS_REPLAY_SEQ,
        .replay_seq = 4});
    evs_nats_bridge *bc = bridge(c.s, (evs_nats_opts){
        .durable = "R", .prefix = "r", .imports = ONE("t.>"), .replay = EVS_NATS_REPLAY_TIME,
        .replay_time_ns = t});
    ASSERT_RC(evs_nats_bridge_sync(bb, 4000), 0);
    ASSERT_RC(evs_nats_bridge_sync(bc, 4000), 0);
    ASSERT_RC(evs_stream_flush(b.s, EVS_FOREVER, NULL), 0);
    ASSERT_RC(evs_stream_flush(c.s, EVS_FOREVER, NULL), 0);
    cr_assert_eq(sink_n(&b.k), 7, "got %zu", sink_n(&b.k));
    cr_assert_str_eq(b.k.topics[0], "t.4");
    cr_assert_eq(sink_n(&c.k), 5, "got %zu, first %s", sink_n(&c.k), c.k.topics[0]);
    cr_assert_str_eq(c.k.topics[0], "t.6");
    cr_assert_str_eq(c.k.topics[4], "t.10");
    evs_nats_bridge_destroy(ba);
    evs_nats_bridge_destroy(bb);
    evs_nats_bridge_destroy(bc);
    local_close(&a);
    local_close(&b);
    local_close(&c);
}

Test(nats_bridge, a_durable_consumer_resumes_after_the_last_ack, .fini = srv_fini,
     .timeout = WITH_STARTS(20))
{
    NEED_SERVER(true);
    local a, b1, b2;
    local_open(&a, NULL);
    local_open(&b1, NULL);
    local_open(&b2, NULL);
    evs_nats_bridge *ba =
        bridge(a.s, (evs_nats_opts){.durable = "C", .prefix = "c", .exports = ONE("t.>")});
    ASSERT_RC(evs_nats_bridge_sync(ba, 4000), 0);
    publish_n(a.s, "t.%d", 0, 5);
    ASSERT_RC(evs_nats_bridge_flush(ba, 4000), 0);
    evs_nats_opts o = {.durable = "C", .prefix = "c", .imports = ONE("t.>"), .consumer = "hub"};
    evs_nats_bridge *bb = bridge(b1.s, o);
    ASSERT_RC(evs_nats_bridge_sync(bb, 4000), 0);
    ASSERT_RC(evs_stream_flush(b1.s, EVS_FOREVER, NULL), 0);
    cr_assert_eq(sink_n(&b1.k), 5);
    evs_nats_bridge_destroy(bb);

    publish_n(a.s, "t.%d", 5, 8);
    ASSERT_RC(evs_nats_bridge_flush(ba, 4000), 0);
    bb = bridge(b2.s, o);
    ASSERT_RC(evs_nats_bridge_sync(bb, 4000), 0);
    ASSERT_RC(evs_stream_flush(b2.s, EVS_FOREVER, NULL), 0);
    /* At least once: what came after the last acknowledgment, and
     * possibly messages whose acknowledgment the server had not
     * processed when the first bridge went away. */
    size_t n = sink_n(&b2.k);
    cr_assert(n >= 3 && n <= 8, "got %zu", n);
    cr_assert_str_eq(b2.k.topics[n - 3], "t.5");
    cr_assert_str_eq(b2.k.topics[n - 1], "t.7");
    evs_nats_bridge_destroy(ba);
    evs_nats_bridge_destroy(bb);
    local_close(&a);
    local_close(&b1);
    local_close(&b2);
}

Test(nats_bridge, seq_ids_make_local_ids_the_jetstream_sequences, .fini = srv_fini,
     .timeout = WITH_STARTS(20))
{
    NEED_SERVER(true);
    local w, m;
    local_open(&w, NULL);
    local_open(&m, NULL);
    evs_nats_bridge *bw =
        bridge(w.s, (evs_nats_opts){.durable = "M", .prefix = "m", .exports = ONE(">")});
    ASSERT_RC(evs_nats_bridge_sync(bw, 4000), 0);
    publish_json(w.s, "a.1", "1"); /* seq 1 */
    publish_json(w.s, "b.1", "2"); /* seq 2: not mirrored */
    publish_json(w.s, "a.2", "3"); /* seq 3 */
    publish_json(w.s, "b.2", "4"); /* seq 4: not mirrored */
    publish_json(w.s, "a.3", "5"); /* seq 5 */
    ASSERT_RC(evs_nats_bridge_flush(bw, 4000), 0);

    evs_nats_bridge *bm = bridge(m.s, (evs_nats_opts){
        .durable = "M", .prefix = "m", .imports = ONE("a.>"), .seq_ids = true});
    ASSERT_RC(evs_nats_bridge_sync(bm, 4000), 0);
    ASSERT_RC(evs_stream_flush(m.s, EVS_FOREVER, NULL), 0);
    cr_assert_eq(sink_n(&m.k), 3);
    cr_assert_eq(m.k.ids[0], 1);
    cr_assert_eq(m.k.ids[1], 3);
    cr_assert_eq(m.k.ids[2], 5);
    /* A mirror publishes through JetStream; its own message comes back
     * with the next sequence as its id. */
    evs_event *ev;
    ASSERT_RC(evs_event_make(&ev, "Local", "a.4", "6", NULL), 0);
    ASSERT_RC(evs_nats_bridge_publish(bm, ev), 0);
    evs_event_unref(ev);
    cr_assert(WAIT_FOR(sink_n(&m.k) == 4, 3000));
    cr_assert_eq(m.k.ids[3], 6);
    cr_assert_str_eq(m.k.types[3], "Local");
    cr_assert(WAIT_FOR(stats_of(bm).last_seq == 6, 3000)); /* stored after the publish */
    evs_nats_stats sm = stats_of(bm);
    cr_assert_eq(sm.id_gaps, 2);
    cr_assert_eq(sm.id_mismatches, 0);
    cr_assert_eq(sm.dropped_loops, 0);
    evs_nats_bridge_destroy(bw);
    evs_nats_bridge_destroy(bm);
    local_close(&w);
    local_close(&m);
}

Test(nats_bridge, durable_bridge_created_while_nats_is_down_loses_nothing, .fini = srv_fini,
     .timeout = WITH_STARTS(20))
{
    NEED_SERVER_BINARY();
    local a, b;
    local_open(&a, NULL);
    local_open(&b, NULL);
    snprintf(srv.dir, sizeof(srv.dir), "/tmp/evs-nats-XXXXXX");
    cr_assert_not_null(mkdtemp(srv.dir));
    srv.js = true;
    srv.port = free_port();
    snprintf(srv.url, sizeof(srv.url), "nats://127.0.0.1:%d", srv.port);
    evs_nats_bridge *ba =
        bridge(a.s, (evs_nats_opts){.durable = "DN", .prefix = "dn", .exports = ONE("t.>")});
    publish_n(a.s, "t.%d", 0, 10);
    cr_assert(WAIT_FOR(stats_of(ba).export_queued == 10, 1000));
    cr_assert(server_run(&srv), "start");
    ASSERT_RC(evs_nats_bridge_flush(ba, 5000), 0);
    cr_assert_eq(stats_of(ba).exported, 10);
    evs_nats_bridge *bb =
        bridge(b.s, (evs_nats_opts){.durable = "DN", .prefix = "dn", .imports = ONE("t.>")});
    ASSERT_RC(evs_nats_bridge_sync(bb, 4000), 0);
    ASSERT_RC(evs_stream_flush(b.s, EVS_FOREVER, NULL), 0);
    cr_assert_eq(sink_n(&b.k), 10);
    evs_nats_bridge_destroy(ba);
    evs_nats_bridge_destroy(bb);
    local_close(&a);
    local_close(&b);
}

Test(nats_bridge, create_is_enomem_or_whole, .timeout = 30)
{
    /* No server needed: create does not wait for one. For k = 0, 1, ...
     * the k-th allocation fails until create makes fewer than k + 1. */
    local l;
    local_open(&l, NULL);
    char url[64];
    snprintf(url, sizeof(url), "nats://127.0.0.1:%d", free_port());
    evs_nats_opts o = {.url = url, .durable = "A", .prefix = "p", .exports = ONE("a.>"),
                       .imports = (const char *const[]){"b.>"}, .nimports = 1};
    long injected = 0, more = 1;
    for (long k = 0; more && k < 1000; k++) {
        evs_nats_bridge *b = (evs_nats_bridge *)1;
        evs__alloc_fail_after(k);
        int rc = evs_nats_bridge_create(&b, l.s, &o);
        more = evs__alloc_fail_after(-1) > k;
        injected += more;
        if (rc != 0) {
            cr_assert_eq(rc, EVS_ENOMEM, "k=%ld: got %s", k, evs_errname(rc));
            cr_assert_null(b);
            evs_stream_stats st;
            ASSERT_RC(evs_stream_stats_get(l.s, &st), 0);
            cr_assert_eq(st.subscribers, 1, "k=%ld: a failed create left a subscription", k);
        } else {
            ASSERT_RC(evs_nats_bridge_destroy(b), 0);
        }
    }
    cr_assert_gt(injected, 5);
    local_close(&l);
}

Test(nats_bridge, retention_limits_apply_and_a_mirror_fills_the_ids_before_them,
     .fini = srv_fini, .timeout = WITH_STARTS(20))
{
    NEED_SERVER(true);
    local w, m;
    local_open(&w, NULL);
    local_open(&m, NULL);
    evs_nats_bridge *bw = bridge(w.s, (evs_nats_opts){
        .durable = "K", .prefix = "k", .exports = ONE("t.>"), .max_msgs = 3});
    ASSERT_RC(evs_nats_bridge_sync(bw, 4000), 0);
    publish_n(w.s, "t.%d", 1, 6); /* sequences 1..5; 3..5 kept */
    ASSERT_RC(evs_nats_bridge_flush(bw, 4000), 0);
    evs_nats_bridge *bm = bridge(m.s, (evs_nats_opts){
        .durable = "K", .prefix = "k", .imports = ONE("t.>"), .seq_ids = true});
    ASSERT_RC(evs_nats_bridge_sync(bm, 4000), 0);
    ASSERT_RC(evs_stream_flush(m.s, EVS_FOREVER, NULL), 0);
    cr_assert_eq(sink_n(&m.k), 3);
    cr_assert_str_eq(m.k.topics[0], "t.3");
    cr_assert_eq(m.k.ids[0], 3);
    cr_assert_eq(m.k.ids[2], 5);
    cr_assert_eq(stats_of(bm).id_gaps, 2);
    evs_nats_bridge_destroy(bw);
    evs_nats_bridge_destroy(bm);
    local_close(&w);
    local_close(&m);
}

#endif /* EVS_HAVE_NATS */
