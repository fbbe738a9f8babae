/*
 * Poisson sampling over bytes, shared by the allocation-site sampler
 * (sampler.c) and estimate mode (estimate.c): each thread counts down a
 * random number of bytes drawn from an exponential distribution with the
 * configured mean, and the allocation that crosses zero is sampled. An
 * allocation of s bytes is thus sampled with probability 1 - exp(-s / mean)
 * however the program split its bytes into calls.
 */
#ifndef OA_POISSON_H
#define OA_POISSON_H

#include <math.h>
#include <stdint.h>
#include <time.h>

#include "../core/tls.h"
#include "../support/rng.h"

#pragma GCC visibility push(hidden)

/* The calling thread's next random number; the generator is seeded on the
   thread's first draw (its TLS address and the clock tell threads apart). */
static inline uint64_t oa_rng_next(void)
{
    if (tls.rng == 0) {
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        tls.rng = ((uint64_t)(uintptr_t)&tls ^ (uint64_t)t.tv_nsec ^ ((uint64_t)t.tv_sec << 32)) | 1;
    }
    return oa_xorshift64s(&tls.rng);
}

/* Bytes until the next sample point: exponential with mean `mean`, >= 1. */
static inline int64_t oa_draw_interval(uint64_t mean)
{
    /* u in (0, 1]: -log(u) is exponential with mean 1. */
    double u = ((double)(oa_rng_next() >> 11) + 1.0) * (1.0 / 9007199254740992.0);
    double v = -log(u) * (double)mean;
    return v >= 9.0e18 ? INT64_MAX : (int64_t)v + 1;
}

/* A countdown (*left, drawn under generation *drawn_gen) crossed zero, or
   may have been drawn under another configuration than `gen` (mean
   `mean`): refill it; 1 when the allocation of `size` bytes that got here
   is sampled. A countdown left from another mean (up to many times this
   one) would skip or crowd samples, so the thread's first allocation under
   a configuration starts a fresh one and is sampled if it crosses it (the
   countdown is memoryless: the same law). */
static inline int oa_countdown_crossed(uint32_t *drawn_gen, int64_t *left, uint32_t gen,
                                       uint64_t mean, size_t size)
{
    if (*drawn_gen != gen) {
        *drawn_gen = gen;
        *left = oa_draw_interval(mean) - (int64_t)size;
        if (*left > 0)
            return 0;
    }
    while (*left <= 0)
        *left += oa_draw_interval(mean);
    return 1;
}

#pragma GCC visibility pop

#endif
