/*
 * Time windows: a subscription keeps each event in the tumbling or
 * sliding windows its timestamp falls in, and hands every window to the
 * user's evs_window_fn once the wall clock passes the window's end plus
 * the allowed lateness; evs_window_stop hands over what is left.
 *
 * One buffer, no copies per window. Every event taken is held once, in
 * `buf`, sorted by timestamp (ties in arrival order). Since all windows
 * have the same size and start on one grid, the events of window s are
 * the run of `buf` with timestamps in [s, s + size): handing a window
 * over is a scan from the front, and an event leaves the buffer when
 * the last window that can contain it is handed over. Events mostly
 * arrive in timestamp order, so inserting is usually an append; an
 * out-of-order one moves the entries after it.
 *
 * `next_start` is the start of the first window not yet closed; it only
 * grows, stays on the grid, and every buffered timestamp is >= it. So
 * an event is late exactly when its timestamp is below next_start (all
 * its windows closed), and the next window to hand over starts at
 * max(next_start, the first window of the oldest buffered event), which
 * skips empty windows in O(1). A window holding events closes when emit
 * hands it over; empty ones close as soon as anyone looks at the clock
 * (close_empty_locked: fires, deliveries, stats), so lateness does not
 * depend on whether a parked timer ran. The one slack: an event that
 * arrives after its window's close time but before the timer has handed
 * that window over (the timer's latency) still joins it.
 *
 * Time. Event time is CLOCK_REALTIME (evs__hb_wall, which a test clock
 * replaces); the heartbeat service's deadlines are on its monotonic
 * clock, so a close at event time c becomes the deadline
 * now_service + (c - now_wall), re-derived at every fire, which also
 * absorbs steps of the wall clock. `watermark` is the highest wall time
 * read so far: windows whose end + lateness is not after it are closed
 * (or about to be handed over), and it never moves back, so a wall clock
 * stepped backwards reopens nothing.
 *
 * Threads. The subscription's handler (the dispatcher, or publishers
 * under inline delivery) inserts events; one heartbeat-service timer
 * (fire) hands closed windows over; evs_window_stop removes the timer
 * (waiting for a running fire) and hands over the rest. So fn runs on
 * the service thread or in stop, never both: no flush lock is needed.
 *
 * The timer lives from subscribe to stop. It is armed for the earliest
 * close among the buffered events' windows (`armed`, event time), or
 * parked at INT64_MAX when nothing is buffered (an idle windower costs
 * no wake-ups). The handler moves it earlier with evs__hb_fire_by when
 * an event opens a window that closes sooner; fire re-arms it by its
 * return value. Both update `armed` under `lock`, and fire_by during a
 * fire is kept by the service (heartbeat.h), so no close is missed.
 *
 * Lock. `lock` guards every field below it in struct evs_windower. User
 * code (fn, on_late, the filter) never runs under it. Taken before the
 * service mutex (evs__hb_fire_by is called under it; that mutex is a
 * leaf), never while calling evs_unsubscribe or evs__hb_remove (both
 * wait for callbacks that take it).
 *
 * Handing over without holding the lock. fn runs unlocked while the
 * handler may insert, which can move or reallocate `buf`, so the run is
 * first copied (pointers only) into `scratch`. The handler keeps the
 * invariant that the scratch array in use next has at least `cap`
 * slots: it allocates both when the buffer grows, and while a hand-over
 * is in progress (`emitting`) it parks the new scratch in
 * `scratch_next` for fire to swap in afterwards. So handing over never
 * allocates and stop cannot fail.
 */
#include "evs_internal.h"
#include "heartbeat.h"

#include <pthread.h>

#define MIN_CAP 64 /* first buffer: 1.5 KiB with its scratch */

struct entry {
    int64_t ts;          /* evs_event_timestamp(ev), read once */
    const evs_event *ev; /* our reference (a heap copy for slot events) */
};

struct evs_windower {
    /* Read-only after subscribe. */
    evs_stream *stream;   /* borrowed until stop */
    evs_sub *sub;         /* cleared by stop */
    evs_window_fn fn;
    evs_filter_fn filter;
    evs_window_late_fn on_late;
    void *user, *filter_user, *late_user;
    int64_t size, slide, offset, grace; /* ns; 0 < slide <= size */
    size_t max_held;      /* the bound on hi - lo (opts.max_held) */
    evs__hb_timer *timer; /* from subscribe to stop */

