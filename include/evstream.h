/*
 * evstream: in-process publish/subscribe event streaming.
 *
 * This header is the whole public API. Every declaration carries its
 * contract: what it returns, who owns each pointer afterwards, which
 * threads may call it and whether it blocks. A function is NOT safe to
 * call concurrently on one object unless its comment says so.
 *
 * Conventions
 *   - Functions return 0 on success or a negative EVS_E* code; a positive
 *     value only where the comment says it is a count or a size.
 *   - Constructors write the new object through an out-parameter, which
 *     is NULL on failure. A failed call has no effect.
 *   - Options structs are plain data whose zero value is the default;
 *     the library copies them. NULL options mean every default.
 *   - Every destroy/unref function accepts NULL.
 *
 * SPEC.md is the design of record (architecture, memory model,
 * guarantees); this header is the reference.
 */
#ifndef EVSTREAM_H
#define EVSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define EVS_VERSION_MAJOR 0
#define EVS_VERSION_MINOR 1
#define EVS_VERSION_PATCH 0
#define EVS_VERSION_STRING "0.1.0"

/* ------------------------------------------------------------------ */
/* Errors                                                              */
/* ------------------------------------------------------------------ */

/*
 * The one table of error codes. Codes are never renumbered; new ones are
 * appended. X(name, value, message).
 */
#define EVS_ERRORS(X)                                                        \
    X(EINVAL,    -1,  "invalid argument")                                    \
    X(ENOMEM,    -2,  "out of memory")                                       \
    X(ECLOSED,   -3,  "stream is closed")                                    \
    X(EFULL,     -4,  "stream queue is full")                                \
    X(ETIMEDOUT, -5,  "timed out")                                           \
    X(ESEALED,   -6,  "event is published and immutable")                    \
    X(ENOTFOUND, -7,  "no such key")                                         \
    X(EBADMSG,   -8,  "malformed input")                                     \
    X(ETOOBIG,   -9,  "input exceeds a limit")                               \
    X(EDEADLK,   -10, "would wait for the calling thread itself")            \
    X(ESYSTEM,   -11, "the system refused a resource (thread, clock)")       \
    X(ETYPE,     -12, "value has another type")                          \
    X(EBUSY,     -13, "object is running; stop it first")                    \
    X(ENOTSUP,   -14, "not compiled in")

enum evs_error {
    EVS_OK = 0,
#define EVS__ERR_ENUM(name, value, msg) EVS_##name = (value),
    EVS_ERRORS(EVS__ERR_ENUM)
#undef EVS__ERR_ENUM
};

/*
 * A human-readable message for any int: "success" for 0, the table's
 * message for a known code, "unknown error" otherwise.
 * Ownership: returns a string literal; never free it.
 * Threads: any thread.
 */
const char *evs_strerror(int code);

/*
 * The code's symbolic name ("EVS_EINVAL"), "EVS_OK" for 0, or
 * "EVS_EUNKNOWN" for a code not in the table.
 * Ownership: returns a string literal.
 * Threads: any thread.
 */
const char *evs_errname(int code);

/*
 * A sentence saying why the calling thread's last failure that left one
 * failed, for people and logs ("single_publisher cannot be combined with
 * heartbeat_ms: ...", "JSON line 1 column 12: duplicate object key near
 * '\"a\"'"); "" until then. The int code stays the contract; a call
 * whose comment says it leaves a message sets it when it fails, and
 * successful calls leave it as it was.
 * Ownership: thread-local storage, valid until this thread's next call
 * that sets it; never free it.
 * Threads: any thread; each thread reads its own.
 */
const char *evs_last_error(void);

/* ------------------------------------------------------------------ */
/* Growable byte buffer                                                */
/* ------------------------------------------------------------------ */

/*
 * A plain-data appendable buffer used by the encoders. Zero-initialise
 * it ({0}); encoders append to it and keep `data` NUL-terminated (the
 * NUL is not counted in `len`). Free it with evs_buf_free().
 */
typedef struct evs_buf {
    char  *data; /* owned by the buffer; NULL while empty */
    size_t len;  /* bytes written, without the trailing NUL */
    size_t cap;  /* bytes allocated */
} evs_buf;

/*
 * Make room for at least `extra` more bytes (plus the trailing NUL).
 * Returns 0 or EVS_ENOMEM (the buffer is unchanged then).
 * Threads: not concurrently on one buffer.
 */
int evs_buf_reserve(evs_buf *b, size_t extra);

/*
 * Append `len` bytes. Returns 0 or EVS_ENOMEM (buffer unchanged).
 * Ownership: copies `p`.
 * Threads: not concurrently on one buffer.
 */
int evs_buf_append(evs_buf *b, const void *p, size_t len);

/* Set len to 0 and keep the memory. Threads: not concurrently. */
void evs_buf_reset(evs_buf *b);

/* Free the memory and zero the struct. Accepts NULL.
 * Threads: not concurrently with any other use of the buffer. */
void evs_buf_free(evs_buf *b);

/* ------------------------------------------------------------------ */
/* Events                                                              */
/* ------------------------------------------------------------------ */

typedef struct evs_event evs_event;

/* The event's type. Custom names use EVS_TYPE_CUSTOM plus a name. */
typedef enum evs_type {
    EVS_TYPE_MESSAGE = 0,
    EVS_TYPE_ERROR,
    EVS_TYPE_CONNECT,
    EVS_TYPE_DISCONNECT,
    EVS_TYPE_HEARTBEAT,
    EVS_TYPE_CUSTOM
} evs_type;

/* How the data bytes are to be read. */
typedef enum evs_content {
    EVS_CONTENT_BINARY = 0, /* opaque bytes; JSON renders them as base64 */
    EVS_CONTENT_TEXT,       /* UTF-8 text (invalid sequences render as U+FFFD) */
    EVS_CONTENT_JSON,       /* one JSON value, validated when set */
    EVS_CONTENT_MSGPACK     /* one msgpack object, validated when set */
} evs_content;

/*
 * Limits on what an event may hold. Inputs over a limit give EVS_ETOOBIG
 * (a subject or pattern over the topic limit is EVS_EINVAL). These are
 * the defaults; evs_limits_set changes them at run time. SPEC.md lists
 * them with their reasons.
 */
#define EVS_MAX_TOPIC     4096u           /* bytes in a topic or pattern */
#define EVS_MAX_TYPE_NAME 256u            /* bytes in a custom type name */
#define EVS_MAX_DATA      (64u << 20)     /* bytes of data: 64 MiB */
#define EVS_MAX_META      (1u << 20)      /* bytes of encoded metadata */
#define EVS_MAX_DEPTH     24u             /* msgpack/JSON nesting depth */

/* The largest value evs_limits_set accepts for each limit: msgpack's
 * lengths are 32-bit, and the scanner's stack holds 64 levels of which
 * the wire format uses two around the data. */
#define EVS_LIMITS_TOPIC_CEILING     (64u << 10)
#define EVS_LIMITS_TYPE_NAME_CEILING 4096u
#define EVS_LIMITS_DATA_CEILING      ((size_t)UINT32_MAX) /* data and metadata */
#define EVS_LIMITS_DEPTH_CEILING     60u

/* The limits in force; zero in a field means its default (EVS_MAX_*). */
typedef struct evs_limits {
    size_t   max_topic;     /* bytes in a topic, subject or pattern;
                               1..EVS_LIMITS_TOPIC_CEILING */
    size_t   max_type_name; /* bytes in a custom type name (built-in
                               names are always accepted);
                               1..EVS_LIMITS_TYPE_NAME_CEILING */
    size_t   max_data;      /* bytes of data; 1..EVS_LIMITS_DATA_CEILING */
    size_t   max_meta;      /* bytes of encoded metadata;
                               1..EVS_LIMITS_DATA_CEILING */
    unsigned max_depth;     /* nesting of msgpack and JSON data and of each
                               metadata value; 1..EVS_LIMITS_DEPTH_CEILING */
} evs_limits;

/*
 * Set the process-wide limits (NULL: every default). They apply to every
 * later check: creating, decoding and mutating events, subjects and
 * patterns, JSON and msgpack content. A decoded message may be at most
 * max_data + max_meta + max_topic + max_type_name + 1 KiB long (the
 * largest event; longer is EVS_ETOOBIG before it is read). Events that
 * exist are not checked again, so an event made under larger limits may
 * fail to decode from its own encoding afterwards.
 * Returns 0 or EVS_EINVAL (a field over its ceiling; nothing changes).
 * Ownership: copies *limits.
 * Threads: any thread; best at start-up. Concurrent calls into evstream
 * each see, per field, the old or the new value (never a torn one).
 */
int evs_limits_set(const evs_limits *limits);

/*
 * The limits in force (every field filled in, none 0).
 * Returns 0 or EVS_EINVAL (out NULL). Threads: any thread.
 */
int evs_limits_get(evs_limits *out);

/*
 * Create an event with a copy of `data` (content EVS_CONTENT_BINARY) and
 * of `topic` (NULL means ""). The id is 0 until a stream publishes it;
 * the timestamp is the creation time (CLOCK_REALTIME, ns). Use the
 * evs_event_set_* functions before publishing to set the content type,
 * a custom type name or metadata.
 * Returns 0, EVS_EINVAL (out NULL, type out of range or EVS_TYPE_CUSTOM:
 * use evs_event_set_type_name, data NULL with len > 0), EVS_ETOOBIG, or
 * EVS_ENOMEM.
 * Ownership: the caller owns the one reference in *out.
 * Threads: any thread.
 */
int evs_event_create(evs_event **out, evs_type type, const char *topic,
                     const void *data, size_t len);

/*
 * The helper in the spirit of create_event(data, type, **metadata):
 * `type_name` is "message", "error", ... or any custom name (NULL means
 * "message"); `json` is one JSON value (NULL means no data) stored as
 * msgpack (EVS_CONTENT_MSGPACK) so that it renders back to JSON;
 * `meta` is NULL or a NULL-terminated list of key, value string pairs
 * stored as metadata.
 *   evs_event_make(&ev, "Purchase", "orders", "{\"sku\":7}",
 *                  (const char *[]){"region", "eu", NULL});
 * JSON integers are exact from -2^63 to 2^64-1 (past INT64_MAX they are
 * msgpack positive integers); an object with a repeated key, or an
 * integer outside that range, is EVS_EBADMSG.
 * Returns 0, EVS_EINVAL (bad name, odd meta list), EVS_EBADMSG (json
 * does not parse, with a message for evs_last_error()), EVS_ETOOBIG, or
 * EVS_ENOMEM (also when jansson runs
 * out of memory while parsing: see SPEC.md, "Events", on jansson's
 * allocator, which the library sets process-wide when it is loaded).
 * Ownership: copies every input; the caller owns the reference in *out.
 * Threads: any thread.
 */
int evs_event_make(evs_event **out, const char *type_name, const char *topic,
                   const char *json, const char *const *meta);

/*
 * Add a reference. Returns `ev`, except for an event stored in a
 * stream's ring slot (evs_stream_claim), which is reused once delivered:
 * then it returns a heap copy equal in every field, or NULL if that copy
 * cannot be allocated. Either way, use the returned pointer and unref it.
 * Threads: any thread, concurrently with other ref/unref calls.
 */
evs_event *evs_event_ref(const evs_event *ev);

/*
 * Drop a reference; the last one frees the event. Accepts NULL, and
 * ignores events stored in ring slots (they are not refcounted).
 * Threads: any thread, concurrently with other ref/unref calls.
 */
void evs_event_unref(const evs_event *ev);

/*
 * Set how the data is read. JSON and msgpack data are validated (one
 * complete value, nesting at most EVS_MAX_DEPTH; JSON as evs_event_make
 * reads it: no repeated keys, integers from -2^63 to 2^64-1, and a
 * message for evs_last_error() when it does not parse).
 * Returns 0, EVS_EINVAL (bad content), EVS_ESEALED once published,
 * EVS_EBADMSG (data is not valid for that content type), EVS_ETOOBIG
 * (nested deeper than EVS_MAX_DEPTH) or EVS_ENOMEM (for JSON, also when
 * jansson runs out of memory while parsing).
 * Threads: not concurrently with any other call on `ev`.
 */
int evs_event_set_content(evs_event *ev, evs_content content);

/*
 * Give the event a type by name: the built-in names ("message", "error",
 * "connect", "disconnect", "heartbeat") select that type, any other name
 * makes it EVS_TYPE_CUSTOM with that name. Names are 1..EVS_MAX_TYPE_NAME
 * bytes with no CR, LF or NUL.
 * Returns 0, EVS_EINVAL, EVS_ETOOBIG, EVS_ENOMEM or EVS_ESEALED.
 * Ownership: copies `name`.
 * Threads: not concurrently with any other call on `ev`.
 */
int evs_event_set_type_name(evs_event *ev, const char *name);

/*
 * Metadata: a msgpack map with string keys, set before publishing.
 * Setting a key that exists replaces its value.
 * `_raw` takes one encoded msgpack value (validated).
 * Each returns 0, EVS_EINVAL (NULL key or value, empty key), EVS_ESEALED
 * once published, EVS_EBADMSG (raw value malformed), EVS_ETOOBIG
 * (metadata over EVS_MAX_META, or a raw value nested deeper than
 * EVS_MAX_DEPTH), or EVS_ENOMEM. Argument errors are reported first.
 * Ownership: copies key and value.
 * Threads: not concurrently with any other call on `ev`.
 */
