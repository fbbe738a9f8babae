/*
 * The generic accounting behind every hook: RAW and native allocations
 * (any thread, with or without the GIL), the MEM/OBJ path when a thread's
 * attribution cache does not answer, frees and reallocs. The MEM/OBJ fast
 * path is in hooks.c; what each allocation updates is in account.h.
 */
#include "account.h"

void oa_charge_rest(int domain, void *ptr, size_t size, oa_group *groups, oa_group *g,
                    uint64_t gid, int live, uint64_t threshold, oa_thread *rec)
{
    int sampled = tls.sample_left <= 0 && oa_sample_tick_slow(size);
    int tracked = live == OA_LIVE_EXACT &&
                  track_live(domain, ptr, size, groups, g, group_meta_hi(groups, g),
                             group_tag(groups, g, shared_table(domain)), sampled, rec);
    if (live == OA_LIVE_SAMPLED && tls.est_left <= 0) {
        uint64_t weight = oa_estimate_tick_slow(size);
        if (weight != 0)
            (void)oa_track_sampled(domain, ptr, weight, groups, g, rec);
    }
    if (!sampled && size < threshold)
        return;
    /* A group named by a sample or an event is remembered for a while after
       its span ends, so the watch thread can still name that span. */
    atomic_store_explicit(&g->noted, 1, OA_RELAXED);
    if (sampled)
        oa_sample_alloc(oa_public_domain(domain), ptr, size, gid,
                        atomic_load_explicit(&g_sample_mean, OA_RELAXED), tracked);
    if (size >= threshold)
        push_event(oa_public_domain(domain), size, gid);
}

int oa_track_sampled(int domain, void *ptr, uint64_t weight, oa_group *groups, oa_group *g,
                     oa_thread *rec)
{
    uint64_t meta = group_meta_hi(groups, g) | oa_meta_pack(weight, 0, 0, 0);
    uint64_t old_size = 0, old_meta = 0;
    int r = put_block(domain, ptr, weight, meta, group_tag(groups, g, shared_table(domain)),
                      &old_size, &old_meta);
    if (r < 0) {
        /* Left out of the estimate: it would never be taken out again. */
        atomic_fetch_add_explicit(&g_tracking_failures, 1, OA_RELAXED);
        return 0;
    }
    if (r == 1) /* a sampled block whose free was never seen */
        charge_free(groups, domain, old_size, old_meta, rec);
    add_live(g, domain, (int64_t)weight);
    if (rec != NULL)
        oa_ctr_live_plain(&rec->c, (int64_t)weight, 1);
    return 1;
}

void oa_gil_alloc_slow(int domain, void *ptr, size_t size)
{
    if (tls.probing)
        tls.probe_hits |= 1 << domain;
    /* The epoch before the state it vouches for (released after each
       change): a change made after this load bumps it past this value. */
    uint64_t epoch = atomic_load_explicit(&g_attr_epoch, memory_order_acquire);
    int mode = atomic_load_explicit(&g_mode, memory_order_acquire);
    if (mode == OA_MODE_NONE)
        return; /* a pass-through left in the chain under another tool */
    PyThreadState *ts = OA_TSTATE();
    tls.in_subinterp = ts != NULL && oa_ts_interp(ts) != g_main_interp;
    if (tls.in_subinterp) {
        /* Never cached: back in the main interpreter the thread must
           resolve again (and clear in_subinterp, which RAW hooks read). */
        tls.attr_epoch = 0;
        if (atomic_load_explicit(&g_enabled, OA_RELAXED))
            count_subinterp(size);
        return;
    }
    oa_group *groups = NULL, *g = NULL;
    uint64_t gid = tls.gid;
    int cacheable = ts != NULL && !tls.probing && !tls.resolve_hold;
    if (atomic_load_explicit(&g_enabled, OA_RELAXED)) {
        gid = resolve_gid(ts);
        groups = group_table();
        int pinned;
        g = group_for_alloc(groups, gid, 0, &pinned);
        /* An id that no longer names an open group is charged to group 0
           and counted stale on every allocation: not cached. */
        if (g == &groups[0] && (gid & OA_SLOT_MASK) != 0)
            cacheable = 0;
        oa_sample_refresh();
        oa_estimate_refresh();
        /* The cached path takes the record for granted (cached_rec): a
           thread without one (the registry full) resolves in full. */
        if (thread_record() == NULL)
            cacheable = 0;
    }
    uint64_t threshold = event_threshold();
    int live = oa_live_kind(mode);
    /* Live mode: g's table-entry bits, for this charge and the cache
       (estimate mode's rare sampled block looks them up itself). A MEM/OBJ
       entry takes no tag when it goes in (groups.h). */
    uint64_t meta_hi = live == OA_LIVE_EXACT && g != NULL ? group_meta_hi(groups, g) : 0;
    if (cacheable) {
        tls.ctx_ts = ts;
        tls.ctx_ver = oa_ts_context_ver(ts);
        tls.ctx_tsid = oa_ts_id(ts);
        tls.attr_group = g;
        tls.attr_threshold = threshold;
        tls.attr_fast_below = threshold < OA_SIZE_BIG ? threshold : OA_SIZE_BIG;
        tls.attr_meta_hi = meta_hi;
        tls.attr_epoch = epoch + (uint64_t)live;
    } else {
        tls.attr_epoch = 0;
    }
    if (g != NULL)
        charge_alloc(domain, ptr, size, groups, g, gid, live, meta_hi, NULL, threshold, tls.rec);
}