    pthread_mutex_t lock; /* guards everything below */
    struct entry *buf;    /* events, sorted by ts, at [lo, hi) of cap */
    size_t lo, hi, cap;
    const evs_event **scratch;      /* >= cap slots unless scratch_next */
    const evs_event **scratch_next; /* a larger one made while emitting */
    bool emitting;        /* fn runs on a copy in scratch: keep it */
    int64_t next_start;   /* first window not closed; every ts >= it */
    int64_t watermark;    /* highest wall time read (never decreases) */
    int64_t armed;        /* the event-time close the timer is set for */
    uint64_t events, windows, partial, errors, late, out_of_range, nomem, overflow;
};

/* The windower whose fn this thread is running, to refuse a stop that
 * would wait for itself. */
static _Thread_local const evs_windower *tl_emitting;

/* ------------------------------------------------------------------ */
/* Window arithmetic. Timestamps are within +-2^62 and size, slide,    */
/* offset and grace below 2^60 ns, so nothing here overflows.          */

static int64_t floor_div(int64_t a, int64_t b) /* b > 0 */
{
    int64_t q = a / b;
    return (a % b < 0) ? q - 1 : q;
}

/* The largest window start <= x. */
static int64_t grid_floor(const evs_windower *w, int64_t x)
{
    return w->offset + floor_div(x - w->offset, w->slide) * w->slide;
}

/* The first window containing ts: the smallest start s with
 * s + size > ts. */
static int64_t first_start(const evs_windower *w, int64_t ts)
{
    return grid_floor(w, ts - w->size) + w->slide;
}

/* The first window still open at wall time t: s + size + grace > t.
 * t may be any int64 (a wall clock far off); clamp it into range. */
static int64_t open_start(const evs_windower *w, int64_t t)
{
    if (t > EVS_WINDOW_MAX_TS + w->size + w->grace)
        t = EVS_WINDOW_MAX_TS + w->size + w->grace;
    if (t < -EVS_WINDOW_MAX_TS)
        t = -EVS_WINDOW_MAX_TS;
    return grid_floor(w, t - w->size - w->grace) + w->slide;
}

/* The first window not yet handed over that contains ts (ts >= next_start). */
static int64_t window_of(const evs_windower *w, int64_t ts)
{
    int64_t s = first_start(w, ts);
    return s > w->next_start ? s : w->next_start;
}

static int64_t close_of(const evs_windower *w, int64_t start)
{
    return start + w->size + w->grace;
}

/* The service deadline for event time `close`, given both clocks now. */
static int64_t service_deadline(int64_t close, int64_t now_svc, int64_t now_wall)
{
    if (close == INT64_MAX)
        return INT64_MAX;
    if (close <= now_wall)
        return now_svc;
    int64_t d, t;
    if (__builtin_sub_overflow(close, now_wall, &d) || __builtin_add_overflow(now_svc, d, &t))
        return INT64_MAX;
    return t;
}

/* ------------------------------------------------------------------ */
/* Handing windows over                                                */

/* The close of the first window holding events (INT64_MAX: none). */
static int64_t next_close_locked(const evs_windower *w)
{
    if (w->lo == w->hi)
        return INT64_MAX;
    return close_of(w, window_of(w, w->buf[w->lo].ts));
}

/*
 * Close the empty windows that have closed by wall time `now`: move
 * next_start up to the first window still open at `now` (a window's
 * end + lateness after it), but never past one that holds events, which
 * emit hands over first, in order. Windows below the oldest event's
 * first window hold nothing, so this is exact. Under `lock`.
 */
static void close_empty_locked(evs_windower *w, int64_t now)
{
    if (now > w->watermark)
        w->watermark = now;
    int64_t open = open_start(w, w->watermark);
    if (w->lo < w->hi) {
        int64_t first = window_of(w, w->buf[w->lo].ts);
        if (first < open)
            open = first;
    }
    if (open > w->next_start)
        w->next_start = open;
}

/*
 * Hand fn, in order, every window holding events that has closed by
 * wall time `now`; with `final`, every window holding events, those not
 * closed marked partial. Takes `lock`; runs fn without it.
 * Caller: fire (service thread) or stop (after the timer is gone), so
 * two calls never overlap.
 */
