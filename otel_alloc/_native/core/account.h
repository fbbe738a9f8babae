/*
 * What one tracked allocation or free updates: the counters of its group,
 * of its domain and of its thread, the live table and the peaks in live
 * mode, the sampler and the large-allocation events. Inline, so the MEM/OBJ
 * fast path (hooks.c) and the generic path (track.c) share one definition,
 * each compiled for a constant domain where the caller has one.
 */
#ifndef OA_ACCOUNT_H
#define OA_ACCOUNT_H

#include "../accounting/events.h"
#include "../accounting/groups.h"
#include "../accounting/process_stats.h"
#include "../accounting/threads.h"
#include "../native/native_hooks.h"
#include "../sampler/estimate.h"
#include "../sampler/sampler.h"
#include "attribution.h"
#include "hooks.h"

#pragma GCC visibility push(hidden)

/* Whether the calling thread runs another interpreter than the main one.
   Allocations there pass through untracked and are counted
   (counters().subinterpreter_allocs): an isolated subinterpreter has its own
   GIL, so its MEM/OBJ hooks run concurrently with the main interpreter's,
   and the MEM/OBJ table, group counters and attribution variable are the
   main interpreter's, guarded by its GIL. RAW hooks are thread-safe, but
   their attribution (the thread's last group) would be the main
   interpreter's span. */
static inline int in_subinterpreter(int domain)
{
    if (gil_free(domain) && !OA_TSTATE_WITHOUT_GIL)
        return tls.in_subinterp;
    PyThreadState *ts = OA_TSTATE();
    return ts != NULL && oa_ts_interp(ts) != g_main_interp;
}

static inline void count_subinterp(size_t size)
{
    atomic_fetch_add_explicit(&g_subinterp_allocs, 1, OA_RELAXED);
    atomic_fetch_add_explicit(&g_subinterp_bytes, size, OA_RELAXED);
}

static inline void table_lock(int domain)
{
    oa_spin *lock = lock_of(domain);
    if (lock != NULL)
        oa_spin_lock(lock);
}
static inline void table_unlock(int domain)
{
    oa_spin *lock = lock_of(domain);
    if (lock != NULL)
        oa_spin_unlock(lock);
}

/* Add to the live figures of `domain` in the process's counters: a twin's
   (accounting/counters.h) in its domain's set, atomically, as every
   hook of that domain without the GIL does; MEM/OBJ's plain. */
static inline __attribute__((always_inline)) void proc_live_add(int domain, int64_t bytes,
                                                                int64_t count)
{
    if (shared_table(domain))
        oa_ctr_live_atomic(&g_proc[oa_public_domain(domain)], bytes, count);
    else
        oa_ctr_live_plain(&g_proc[domain], bytes, count);
}

/* A freed (or replaced) block of `size` bytes whose table entry is `meta`,
   out of its table: its slot's tag counter goes down (pop_block left it;
   for a MEM/OBJ entry only once its group is released), and it is
   charged to the group that allocated it, its domain and this thread (rec:
   thread_record(), may be NULL). Calls nothing on the GIL path, where the
   live MEM/OBJ free hook inlines it. */
static inline __attribute__((always_inline)) void charge_free(oa_group *groups, int domain,
                                                               uint64_t size, uint64_t meta,
                                                               oa_thread *rec)
{
    int raw = gil_free(domain), shared = shared_table(domain), pinned;
    oa_group *g = group_for_free(groups, meta, raw, &pinned);
    /* A MEM/OBJ entry is tagged only once its group is released (groups.h:
       tagged_mem_obj), which is when group_for_free finds no group. */
    if (shared || g == NULL)
        tag_slot(groups, meta, -1, shared);
    if (raw) {
        if (g != NULL) {
            oa_ctr_live_atomic(group_ctr(g, domain), -(int64_t)size, -1);
            if (pinned)
                unpin_group(g);
        } else {
            atomic_fetch_add_explicit(&g_released_free_bytes, size, OA_RELAXED);
        }
    } else {
        if (g != NULL) {
            oa_ctr_live_plain(group_ctr(g, domain), -(int64_t)size, -1);
        } else {
            plain_inc(&g_released_free_bytes_gil, size);
        }
    }
    proc_live_add(domain, -(int64_t)size, -1);
    if (rec != NULL)
        oa_ctr_live_plain(&rec->c, -(int64_t)size, -1);
}

