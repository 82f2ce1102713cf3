/*
 * Feeds: publishers inside the hub, one thread each.
 *
 *   demo   a few sample events a second, what `make run` shows: prices
 *          on demo.ticker.<SYM> (type "message", JSON data), orders on
 *          demo.orders.<region> (type "order") and sign-ups on
 *          demo.users.signup (type "signup", text data).
 *   lines  --stdin: every line read from a descriptor becomes an event.
 *          A JSON object with a "topic", "type" or "data" member is that
 *          event ("data": a string is published as text, any other JSON
 *          value as JSON, none or null as empty); any other line is text
 *          data to the default topic. Lines over EVS_HUB_MAX_BODY bytes
 *          are skipped, so memory stays bounded. End of input ends the
 *          feed, not the hub.
 *
 * A feed's thread waits on its stop eventfd as well as its timer or
 * input, so evs_hub_feed_stop returns promptly. Problems with single
 * lines are reported on stderr and the feed goes on.
 */
#include "hub.h"

#include <jansson.h>

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* How often the demo publishes a round of events. */
#define DEMO_PERIOD_MS 250
/* Bytes read from the input at a time. */
#define READ_CHUNK 65536

struct evs_hub_feed {
    evs_hub_pub *pub;
    pthread_t thread;
    int stopfd;         /* an eventfd: readable once stop was asked */
    int fd;             /* lines: the input (the caller's) */
    char *topic;        /* lines: the default topic */
    /* lines: the line being assembled (the feed thread's) */
    char *line;
    size_t len;
    bool skipping;      /* the current line is over the limit */
    uint64_t lineno;
};

/* Wait up to `ms` for stop; also returns when `fd` (>= 0) is readable.
 * Returns 1 when stop was asked, 0 otherwise. */
static int wait_stop(evs_hub_feed *f, int fd, int ms)
{
    struct pollfd p[2] = {{.fd = f->stopfd, .events = POLLIN}, {.fd = fd, .events = POLLIN}};
    int n = poll(p, fd >= 0 ? 2 : 1, ms);
    if (n < 0 && errno != EINTR)
        return 1; /* cannot wait: stop rather than spin */
    return n > 0 && (p[0].revents & POLLIN) != 0;
}

static void report(const char *what, uint64_t lineno, int rc)
{
    if (lineno > 0)
        fprintf(stderr, "evstream serve: %s line %" PRIu64 ": %s\n", what, lineno, evs_strerror(rc));
    else
        fprintf(stderr, "evstream serve: %s: %s\n", what, evs_strerror(rc));
}

/* ------------------------------------------------------------------ */
/* Demo                                                                */

static void demo_round(evs_hub_feed *f, unsigned round, long *cents)
{
    static const char *const syms[] = {"ABC", "XYZ"};
    static const char *const regions[] = {"eu", "us"};
    char json[128], subject[64];
    int rc = 0;
    for (int i = 0; i < 2 && rc == 0; i++) {
        cents[i] += (long)((round * 7919u + (unsigned)i * 104729u) % 41u) - 20; /* a walk */
        snprintf(subject, sizeof subject, "demo.ticker.%s", syms[i]);
        snprintf(json, sizeof json, "{\"sym\":\"%s\",\"price\":%ld.%02ld}", syms[i],
                 cents[i] / 100, cents[i] % 100);
        rc = evs_hub_pub_send(f->pub, subject, NULL, json, strlen(json), EVS_CONTENT_JSON, NULL);
    }
    if (rc == 0 && round % 4 == 0) {
        snprintf(subject, sizeof subject, "demo.orders.%s", regions[(round / 4) % 2]);
        snprintf(json, sizeof json, "{\"order\":%u,\"sku\":%u,\"qty\":%u}", round / 4,
                 100 + round % 17, 1 + round % 5);
        rc = evs_hub_pub_send(f->pub, subject, "order", json, strlen(json), EVS_CONTENT_JSON, NULL);
    }
    if (rc == 0 && round % 10 == 0) {
        snprintf(json, sizeof json, "user %u signed up", round / 10);
        rc = evs_hub_pub_send(f->pub, "demo.users.signup", "signup", json, strlen(json),
                              EVS_CONTENT_TEXT, NULL);
    }
    if (rc != 0 && rc != EVS_ECLOSED)
        report("demo", 0, rc);
}

