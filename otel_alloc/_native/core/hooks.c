/*
 * otel_alloc native tracker: PyMem hooks on the RAW, MEM and OBJ domains that
 * charge every allocation to an allocation group. This file holds the hooks
 * themselves and the MEM/OBJ fast path; what an allocation updates is in
 * account.h, the generic accounting in track.c. The other files are listed
 * in the README's "Architecture" section.
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
#include "account.h"

/* ------------------------------------------------------------------ state */

/* The one definition of the thread-local state (see oa_tls in tls.h).
   It repeats the declaration's initial-exec model: GCC does not carry a
   declaration's tls_model over to a definition without one, and would emit
   general-dynamic (__tls_get_addr) code for this file. */
__thread oa_tls tls __attribute__((tls_model("initial-exec")));

_Atomic int g_mode;
_Atomic int g_enabled;
_Atomic uint64_t g_threshold;
_Atomic uint64_t g_attr_epoch = OA_EPOCH_STEP;

PyInterpreterState *g_main_interp;

oa_ptable g_mem_obj_table; /* MEM/OBJ blocks, guarded by the GIL */
oa_ptable g_raw_table;     /* RAW blocks, guarded by g_raw_lock */
oa_spin g_raw_lock = OA_SPIN_INIT;
oa_ptable g_native_table;  /* native blocks (native/), guarded by g_native_lock */
oa_spin g_native_lock = OA_SPIN_INIT;

/* ------------------------------------------------------- MEM and OBJ */

/* The hooks of the MEM and OBJ domains, which run with the GIL held. One
   copy per domain (the wrappers below), so every test on the domain folds
   away. The common case, an allocation in a thread whose context has not
   changed since its last one, is answered by the thread's attribution cache
   (gil_alloc). Counts mode has no free hook: its allocator hands frees
   straight to the one it wraps (oa_hook_allocator). Estimate mode's free
   is a tail call for the blocks it does not hold; live mode's saves one
   register. */
/* A live-mode MEM/OBJ allocation that live_alloc_fast left: charge it,
   end the hook's guard and return p. Out of line, with every call the
   charge may make (the cache's resolution, the table's general put, a
   sample, an event), so the hook saves only the registers its wrapped call
   needs: four where it saved six (callgrind, json_loads). */
static __attribute__((noinline)) void *live_alloc_rest(int domain, void *p, size_t size)
{
    gil_alloc(domain, p, size, OA_LIVE_EXACT);
    tls.guard = 0;
    return p;
}

/* Account p (size bytes, NULL: the wrapped call failed) in the mode this
   copy is compiled for, end the guard, and return p. */
static inline __attribute__((always_inline)) void *gil_account(int domain, void *p, size_t size,
                                                               int live)
{
    if (__builtin_expect(p != NULL, 1)) {
        if (live != OA_LIVE_EXACT)
            gil_alloc(domain, p, size, live);
        else if (__builtin_expect(!live_alloc_fast(domain, p, size), 0))
            return live_alloc_rest(domain, p, size);
    }
    tls.guard = 0;
    return p;
}

static inline __attribute__((always_inline)) void *gil_malloc(int domain, size_t size, int live)
{
    const PyMemAllocatorEx *prev = prev_of(domain);
    if (__builtin_expect(tls.guard, 0))
        return prev->malloc(prev->ctx, size);
    tls.guard = 1;
    return gil_account(domain, prev->malloc(prev->ctx, size), size, live);
}

static inline __attribute__((always_inline)) void *gil_calloc(int domain, size_t nelem, size_t elsize,
                                                               int live)
{
    const PyMemAllocatorEx *prev = prev_of(domain);
    if (__builtin_expect(tls.guard, 0))
        return prev->calloc(prev->ctx, nelem, elsize);
    tls.guard = 1;
    /* On success nelem * elsize did not overflow. */
    return gil_account(domain, prev->calloc(prev->ctx, nelem, elsize), nelem * elsize, live);
}

/* A realloc counts as one allocation of the new size and, in live mode, one
   free of the old block charged to the group that allocated it. */
