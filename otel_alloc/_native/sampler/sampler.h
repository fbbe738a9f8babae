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
int oa_sample_tick_slow(size_t size);
/* Each allocation counts its size down from tls.sample_left (core/account.h);
   when that crosses zero, oa_sample_tick_slow decides whether the allocation
   is sampled (1) and refills it. While sampling is off the countdown is
   parked out of reach, so the common case is one subtraction and one branch
   either way. */
/* Drop this thread's countdown when it was drawn under another
   configuration: the next countdown draws afresh. Called wherever the
   thread may have missed a configuration (a full MEM/OBJ resolution, every
   RAW and native allocation). */
static inline void oa_sample_refresh(void)
{
    if (tls.sample_gen != atomic_load_explicit(&g_sample_gen, memory_order_relaxed))
        tls.sample_left = 0;
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
