/*
 * Events on the wire: build an event with metadata, encode it as
 * msgpack, decode it back and render both as JSON.
 */
#include <evstream.h>

#include <stdio.h>
#include <string.h>

static int fail(const char *what, int rc)
{
    fprintf(stderr, "%s: %s (%s)\n", what, evs_strerror(rc), evs_errname(rc));
    return 1;
}

int main(void)
{
    evs_event *ev, *back;
    evs_buf wire = {0}, json = {0};
    int rc;
    const char text[] = "line one\nline two";

    if ((rc = evs_event_create(&ev, EVS_TYPE_MESSAGE, "sensors.t1", text, strlen(text))) != 0)
        return fail("create", rc);
    /* Before publishing, the event is ours to shape. */
    if ((rc = evs_event_set_content(ev, EVS_CONTENT_TEXT)) != 0 ||
        (rc = evs_event_set_type_name(ev, "Reading")) != 0 ||
        (rc = evs_event_meta_set_str(ev, "unit", "celsius")) != 0 ||
        (rc = evs_event_meta_set_i64(ev, "seq", 42)) != 0 ||
        (rc = evs_event_meta_set_f64(ev, "value", 21.5)) != 0 ||
        (rc = evs_event_meta_set_bool(ev, "calibrated", true)) != 0 ||
        (rc = evs_event_meta_set_raw(ev, "tags", "\x92\xa1" "a\xa1" "b", 5)) != 0) {
        evs_event_unref(ev);
        return fail("set", rc);
    }
    printf("type %s (custom: %s), built-in name of MESSAGE: %s\n", evs_event_type_name(ev),
           evs_event_type(ev) == EVS_TYPE_CUSTOM ? "yes" : "no", evs_type_name(EVS_TYPE_MESSAGE));

    if ((rc = evs_event_to_msgpack(ev, &wire)) != 0 ||
        (rc = evs_event_from_msgpack(&back, wire.data, wire.len)) != 0) {
        evs_event_unref(ev);
        evs_buf_free(&wire);
        return fail("codec", rc);
    }
    printf("msgpack: %zu bytes\n", wire.len);

    int64_t seq;
    double value;
    bool cal;
    const char *unit;
    size_t ulen, dlen, mlen;
    const void *tags;
    evs_event_meta_get_i64(back, "seq", &seq);
    evs_event_meta_get_f64(back, "value", &value);
    evs_event_meta_get_bool(back, "calibrated", &cal);
    evs_event_meta_get_str(back, "unit", &unit, &ulen);
    evs_event_meta_get_raw(back, "tags", &tags, &mlen);
    evs_event_data(back, &dlen);
    evs_event_meta(back, NULL);
    printf("decoded: topic=%s seq=%lld value=%.1f calibrated=%d unit=%.*s tags=%zu bytes data=%zu bytes\n",
           evs_event_topic(back), (long long)seq, value, cal, (int)ulen, unit, mlen, dlen);
    printf("same timestamp: %s, content text: %s, published: %s\n",
           evs_event_timestamp(back) == evs_event_timestamp(ev) ? "yes" : "no",
           evs_event_content(back) == EVS_CONTENT_TEXT ? "yes" : "no",
           evs_event_published(back) ? "yes" : "no");
    rc = evs_event_meta_get_i64(back, "missing", &seq);
    printf("missing key: %s\n", evs_errname(rc));

    /* Hostile bytes are refused, never trusted. */
    evs_event *bad;
    rc = evs_event_from_msgpack(&bad, "\xdd\xff\x00\x00\x00", 5);
    printf("hostile input: %s\n", evs_errname(rc));

    evs_buf_reserve(&json, 256);
    evs_buf_append(&json, "json: ", 6);
    if ((rc = evs_event_to_json(back, &json)) == 0)
        printf("%s\n", json.data);

    evs_event_unref(back);
    evs_event_unref(ev);
    evs_buf_free(&wire);
    evs_buf_free(&json);
    return rc == 0 ? 0 : fail("json", rc);
}
