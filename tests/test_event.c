/*
 * Events: create and make, references, content, type names, metadata,
 * accessors, sealing, and allocation failure. Each documented error code
 * of the event functions in evstream.h has a test.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"
#include "evs_internal.h"
#include "mpscan.h"

static evs_event *new_event(const char *topic, const void *data, size_t len)
{
    evs_event *ev = NULL;
    int rc = evs_event_create(&ev, EVS_TYPE_MESSAGE, topic, data, len);
    cr_assert_eq(rc, 0, "got %s", evs_errname(rc));
    return ev;
}

/* A published event, as a stream or the decoder makes one. */
static evs_event *published_event(void)
{
    evs_event_parts p = {.type = EVS_TYPE_MESSAGE, .topic = "t", .topic_len = 1,
                         .data = "x", .len = 1, .id = 9};
    evs_event *ev;
    int rc = evs__event_new(&ev, &p);
    cr_assert_eq(rc, 0, "got %s", evs_errname(rc));
    return ev;
}

/* ------------------------------------------------------------------ */
/* Create and make                                                     */
/* ------------------------------------------------------------------ */

Test(event, create_copies_topic_and_data)
{
    char topic[] = "orders.eu";
    uint8_t data[] = {1, 2, 3};
    int64_t before = evs__now_real_ns();
    evs_event *ev = new_event(topic, data, sizeof(data));
    int64_t after = evs__now_real_ns();
    topic[0] = 'X';
    data[0] = 9;

    cr_assert_eq(evs_event_id(ev), 0);
    cr_assert_eq(evs_event_type(ev), EVS_TYPE_MESSAGE);
    cr_assert_str_eq(evs_event_type_name(ev), "message");
    cr_assert_str_eq(evs_event_topic(ev), "orders.eu");
    size_t len;
    const uint8_t *d = evs_event_data(ev, &len);
    cr_assert_eq(len, 3);
    cr_assert_eq(d[0], 1, "data was copied");
    cr_assert_eq(evs_event_content(ev), EVS_CONTENT_BINARY);
    const uint8_t *m = evs_event_meta(ev, &len);
    cr_assert_eq(len, 1);
    cr_assert_eq(m[0], 0x80, "no metadata reads as the empty map");
    cr_assert(evs_event_timestamp(ev) >= before && evs_event_timestamp(ev) <= after);
    cr_assert_not(evs_event_published(ev));
    evs_event_unref(ev);
}

Test(event, create_with_null_topic_and_no_data)
{
    evs_event *ev = new_event(NULL, NULL, 0);
    cr_assert_str_eq(evs_event_topic(ev), "");
    size_t len = 99;
    cr_assert_null(evs_event_data(ev, &len));
    cr_assert_eq(len, 0);
    cr_assert_null(evs_event_data(ev, NULL), "len may be NULL");
    evs_event_unref(ev);
}

Test(event, create_every_builtin_type)
{
    static const char *const names[] = {"message", "error", "connect", "disconnect",
                                        "heartbeat"};
    for (evs_type t = EVS_TYPE_MESSAGE; t < EVS_TYPE_CUSTOM; t++) {
        evs_event *ev;
        cr_assert_eq(evs_event_create(&ev, t, "t", NULL, 0), 0);
        cr_assert_eq(evs_event_type(ev), t);
        cr_assert_str_eq(evs_event_type_name(ev), names[t]);
        evs_event_unref(ev);
    }
}

Test(event, create_bad_arguments_are_einval)
{
    int rc = evs_event_create(NULL, EVS_TYPE_MESSAGE, "t", NULL, 0);
    cr_assert_eq(rc, EVS_EINVAL, "NULL out: got %s", evs_errname(rc));
    static const struct {
        evs_type type;
        const void *data;
        size_t len;
        const char *why;
    } v[] = {
        {EVS_TYPE_CUSTOM, NULL, 0, "custom type"},
        {(evs_type)99, NULL, 0, "type out of range"},
        {(evs_type)-1, NULL, 0, "negative type"},
        {EVS_TYPE_MESSAGE, NULL, 5, "NULL data with a length"},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        evs_event *ev = (evs_event *)&rc;
        rc = evs_event_create(&ev, v[i].type, "t", v[i].data, v[i].len);
        cr_assert_eq(rc, EVS_EINVAL, "%s: got %s", v[i].why, evs_errname(rc));
        cr_assert_null(ev, "%s: out not NULL", v[i].why);
    }
}

