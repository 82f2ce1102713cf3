/*
 * The evstream program's private interface: the subcommands and the
 * small helpers they share (option parsing, text output). Never
 * installed; the program uses the library only through <evstream.h>.
 */
#ifndef EVS_CLI_H
#define EVS_CLI_H

#include <evstream.h>

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Exit status for a bad command line, as most Unix tools use it. */
#define EVS_CLI_USAGE 2

/* The subcommands: each parses argv (argv[0] is the subcommand's name)
 * and returns the process's exit status. */
int evs_cli_serve(int argc, char **argv);
int evs_cli_tail(int argc, char **argv);

/*
 * Match argv[*i] against the option `name` ("--port"), taking its value
 * from "--port=N" or from the next argument (then *i advances past it).
 * Returns 1 with *value set on a match, 0 when argv[*i] is another
 * option, -1 when it matches but the value is missing.
 */
int evs_cli_opt(int argc, char **argv, int *i, const char *name, const char **value);

/*
 * Parse a decimal number in [min, max]: digits only, no sign, no
 * spaces. Returns 0, or -1 when `s` is not such a number.
 */
int evs_cli_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out);

/*
 * Report a bad command line on stderr ("evstream CMD: <message>" and a
 * pointer to --help) and return EVS_CLI_USAGE.
 */
int evs_cli_usage_error(const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * printf-style append to an evs_buf (which stays NUL-terminated).
 * Returns 0 or EVS_ENOMEM (the buffer is unchanged then).
 * Threads: not concurrently on one buffer.
 */
int evs_cli_bprintf(evs_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * Compare `given` (given_len bytes) with the NUL-terminated `secret` in
 * time that depends only on the secret's length, so that the answer's
 * timing tells nothing about how many leading bytes matched.
 */
bool evs_cli_secret_eq(const char *given, size_t given_len, const char *secret);

#endif /* EVS_CLI_H */
