/*
 * Helpers the subcommands share: option matching, number parsing, usage
 * errors, appending formatted text to an evs_buf and a constant-time
 * secret comparison. No threads, no state.
 */
#include "cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int evs_cli_opt(int argc, char **argv, int *i, const char *name, const char **value)
{
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (strncmp(a, name, n) != 0)
        return 0;
    if (a[n] == '=') {
        *value = a + n + 1;
        return 1;
    }
    if (a[n] != '\0')
        return 0; /* "--portx": another option */
    if (*i + 1 >= argc)
        return -1;
    *value = argv[++*i];
    return 1;
}

int evs_cli_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    if (s == NULL || *s < '0' || *s > '9')
        return -1; /* strtoull would accept a sign and spaces */
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        return -1;
    *out = (uint64_t)v;
    return 0;
}

int evs_cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "evstream %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry 'evstream %s --help'.\n", cmd);
    return EVS_CLI_USAGE;
}

int evs_cli_bprintf(evs_buf *b, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0)
        return EVS_EINVAL;
    if ((size_t)n < sizeof small)
        return evs_buf_append(b, small, (size_t)n);
    /* Longer than the stack buffer: format straight into the reserve. */
    int rc = evs_buf_reserve(b, (size_t)n);
    if (rc != 0)
        return rc;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

bool evs_cli_secret_eq(const char *given, size_t given_len, const char *secret)
{
    size_t n = strlen(secret);
    /* volatile: the compiler must not turn the loop into an early exit. */
    volatile unsigned char diff = given_len != n;
    for (size_t i = 0; i < n; i++) {
        unsigned char g = i < given_len ? (unsigned char)given[i] : 0;
        diff |= g ^ (unsigned char)secret[i];
    }
    return diff == 0;
}