Test(event, create_over_limits_is_etoobig)
{
    char *topic = malloc(EVS_MAX_TOPIC + 2);
    memset(topic, 'a', EVS_MAX_TOPIC + 1);
    topic[EVS_MAX_TOPIC + 1] = '\0';
    evs_event *ev = (evs_event *)topic;
    int rc = evs_event_create(&ev, EVS_TYPE_MESSAGE, topic, NULL, 0);
    cr_assert_eq(rc, EVS_ETOOBIG, "topic: got %s", evs_errname(rc));
    cr_assert_null(ev);
    topic[EVS_MAX_TOPIC] = '\0';
    rc = evs_event_create(&ev, EVS_TYPE_MESSAGE, topic, NULL, 0);
    cr_assert_eq(rc, 0, "topic at the limit: got %s", evs_errname(rc));
    cr_assert_eq(strlen(evs_event_topic(ev)), EVS_MAX_TOPIC);
    evs_event_unref(ev);
    /* The length is checked before the bytes are read. */
    rc = evs_event_create(&ev, EVS_TYPE_MESSAGE, "t", topic, (size_t)EVS_MAX_DATA + 1);
    cr_assert_eq(rc, EVS_ETOOBIG, "data: got %s", evs_errname(rc));
    cr_assert_null(ev);
    free(topic);
}

Test(event, make_builds_the_documented_example)
{
    evs_event *ev;
    int rc = evs_event_make(&ev, "Purchase", "orders", "{\"sku\":7}",
                            (const char *[]){"region", "eu", NULL});
    cr_assert_eq(rc, 0, "got %s", evs_errname(rc));
    cr_assert_eq(evs_event_type(ev), EVS_TYPE_CUSTOM);
    cr_assert_str_eq(evs_event_type_name(ev), "Purchase");
    cr_assert_str_eq(evs_event_topic(ev), "orders");
    cr_assert_eq(evs_event_content(ev), EVS_CONTENT_MSGPACK);
    size_t len;
    const uint8_t *d = evs_event_data(ev, &len);
    const uint8_t want[] = {0x81, 0xa3, 's', 'k', 'u', 0x07};
    cr_assert_eq(len, sizeof(want));
    cr_assert_arr_eq(d, want, sizeof(want));
    const char *v;
    cr_assert_eq(evs_event_meta_get_str(ev, "region", &v, &len), 0);
    cr_assert_eq(len, 2);
    cr_assert_eq(memcmp(v, "eu", 2), 0);
    cr_assert_not(evs_event_published(ev));
    evs_event_unref(ev);
}

Test(event, make_with_defaults)
{
    evs_event *ev;
    int rc = evs_event_make(&ev, NULL, NULL, NULL, NULL);
    cr_assert_eq(rc, 0, "got %s", evs_errname(rc));
    cr_assert_eq(evs_event_type(ev), EVS_TYPE_MESSAGE);
    cr_assert_str_eq(evs_event_topic(ev), "");
    size_t len;
    cr_assert_null(evs_event_data(ev, &len));
    cr_assert_eq(len, 0);
    evs_event_unref(ev);

    rc = evs_event_make(&ev, "heartbeat", "t", "null", NULL);
    cr_assert_eq(rc, 0, "got %s", evs_errname(rc));
    cr_assert_eq(evs_event_type(ev), EVS_TYPE_HEARTBEAT, "built-in names select the enum");
    cr_assert_eq(evs_event_content(ev), EVS_CONTENT_MSGPACK);
    evs_event_unref(ev);
}

Test(event, make_errors_have_their_documented_codes)
{
    static const char *const odd[] = {"k", NULL};
    static const char *const empty_key[] = {"", "v", NULL};
    static const struct {
        const char *name, *json;
        const char *const *meta;
        int want;
        const char *why;
    } v[] = {
        {"", NULL, NULL, EVS_EINVAL, "empty name"},
        {"a\nb", NULL, NULL, EVS_EINVAL, "LF in name"},
        {"a\rb", NULL, NULL, EVS_EINVAL, "CR in name"},
        {NULL, NULL, odd, EVS_EINVAL, "odd meta list"},
        {NULL, NULL, empty_key, EVS_EINVAL, "empty meta key"},
        {NULL, "{", NULL, EVS_EBADMSG, "json does not parse"},
        {NULL, "", NULL, EVS_EBADMSG, "empty json"},
        {NULL, "[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]", NULL, EVS_ETOOBIG,
         "json too deep"},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        evs_event *ev = (evs_event *)&i;
        int rc = evs_event_make(&ev, v[i].name, "t", v[i].json, v[i].meta);
        cr_assert_eq(rc, v[i].want, "%s: got %s", v[i].why, evs_errname(rc));
        cr_assert_null(ev, "%s", v[i].why);
    }
    int rc = evs_event_make(NULL, NULL, NULL, NULL, NULL);
    cr_assert_eq(rc, EVS_EINVAL, "NULL out: got %s", evs_errname(rc));
    char name[EVS_MAX_TYPE_NAME + 2];
    memset(name, 'n', sizeof(name) - 1);
    name[sizeof(name) - 1] = '\0';
    evs_event *ev;
    rc = evs_event_make(&ev, name, "t", NULL, NULL);
    cr_assert_eq(rc, EVS_ETOOBIG, "long name: got %s", evs_errname(rc));
}

/* ------------------------------------------------------------------ */
/* References                                                          */
/* ------------------------------------------------------------------ */