/* The calling thread's state when it holds the main interpreter's GIL,
   else NULL. */
static inline PyThreadState *main_gil_tstate(void)
{
    PyThreadState *ts = oa_gil_tstate();
    return ts != NULL && oa_ts_interp(ts) == g_main_interp ? ts : NULL;
}

/* The domain an allocation or free of `domain` is accounted as: for RAW
   and native, their twin when the calling thread holds the main
   interpreter's GIL (accounting/counters.h). */
static inline int accounted_domain(int domain)
{
    if (!gil_free(domain))
        return domain;
    return main_gil_tstate() != NULL ? gil_twin(domain) : domain;
}

/* RAW and native allocations (and their twins): the group is the one this
   thread's MEM/OBJ hooks last resolved, pinned while it is charged unless
   the thread holds the GIL (a twin). */
static inline __attribute__((always_inline)) void shared_alloc(int domain, void *ptr,
                                                               size_t size)
{
    /* accounted_domain has checked the interpreter of a twin. */
    if (gil_free(domain) && in_subinterpreter(domain)) {
        count_subinterp(size);
        return;
    }
    uint64_t gid = tls.gid;
    oa_group *groups = group_table();
    int pinned;
    oa_group *g = group_for_alloc(groups, gid, gil_free(domain), &pinned);
    oa_sample_refresh();
    oa_estimate_refresh();
    int live = oa_live_kind(atomic_load_explicit(&g_mode, OA_RELAXED));
    int exact = live == OA_LIVE_EXACT;
    charge_alloc(domain, ptr, size, groups, g, gid, live, exact ? group_meta_hi(groups, g) : 0,
                 exact ? group_tag(groups, g, 1) : NULL, event_threshold(), thread_record());
    if (pinned)
        unpin_group(g);
}

/* shared_alloc for a run-time domain: one copy for the twins, whose
   counters are plain, and one for the domains whose counters are atomic. */
static __attribute__((noinline)) void shared_alloc_twin(int domain, void *ptr, size_t size)
{
    if (domain == OA_DOMAIN_RAW_GIL)
        shared_alloc(OA_DOMAIN_RAW_GIL, ptr, size);
    else
        shared_alloc(OA_DOMAIN_NATIVE_GIL, ptr, size);
}
static __attribute__((noinline)) void shared_alloc_any(int domain, void *ptr, size_t size)
{
    shared_alloc(domain, ptr, size);
}
static inline void shared_alloc_call(int domain, void *ptr, size_t size)
{
    if (gil_free(domain))
        shared_alloc_any(domain, ptr, size);
    else
        shared_alloc_twin(domain, ptr, size);
}

/* A twin's allocation (thread state ts, holding the main interpreter's
   GIL) in counts mode when the thread's attribution cache answers, as a
   MEM/OBJ allocation is charged from it: 1 when done. The cache's group is
   the one shared_alloc would find for tls.gid (its epoch is bumped when
   that group closes), and the GIL guards the group table and the twin's
   plain counters. Live mode's twin goes the general way: its table entry
   takes the group's tag. The general way ran some 150 instructions a RAW
   allocation and 11 code lines of its own (callgrind, the suite's spans
   loop: about 4.4 RAW allocations a span, the SDK's locks). Checked here,
   before the call of shared_alloc_twin, not inside it, where realloc's
   twins would take it too: behind that call's prologue the path saved
   124 instructions a span instead of 349. */