int evs_event_meta_set_str(evs_event *ev, const char *key, const char *value);
int evs_event_meta_set_i64(evs_event *ev, const char *key, int64_t value);
int evs_event_meta_set_f64(evs_event *ev, const char *key, double value);
int evs_event_meta_set_bool(evs_event *ev, const char *key, bool value);
int evs_event_meta_set_raw(evs_event *ev, const char *key, const void *mp,
                           size_t len);

/*
 * Metadata getters. `_str` gives a pointer into the event and a length
 * (the string is NOT NUL-terminated); `_raw` gives the encoded msgpack
 * value. Integers that fit are returned by `_i64`; `_f64` accepts
 * floats and integers.
 * Each returns 0, EVS_EINVAL, EVS_ENOTFOUND, or EVS_ETYPE.
 * Ownership: returned pointers borrow from `ev`; valid while you hold a
 * reference.
 * Threads: any thread once published; before that, as the setters.
 */
int evs_event_meta_get_str(const evs_event *ev, const char *key,
                           const char **value, size_t *len);
int evs_event_meta_get_i64(const evs_event *ev, const char *key, int64_t *value);
int evs_event_meta_get_f64(const evs_event *ev, const char *key, double *value);
int evs_event_meta_get_bool(const evs_event *ev, const char *key, bool *value);
int evs_event_meta_get_raw(const evs_event *ev, const char *key,
                           const void **mp, size_t *len);

/*
 * Accessors. Pointers borrow from the event and stay valid while the
 * caller holds a reference (a handler borrows its event until it
 * returns).
 *   id:        0 until published; then the publishing stream's id.
 *   type:      the enum; type_name: "message", ..., or the custom name.
 *   topic:     NUL-terminated, possibly "".
 *   data:      the bytes (NULL when len is 0), aligned to 16 bytes so
 *              they may be read as any type; content: their type.
 *   meta:      the encoded msgpack map (an empty map when none is set).
 *   timestamp: ns since the Unix epoch, set at creation.
 *   published: whether a stream has published it (then it is immutable).
 * Threads: any thread once published; before that, not concurrently
 * with a setter.
 */
uint64_t     evs_event_id(const evs_event *ev);
evs_type     evs_event_type(const evs_event *ev);
const char  *evs_event_type_name(const evs_event *ev);
const char  *evs_event_topic(const evs_event *ev);
const void  *evs_event_data(const evs_event *ev, size_t *len);
evs_content  evs_event_content(const evs_event *ev);
const void  *evs_event_meta(const evs_event *ev, size_t *len);
int64_t      evs_event_timestamp(const evs_event *ev);
bool         evs_event_published(const evs_event *ev);

/*
 * Name of a built-in type ("message", ...); NULL for an out-of-range
 * value or EVS_TYPE_CUSTOM. Threads: any.
 */
const char *evs_type_name(evs_type type);

/*
 * Append the event encoded as one msgpack map (SPEC.md, "Wire format")
 * to `out`. Decoding that with evs_event_from_msgpack gives back an
 * event equal in every field (id and timestamp included).
 * Returns 0, EVS_EINVAL or EVS_ENOMEM (out unchanged then).
 * Ownership: borrows `ev`; appends to the caller's buffer.
 * Threads: any thread once published.
 */
int evs_event_to_msgpack(const evs_event *ev, evs_buf *out);

/*
 * Decode one event from `buf` (exactly `len` bytes: trailing bytes are
 * an error). Hostile input is safe: every count and length is checked
 * against the bytes present and the nesting (EVS_MAX_DEPTH for data and
 * each metadata value) before the event is built, so memory used is
 * bounded by a small multiple of len.
 * A non-zero id decodes as a published (immutable) event keeping that
 * id; an id of 0 decodes as an unpublished event that can still change.
 * Returns 0, EVS_EINVAL (NULL args), EVS_EBADMSG (malformed, wrong
 * shape, a type name that is empty, too long or contains CR/LF/NUL),
 * EVS_ETOOBIG (data, topic or metadata over a limit, nesting too deep),
 * or EVS_ENOMEM.
 * Ownership: copies from `buf`; the caller owns the reference in *out.
 * Threads: any thread.
 */
int evs_event_from_msgpack(evs_event **out, const void *buf, size_t len);

/*
 * Append a JSON rendering of the event to `out`:
 *   {"id":"7","type":"message","topic":"a.b","content":"msgpack",
 *    "data":...,"metadata":{...},"timestamp":"2026-11-21T17:00:00.000000001Z"}
 * The id is a string (64-bit ids exceed JSON's exact integers). data is
 * rendered by content: msgpack as JSON, JSON as is, text as a string,
 * binary as a base64 string. Strings are escaped per RFC 8259 and invalid
 * UTF-8 becomes U+FFFD, so the output is always valid UTF-8 JSON. A
 * msgpack map key that is not a string renders as its JSON text in a
 * string; such keys may nest inside each other at most two deep (each
 * level doubles the escaping: 24 levels would turn a 100-byte event into
 * gigabytes).
 * Returns 0, EVS_EINVAL, EVS_EBADMSG (non-string keys nested deeper than
 * that, in data or metadata) or EVS_ENOMEM (out unchanged on error).
 * Threads: any thread once published.
 */
int evs_event_to_json(const evs_event *ev, evs_buf *out);

/* ------------------------------------------------------------------ */
/* Streams                                                             */
/* ------------------------------------------------------------------ */

typedef struct evs_stream evs_stream;
typedef struct evs_sub evs_sub;

/* What publish does when the stream's queue is full. */
typedef enum evs_overflow {
    EVS_OVERFLOW_BLOCK = 0,  /* wait for room (opts.block_timeout_ms) */
    EVS_OVERFLOW_DROP_NEWEST,/* discard the event being published; count it */
    EVS_OVERFLOW_DROP_OLDEST,/* discard the oldest queued event; count it */
    EVS_OVERFLOW_FAIL        /* return EVS_EFULL; count it */
} evs_overflow;

/* Where handlers run. */
typedef enum evs_delivery {
    EVS_DELIVERY_DISPATCHER = 0, /* on the stream's dispatcher thread */
    EVS_DELIVERY_INLINE          /* on the publishing thread, inside publish */
} evs_delivery;

/* How an idle dispatcher waits for events. */
typedef enum evs_wait {
    EVS_WAIT_PARK = 0, /* spin briefly, then sleep in the kernel (no CPU when idle) */
    EVS_WAIT_YIELD,    /* spin, then sched_yield() in a loop (low latency, burns CPU) */
    EVS_WAIT_SPIN      /* busy-spin forever (lowest latency, one core at 100%) */
} evs_wait;

/* Pass as a timeout to wait without limit. */
#define EVS_FOREVER (-1)
/* Pass as opts.history to keep no history. */
#define EVS_HISTORY_NONE ((size_t)-1)
/* opts.metrics levels. */
#define EVS_METRICS_STREAM 1 /* handler time per stream */
#define EVS_METRICS_SUBS   2 /* ... and per subscription */

/* Most slots a stream's ring may have. */
#define EVS_MAX_CAPACITY ((size_t)1 << 24)

/* A handler's error, reported to the stream's error hook. Runs on the
 * thread that called the handler: the delivering thread, or a worker of
 * a pooled subscription (evs_sub_opts.max_concurrent). */
typedef void (*evs_error_fn)(evs_sub *sub, const evs_event *ev, int rc,
                             void *user);

/*
 * Stream options. Zero for each field is the default; bad values make
 * evs_stream_create fail with EVS_EINVAL.
 */
typedef struct evs_stream_opts {
    size_t       capacity;         /* queue slots, a power of two in
                                      [2, EVS_MAX_CAPACITY]; 0 = 4096 */
    size_t       history;          /* events kept for recent(); 0 = 1000;
                                      EVS_HISTORY_NONE = none */
    evs_overflow overflow;         /* 0 = EVS_OVERFLOW_BLOCK */
    int          block_timeout_ms; /* BLOCK only: 0 = wait forever; > 0 = give
                                      up with EVS_ETIMEDOUT after this long */
    evs_delivery delivery;         /* 0 = EVS_DELIVERY_DISPATCHER */
    evs_wait     wait;             /* 0 = EVS_WAIT_PARK */
    evs_error_fn on_error;         /* NULL = count handler errors only */
    void        *on_error_user;    /* passed to on_error untouched */
    bool         single_publisher; /* false = any threads may publish at once;
                                      true = a promise that publishes never
                                      overlap (one thread, or threads that
                                      hand over with a lock): publishing then
                                      uses no atomic instruction. Not with
                                      heartbeat_ms under dispatcher delivery
                                      (the timer thread would be a second
                                      publisher): EVS_EINVAL */
    size_t       slot_bytes;       /* 0 = none; > 0: every ring slot stores an
                                      event with room for this many bytes of
                                      topic + NUL (rounded up to 16) + data,
                                      for the zero-copy,
                                      zero-allocation evs_stream_claim /
                                      evs_stream_commit path. At most
                                      EVS_MAX_SLOT_BYTES; needs dispatcher
                                      delivery and an overflow policy other
                                      than DROP_OLDEST (a slot being delivered
                                      cannot be evicted) */
    bool         coarse_timestamps;/* false = evs_stream_claim stamps events
                                      with CLOCK_REALTIME (20-40 ns a read on
                                      a VM); true = CLOCK_REALTIME_COARSE (a
                                      few ns; resolution the kernel tick,
                                      1-4 ms) */
    bool         topics;           /* false = every subscription gets every
                                      event (patterns are only stored);
                                      true = a TopicStream: topics are NATS
                                      subjects, patterns select them (SPEC.md,
                                      "Subjects") */
    size_t       topic_cache;      /* TopicStream: subjects whose matching
                                      subscriptions the dispatcher caches;
                                      0 = 65536 */
    size_t       max_topics;       /* TopicStream: distinct subjects tracked
                                      for evs_stream_topics; 0 = 100000. The
                                      table also holds at most max_topics x
                                      256 bytes of entries. A new subject
                                      that finds it full reclaims subjects
                                      with no subscribers and no publish
                                      since last looked at (least recently
                                      used first, approximately;
                                      stats.topics_evicted); if none, it is
                                      delivered but not listed
                                      (stats.topics_untracked) */
    int          heartbeat_ms;     /* 0 = no heartbeats; > 0: whenever the
                                      stream has been idle this long, an
                                      EVS_TYPE_HEARTBEAT event with an empty
                                      topic is published; it reaches every
                                      subscription whatever its pattern
                                      (filters still apply). A timer service
                                      serves all streams; on an inline stream
                                      the heartbeat's handlers run on its
                                      threads, and one that blocks longer
                                      than 1 s is left running while the
                                      other timers go on (SPEC.md section 5).
                                      EVS_HEARTBEAT_DEFAULT_MS is the usual
                                      30 s */
    int          backpressure_pct; /* 0 = throttle only when the queue is
                                      full; 1..100 = treat the queue as full
                                      at this percentage of capacity, so the
                                      overflow policy (block, drop, fail)
                                      throttles publishers before the ring
                                      fills (e.g. 80); stats.queued and
                                      queue_hwm show the depth. Dispatcher
                                      delivery only */
    int          metrics;          /* 0 = no handler timing;
                                      EVS_METRICS_STREAM (or true) = time every
                                      handler call (two clock reads, ~50 ns)
                                      into the stream's histogram (stats
                                      .handler), 2.2 KiB per stream;
                                      EVS_METRICS_SUBS = also a histogram and a
                                      throughput window per subscription
                                      (evs_sub_stats .handler and
                                      .delivered_per_s), 2.3 KiB more for each */
    int          metrics_interval_ms; /* the "last interval" of the
                                      *_per_s rates in stats; 0 = 1000 */
    int          topic_idle_ms;    /* TopicStream: a subject with no exact
                                      subscriber and no publish for this long
                                      leaves the topic table, its counts with
                                      it (stats.topics_evicted), between 1 and
                                      1.5 times this after its last use; the
                                      heartbeat service thread sweeps every
                                      topic_idle_ms / 2. 0 = 60000 (a
                                      minute); EVS_TOPIC_IDLE_NEVER = only
                                      the max_topics bound reclaims */
} evs_stream_opts;

/* Pass as opts.topic_idle_ms to keep idle subjects until max_topics. */
#define EVS_TOPIC_IDLE_NEVER (-1)

#define EVS_HEARTBEAT_DEFAULT_MS 30000

/* Largest opts.slot_bytes. */
#define EVS_MAX_SLOT_BYTES ((size_t)1 << 20)

/*
 * Create a stream and, for dispatcher delivery, start its dispatcher
 * thread.
 * Returns 0, EVS_EINVAL (bad option: evs_last_error says which and why),
 * EVS_ENOMEM, or EVS_ESYSTEM (the thread could not be started).
 * Ownership: the caller owns *out and must evs_stream_destroy it.
 * Threads: any thread.
 */
int evs_stream_create(evs_stream **out, const evs_stream_opts *opts);