Test(event, ref_returns_the_event_and_last_unref_frees)
{
    evs_event *ev = new_event("t", "x", 1);
    cr_assert_eq(evs_event_ref(ev), ev);
    cr_assert_eq(evs_event_ref(ev), ev);
    evs_event_unref(ev);
    evs_event_unref(ev);
    /* Still alive with one reference: readable (ASan would catch a UAF). */
    cr_assert_str_eq(evs_event_topic(ev), "t");
    evs_event_unref(ev);
}

Test(event, unref_and_ref_accept_null)
{
    evs_event_unref(NULL);
    cr_assert_null(evs_event_ref(NULL));
}

/* ------------------------------------------------------------------ */
/* Content                                                             */
/* ------------------------------------------------------------------ */

Test(event, set_content_accepts_valid_data)
{
    evs_event *ev = new_event("t", "[1, 2]", 6);
    cr_assert_eq(evs_event_set_content(ev, EVS_CONTENT_TEXT), 0);
    cr_assert_eq(evs_event_content(ev), EVS_CONTENT_TEXT);
    cr_assert_eq(evs_event_set_content(ev, EVS_CONTENT_JSON), 0);
    cr_assert_eq(evs_event_content(ev), EVS_CONTENT_JSON);
    cr_assert_eq(evs_event_set_content(ev, EVS_CONTENT_BINARY), 0);
    evs_event_unref(ev);

    ev = new_event("t", "\x92\x01\xa1x", 4);
    cr_assert_eq(evs_event_set_content(ev, EVS_CONTENT_MSGPACK), 0);
    cr_assert_eq(evs_event_content(ev), EVS_CONTENT_MSGPACK);
    evs_event_unref(ev);

    /* Text and binary take any bytes, empty included. */
    ev = new_event("t", NULL, 0);
    cr_assert_eq(evs_event_set_content(ev, EVS_CONTENT_TEXT), 0);
    evs_event_unref(ev);
}

Test(event, set_content_invalid_data_is_ebadmsg_and_changes_nothing)
{
    static const struct {
        const char *data;
        size_t len;
        evs_content content;
        const char *why;
    } v[] = {
        {"[1,", 3, EVS_CONTENT_JSON, "truncated json"},
        {"1 2", 3, EVS_CONTENT_JSON, "two json values"},
        {NULL, 0, EVS_CONTENT_JSON, "empty json"},
        {"\x92\x01", 2, EVS_CONTENT_MSGPACK, "truncated msgpack"},
        {"\x01\x02", 2, EVS_CONTENT_MSGPACK, "trailing msgpack bytes"},
        {"\xc1", 1, EVS_CONTENT_MSGPACK, "never-used byte"},
        {NULL, 0, EVS_CONTENT_MSGPACK, "empty msgpack"},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        evs_event *ev = new_event("t", v[i].data, v[i].len);
        int rc = evs_event_set_content(ev, v[i].content);
        cr_assert_eq(rc, EVS_EBADMSG, "%s: got %s", v[i].why, evs_errname(rc));
        cr_assert_eq(evs_event_content(ev), EVS_CONTENT_BINARY, "%s", v[i].why);
        evs_event_unref(ev);
    }
}

Test(event, set_content_too_deep_is_etoobig)
{
    uint8_t deep[EVS_MAX_DEPTH + 2];
    memset(deep, 0x91, EVS_MAX_DEPTH + 1);
    deep[EVS_MAX_DEPTH + 1] = 0x01;
    evs_event *ev = new_event("t", deep, sizeof(deep));
    int rc = evs_event_set_content(ev, EVS_CONTENT_MSGPACK);
    cr_assert_eq(rc, EVS_ETOOBIG, "got %s", evs_errname(rc));
    evs_event_unref(ev);

    char json[2 * EVS_MAX_DEPTH + 8];
    memset(json, '[', EVS_MAX_DEPTH + 1);
    json[EVS_MAX_DEPTH + 1] = '1';
    memset(json + EVS_MAX_DEPTH + 2, ']', EVS_MAX_DEPTH + 1);
    ev = new_event("t", json, 2 * EVS_MAX_DEPTH + 3);
    rc = evs_event_set_content(ev, EVS_CONTENT_JSON);
    cr_assert_eq(rc, EVS_ETOOBIG, "got %s", evs_errname(rc));
    evs_event_unref(ev);
}

Test(event, set_content_bad_value_is_einval)
{
    evs_event *ev = new_event("t", NULL, 0);
    int rc = evs_event_set_content(ev, (evs_content)4);
    cr_assert_eq(rc, EVS_EINVAL, "got %s", evs_errname(rc));
    rc = evs_event_set_content(ev, (evs_content)-1);
    cr_assert_eq(rc, EVS_EINVAL, "got %s", evs_errname(rc));
    rc = evs_event_set_content(NULL, EVS_CONTENT_TEXT);
    cr_assert_eq(rc, EVS_EINVAL, "got %s", evs_errname(rc));
    evs_event_unref(ev);
}

/* ------------------------------------------------------------------ */
/* Type names                                                          */
/* ------------------------------------------------------------------ */