/* Add a block of `bytes` (or the bytes a sampled block stands for) to the
   live figures of group g and of its domain. */
static inline __attribute__((always_inline)) void add_live(oa_group *g, int domain, int64_t bytes)
{
    if (gil_free(domain))
        oa_ctr_live_atomic(group_ctr(g, domain), bytes, 1);
    else
        oa_ctr_live_plain(group_ctr(g, domain), bytes, 1);
    proc_live_add(domain, bytes, 1);
}

/* Live mode: a block of `size` bytes of group g is in its table. It adds
   to the live figures and raises the peaks of g, of its domain and of the
   thread (rec, may be NULL). */
static inline __attribute__((always_inline)) void count_live(oa_group *g, int domain,
                                                              size_t size, oa_thread *rec)
{
    add_live(g, domain, (int64_t)size);
    if (gil_free(domain)) {
        oa_peak_update(&g->peak, group_live(g));
        oa_peak_update(&g_proc_peak, proc_live());
    } else {
        oa_peak_update_plain(&g->peak_gil, group_live(g));
        oa_peak_update_plain(&g_proc_peak_gil, proc_live());
    }
    if (rec != NULL) {
        oa_ctr_live_plain(&rec->c, (int64_t)size, 1);
        /* The thread's record: written by this thread alone. */
        oa_peak_update_plain(&rec->peak, atomic_load_explicit(&rec->c.live_bytes, OA_RELAXED));
    }
}

/* The allocated figures of a block of `size` bytes: its group's counters
   gc, its domain's, and its thread's (rec, may be NULL). */
static inline __attribute__((always_inline)) void count_alloc(oa_ctr *gc, int domain, size_t size,
                                                               oa_thread *rec)
{
    if (gil_free(domain)) {
        oa_ctr_alloc_atomic(gc, size);
        oa_ctr_alloc_atomic(&g_proc[domain], size);
    } else {
        oa_ctr_alloc_plain(gc, size);
        oa_ctr_alloc_plain(&g_proc[domain], size);
    }
    if (rec != NULL)
        oa_ctr_alloc_plain(&rec->c, size);
}

/* Enter ptr in `domain`'s live table with its size and meta, adding one to
   its slot's tag counter `tag` (slot_tag, may be NULL): oa_ptable_put's
   result (1 with the entry it replaced, 0 new, -1 not stored). */
static inline __attribute__((always_inline)) int put_block(int domain, void *ptr, uint64_t size,
                                                           uint64_t meta, _Atomic int64_t *tag,
                                                           uint64_t *old_size, uint64_t *old_meta)
{
    oa_ptable *t = table_of(domain);
    int r = -1;
    table_lock(domain);
    if (t->slots != NULL)
        r = oa_ptable_put(t, (uintptr_t)ptr, size, meta, old_size, old_meta);
    table_unlock(domain);
    if (r >= 0)
        tag_add(tag, 1, shared_table(domain));
    return r;
}

/* Remove ptr from `domain`'s live table: 1 with its size and meta when it
   was there. Its slot's tag counter still counts it until charge_free (or
   for good, when put back): counting an entry too long only ever parks a
   slot for longer. */
static inline __attribute__((always_inline)) int pop_block(int domain, void *ptr, uint64_t *size,
                                                           uint64_t *meta)
{
    oa_ptable *t = table_of(domain);
    int found = 0;
    table_lock(domain);
    if (t->slots != NULL)
        found = oa_ptable_pop(t, (uintptr_t)ptr, size, meta);
    table_unlock(domain);
    return found;
}