/*
 * Deliver `ev` to every subscription of the stream. The stream assigns
 * the event its id (ids increase per stream in publish order; under
 * dispatcher delivery subscribers see them in id order, while inline
 * delivery from several threads at once may deliver them out of order:
 * SPEC.md, "Guarantees") and takes its own reference; an event already
 * published elsewhere is published as a new event that shares the
 * original's payload (no copy) under this stream's id: read it back with
 * evs_stream_publish_id.
 * Returns 0 when the event is accepted, and also when it is dropped under
 * EVS_OVERFLOW_DROP_NEWEST (counted in stats.dropped_newest);
 * EVS_ECLOSED after evs_stream_close; EVS_EFULL under EVS_OVERFLOW_FAIL;
 * EVS_ETIMEDOUT when a block timeout passes; EVS_EINVAL; EVS_ENOMEM.
 * Ownership: borrows `ev`: the caller still owns its reference and drops
 * it whatever the result.
 * Threads: any thread, concurrently with other publishers and with
 * subscribe/unsubscribe; also from inside a handler.
 * Blocks: only under EVS_OVERFLOW_BLOCK while the queue is full, at most
 * block_timeout_ms. A handler that publishes to its own full stream under
 * BLOCK would wait for itself: it gets EVS_EDEADLK instead.
 */
int evs_stream_publish(evs_stream *s, const evs_event *ev);

/*
 * As evs_stream_publish, and writes the id the event got to *id (0 when
 * it was dropped under EVS_OVERFLOW_DROP_NEWEST or the call failed).
 * Ownership, threads, blocking: as evs_stream_publish.
 */
int evs_stream_publish_id(evs_stream *s, const evs_event *ev, uint64_t *id);

/*
 * As evs_stream_publish_id, but the stream takes the caller's reference
 * instead of adding its own: the fastest way to hand over an event you
 * made and will not touch again (it saves two atomic operations).
 * Ownership: consumes the caller's reference to `ev` whatever the result
 * (on failure the event is unreffed); do not use `ev` afterwards.
 * `id` may be NULL.
 * Threads and blocking: as evs_stream_publish.
 */
int evs_stream_publish_move(evs_stream *s, evs_event *ev, uint64_t *id);

/*
 * The zero-allocation path (a stream created with opts.slot_bytes): claim
 * the next position and get the event stored in its ring slot, with an
 * uninitialised data buffer of `len` bytes at *data to fill in place;
 * set its content type, type name or metadata if you like; then
 * evs_stream_commit it. No event is allocated, copied or refcounted.
 *   evs_event *ev; void *buf;
 *   if (evs_stream_claim(s, EVS_TYPE_MESSAGE, "ticks", 64, &ev, &buf) == 0) {
 *       memcpy(buf, payload, 64);
 *       evs_stream_commit(s, ev);
 *   }
 * The event has its id (evs_event_id) from the claim on. Every claim must
 * be committed, promptly: the dispatcher delivers in id order, so it
 * waits at an uncommitted position (and so do flush and close).
 * Returns 0, EVS_EINVAL (no slot storage, NULL arguments, bad type),
 * EVS_ETOOBIG (the topic, its NUL rounded up to 16 bytes, plus len do
 * not fit slot_bytes; or the topic is over EVS_MAX_TOPIC), EVS_ECLOSED, EVS_EFULL (FAIL policy; under DROP_NEWEST
 * too, where it is counted in dropped_newest), EVS_ETIMEDOUT,
 * EVS_EDEADLK (as evs_stream_publish).
 * Ownership: the event belongs to the stream; never unref it. Handlers
 * borrow it as any other; evs_event_ref on it returns a heap copy.
 * Threads and blocking: as evs_stream_publish.
 */
int evs_stream_claim(evs_stream *s, evs_type type, const char *topic, size_t len,
                     evs_event **ev, void **data);

/*
 * Publish a claimed event. Returns 0, or EVS_EINVAL if `ev` is not an
 * uncommitted event claimed from `s`. After it returns the event is
 * immutable and no longer yours to touch.
 * Threads: the thread that claimed it (or one it handed it to).
 */
int evs_stream_commit(evs_stream *s, evs_event *ev);

/* A subscription's handler. Return 0, or a code counted as an error. */
typedef int (*evs_handler_fn)(const evs_event *ev, void *user);
/* A subscription's filter: true to deliver the event to the handler. */
typedef bool (*evs_filter_fn)(const evs_event *ev, void *user);

/*
 * A pooled subscription's key (evs_sub_opts.key): events whose keys are
 * equal never run at the same time and run in delivery order. Called on
 * the delivering thread (as the filter, after it), once per event; it
 * must not block. evs_key_topic keys by topic.
 */
typedef uint64_t (*evs_key_fn)(const evs_event *ev, void *user);

/* Most worker threads (evs_sub_opts.max_concurrent) of one subscription. */
#define EVS_MAX_CONCURRENT 256u
/* Largest evs_sub_opts.queue. */
#define EVS_MAX_POOL_QUEUE (1u << 20)

/*
 * Per-subscription options; zero is the default for every field.
 * Bounded concurrent handlers (SPEC.md, "Bounded concurrent handlers"):
 * with max_concurrent = K > 0 the subscription gets K worker threads of
 * its own and its handler runs on them, at most K calls at once (K = 1:
 * one at a time, in delivery order), instead of on the delivering
 * thread. The filter (and key) still run on the delivering thread, which
 * queues each event it passes for a worker; when opts.queue events are
 * waiting it waits for room, which throttles the stream's dispatcher and
 * so, through the stream's queue, its publishers (the overflow policy
 * applies there). Nothing is dropped on the way to the workers, and
 * unsubscribe, flush, close and destroy wait for queued and running
 * calls. evs_sub_pool_stats_get reads the pool's counters.
 */
typedef struct evs_sub_opts {
    unsigned   max_concurrent; /* 0 = the handler runs on the delivering
                                  thread, one event at a time; 1..
                                  EVS_MAX_CONCURRENT = on that many
                                  worker threads, at most that many
                                  calls in flight */
    evs_key_fn key;            /* pooled only: NULL = calls start in
                                  delivery order but may overlap and end
                                  in any order; else events with equal
                                  keys never overlap and run in delivery
                                  order (different keys still run at
                                  once). Set without max_concurrent:
                                  EVS_EINVAL */
    void      *key_user;       /* passed to key; NULL = `user` */
    unsigned   queue;          /* pooled only: events that may wait for a
                                  worker (not counting the running ones)
                                  before the delivering thread waits;
                                  0 = 1024, at most EVS_MAX_POOL_QUEUE */
} evs_sub_opts;

/*
 * Subscribe `handler` (and optional `filter`, called first on the same
 * thread) to the stream. The subscription receives exactly the events
 * accepted after this call returns (and may receive events whose publish
 * overlapped it), in the stream's id order, until evs_unsubscribe.
 * `pattern` (NULL means ">") is stored and readable with evs_sub_pattern;
 * TopicStream matches it against topics.
 * With opts.max_concurrent > 0 the handler runs on the subscription's
 * worker threads (see evs_sub_opts), concurrently with the delivering
 * thread and, for K > 1, with itself.
 * Returns 0, EVS_EINVAL (NULL handler, bad opts, a pattern longer than
 * the topic limit on any stream, an invalid one on a TopicStream),
 * EVS_ECLOSED, EVS_ENOMEM, EVS_ESYSTEM (worker threads could not be
 * started).
 * Ownership: copies `pattern`; `user` is passed back untouched and must
 * live until evs_unsubscribe returns. *out belongs to the stream: it is
 * freed by evs_unsubscribe or evs_stream_destroy.
 * Threads: any thread, including inside a handler of this stream.
 */
int evs_subscribe(evs_sub **out, evs_stream *s, const char *pattern,
                  evs_handler_fn handler, evs_filter_fn filter, void *user,
                  const evs_sub_opts *opts);

/*
 * End a subscription. When it returns, the handler and filter are never
 * called again and no other thread is inside them, so `user` may be
 * freed (from inside the handler: once that call returns). It waits for
 * calls in progress on other threads to finish; inside the
 * subscription's own handler it does not wait for that call, which is
 * the last (on an inline stream it still waits for other publishers
 * inside the same handler). The handle is invalid afterwards.
 * A pooled subscription (opts.max_concurrent): from another thread it
 * first waits until every event already queued for its workers has been
 * handled and no call runs, then ends the workers. Inside one of its
 * calls (on a worker) it drops the queued events instead (counted in
 * evs_pool_stats.discarded) and waits only for the other calls in
 * flight, so the calling one is the last.
 * Returns 0 or EVS_EINVAL (NULL).
 * Threads: any thread, including inside any handler of this stream.
 * Blocks: while a call of this subscription's handler runs on another
 * thread (pooled: also while its queue drains).
 */
int evs_unsubscribe(evs_sub *sub);

/*
 * An evs_key_fn that keys by topic (a 64-bit FNV-1a hash of it): events
 * with the same topic never run at the same time and run in order.
 * Topics that share a hash share an order: less concurrency, never a
 * wrong order. `user` is not used.
 * Threads: any thread.
 */
uint64_t evs_key_topic(const evs_event *ev, void *user);

/* A pooled subscription's counters (evs_sub_opts.max_concurrent). */
typedef struct evs_pool_stats {
    uint64_t max_concurrent; /* worker threads: the bound on in_flight */
    uint64_t queued;         /* events waiting for a worker now */
    uint64_t queued_hwm;     /* most events ever waiting at once */
    uint64_t in_flight;      /* handler calls running now */
    uint64_t in_flight_hwm;  /* most calls ever running at once (<= K) */
    uint64_t completed;      /* handler calls that returned */
    uint64_t errors;         /* of those, non-zero returns (also counted
                                as the subscription's handler_errors) */
    uint64_t waits;          /* deliveries that waited for room in a full
                                queue: backpressure on the stream */
    uint64_t discarded;      /* events dropped because the subscription
                                was ended from inside one of its calls */
    uint64_t rejected;       /* events refused with EVS_EDEADLK: delivered
                                to a full queue by one of the pool's own
                                workers (a handler publishing to its own
                                inline stream), which must not wait for
                                itself; also a handler error */
    uint64_t nomem;          /* slot events (evs_stream_claim) whose copy
                                could not be allocated; also a handler
                                error (EVS_ENOMEM) */
} evs_pool_stats;

/*
 * Read a pooled subscription's counters. The subscription's own
 * evs_sub_stats count the events handed to the pool as `delivered`.
 * Returns 0, or EVS_EINVAL (NULL, or a subscription without a pool).
 * Threads: any thread, until evs_unsubscribe.
 */
int evs_sub_pool_stats_get(const evs_sub *sub, evs_pool_stats *out);

/* The stored pattern (">" when NULL was given).
 * Ownership: borrowed from `sub`, valid until evs_unsubscribe.
 * Threads: any thread, until evs_unsubscribe. */
const char *evs_sub_pattern(const evs_sub *sub);

/*
 * Stop intake: later publishes return EVS_ECLOSED, and publishers waiting
 * for room wake with EVS_ECLOSED. Then wait up to `timeout_ms` (0 = do
 * not wait, EVS_FOREVER = no limit) until every event accepted before the
 * close has been delivered. Idempotent.
 * Returns 0 when everything accepted was delivered, else EVS_ETIMEDOUT
 * with the number still queued in *left (if left is not NULL; 0 on
 * success). Inside a handler of this stream it does not wait (as if
 * timeout_ms were 0): the rest is delivered after the handler returns.
 * "Delivered" includes the calls of pooled subscriptions
 * (evs_sub_opts.max_concurrent): close waits until every event handed
 * to their workers has been handled, and *left counts those still
 * queued or running too. A worker of a pooled subscription counts as
 * inside a handler of the stream.
 * Threads: any thread, concurrently with publishers.
 * Blocks: up to timeout_ms.
 */
int evs_stream_close(evs_stream *s, int timeout_ms, uint64_t *left);

/*
 * Wait until every event accepted before the call has been delivered
 * (the stream stays open), including the calls of pooled subscriptions,
 * as for close. Events accepted meanwhile are not waited for, so
 * publishers that never pause cannot hold it (inline streams included). Returns 0, EVS_ETIMEDOUT (with *left as for close), or
 * EVS_EDEADLK inside a handler of this stream (a pooled subscription's
 * worker included: it would wait for its own call).
 * Threads: any thread. Blocks: up to timeout_ms.
 */
int evs_stream_flush(evs_stream *s, int timeout_ms, uint64_t *left);

/*
 * Close the stream, deliver everything it accepted, stop its thread,
 * end the remaining subscriptions (waiting for their pooled calls and
 * worker threads) and free it. Accepts NULL.
 * Returns 0, or EVS_EDEADLK (and does nothing) inside a handler of this
 * stream, a pooled subscription's worker included.
 * Ownership: every evs_sub of the stream becomes invalid.
 * Threads: any thread but the stream's dispatcher; not concurrently with
 * other calls on `s` (close the stream and join your publishers first).
 * Blocks: until queued events are delivered.
 */
int evs_stream_destroy(evs_stream *s);

/*
 * Copy references to up to `max` of the most recent events into `out`,
 * oldest first (newest last). History records an event when the
 * dispatcher takes it (inline delivery: when it is published).
 * Returns the number written (>= 0) or EVS_EINVAL.
 * Ownership: the caller owns one reference to each event written and
 * unrefs each.
 * Threads: any thread, concurrently with publishers.
 */
int evs_stream_recent(evs_stream *s, const evs_event **out, size_t max);

/* One subject of a TopicStream, as evs_stream_topics reports it. */
typedef struct evs_topic_stats {
    uint64_t published;   /* events published to exactly this subject */
    uint64_t subscribers; /* live subscriptions whose pattern is exactly it */
} evs_topic_stats;