Test(event, set_type_name_builtin_selects_the_enum)
{
    evs_event *ev = new_event("t", NULL, 0);
    cr_assert_eq(evs_event_set_type_name(ev, "disconnect"), 0);
    cr_assert_eq(evs_event_type(ev), EVS_TYPE_DISCONNECT);
    cr_assert_str_eq(evs_event_type_name(ev), "disconnect");
    evs_event_unref(ev);
}

Test(event, set_type_name_custom_copies_the_name)
{
    evs_event *ev = new_event("t", NULL, 0);
    char name[] = "Order.Placed";
    cr_assert_eq(evs_event_set_type_name(ev, name), 0);
    name[0] = 'X';
    cr_assert_eq(evs_event_type(ev), EVS_TYPE_CUSTOM);
    cr_assert_str_eq(evs_event_type_name(ev), "Order.Placed");
    /* Names are case-sensitive: "Message" is custom. */
    cr_assert_eq(evs_event_set_type_name(ev, "Message"), 0);
    cr_assert_eq(evs_event_type(ev), EVS_TYPE_CUSTOM);
    /* Back to a built-in frees the custom name (ASan checks the leak). */
    cr_assert_eq(evs_event_set_type_name(ev, "error"), 0);
    cr_assert_eq(evs_event_type(ev), EVS_TYPE_ERROR);
    cr_assert_str_eq(evs_event_type_name(ev), "error");
    evs_event_unref(ev);
}

Test(event, set_type_name_rejects_bad_names)
{
    evs_event *ev = new_event("t", NULL, 0);
    static const char *const bad[] = {"", "a\r", "\nb", "a\r\nb"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = evs_event_set_type_name(ev, bad[i]);
        cr_assert_eq(rc, EVS_EINVAL, "case %zu: got %s", i, evs_errname(rc));
    }
    int rc = evs_event_set_type_name(ev, NULL);
    cr_assert_eq(rc, EVS_EINVAL, "got %s", evs_errname(rc));
    rc = evs_event_set_type_name(NULL, "x");
    cr_assert_eq(rc, EVS_EINVAL, "got %s", evs_errname(rc));
    char name[EVS_MAX_TYPE_NAME + 2];
    memset(name, 'n', EVS_MAX_TYPE_NAME + 1);
    name[EVS_MAX_TYPE_NAME + 1] = '\0';
    rc = evs_event_set_type_name(ev, name);
    cr_assert_eq(rc, EVS_ETOOBIG, "got %s", evs_errname(rc));
    name[EVS_MAX_TYPE_NAME] = '\0';
    rc = evs_event_set_type_name(ev, name);
    cr_assert_eq(rc, 0, "a name at the limit: got %s", evs_errname(rc));
    cr_assert_eq(evs_event_type(ev), EVS_TYPE_CUSTOM);
    evs_event_unref(ev);
}

Test(event, type_name_of_each_enum_value)
{
    cr_assert_str_eq(evs_type_name(EVS_TYPE_MESSAGE), "message");
    cr_assert_str_eq(evs_type_name(EVS_TYPE_ERROR), "error");
    cr_assert_str_eq(evs_type_name(EVS_TYPE_CONNECT), "connect");
    cr_assert_str_eq(evs_type_name(EVS_TYPE_DISCONNECT), "disconnect");
    cr_assert_str_eq(evs_type_name(EVS_TYPE_HEARTBEAT), "heartbeat");
    cr_assert_null(evs_type_name(EVS_TYPE_CUSTOM));
    cr_assert_null(evs_type_name((evs_type)99));
    cr_assert_null(evs_type_name((evs_type)-1));
}

/* ------------------------------------------------------------------ */
/* Metadata                                                            */
/* ------------------------------------------------------------------ */

