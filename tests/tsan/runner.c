/*
 * The test runner behind tests/tsan/criterion/criterion.h (see there
 * for why it exists). Runs every registered test, or those matching
 * --filter GLOB ("suite/name"), each in a forked child with its timeout,
 * one at a time, and prints Criterion-style totals.
 */
#include <criterion/criterion.h>

#include <fnmatch.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static struct evs_shim_test *head, **tail = &head;
static int expect_failed;

void evs_shim_register(struct evs_shim_test *t)
{
    *tail = t;
    tail = &t->next;
}

void evs_shim_fail(int fatal, const char *file, int line, const char *expr, const char *fmt, ...)
{
    fprintf(stderr, "[----] %s:%d: Assertion Failed: %s\n[----]   ", file, line, expr);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    if (fatal)
        _exit(1);
    expect_failed = 1;
}

int main(int argc, char **argv)
{
    const char *filter = "*";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--filter") == 0 && i + 1 < argc)
            filter = argv[++i];
        else if (strncmp(argv[i], "--filter=", 9) == 0)
            filter = argv[i] + 9;
    }
    int tested = 0, passed = 0, failed = 0, crashed = 0;
    for (struct evs_shim_test *t = head; t != NULL; t = t->next) {
        char full[512];
        snprintf(full, sizeof(full), "%s/%s", t->suite_name, t->test_name);
        if (t->disabled || fnmatch(filter, full, 0) != 0)
            continue;
        tested++;
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
            if (t->timeout)
                alarm(t->timeout);
            if (t->init)
                t->init();
            t->run();
            if (t->fini)
                t->fini();
            exit(expect_failed ? 1 : 0); /* exit: TSan reports at exit */
        }
        int st = 0;
        waitpid(pid, &st, 0);
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
            passed++;
            fprintf(stderr, "[PASS] %s::%s\n", t->suite_name, t->test_name);
        } else if (WIFEXITED(st)) {
            failed++;
            fprintf(stderr, "[FAIL] %s::%s (exit %d)\n", t->suite_name, t->test_name, WEXITSTATUS(st));
        } else {
            crashed++;
            fprintf(stderr, "[FAIL] %s::%s: CRASH (signal %d)\n", t->suite_name, t->test_name,
                    WIFSIGNALED(st) ? WTERMSIG(st) : -1);
        }
    }
    fprintf(stderr, "[====] Synthesis: Tested: %d | Passing: %d | Failing: %d | Crashing: %d\n",
            tested, passed, failed, crashed);
    return (failed || crashed) ? 1 : 0;
}
