/*
 * Installing and removing the hooks, proving they are in the allocator chain
 * under other tools, and the tracker's settings. The fork handler is in
 * fork.c.
 */
#include <pthread.h>
#include <string.h>

#include "../accounting/events.h"
#include "../accounting/groups.h"
#include "../accounting/process_stats.h"
#include "../accounting/threads.h"
#include "../api/tracker_api.h"
#include "../compat/thread_state.h"
#include "../sampler/estimate.h"
#include "../sampler/sampler.h"
#include "../native/native_hooks.h"
#include "fork.h"
#include "hooks.h"

oa_hook g_hooks[3];
static int g_hooked[3]; /* our hook of that domain is (believed) in the chain */
static int g_hooked_kind[3]; /* the OA_LIVE_* kind of that hook's copy */

static pthread_once_t g_once = PTHREAD_ONCE_INIT;

/* --------------------------------------------------------------- install */

static void init_once(void)
{
    pthread_key_create(&g_thread_key, thread_exit);
    oa_register_fork_handlers();
}

static int free_threaded(void)
{
#ifdef Py_GIL_DISABLED
    return 1;
#else
    return 0;
#endif
}

int oa_free_threaded_build(void)
{
    return free_threaded();
}

/* Whether our hook of `domain` is reached by an allocation made through the
   domain's public API: proves we are in the chain even under other tools. */
static int probe(int domain)
{
    tls.probing = 1;
    tls.probe_hits = 0;
    tls.attr_epoch = 0; /* the MEM/OBJ hooks record the hit off their cached path */
    void *p;
    switch (domain) {
    case OA_DOMAIN_RAW:
        p = PyMem_RawMalloc(1);
        PyMem_RawFree(p);
        break;
    case OA_DOMAIN_MEM:
        p = PyMem_Malloc(1);
        PyMem_Free(p);
        break;
    default:
        p = PyObject_Malloc(1);
        PyObject_Free(p);
        break;
    }
    tls.probing = 0;
    return (tls.probe_hits >> domain) & 1;
}

/* The RAW allocator our RAW hooks call on to (hooks.h): one of these
   copies, never written while published. */
static PyMemAllocatorEx g_raw_prevs[OA_RAW_PREVS];
static int g_raw_prev_next;
const PyMemAllocatorEx *_Atomic g_raw_prev = &g_raw_prevs[0];

/* Put our hook of `domain` compiled for `live` in the chain's top place, in
   front of prev_of(domain): wrapping it, or replacing our own copy of
   another mode that is there. */
static void put_on_top(int domain, int live)
{
    PyMemAllocatorEx ours;
    oa_hook_allocator(domain, live, &ours);
    PyMem_SetAllocator((PyMemAllocatorDomain)domain, &ours);
    g_hooked[domain] = 1;
    g_hooked_kind[domain] = live;
}

/* Put our hook of `domain` in front of the allocator in place now. A thread
   still inside a hook from an earlier install may be reading what it calls
   on to: it is written only when it changes, which is never in the usual
   uninstall/install cycle (uninstall restored exactly that allocator), and
   for RAW, whose hooks run without the GIL, into a fresh copy (hooks.h). */
static void wrap_domain(int domain, int live)
{
    PyMemAllocatorEx cur;
    PyMem_GetAllocator((PyMemAllocatorDomain)domain, &cur);
    if (memcmp(&cur, prev_of(domain), sizeof(cur)) != 0) {
        if (domain == OA_DOMAIN_RAW) {
            g_raw_prev_next = (g_raw_prev_next + 1) % OA_RAW_PREVS;
            g_raw_prevs[g_raw_prev_next] = cur;
            atomic_store_explicit(&g_raw_prev, &g_raw_prevs[g_raw_prev_next],
                                  memory_order_release);
        } else {
            g_hooks[domain].prev = cur;
        }
    }
    put_on_top(domain, live);
}

static int hook_on_top(int domain)
{
    PyMemAllocatorEx cur;
    PyMem_GetAllocator((PyMemAllocatorDomain)domain, &cur);
    return oa_hook_kind(domain, &cur) >= 0;
}

/* Whether a domain's hook kept in another tool's chain from an earlier
   install (uninstall could not take it out) passes frees by, being counts
   mode's copy (oa_hook_allocator), where `mode` must see them: wrapping
   again would make our hook call itself through the other tool, and
   reusing it would miss every free. */
static int kept_hook_blind_to_frees(int mode)
{
    if (!oa_mode_sees_frees(mode))
        return 0;
    for (int d = 0; d < 3; d++)
        if (g_hooked[d] && g_hooked_kind[d] == OA_LIVE_NONE && !hook_on_top(d) && probe(d))
            return 1;
    return 0;
}

static void drop_tables(void)
{
    /* Caller holds the GIL, so no MEM/OBJ hook is inside the GIL table. */
    oa_ptable_destroy(&g_mem_obj_table);
    for (int i = 0; i < OA_N_LOCKED_DOMAINS; i++) {
        int d = OA_LOCKED_DOMAINS[i];
        oa_spin_lock(lock_of(d));
        oa_ptable_destroy(table_of(d));
        oa_spin_unlock(lock_of(d));
    }
}

/* `nursery`: live mode, where the tables hold every block and most are
   freed young (ptable.h); estimate mode's hold a sample, which most frees
   only ask about. */
static int setup_tables(int nursery)
{
    drop_tables();
    if (oa_ptable_init(&g_mem_obj_table, nursery) != 0)
        return -1;
    /* The tables of the hooks that run without the GIL are made first and
       swapped in under their locks. */
    for (int i = 0; i < OA_N_LOCKED_DOMAINS; i++) {
        int d = OA_LOCKED_DOMAINS[i];
        oa_ptable fresh;
        if (oa_ptable_init(&fresh, nursery) != 0) {
            drop_tables();
            return -1;
        }
        oa_spin_lock(lock_of(d));
        *table_of(d) = fresh;
        oa_spin_unlock(lock_of(d));
    }
    return 0;
}