static void *demo_main(void *arg)
{
    evs_hub_feed *f = arg;
    long cents[2] = {10000, 4200};
    for (unsigned round = 0; !wait_stop(f, -1, round == 0 ? 0 : DEMO_PERIOD_MS); round++)
        demo_round(f, round, cents);
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Lines                                                               */

/* Publish a JSON envelope {"topic":..,"type":..,"data":..}. */
static int publish_envelope(evs_hub_feed *f, json_t *o)
{
    json_t *topic = json_object_get(o, "topic"), *type = json_object_get(o, "type");
    json_t *data = json_object_get(o, "data");
    if ((topic != NULL && !json_is_string(topic)) || (type != NULL && !json_is_string(type)))
        return EVS_EINVAL;
    const char *t = topic != NULL ? json_string_value(topic) : f->topic;
    const char *y = type != NULL ? json_string_value(type) : NULL;
    if (data == NULL || json_is_null(data))
        return evs_hub_pub_send(f->pub, t, y, NULL, 0, EVS_CONTENT_TEXT, NULL);
    if (json_is_string(data))
        return evs_hub_pub_send(f->pub, t, y, json_string_value(data), json_string_length(data),
                                EVS_CONTENT_TEXT, NULL);
    char *text = json_dumps(data, JSON_COMPACT | JSON_ENCODE_ANY);
    if (text == NULL)
        return EVS_ENOMEM;
    int rc = evs_hub_pub_send(f->pub, t, y, text, strlen(text), EVS_CONTENT_JSON, NULL);
    free(text);
    return rc;
}

static void publish_line(evs_hub_feed *f, const char *line, size_t len)
{
    if (len > 0 && line[len - 1] == '\r')
        len--;
    if (len == 0)
        return;
    int rc;
    json_t *o = line[0] == '{' ? json_loadb(line, len, 0, NULL) : NULL;
    if (json_is_object(o) && (json_object_get(o, "topic") != NULL ||
                              json_object_get(o, "type") != NULL ||
                              json_object_get(o, "data") != NULL))
        rc = publish_envelope(f, o);
    else
        rc = evs_hub_pub_send(f->pub, f->topic, NULL, line, len, EVS_CONTENT_TEXT, NULL);
    json_decref(o);
    if (rc != 0 && rc != EVS_ECLOSED)
        report("stdin", f->lineno, rc);
}

/* Split what was read into lines; keep the unfinished one. */
static void take_bytes(evs_hub_feed *f, const char *p, size_t n)
{
    while (n > 0) {
        const char *nl = memchr(p, '\n', n);
        size_t part = nl != NULL ? (size_t)(nl - p) : n;
        if (!f->skipping && f->len + part > EVS_HUB_MAX_BODY + 1) { /* + 1: a CR */
            fprintf(stderr, "evstream serve: stdin line %" PRIu64 ": over 1 MiB, skipped\n",
                    f->lineno + 1);
            f->skipping = true;
            f->len = 0;
        }
        if (!f->skipping) {
            memcpy(f->line + f->len, p, part);
            f->len += part;
        }
        if (nl == NULL)
            return;
        f->lineno++;
        if (!f->skipping)
            publish_line(f, f->line, f->len);
        f->skipping = false;
        f->len = 0;
        p += part + 1;
        n -= part + 1;
    }
}

static void *lines_main(void *arg)
{
    evs_hub_feed *f = arg;
    char chunk[READ_CHUNK];
    while (!wait_stop(f, f->fd, -1)) {
        ssize_t n = read(f->fd, chunk, sizeof chunk);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n < 0)
            fprintf(stderr, "evstream serve: reading stdin: %s\n", strerror(errno));
        if (n <= 0) {
            if (n == 0 && f->len > 0 && !f->skipping) { /* a last line without LF */
                f->lineno++;
                publish_line(f, f->line, f->len);
            }
            return NULL;
        }
        take_bytes(f, chunk, (size_t)n);
    }
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Start and stop                                                      */

static void feed_free(evs_hub_feed *f)
{
    if (f->stopfd >= 0)
        close(f->stopfd);
    free(f->line);
    free(f->topic);
    free(f);
}

static int start(evs_hub_feed *f, void *(*main_fn)(void *), evs_hub_feed **out)
{
    if ((f->stopfd = eventfd(0, EFD_CLOEXEC)) < 0) {
        feed_free(f);
        return EVS_ESYSTEM;
    }
    int rc = pthread_create(&f->thread, NULL, main_fn, f);
    if (rc != 0) {
        feed_free(f);
        return EVS_ESYSTEM;
    }
    *out = f;
    return 0;
}

int evs_hub_feed_demo(evs_hub_feed **out, evs_hub_pub *p)
{
    *out = NULL;
    evs_hub_feed *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return EVS_ENOMEM;
    f->pub = p;
    f->fd = -1;
    return start(f, demo_main, out);
}

int evs_hub_feed_lines(evs_hub_feed **out, evs_hub_pub *p, int fd, const char *topic)
{
    *out = NULL;
    evs_hub_feed *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return EVS_ENOMEM;
    f->pub = p;
    f->fd = fd;
    f->stopfd = -1;
    f->topic = strdup(topic);
    f->line = malloc(EVS_HUB_MAX_BODY + 1);
    if (f->topic == NULL || f->line == NULL) {
        feed_free(f);
        return EVS_ENOMEM;
    }
    return start(f, lines_main, out);
}

void evs_hub_feed_stop(evs_hub_feed *f)
{
    if (f == NULL)
        return;
    if (eventfd_write(f->stopfd, 1) != 0)
        fprintf(stderr, "evstream serve: eventfd_write: %s\n", strerror(errno));
    pthread_join(f->thread, NULL);
    feed_free(f);
}
