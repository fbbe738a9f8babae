/*
 * otel_alloc native tracker: PyMem hooks on the RAW, MEM and OBJ domains that
 * charge every allocation to an allocation group. This file is the hooks'
 * hot path: attribution, accounting and the live tables. The other files are
 * listed in the README's "Architecture" section.
 *
 * Rules this file keeps (see DESIGN.md, "Native tracker"):
 *  - A hook never calls Python code. MEM/OBJ hooks run with the GIL held and
 *    may read the attribution context variable (PyContextVar_Get reads a cache
 *    or a HAMT, allocating nothing); RAW hooks run without the GIL and touch
 *    only thread-local storage, atomics and spinlocked tables.
 *  - Each hook keeps the allocator it wrapped in its ctx and calls it; a
 *    thread-local guard makes a block that pymalloc hands down to RAW count
 *    once, in the domain the caller asked.
 *  - Bookkeeping memory comes from libc, never from a PyMem domain.
 */
#include "hooks.h"

#include "../accounting/events.h"
#include "../accounting/groups.h"
#include "../accounting/process_stats.h"
#include "../accounting/threads.h"
#include "../api/tracker_api.h"
#include "../sampler/sampler.h"
#include "../native/native_hooks.h"
#include "attribution.h"


/* ------------------------------------------------------------------ state */

/* The one definition of the thread-local state (see oa_tls in tls.h).
   It repeats the declaration's initial-exec model: GCC does not carry a
   declaration's tls_model over to a definition without one, and would emit
   general-dynamic (__tls_get_addr) code for this file. */
__thread oa_tls tls __attribute__((tls_model("initial-exec")));

_Atomic int g_mode;
_Atomic int g_enabled;
_Atomic uint64_t g_threshold;

PyInterpreterState *g_main_interp;

oa_ptable g_mem_obj_table; /* MEM/OBJ blocks, guarded by the GIL */
oa_ptable g_raw_table;     /* RAW blocks, guarded by g_raw_lock */
oa_spin g_raw_lock = OA_SPIN_INIT;
oa_ptable g_native_table;  /* native blocks (native/), guarded by g_native_lock */
oa_spin g_native_lock = OA_SPIN_INIT;

/* ------------------------------------------------------ subinterpreters */

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

/* ------------------------------------------------------------ accounting */

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

static void charge_free(oa_group *groups, int domain, uint64_t size, uint64_t meta)
{
    int raw = gil_free(domain), pinned;
    oa_group *g = group_for_free(groups, meta, raw, &pinned);
    if (raw) {
        if (g != NULL) {
            oa_ctr *gc = group_ctr(g, domain);
            oa_ctr_free_atomic(gc, size);
            oa_ctr_live_atomic(gc, -(int64_t)size, -1);
            if (pinned)
                unpin_group(g);
        } else {
            atomic_fetch_add_explicit(&g_released_free_bytes, size, OA_RELAXED);
        }
        oa_ctr_free_atomic(&g_proc[domain], size);
        oa_ctr_live_atomic(&g_proc[domain], -(int64_t)size, -1);
    } else {
        if (g != NULL) {
            oa_ctr_free_plain(&g->mem_obj, size);
            oa_ctr_live_plain(&g->mem_obj, -(int64_t)size, -1);
        } else {
            atomic_fetch_add_explicit(&g_released_free_bytes, size, OA_RELAXED);
        }
        oa_ctr_free_plain(&g_proc[domain], size);
        oa_ctr_live_plain(&g_proc[domain], -(int64_t)size, -1);
    }
    oa_thread *rec = thread_record();
    if (rec != NULL) {
        oa_ctr_free_plain(&rec->c, size);
        oa_ctr_live_plain(&rec->c, -(int64_t)size, -1);
    }
}