Test(event, metadata_of_every_kind_reads_back)
{
    evs_event *ev = new_event("t", NULL, 0);
    cr_assert_eq(evs_event_meta_set_str(ev, "s", "value"), 0);
    cr_assert_eq(evs_event_meta_set_str(ev, "empty", ""), 0);
    cr_assert_eq(evs_event_meta_set_i64(ev, "neg", -5), 0);
    cr_assert_eq(evs_event_meta_set_i64(ev, "min", INT64_MIN), 0);
    cr_assert_eq(evs_event_meta_set_i64(ev, "max", INT64_MAX), 0);
    cr_assert_eq(evs_event_meta_set_f64(ev, "f", 2.5), 0);
    cr_assert_eq(evs_event_meta_set_bool(ev, "yes", true), 0);
    cr_assert_eq(evs_event_meta_set_bool(ev, "no", false), 0);
    const uint8_t raw[] = {0x92, 0x01, 0xa1, 'x'};
    cr_assert_eq(evs_event_meta_set_raw(ev, "raw", raw, sizeof(raw)), 0);

    const char *s;
    size_t len;
    cr_assert_eq(evs_event_meta_get_str(ev, "s", &s, &len), 0);
    cr_assert_eq(len, 5);
    cr_assert_eq(memcmp(s, "value", 5), 0);
    cr_assert_eq(evs_event_meta_get_str(ev, "empty", &s, &len), 0);
    cr_assert_eq(len, 0);
    int64_t i;
    cr_assert_eq(evs_event_meta_get_i64(ev, "neg", &i), 0);
    cr_assert_eq(i, -5);
    cr_assert_eq(evs_event_meta_get_i64(ev, "min", &i), 0);
    cr_assert_eq(i, INT64_MIN);
    cr_assert_eq(evs_event_meta_get_i64(ev, "max", &i), 0);
    cr_assert_eq(i, INT64_MAX);
    double f;
    cr_assert_eq(evs_event_meta_get_f64(ev, "f", &f), 0);
    cr_assert_float_eq(f, 2.5, 0);
    cr_assert_eq(evs_event_meta_get_f64(ev, "neg", &f), 0, "f64 accepts integers");
    cr_assert_float_eq(f, -5.0, 0);
    cr_assert_eq(evs_event_meta_get_f64(ev, "max", &f), 0);
    bool b;
    cr_assert_eq(evs_event_meta_get_bool(ev, "yes", &b), 0);
    cr_assert(b);
    cr_assert_eq(evs_event_meta_get_bool(ev, "no", &b), 0);
    cr_assert_not(b);
    const void *r;
    cr_assert_eq(evs_event_meta_get_raw(ev, "raw", &r, &len), 0);
    cr_assert_eq(len, sizeof(raw));
    cr_assert_eq(memcmp(r, raw, len), 0);
    cr_assert_eq(evs_event_meta_get_raw(ev, "s", &r, &len), 0, "raw gives any value");
    cr_assert_eq(len, 6);
    cr_assert_eq(((const uint8_t *)r)[0], 0xa5);

    /* The whole map: nine pairs, each key once. */
    const uint8_t *m = evs_event_meta(ev, &len);
    cr_assert_eq(m[0], 0x89);
    size_t used;
    cr_assert_eq(evs__mp_check(m, len, EVS_MAX_DEPTH + 1, &used), 0);
    cr_assert_eq(used, len);
    evs_event_unref(ev);
}

Test(event, setting_an_existing_key_replaces_its_value)
{
    evs_event *ev = new_event("t", NULL, 0);
    cr_assert_eq(evs_event_meta_set_str(ev, "a", "1"), 0);
    cr_assert_eq(evs_event_meta_set_str(ev, "k", "old"), 0);
    cr_assert_eq(evs_event_meta_set_str(ev, "z", "2"), 0);
    cr_assert_eq(evs_event_meta_set_i64(ev, "k", 42), 0);
    int64_t i;
    cr_assert_eq(evs_event_meta_get_i64(ev, "k", &i), 0);
    cr_assert_eq(i, 42);
    const char *s;
    size_t len;
    int rc = evs_event_meta_get_str(ev, "k", &s, &len);
    cr_assert_eq(rc, EVS_ETYPE, "got %s", evs_errname(rc));
    const uint8_t *m = evs_event_meta(ev, &len);
    cr_assert_eq(m[0], 0x83, "still three pairs");
    cr_assert_eq(evs_event_meta_get_str(ev, "a", &s, &len), 0);
    cr_assert_eq(evs_event_meta_get_str(ev, "z", &s, &len), 0);
    evs_event_unref(ev);
}

Test(event, getters_of_another_type_are_etype)
{
    evs_event *ev = new_event("t", NULL, 0);
    cr_assert_eq(evs_event_meta_set_str(ev, "s", "x"), 0);
    cr_assert_eq(evs_event_meta_set_bool(ev, "b", true), 0);
    cr_assert_eq(evs_event_meta_set_f64(ev, "f", 1.5), 0);
    const uint8_t big[] = {0xcf, 0x80, 0, 0, 0, 0, 0, 0, 0}; /* 2^63 */
    cr_assert_eq(evs_event_meta_set_raw(ev, "big", big, sizeof(big)), 0);
    const char *s;
    size_t len;
    int64_t i;
    double f;
    bool b;
    int rc;
    rc = evs_event_meta_get_str(ev, "b", &s, &len);
    cr_assert_eq(rc, EVS_ETYPE, "str of bool: got %s", evs_errname(rc));
    rc = evs_event_meta_get_i64(ev, "s", &i);
    cr_assert_eq(rc, EVS_ETYPE, "i64 of str: got %s", evs_errname(rc));
    rc = evs_event_meta_get_i64(ev, "f", &i);
    cr_assert_eq(rc, EVS_ETYPE, "i64 of float: got %s", evs_errname(rc));
    rc = evs_event_meta_get_i64(ev, "big", &i);
    cr_assert_eq(rc, EVS_ETYPE, "i64 of 2^63: got %s", evs_errname(rc));
    rc = evs_event_meta_get_f64(ev, "s", &f);
    cr_assert_eq(rc, EVS_ETYPE, "f64 of str: got %s", evs_errname(rc));
    rc = evs_event_meta_get_bool(ev, "s", &b);
    cr_assert_eq(rc, EVS_ETYPE, "bool of str: got %s", evs_errname(rc));
    evs_event_unref(ev);
}