/* Remove ptr from the live table; 1 with its size and meta when tracked,
   *domain then being the domain that allocated it. RAW and native blocks
   both come from libc's malloc, and a block allocated through one may be
   freed through the other (an extension freeing with free() what
   PyMem_RawMalloc gave it): a miss in one table looks in the other before
   it counts as untracked. For MEM/OBJ (a constant domain) that part folds
   away. `exact`: live mode, where every block since install is in the
   tables and a miss is counted (in estimate mode most frees miss). */
static inline __attribute__((always_inline)) int forget_block(int *domain, void *ptr,
                                                              uint64_t *size, uint64_t *meta,
                                                              int exact)
{
    if (pop_block(*domain, ptr, size, meta))
        return 1;
    if (!shared_table(*domain)) {
        if (exact)
            plain_inc(&g_untracked_mem_obj, 1);
        return 0;
    }
    /* Only in native mode can the other table hold it; pop_block checks that
       table under its lock (an install may be replacing it). */
    int other = raw_table(*domain) ? OA_DOMAIN_NATIVE : OA_DOMAIN_RAW;
    if (atomic_load_explicit(&g_native_on, OA_RELAXED) && pop_block(other, ptr, size, meta)) {
        *domain = other;
        return 1;
    }
    if (exact)
        atomic_fetch_add_explicit(&g_untracked_raw, 1, OA_RELAXED);
    return 0;
}

/* Live and estimate modes: a block freed through `domain` leaves its table
   and is charged to the group that allocated it (in estimate mode, with the
   bytes it stood for). Always inlined, like charge_alloc, so the MEM/OBJ
   free hook gets a copy for its constant domain. */
static inline __attribute__((always_inline)) void track_free_block(int domain, void *ptr,
                                                                   int exact)
{
    uint64_t size = 0, meta = 0;
    if (forget_block(&domain, ptr, &size, &meta, exact)) {
        if (meta & OA_SAMPLED_FLAG)
            oa_sample_freed(ptr);
        charge_free(group_table(), domain, size, meta, thread_record());
    }
}

/* Live mode: enter the block in its domain's table and add it to the live
   figures and peaks. meta_hi is g's group_meta_hi (groups.h), which the
   MEM/OBJ hooks keep in their attribution cache; tag its group_tag (NULL
   for MEM/OBJ, whose entries are tagged at their group's release). 1 when
   it is in the table. `groups` may be NULL for a MEM/OBJ caller (see
   charge_alloc). */
static inline __attribute__((always_inline)) int track_live(int domain, void *ptr, size_t size,
                                                             oa_group *groups, oa_group *g,
                                                             uint64_t meta_hi,
                                                             _Atomic int64_t *tag, int sampled,
                                                             oa_thread *rec)
{
    uint64_t meta = meta_hi | oa_meta_pack(size, 0, 0, sampled);
    uint64_t old_size = 0, old_meta = 0;
    int r = put_block(domain, ptr, size, meta, tag, &old_size, &old_meta);
    if (r < 0) {
        /* Counted as allocated, but its free will never be seen: kept
           apart, so freed (allocated less live, counters.h) stays exact. */
        atomic_fetch_add_explicit(&g_tracking_failures, 1, OA_RELAXED);
        oa_ctr_unheld(group_ctr(g, domain), size);
        oa_ctr_unheld(&g_proc[domain], size);
        if (rec != NULL)
            oa_ctr_unheld(&rec->c, size);
        return 0;
    }
    if (r == 1) {
        /* A block we never saw freed (freed while the hooks were out of the
           chain): its old entry counts as freed now. */
        atomic_fetch_add_explicit(&g_replaced, 1, OA_RELAXED);
        if (old_meta & OA_SAMPLED_FLAG)
            oa_sample_freed(ptr);
        charge_free(groups != NULL ? groups : group_table(), domain, old_size, old_meta, rec);
    }
    count_live(g, domain, size, rec);
    return 1;
}