static inline __attribute__((always_inline)) int twin_alloc_cached(int twin, PyThreadState *ts,
                                                                   void *ptr, size_t size)
{
    if (!attr_current(ts, OA_LIVE_NONE))
        return 0;
    oa_group *g = tls.attr_group;
    if (g != NULL)
        charge_alloc(twin, ptr, size, NULL, g, tls.gid, OA_LIVE_NONE, 0, NULL,
                     tls.attr_threshold, cached_rec());
    return 1;
}

void oa_track_alloc(int domain, void *ptr, size_t size)
{
    if (!shared_table(domain)) {
        gil_alloc(domain, ptr, size, 0);
        return;
    }
    PyThreadState *ts = main_gil_tstate();
    if (ts == NULL) {
        shared_alloc_any(domain, ptr, size);
        return;
    }
    if (domain == OA_DOMAIN_RAW ? twin_alloc_cached(OA_DOMAIN_RAW_GIL, ts, ptr, size)
                                : twin_alloc_cached(OA_DOMAIN_NATIVE_GIL, ts, ptr, size))
        return;
    shared_alloc_twin(gil_twin(domain), ptr, size);
}

void oa_track_free(int domain, void *ptr)
{
    int exact = atomic_load_explicit(&g_mode, OA_RELAXED) == OA_MODE_LIVE;
    switch (accounted_domain(domain)) {
    case OA_DOMAIN_RAW_GIL:
        track_free_block(OA_DOMAIN_RAW_GIL, ptr, exact);
        break;
    case OA_DOMAIN_NATIVE_GIL:
        track_free_block(OA_DOMAIN_NATIVE_GIL, ptr, exact);
        break;
    default:
        track_free_block(domain, ptr, exact);
    }
}

/* A realloc that failed: the old block, already out of its table, lives on
   and goes back in. Out of line: it is rare, and inlined its put made
   every realloc copy larger. */
static __attribute__((noinline)) void keep_unmoved_block(int domain, void *ptr, uint64_t size,
                                                         uint64_t meta)
{
    uint64_t unused_size, unused_meta;
    /* Its tag was never taken down (pop_block): none to add. */
    if (put_block(domain, ptr, size, meta, NULL, &unused_size, &unused_meta) < 0) {
        atomic_fetch_add_explicit(&g_tracking_failures, 1, OA_RELAXED);
        tag_slot(group_table(), meta, -1, shared_table(domain));
    }
}

/* A live-mode MEM/OBJ block a realloc returned that live_alloc_fast left:
   charged in full. */
static __attribute__((noinline)) void live_realloc_rest(int domain, void *p, size_t size)
{
    gil_alloc(domain, p, size, OA_LIVE_EXACT);
}

/* Charge the block a realloc returned (NULL: nothing) unless counting is
   disabled: MEM/OBJ through the fast path compiled for `live` (OA_LIVE_*),
   the mode the realloc was accounted in (the generic oa_track_alloc would
   charge live mode out of line, as "the other mode"); RAW and native as any
   of their allocations. */
static inline __attribute__((always_inline)) void charge_realloc_result(int domain, void *p,
                                                                        size_t size, int live)
{
    if (p == NULL || !atomic_load_explicit(&g_enabled, memory_order_relaxed))
        return;
    if (shared_table(domain))
        shared_alloc_call(domain, p, size);
    else if (live == OA_LIVE_EXACT) {
        /* As the allocation hooks do: the inline common case, the rest
           out of line. */
        if (__builtin_expect(!live_alloc_fast(domain, p, size), 0))
            live_realloc_rest(domain, p, size);
    } else if (live == OA_LIVE_SAMPLED)
        gil_alloc(domain, p, size, OA_LIVE_SAMPLED);
    else
        gil_alloc(domain, p, size, OA_LIVE_NONE);
}

/* The realloc accounting for the mode kind `live` (OA_LIVE_*, read once by
   the caller), inlined for a constant domain and kind in the copies below:
   a realloc in live mode did a free's and an allocation's work through the
   generic paths (the domain tested at run time, the allocation charged out
   of line as "the other mode"), about twice what a malloc costs. */
