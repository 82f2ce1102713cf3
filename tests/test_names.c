/*
 * Event-name filters: create's argument checks, matching custom and
 * built-in type names from a table, allocation failure, and use as an
 * evs_subscribe filter.
 */
#include <criterion/criterion.h>
#include <stdatomic.h>
#include <string.h>

#include "evs_internal.h"
#include "evstream.h"
#include "evs_test.h"

static evs_event *named(const char *name)
{
    evs_event *ev;
    ASSERT_RC(evs_event_make(&ev, name, "t", NULL, NULL), 0);
    return ev;
}

Test(names, create_rejects_bad_arguments)
{
    const char *ok[] = {"Purchase"};
    const char *with_null[] = {"Purchase", NULL};
    const char *with_empty[] = {"Purchase", ""};
    evs_names *f = (evs_names *)1;
    ASSERT_RC(evs_names_create(NULL, ok, 1), EVS_EINVAL);
    ASSERT_RC(evs_names_create(&f, NULL, 1), EVS_EINVAL);
    cr_assert_null(f);
    ASSERT_RC(evs_names_create(&f, ok, 0), EVS_EINVAL);
    cr_assert_null(f);
    ASSERT_RC(evs_names_create(&f, with_null, 2), EVS_EINVAL);
    cr_assert_null(f);
    ASSERT_RC(evs_names_create(&f, with_empty, 2), EVS_EINVAL);
    cr_assert_null(f);
}

/* Which event names a set matches, drawn from the seed's example and
 * the built-in names. */
static const struct {
    const char *set[4];
    size_t n;
    const char *name;
    bool want;
} cases[] = {
    {{"Purchase", "Signup"}, 2, "Purchase", true},
    {{"Purchase", "Signup"}, 2, "Signup", true},
    {{"Purchase", "Signup"}, 2, "purchase", false},  /* case-sensitive */
    {{"Purchase", "Signup"}, 2, "Purchases", false}, /* whole name */
    {{"Purchase", "Signup"}, 2, "Purch", false},
    {{"Purchase", "Signup"}, 2, "message", false},
    {{"message"}, 1, "message", true},                /* built-in */
    {{"message"}, 1, "heartbeat", false},
    {{"heartbeat", "error"}, 2, "heartbeat", true},
    {{"heartbeat", "error"}, 2, "error", true},
    {{"connect", "disconnect"}, 2, "disconnect", true},
    {{"connect", "disconnect"}, 2, "connect", true},
    {{"Signup", "Signup", "Signup"}, 3, "Signup", true}, /* duplicates */
    {{"z", "a", "m", "b"}, 4, "a", true},             /* any input order */
    {{"z", "a", "m", "b"}, 4, "z", true},
    {{"z", "a", "m", "b"}, 4, "m", true},
    {{"z", "a", "m", "b"}, 4, "c", false},
};

Test(names, matches_type_names_exactly_from_a_table)
{
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        evs_names *f;
        ASSERT_RC(evs_names_create(&f, cases[i].set, cases[i].n), 0);
        evs_event *ev = named(cases[i].name);
        cr_assert_eq(evs_names_match(f, ev), cases[i].want, "case %zu (%s)", i,
                     cases[i].name);
        cr_assert_eq(evs_names_filter(ev, f), cases[i].want, "case %zu", i);
        evs_event_unref(ev);
        evs_names_destroy(f);
    }
}

Test(names, built_in_types_match_by_their_names)
{
    const char *set[] = {"heartbeat", "error"};
    evs_names *f;
    ASSERT_RC(evs_names_create(&f, set, 2), 0);
    for (int t = EVS_TYPE_MESSAGE; t < EVS_TYPE_CUSTOM; t++) {
        evs_event *ev;
        ASSERT_RC(evs_event_create(&ev, (evs_type)t, "t", NULL, 0), 0);
        bool want = t == EVS_TYPE_HEARTBEAT || t == EVS_TYPE_ERROR;
        cr_assert_eq(evs_names_match(f, ev), want, "type %s", evs_type_name((evs_type)t));
        evs_event_unref(ev);
    }
    evs_names_destroy(f);
}

Test(names, the_names_are_copied)
{
    char buf[16];
    strcpy(buf, "Signup");
    const char *set[] = {buf};
    evs_names *f;
    ASSERT_RC(evs_names_create(&f, set, 1), 0);
    strcpy(buf, "Other");
    evs_event *ev = named("Signup");
    cr_assert(evs_names_match(f, ev));
    evs_event_unref(ev);
    evs_names_destroy(f);
}

Test(names, null_arguments_do_not_match_and_destroy_accepts_null)
{
    const char *set[] = {"message"};
    evs_names *f;
    ASSERT_RC(evs_names_create(&f, set, 1), 0);
    evs_event *ev = named("message");
    cr_assert_not(evs_names_match(NULL, ev));
    cr_assert_not(evs_names_match(f, NULL));
    evs_event_unref(ev);
    evs_names_destroy(f);
    evs_names_destroy(NULL);
}

Test(names, create_survives_allocation_failure)
{
    const char *set[] = {"Purchase", "Signup"};
    evs_names *f = NULL;
    int rc;
    for (long k = 0;; k++) {
        evs__alloc_fail_after(k);
        rc = evs_names_create(&f, set, 2);
        evs__alloc_fail_after(-1);
        if (rc == 0)
            break;
        cr_assert_eq(rc, EVS_ENOMEM, "k=%ld: got %s", k, evs_errname(rc));
        cr_assert_null(f);
    }
    evs_event *ev = named("Signup");
    cr_assert(evs_names_match(f, ev));
    evs_event_unref(ev);
    evs_names_destroy(f);
}

typedef struct got {
    atomic_ulong count;
    char last[32];
} got;

/* evs_subscribe passes one `user` to filter and handler, and the filter
 * needs the evs_names, so the handler records into a static. */
static got g;

static int take(const evs_event *ev, void *user)
{
    (void)user;
    strncpy(g.last, evs_event_type_name(ev), sizeof g.last - 1);
    atomic_fetch_add(&g.count, 1);
    return 0;
}

Test(names, filters_a_subscription, .timeout = 30)
{
    evs_stream *s;
    ASSERT_RC(evs_stream_create(&s, NULL), 0);
    const char *set[] = {"Purchase", "Signup"};
    evs_names *f;
    ASSERT_RC(evs_names_create(&f, set, 2), 0);
    evs_sub *sub;
    ASSERT_RC(evs_subscribe(&sub, s, NULL, take, evs_names_filter, f, NULL), 0);
    const char *sent[] = {"message", "Purchase", "Refund", "Signup", "purchase"};
    for (size_t i = 0; i < 5; i++) {
        evs_event *ev = named(sent[i]);
        ASSERT_RC(evs_stream_publish(s, ev), 0);
        evs_event_unref(ev);
    }
    ASSERT_RC(evs_stream_flush(s, EVS_FOREVER, NULL), 0);
    ASSERT_RC(evs_unsubscribe(sub), 0);
    cr_assert_eq(atomic_load(&g.count), 2);
    cr_assert_str_eq(g.last, "Signup");
    ASSERT_RC(evs_stream_destroy(s), 0);
    evs_names_destroy(f);
}
