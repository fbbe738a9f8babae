/*
 * Estimate mode: which blocks enter the pointer table, and what each one
 * stands for.
 *
 * A block of s bytes is sampled with probability p = 1 - exp(-s / mean)
 * (poisson.h), and a sampled block counts s / p bytes (the Horvitz-Thompson
 * weight): the sum over the sampled blocks still alive is then an unbiased
 * estimate of the bytes alive, whatever their sizes. A block much larger than
 * the mean is almost surely sampled and counts its own size; a small one
 * counts about mean + s / 2. The weight is fixed when the block is sampled,
 * so a later change of mean leaves the estimate unbiased.
 */
#include "estimate.h"
#include "poisson.h"

#include "../api/tracker_api.h"
#include "../core/tls.h"

_Atomic uint64_t g_est_mean = 4096;
_Atomic uint32_t g_est_gen = 1;

static uint64_t weight_of(size_t size, uint64_t mean)
{
    double s = (double)size;
    /* -expm1(-x) is 1 - exp(-x) without the cancellation at small x. */
    double p = -expm1(-s / (double)mean);
    double w = p > 0.0 ? s / p : (double)mean;
    if (w >= 1.8e19)
        return UINT64_MAX;
    uint64_t weight = (uint64_t)(w + 0.5);
    return weight > size ? weight : (uint64_t)size;
}

uint64_t oa_estimate_tick_slow(size_t size)
{
    /* The generation first: a configuration publishes its mean before its
       generation, so a thread that sees the new generation sees that mean. */
    uint32_t gen = atomic_load_explicit(&g_est_gen, memory_order_acquire);
    uint64_t mean = atomic_load_explicit(&g_est_mean, memory_order_relaxed);
    if (!oa_countdown_crossed(&tls.est_gen, &tls.est_left, gen, mean, size))
        return 0;
    return weight_of(size, mean);
}

void oa_estimate_restart(void)
{
    atomic_fetch_add_explicit(&g_est_gen, 1, memory_order_release);
}

int oa_set_estimate_mean(uint64_t mean_bytes)
{
    if (mean_bytes < 1 || mean_bytes > OA_ESTIMATE_MEAN_MAX)
        return OA_ERR_BAD_ARGUMENT;
    atomic_store_explicit(&g_est_mean, mean_bytes, memory_order_relaxed);
    oa_estimate_restart();
    return OA_OK;
}

uint64_t oa_estimate_mean(void)
{
    return atomic_load_explicit(&g_est_mean, memory_order_relaxed);
}