static inline __attribute__((always_inline)) void *any_realloc(int domain, void *ptr, size_t size)
{
    const PyMemAllocatorEx *prev = prev_of(domain);
    if (tls.guard || atomic_load_explicit(&g_mode, OA_RELAXED) == OA_MODE_NONE)
        return prev->realloc(prev->ctx, ptr, size);
    tls.guard = 1;
    void *p = domain == OA_DOMAIN_OBJ   ? oa_track_realloc_obj(prev->realloc, prev->ctx, ptr, size)
              : domain == OA_DOMAIN_MEM ? oa_track_realloc_mem(prev->realloc, prev->ctx, ptr, size)
                                        : oa_track_realloc(domain, prev->realloc, prev->ctx, ptr, size);
    tls.guard = 0;
    return p;
}

/* Any domain's free (RAW's too). Frees are accounted even while disabled,
   so live figures stay exact. A subinterpreter's MEM/OBJ blocks come from
   its own allocator state and were never tracked; RAW frees are looked up
   from any interpreter (the RAW table has its own lock). */
static inline __attribute__((always_inline)) void any_free(int domain, void *ptr)
{
    const PyMemAllocatorEx *prev = prev_of(domain);
    int mode = atomic_load_explicit(&g_mode, OA_RELAXED);
    if (__builtin_expect(!oa_mode_sees_frees(mode), 1) || tls.guard || ptr == NULL ||
        (!gil_free(domain) && in_subinterpreter(domain))) {
        prev->free(prev->ctx, ptr);
        return;
    }
    tls.guard = 1;
    if (gil_free(domain))
        oa_track_free(domain, ptr); /* RAW: or its twin under the GIL */
    else
        track_free_block(domain, ptr, mode == OA_MODE_LIVE);
    prev->free(prev->ctx, ptr);
    tls.guard = 0;
}

/* any_free out of line, for a MEM/OBJ free hook of one mode's copy when
   another mode is installed (a hook left in the chain under another tool). */
static __attribute__((noinline)) void any_free_call(int domain, void *ptr)
{
    any_free(domain, ptr);
}

/* What a live MEM/OBJ free hands over when its fast path cannot finish:
   `popped` 1 when the entry was taken out already (size and meta: a block
   the allocation sampler noted, or a thread without its record yet), -1
   when the table's general path must look for it. Out of line, with every
   call it may make, so the fast path saves no register for them. */
static __attribute__((noinline)) void live_free_rest(int domain, void *ptr, int popped,
                                                     uint64_t size, uint64_t meta)
{
    const PyMemAllocatorEx *prev = prev_of(domain);
    tls.guard = 1;
    if (popped < 0) {
        track_free_block(domain, ptr, 1);
    } else {
        if (meta & OA_SAMPLED_FLAG)
            oa_sample_freed(ptr);
        charge_free(group_table(), domain, size, meta, thread_record());
    }
    prev->free(prev->ctx, ptr);
    tls.guard = 0;
}

/* The MEM/OBJ free of live mode's copy. The inline pop and charge call
   nothing, the rest goes to live_free_rest: between the checks and the
   guarded call of the wrapped free, only the thread-local base lives
   across a call (any_free inlined, the possible calls of the general pop,
   the sampler and the thread record made every free save four registers;
   callgrind, json_loads, some 8 instructions a free). The entry leaves the
   table before the guard is set: nothing in between allocates. Under the
   GIL, which guards the MEM/OBJ table. */
static inline __attribute__((always_inline)) void live_free(int domain, void *ptr)
{
    const PyMemAllocatorEx *prev = prev_of(domain);
    if (__builtin_expect(atomic_load_explicit(&g_mode, OA_RELAXED) != OA_MODE_LIVE, 0)) {
        any_free_call(domain, ptr);
        return;
    }
    if (tls.guard || ptr == NULL || in_subinterpreter(domain)) {
        prev->free(prev->ctx, ptr);
        return;
    }
    oa_ptable *t = table_of(domain);
    uint64_t size = 0, meta = 0;
    int popped = t->slots != NULL ? oa_ptable_pop_fast(t, (uintptr_t)ptr, &size, &meta) : 0;
    oa_thread *rec = tls.rec;
    if (__builtin_expect(popped < 0 || (popped && ((meta & OA_SAMPLED_FLAG) || rec == NULL)),
                         0)) {
        live_free_rest(domain, ptr, popped, size, meta);
        return;
    }
    if (popped)
        charge_free(group_table(), domain, size, meta, rec);
    else
        plain_inc(&g_untracked_mem_obj, 1);
    tls.guard = 1;
    prev->free(prev->ctx, ptr);
    tls.guard = 0;
}

