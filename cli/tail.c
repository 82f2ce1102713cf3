/*
 * `evstream tail URL`: a client for any server-sent events endpoint.
 * Prints one JSON object a line, {"id":..,"event":..,"data":..}, flushed
 * per line, so that it pipes into jq, wc -l or a script.
 *
 * HTTP is libcurl's; the stream is parsed by the library's SSE parser
 * (any line ending, comments, "data:" with or without a space, ids that
 * persist across messages), so "id" is the standard's last event id and
 * "event" is "message" when the stream names none. Like an EventSource
 * it reconnects when the stream ends or breaks, sending Last-Event-ID,
 * after the server's retry: delay (or --retry-ms); an answer that is not
 * an event stream ends it (5xx and 429 are retried: a hub at its client
 * cap answers 503).
 *
 * One thread. Output errors (a closed pipe) end it quietly.
 */
#include "cli.h"

#include <curl/curl.h>
#include <jansson.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* The reconnection delay before the server sets one (browsers use about
 * this much). */
#define DEFAULT_RETRY_MS 3000
#define MAX_HEADERS 32

/* How a connection ended. */
enum outcome {
    RECONNECT, /* the stream ended or broke: connect again */
    DONE,      /* --max events printed, or the output is gone: exit 0 */
    STOP,      /* the server said no more (204): exit 0 */
    FAIL       /* not an event stream, or an HTTP error: exit 1 */
};

struct tail {
    const char *url;
    uint64_t max;      /* events to print; 0 = no limit */
    uint64_t printed;
    uint64_t retry_ms; /* --retry-ms: the delay until the server sets one */
    const char *first_id; /* --last-event-id: sent until the stream sets one */
    const char *headers[MAX_HEADERS];
    size_t nheaders;
    evs_sse_parser *parser;
    CURL *curl;
    /* This connection's state. */
    bool checked;      /* the answer's status and type were looked at */
    enum outcome end;  /* set by the callbacks to stop the transfer */
    char why[160];     /* for FAIL: what was wrong */
};

static const char usage_text[] =
    "usage: evstream tail [options] URL\n"
    "\n"
    "Read server-sent events from URL and print each as one JSON line:\n"
    "  {\"id\":\"<last event id>\",\"event\":\"<type>\",\"data\":\"<data>\"}\n"
    "Reconnects with Last-Event-ID when the stream ends, after the server's\n"
    "retry: delay.\n"
    "\n"
    "  --max N              exit after N events\n"
    "  --last-event-id ID   resume after ID on the first connection\n"
    "  --retry-ms N         reconnection delay until the server sends retry:\n"
    "                       (default 3000)\n"
    "  -H, --header 'Name: value'   an extra request header (repeatable),\n"
    "                       e.g. 'Authorization: Bearer TOKEN'\n"
    "  --help               this text\n"
    "\n"
    "Exit status: 0 after --max events, or when the server answers 204;\n"
    "1 when the answer is not an event stream; 2 for a bad command line.\n";

/* ------------------------------------------------------------------ */
/* Output                                                              */

/* Print one message as a JSON line. Returns false when the output is
 * gone (or out of memory): then stop. */
static bool print_message(const evs_sse_message *m)
{
    /* The parser's strings are UTF-8 (invalid bytes were replaced), so
     * jansson accepts them; NUL is written as \u0000. */
    json_t *o = json_object();
    if (o == NULL || json_object_set_new(o, "id", json_stringn(m->id, m->id_len)) != 0 ||
        json_object_set_new(o, "event", json_stringn(m->event, m->event_len)) != 0 ||
        json_object_set_new(o, "data", json_stringn(m->data, m->data_len)) != 0) {
        json_decref(o);
        fprintf(stderr, "evstream tail: cannot render a message\n");
        return false;
    }
    char *line = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    bool ok = line != NULL && fputs(line, stdout) >= 0 && putchar('\n') != EOF &&
              fflush(stdout) == 0;
    free(line);
    return ok;
}