static void emit(evs_windower *w, int64_t now, bool final)
{
    pthread_mutex_lock(&w->lock);
    if (now > w->watermark)
        w->watermark = now;
    while (w->lo < w->hi) {
        int64_t start = window_of(w, w->buf[w->lo].ts);
        bool partial = close_of(w, start) > w->watermark;
        if (partial && !final)
            break;
        /* Window `start` holds the run of entries below its end: every
         * buffered ts is >= start (see window_of). */
        int64_t end = start + w->size;
        size_t n = 0;
        for (size_t i = w->lo; i < w->hi && w->buf[i].ts < end; i++)
            w->scratch[n++] = w->buf[i].ev;
        /* Closed: events for it (and earlier windows) are late now. */
        w->next_start = start + w->slide;
        w->emitting = true;
        pthread_mutex_unlock(&w->lock);

        evs_window win = {.start_ns = start, .end_ns = end, .partial = partial};
        tl_emitting = w;
        int rc = w->fn(&win, w->scratch, n, w->user);
        tl_emitting = NULL;

        pthread_mutex_lock(&w->lock);
        w->emitting = false;
        if (w->scratch_next != NULL) {
            evs__free(w->scratch);
            w->scratch = w->scratch_next;
            w->scratch_next = NULL;
        }
        w->windows++;
        w->partial += partial;
        w->errors += rc != 0;
        /* Events no open window contains leave. They were all in this
         * window: anything inserted meanwhile is >= next_start. */
        while (w->lo < w->hi && w->buf[w->lo].ts < w->next_start)
            evs_event_unref(w->buf[w->lo++].ev);
    }
    if (!final)
        close_empty_locked(w, now); /* and those that closed empty */
    pthread_mutex_unlock(&w->lock);
}

/* The timer (heartbeat service thread): hand over what closed, re-arm
 * for the next close. */
static int64_t fire(void *user, int64_t now_svc)
{
    evs_windower *w = user;
    int64_t now_wall = evs__hb_wall();
    emit(w, now_wall, false);
    pthread_mutex_lock(&w->lock);
    w->armed = next_close_locked(w);
    int64_t next = service_deadline(w->armed, now_svc, now_wall);
    pthread_mutex_unlock(&w->lock);
    return next;
}

/* ------------------------------------------------------------------ */
/* Taking events                                                       */

/*
 * Make room for one more entry at `hi`: slide the live entries down, or
 * double the buffer and make a scratch array to match (see the header
 * comment). Under `lock`. Returns 0 or EVS_ENOMEM (nothing changed).
 */
static int make_room(evs_windower *w)
{
    if (w->hi < w->cap)
        return 0;
    if (w->lo > 0) {
        memmove(w->buf, w->buf + w->lo, (w->hi - w->lo) * sizeof(*w->buf));
        w->hi -= w->lo;
        w->lo = 0;
        return 0;
    }
    size_t cap = w->cap ? w->cap * 2 : MIN_CAP;
    if (cap > SIZE_MAX / sizeof(struct entry))
        return EVS_ENOMEM;
    const evs_event **scratch = evs__malloc(cap * sizeof(*scratch));
    if (scratch == NULL)
        return EVS_ENOMEM;
    struct entry *buf = evs__realloc(w->buf, cap * sizeof(*buf));
    if (buf == NULL) {
        evs__free(scratch);
        return EVS_ENOMEM;
    }
    w->buf = buf;
    w->cap = cap;
    if (w->emitting) {
        evs__free(w->scratch_next);
        w->scratch_next = scratch;
    } else {
        evs__free(w->scratch);
        w->scratch = scratch;
    }
    return 0;
}

/* Insert after every entry with ts <= the new one's (stable). */
static void insert_sorted(evs_windower *w, int64_t ts, const evs_event *ev)
{
    size_t i = w->hi;
    while (i > w->lo && w->buf[i - 1].ts > ts)
        i--;
    memmove(w->buf + i + 1, w->buf + i, (w->hi - i) * sizeof(*w->buf));
    w->buf[i] = (struct entry){.ts = ts, .ev = ev};
    w->hi++;
}

static bool window_filter(const evs_event *ev, void *user)
{
    evs_windower *w = user;
    return w->filter(ev, w->filter_user);
}

/* The subscription's handler: late, or into the buffer (arming the
 * timer earlier if this event's first window closes sooner). */