/* Called once per subject; return 0 to go on, anything else to stop
 * (evs_stream_topics then returns that value). */
typedef int (*evs_topic_fn)(const char *subject, const evs_topic_stats *st, void *user);

/*
 * List the subjects of a TopicStream: those published to, and those
 * subscribed to with a wildcard-free pattern (at most opts.max_topics),
 * with their counts. A subject with exact subscribers is always listed
 * (if it found room when subscribed); one without leaves the list once
 * idle for opts.topic_idle_ms, or when new subjects need its room, and
 * comes back with counts from zero at its next publish. `fn` runs on the calling thread with no evstream
 * lock held, on a snapshot taken when the call began.
 * Returns 0, fn's non-zero value, EVS_EINVAL (not a TopicStream, NULL
 * arguments) or EVS_ENOMEM.
 * Ownership: `subject` and `st` are valid only during the call.
 * Threads: any thread.
 */
int evs_stream_topics(evs_stream *s, evs_topic_fn fn, void *user);

/*
 * Publish one event to each of `n` streams, without copying its payload:
 * the first stream to accept it numbers the event itself, every other
 * stream publishes an alias that shares it (SPEC.md, "Aliases"). A
 * stream that fails does not stop the others.
 * Returns how many streams kept the event (0..n), or EVS_EINVAL (NULL
 * streams with n > 0, NULL ev). If `results` is not NULL, results[i]
 * gets stream i's code as evs_stream_publish returns it: 0 also for a
 * stream that dropped the event under EVS_OVERFLOW_DROP_NEWEST, which
 * is not counted as kept (its stats.dropped_newest counts it).
 * Ownership: borrows `ev` and every stream.
 * Threads: any thread, as evs_stream_publish on each stream.
 * Blocks: as evs_stream_publish on each stream, one after another.
 */
int evs_broadcast(evs_stream *const *streams, size_t n, const evs_event *ev, int *results);

/*
 * Handler time, from a histogram of every handler call of a stream or
 * subscription created with opts.metrics (EVS_METRICS_SUBS for a
 * subscription's; all zero otherwise).
 * Quantiles are within 6.25% of the true value (log-linear buckets, 8
 * per power of two); count, sum and max are exact.
 */
typedef struct evs_latency {
    uint64_t count;  /* handler calls timed */
    uint64_t sum_ns; /* their total time */
    uint64_t p50_ns, p90_ns, p99_ns;
    uint64_t max_ns;
} evs_latency;

/* A stream's counters. A plain-data snapshot. */
typedef struct evs_stream_stats {
    uint64_t published;      /* events accepted (ids handed out) */
    uint64_t delivered;      /* handler calls */
    uint64_t filtered;       /* events a filter kept from a handler */
    uint64_t handler_errors; /* handler calls that returned non-zero */
    uint64_t dropped_newest; /* DROP_NEWEST: events refused on a full queue */
    uint64_t dropped_oldest; /* DROP_OLDEST: queued events discarded */
    uint64_t rejected_full;  /* FAIL: publishes answered EVS_EFULL */
    uint64_t timed_out;      /* BLOCK: publishes answered EVS_ETIMEDOUT */
    uint64_t dropped_nomem;  /* accepted events lost to allocation failure */
    uint64_t queued;         /* events accepted but not yet dispatched */
    uint64_t queue_hwm;      /* most events ever queued at once */
    uint64_t subscribers;    /* live subscriptions */
    uint64_t heartbeats;     /* heartbeat events published for idleness */
    uint64_t topics;         /* TopicStream: subjects tracked */
    uint64_t topics_untracked; /* TopicStream: publishes to subjects past
                                  max_topics (delivered, not listed) */
    uint64_t unroutable;     /* TopicStream: accepted events no pattern
                                matched (delivered to no one) */
    double   published_per_s; /* throughput over the last interval
                                 (opts.metrics_interval_ms), measured at
                                 reads: polled at least once per interval
                                 it is the rate over the last interval,
                                 polled less often the rate since the
                                 previous poll */
    double   delivered_per_s; /* handler calls per second, likewise */
    evs_latency handler;     /* handler time (opts.metrics) */
    uint64_t topics_evicted; /* TopicStream: subjects dropped from the topic
                                table, with their counts, for idleness
                                (opts.topic_idle_ms) or to make room
                                (opts.max_topics); never ones with
                                subscribers */
} evs_stream_stats;

/*
 * Read the stream's counters. Counters only grow (except queued and
 * subscribers); each is exact but they are read one by one, so a snapshot
 * taken while events flow may mix instants.
 * Returns 0 or EVS_EINVAL. Threads: any thread.
 */
int evs_stream_stats_get(evs_stream *s, evs_stream_stats *out);

/* A subscription's counters. */
typedef struct evs_sub_stats {
    uint64_t delivered;      /* handler calls */
    uint64_t filtered;       /* events its filter rejected */
    uint64_t handler_errors; /* non-zero handler returns */
    uint64_t dropped;        /* events accepted while this subscription
                                was live, matching its pattern, that the
                                stream dropped before it saw them (as
                                newest or as oldest): for each subscription
                                delivered + filtered + dropped = the
                                accepted events it matches */
    uint64_t queue_hwm;      /* deepest queue seen when it was served */
    double   delivered_per_s; /* handler calls per second over the last
                                 interval, as the stream's (opts.metrics =
                                 EVS_METRICS_SUBS;
                                 0 otherwise) */
    evs_latency handler;     /* handler time (EVS_METRICS_SUBS) */
} evs_sub_stats;

/*
 * Read a subscription's counters. Returns 0 or EVS_EINVAL.
 * Threads: any thread, until evs_unsubscribe.
 */
int evs_sub_stats_get(const evs_sub *sub, evs_sub_stats *out);

/*
 * Prometheus text exposition (format 0.0.4) of stats snapshots, for a
 * /metrics endpoint. Each item is a stream (sub NULL, stream_stats set)
 * or a subscription (sub set, sub_stats set); `stream` and `sub` become
 * the stream="..." and sub="..." labels (escaped as the format says).
 * Families: evs_stream_{published,delivered,filtered,handler_errors,
 * heartbeats,unroutable}_total, evs_stream_dropped_total{reason=newest|
 * oldest|full|timeout|nomem}, evs_stream_queue_depth(_max),
 * evs_stream_subscribers, evs_stream_{published,delivered}_per_second,
 * evs_stream_handler_seconds (summary: quantiles 0.5 0.9 0.99, _sum,
 * _count) and _max; evs_sub_{delivered,filtered,handler_errors,
 * dropped}_total, evs_sub_queue_depth_max, evs_sub_delivered_per_second,
 * evs_sub_handler_seconds and _max. Every family is written with its
 * HELP and TYPE lines once, its series grouped, as the format requires;
 * the families of a kind (stream or subscription) no item has are left
 * out.
 */
typedef struct evs_metrics_item {
    const char             *stream;       /* label value; NULL = "" */
    const char             *sub;          /* NULL: this item is a stream */
    const evs_stream_stats *stream_stats; /* a stream item's stats */
    const evs_sub_stats    *sub_stats;    /* a subscription item's stats */
} evs_metrics_item;

/*
 * Append the exposition of items[0..n) to `out`.
 * Returns 0, EVS_EINVAL (NULL out, an item that is neither kind), or
 * EVS_ENOMEM (then `out` is as it was).
 * Ownership: reads the items; the caller keeps them.
 * Threads: any thread.
 */
int evs_metrics_prometheus(const evs_metrics_item *items, size_t n, evs_buf *out);

/*
 * The common case: read `s`'s stats and append their exposition with the
 * label stream="name". Returns as evs_metrics_prometheus, and EVS_EINVAL
 * for NULL arguments.
 * Threads: any thread, concurrently with publishers.
 */
int evs_stream_prometheus(evs_stream *s, const char *name, evs_buf *out);

/* ------------------------------------------------------------------ */
/* SSE framing                                                         */
/* ------------------------------------------------------------------ */

/*
 * The text/event-stream format of the WHATWG HTML standard, section 9.2
 * (server-sent events), in both directions: an encoder that frames events
 * for a client and an incremental parser for the client side. Both are
 * pure: bytes in, bytes out, no threads, clocks or sockets. SPEC.md,
 * "SSE framing", gives every rule with its reason.
 */

/* Encoder options; zero is the default. */
typedef struct evs_sse_opts {
    int  retry_ms; /* 0 = no retry: line; > 0 = "retry: <ms>" (the client's
                      reconnection time); < 0 is EVS_EINVAL */
    bool omit_id;  /* false = "id: <evs_event_id>" when the id is not 0;
                      true = never an id: line (the client's last event id
                      stays as it was) */
} evs_sse_opts;

/*
 * Frame one event, whole, into buf[0..cap):
 *   id: <evs_event_id in decimal>      omitted when the id is 0 or opts.omit_id
 *   event: <evs_event_type_name>       omitted for "message"
 *   data: <line>                       one per line of the data (split at
 *                                      LF, CRLF and lone CR); "data:" for an
 *                                      empty line, and empty data is one
 *                                      empty line
 *   retry: <opts.retry_ms>             only when retry_ms > 0
 *   <blank line>
 * The data renders by content: text and JSON as they are; msgpack as JSON
 * (as evs_event_to_json renders it); binary as one line of standard
 * base64 (RFC 4648, padded). The stream is UTF-8, so invalid UTF-8 in
 * text, JSON and the type name is written as U+FFFD, as a client would
 * decode it anyway. The topic and metadata are not sent. A client
 * receives the data with every line end turned into LF, and the parser
 * below gives back exactly that. The frame is not NUL-terminated.
 * Returns 0 with *len = the frame's size; EVS_ETOOBIG when cap is too
 * small (buf NULL with cap 0 asks for the size), with *len = the size
 * needed and nothing written; otherwise *len = 0 and nothing written:
 * EVS_EINVAL (ev or len NULL, buf NULL with cap > 0, retry_ms < 0, a type
 * name that is empty or contains CR, LF or NUL: it could inject fields
 * into the stream), EVS_EBADMSG (msgpack data that does not render) or
 * EVS_ENOMEM (the msgpack -> JSON scratch buffer, the only allocation).
 * Ownership: borrows `ev`; writes into the caller's buffer.
 * Threads: any thread once `ev` is published.
 */
int evs_sse_encode(const evs_event *ev, const evs_sse_opts *opts, char *buf,
                   size_t cap, size_t *len);

/*
 * As evs_sse_encode, appending the frame to `out` (which stays
 * NUL-terminated). Returns 0, EVS_EINVAL (as above, or out NULL),
 * EVS_EBADMSG or EVS_ENOMEM; on error `out` is unchanged.
 * Ownership: borrows `ev`; appends to the caller's buffer.
 * Threads: any thread once `ev` is published; not concurrently on `out`.
 */
int evs_sse_encode_buf(const evs_event *ev, const evs_sse_opts *opts,
                       evs_buf *out);

/*
 * Append a comment frame, for heartbeats that keep a connection (and the
 * proxies on it) alive: ": <text>\n" and a blank line; ":\n\n" when len
 * is 0. A CR, LF or CRLF in `text` starts a new comment line (": ..."),
 * so no text can become a field; invalid UTF-8 is written as U+FFFD.
 * Clients ignore comments; the blank line dispatches nothing between
 * events.
 * Returns 0, EVS_EINVAL (out NULL, text NULL with len > 0) or EVS_ENOMEM
 * (out unchanged then).
 * Ownership: copies `text`.
 * Threads: not concurrently on `out`.
 */
int evs_sse_comment(evs_buf *out, const char *text, size_t len);

typedef struct evs_sse_parser evs_sse_parser;

/* One dispatched message. Every string is NUL-terminated after its
 * length; data and event may contain NUL, id never does. */
typedef struct evs_sse_message {
    const char *event;     /* the event type; "message" when the event
                              had no (or an empty) event: field */
    size_t      event_len;
    const char *data;      /* the data: lines' values joined with LF
                              (empty for one empty data: line) */
    size_t      data_len;
    const char *id;        /* the last event id, kept across messages
                              until an id: field changes it; "" if none */
    size_t      id_len;
} evs_sse_message;

/* Called for each message; return 0 to go on, anything else to stop
 * (evs_sse_parser_feed returns that value). `m` and its strings are valid
 * only during the call. */
typedef int (*evs_sse_message_fn)(const evs_sse_message *m, void *user);

/* Parser options; zero is the default. */
typedef struct evs_sse_parser_opts {
    size_t max_message; /* 0 = 1 MiB; else at least 64: the most bytes one
                           line, one id, or one message's event type plus
                           data may hold. A message over it is dropped
                           whole at its blank line and counted
                           (evs_sse_parser_dropped); its id: and retry:
                           fields still apply. Comment, unknown-field and
                           retry lines longer than it are skipped. So
                           memory stays bounded (a few times max_message)
                           on any input */
} evs_sse_parser_opts;

/*
 * Create a parser for one client's stream.
 * Returns 0, EVS_EINVAL (out NULL, max_message 1..63 or over SIZE_MAX / 16)
 * or EVS_ENOMEM.
 * Ownership: the caller owns *out and must evs_sse_parser_destroy it.
 * Threads: any thread.
 */
int evs_sse_parser_create(evs_sse_parser **out, const evs_sse_parser_opts *opts);