/* What follows the counters when something more is due: live mode's table
   and peaks, a sample (the countdown crossed zero), a large-allocation
   event (track.c). Out of line, so the common case saves no registers. */
void oa_charge_rest(int domain, void *ptr, size_t size, oa_group *groups, oa_group *g,
                    uint64_t gid, int live, uint64_t threshold, oa_thread *rec);

/* Estimate mode: enter a sampled block in its domain's table standing for
   `weight` bytes, and add those to the live figures (no peaks: the peak of
   an estimate is biased upward). 1 when it is in the table. */
int oa_track_sampled(int domain, void *ptr, uint64_t weight, oa_group *groups, oa_group *g,
                     oa_thread *rec);

/* Charge an allocation of `size` bytes at ptr to group g (id gid) of table
   `groups`: the group's, the domain's and the thread's (rec, may be NULL)
   counters, then in live mode the table (`live`: the mode's OA_LIVE_*
   kind; in estimate mode the table when its countdown crosses zero), then
   sampling and the event threshold (UINT64_MAX: no events). In live mode
   meta_hi and tag are g's group_meta_hi and group_tag (see track_live);
   other modes pass 0 and NULL. The caller holds a RAW pin
   on g where one is needed. A MEM/OBJ caller, which holds the GIL (under
   which alone the group table is replaced), may pass NULL for `groups`: it
   is loaded on the rare paths that use it, and the common one saves the
   load. Always inlined: as a call, saving and restoring registers cost as
   much as the counting itself. */
static inline __attribute__((always_inline)) void charge_alloc(int domain, void *ptr, size_t size,
                                                               oa_group *groups, oa_group *g,
                                                               uint64_t gid, int live,
                                                               uint64_t meta_hi,
                                                               _Atomic int64_t *tag,
                                                               uint64_t threshold, oa_thread *rec)
{
    count_alloc(group_ctr(g, domain), domain, size, rec);
    if (domain == OA_DOMAIN_NATIVE_GIL)
        plain_inc(&g->native_gil_bytes, size);
    /* The sampler's countdown (the decision is made in oa_charge_rest when
       it crosses zero). */
    tls.sample_left -= (int64_t)size;
    int rare = (tls.sample_left <= 0) | (size >= threshold);
    if (live == OA_LIVE_SAMPLED) {
        tls.est_left -= (int64_t)size;
        rare |= tls.est_left <= 0;
    }
    if (live == OA_LIVE_EXACT && !rare)
        track_live(domain, ptr, size, groups, g, meta_hi, tag, 0, rec);
    else if (__builtin_expect(rare, 0))
        oa_charge_rest(domain, ptr, size, groups != NULL ? groups : group_table(), g, gid, live,
                       threshold, rec);
}

/* The effective event threshold: UINT64_MAX when events are off. */
static inline uint64_t event_threshold(void)
{
    uint64_t threshold = atomic_load_explicit(&g_threshold, OA_RELAXED);
    return threshold == 0 ? UINT64_MAX : threshold;
}

/* Whether this thread's attribution cache (tls.h) answers for thread state
   ts in a hook compiled for OA_LIVE_* kind `live`: it was filled in a mode
   of that kind and nothing was bumped since (one compare of the epoch, which
   carries the kind), and ts is the thread state it was filled under (the
   same address and id: thread states are reused) at the same context
   version. Entering or leaving a context (Context.run, an
   asyncio step, a greenlet switch) bumps the version: CPython's own
   ContextVar cache is keyed by the thread state's id and that version
   alone, so whatever swaps a thread's context must bump it. A set of the
   group variable within one context changes neither; it goes through
   oa_set_thread_group, which points the cache at the new group (or drops
   it when the id is not an open group's). The context object is not
   compared: its load and compare were three of the MEM/OBJ hook's some
   sixty instructions. */
