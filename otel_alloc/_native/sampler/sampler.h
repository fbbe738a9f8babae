/*
 * Sampled allocation sites (sampler.c): Poisson sampling over bytes, with
 * the Python stack of each MEM/OBJ sample interned.
 */
#ifndef OA_SAMPLER_H
#define OA_SAMPLER_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "../core/tls.h"

#pragma GCC visibility push(hidden)

extern _Atomic uint64_t g_sample_mean; /* 0: sampling off */
/* Bumped by every oa_sampler_configure: a thread's countdown drawn under
   another configuration is drawn again. */
extern _Atomic uint32_t g_sample_gen;
int oa_sample_tick_slow(uint64_t mean, size_t size);
/* Count size bytes down; 1 when this allocation is sampled. Inline: it runs
   on every allocation while sampling is on. */
static inline int oa_sample_tick(uint64_t mean, size_t size)
{
    tls.sample_left -= (int64_t)size;
    if (tls.sample_left > 0 &&
        tls.sample_gen == atomic_load_explicit(&g_sample_gen, memory_order_relaxed))
        return 0;
    return oa_sample_tick_slow(mean, size);
}
/* Record a sampled allocation (tracked: flagged in the live table). */
void oa_sample_alloc(int domain, void *ptr, size_t size, uint64_t gid, uint64_t mean,
                     int tracked);
/* A block flagged as sampled is being freed. */
void oa_sample_freed(void *ptr);
uint64_t oa_sampler_bytes(void);
void oa_sampler_atfork_prepare(void);
void oa_sampler_atfork_parent(void);
void oa_sampler_atfork_child(void);
void oa_sampler_uninstall(void);

#pragma GCC visibility pop

#endif