/* Free the parser. Accepts NULL.
 * Threads: not concurrently with other calls on `p`, and not from inside
 * its own callback. */
void evs_sse_parser_destroy(evs_sse_parser *p);

/*
 * Parse the next `len` bytes of the stream, exactly as the WHATWG
 * standard's "parsing an event stream" and "interpreting an event stream"
 * say: one leading BOM skipped at the start; lines ended by LF, CRLF or a
 * lone CR, split anywhere across calls; the input decoded as UTF-8
 * (invalid bytes become U+FFFD); comments skipped; one space after the
 * colon removed; a field without a colon has an empty value; data lines
 * joined with LF; an id containing NUL ignored; retry set only from ASCII
 * digits; unknown fields ignored; a message dispatched at each blank line
 * if it had a data field. A message still open when the stream ends is
 * never dispatched (use evs_sse_parser_reset on reconnecting).
 * Calls `fn` (NULL: messages are parsed and discarded) for each message.
 * *used (if not NULL) gets the number of bytes consumed: all of them on
 * success; after fn's non-zero return, those through the line end of
 * that message's blank line; on EVS_ENOMEM, those before the line that
 * could not be stored, with the parser as it was before that line. Either
 * way, feeding bytes + *used next goes on exactly where it stopped.
 * Returns 0, fn's non-zero value, EVS_EINVAL (p NULL, bytes NULL with
 * len > 0) or EVS_ENOMEM.
 * Ownership: copies what it keeps from `bytes`.
 * Threads: not concurrently on one parser; fn runs on the calling thread
 * and must not feed, reset or destroy this parser.
 */
int evs_sse_parser_feed(evs_sse_parser *p, const void *bytes, size_t len,
                        size_t *used, evs_sse_message_fn fn, void *user);

/*
 * Start a new stream (a reconnection): discard the partial line and the
 * message being built, reset the last event id buffer to "" as the
 * standard does for each stream, and expect a BOM again. The last event
 * id string (evs_sse_parser_last_id), the retry time and the dropped
 * count are kept. Accepts NULL. Threads: not concurrently on `p`.
 */
void evs_sse_parser_reset(evs_sse_parser *p);

/* The last valid retry: value in ms (capped at INT64_MAX), or -1 if none.
 * Threads: not concurrently with feed. */
int64_t evs_sse_parser_retry(const evs_sse_parser *p);

/*
 * The last event id string, to send as Last-Event-ID on reconnecting:
 * "" until a dispatch (blank line) follows an id: field. NUL-terminated;
 * *len (if not NULL) gets its length.
 * Ownership: borrowed from `p`, valid until the next feed, reset or
 * destroy.
 * Threads: not concurrently with feed.
 */
const char *evs_sse_parser_last_id(const evs_sse_parser *p, size_t *len);

/* Messages dropped for exceeding max_message. Threads: as above. */
uint64_t evs_sse_parser_dropped(const evs_sse_parser *p);

/* ------------------------------------------------------------------ */
/* SSEStream                                                           */
/* ------------------------------------------------------------------ */

/*
 * The server side of server-sent events over one stream: each connected
 * client is a set of subscriptions (topic patterns, as for TopicStream)
 * with its own bounded lock-free mailbox, and the web layer takes whole
 * frames from it by a read with a timeout, a readiness file descriptor,
 * or a push callback. Clients resume from a Last-Event-ID through the
 * stream's history, get a heartbeat comment when idle, and a slow client
 * never blocks the stream or other clients. SPEC.md, "SSEStream", gives
 * the design and the memory an idle client costs.
 */

typedef struct evs_sse evs_sse;               /* the SSE layer over one stream */
typedef struct evs_sse_client evs_sse_client; /* one connected client */

/* What happens when a client's mailbox is full. */
typedef enum evs_sse_slow {
    EVS_SSE_SLOW_DISCONNECT = 0, /* close the client: it reads what is queued,
                                    then a final "event: disconnect" frame
                                    whose data is the reason ("slow
                                    consumer"), then EVS_ECLOSED */
    EVS_SSE_SLOW_DROP_OLDEST     /* drop the oldest queued event; the client
                                    then reads ": skipped N events" before
                                    its next frames */
} evs_sse_slow;

/* Pass as heartbeat_ms for no heartbeat comments. */
#define EVS_SSE_NO_HEARTBEAT (-1)
/* The default heartbeat interval: proxies commonly drop a connection idle
 * for 30-60 s (nginx: 60 s), and 15 s leaves two chances inside that. */
#define EVS_SSE_HEARTBEAT_DEFAULT_MS 15000
/* Most patterns one client may give. */
#define EVS_SSE_MAX_PATTERNS 64u

/* Options of an SSE layer; zero is the default for every field. */
typedef struct evs_sse_stream_opts {
    evs_sse_slow slow;    /* 0 = EVS_SSE_SLOW_DISCONNECT */
    size_t mailbox;       /* events one client may have queued, a power of
                             two in [2, 65536]; 0 = 64 */
    int heartbeat_ms;     /* a ": heartbeat" comment for a client that
                             got nothing for one to two of these
                             intervals, then one per interval; 0 =
                             EVS_SSE_HEARTBEAT_DEFAULT_MS;
                             EVS_SSE_NO_HEARTBEAT = none */
    int retry_ms;         /* > 0: each client's first frame is
                             "retry: <ms>" (its reconnection delay);
                             0 = none */
    bool reset_future_ids; /* false = a last_event_id newer than every id
                             the stream issued replays nothing (right
                             for a mirror whose ids another source
                             decides and which may lag it); true = such
                             an id is not this stream's (another
                             instance's, before a restart): the client
                             first gets "event: reset" with data
                             {"issued":"<newest id issued>"} (no id:
                             line), then is resumed as from id 0 (the
                             gap frame, then everything retained) */
} evs_sse_stream_opts;

/*
 * Create the SSE layer over `s`, which may be any stream: on a
 * TopicStream (opts.topics) clients' patterns select subjects; on any
 * other stream every client gets every event and patterns are not used.
 * Returns 0, EVS_EINVAL (out or s NULL, a bad option) or EVS_ENOMEM.
 * Ownership: the caller owns *out and must evs_sse_destroy it before
 * destroying `s`; `s` is borrowed until then.
 * Threads: any thread.
 */
int evs_sse_create(evs_sse **out, evs_stream *s, const evs_sse_stream_opts *opts);

/*
 * Stop taking clients: later connects return EVS_ECLOSED, and every
 * connected client is closed with the reason "server shutdown" (it reads
 * what is queued, then its final disconnect frame; nothing more is pushed
 * to a push client). Idempotent.
 * Returns 0 or EVS_EINVAL.
 * Threads: any thread, including inside a push callback.
 * Blocks: no.
 */
int evs_sse_close(evs_sse *sse);

/*
 * Close, then disconnect every client still connected (as
 * evs_sse_disconnect: reads in progress return EVS_ECLOSED) and free the
 * layer. Accepts NULL.
 * Returns 0, or EVS_EDEADLK (and does nothing) inside a push callback of
 * this layer.
 * Ownership: every evs_sse_client of `sse` becomes invalid.
 * Threads: any thread but inside a push callback; not concurrently with
 * other calls on `sse` or its clients, except reads in progress.
 * Blocks: while handlers, heartbeats and reads of its clients finish.
 */
int evs_sse_destroy(evs_sse *sse);

/*
 * A push callback: `frames` holds `len` bytes of one or more whole
 * frames. Return 0 to go on; any other value disconnects the client
 * (close reason "push failed"; nothing more is pushed).
 * `frames` is valid only during the call. For a heartbeat comment it runs
 * on a heartbeat service thread: one that blocks longer than 1 s is left
 * running while the other timers go on (SPEC.md section 5).
 */
typedef int (*evs_sse_push_fn)(const char *frames, size_t len, void *user);

/* How a client connects; zero is the default for every field. */
typedef struct evs_sse_client_opts {
    const char *const *patterns; /* npatterns subject patterns; NULL/0 = ">" */
    size_t npatterns;            /* at most EVS_SSE_MAX_PATTERNS */
    const char *last_event_id;   /* resume: the Last-Event-ID header as
                                    received, decimal digits (an id this
                                    stream handed out); NULL or "" = live
                                    only; anything else (a sign, space,
                                    over 2^64 - 1) is EVS_EINVAL */
    evs_sse_push_fn push;        /* NULL = the web layer reads
                                    (evs_sse_read, evs_sse_fd); else frames
                                    are pushed to it, and read/fd are
                                    EVS_EINVAL */
    void *push_user;             /* passed to push untouched */
} evs_sse_client_opts;

/*
 * Connect a client. Its subscriptions start now; the events they match
 * reach it once each, in id order (the union of its patterns), as frames
 * encoded by evs_sse_encode with ids. Stream heartbeat events become
 * ": heartbeat" comments.
 * With last_event_id L: first, if events after L are missing from the
 * stream's history, an "event: gap" frame whose data is
 * {"first":"<L+1>","last":"<last missing id>"} (ids as strings); then
 * every retained event after L that matches, in id order; then live
 * events, with none lost or repeated at the hand-off. An L newer than
 * every id the stream issued replays nothing, or, with
 * opts.reset_future_ids, is answered with an "event: reset" frame and
 * resumed as from 0: a client that keeps ids (to skip duplicates) must
 * forget them on a reset, as ids start over.
 * Push mode: the frames up to the hand-off are pushed from the calling
 * thread before connect returns, later ones from the stream's dispatcher
 * (or publishing thread, inline) and the heartbeat thread, one call at a
 * time; a push that blocks holds up the stream, so it should only queue.
 * Live events that arrive during the hand-off wait in the mailbox; if it
 * overflows under EVS_SSE_SLOW_DISCONNECT, the client is closed as a
 * slow consumer then and there: what was queued and its final
 * "event: disconnect" frame are pushed before connect returns, which
 * still returns 0 (evs_sse_client_stats_get's close_reason says "slow
 * consumer"), and nothing is pushed after it. That is the only time the
 * layer closes a push client itself, apart from evs_sse_close.
 * Returns 0; EVS_EINVAL (out, sse or a pattern NULL, an invalid pattern
 * on a TopicStream, too many patterns, a bad last_event_id); EVS_ECLOSED
 * after evs_sse_close or the stream's close; EVS_EDEADLK (resuming inside
 * a handler of the stream, which would wait for itself); EVS_ENOMEM;
 * EVS_ESYSTEM (the heartbeat thread could not start).
 * Ownership: copies the patterns and the id; `push_user` must live until
 * evs_sse_disconnect returns. *out belongs to the layer: free it with
 * evs_sse_disconnect (or evs_sse_destroy).
 * Threads: any thread, concurrently with publishers and other clients.
 * Blocks: with last_event_id, until the stream has delivered what it
 * accepted before the call (as evs_stream_flush).
 */
int evs_sse_connect(evs_sse_client **out, evs_sse *sse, const evs_sse_client_opts *opts);

/*
 * Read whole frames into buf[0..cap): as many as fit, in order. Waits up
 * to `timeout_ms` (0 = do not wait, EVS_FOREVER = no limit) for the
 * first one.
 * Returns the number of bytes (> 0; never part of a frame); 0 when the
 * timeout passed with nothing to read; EVS_ETOOBIG when the next frame
 * alone does not fit in cap (nothing is consumed: evs_sse_next_size gives
 * its size, and the next read returns it first); EVS_ECLOSED once a
 * closed client's final frame has been read, or when evs_sse_disconnect
 * or evs_sse_destroy is called meanwhile; EVS_EINVAL (c NULL, buf NULL
 * with cap > 0, a push-mode client); EVS_ENOMEM (rendering msgpack data;
 * the frame stays queued).
 * Ownership: writes into the caller's buffer; the frames are not
 * NUL-terminated.
 * Threads: one reader at a time per client; concurrently with the
 * stream's threads and with evs_sse_disconnect.
 * Blocks: up to timeout_ms.
 */
int evs_sse_read(evs_sse_client *c, char *buf, size_t cap, int timeout_ms);

/*
 * The size of the frame the last evs_sse_read refused with EVS_ETOOBIG,
 * or 0 when there is none.
 * Threads: the client's reader.
 */
size_t evs_sse_next_size(const evs_sse_client *c);

/*
 * A readiness descriptor for event loops (epoll, libuv, libevent,
 * libmicrohttpd): an eventfd, made on the first call, that is readable
 * while the client may have frames (or its close) to read, and is reset
 * by the evs_sse_read that finds nothing left. Wait for it to be
 * readable, then evs_sse_read with timeout 0; do not read the descriptor
 * itself. Frames cost no system call per event once it is readable.
 * Returns the descriptor (>= 0), EVS_EINVAL (c NULL or push mode), or
 * EVS_ESYSTEM (eventfd failed).
 * Ownership: the client owns it and closes it in evs_sse_disconnect;
 * remove it from your loop first, and never close it yourself.
 * Threads: the client's reader.
 */
int evs_sse_fd(evs_sse_client *c);

/*
 * Disconnect and free the client. A read in progress on another thread
 * returns EVS_ECLOSED; once it returns, no handler, heartbeat or push
 * callback for `c` runs, and push_user may be freed. Accepts NULL.
 * Returns 0, or EVS_EDEADLK (and does nothing) inside this client's push
 * callback: return non-zero from it instead.
 * Ownership: `c` is invalid afterwards; start no call on it meanwhile.
 * Threads: any thread, including inside a handler of the stream or
 * another client's push callback.
 * Blocks: while a handler, heartbeat or read of `c` finishes.
 */
