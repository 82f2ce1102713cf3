/*
 * ck_ec operations for Linux: futex wait/wake on the event count's
 * 32-bit word and CLOCK_MONOTONIC time. Waiting is the only place the
 * library sleeps in the kernel; waking costs a syscall only when a
 * waiter has flagged the count (ck_ec tracks that with one bit), so a
 * busy stream makes no syscall per event.
 */
#include "wait.h"

#include "evs_internal.h"

#include <errno.h>
#include <limits.h>
#include <linux/membarrier.h>
#include <pthread.h>
#include <linux/futex.h>
#include <sched.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int gettime(const struct ck_ec_ops *ops, struct timespec *out)
{
    (void)ops;
    return clock_gettime(CLOCK_MONOTONIC, out);
}

static void futex_wait(const void *addr, uint32_t expected, const struct timespec *deadline)
{
    struct timespec rel, *relp = NULL;
    if (deadline != NULL) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        int64_t ns = (int64_t)(deadline->tv_sec - now.tv_sec) * 1000000000 +
                     (deadline->tv_nsec - now.tv_nsec);
        if (ns <= 0)
            return;
        rel.tv_sec = ns / 1000000000;
        rel.tv_nsec = ns % 1000000000;
        relp = &rel;
    }
    syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, expected, relp, NULL, 0);
}

static void wait32(const struct ck_ec_wait_state *st, const uint32_t *addr,
                   uint32_t expected, const struct timespec *deadline)
{
    (void)st;
    futex_wait(addr, expected, deadline);
}

static void wait64(const struct ck_ec_wait_state *st, const uint64_t *addr,
                   uint64_t expected, const struct timespec *deadline)
{
    (void)st;
    /* Little-endian: the low half holds the changing bits. */
    futex_wait(addr, (uint32_t)expected, deadline);
}

static void wake32(const struct ck_ec_ops *ops, const uint32_t *addr)
{
    (void)ops;
    syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

static void wake64(const struct ck_ec_ops *ops, const uint64_t *addr)
{
    (void)ops;
    syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

static const struct ck_ec_ops ops = {
    .gettime = gettime,
    .wait32 = wait32,
    .wait64 = wait64,
    .wake32 = wake32,
    .wake64 = wake64,
    /* Spin a little before the first futex wait: a hand-off that is
     * already in flight completes in well under a microsecond. */
    .busy_loop_iter = 100,
};

const struct ck_ec_mode evs__ec_mp = {.ops = &ops, .single_producer = false};

int64_t evs__deadline_after_ms(int timeout_ms)
{
    return evs__now_mono_ns() + (int64_t)timeout_ms * 1000000;
}

int evs__ec_wait(struct ck_ec32 *ec, uint32_t seen, int64_t deadline_ns)
{
    if (deadline_ns < 0)
        return ck_ec32_wait(ec, &evs__ec_mp, seen, NULL) == 0 ? 0 : EVS_ETIMEDOUT;
    struct timespec dl = {
        .tv_sec = deadline_ns / 1000000000,
        .tv_nsec = deadline_ns % 1000000000,
    };
    return ck_ec32_wait(ec, &evs__ec_mp, seen, &dl) == 0 ? 0 : EVS_ETIMEDOUT;
}

void evs__backoff(unsigned round)
{
    if (round < 64) {
        evs__cpu_relax();
    } else if (round < 128) {
        sched_yield();
    } else {
        unsigned us = round < 1024 ? 50 : 1000;
        struct timespec ts = {0, (long)us * 1000};
        nanosleep(&ts, NULL);
    }
}

static pthread_once_t membarrier_once = PTHREAD_ONCE_INIT;
static bool membarrier_ok;

static void membarrier_register(void)
{
    long cmds = syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
    membarrier_ok = cmds > 0 && (cmds & MEMBARRIER_CMD_PRIVATE_EXPEDITED) &&
                    syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
}

bool evs__heavy_fence_ready(void)
{
    pthread_once(&membarrier_once, membarrier_register);
    return membarrier_ok;
}

void evs__heavy_fence(void)
{
    /* Registered by evs__heavy_fence_ready before any stream relies on
     * it; the command cannot fail after registration. */
    syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0);
}