Test(event, missing_keys_are_enotfound)
{
    evs_event *ev = new_event("t", NULL, 0);
    const char *s;
    size_t len;
    int64_t i;
    const void *r;
    int rc = evs_event_meta_get_str(ev, "k", &s, &len);
    cr_assert_eq(rc, EVS_ENOTFOUND, "no metadata: got %s", evs_errname(rc));
    cr_assert_eq(evs_event_meta_set_str(ev, "k", "v"), 0);
    rc = evs_event_meta_get_i64(ev, "kk", &i);
    cr_assert_eq(rc, EVS_ENOTFOUND, "got %s", evs_errname(rc));
    rc = evs_event_meta_get_raw(ev, "", &r, &len);
    cr_assert_eq(rc, EVS_ENOTFOUND, "got %s", evs_errname(rc));
    double f;
    bool b;
    rc = evs_event_meta_get_f64(ev, "x", &f);
    cr_assert_eq(rc, EVS_ENOTFOUND, "got %s", evs_errname(rc));
    rc = evs_event_meta_get_bool(ev, "x", &b);
    cr_assert_eq(rc, EVS_ENOTFOUND, "got %s", evs_errname(rc));
    evs_event_unref(ev);
}

Test(event, metadata_bad_arguments_are_einval)
{
    evs_event *ev = new_event("t", NULL, 0);
    int rc;
    rc = evs_event_meta_set_str(ev, NULL, "v");
    cr_assert_eq(rc, EVS_EINVAL, "NULL key: got %s", evs_errname(rc));
    rc = evs_event_meta_set_str(ev, "", "v");
    cr_assert_eq(rc, EVS_EINVAL, "empty key: got %s", evs_errname(rc));
    rc = evs_event_meta_set_str(ev, "k", NULL);
    cr_assert_eq(rc, EVS_EINVAL, "NULL value: got %s", evs_errname(rc));
    rc = evs_event_meta_set_i64(NULL, "k", 1);
    cr_assert_eq(rc, EVS_EINVAL, "NULL event: got %s", evs_errname(rc));
    rc = evs_event_meta_set_f64(ev, "", 1);
    cr_assert_eq(rc, EVS_EINVAL, "got %s", evs_errname(rc));
    rc = evs_event_meta_set_bool(ev, NULL, true);
    cr_assert_eq(rc, EVS_EINVAL, "got %s", evs_errname(rc));
    rc = evs_event_meta_set_raw(ev, "k", NULL, 1);
    cr_assert_eq(rc, EVS_EINVAL, "NULL raw: got %s", evs_errname(rc));

    const char *s;
    size_t len;
    int64_t i;
    const void *r;
    cr_assert_eq(evs_event_meta_set_str(ev, "k", "v"), 0);
    rc = evs_event_meta_get_str(ev, "k", NULL, &len);
    cr_assert_eq(rc, EVS_EINVAL, "got %s", evs_errname(rc));
    rc = evs_event_meta_get_str(ev, "k", &s, NULL);
    cr_assert_eq(rc, EVS_EINVAL, "got %s", evs_errname(rc));
    rc = evs_event_meta_get_str(ev, NULL, &s, &len);
    cr_assert_eq(rc, EVS_EINVAL, "got %s", evs_errname(rc));
    rc = evs_event_meta_get_i64(NULL, "k", &i);
    cr_assert_eq(rc, EVS_EINVAL, "got %s", evs_errname(rc));
    rc = evs_event_meta_get_i64(ev, "k", NULL);
    cr_assert_eq(rc, EVS_EINVAL, "got %s", evs_errname(rc));
    rc = evs_event_meta_get_f64(ev, "k", NULL);
    cr_assert_eq(rc, EVS_EINVAL, "got %s", evs_errname(rc));
    rc = evs_event_meta_get_bool(ev, "k", NULL);
    cr_assert_eq(rc, EVS_EINVAL, "got %s", evs_errname(rc));
    rc = evs_event_meta_get_raw(ev, "k", &r, NULL);
    cr_assert_eq(rc, EVS_EINVAL, "got %s", evs_errname(rc));
    rc = evs_event_meta_get_raw(ev, "k", NULL, &len);
    cr_assert_eq(rc, EVS_EINVAL, "got %s", evs_errname(rc));
    evs_event_unref(ev);
}

Test(event, malformed_raw_metadata_is_ebadmsg)
{
    evs_event *ev = new_event("t", NULL, 0);
    static const struct {
        const char *raw;
        size_t len;
    } v[] = {{"\x92\x01", 2}, {"\x01\x02", 2}, {"\xc1", 1}, {"", 0}, {"\xa3xy", 3}};
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        int rc = evs_event_meta_set_raw(ev, "k", v[i].raw, v[i].len);
        cr_assert_eq(rc, EVS_EBADMSG, "case %zu: got %s", i, evs_errname(rc));
    }
    size_t len;
    evs_event_meta(ev, &len);
    cr_assert_eq(len, 1, "metadata unchanged");
    evs_event_unref(ev);
}