/* A MEM/OBJ free in estimate mode that may be of a sampled block: charge it
   if it is one, then free it. */
static __attribute__((noinline)) void estimate_free_found(int domain, void *ptr)
{
    const PyMemAllocatorEx *prev = prev_of(domain);
    tls.guard = 1;
    track_free_block(domain, ptr, 0);
    prev->free(prev->ctx, ptr);
    tls.guard = 0;
}

/* The MEM/OBJ free of estimate mode's copy. Its table holds the sampled
   blocks alone, and one group's control bytes tell almost every free that
   its block is not there: a tail call then, like counts mode's, and the
   rest out of line (inlined, the lookup made every free save registers:
   callgrind, json_loads, about 50 instructions a free). Under the GIL,
   which guards the MEM/OBJ table. */
static inline __attribute__((always_inline)) void estimate_free(int domain, void *ptr)
{
    const PyMemAllocatorEx *prev = prev_of(domain);
    if (__builtin_expect(atomic_load_explicit(&g_mode, OA_RELAXED) != OA_MODE_ESTIMATE, 0)) {
        any_free_call(domain, ptr);
        return;
    }
    if (tls.guard || ptr == NULL || in_subinterpreter(domain) ||
        __builtin_expect(!oa_ptable_may_hold(&g_mem_obj_table, (uintptr_t)ptr), 1)) {
        prev->free(prev->ctx, ptr);
        return;
    }
    estimate_free_found(domain, ptr);
}

/* malloc and calloc come in three copies per domain, one compiled for each
   mode's OA_LIVE_* kind (gil_alloc in account.h) and named by its suffix
   (none: counts, _live, _est), free in two (counts mode has none); install
   puts in its mode's. */
#define OA_GIL_MODE_ALLOC_HOOKS(name, domain, suffix, live)                    \
    static void *hook_##name##_malloc##suffix(void *ctx, size_t size)          \
    {                                                                          \
        (void)ctx;                                                             \
        return gil_malloc(domain, size, live);                                 \
    }                                                                          \
    static void *hook_##name##_calloc##suffix(void *ctx, size_t nelem,         \
                                              size_t elsize)                   \
    {                                                                          \
        (void)ctx;                                                             \
        return gil_calloc(domain, nelem, elsize, live);                        \
    }
#define OA_GIL_MODE_FREE_HOOK(name, domain, suffix, free_fn)                   \
    static void hook_##name##_free##suffix(void *ctx, void *ptr)               \
    {                                                                          \
        (void)ctx;                                                             \
        free_fn(domain, ptr);                                                  \
    }

#define OA_GIL_HOOKS(name, domain)                                             \
    OA_GIL_MODE_ALLOC_HOOKS(name, domain, , OA_LIVE_NONE)                      \
    OA_GIL_MODE_ALLOC_HOOKS(name, domain, _live, OA_LIVE_EXACT)                \
    OA_GIL_MODE_FREE_HOOK(name, domain, _live, live_free)                      \
    OA_GIL_MODE_ALLOC_HOOKS(name, domain, _est, OA_LIVE_SAMPLED)               \
    OA_GIL_MODE_FREE_HOOK(name, domain, _est, estimate_free)                   \
    static void *hook_##name##_realloc(void *ctx, void *ptr, size_t size)      \
    {                                                                          \
        (void)ctx;                                                             \
        return any_realloc(domain, ptr, size);                                 \
    }

OA_GIL_HOOKS(mem, OA_DOMAIN_MEM)
OA_GIL_HOOKS(obj, OA_DOMAIN_OBJ)

/* ------------------------------------------------------------------ RAW */

/* RAW hooks may run without the GIL, on any thread. They ignore their ctx:
   CPython reads a domain's ctx and function with two loads, and a thread
   allocating without the GIL can read them while PyMem_SetAllocator
   replaces both, pairing our function with the ctx of the allocator we
   wrap or restore (seen: 3.11 and 3.14 load the ctx first, so this happens
   on install; 3.15 the function first, so on uninstall). prev_of(RAW) is
   always the right one. */

static inline int raw_passes(void)
{
    if (tls.probing)
        tls.probe_hits |= 1 << OA_DOMAIN_RAW;
    return tls.guard || atomic_load_explicit(&g_mode, OA_RELAXED) == OA_MODE_NONE;
}