/* The parser's callback: one message. Non-zero stops the feed. */
static int on_message(const evs_sse_message *m, void *user)
{
    struct tail *t = user;
    if (!print_message(m)) {
        t->end = DONE;
        return 1;
    }
    if (t->max > 0 && ++t->printed >= t->max) {
        t->end = DONE;
        return 1;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* One connection                                                      */

/* What the answer's status line and type say. */
enum answer { STREAM, RETRY, NO_MORE, BAD };

/* Look at the answer once: 200 text/event-stream is a stream. */
static enum answer check_answer(struct tail *t)
{
    long code = 0;
    const char *type = NULL;
    t->checked = true;
    curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_getinfo(t->curl, CURLINFO_CONTENT_TYPE, &type);
    if (code == 204)
        return NO_MORE;
    if (code == 0 || code >= 500 || code == 429) {
        snprintf(t->why, sizeof t->why, "HTTP %ld", code);
        return RETRY;
    }
    if (code != 200) {
        snprintf(t->why, sizeof t->why, "HTTP %ld from %s", code, t->url);
        return BAD;
    }
    size_t n = type != NULL ? strcspn(type, "; \t") : 0;
    if (type == NULL || n != 17 || strncasecmp(type, "text/event-stream", 17) != 0) {
        snprintf(t->why, sizeof t->why, "not an event stream (Content-Type: %s)",
                 type != NULL ? type : "none");
        return BAD;
    }
    return STREAM;
}

static const enum outcome answer_outcome[] = {
    [STREAM] = RECONNECT, [RETRY] = RECONNECT, [NO_MORE] = STOP, [BAD] = FAIL};

/* libcurl's write callback: body bytes go to the parser. Returning
 * less than given aborts the transfer. */
static size_t on_body(char *p, size_t size, size_t nmemb, void *user)
{
    struct tail *t = user;
    size_t len = size * nmemb;
    if (!t->checked) {
        enum answer a = check_answer(t);
        if (a != STREAM) {
            t->end = answer_outcome[a];
            return 0;
        }
    }
    int rc = evs_sse_parser_feed(t->parser, p, len, NULL, on_message, t);
    if (rc == 0)
        return len;
    if (rc < 0) {
        snprintf(t->why, sizeof t->why, "parsing the stream: %s", evs_strerror(rc));
        t->end = FAIL;
    }
    return 0;
}

static struct curl_slist *request_headers(struct tail *t)
{
    struct curl_slist *h = NULL, *n;
    char last[512];
    const char *id = evs_sse_parser_last_id(t->parser, NULL);
    if (id[0] == '\0' && t->first_id != NULL)
        id = t->first_id;
    h = curl_slist_append(h, "Accept: text/event-stream");
    if (h != NULL && (n = curl_slist_append(h, "Cache-Control: no-cache")) != NULL)
        h = n;
    if (h != NULL && id[0] != '\0' && strlen(id) < sizeof last - 16) {
        snprintf(last, sizeof last, "Last-Event-ID: %s", id);
        if ((n = curl_slist_append(h, last)) != NULL)
            h = n;
    }
    for (size_t i = 0; h != NULL && i < t->nheaders; i++)
        if ((n = curl_slist_append(h, t->headers[i])) != NULL)
            h = n;
    return h;
}

/* Connect, read until the stream ends, and say what comes next. */
static enum outcome connect_once(struct tail *t)
{
    struct curl_slist *headers = request_headers(t);
    t->checked = false;
    t->end = RECONNECT;
    t->why[0] = '\0';
    curl_easy_setopt(t->curl, CURLOPT_HTTPHEADER, headers);
    CURLcode res = curl_easy_perform(t->curl);
    curl_easy_setopt(t->curl, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(headers);
    if (t->end != RECONNECT)
        return t->end;
    if (!t->checked && res == CURLE_OK) { /* an answer without a body */
        enum answer a = check_answer(t);
        if (a != STREAM)
            return answer_outcome[a];
    }
    if (t->why[0] == '\0')
        snprintf(t->why, sizeof t->why, "%s",
                 res == CURLE_OK ? "the stream ended" : curl_easy_strerror(res));
    return RECONNECT;
}

static void sleep_ms(uint64_t ms)
{
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static int run(struct tail *t)
{
    for (bool first = true;; first = false) {
        if (!first)
            evs_sse_parser_reset(t->parser); /* a new stream; the last id stays */
        enum outcome o = connect_once(t);
        if (o == DONE || o == STOP)
            return 0;
        if (o == FAIL) {
            fprintf(stderr, "evstream tail: %s\n", t->why);
            return 1;
        }
        int64_t server = evs_sse_parser_retry(t->parser);
        uint64_t delay = server >= 0 ? (uint64_t)server : t->retry_ms;
        fprintf(stderr, "evstream tail: %s; reconnecting in %" PRIu64 " ms\n", t->why, delay);
        sleep_ms(delay);
    }
}

/* ------------------------------------------------------------------ */
/* Command line                                                        */

/* Returns -1 to go on, or the exit status. */
static int parse_args(int argc, char **argv, struct tail *t)
{
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        int m;
        if ((m = evs_cli_opt(argc, argv, &i, "--max", &v)) != 0) {
            if (m < 0 || evs_cli_uint(v, 1, UINT64_MAX, &t->max) != 0)
                return evs_cli_usage_error("tail", "--max wants a number of events (1 or more)");
        } else if ((m = evs_cli_opt(argc, argv, &i, "--retry-ms", &v)) != 0) {
            if (m < 0 || evs_cli_uint(v, 0, 3600 * 1000, &t->retry_ms) != 0)
                return evs_cli_usage_error("tail", "--retry-ms wants milliseconds");
        } else if ((m = evs_cli_opt(argc, argv, &i, "--last-event-id", &v)) != 0) {
            if (m < 0 || strpbrk(v, "\r\n") != NULL)
                return evs_cli_usage_error("tail", "--last-event-id wants an id");
            t->first_id = v;
        } else if ((m = evs_cli_opt(argc, argv, &i, "--header", &v)) != 0 ||
                   (m = evs_cli_opt(argc, argv, &i, "-H", &v)) != 0) {
            if (m < 0 || strchr(v, ':') == NULL || strpbrk(v, "\r\n") != NULL)
                return evs_cli_usage_error("tail", "--header wants 'Name: value'");
            if (t->nheaders == MAX_HEADERS)
                return evs_cli_usage_error("tail", "at most %d headers", MAX_HEADERS);
            t->headers[t->nheaders++] = v;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(usage_text, stdout);
            return 0;
        } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
            return evs_cli_usage_error("tail", "unknown option '%s'", argv[i]);
        } else if (t->url != NULL) {
            return evs_cli_usage_error("tail", "one URL only");
        } else {
            t->url = argv[i];
        }
    }
    if (t->url == NULL)
        return evs_cli_usage_error("tail", "which URL?");
    return -1;
}

static int setup(struct tail *t)
{
    if (evs_sse_parser_create(&t->parser, NULL) != 0 || (t->curl = curl_easy_init()) == NULL) {
        fprintf(stderr, "evstream tail: out of memory\n");
        return 1;
    }
    curl_easy_setopt(t->curl, CURLOPT_URL, t->url);
    curl_easy_setopt(t->curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(t->curl, CURLOPT_WRITEDATA, t);
    curl_easy_setopt(t->curl, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(t->curl, CURLOPT_MAXREDIRS, 5L);
    curl_easy_setopt(t->curl, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    curl_easy_setopt(t->curl, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(t->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(t->curl, CURLOPT_USERAGENT, "evstream-tail/" EVS_VERSION_STRING);
    return 0;
}

int evs_cli_tail(int argc, char **argv)
{
    struct tail t = {.retry_ms = DEFAULT_RETRY_MS};
    int status = parse_args(argc, argv, &t);
    if (status >= 0)
        return status;
    /* A reader that goes away (`tail | head -n 1`) must end us through
     * the write error (DONE: exit 0), not kill us with SIGPIPE. */
    signal(SIGPIPE, SIG_IGN);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "evstream tail: cannot initialise libcurl\n");
        return 1;
    }
    status = setup(&t);
    if (status == 0)
        status = run(&t);
    curl_easy_cleanup(t.curl);
    evs_sse_parser_destroy(t.parser);
    curl_global_cleanup();
    return status;
}
