/*
 * Two hubs sharing topics through NATS JetStream.
 *
 * Hub A exports "orders.>" into the JetStream stream DEMO. Hub B starts
 * later, mirrors DEMO into its own TopicStream (seq_ids: B's event ids
 * are DEMO's sequence numbers, the same on every hub) and so first
 * replays what A published before it existed, then gets A's new events
 * live.
 *
 *   nats_bridge [URL]
 *
 * With a URL it uses that server (which must run with -js). Without one
 * it starts a nats-server of its own on a free loopback port, and if
 * there is none installed (or the library was built without libnats) it
 * says so and exits 0.
 */
#include <evstream.h>

#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static pid_t server_pid;
static char  store[] = "/tmp/evs-nats-example-XXXXXX";

/* Start nats-server -js on a free loopback port; false if there is none. */
static bool start_server(char *url, size_t cap)
{
    const char *paths[] = {"/usr/sbin/nats-server", "/usr/bin/nats-server",
                           "/usr/local/bin/nats-server", "/usr/local/sbin/nats-server"};
    const char *path = NULL;
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]) && path == NULL; i++)
        if (access(paths[i], X_OK) == 0)
            path = paths[i];
    if (path == NULL || mkdtemp(store) == NULL)
        return false;
    /* A free port: bind port 0 and read what the kernel chose. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0)
        return false;
    close(fd);
    char port[16];
    snprintf(port, sizeof(port), "%d", ntohs(a.sin_port));
    snprintf(url, cap, "nats://127.0.0.1:%s", port);
    if ((server_pid = fork()) == 0) {
        freopen("/dev/null", "w", stdout);
        freopen("/dev/null", "w", stderr);
        execl(path, "nats-server", "-a", "127.0.0.1", "-p", port, "-js", "-sd", store,
              (char *)NULL);
        _exit(127);
    }
    return server_pid > 0;
}

static void stop_server(void)
{
    if (server_pid > 0) {
        kill(server_pid, SIGTERM);
        waitpid(server_pid, NULL, 0);
        char cmd[64];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", store);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", store);
    }
}

/* Hub B's subscriber: runs on B's dispatcher thread. */
static int on_event(const evs_event *ev, void *user)
{
    (void)user;
    if (evs_event_type(ev) == EVS_TYPE_HEARTBEAT) /* a filled sequence gap */
        return 0;
    printf("hub B: id %llu %s %s\n", (unsigned long long)evs_event_id(ev),
           evs_event_type_name(ev), evs_event_topic(ev));
    return 0;
}

static int publish(evs_stream *s, const char *topic, const char *json)
{
    evs_event *ev;
    int rc = evs_event_make(&ev, "Purchase", topic, json, NULL);
    if (rc == 0) {
        rc = evs_stream_publish(s, ev);
        evs_event_unref(ev);
    }
    return rc;
}

static int run(const char *url)
{
    evs_stream *a = NULL, *b = NULL;
    evs_nats_bridge *ba = NULL, *bb = NULL;
    evs_sub *sub;
    const char *orders[] = {"orders.>"};
    int rc;
    if ((rc = evs_stream_create(&a, &(evs_stream_opts){.topics = true})) != 0 ||
        (rc = evs_stream_create(&b, &(evs_stream_opts){.topics = true})) != 0)
        goto out;
    /* Hub A: its orders go to JetStream. */
    rc = evs_nats_bridge_create(&ba, a, &(evs_nats_opts){
        .url = url, .durable = "DEMO", .prefix = "demo", .exports = orders, .nexports = 1});
    if (rc != 0 || (rc = evs_nats_bridge_sync(ba, 5000)) != 0)
        goto out;
    publish(a, "orders.eu", "{\"sku\":1}");
    publish(a, "orders.us", "{\"sku\":2}");
    if ((rc = evs_nats_bridge_flush(ba, 5000)) != 0)
        goto out;
    printf("hub A: 2 orders stored in JetStream\n");

    /* Hub B starts later: replay, then live. */
    if ((rc = evs_subscribe(&sub, b, "orders.>", on_event, NULL, NULL, NULL)) != 0)
        goto out;
    rc = evs_nats_bridge_create(&bb, b, &(evs_nats_opts){
        .url = url, .durable = "DEMO", .prefix = "demo", .imports = orders, .nimports = 1,
        .seq_ids = true});
    if (rc != 0 || (rc = evs_nats_bridge_sync(bb, 5000)) != 0)
        goto out;
    printf("hub B: replayed\n");
    fflush(stdout);
    publish(a, "orders.eu", "{\"sku\":3}");
    evs_nats_stats st = {0};
    for (int i = 0; i < 500 && st.imported < 3; i++) {
        nanosleep(&(struct timespec){0, 10 * 1000000L}, NULL);
        evs_nats_bridge_stats_get(bb, &st);
    }
    evs_stream_flush(b, EVS_FOREVER, NULL);
    printf("hub B: imported %llu, last sequence %llu\n", (unsigned long long)st.imported,
           (unsigned long long)st.last_seq);
    rc = st.imported == 3 ? 0 : EVS_ETIMEDOUT;
out:
    if (rc != 0)
        fprintf(stderr, "nats_bridge: %s\n", evs_strerror(rc));
    evs_nats_bridge_destroy(bb); /* bridges first: they use the streams */
    evs_nats_bridge_destroy(ba);
    evs_stream_destroy(b);
    evs_stream_destroy(a);
    return rc;
}

int main(int argc, char **argv)
{
    char url[64];
    if (!evs_nats_supported()) {
        printf("NATS bridge: %s (build with libnats-dev)\n", evs_strerror(EVS_ENOTSUP));
        printf("nats_bridge: done (skipped)\n");
        return 0;
    }
    if (argc > 1) {
        snprintf(url, sizeof(url), "%s", argv[1]);
    } else if (!start_server(url, sizeof(url))) {
        printf("no nats-server installed: nothing to bridge to\n");
        printf("nats_bridge: done (skipped)\n");
        return 0;
    }
    int rc = run(url); /* the bridges retry until the server is up */
    stop_server();
    if (rc != 0)
        return 1;
    printf("nats_bridge: done\n");
    return 0;
}