static void *hook_raw_malloc(void *ctx, size_t size)
{
    (void)ctx;
    const PyMemAllocatorEx *prev = prev_of(OA_DOMAIN_RAW);
    if (raw_passes())
        return prev->malloc(prev->ctx, size);
    tls.guard = 1;
    void *p = prev->malloc(prev->ctx, size);
    oa_track_if_enabled(OA_DOMAIN_RAW, p, size);
    tls.guard = 0;
    return p;
}

static void *hook_raw_calloc(void *ctx, size_t nelem, size_t elsize)
{
    (void)ctx;
    const PyMemAllocatorEx *prev = prev_of(OA_DOMAIN_RAW);
    if (raw_passes())
        return prev->calloc(prev->ctx, nelem, elsize);
    tls.guard = 1;
    void *p = prev->calloc(prev->ctx, nelem, elsize);
    oa_track_if_enabled(OA_DOMAIN_RAW, p, nelem * elsize);
    tls.guard = 0;
    return p;
}

static void *hook_raw_realloc(void *ctx, void *ptr, size_t size)
{
    (void)ctx;
    return any_realloc(OA_DOMAIN_RAW, ptr, size);
}

static void hook_raw_free(void *ctx, void *ptr)
{
    (void)ctx;
    any_free(OA_DOMAIN_RAW, ptr);
}

/* One mode's allocators, by domain: RAW's hooks serve every mode. `free`
   is the free hook of modes that see frees, NULL for counts mode's, which
   passes frees by. */
#define OA_MODE_ALLOCATORS(suffix, free)                                         \
    {                                                                            \
        [OA_DOMAIN_RAW] = {NULL, hook_raw_malloc, hook_raw_calloc, hook_raw_realloc, \
                           free(hook_raw_free)},                                 \
        [OA_DOMAIN_MEM] = {NULL, hook_mem_malloc##suffix, hook_mem_calloc##suffix, \
                           hook_mem_realloc, free(hook_mem_free##suffix)},       \
        [OA_DOMAIN_OBJ] = {NULL, hook_obj_malloc##suffix, hook_obj_calloc##suffix, \
                           hook_obj_realloc, free(hook_obj_free##suffix)},       \
    }
#define OA_FREE_HOOK(fn) fn
#define OA_NO_FREE_HOOK(fn) NULL

/* Counts mode needs nothing of a free, so its allocator's free is that of
   the allocator it wraps: every free goes straight there, one indirect
   call and five instructions less a free (callgrind: counts mode on
   json_loads 1.0864x -> 1.0753x). The cost: such an allocator kept in
   another tool's chain after uninstall cannot serve a later install in a
   mode that sees frees (install.c refuses that install).
   The ctx of every mode's allocator is the wrapped one's too. Our hooks
   ignore theirs (each calls prev_of(domain)), so whichever ctx a RAW caller
   pairs with whichever function across a PyMem_SetAllocator (see the RAW
   hooks), from our allocator or the one it wraps, is a right pair: with a
   ctx of our own, the wrapped free could be called with it while install
   replaced one mode's copy by another's. */
void oa_hook_allocator(int domain, int live, PyMemAllocatorEx *ours)
{
    static const PyMemAllocatorEx fns[3][3] = {
        [OA_LIVE_NONE] = OA_MODE_ALLOCATORS(, OA_NO_FREE_HOOK),
        [OA_LIVE_EXACT] = OA_MODE_ALLOCATORS(_live, OA_FREE_HOOK),
        [OA_LIVE_SAMPLED] = OA_MODE_ALLOCATORS(_est, OA_FREE_HOOK),
    };
    const PyMemAllocatorEx *prev = prev_of(domain);
    *ours = fns[live >= OA_LIVE_NONE && live <= OA_LIVE_SAMPLED ? live : OA_LIVE_NONE][domain];
    ours->ctx = prev->ctx;
    if (ours->free == NULL)
        ours->free = prev->free;
}

int oa_hook_kind(int domain, const PyMemAllocatorEx *alloc)
{
    for (int live = OA_LIVE_NONE; live <= OA_LIVE_SAMPLED; live++) {
        PyMemAllocatorEx ours;
        oa_hook_allocator(domain, live, &ours);
        /* The malloc alone: the ctx is not ours, and no other allocator
           has our functions. */
        if (alloc->malloc == ours.malloc)
            return live;
    }
    return -1;
}