static int window_handler(const evs_event *ev, void *user)
{
    evs_windower *w = user;
    int64_t ts = evs_event_timestamp(ev);
    bool in_range = ts >= -EVS_WINDOW_MAX_TS && ts <= EVS_WINDOW_MAX_TS;
    pthread_mutex_lock(&w->lock);
    /* An idle windower's timer is parked: windows that closed empty
     * meanwhile are closed here, so lateness never depends on whether a
     * fire happened to run. */
    close_empty_locked(w, evs__hb_wall());
    if (!in_range || ts < w->next_start) {
        if (in_range)
            w->late++;
        else
            w->out_of_range++;
        pthread_mutex_unlock(&w->lock);
        return w->on_late != NULL ? w->on_late(ev, w->late_user) : 0;
    }
    if (w->hi - w->lo >= w->max_held) { /* memory bound: refuse, count */
        w->overflow++;
        pthread_mutex_unlock(&w->lock);
        return EVS_EFULL;
    }
    int rc = make_room(w);
    /* A slot event's ref is a heap copy (or NULL). */
    const evs_event *mine = rc == 0 ? evs_event_ref(ev) : NULL;
    if (mine == NULL) {
        w->nomem++;
        pthread_mutex_unlock(&w->lock);
        return EVS_ENOMEM;
    }
    insert_sorted(w, ts, mine);
    w->events++;
    int64_t close = close_of(w, window_of(w, ts));
    if (close < w->armed) {
        w->armed = close;
        evs__hb_fire_by(w->timer, service_deadline(close, evs__hb_now(), evs__hb_wall()));
    }
    pthread_mutex_unlock(&w->lock);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Lifecycle                                                           */

static bool ms_ok(int64_t v, int64_t lo, int64_t hi) { return v >= lo && v <= hi; }

int evs_window_subscribe(evs_windower **out, evs_stream *s, const char *pattern,
                         evs_window_fn fn, evs_filter_fn filter, void *user,
                         const evs_window_opts *opts)
{
    if (out != NULL)
        *out = NULL;
    if (out == NULL || s == NULL || fn == NULL || opts == NULL)
        return EVS_EINVAL;
    evs_window_opts o = *opts;
    if (o.slide_ms == 0)
        o.slide_ms = o.size_ms;
    if (!ms_ok(o.size_ms, 1, EVS_WINDOW_MAX_MS) || !ms_ok(o.slide_ms, 1, o.size_ms) ||
        !ms_ok(o.offset_ms, 0, o.slide_ms - 1) || !ms_ok(o.lateness_ms, 0, EVS_WINDOW_MAX_MS))
        return EVS_EINVAL;
    evs_windower *w = evs__calloc(1, sizeof(*w));
    if (w == NULL)
        return EVS_ENOMEM;
    w->stream = s;
    w->fn = fn;
    w->filter = filter;
    w->on_late = o.on_late;
    w->user = user;
    w->filter_user = o.filter_user != NULL ? o.filter_user : user;
    w->late_user = o.late_user != NULL ? o.late_user : user;
    w->size = o.size_ms * 1000000;
    w->slide = o.slide_ms * 1000000;
    w->offset = o.offset_ms * 1000000;
    w->grace = o.lateness_ms * 1000000;
    w->max_held = o.max_held > 0 ? o.max_held : EVS_WINDOW_DEFAULT_HELD;
    w->armed = INT64_MAX;
    if (pthread_mutex_init(&w->lock, NULL) != 0) {
        evs__free(w);
        return EVS_ESYSTEM;
    }
    /* Windows that closed before now take nothing. */
    w->watermark = evs__hb_wall();
    w->next_start = open_start(w, w->watermark);
    /* Parked until an event arrives (INT64_MAX: never on its own). */
    int rc = evs__hb_add(&w->timer, INT64_MAX, fire, w);
    if (rc == 0) {
        rc = evs_subscribe(&w->sub, s, pattern, window_handler,
                           filter != NULL ? window_filter : NULL, w, NULL);
        if (rc != 0)
            evs__hb_remove(w->timer);
    }
    if (rc != 0) {
        pthread_mutex_destroy(&w->lock);
        evs__free(w);
        return rc;
    }
    *out = w;
    return 0;
}

int evs_window_stop(evs_windower *w)
{
    if (w == NULL)
        return 0;
    if (tl_emitting == w)
        return EVS_EDEADLK;
    /* 1. Everything accepted before the call reaches the handler (inside
     *    a handler of the stream this would wait for itself: skipped). */
    (void)evs_stream_flush(w->stream, EVS_FOREVER, NULL);
    /* 2. No more events: the handler is not running and never will. */
    evs_unsubscribe(w->sub);
    w->sub = NULL;
    /* 3. No more fires: remove waits for one in progress. */
    evs__hb_remove(w->timer);
    w->timer = NULL;
    /* 4. The rest, in window order, on this thread. */
    emit(w, evs__hb_wall(), true);
    pthread_mutex_destroy(&w->lock);
    evs__free(w->scratch_next);
    evs__free(w->scratch);
    evs__free(w->buf);
    evs__free(w);
    return 0;
}

int evs_window_stats_get(evs_windower *w, evs_window_stats *out)
{
    if (w == NULL || out == NULL)
        return EVS_EINVAL;
    pthread_mutex_lock(&w->lock);
    close_empty_locked(w, evs__hb_wall()); /* late_before_ns as of now */
    *out = (evs_window_stats){
        .events = w->events,
        .windows = w->windows,
        .partial = w->partial,
        .errors = w->errors,
        .late = w->late,
        .out_of_range = w->out_of_range,
        .nomem = w->nomem,
        .overflow = w->overflow,
        .held = w->hi - w->lo,
        .late_before_ns = w->next_start,
    };
    pthread_mutex_unlock(&w->lock);
    return 0;
}