static inline __attribute__((always_inline)) void *track_realloc(int domain, oa_realloc_fn fn,
                                                                 void *ctx, void *ptr,
                                                                 size_t size, int live)
{
    if (live && ptr != NULL && in_subinterpreter(domain)) {
        /* Checked before the live table is touched (a subinterpreter's MEM/OBJ
           hooks run under its own GIL). A RAW or native block the main
           interpreter tracked would keep a stale entry: such reallocs from a
           subinterpreter still drop the old block. */
        if (shared_table(domain))
            oa_track_free(domain, ptr);
        count_subinterp(size);
        return fn(ctx, ptr, size);
    }
    /* Without an old block to forget (realloc(NULL, n), as a list's first
       append does, is an allocation), or outside the live modes, only the
       result is charged. One call site of charge_realloc_result: each
       inlines the live allocation's fast path. */
    int moves = live && ptr != NULL;
    uint64_t osize = 0, ometa = 0;
    int odomain = domain, found = 0;
    if (moves) {
        /* Forget the old block before the call: once realloc returns, its
           address may be handed out again by another thread. */
        found = forget_block(&odomain, ptr, &osize, &ometa, live == OA_LIVE_EXACT);
        if (found && (ometa & OA_SAMPLED_FLAG))
            oa_sample_freed(ptr); /* before the address can be reused */
    }
    void *p = fn(ctx, ptr, size);
    if (moves) {
        /* realloc(ptr, 0) may free ptr and return NULL (glibc does): that
           is no failure. CPython's domains never pass 0. */
        if (__builtin_expect(p == NULL && size != 0, 0)) {
            if (found)
                keep_unmoved_block(odomain, ptr, osize, ometa);
            return NULL;
        }
        if (found)
            charge_free(group_table(), odomain, osize, ometa, thread_record());
    }
    charge_realloc_result(domain, p, size, live);
    return p;
}

void *oa_track_realloc(int domain, oa_realloc_fn fn, void *ctx, void *ptr, size_t size)
{
    int live = oa_live_kind(atomic_load_explicit(&g_mode, OA_RELAXED));
    switch (accounted_domain(domain)) {
    case OA_DOMAIN_RAW_GIL:
        return track_realloc(OA_DOMAIN_RAW_GIL, fn, ctx, ptr, size, live);
    case OA_DOMAIN_NATIVE_GIL:
        return track_realloc(OA_DOMAIN_NATIVE_GIL, fn, ctx, ptr, size, live);
    default:
        return track_realloc(domain, fn, ctx, ptr, size, live);
    }
}

/* The MEM and OBJ reallocs, one copy per domain and mode kind. As one
   function per domain holding all three kinds' inlined work (5.2 KiB), a
   live-mode realloc ran through code spread over the whole of it: callgrind's
   cache simulation on the `request` workload put about 16 instruction-cache
   misses on each MEM realloc and 4 on each OBJ one, where the allocation
   and free hooks stay in the cache. Each copy holds only its kind's path
   (live mode's: 1.8 KiB), and live mode's extra instruction-cache misses on
   `request` fell by a third. */
#define OA_REALLOC_COPIES(name, domain)                                                        \
    static __attribute__((noinline)) void *name##_none(oa_realloc_fn fn, void *ctx, void *ptr, \
                                                       size_t size)                            \
    {                                                                                          \
        return track_realloc(domain, fn, ctx, ptr, size, OA_LIVE_NONE);                        \
    }                                                                                          \
    static __attribute__((noinline)) void *name##_exact(oa_realloc_fn fn, void *ctx,           \
                                                        void *ptr, size_t size)                \
    {                                                                                          \
        return track_realloc(domain, fn, ctx, ptr, size, OA_LIVE_EXACT);                       \
    }                                                                                          \
    static __attribute__((noinline)) void *name##_sampled(oa_realloc_fn fn, void *ctx,         \
                                                          void *ptr, size_t size)              \
    {                                                                                          \
        return track_realloc(domain, fn, ctx, ptr, size, OA_LIVE_SAMPLED);                     \
    }                                                                                          \
    void *name(oa_realloc_fn fn, void *ctx, void *ptr, size_t size)                            \
    {                                                                                          \
        switch (oa_live_kind(atomic_load_explicit(&g_mode, OA_RELAXED))) {                     \
        case OA_LIVE_EXACT:                                                                    \
            return name##_exact(fn, ctx, ptr, size);                                           \
        case OA_LIVE_SAMPLED:                                                                  \
            return name##_sampled(fn, ctx, ptr, size);                                         \
        default:                                                                               \
            return name##_none(fn, ctx, ptr, size);                                            \
        }                                                                                      \
    }

OA_REALLOC_COPIES(oa_track_realloc_mem, OA_DOMAIN_MEM)
OA_REALLOC_COPIES(oa_track_realloc_obj, OA_DOMAIN_OBJ)