Test(event, metadata_over_the_limit_is_etoobig_and_keeps_the_old_map)
{
    evs_event *ev = new_event("t", NULL, 0);
    cr_assert_eq(evs_event_meta_set_str(ev, "keep", "me"), 0);
    size_t n = EVS_MAX_META + 1;
    char *big = malloc(n + 1);
    memset(big, 'v', n);
    big[n] = '\0';
    int rc = evs_event_meta_set_str(ev, "k", big);
    cr_assert_eq(rc, EVS_ETOOBIG, "one value: got %s", evs_errname(rc));
    rc = evs_event_meta_set_raw(ev, "k", big, n);
    cr_assert_eq(rc, EVS_ETOOBIG, "raw: got %s", evs_errname(rc));
    /* Two halves that fit alone but not together. */
    big[n / 2 + 8] = '\0';
    cr_assert_eq(evs_event_meta_set_str(ev, "a", big), 0);
    rc = evs_event_meta_set_str(ev, "b", big);
    cr_assert_eq(rc, EVS_ETOOBIG, "together: got %s", evs_errname(rc));
    const char *s;
    size_t len;
    cr_assert_eq(evs_event_meta_get_str(ev, "keep", &s, &len), 0);
    rc = evs_event_meta_get_str(ev, "b", &s, &len);
    cr_assert_eq(rc, EVS_ENOTFOUND, "got %s", evs_errname(rc));
    free(big);
    evs_event_unref(ev);
}

/* ------------------------------------------------------------------ */
/* Published events are sealed                                         */
/* ------------------------------------------------------------------ */

Test(event, published_event_setters_are_esealed)
{
    evs_event *ev = published_event();
    cr_assert(evs_event_published(ev));
    cr_assert_eq(evs_event_id(ev), 9);
    int rc;
    rc = evs_event_set_content(ev, EVS_CONTENT_TEXT);
    cr_assert_eq(rc, EVS_ESEALED, "set_content: got %s", evs_errname(rc));
    rc = evs_event_set_type_name(ev, "x");
    cr_assert_eq(rc, EVS_ESEALED, "set_type_name: got %s", evs_errname(rc));
    rc = evs_event_meta_set_str(ev, "k", "v");
    cr_assert_eq(rc, EVS_ESEALED, "meta_set_str: got %s", evs_errname(rc));
    rc = evs_event_meta_set_i64(ev, "k", 1);
    cr_assert_eq(rc, EVS_ESEALED, "meta_set_i64: got %s", evs_errname(rc));
    rc = evs_event_meta_set_f64(ev, "k", 1);
    cr_assert_eq(rc, EVS_ESEALED, "meta_set_f64: got %s", evs_errname(rc));
    rc = evs_event_meta_set_bool(ev, "k", true);
    cr_assert_eq(rc, EVS_ESEALED, "meta_set_bool: got %s", evs_errname(rc));
    rc = evs_event_meta_set_raw(ev, "k", "\xc0", 1);
    cr_assert_eq(rc, EVS_ESEALED, "meta_set_raw: got %s", evs_errname(rc));
    cr_assert_eq(evs_event_content(ev), EVS_CONTENT_BINARY);
    cr_assert_eq(evs_event_type(ev), EVS_TYPE_MESSAGE);
    evs_event_unref(ev);
}

Test(event, decoded_event_with_an_id_is_published_and_sealed)
{
    evs_event *src = published_event();
    evs_buf b = {0};
    cr_assert_eq(evs_event_to_msgpack(src, &b), 0);
    evs_event *ev;
    cr_assert_eq(evs_event_from_msgpack(&ev, b.data, b.len), 0);
    cr_assert(evs_event_published(ev));
    cr_assert_eq(evs_event_id(ev), 9);
    int rc = evs_event_meta_set_bool(ev, "k", true);
    cr_assert_eq(rc, EVS_ESEALED, "got %s", evs_errname(rc));
    rc = evs_event_set_content(ev, EVS_CONTENT_TEXT);
    cr_assert_eq(rc, EVS_ESEALED, "got %s", evs_errname(rc));
    evs_event_unref(ev);
    evs_event_unref(src);
    evs_buf_free(&b);
}

/* ------------------------------------------------------------------ */
/* Allocation failure                                                  */
/* ------------------------------------------------------------------ */

/* The first event a thread makes also creates its block cache (pool.c):
 * make one first so the sweep counts the event's own allocations. */
static void warm_pool(void)
{
    evs_event *ev;
    cr_assert_eq(evs_event_create(&ev, EVS_TYPE_MESSAGE, "t", "x", 1), 0);
    evs_event_unref(ev);
}

