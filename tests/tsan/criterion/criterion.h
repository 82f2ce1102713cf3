/*
 * A stand-in for the part of Criterion's API that evstream's tests use,
 * for ThreadSanitizer builds only.
 *
 * Why: Criterion cannot start under ThreadSanitizer. Its BoxFort arena
 * looks for free address space at random and finds none beside TSan's
 * shadow mappings ("Could not initialize inheritable arena", Criterion
 * issue #274, open since 2018). `make tsan` therefore compiles the same
 * test files against this header and tests/tsan/runner.c: each test runs
 * in its own forked process, as under Criterion, and a TSan report makes
 * that process exit non-zero, failing the test. Every other build uses
 * the real Criterion.
 */
#ifndef EVS_TSAN_CRITERION_SHIM_H
#define EVS_TSAN_CRITERION_SHIM_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

struct evs_shim_test {
    const char *suite_name;
    const char *test_name;
    void (*run)(void);
    unsigned timeout; /* seconds; 0 = none */
    void (*init)(void);
    void (*fini)(void);
    int disabled;
    struct evs_shim_test *next;
};

void evs_shim_register(struct evs_shim_test *t);
void evs_shim_fail(int fatal, const char *file, int line, const char *expr,
                   const char *fmt, ...) __attribute__((format(printf, 5, 6)));

#define Test(suite, name, ...)                                               \
    static void suite##_##name##_impl(void);                                 \
    static struct evs_shim_test suite##_##name##_desc = {                    \
        .suite_name = #suite, .test_name = #name,                            \
        .run = suite##_##name##_impl, __VA_ARGS__};                  \
    __attribute__((constructor)) static void suite##_##name##_reg(void)      \
    {                                                                        \
        evs_shim_register(&suite##_##name##_desc);                           \
    }                                                                        \
    static void suite##_##name##_impl(void)

#define EVS_SHIM_CHECK(fatal, cond, expr, ...)                               \
    do {                                                                     \
        if (!(cond))                                                         \
            evs_shim_fail(fatal, __FILE__, __LINE__, expr, " " __VA_ARGS__);  \
    } while (0)

#define cr_assert(c, ...)         EVS_SHIM_CHECK(1, (c), #c, __VA_ARGS__)
#define cr_expect(c, ...)         EVS_SHIM_CHECK(0, (c), #c, __VA_ARGS__)
#define cr_assert_not(c, ...)     EVS_SHIM_CHECK(1, !(c), "!(" #c ")", __VA_ARGS__)
#define cr_expect_not(c, ...)     EVS_SHIM_CHECK(0, !(c), "!(" #c ")", __VA_ARGS__)
#define cr_assert_fail(...)       EVS_SHIM_CHECK(1, 0, "fail", __VA_ARGS__)
#define cr_expect_fail(...)       EVS_SHIM_CHECK(0, 0, "fail", __VA_ARGS__)
#define cr_skip_test(...)         return

#define EVS_SHIM_CMP(fatal, a, op, b, ...)                                   \
    EVS_SHIM_CHECK(fatal, (a) op (b), #a " " #op " " #b, __VA_ARGS__)
#define cr_assert_eq(a, b, ...)   EVS_SHIM_CMP(1, a, ==, b, __VA_ARGS__)
#define cr_assert_neq(a, b, ...)  EVS_SHIM_CMP(1, a, !=, b, __VA_ARGS__)
#define cr_assert_lt(a, b, ...)   EVS_SHIM_CMP(1, a, <, b, __VA_ARGS__)
#define cr_assert_leq(a, b, ...)  EVS_SHIM_CMP(1, a, <=, b, __VA_ARGS__)
#define cr_assert_gt(a, b, ...)   EVS_SHIM_CMP(1, a, >, b, __VA_ARGS__)
#define cr_assert_geq(a, b, ...)  EVS_SHIM_CMP(1, a, >=, b, __VA_ARGS__)
#define cr_expect_eq(a, b, ...)   EVS_SHIM_CMP(0, a, ==, b, __VA_ARGS__)
#define cr_expect_neq(a, b, ...)  EVS_SHIM_CMP(0, a, !=, b, __VA_ARGS__)
#define cr_expect_lt(a, b, ...)   EVS_SHIM_CMP(0, a, <, b, __VA_ARGS__)
#define cr_expect_leq(a, b, ...)  EVS_SHIM_CMP(0, a, <=, b, __VA_ARGS__)
#define cr_expect_gt(a, b, ...)   EVS_SHIM_CMP(0, a, >, b, __VA_ARGS__)
#define cr_expect_geq(a, b, ...)  EVS_SHIM_CMP(0, a, >=, b, __VA_ARGS__)

#define cr_assert_null(p, ...)     EVS_SHIM_CHECK(1, (p) == NULL, #p " == NULL", __VA_ARGS__)
#define cr_assert_not_null(p, ...) EVS_SHIM_CHECK(1, (p) != NULL, #p " != NULL", __VA_ARGS__)
#define cr_expect_null(p, ...)     EVS_SHIM_CHECK(0, (p) == NULL, #p " == NULL", __VA_ARGS__)
#define cr_expect_not_null(p, ...) EVS_SHIM_CHECK(0, (p) != NULL, #p " != NULL", __VA_ARGS__)

#define cr_assert_str_eq(a, b, ...)  EVS_SHIM_CHECK(1, strcmp((a), (b)) == 0, #a " == " #b, __VA_ARGS__)
#define cr_assert_str_neq(a, b, ...) EVS_SHIM_CHECK(1, strcmp((a), (b)) != 0, #a " != " #b, __VA_ARGS__)
#define cr_expect_str_eq(a, b, ...)  EVS_SHIM_CHECK(0, strcmp((a), (b)) == 0, #a " == " #b, __VA_ARGS__)
#define cr_assert_str_empty(a, ...)  EVS_SHIM_CHECK(1, (a)[0] == '\0', #a " is empty", __VA_ARGS__)

#define cr_assert_arr_eq(a, b, n, ...) \
    EVS_SHIM_CHECK(1, memcmp((a), (b), (n)) == 0, #a " == " #b, __VA_ARGS__)
#define cr_assert_arr_neq(a, b, n, ...) \
    EVS_SHIM_CHECK(1, memcmp((a), (b), (n)) != 0, #a " != " #b, __VA_ARGS__)
#define cr_expect_arr_eq(a, b, n, ...) \
    EVS_SHIM_CHECK(0, memcmp((a), (b), (n)) == 0, #a " == " #b, __VA_ARGS__)

#define cr_assert_float_eq(a, b, eps, ...) \
    EVS_SHIM_CHECK(1, fabs((double)(a) - (double)(b)) <= (eps), #a " ~= " #b, __VA_ARGS__)
#define cr_expect_float_eq(a, b, eps, ...) \
    EVS_SHIM_CHECK(0, fabs((double)(a) - (double)(b)) <= (eps), #a " ~= " #b, __VA_ARGS__)

#define cr_log_info(...) fprintf(stderr, __VA_ARGS__)
#define cr_log_warn(...) fprintf(stderr, __VA_ARGS__)

#endif /* EVS_TSAN_CRITERION_SHIM_H */