int oa_install(int mode, uint32_t max_groups, uint64_t threshold, uint32_t event_capacity)
{
    if (free_threaded())
        return OA_ERR_FREE_THREADED;
    if ((mode != OA_MODE_COUNTS && mode != OA_MODE_LIVE && mode != OA_MODE_ESTIMATE) ||
        max_groups < 1 ||
        max_groups > OA_SLOT_MASK - OA_FIRST_USER_SLOT || event_capacity < 1)
        return OA_ERR_BAD_ARGUMENT;
    pthread_once(&g_once, init_once);

    PyGILState_STATE gil = PyGILState_Ensure();
    int rc = OA_OK;
    int current = atomic_load_explicit(&g_mode, OA_RELAXED);
    if (current != OA_MODE_NONE) {
        rc = current == mode ? OA_ALREADY : OA_ERR_MODE_CONFLICT;
        goto done;
    }
    if (kept_hook_blind_to_frees(mode)) {
        rc = OA_ERR_KEPT_HOOK;
        goto done;
    }
    if (setup_groups(max_groups) != 0 || setup_ring(event_capacity) != 0 ||
        (oa_mode_sees_frees(mode) && setup_tables(mode == OA_MODE_LIVE) != 0)) {
        rc = OA_ERR_NOMEM;
        goto done;
    }
    zero_figures(oa_live_kind(mode));
    oa_estimate_restart();
    g_main_interp = PyInterpreterState_Main();
#if OA_TSTATE_BY_SLOT
    oa_tstate_slot_init(); /* before the hooks: they read what it finds */
#endif
    atomic_store_explicit(&g_threshold, threshold, OA_RELAXED);
    tls.gid = 0;

    for (int d = 0; d < 3; d++) {
        /* Still in the chain from an earlier install (left as a pass-through
           under another tool's hook, which may have put it back on top since):
           replaced by this mode's copy on top, else reused; wrapping again
           would make our hook call itself through the other tool. */
        if (g_hooked[d] && probe(d)) {
            if (hook_on_top(d))
                put_on_top(d, oa_live_kind(mode));
            continue;
        }
        wrap_domain(d, oa_live_kind(mode));
    }
    atomic_store_explicit(&g_enabled, 1, OA_RELAXED);
    atomic_store_explicit(&g_mode, mode, memory_order_release);
    oa_attr_epoch_bump();
done:
    PyGILState_Release(gil);
    return rc;
}

int oa_uninstall(void)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    int rc = OA_OK;
    if (atomic_load_explicit(&g_mode, OA_RELAXED) == OA_MODE_NONE) {
        rc = OA_ERR_NOT_INSTALLED;
        goto done;
    }
    /* Native hooks out of the GOT first: from here on they pass through. */
    oa_native_stop();
    atomic_store_explicit(&g_mode, OA_MODE_NONE, memory_order_release);
    atomic_store_explicit(&g_enabled, 0, OA_RELAXED);
    oa_attr_epoch_bump();
    for (int d = 0; d < 3; d++) {
        if (!g_hooked[d])
            continue;
        if (hook_on_top(d)) {
            PyMem_SetAllocator((PyMemAllocatorDomain)d, (PyMemAllocatorEx *)prev_of(d));
            g_hooked[d] = 0;
        } else if (!probe(d)) {
            /* Another tool restored what it saved before us: we are out. */
            g_hooked[d] = 0;
        }
        /* Otherwise another tool wrapped us: stay as a pass-through. */
    }
    drop_tables();
    oa_sampler_uninstall();
done:
    PyGILState_Release(gil);
    return rc;
}

int oa_rehook(void)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    int rehooked = 0;
    if (atomic_load_explicit(&g_mode, OA_RELAXED) != OA_MODE_NONE) {
        for (int d = 0; d < 3; d++) {
            if (probe(d))
                continue;
            /* Another tool restored an allocator it saved before we wrapped
               it (tracemalloc.stop() after tracemalloc.start() before our
               install): wrap what is there now. Blocks freed meanwhile were
               not seen; their table entries are replaced when the address
               comes back (counters().replaced_blocks). */
            wrap_domain(d, oa_live_kind(atomic_load_explicit(&g_mode, OA_RELAXED)));
            rehooked++;
        }
        atomic_fetch_add_explicit(&g_rehooks, (uint64_t)rehooked, OA_RELAXED);
    }
    PyGILState_Release(gil);
    return rehooked;
}

int oa_mode(void)
{
    return atomic_load_explicit(&g_mode, OA_RELAXED);
}

int oa_hook_status(void)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    int status = 0;
    for (int d = 0; d < 3; d++) {
        if (g_hooked[d] && probe(d))
            status |= OA_HOOK_IN_CHAIN << d;
        if (g_hooked[d] && hook_on_top(d))
            status |= OA_HOOK_ON_TOP << d;
    }
    PyGILState_Release(gil);
    return status;
}

int oa_set_enabled(int enabled)
{
    if (atomic_load_explicit(&g_mode, OA_RELAXED) == OA_MODE_NONE)
        return OA_ERR_NOT_INSTALLED;
    atomic_store_explicit(&g_enabled, enabled ? 1 : 0, OA_RELAXED);
    oa_attr_epoch_bump();
    return OA_OK;
}

int oa_is_enabled(void)
{
    return atomic_load_explicit(&g_enabled, OA_RELAXED);
}

void oa_set_threshold(uint64_t threshold)
{
    atomic_store_explicit(&g_threshold, threshold, OA_RELAXED);
    oa_attr_epoch_bump();
}