void oa_track_alloc(int domain, void *ptr, size_t size)
{
    int raw = gil_free(domain);
    uint64_t gid;
    if (raw) {
        if (in_subinterpreter(domain)) {
            count_subinterp(size);
            return;
        }
        gid = tls.gid;
    } else {
        /* One read of the thread state serves the interpreter check and the
           attribution cache. */
        PyThreadState *ts = OA_TSTATE();
        tls.in_subinterp = ts != NULL && oa_ts_interp(ts) != g_main_interp;
        if (tls.in_subinterp) {
            count_subinterp(size);
            return;
        }
        gid = resolve_gid(ts);
    }
    oa_group *groups = group_table();
    int pinned;
    oa_group *g = group_for_alloc(groups, gid, raw, &pinned);
    oa_ctr *gc = group_ctr(g, domain);
    if (raw) {
        oa_ctr_alloc_atomic(gc, size);
        oa_ctr_alloc_atomic(&g_proc[domain], size);
    } else {
        oa_ctr_alloc_plain(gc, size);
        oa_ctr_alloc_plain(&g_proc[domain], size);
    }
    oa_thread *rec = thread_record();
    if (rec != NULL)
        oa_ctr_alloc_plain(&rec->c, size);
    uint64_t mean = atomic_load_explicit(&g_sample_mean, OA_RELAXED);
    int sampled = mean != 0 && oa_sample_tick(mean, size);
    int tracked = 0;

    if (atomic_load_explicit(&g_mode, OA_RELAXED) == OA_MODE_LIVE) {
        oa_ptable *t = table_of(domain);
        uint64_t meta = oa_meta_pack(size, (uint32_t)(g - groups),
                                     atomic_load_explicit(&g->gen, OA_RELAXED), sampled);
        uint64_t old_size = 0, old_meta = 0;
        int r = -1;
        table_lock(domain);
        if (t->slots != NULL)
            r = oa_ptable_put(t, (uintptr_t)ptr, size, meta, &old_size, &old_meta);
        table_unlock(domain);
        if (r < 0) {
            atomic_fetch_add_explicit(&g_tracking_failures, 1, OA_RELAXED);
        } else {
            tracked = 1;
            tag_slot(groups, meta, 1, raw);
            if (r == 1) {
                atomic_fetch_add_explicit(&g_replaced, 1, OA_RELAXED);
                tag_slot(groups, old_meta, -1, raw);
                if (old_meta & OA_SAMPLED_FLAG)
                    oa_sample_freed(ptr);
                charge_free(groups, domain, old_size, old_meta);
            }
            if (raw) {
                oa_ctr_live_atomic(gc, (int64_t)size, 1);
                oa_ctr_live_atomic(&g_proc[domain], (int64_t)size, 1);
            } else {
                oa_ctr_live_plain(gc, (int64_t)size, 1);
                oa_ctr_live_plain(&g_proc[domain], (int64_t)size, 1);
            }
            oa_peak_update(&g->peak, group_live(g));
            oa_peak_update(&g_proc_peak, proc_live());
            if (rec != NULL) {
                oa_ctr_live_plain(&rec->c, (int64_t)size, 1);
                int64_t net = atomic_load_explicit(&rec->c.live_bytes, OA_RELAXED);
                if (net > atomic_load_explicit(&rec->peak, OA_RELAXED))
                    atomic_store_explicit(&rec->peak, net, OA_RELAXED);
            }
        }
    }

    /* A group named by a sample or an event is remembered for a while after
       its span ends, so the watch thread can still name that span. */
    if (sampled) {
        atomic_store_explicit(&g->noted, 1, OA_RELAXED);
        oa_sample_alloc(domain, ptr, size, gid, mean, tracked);
    }
    uint64_t threshold = atomic_load_explicit(&g_threshold, OA_RELAXED);
    if (threshold != 0 && size >= threshold) {
        atomic_store_explicit(&g->noted, 1, OA_RELAXED);
        push_event(domain, size, gid);
    }
    if (pinned)
        unpin_group(g);
}

