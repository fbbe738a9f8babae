/*
 * One set of allocation counters (bytes and blocks allocated and live) and
 * the two ways to update it: a plain add (no lock prefix) for counters
 * written only under the GIL or by their owning thread,
 * and atomic read-modify-write for counters RAW hooks update without the
 * GIL.
 *
 * Freed figures are not counted: in live mode every counted allocation
 * enters the live table and leaves it only when freed, so what was freed is
 * what was allocated less what is live (less what the table could not hold,
 * counted apart). A free then updates two counters per set instead of four.
 */
#ifndef OA_COUNTERS_H
#define OA_COUNTERS_H

#include <stdatomic.h>
#include <stdint.h>

#include "../api/tracker_api.h"

#pragma GCC visibility push(hidden)

#define OA_RELAXED memory_order_relaxed

/* RAW and native allocations and frees made by a thread that holds the
   main interpreter's GIL (most of them: NumPy's array data, an extension
   called from Python, the OTLP encoder of the span processor's worker) are
   accounted as these two domains, internal to the tracker, their domain's
   twins. They are written under the GIL, so with plain adds, as MEM/OBJ
   figures are, and their group needs no pin (every group operation holds
   the GIL; core/hooks.h has the predicates):
    - in the group, their figures go to its MEM/OBJ set, and the native
      twin's bytes also to a counter of their own (groups.h): a group
      reports its figures for all domains together but for native bytes,
      and the peak under the GIL reads three sets, not five;
    - in the process, their allocated figures are a set of their own; their
      live figures stay in the domain's set, atomic, since the process
      reports live figures per domain and the MEM/OBJ hooks read every
      domain's for the peak.
   What they share with their domain's hooks without the GIL, the table, its
   lock and the slot's tag counter, stays locked and atomic. Readers sum the
   sets: freed figures, allocated less live, come out right in the sum even
   where one set holds a block's allocation and another its live figures.
   Never seen outside the tracker: samples and events name the public domain
   (oa_public_domain). Accounted as their domain, each of these took about
   ten locked read-modify-writes (counters, peaks, the pin); in perf on the
   suite's service they were most of what native mode cost over live mode. */
#define OA_DOMAIN_NATIVE_GIL 4
#define OA_DOMAIN_RAW_GIL 5
/* Counter sets: one per domain and twin. */
#define OA_COUNTER_SETS 6

static inline int oa_public_domain(int domain)
{
    return domain == OA_DOMAIN_NATIVE_GIL ? OA_DOMAIN_NATIVE
           : domain == OA_DOMAIN_RAW_GIL  ? OA_DOMAIN_RAW
                                          : domain;
}

/* What a mode keeps of the blocks it counts, and so how its counters read:
   nothing (counts mode: allocated figures only), every block in the live
   tables (live mode: live, freed and peaks exact), or a Poisson sample of
   them standing for the rest (estimate mode: live bytes estimated). */
#define OA_LIVE_NONE 0
#define OA_LIVE_EXACT 1
#define OA_LIVE_SAMPLED 2

typedef struct {
    _Atomic uint64_t alloc_bytes;
    _Atomic uint64_t alloc_count;
    _Atomic int64_t live_bytes;
    _Atomic int64_t live_count;
    /* Live mode: allocations counted above that the live table could not
       hold (tracking failures), so never live and never seen freed. */
    _Atomic uint64_t unheld_bytes;
    _Atomic uint64_t unheld_count;
} oa_ctr;

/* Counters written by one writer at a time (the GIL holder, or the thread
   that owns them) and read by any thread with relaxed loads: no lock
   prefix. As a relaxed load and store, C makes that three instructions per
   counter (GCC does not merge atomic accesses); on x86-64 one add to
   memory does the same with one, and an aligned 8-byte store is seen whole
   by a reader either way. An allocation updates up to seven counters, so
   this is a sixth of the counting hook (callgrind). Under ThreadSanitizer,
   which does not see inside asm, and on other processors the C form is
   kept. */
#if defined(__x86_64__) && !defined(__SANITIZE_THREAD__)
#define OA_PLAIN_ADD_ASM 1
#else
#define OA_PLAIN_ADD_ASM 0
#endif

static inline void plain_inc(_Atomic uint64_t *c, uint64_t by)
{
#if OA_PLAIN_ADD_ASM
    __asm__ __volatile__("addq %1, %0" : "+m"(*(uint64_t *)c) : "er"(by));
#else
    atomic_store_explicit(c, atomic_load_explicit(c, OA_RELAXED) + by, OA_RELAXED);
#endif
}
static inline void plain_add_signed(_Atomic int64_t *c, int64_t by)
{
#if OA_PLAIN_ADD_ASM
    __asm__ __volatile__("addq %1, %0" : "+m"(*(int64_t *)c) : "er"(by));
#else
    atomic_store_explicit(c, atomic_load_explicit(c, OA_RELAXED) + by, OA_RELAXED);
#endif
}

