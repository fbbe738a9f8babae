/*
 * Internal declarations shared by the tracker's C files.
 */
#ifndef OA_TRACKER_H
#define OA_TRACKER_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdatomic.h>
#include <stdint.h>

#include "oa_api.h"
#include "ptable.h"

#define OA_RELAXED memory_order_relaxed

/* One set of counters. Counters written only under the GIL (or by their
   owning thread) are updated with relaxed load + store, which compiles to
   plain moves; counters written without the GIL use atomic read-modify-write. */
typedef struct {
    _Atomic uint64_t alloc_bytes;
    _Atomic uint64_t alloc_count;
    _Atomic uint64_t freed_bytes;
    _Atomic uint64_t freed_count;
    _Atomic int64_t live_bytes;
    _Atomic int64_t live_count;
} oa_ctr;

static inline void oa_ctr_alloc_plain(oa_ctr *c, uint64_t size)
{
    atomic_store_explicit(&c->alloc_bytes, atomic_load_explicit(&c->alloc_bytes, OA_RELAXED) + size, OA_RELAXED);
    atomic_store_explicit(&c->alloc_count, atomic_load_explicit(&c->alloc_count, OA_RELAXED) + 1, OA_RELAXED);
}
static inline void oa_ctr_alloc_atomic(oa_ctr *c, uint64_t size)
{
    atomic_fetch_add_explicit(&c->alloc_bytes, size, OA_RELAXED);
    atomic_fetch_add_explicit(&c->alloc_count, 1, OA_RELAXED);
}
static inline void oa_ctr_live_plain(oa_ctr *c, int64_t bytes, int64_t count)
{
    atomic_store_explicit(&c->live_bytes, atomic_load_explicit(&c->live_bytes, OA_RELAXED) + bytes, OA_RELAXED);
    atomic_store_explicit(&c->live_count, atomic_load_explicit(&c->live_count, OA_RELAXED) + count, OA_RELAXED);
}
static inline void oa_ctr_live_atomic(oa_ctr *c, int64_t bytes, int64_t count)
{
    atomic_fetch_add_explicit(&c->live_bytes, bytes, OA_RELAXED);
    atomic_fetch_add_explicit(&c->live_count, count, OA_RELAXED);
}
static inline void oa_ctr_free_plain(oa_ctr *c, uint64_t size)
{
    atomic_store_explicit(&c->freed_bytes, atomic_load_explicit(&c->freed_bytes, OA_RELAXED) + size, OA_RELAXED);
    atomic_store_explicit(&c->freed_count, atomic_load_explicit(&c->freed_count, OA_RELAXED) + 1, OA_RELAXED);
}
static inline void oa_ctr_free_atomic(oa_ctr *c, uint64_t size)
{
    atomic_fetch_add_explicit(&c->freed_bytes, size, OA_RELAXED);
    atomic_fetch_add_explicit(&c->freed_count, 1, OA_RELAXED);
}
static inline void oa_ctr_zero(oa_ctr *c)
{
    atomic_store_explicit(&c->alloc_bytes, 0, OA_RELAXED);
    atomic_store_explicit(&c->alloc_count, 0, OA_RELAXED);
    atomic_store_explicit(&c->freed_bytes, 0, OA_RELAXED);
    atomic_store_explicit(&c->freed_count, 0, OA_RELAXED);
    atomic_store_explicit(&c->live_bytes, 0, OA_RELAXED);
    atomic_store_explicit(&c->live_count, 0, OA_RELAXED);
}
/* out += c */
static inline void oa_ctr_sum(const oa_ctr *c, oa_stats *out)
{
    out->alloc_bytes += atomic_load_explicit(&c->alloc_bytes, OA_RELAXED);
    out->alloc_count += atomic_load_explicit(&c->alloc_count, OA_RELAXED);
    out->freed_bytes += atomic_load_explicit(&c->freed_bytes, OA_RELAXED);
    out->freed_count += atomic_load_explicit(&c->freed_count, OA_RELAXED);
    out->live_bytes += atomic_load_explicit(&c->live_bytes, OA_RELAXED);
    out->live_count += atomic_load_explicit(&c->live_count, OA_RELAXED);
}

static inline void oa_peak_update(_Atomic int64_t *peak, int64_t cur)
{
    int64_t p = atomic_load_explicit(peak, OA_RELAXED);
    while (cur > p && !atomic_compare_exchange_weak_explicit(peak, &p, cur, OA_RELAXED, OA_RELAXED)) {
    }
}

/* Spinlock for short critical sections reachable from RAW hooks (no GIL,
   possibly no thread state): never sleeps on a kernel object we could be
   forked in the middle of, and is reset in the child after fork. */
typedef struct {
    atomic_flag flag;
} oa_spin;

void oa_spin_lock(oa_spin *s);
static inline void oa_spin_unlock(oa_spin *s)
{
    atomic_flag_clear_explicit(&s->flag, memory_order_release);
}

#endif