static inline int pop_block(int domain, void *ptr, uint64_t *size, uint64_t *meta)
{
    oa_ptable *t = table_of(domain);
    int found = 0;
    table_lock(domain);
    if (t->slots != NULL)
        found = oa_ptable_pop(t, (uintptr_t)ptr, size, meta);
    table_unlock(domain);
    if (found)
        tag_slot(group_table(), *meta, -1, gil_free(domain));
    return found;
}

/* Remove ptr from the live table; 1 with its size and meta when tracked,
   *domain then being the domain that allocated it. RAW and native blocks
   both come from libc's malloc, and a block allocated through one may be
   freed through the other (an extension freeing with free() what
   PyMem_RawMalloc gave it): a miss in one table looks in the other before
   it counts as untracked. */
static int forget_block(int *domain, void *ptr, uint64_t *size, uint64_t *meta)
{
    if (pop_block(*domain, ptr, size, meta))
        return 1;
    if (*domain == OA_DOMAIN_MEM || *domain == OA_DOMAIN_OBJ) {
        plain_inc(&g_untracked_mem_obj, 1);
        return 0;
    }
    /* Only in native mode can the other table hold it; pop_block checks that
       table under its lock (an install may be replacing it). */
    int other = *domain == OA_DOMAIN_RAW ? OA_DOMAIN_NATIVE : OA_DOMAIN_RAW;
    if (atomic_load_explicit(&g_native_on, OA_RELAXED) && pop_block(other, ptr, size, meta)) {
        *domain = other;
        return 1;
    }
    atomic_fetch_add_explicit(&g_untracked_raw, 1, OA_RELAXED);
    return 0;
}

void oa_track_free(int domain, void *ptr)
{
    uint64_t size = 0, meta = 0;
    if (forget_block(&domain, ptr, &size, &meta)) {
        if (meta & OA_SAMPLED_FLAG)
            oa_sample_freed(ptr);
        charge_free(group_table(), domain, size, meta);
    }
}

static void restore_block(int domain, void *ptr, uint64_t size, uint64_t meta)
{
    oa_ptable *t = table_of(domain);
    uint64_t os, om;
    int r = -1;
    table_lock(domain);
    if (t->slots != NULL)
        r = oa_ptable_put(t, (uintptr_t)ptr, size, meta, &os, &om);
    table_unlock(domain);
    if (r >= 0)
        tag_slot(group_table(), meta, 1, gil_free(domain));
}

void *oa_track_realloc(int domain, oa_realloc_fn fn, void *ctx, void *ptr, size_t size)
{
    if (atomic_load_explicit(&g_mode, OA_RELAXED) == OA_MODE_LIVE && ptr != NULL &&
        in_subinterpreter(domain)) {
        /* Checked before the live table is touched (a subinterpreter's MEM/OBJ
           hooks run under its own GIL). A RAW or native block the main
           interpreter tracked would keep a stale entry: such reallocs from a
           subinterpreter still drop the old block. */
        if (gil_free(domain))
            oa_track_free(domain, ptr);
        count_subinterp(size);
        return fn(ctx, ptr, size);
    }
    if (atomic_load_explicit(&g_mode, OA_RELAXED) != OA_MODE_LIVE || ptr == NULL) {
        void *p = fn(ctx, ptr, size);
        if (p != NULL && atomic_load_explicit(&g_enabled, OA_RELAXED))
            oa_track_alloc(domain, p, size);
        return p;
    }
    /* Forget the old block before the call: once realloc returns, its
       address may be handed out again by another thread. */
    uint64_t osize = 0, ometa = 0;
    int odomain = domain;
    int found = forget_block(&odomain, ptr, &osize, &ometa);
    if (found && (ometa & OA_SAMPLED_FLAG))
        oa_sample_freed(ptr); /* before the address can be reused */
    void *p = fn(ctx, ptr, size);
    /* realloc(ptr, 0) may free ptr and return NULL (glibc does): that is
       no failure. CPython's domains never pass 0. */
    if (p == NULL && size != 0) {
        if (found)
            restore_block(odomain, ptr, osize, ometa);
        return NULL;
    }
    if (found)
        charge_free(group_table(), odomain, osize, ometa);
    if (p != NULL && atomic_load_explicit(&g_enabled, OA_RELAXED))
        oa_track_alloc(domain, p, size);
    return p;
}

