/*
 * Estimate mode's sample of live blocks (estimate.c): Poisson sampling over
 * bytes with its own countdown (tls.est_left), so it never competes with the
 * allocation-site sampler for samples. A sampled block enters its domain's
 * pointer table with the bytes it stands for in place of its size, and its
 * free takes them back out, so the live counters hold an unbiased estimate.
 */
#ifndef OA_ESTIMATE_H
#define OA_ESTIMATE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "../core/tls.h"

#pragma GCC visibility push(hidden)

extern _Atomic uint64_t g_est_mean;
/* Bumped by every configuration and install: a countdown drawn under an
   earlier one is drawn again. */
extern _Atomic uint32_t g_est_gen;

/* The countdown crossed zero, or was drawn under another configuration:
   refill it, and give the bytes a sampled allocation of `size` stands for
   (0: not sampled). */
uint64_t oa_estimate_tick_slow(size_t size);

/* Threads draw afresh on their next allocation (install, configuration). */
void oa_estimate_restart(void);

/* Drop this thread's countdown when it was drawn under another
   configuration, so the next allocation draws afresh under the current
   mean. Without it a countdown drawn under a larger mean ran on after a
   reinstall with a smaller one, and the blocks it passed over were never
   sampled: the estimate came out low by about the old mean (a 6-sigma
   miss in test_estimate.py under ASan in CI). Called where
   oa_sample_refresh is. */
static inline void oa_estimate_refresh(void)
{
    if (tls.est_gen != atomic_load_explicit(&g_est_gen, memory_order_relaxed))
        tls.est_left = 0;
}

#pragma GCC visibility pop

#endif