static inline int attr_current(PyThreadState *ts, int live)
{
    return tls.attr_epoch ==
               atomic_load_explicit(&g_attr_epoch, memory_order_acquire) + (uint64_t)live &&
           (void *)ts == tls.ctx_ts && oa_ts_context_ver(ts) == tls.ctx_ver &&
           oa_ts_id(ts) == tls.ctx_tsid;
}

/* A MEM/OBJ allocation when the cache does not answer (track.c): resolves
   in full, charges, and fills the cache when the answer may be reused. */
void oa_gil_alloc_slow(int domain, void *ptr, size_t size);

/* The thread's record where the cache answered: the cache is filled only
   for a thread with one (track.c), and thread_exit drops it with the
   record, so the counters' checks for NULL fold away. */
static inline __attribute__((always_inline)) oa_thread *cached_rec(void)
{
    oa_thread *rec = tls.rec;
    if (rec == NULL)
        __builtin_unreachable();
    return rec;
}

/* A MEM/OBJ allocation (the GIL is held): from the cache, which also says
   whether counting is on and in which mode, else the full resolution.
   `fast_live` is a constant, the OA_LIVE_* kind of the mode this copy is
   compiled for: under another mode the cache never answers it (its epoch
   carries the installed mode's kind), so such a copy, kept in the chain
   under another tool, resolves in full on each allocation. Inlining live mode's
   table and peak work into a hook that serves both made every hook save
   registers counts mode does not need (callgrind, core workload: counts
   1.087x -> 1.097x); a call to it from there cost live mode as much
   (1.389x -> 1.412x). So install
   puts in the hooks compiled for its mode (hooks.c), and a hook left in the
   chain from an install in another mode still counts right. */
static inline __attribute__((always_inline)) void gil_alloc(int domain, void *ptr, size_t size,
                                                            int fast_live)
{
    if (__builtin_expect(!attr_current(OA_TSTATE(), fast_live), 0)) {
        oa_gil_alloc_slow(domain, ptr, size);
        return;
    }
    oa_group *g = tls.attr_group;
    if (g == NULL)
        return;
    charge_alloc(domain, ptr, size, NULL, g, tls.gid, fast_live, tls.attr_meta_hi, NULL,
                 tls.attr_threshold, cached_rec());
}

/* Live mode's MEM/OBJ allocation when nothing in it calls out: the cache
   answers in live mode, no sample or event is due, and the table's inline
   put takes the block. 1 when it charged the block (or counting is off), 0
   when it did nothing and gil_alloc must. A hook that hands 0 on to a
   function of its own keeps every call, and the registers the calls would
   make it save, off its common path. */
static inline __attribute__((always_inline)) int live_alloc_fast(int domain, void *ptr,
                                                                  size_t size)
{
    if (__builtin_expect(!attr_current(OA_TSTATE(), OA_LIVE_EXACT), 0))
        return 0;
    oa_group *g = tls.attr_group;
    if (g == NULL)
        return 1;
    /* The sampler's countdown, stored only once the block is charged. One
       compare leaves both an event and a size the packed entry cannot
       hold (attr_fast_below) to the general path, so the entry is the
       size itself, or'ed in, and put need not check it. */
    int64_t left = tls.sample_left - (int64_t)size;
    if (__builtin_expect(left <= 0 || size >= tls.attr_fast_below, 0))
        return 0;
    oa_ptable *t = table_of(domain);
    uint64_t meta = tls.attr_meta_hi | size;
    if (__builtin_expect(t->slots == NULL || !oa_ptable_put_fast(t, (uintptr_t)ptr, meta, 1), 0))
        return 0;
    tls.sample_left = left;
    oa_thread *rec = cached_rec();
    count_alloc(group_ctr(g, domain), domain, size, rec);
    count_live(g, domain, size, rec);
    return 1;
}

#pragma GCC visibility pop

#endif