/* ----------------------------------------------------------------- hooks */

/* The hook a call came through: its ctx is one of g_hooks, except in a RAW
   call racing an install or uninstall. CPython reads a domain's ctx and
   function with two loads, and a thread allocating without the GIL can read
   them while PyMem_SetAllocator replaces both: it may pair our function with
   the ctx of the allocator we wrap or restore. Which of the two depends on
   the interpreter's build (seen: 3.11 and 3.14 load the ctx first, so this
   happens on install; 3.15 the function first, so on uninstall). Only RAW
   is called without the GIL, so such a call is RAW and passes through to the
   allocator our RAW hook wraps. */
static inline oa_hook *hook_of(void *ctx)
{
    if (__builtin_expect((uintptr_t)ctx - (uintptr_t)g_hooks < sizeof(g_hooks), 1))
        return ctx;
    return &g_hooks[OA_DOMAIN_RAW];
}

#define OA_PROBE(h)                                  \
    do {                                             \
        if (tls.probing)                             \
            tls.probe_hits |= 1 << (h)->domain;      \
    } while (0)

void *hook_malloc(void *ctx, size_t size)
{
    oa_hook *h = hook_of(ctx);
    OA_PROBE(h);
    if (tls.guard || atomic_load_explicit(&g_mode, OA_RELAXED) == OA_MODE_NONE)
        return h->prev.malloc(h->prev.ctx, size);
    tls.guard = 1;
    void *p = h->prev.malloc(h->prev.ctx, size);
    if (p != NULL && atomic_load_explicit(&g_enabled, OA_RELAXED))
        oa_track_alloc(h->domain, p, size);
    tls.guard = 0;
    return p;
}

void *hook_calloc(void *ctx, size_t nelem, size_t elsize)
{
    oa_hook *h = hook_of(ctx);
    OA_PROBE(h);
    if (tls.guard || atomic_load_explicit(&g_mode, OA_RELAXED) == OA_MODE_NONE)
        return h->prev.calloc(h->prev.ctx, nelem, elsize);
    tls.guard = 1;
    void *p = h->prev.calloc(h->prev.ctx, nelem, elsize);
    /* On success nelem * elsize did not overflow. */
    if (p != NULL && atomic_load_explicit(&g_enabled, OA_RELAXED))
        oa_track_alloc(h->domain, p, nelem * elsize);
    tls.guard = 0;
    return p;
}

/* A realloc counts as one allocation of the new size and, in live mode, one
   free of the old block charged to the group that allocated it. */
void *hook_realloc(void *ctx, void *ptr, size_t size)
{
    oa_hook *h = hook_of(ctx);
    OA_PROBE(h);
    if (tls.guard || atomic_load_explicit(&g_mode, OA_RELAXED) == OA_MODE_NONE)
        return h->prev.realloc(h->prev.ctx, ptr, size);
    tls.guard = 1;
    void *p = oa_track_realloc(h->domain, h->prev.realloc, h->prev.ctx, ptr, size);
    tls.guard = 0;
    return p;
}

void hook_free(void *ctx, void *ptr)
{
    oa_hook *h = hook_of(ctx);
    OA_PROBE(h);
    /* Frees are accounted even while disabled, so live figures stay exact. */
    if (tls.guard || ptr == NULL || atomic_load_explicit(&g_mode, OA_RELAXED) != OA_MODE_LIVE ||
        (!gil_free(h->domain) && in_subinterpreter(h->domain))) {
        /* A subinterpreter's MEM/OBJ blocks come from its own allocator
           state and were never tracked; RAW frees are looked up from any
           interpreter (the RAW table has its own lock). */
        h->prev.free(h->prev.ctx, ptr);
        return;
    }
    tls.guard = 1;
    oa_track_free(h->domain, ptr);
    h->prev.free(h->prev.ctx, ptr);
    tls.guard = 0;
}
