/*
 * The PyMem hooks (hooks.c) and the state they share with install.c and
 * fork.c: the mode, the live tables, the attribution variable.
 */
#ifndef OA_HOOKS_H
#define OA_HOOKS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdatomic.h>
#include <stdint.h>

#include "../accounting/counters.h"
#include "../support/ptable.h"
#include "../api/tracker_api.h"
#include "../support/spinlock.h"

#pragma GCC visibility push(hidden)

typedef struct {
    PyMemAllocatorEx prev; /* MEM/OBJ: the allocator we wrapped, always called
                              (RAW's is g_raw_prev, below; use prev_of) */
} oa_hook;

extern _Atomic int g_mode;

/* The OA_LIVE_* kind (accounting/counters.h) of `mode`, which the hooks
   are compiled for. */
static inline int oa_live_kind(int mode)
{
    return mode == OA_MODE_LIVE ? OA_LIVE_EXACT : mode == OA_MODE_ESTIMATE ? OA_LIVE_SAMPLED
                                                                            : OA_LIVE_NONE;
}
/* Whether frees are looked up in the live tables in `mode`. */
static inline int oa_mode_sees_frees(int mode)
{
    return mode >= OA_MODE_LIVE;
}
extern _Atomic int g_enabled;
extern _Atomic uint64_t g_threshold;

/* The main interpreter, set at install: only its allocations are tracked
   (see in_subinterpreter in hooks.c). */
extern PyInterpreterState *g_main_interp;

extern oa_ptable g_mem_obj_table; /* MEM/OBJ blocks, guarded by the GIL */
extern oa_ptable g_raw_table;     /* RAW blocks, guarded by g_raw_lock */
extern oa_spin g_raw_lock;
extern oa_ptable g_native_table;  /* native blocks, guarded by g_native_lock */
extern oa_spin g_native_lock;

extern oa_hook g_hooks[3]; /* per domain: what the MEM/OBJ hooks wrap (install.c) */

/* The allocator the RAW hooks wrap. RAW hooks run without the GIL, so a
   thread may be inside one while install wraps a chain another tool
   changed (tracemalloc started or stopped between our uninstall and
   install): g_hooks[RAW].prev rewritten in place could then be read half
   old, half new (ThreadSanitizer saw the write race a hook's read). Each new
   value goes to the next of OA_RAW_PREVS copies and is published by
   pointer, so a hook reads one whole allocator; a copy is written again only
   OA_RAW_PREVS chain changes later. */
#define OA_RAW_PREVS 8
extern const PyMemAllocatorEx *_Atomic g_raw_prev;

/* The allocator a hook of `domain` calls on to. MEM/OBJ hooks hold the GIL,
   as install does, so theirs is read in place. */
static inline const PyMemAllocatorEx *prev_of(int domain)
{
    if (domain == OA_DOMAIN_RAW)
        return atomic_load_explicit(&g_raw_prev, memory_order_acquire);
    return &g_hooks[domain].prev;
}

/* Whether hooks of `domain` may run without the GIL (RAW, and the native
   hooks of native/): their counters are updated atomically, their groups
   pinned while charged, and they charge the group the thread last
   resolved. Their twins (accounting/counters.h) are accounted under the
   GIL. */
static inline int gil_free(int domain)
{
    return domain == OA_DOMAIN_RAW || domain == OA_DOMAIN_NATIVE;
}

/* The twin of a domain whose hooks may run without the GIL, for a thread
   that holds the main interpreter's GIL. */
static inline int gil_twin(int domain)
{
    return domain == OA_DOMAIN_RAW ? OA_DOMAIN_RAW_GIL : OA_DOMAIN_NATIVE_GIL;
}

/* Whether `domain`'s blocks live in a table that hooks without the GIL
   share (RAW's or native's, for the domain or its twin): it has a lock, and
   its entries count in their slot's tag counter from their put, atomically
   (groups.h). */
static inline int shared_table(int domain)
{
    return domain != OA_DOMAIN_MEM && domain != OA_DOMAIN_OBJ;
}

static inline int raw_table(int domain)
{
    return domain == OA_DOMAIN_RAW || domain == OA_DOMAIN_RAW_GIL;
}

/* Each domain's live table, and the lock that guards it: NULL for MEM/OBJ,
   whose table the GIL guards. */
static inline oa_ptable *table_of(int domain)
{
    return raw_table(domain)       ? &g_raw_table
           : shared_table(domain) ? &g_native_table
                                  : &g_mem_obj_table;
}
static inline oa_spin *lock_of(int domain)
{
    return raw_table(domain) ? &g_raw_lock : shared_table(domain) ? &g_native_lock : NULL;
}
/* The domains whose tables have a lock of their own (their hooks may run
   without the GIL). */
#define OA_N_LOCKED_DOMAINS 2
static const int OA_LOCKED_DOMAINS[OA_N_LOCKED_DOMAINS] = {OA_DOMAIN_RAW, OA_DOMAIN_NATIVE};

/* The accounting every hook shares, for the PyMem hooks below and the
   native hooks (native/native_hooks.c). The caller has set tls.guard and
   checked that the tracker is installed. */
void oa_track_alloc(int domain, void *ptr, size_t size);
/* After a call that allocated p (NULL: it failed) of `size` bytes, with
   tls.guard set: account it unless counting is disabled. */
static inline void oa_track_if_enabled(int domain, void *p, size_t size)
{
    if (p != NULL && atomic_load_explicit(&g_enabled, memory_order_relaxed))
        oa_track_alloc(domain, p, size);
}
/* Live and estimate modes: forget a freed block and charge its group. */
void oa_track_free(int domain, void *ptr);
typedef void *(*oa_realloc_fn)(void *ctx, void *ptr, size_t size);
/* Call fn(ctx, ptr, size) as a realloc and account it: one allocation of
   the new size and, in live mode, one free of the old block. */
void *oa_track_realloc(int domain, oa_realloc_fn fn, void *ctx, void *ptr, size_t size);
/* The same for MEM and OBJ, compiled for their domain. */
void *oa_track_realloc_mem(oa_realloc_fn fn, void *ctx, void *ptr, size_t size);
void *oa_track_realloc_obj(oa_realloc_fn fn, void *ctx, void *ptr, size_t size);

/* Our allocator for `domain` (hooks.c) compiled for `live` (OA_LIVE_*): its
   functions with the ctx of the allocator it wraps (prev_of(domain), which
   must be set), and in counts mode that allocator's free. */
void oa_hook_allocator(int domain, int live, PyMemAllocatorEx *ours);
/* The OA_LIVE_* kind of alloc when it is one of our allocators of `domain`,
   else -1. */
int oa_hook_kind(int domain, const PyMemAllocatorEx *alloc);

#pragma GCC visibility pop

#endif
