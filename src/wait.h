/*
 * Time, wait and wake: the one place evstream talks to the kernel to
 * sleep. Everything goes through ck_ec event counts whose struct
 * ck_ec_ops lives here (futex on Linux, CLOCK_MONOTONIC), so tests can
 * swap in fakes and the rest of the library stays free of syscalls.
 */
#ifndef EVS_WAIT_H
#define EVS_WAIT_H

#include <ck_ec.h>
#include <stdbool.h>
#include <stdint.h>

/* Event-count modes: several threads may increment (publishers, close). */
extern const struct ck_ec_mode evs__ec_mp;

/*
 * Wait until ec's value differs from `seen`, or until `deadline_ns`
 * (CLOCK_MONOTONIC ns; < 0 = no deadline) passes.
 * Returns 0 when the count changed, EVS_ETIMEDOUT at the deadline.
 */
int evs__ec_wait(struct ck_ec32 *ec, uint32_t seen, int64_t deadline_ns);

/* Deadline `timeout_ms` from now (ms <= 0 handled by the caller). */
int64_t evs__deadline_after_ms(int timeout_ms);

/* Sleep a little, growing the pause with `round` (used only by rare
 * waits such as unsubscribe waiting for a running handler). */
void evs__backoff(unsigned round);

/*
 * Asymmetric fences (membarrier(2)). A thread on a hot path orders a
 * store before a later load with only a compiler barrier, and the thread
 * on the rare path calls evs__heavy_fence, which makes every running
 * thread of the process execute a full barrier. evs__heavy_fence_ready
 * registers the process once and says whether the kernel offers it; if
 * not, both sides must use full fences.
 */
bool evs__heavy_fence_ready(void);
void evs__heavy_fence(void);

#endif /* EVS_WAIT_H */