Test(event, first_event_of_a_thread_fails_cleanly_without_its_cache)
{
    evs_event *ev = (evs_event *)&ev;
    evs__alloc_fail_after(0);
    int rc = evs_event_create(&ev, EVS_TYPE_MESSAGE, "t", "data", 4);
    evs__alloc_fail_after(-1);
    cr_assert_eq(rc, EVS_ENOMEM, "got %s", evs_errname(rc));
    cr_assert_null(ev);
    cr_assert_eq(evs_event_create(&ev, EVS_TYPE_MESSAGE, "t", "data", 4), 0);
    evs_event_unref(ev);
}

Test(event, create_allocation_failure_is_enomem)
{
    int failures = 0;
    warm_pool();
    for (long k = 0;; k++) {
        cr_assert_lt(k, 100);
        evs_event *ev = (evs_event *)&k;
        evs__alloc_fail_after(k);
        int rc = evs_event_create(&ev, EVS_TYPE_MESSAGE, "t", "data", 4);
        evs__alloc_fail_after(-1);
        if (rc == 0) {
            evs_event_unref(ev);
            break;
        }
        cr_assert_eq(rc, EVS_ENOMEM, "k=%ld: got %s", k, evs_errname(rc));
        cr_assert_null(ev);
        failures++;
    }
    cr_assert_eq(failures, 1, "one allocation holds the event");
}

Test(event, make_allocation_failure_is_enomem)
{
    int failures = 0;
    warm_pool();
    for (long k = 0;; k++) {
        cr_assert_lt(k, 1000);
        evs_event *ev = (evs_event *)&k;
        evs__alloc_fail_after(k);
        int rc = evs_event_make(&ev, "Purchase", "orders", "{\"sku\":7,\"list\":[1,2,3]}",
                                (const char *[]){"region", "eu", "tier", "gold", NULL});
        evs__alloc_fail_after(-1);
        if (rc == 0) {
            const char *s;
            size_t len;
            cr_assert_eq(evs_event_meta_get_str(ev, "tier", &s, &len), 0);
            evs_event_unref(ev);
            break;
        }
        cr_assert_eq(rc, EVS_ENOMEM, "k=%ld: got %s", k, evs_errname(rc));
        cr_assert_null(ev);
        failures++;
    }
    cr_assert_gt(failures, 3);
}

Test(event, meta_set_allocation_failure_keeps_the_old_metadata)
{
    evs_event *ev = new_event("t", NULL, 0);
    cr_assert_eq(evs_event_meta_set_str(ev, "a", "first"), 0);
    cr_assert_eq(evs_event_meta_set_i64(ev, "b", 2), 0);
    size_t before_len;
    const void *m = evs_event_meta(ev, &before_len);
    uint8_t before[64];
    cr_assert_leq(before_len, sizeof(before));
    memcpy(before, m, before_len);

    int failures = 0;
    for (long k = 0;; k++) {
        cr_assert_lt(k, 100);
        evs__alloc_fail_after(k);
        int rc = evs_event_meta_set_str(ev, "a", "replaced");
        evs__alloc_fail_after(-1);
        if (rc == 0)
            break;
        cr_assert_eq(rc, EVS_ENOMEM, "k=%ld: got %s", k, evs_errname(rc));
        size_t len;
        m = evs_event_meta(ev, &len);
        cr_assert_eq(len, before_len);
        cr_assert_eq(memcmp(m, before, len), 0, "k=%ld: metadata changed", k);
        failures++;
    }
    cr_assert_gt(failures, 1);
    const char *s;
    size_t len;
    cr_assert_eq(evs_event_meta_get_str(ev, "a", &s, &len), 0);
    cr_assert_eq(len, 8);
    evs_event_unref(ev);
}

Test(event, set_type_name_allocation_failure_keeps_the_old_name)
{
    evs_event *ev = new_event("t", NULL, 0);
    cr_assert_eq(evs_event_set_type_name(ev, "Old"), 0);
    evs__alloc_fail_after(0);
    int rc = evs_event_set_type_name(ev, "New");
    evs__alloc_fail_after(-1);
    cr_assert_eq(rc, EVS_ENOMEM, "got %s", evs_errname(rc));
    cr_assert_str_eq(evs_event_type_name(ev), "Old");
    cr_assert_eq(evs_event_set_type_name(ev, "New"), 0);
    cr_assert_str_eq(evs_event_type_name(ev), "New");
    evs_event_unref(ev);
}

Test(event, data_is_aligned_for_any_type_whatever_the_topic)
{
    const char *topics[] = {"", "a", "orders.eu.created", "fifteen-chars-x", "sixteen-chars-xx"};
    for (size_t i = 0; i < sizeof(topics) / sizeof(topics[0]); i++) {
        evs_event *ev;
        uint64_t v = 42;
        cr_assert_eq(evs_event_create(&ev, EVS_TYPE_MESSAGE, topics[i], &v, sizeof(v)), 0);
        const void *d = evs_event_data(ev, NULL);
        cr_assert_eq((uintptr_t)d % 16, 0, "topic \"%s\": data at %p", topics[i], d);
        cr_assert_eq(*(const uint64_t *)d, 42);
        cr_assert_str_eq(evs_event_topic(ev), topics[i]);
        evs_event_unref(ev);
    }
}