static inline void oa_ctr_alloc_plain(oa_ctr *c, uint64_t size)
{
    plain_inc(&c->alloc_bytes, size);
    plain_inc(&c->alloc_count, 1);
}
static inline void oa_ctr_alloc_atomic(oa_ctr *c, uint64_t size)
{
    atomic_fetch_add_explicit(&c->alloc_bytes, size, OA_RELAXED);
    atomic_fetch_add_explicit(&c->alloc_count, 1, OA_RELAXED);
}
static inline void oa_ctr_live_plain(oa_ctr *c, int64_t bytes, int64_t count)
{
    plain_add_signed(&c->live_bytes, bytes);
    plain_add_signed(&c->live_count, count);
}
static inline void oa_ctr_live_atomic(oa_ctr *c, int64_t bytes, int64_t count)
{
    atomic_fetch_add_explicit(&c->live_bytes, bytes, OA_RELAXED);
    atomic_fetch_add_explicit(&c->live_count, count, OA_RELAXED);
}
/* An allocation already counted that the live table could not hold (rare:
   out of memory for the table). */
static inline void oa_ctr_unheld(oa_ctr *c, uint64_t size)
{
    atomic_fetch_add_explicit(&c->unheld_bytes, size, OA_RELAXED);
    atomic_fetch_add_explicit(&c->unheld_count, 1, OA_RELAXED);
}
static inline void oa_ctr_zero(oa_ctr *c)
{
    atomic_store_explicit(&c->alloc_bytes, 0, OA_RELAXED);
    atomic_store_explicit(&c->alloc_count, 0, OA_RELAXED);
    atomic_store_explicit(&c->live_bytes, 0, OA_RELAXED);
    atomic_store_explicit(&c->live_count, 0, OA_RELAXED);
    atomic_store_explicit(&c->unheld_bytes, 0, OA_RELAXED);
    atomic_store_explicit(&c->unheld_count, 0, OA_RELAXED);
}
/* out += c. `live`: how the counters were kept (an OA_LIVE_* kind). In
   live mode freed is allocated less live less unheld; in counts mode
   nothing is freed or live; in estimate mode live bytes are the estimate
   and the rest stays 0 (sampled blocks are not blocks of the program, and
   allocated less an estimate is no count of what was freed). Read while
   RAW or native hooks run on other threads, an allocation counted but not
   yet entered as live
   shows as freed for that moment, as a byte count updated before its block
   count always could. */
static inline void oa_ctr_sum(const oa_ctr *c, int live, oa_stats *out)
{
    uint64_t alloc_bytes = atomic_load_explicit(&c->alloc_bytes, OA_RELAXED);
    uint64_t alloc_count = atomic_load_explicit(&c->alloc_count, OA_RELAXED);
    out->alloc_bytes += alloc_bytes;
    out->alloc_count += alloc_count;
    if (live == OA_LIVE_NONE)
        return;
    int64_t live_bytes = atomic_load_explicit(&c->live_bytes, OA_RELAXED);
    out->live_bytes += live_bytes;
    if (live != OA_LIVE_EXACT)
        return;
    int64_t live_count = atomic_load_explicit(&c->live_count, OA_RELAXED);
    out->live_count += live_count;
    out->freed_bytes += alloc_bytes - (uint64_t)live_bytes -
                        atomic_load_explicit(&c->unheld_bytes, OA_RELAXED);
    out->freed_count += alloc_count - (uint64_t)live_count -
                        atomic_load_explicit(&c->unheld_count, OA_RELAXED);
}

/* The bytes allocated by native code, from the process's two native sets
   (without the GIL and under it, OA_DOMAIN_NATIVE_GIL). */
static inline uint64_t oa_ctr_native_bytes(const oa_ctr *native, const oa_ctr *native_gil)
{
    return atomic_load_explicit(&native->alloc_bytes, OA_RELAXED) +
           atomic_load_explicit(&native_gil->alloc_bytes, OA_RELAXED);
}

/* Raise *peak to cur if cur is higher, for a peak that one writer at a
   time updates (under the GIL, or a thread's own record): a load and a
   store. The compare-and-swap of
   oa_peak_update drains the store buffer; in a span that keeps growing
   nearly every allocation sets a new peak, and perf on the suite's service
   put 29 % of the MEM/OBJ live alloc hook's samples on that one instruction. */
static inline void oa_peak_update_plain(_Atomic int64_t *peak, int64_t cur)
{
    if (cur > atomic_load_explicit(peak, OA_RELAXED))
        atomic_store_explicit(peak, cur, OA_RELAXED);
}

/* A peak kept as two high-water marks (one raised under the GIL with
   oa_peak_update_plain, one by any thread with oa_peak_update): the higher. */
static inline int64_t oa_peak_higher(_Atomic int64_t *a, _Atomic int64_t *b)
{
    int64_t x = atomic_load_explicit(a, OA_RELAXED), y = atomic_load_explicit(b, OA_RELAXED);
    return x > y ? x : y;
}

/* Raise *peak to cur if cur is higher (any number of writers). */
static inline void oa_peak_update(_Atomic int64_t *peak, int64_t cur)
{
    int64_t p = atomic_load_explicit(peak, OA_RELAXED);
    while (cur > p && !atomic_compare_exchange_weak_explicit(peak, &p, cur, OA_RELAXED, OA_RELAXED)) {
    }
}

#pragma GCC visibility pop

#endif