int evs_sse_disconnect(evs_sse_client *c);

/* The layer's counters, a plain-data snapshot. */
typedef struct evs_sse_stats {
    uint64_t clients;           /* connected now */
    uint64_t connects;          /* successful evs_sse_connect calls */
    uint64_t disconnected_slow; /* clients closed by EVS_SSE_SLOW_DISCONNECT */
    uint64_t skipped;           /* events a client lost to DROP_OLDEST (or to
                                   memory or rendering failure), each
                                   announced by a skipped comment */
    uint64_t replayed;          /* events replayed to resuming clients */
    uint64_t gaps;              /* resumes from before the history (each
                                   answered with a gap frame) */
    uint64_t heartbeats;        /* heartbeat comments for idle clients */
    uint64_t frames;            /* frames handed to the web layer (read or
                                   pushed), comments included */
} evs_sse_stats;

/*
 * Read the layer's counters. Each is exact, read one by one.
 * Returns 0 or EVS_EINVAL. Threads: any thread.
 */
int evs_sse_stats_get(evs_sse *sse, evs_sse_stats *out);

/* One client's counters and state. */
typedef struct evs_sse_client_stats {
    uint64_t frames;          /* frames handed out */
    uint64_t skipped;         /* events it lost (see evs_sse_stats) */
    uint64_t replayed;        /* events replayed when it connected */
    uint64_t heartbeats;      /* heartbeat comments it got for idleness */
    uint64_t queued;          /* entries waiting in its mailbox */
    const char *close_reason; /* NULL while open; else "slow consumer",
                                 "server shutdown" or "push failed" (a
                                 string literal) */
} evs_sse_client_stats;

/*
 * Read a client's counters. Returns 0 or EVS_EINVAL.
 * Threads: any thread, until evs_sse_disconnect.
 */
int evs_sse_client_stats_get(const evs_sse_client *c, evs_sse_client_stats *out);

/*
 * Filter expressions.
 *
 * A `where` expression is a predicate over an event, compiled once and
 * then evaluated on the event's msgpack without decoding it:
 *
 *   data["user"]["plan"] == "pro" and metadata["region"] in ["eu", "us"]
 *   type == "Purchase" and not defined(data.coupon)
 *   properties["country"] == "US"          (properties = data)
 *
 * Operands:
 *   data[...], properties[...]  a path into the data, which must have
 *                   content EVS_CONTENT_MSGPACK (evs_event_make stores
 *                   JSON that way). Steps are ["key"] (a string key of a
 *                   map), [N] (element N >= 0 of an array) or .name (the
 *                   same as ["name"]). `data` alone is the whole value;
 *                   for EVS_CONTENT_TEXT it is the text as a string. Any
 *                   other content (binary, JSON text) is missing.
 *   metadata[...]   the same, into the metadata map.
 *   type            the type name ("message", ..., or the custom name)
 *   topic           the topic string;  id, timestamp: numbers.
 *   literals        "str" or 'str' (escapes \" \' \\ \/ \b \f \n \r \t
 *                   \uXXXX, surrogate pairs as UTF-8; other bytes taken
 *                   as they are), integers (-?digits, int64 or uint64),
 *                   decimals (1.5, 2e3, -0.5e-2: double), true false null.
 *
 * Predicates:
 *   a == b, !=, <, <=, >, >=   at most one comparison (no chaining)
 *   a in [lit, ...]            a equals (==) one of the literals
 *   a not in [lit, ...]        the same as not (a in [...])
 *   defined(path)              the path exists (its value may be null)
 *   path                       alone: the value is the boolean true
 *   true, false
 * combined with `not`, `and`, `or` and parentheses. Precedence from
 * tightest: comparison, `not`, `and`, `or` (so `not a == 1` is
 * `not (a == 1)`, and `a or b and c` is `a or (b and c)`); `and` and
 * `or` short-circuit. Keywords are lower case.
 *
 * Values: a missing value (absent key, index past the end, a step into
 * a non-container, data that is not msgpack) makes every comparison and
 * `in` false, `!=` included; `not` then makes it true, and defined()
 * tests presence. Numbers compare by value across int/uint/float, exact
 * for any int64 and uint64 (1 == 1.0 is true; 2^64-1 != 2^64-2); a NaN is
 * unordered (only != is true). Strings compare bytewise (memcmp, then
 * length). Booleans and null support only == and !=. Operands of
 * different types (a string and a number, ...) and arrays, maps, binary
 * and extension values: == false, != true, ordering false. Map keys are
 * matched only when they are msgpack strings.
 *
 * Limits: an expression longer than EVS_WHERE_MAX_LEN bytes, or nested
 * (parentheses, `not`) deeper than EVS_WHERE_MAX_DEPTH, is EVS_ETOOBIG.
 */
#define EVS_WHERE_MAX_LEN   4096u
#define EVS_WHERE_MAX_DEPTH 32u

typedef struct evs_where evs_where;

/* Where compiling failed: `pos` is the byte offset in the expression of
 * the offending token or escape (len for an unexpected end;
 * EVS_WHERE_MAX_LEN for an over-long expression), `msg` says what was
 * wrong (NUL-terminated, English). */
typedef struct evs_where_error {
    size_t pos;
    char   msg[96];
} evs_where_error;

/*
 * Compile `expr` (exactly `len` bytes; it need not be NUL-terminated).
 * Returns 0, EVS_EINVAL (out NULL, expr NULL with len > 0, a syntax or
 * semantic error, the empty expression), EVS_ETOOBIG (over
 * EVS_WHERE_MAX_LEN bytes or nested deeper than EVS_WHERE_MAX_DEPTH) or
 * EVS_ENOMEM; *out is NULL on failure. On failure `err` (may be NULL)
 * has the position and a message.
 * Ownership: copies what it needs from `expr`; the caller owns *out and
 * frees it with evs_where_destroy.
 * Threads: any thread.
 */
int evs_where_compile(evs_where **out, const char *expr, size_t len,
                      evs_where_error *err);

/*
 * Evaluate `w` over `ev`; false when either is NULL.
 * Threads: any thread, concurrently on one `w`: the compiled form is
 * read-only and evaluation allocates nothing.
 */
bool evs_where_match(const evs_where *w, const evs_event *ev);

/*
 * evs_where_match shaped as an evs_filter_fn: pass it to evs_subscribe
 * as the filter with `user` = the evs_where, which must then live until
 * evs_unsubscribe returns.
 */
bool evs_where_filter(const evs_event *ev, void *user);

/* Free a compiled expression. Accepts NULL. Threads: not concurrently
 * with evs_where_match on it. */
void evs_where_destroy(evs_where *w);

/* ------------------------------------------------------------------ */
/* Event-name filters                                                  */
/* ------------------------------------------------------------------ */

/*
 * A set of event type names, as a subscription filter: the seed's
 * `events=["Purchase", "Signup"]`. An event matches when
 * evs_event_type_name(ev) equals one of the names exactly (bytewise,
 * case-sensitive); built-in names ("message", "error", "connect",
 * "disconnect", "heartbeat") match events of those types.
 *   const char *names[] = {"Purchase", "Signup"};
 *   evs_names *f;
 *   evs_names_create(&f, names, 2);
 *   evs_subscribe(&sub, s, NULL, handler, evs_names_filter, f, NULL);
 */
typedef struct evs_names evs_names;

/*
 * Make a set of the `n` names in `names` (duplicates are allowed and
 * kept once).
 * Returns 0, EVS_EINVAL (out or names NULL, n == 0, a name NULL or
 * empty) or EVS_ENOMEM; *out is NULL on failure.
 * Ownership: copies the names; the caller owns *out and frees it with
 * evs_names_destroy.
 * Threads: any thread.
 */
int evs_names_create(evs_names **out, const char *const *names, size_t n);

/*
 * Whether ev's type name is in the set; false when either is NULL.
 * O(log n) string comparisons, no allocation.
 * Threads: any thread, concurrently on one set (it is read-only).
 */
bool evs_names_match(const evs_names *f, const evs_event *ev);

/*
 * evs_names_match shaped as an evs_filter_fn: pass it as a filter with
 * `user` = the evs_names, which must then live until evs_unsubscribe
 * (or evs_batch_stop) returns.
 */
bool evs_names_filter(const evs_event *ev, void *user);

/* Free a set. Accepts NULL. Threads: not concurrently with a match on it. */
void evs_names_destroy(evs_names *f);

/* ------------------------------------------------------------------ */
/* Batching                                                            */
/* ------------------------------------------------------------------ */

/*
 * A batching subscriber: events that pass the pattern and filter are
 * collected and handed to `fn` as one batch when the batch reaches
 * opts.max_events, or when opts.flush_ms have passed since the batch's
 * first event, whichever comes first; evs_batch_stop hands over the
 * remainder. Every event the subscription receives is in exactly one
 * batch, and batches arrive in the stream's id order, one call at a
 * time, never concurrently.
 *
 * `events` holds `n` >= 1 events, oldest first. fn borrows them: they
 * (and the array) are valid until it returns; evs_event_ref one to keep
 * it. Return 0; fn's return value is not otherwise used (the events are
 * consumed either way).
 *
 * fn runs on the stream's dispatcher (a size flush; the publishing
 * thread under EVS_DELIVERY_INLINE), on the heartbeat service thread
 * (a time flush) or in evs_batch_stop (the remainder), holding the
 * batcher's own flush mutex (no evstream lock): it may publish, and
 * subscribe or unsubscribe other subscriptions, but must not call
 * evs_batch_stop on its own batcher (EVS_EDEADLK). A slow fn holds up
 * the stream's delivery when a full batch is waiting; on the heartbeat
 * service it delays other timers by at most the service's stall time
 * (1 s), after which another thread takes them over (SPEC.md section 5).
 */
typedef int (*evs_batch_fn)(const evs_event *const *events, size_t n, void *user);

/* Batching options; zero is the default for every field. */
typedef struct evs_batch_opts {
    size_t max_events;  /* a batch is handed over when it holds this many;
                           0 = 1000 */
    int    flush_ms;    /* ... or this long after the batch's first event
                           arrived (the heartbeat service's monotonic
                           clock); 0 = 1000; negative is EVS_EINVAL */
    void  *filter_user; /* passed to the filter; NULL = `user` (so that,
                           for instance, evs_names_filter can take an
                           evs_names while fn takes its own state) */
} evs_batch_opts;

typedef struct evs_batcher evs_batcher;

/*
 * Subscribe a batcher to `s` (as evs_subscribe: `pattern` NULL means
 * ">", and on a TopicStream selects subjects; `filter`, if not NULL, is
 * called first on the delivering thread with opts.filter_user or
 * `user`). The batcher receives the events accepted after this call
 * returns, as a subscription does.
 * Returns 0, EVS_EINVAL (out, s or fn NULL, a bad option), EVS_ECLOSED
 * (the stream is closed) or EVS_ENOMEM; *out is NULL on failure.
 * Ownership: copies `pattern` and the options; `user` (and filter_user)
 * must live until evs_batch_stop returns. The caller owns *out and must
 * evs_batch_stop it before destroying `s`.
 * Threads: any thread, as evs_subscribe.
 * Events stored in a stream's ring slots (opts.slot_bytes) are copied
 * into the batch; if that copy cannot be allocated the event is left out
 * and the stream counts a handler error (EVS_ENOMEM).
 */
int evs_batch_subscribe(evs_batcher **out, evs_stream *s, const char *pattern,
                        evs_batch_fn fn, evs_filter_fn filter, void *user,
                        const evs_batch_opts *opts);

/*
 * Wait until the stream has delivered every event it accepted before the
 * call (as evs_stream_flush; skipped inside a handler of the stream,
 * where it would wait for itself), unsubscribe (no further events are
 * taken), cancel the flush timer, hand the remainder (if any) to fn on
 * the calling thread, and free the batcher. So every event accepted
 * before the call and passing the pattern and filter is in exactly one
 * batch. Once it returns fn and the filter are never called again and
 * `user` may be freed. Accepts NULL (returns 0).
 * Returns 0, or EVS_EDEADLK (and does nothing) inside fn of this
 * batcher.
 * Ownership: `b` is invalid afterwards.
 * Threads: any thread but inside this batcher's fn, including inside a
 * handler of the stream; not concurrently with itself on one batcher.
 * Blocks: until the stream has delivered what it accepted, while a
 * call of fn in progress on another thread finishes, then for the final
 * fn.
 */
int evs_batch_stop(evs_batcher *b);

/* ------------------------------------------------------------------ */
/* Windows                                                             */
/* ------------------------------------------------------------------ */

