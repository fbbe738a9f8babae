/*
 * Hook probe for bench_hook_parts.py: allocator sets saved and put back
 * (so one burst runs with otel_alloc's hooks and the next without, the
 * tracker installed once), and the least a PyMem hook can be: a
 * thread-local guard and a call of the allocator it wraps, with the bytes
 * added to one thread-local counter.
 */
#include <Python.h>

#include "hook_probe.h"

#define SLOTS 4
#define DOMAINS 3

static const PyMemAllocatorDomain DOMAIN_OF[DOMAINS] = {PYMEM_DOMAIN_RAW, PYMEM_DOMAIN_MEM,
                                                        PYMEM_DOMAIN_OBJ};
static PyMemAllocatorEx g_saved[SLOTS][DOMAINS];
static int g_filled[SLOTS];

/* The guard hook: the allocators it wraps, one per domain. */
static PyMemAllocatorEx g_wrapped[DOMAINS];
/* initial-exec, as otel_alloc's own thread-locals: the default model for a
   shared object calls __tls_get_addr on each access. */
static __thread int t_guard __attribute__((tls_model("initial-exec")));
static __thread size_t t_bytes __attribute__((tls_model("initial-exec")));

void oa_probe_save(int slot)
{
    if (slot < 0 || slot >= SLOTS)
        return;
    for (int d = 0; d < DOMAINS; d++)
        PyMem_GetAllocator(DOMAIN_OF[d], &g_saved[slot][d]);
    g_filled[slot] = 1;
}

/* 0 when the slot held a saved set (now in place), -1 otherwise. */
int oa_probe_restore(int slot)
{
    if (slot < 0 || slot >= SLOTS || !g_filled[slot])
        return -1;
    for (int d = 0; d < DOMAINS; d++)
        PyMem_SetAllocator(DOMAIN_OF[d], &g_saved[slot][d]);
    return 0;
}

/* The end of a guarded call: count p's bytes, drop the guard, return p. */
static void *guarded(void *p, size_t size)
{
    if (p != NULL)
        t_bytes += size;
    t_guard = 0;
    return p;
}

#define GUARD_HOOKS(name, d)                                                                      \
    static void *name##_malloc(void *ctx, size_t size)                                            \
    {                                                                                             \
        (void)ctx;                                                                                \
        const PyMemAllocatorEx *a = &g_wrapped[d];                                                \
        if (t_guard)                                                                              \
            return a->malloc(a->ctx, size);                                                       \
        t_guard = 1;                                                                              \
        return guarded(a->malloc(a->ctx, size), size);                                         \
    }                                                                                             \
    static void *name##_calloc(void *ctx, size_t n, size_t size)                                  \
    {                                                                                             \
        (void)ctx;                                                                                \
        const PyMemAllocatorEx *a = &g_wrapped[d];                                                \
        if (t_guard)                                                                              \
            return a->calloc(a->ctx, n, size);                                                    \
        t_guard = 1;                                                                              \
        return guarded(a->calloc(a->ctx, n, size), n * size);                                  \
    }                                                                                             \
    static void *name##_realloc(void *ctx, void *ptr, size_t size)                                \
    {                                                                                             \
        (void)ctx;                                                                                \
        const PyMemAllocatorEx *a = &g_wrapped[d];                                                \
        return a->realloc(a->ctx, ptr, size);                                                     \
    }

GUARD_HOOKS(raw, 0)
GUARD_HOOKS(mem, 1)
GUARD_HOOKS(obj, 2)

/* Wrap the allocators in place now with the guard hook (frees go straight
   to the wrapped allocator, as in otel_alloc's counts mode). */
void oa_probe_install_guard(void)
{
    void *(*mallocs[DOMAINS])(void *, size_t) = {raw_malloc, mem_malloc, obj_malloc};
    void *(*callocs[DOMAINS])(void *, size_t, size_t) = {raw_calloc, mem_calloc, obj_calloc};
    void *(*reallocs[DOMAINS])(void *, void *, size_t) = {raw_realloc, mem_realloc, obj_realloc};
    for (int d = 0; d < DOMAINS; d++) {
        PyMem_GetAllocator(DOMAIN_OF[d], &g_wrapped[d]);
        PyMemAllocatorEx hook = {g_wrapped[d].ctx, mallocs[d], callocs[d], reallocs[d],
                                 g_wrapped[d].free};
        PyMem_SetAllocator(DOMAIN_OF[d], &hook);
    }
}

unsigned long long oa_probe_guard_bytes(void)
{
    return t_bytes;
}
