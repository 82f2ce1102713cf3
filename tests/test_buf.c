/*
 * evs_buf: appending keeps the bytes NUL-terminated, growth keeps what
 * the buffer held, a request that cannot be met (too large, or an
 * allocation failure) leaves the buffer as it was, and the NULL cases.
 */
#include <criterion/criterion.h>
#include <stdint.h>
#include <string.h>

#include "evs_internal.h"
#include "evs_test.h"

Test(buf, append_keeps_bytes_and_a_trailing_nul)
{
    evs_buf b = {0};
    ASSERT_RC(evs_buf_append(&b, "abc", 3), 0);
    ASSERT_RC(evs_buf_append(&b, "\0de", 3), 0); /* NUL bytes are data */
    cr_assert_eq(b.len, 6);
    cr_assert_eq(memcmp(b.data, "abc\0de", 7), 0, "and a NUL after them");
    ASSERT_RC(evs_buf_append(&b, NULL, 0), 0);
    cr_assert_eq(b.len, 6);
    evs_buf_free(&b);
    cr_assert_null(b.data);
    cr_assert_eq(b.len + b.cap, 0);
}

Test(buf, growth_keeps_the_contents)
{
    evs_buf b = {0};
    char chunk[100];
    for (int i = 0; i < 1000; i++) {
        memset(chunk, 'a' + i % 26, sizeof chunk);
        ASSERT_RC(evs_buf_append(&b, chunk, sizeof chunk), 0);
        cr_assert_gt(b.cap, b.len, "room for the NUL");
    }
    for (size_t i = 0; i < b.len; i++)
        cr_assert_eq(b.data[i], 'a' + (char)(i / 100 % 26), "byte %zu", i);
    cr_assert_eq(b.data[b.len], '\0');
    evs_buf_free(&b);
}

Test(buf, reserve_makes_room_without_changing_len)
{
    evs_buf b = {0};
    ASSERT_RC(evs_buf_reserve(&b, 1000), 0);
    cr_assert_geq(b.cap, 1001);
    cr_assert_eq(b.len, 0);
    size_t cap = b.cap;
    ASSERT_RC(evs_buf_reserve(&b, 10), 0);
    cr_assert_eq(b.cap, cap, "enough room already: no growth");
    evs_buf_free(&b);
}

Test(buf, reset_keeps_the_memory)
{
    evs_buf b = {0};
    ASSERT_RC(evs_buf_append(&b, "hello", 5), 0);
    char *p = b.data;
    evs_buf_reset(&b);
    cr_assert_eq(b.len, 0);
    cr_assert_eq(b.data, p);
    cr_assert_str_eq(b.data, "");
    evs_buf_free(&b);
    evs_buf b2 = {0};
    evs_buf_reset(&b2); /* an empty buffer has no memory to terminate */
    cr_assert_null(b2.data);
}

Test(buf, impossible_sizes_are_enomem_and_change_nothing)
{
    evs_buf b = {0};
    ASSERT_RC(evs_buf_append(&b, "x", 1), 0);
    ASSERT_RC(evs_buf_reserve(&b, SIZE_MAX), EVS_ENOMEM);
    ASSERT_RC(evs_buf_reserve(&b, SIZE_MAX / 2), EVS_ENOMEM);
    cr_assert_eq(b.len, 1);
    cr_assert_str_eq(b.data, "x");
    evs_buf_free(&b);
}

Test(buf, allocation_failure_leaves_the_buffer_as_it_was)
{
    evs_buf b = {0};
    ASSERT_RC(evs_buf_append(&b, "keep", 4), 0);
    char big[500] = {0};
    evs__alloc_fail_after(0);
    int rc = evs_buf_append(&b, big, sizeof big);
    evs__alloc_fail_after(-1);
    cr_assert_eq(rc, EVS_ENOMEM);
    cr_assert_eq(b.len, 4);
    cr_assert_str_eq(b.data, "keep");
    ASSERT_RC(evs_buf_append(&b, big, sizeof big), 0);
    evs_buf_free(&b);
}

Test(buf, null_is_einval_or_ignored)
{
    ASSERT_RC(evs_buf_reserve(NULL, 1), EVS_EINVAL);
    ASSERT_RC(evs_buf_append(NULL, "x", 1), EVS_EINVAL);
    evs_buf_reset(NULL);
    evs_buf_free(NULL);
}