/*
 * Time windows over the event timestamp (evs_event_timestamp: ns since
 * the Unix epoch). A windower subscribes to a stream, keeps each event
 * in the windows its timestamp falls in, and hands `fn` every window's
 * events once the window has closed. SPEC.md, "Windows", gives the
 * rules with their reasons.
 *
 * Windows are opts.size_ms long and one starts every opts.slide_ms:
 * window k is [offset + k*slide, offset + k*slide + size) in ns, k any
 * integer. slide = size (the default) gives tumbling windows, each event
 * in exactly one; slide < size gives sliding (hopping) windows, each
 * event in size/slide of them (rounded up). Start inclusive, end
 * exclusive: an event stamped exactly at a window's end belongs to the
 * next window, not to it.
 *
 * A window closes when the wall clock (CLOCK_REALTIME, the clock event
 * timestamps come from) reaches its end plus opts.lateness_ms. The
 * heartbeat service's timer closes it then, whether or not more events
 * arrive, and fn gets it: windows holding no event are skipped, the
 * others come in window order, each exactly once, with their events in
 * timestamp order (equal timestamps in delivery order, which is id
 * order on a dispatcher stream).
 *
 * An event is late when every window it belongs to has been closed by
 * the time the windower receives it: it is counted (stats.late) and
 * dropped, or handed to opts.on_late. An event whose sliding windows
 * have partly closed joins the ones still open and is not late.
 *
 * evs_window_stop hands over every window still holding events,
 * including open ones, marked partial, so every event taken is in fn's
 * windows; to drop partial windows instead, ignore them in fn.
 *
 * Memory: the events of the open windows (one reference each, however
 * many windows share it; a heap copy for slot events), 24 bytes each.
 */

/* Largest size_ms and lateness_ms: 2^40 ms, about 34 years. */
#define EVS_WINDOW_MAX_MS ((int64_t)1 << 40)
/* Timestamps outside [-EVS_WINDOW_MAX_TS, EVS_WINDOW_MAX_TS] (2^62 ns,
 * 1824 to 2116) cannot be placed in windows without overflow; such
 * events go the way of late ones and are counted in stats.out_of_range. */
#define EVS_WINDOW_MAX_TS ((int64_t)1 << 62)

/* One window, as handed to evs_window_fn. Times are event time, ns
 * since the Unix epoch. */
typedef struct evs_window {
    int64_t start_ns; /* first instant in the window */
    int64_t end_ns;   /* first instant after it (start_ns + size) */
    bool    partial;  /* handed over by evs_window_stop before it closed:
                         events arriving later might have joined it */
} evs_window;

/*
 * A window's aggregate callback. `events` holds `n` >= 1 events in
 * timestamp order; fn borrows them and the array until it returns
 * (evs_event_ref one to keep it). Return 0; a non-zero return is counted
 * in stats.errors and changes nothing else.
 * It runs on the heartbeat service thread (a window closing) or in
 * evs_window_stop (the rest), one window at a time, never concurrently
 * with itself, and with no evstream lock held: it may publish, subscribe
 * and unsubscribe, but must not stop its own windower (EVS_EDEADLK). A
 * slow fn delays the other timers of the service (heartbeats, batch
 * flushes, other windows) by at most its stall time (1 s), after which
 * another service thread takes them over (SPEC.md section 5).
 */
typedef int (*evs_window_fn)(const evs_window *w, const evs_event *const *events,
                             size_t n, void *user);

/*
 * The late-event hook: called with each late event (borrowed until it
 * returns) on the delivering thread (the stream's dispatcher, or the
 * publisher under inline delivery), possibly while fn runs on another
 * thread. Its non-zero return is counted as the subscription's handler
 * error.
 */
typedef int (*evs_window_late_fn)(const evs_event *ev, void *user);

/* Window options. size_ms is required; zero is the default elsewhere. */
typedef struct evs_window_opts {
    int64_t size_ms;     /* window length, 1..EVS_WINDOW_MAX_MS; 0 (there is
                            no sensible default) is EVS_EINVAL */
    int64_t slide_ms;    /* 0 = size_ms (tumbling); 1..size_ms: a window
                            starts every slide_ms (sliding) */
    int64_t offset_ms;   /* 0 = windows aligned to the Unix epoch (an
                            hour-long window is a UTC hour); 0..slide-1:
                            starts shifted by this much */
    int64_t lateness_ms; /* 0 = a window closes at its end; 1..
                            EVS_WINDOW_MAX_MS: this much later, so events
                            that arrive up to that late still join it */
    evs_window_late_fn on_late; /* NULL = late events are dropped (and
                            counted); else each goes to on_late (and is
                            counted) */
    void *late_user;     /* passed to on_late; NULL = `user` */
    void *filter_user;   /* passed to the filter; NULL = `user` */
    size_t max_held;     /* memory bound: most events held for open windows
                            at once; 0 = EVS_WINDOW_DEFAULT_HELD. An event
                            that would pass it is refused (stats.overflow;
                            the stream counts a handler error, EVS_EFULL) */
} evs_window_opts;

/* The default bound on events a windower holds (opts.max_held). */
#define EVS_WINDOW_DEFAULT_HELD ((size_t)1 << 20)

typedef struct evs_windower evs_windower;

/*
 * Subscribe a windower to `s` (as evs_subscribe: `pattern` NULL means
 * ">", on a TopicStream it selects subjects; `filter`, if not NULL, runs
 * first on the delivering thread with opts->filter_user or `user`).
 * Windows that closed before this call (by the wall clock now) take no
 * events: theirs are late.
 * Returns 0, EVS_EINVAL (out, s, fn or opts NULL, a bad option),
 * EVS_ECLOSED (the stream is closed), EVS_ENOMEM or EVS_ESYSTEM (the
 * heartbeat service thread could not start); *out is NULL on failure.
 * Ownership: copies `pattern` and the options; `user`, late_user and
 * filter_user must live until evs_window_stop returns. The caller owns
 * *out and must evs_window_stop it before destroying `s`.
 * Threads: any thread, as evs_subscribe.
 * An event stored in a stream's ring slot (opts.slot_bytes) is copied;
 * if the copy (or room for the event) cannot be allocated the event is
 * left out, counted in stats.nomem, and the stream counts a handler
 * error (EVS_ENOMEM).
 */
int evs_window_subscribe(evs_windower **out, evs_stream *s, const char *pattern,
                         evs_window_fn fn, evs_filter_fn filter, void *user,
                         const evs_window_opts *opts);

/*
 * Wait until the stream has delivered what it accepted before the call
 * (as evs_stream_flush; skipped inside a handler of the stream, where it
 * would wait for itself), unsubscribe, cancel the timer, then hand fn,
 * on the calling thread and in window order, every window still holding
 * events: those closed by now as complete ones, the rest with
 * partial = true. Then free the windower. Once it returns fn, on_late
 * and the filter are never called again and their user pointers may be
 * freed. Accepts NULL (returns 0).
 * Returns 0, or EVS_EDEADLK (and does nothing) inside this windower's fn.
 * Ownership: `w` is invalid afterwards.
 * Threads: any thread but inside this windower's fn; not concurrently
 * with itself or evs_window_stats_get on one windower.
 * Blocks: until the stream has delivered what it accepted, while a fn
 * call in progress on the service thread returns, then for the final
 * fn calls.
 */
int evs_window_stop(evs_windower *w);

/* A windower's counters. */
typedef struct evs_window_stats {
    uint64_t events;       /* events taken into windows */
    uint64_t windows;      /* windows handed to fn */
    uint64_t partial;      /* of those, handed over open by stop */
    uint64_t errors;       /* fn's non-zero returns */
    uint64_t late;         /* late events (dropped, or given to on_late) */
    uint64_t out_of_range; /* events outside +-EVS_WINDOW_MAX_TS (handled
                              as late ones, not counted in `late`) */
    uint64_t nomem;        /* events left out for lack of memory */
    uint64_t overflow;     /* events refused at opts.max_held */
    uint64_t held;         /* events held now, for the open windows */
    int64_t  late_before_ns; /* an event stamped earlier than this is
                              late now: the start of the first window
                              still open (event time, ns) */
} evs_window_stats;

/*
 * Read the windower's counters (a consistent snapshot).
 * Returns 0 or EVS_EINVAL.
 * Threads: any thread, concurrently with delivery and fn, until
 * evs_window_stop.
 */
int evs_window_stats_get(evs_windower *w, evs_window_stats *out);

/* ------------------------------------------------------------------ */
/* Pipelines (StreamProcessor)                                         */
/* ------------------------------------------------------------------ */

/*
 * A processor subscribes to a source stream and runs every event through
 * a chain of filter and map stages, in the order they were added, then
 * hands what comes out to each of its sinks: streams it publishes to and
 * callbacks. Stages keep their own state behind their `user` pointer.
 * The chain runs in the subscription's handler: on the source's
 * dispatcher thread, one event at a time in id order (under inline
 * delivery, on publishing threads, possibly at once).
 *
 *   evs_processor *p;
 *   evs_processor_create(&p, source, &(evs_processor_opts){.pattern = "orders.>"});
 *   evs_processor_filter(p, "paid", is_paid, NULL);
 *   evs_processor_map(p, "enrich", add_region, &regions);
 *   evs_processor_sink(p, enriched);
 *   evs_processor_start(p);
 *   ...
 *   evs_processor_destroy(p); // stops, then frees
 *
 * An error in a stage (a map's non-zero return, a sink that refuses)
 * goes to opts.on_error with the stage's name, index, the event and the
 * code; it is counted, that event goes no further down the chain (a sink
 * error does not stop the other sinks), and the pipeline keeps running.
 */
typedef struct evs_processor evs_processor;

/*
 * A map stage. *out holds `in` on entry. Leave it to pass the event on
 * unchanged; set it to another event to replace it (hand over one
 * reference: a new event from evs_event_create, or evs_event_ref of
 * one); set it to NULL to drop the event. Return 0, or a non-zero code
 * for an error (the event is dropped, counted, reported; a replacement
 * already set is released).
 * Ownership: `in` is borrowed for the call.
 */
typedef int (*evs_map_fn)(const evs_event *in, evs_event **out, void *user);

/* Reports a stage error: the stage's name and index (the order stages
 * and sinks were added, from 0), the event it failed on (borrowed for
 * the call), the code. Runs on the thread that ran the stage. */
typedef void (*evs_stage_error_fn)(const char *stage, size_t index, const evs_event *ev,
                                   int code, void *user);

/* Processor options; zero is the default for every field. */
typedef struct evs_processor_opts {
    const char        *pattern;       /* NULL = ">": events of every topic */
    evs_stage_error_fn on_error;      /* NULL = count errors only */
    void              *on_error_user; /* passed to on_error untouched */
} evs_processor_opts;

/*
 * Make a stopped processor on `source` with no stages.
 * Returns 0, EVS_EINVAL (NULL out or source), EVS_ENOMEM.
 * Ownership: copies the pattern; `source` is borrowed and must outlive
 * the processor (destroy the processor first). The caller owns *out.
 * Threads: any thread.
 */
int evs_processor_create(evs_processor **out, evs_stream *source,
                         const evs_processor_opts *opts);

/*
 * Append a filter stage (`fn` true = keep the event), a map stage, a
 * sink stream (events are published to it: a new id there, sharing the
 * payload), or a sink callback (its non-zero return is a sink error).
 * `name` (NULL = "filter", "map" or "sink") names the stage in errors
 * and stats. Sinks receive the chain's output whatever order they were
 * added in; each sink gets every event that passes the whole chain.
 * Returns 0, EVS_EINVAL (NULL p or fn, a sink that is the source),
 * EVS_EBUSY (the processor is running), EVS_ENOMEM.
 * Ownership: copies `name`; `user` and `sink` are borrowed until the
 * processor is destroyed.
 * Threads: any thread, not concurrently with other calls on `p`.
 */
int evs_processor_filter(evs_processor *p, const char *name, evs_filter_fn fn, void *user);
int evs_processor_map(evs_processor *p, const char *name, evs_map_fn fn, void *user);
int evs_processor_sink(evs_processor *p, evs_stream *sink);
int evs_processor_sink_fn(evs_processor *p, const char *name, evs_handler_fn fn, void *user);

/*
 * Start: subscribe to the source. The processor receives the events the
 * source accepts after this returns (as evs_subscribe).
 * Returns 0, EVS_EINVAL (NULL; a pattern the TopicStream refuses),
 * EVS_EBUSY (already running), EVS_ECLOSED, EVS_ENOMEM.
 * Threads: any thread, not concurrently with other calls on `p`.
 */
int evs_processor_start(evs_processor *p);

/*
 * Stop: unsubscribe. When it returns no stage or sink of this processor
 * is running or will run again (it waits for an event in flight on
 * another thread; inside the processor's own chain it returns at once
 * and that event is the last). Stopping a stopped processor does
 * nothing. Events the source accepts while stopped are not seen; flush
 * the source first to process everything published before the stop.
 * Returns 0 or EVS_EINVAL.
 * Threads: any thread, not concurrently with other calls on `p`.
 * Blocks: while the chain runs on another thread.
 */
int evs_processor_stop(evs_processor *p);

/*
 * Stop, then free the processor and its stages. Accepts NULL.
 * Returns 0, or EVS_EDEADLK (and does nothing) inside its own chain.
 * Threads: as evs_processor_stop.
 */
int evs_processor_destroy(evs_processor *p);

/* A processor's counters. */
typedef struct evs_processor_stats {
    uint64_t received; /* events the chain was given */
    uint64_t emitted;  /* events that passed the whole chain and reached a
                          sink (or, with no sinks, passed the chain) */
    uint64_t dropped;  /* events a filter or map dropped, or a stage error
                          stopped */
    uint64_t errors;   /* stage and sink errors */
    size_t   stages;   /* stages and sinks */
    bool     running;
} evs_processor_stats;

