/*
 * The error table: every code has its fixed value, a message and a name;
 * 0 and codes outside the table have theirs; the strings are literals
 * (the same pointer every time, nothing allocated), as evstream.h
 * promises.
 */
#include <criterion/criterion.h>
#include <limits.h>
#include <pthread.h>
#include <string.h>

#include "evstream.h"

/* The table as the header defines it, expanded once more here: a code
 * renumbered or dropped there fails below. */
static const struct {
    int code;
    const char *name;
    const char *msg;
} table[] = {
#define X(name, value, msg) {EVS_##name, "EVS_" #name, msg},
    EVS_ERRORS(X)
#undef X
};

Test(error, codes_keep_their_values)
{
    cr_assert_eq(EVS_OK, 0);
    cr_assert_eq(EVS_EINVAL, -1);
    cr_assert_eq(EVS_ENOMEM, -2);
    cr_assert_eq(EVS_ECLOSED, -3);
    cr_assert_eq(EVS_EFULL, -4);
    cr_assert_eq(EVS_ETIMEDOUT, -5);
    cr_assert_eq(EVS_ESEALED, -6);
    cr_assert_eq(EVS_ENOTFOUND, -7);
    cr_assert_eq(EVS_EBADMSG, -8);
    cr_assert_eq(EVS_ETOOBIG, -9);
    cr_assert_eq(EVS_EDEADLK, -10);
    cr_assert_eq(EVS_ESYSTEM, -11);
    cr_assert_eq(EVS_ETYPE, -12);
    /* Appended codes continue the sequence, with no gaps. */
    size_t n = sizeof table / sizeof table[0];
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(table[i].code, -(int)(i + 1), "%s", table[i].name);
}

Test(error, every_code_has_its_message_and_name)
{
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        cr_assert_str_eq(evs_strerror(table[i].code), table[i].msg);
        cr_assert_str_eq(evs_errname(table[i].code), table[i].name);
        cr_assert_str_neq(evs_strerror(table[i].code), "unknown error");
        for (size_t j = 0; j < i; j++)
            cr_assert_str_neq(table[i].msg, table[j].msg, "two codes share a message");
    }
}

Test(error, zero_is_success)
{
    cr_assert_str_eq(evs_strerror(0), "success");
    cr_assert_str_eq(evs_errname(0), "EVS_OK");
}

Test(error, codes_outside_the_table_are_unknown)
{
    const int past_the_table = -(int)(sizeof table / sizeof table[0]) - 1;
    const int unknown[] = {1, 42, past_the_table, -1000, INT_MIN, INT_MAX};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        cr_assert_str_eq(evs_strerror(unknown[i]), "unknown error", "%d", unknown[i]);
        cr_assert_str_eq(evs_errname(unknown[i]), "EVS_EUNKNOWN", "%d", unknown[i]);
    }
}

Test(error, strings_are_literals_not_buffers)
{
    /* The same pointer every time, and a message for one code is not
     * overwritten by asking for another (no shared static buffer). */
    const char *a = evs_strerror(EVS_ENOMEM), *b = evs_strerror(12345);
    cr_assert_eq(a, evs_strerror(EVS_ENOMEM));
    cr_assert_eq(b, evs_strerror(-12345));
    cr_assert_str_eq(a, "out of memory");
    cr_assert_eq(evs_errname(EVS_ETYPE), evs_errname(EVS_ETYPE));
}

static void *read_last_error(void *arg)
{
    *(const char **)arg = evs_last_error();
    return NULL;
}

Test(error, last_error_is_a_sentence_per_thread)
{
    evs_stream *s;
    evs_stream_opts bad = {.backpressure_pct = 101};
    cr_assert_eq(evs_stream_create(&s, &bad), EVS_EINVAL);
    cr_assert_str_eq(evs_last_error(), "backpressure_pct 101 is not in 0..100");
    const char *other = NULL;
    pthread_t t;
    pthread_create(&t, NULL, read_last_error, &other);
    pthread_join(t, NULL);
    cr_assert_not_null(other);
    cr_assert_str_eq(other, "", "another thread sees its own (empty) message");
}