/* One stage's counters. */
typedef struct evs_stage_stats {
    const char *name;     /* borrowed from the processor */
    uint64_t    in;       /* events it was given */
    uint64_t    out;      /* events it passed on (a sink: accepted) */
    uint64_t    dropped;  /* filtered out or dropped by a map */
    uint64_t    replaced; /* a map's replacements */
    uint64_t    errors;
} evs_stage_stats;

/*
 * Read the processor's counters, or those of stage `index` (the order
 * stages and sinks were added). Counters are exact, read one by one.
 * Returns 0 or EVS_EINVAL (NULL, index out of range).
 * Threads: any thread, concurrently with the chain.
 */
int evs_processor_stats_get(const evs_processor *p, evs_processor_stats *out);
int evs_processor_stage_stats_get(const evs_processor *p, size_t index, evs_stage_stats *out);

/* ------------------------------------------------------------------ */
/* NATS bridge                                                         */
/* ------------------------------------------------------------------ */

/*
 * A bridge joins a TopicStream to a NATS server, so that hubs in several
 * processes or on several machines share topics (SPEC.md, "NATS
 * bridge"). It uses the nats.c client and is compiled in when the build
 * finds libnats (pkg-config); without it evs_nats_bridge_create returns
 * EVS_ENOTSUP and evs_nats_supported() is false.
 *
 * Export: a local event whose subject matches an export pattern is
 * published to NATS on PREFIX.<subject> (or <subject> with no prefix),
 * encoded with evs_event_to_msgpack, with the headers below. Import: a
 * NATS message on PREFIX.<s> where <s> matches an import pattern is
 * published to the local stream with topic <s>: decoded with
 * evs_event_from_msgpack when it has the Evs-Origin header, else (a
 * message from another NATS client) as a "message" event whose binary
 * data is the payload. Loops: a message carrying this bridge's origin is
 * dropped (stats.dropped_loops), and an event the bridge imported is
 * never exported again, so two bridges that import and export the same
 * subjects pass each event across once.
 *
 * Durable mode (opts.durable = a JetStream stream name): exports are
 * stored in that JetStream stream (created if missing) and acknowledged
 * by it, retried until they are; imports come from a JetStream consumer
 * that replays from opts.replay, so a bridge started later, or
 * restarted, gets what the JetStream stream retained. With
 * opts.seq_ids the local stream becomes a mirror of the JetStream
 * stream: every local event id equals its JetStream sequence number, so
 * a Last-Event-ID is valid on every hub (SPEC.md, "Ids across hubs").
 *
 * Failures: the bridge connects, reconnects (forever) and re-creates
 * what it needs in the background. Local publishers and the stream's
 * dispatcher never wait for NATS: exports go through a bounded queue
 * served by the bridge's own thread, and what cannot be forwarded is
 * counted (evs_nats_stats).
 */
#define EVS_NATS_HDR_ORIGIN "Evs-Origin" /* the exporting bridge's origin */
#define EVS_NATS_HDR_ID     "Evs-Id"     /* the event's id in the exporting
                                            stream, decimal */
#define EVS_NATS_HDR_TYPE   "Evs-Type"   /* evs_event_type_name */

/* Longest origin, prefix-free name (durable stream, consumer). */
#define EVS_NATS_MAX_NAME 64u

/* Where a durable bridge's imports start (opts.replay). */
typedef enum evs_nats_replay {
    EVS_NATS_REPLAY_ALL = 0, /* every message the JetStream stream holds */
    EVS_NATS_REPLAY_NEW,     /* only messages stored after the bridge
                                subscribed */
    EVS_NATS_REPLAY_SEQ,     /* from sequence opts.replay_seq (>= 1) on */
    EVS_NATS_REPLAY_TIME     /* from the first message stored at or after
                                opts.replay_time_ns */
} evs_nats_replay;

typedef struct evs_nats_bridge evs_nats_bridge;

/* Bridge options; zero is the default for every field. */
typedef struct evs_nats_opts {
    const char *url;            /* NULL = "nats://127.0.0.1:4222"; a
                                   comma-separated list names several
                                   servers of one cluster */
    const char *const *exports; /* nexports local subject patterns whose
                                   events are published to NATS; NULL/0 =
                                   none */
    size_t nexports;
    const char *const *imports; /* nimports patterns, in local form
                                   (without the prefix), imported from
                                   NATS; NULL/0 = none. Durable mode takes
                                   at most one (a JetStream consumer has
                                   one filter subject): use a wildcard */
    size_t nimports;
    const char *prefix;         /* NULL or "" = none; else a subject without
                                   wildcards: local "a.b" is NATS
                                   "PREFIX.a.b" both ways */
    const char *origin;         /* this bridge's origin id: NULL = 16 random
                                   hex digits, new per bridge; else 1..
                                   EVS_NATS_MAX_NAME bytes of [A-Za-z0-9_-].
                                   Bridges that must not import each
                                   other's events share one */
    size_t queue;               /* events that may wait for export; past it
                                   they are dropped and counted
                                   (export_dropped); 0 = 65536 */
    int reconnect_wait_ms;      /* pause between connection attempts;
                                   0 = 250 */
    int reconnect_buf;          /* core mode: bytes of exports nats.c keeps
                                   while reconnecting (sent on reconnect);
                                   0 = 8 MiB; past it exports fail
                                   (export_failed) */
    int timeout_ms;             /* connect, JetStream request and publish-ack
                                   timeout; 0 = 2000 */
    int import_pending;         /* messages nats.c may hold per import
                                   subscription while the local stream is
                                   slow; past it NATS drops (core mode:
                                   import_dropped); 0 = 65536 */
    const char *durable;        /* NULL = core NATS (at most once); else the
                                   JetStream stream name, 1..
                                   EVS_NATS_MAX_NAME bytes of
                                   [A-Za-z0-9_-]: exports are stored there,
                                   imports replay from it */
    const char *consumer;       /* durable: NULL = imports through an
                                   ordered consumer starting at
                                   opts.replay each time the bridge starts;
                                   else a durable consumer of that name
                                   (same charset), created at opts.replay
                                   the first time and resumed after the
                                   last acknowledged message afterwards */
    evs_nats_replay replay;     /* durable: where imports start; 0 = all */
    uint64_t replay_seq;        /* EVS_NATS_REPLAY_SEQ: the first sequence */
    int64_t replay_time_ns;     /* EVS_NATS_REPLAY_TIME: ns since the epoch */
    bool seq_ids;               /* durable: local ids are JetStream sequence
                                   numbers. The bridge must be the local
                                   stream's only publisher (no exports,
                                   stream heartbeat_ms 0): it imports its
                                   own messages too and fills sequence gaps
                                   with heartbeat events. Publish local
                                   events with evs_nats_bridge_publish */
    int64_t max_msgs;           /* durable, when the bridge creates the
                                   JetStream stream: messages it keeps;
                                   0 = no limit */
    int64_t max_age_ms;         /* ... and how long; 0 = no limit */
} evs_nats_opts;

/* A bridge's counters, a plain-data snapshot. Each is exact, read one by
 * one. */
typedef struct evs_nats_stats {
    uint64_t exported;        /* events NATS accepted (durable: stored and
                                 acknowledged by JetStream) */
    uint64_t export_buffered; /* core: events handed to nats.c while
                                 disconnected, kept in its reconnect
                                 buffer and sent on reconnect */
    uint64_t export_failed;   /* core: events NATS refused (lost); durable:
                                 publish attempts that failed and were
                                 retried */
    uint64_t export_dropped;  /* events refused by the full export queue,
                                 or still queued when the bridge was
                                 destroyed */
    uint64_t export_queued;   /* events waiting for export now */
    uint64_t imported;        /* messages published to the local stream */
    uint64_t import_failed;   /* messages that did not decode, or that the
                                 local stream refused (its overflow
                                 policy, closed) */
    uint64_t import_dropped;  /* messages nats.c dropped because the import
                                 fell behind (import_pending) */
    uint64_t dropped_loops;   /* messages dropped for carrying our origin */
    uint64_t duplicates;      /* durable: redelivered messages skipped */
    uint64_t id_gaps;         /* seq_ids: heartbeat events that filled
                                 sequence gaps */
    uint64_t id_mismatches;   /* seq_ids: imports whose local id is not their
                                 sequence (another publisher, heartbeats) */
    uint64_t last_seq;        /* durable: the last JetStream sequence
                                 imported or skipped */
    uint64_t disconnects;     /* connections lost */
    uint64_t reconnects;      /* connections re-established */
    bool     connected;       /* connected to a server now */
    bool     ready;           /* durable: the JetStream stream and consumer
                                 are set up; core: always true */
} evs_nats_stats;

/* Whether the NATS bridge is compiled in. Threads: any. */
bool evs_nats_supported(void);

/*
 * Create a bridge between the TopicStream `s` and NATS. It returns
 * without waiting for a server: with none reachable the bridge keeps
 * trying in the background (stats.connected says when it is up;
 * evs_nats_bridge_sync waits for it). Exports start with the events `s`
 * accepts after this returns.
 * Returns 0; EVS_ENOTSUP (built without libnats); EVS_EINVAL (out or s
 * NULL, s not a TopicStream, an invalid pattern, prefix, origin or
 * name, nimports > 1 or a ">" pattern without a prefix in durable mode,
 * seq_ids without durable or with exports, consumer without durable, a
 * negative option, a URL nats.c refuses); EVS_ECLOSED (s is closed and
 * there are export patterns);
 * EVS_ENOMEM; EVS_ESYSTEM (the thread or the client could not start).
 * *out is NULL on failure.
 * Ownership: copies the options and their strings; `s` is borrowed and
 * must outlive the bridge (destroy the bridge first). The caller owns
 * *out.
 * Threads: any thread. The bridge runs one thread of its own (exports,
 * JetStream setup); imports run on nats.c's subscription threads (one
 * shared delivery thread when there are several import patterns) and
 * publish to `s` from there.
 */
int evs_nats_bridge_create(evs_nats_bridge **out, evs_stream *s, const evs_nats_opts *opts);

/*
 * Export `ev` directly, whatever the export patterns: queue it for NATS
 * on PREFIX.<topic>. For a mirror (opts.seq_ids), where local events
 * reach the local stream only through JetStream, this is how they are
 * published. The id header is evs_event_id(ev) (0 if unpublished).
 * Returns 0 (queued), EVS_EINVAL (NULL, a topic that is not a subject),
 * EVS_EFULL (the queue is full; counted in export_dropped), EVS_ECLOSED
 * (the bridge is being destroyed), EVS_ENOMEM.
 * Ownership: the bridge takes its own reference; the caller keeps its
 * own, and must not change the event afterwards, nor publish it to a
 * stream (which numbers it) unless it did so before this call.
 * Threads: any thread, concurrently with everything but destroy.
 * Blocks: no.
 */
int evs_nats_bridge_publish(evs_nats_bridge *b, const evs_event *ev);

/*
 * Wait until the bridge is connected and ready, and (durable, with
 * imports) its consumer has nothing pending: every message the JetStream
 * stream held that matches the import has been imported or skipped.
 * This is the start-up replay: create the bridge, sync, then serve
 * clients. Core mode: until connected and the server has the import
 * subscriptions. timeout_ms < 0 (EVS_FOREVER) waits without limit.
 * Returns 0, EVS_ETIMEDOUT, EVS_EINVAL.
 * Threads: any thread but inside a handler of the local stream (imports
 * may need its dispatcher).
 * Blocks: up to timeout_ms.
 */
int evs_nats_bridge_sync(evs_nats_bridge *b, int timeout_ms);

/*
 * Wait until every event the local stream accepted so far and matching
 * the exports, and every event given to evs_nats_bridge_publish, has
 * been forwarded: durable: stored and acknowledged by JetStream; core:
 * flushed to the server (which needs a connection). Events dropped
 * meanwhile count as done. timeout_ms < 0 waits without limit.
 * Returns 0, EVS_ETIMEDOUT, EVS_EINVAL, EVS_EDEADLK (inside a handler of
 * the local stream, as evs_stream_flush).
 * Threads: any thread but inside a handler of the local stream.
 * Blocks: up to timeout_ms.
 */
int evs_nats_bridge_flush(evs_nats_bridge *b, int timeout_ms);

/*
 * Read the counters. Returns 0 or EVS_EINVAL.
 * Threads: any thread, until destroy.
 */
int evs_nats_bridge_stats_get(evs_nats_bridge *b, evs_nats_stats *out);

/*
 * The bridge's origin id (opts.origin or the random one), NUL-terminated.
 * Ownership: borrowed from `b`, valid until destroy.
 * Threads: any thread.
 */
const char *evs_nats_bridge_origin(const evs_nats_bridge *b);

/*
 * Stop and free the bridge: end the export subscription, close the NATS
 * connection (an import or JetStream publish in progress finishes or
 * fails), join the bridge's thread and wait for nats.c's callbacks. Events
 * still queued for export are dropped and counted; call
 * evs_nats_bridge_flush first to forward them. Accepts NULL.
 * Returns 0.
 * Ownership: `b` is invalid afterwards; `s` is no longer used.
 * Threads: any thread but inside a handler of the local stream; not
 * concurrently with other calls on `b`.
 * Blocks: while a publish to the local stream by an import finishes and
 * nats.c delivers its close callbacks.
 */
int evs_nats_bridge_destroy(evs_nats_bridge *b);

#ifdef __cplusplus
}
#endif

#endif /* EVSTREAM_H */
