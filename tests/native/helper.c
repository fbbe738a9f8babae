/*
 * Test-only native helper: allocates exact sizes in a chosen PyMem domain,
 * with no Python allocation in between, so tests can assert exact figures.
 * MEM and OBJ calls take the GIL (cffi releases it around calls); RAW calls
 * run without it, as real RAW users do. "Domain" 3 is plain malloc/free, as
 * an extension calls them (native mode), without the GIL; 4 the same with
 * the GIL held; 5 is RAW with the GIL held.
 */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tracker_capi.h"

#include "helper.h"

static void *do_malloc(int domain, size_t size)
{
    switch (domain) {
    case 0: case 5: return PyMem_RawMalloc(size);
    case 3: case 4: return malloc(size);
    case 1: return PyMem_Malloc(size);
    default: return PyObject_Malloc(size);
    }
}

static void *do_calloc(int domain, size_t n, size_t size)
{
    switch (domain) {
    case 0: case 5: return PyMem_RawCalloc(n, size);
    case 3: case 4: return calloc(n, size);
    case 1: return PyMem_Calloc(n, size);
    default: return PyObject_Calloc(n, size);
    }
}

static void *do_realloc(int domain, void *p, size_t size)
{
    switch (domain) {
    case 0: case 5: return PyMem_RawRealloc(p, size);
    case 3: case 4: return realloc(p, size);
    case 1: return PyMem_Realloc(p, size);
    default: return PyObject_Realloc(p, size);
    }
}

static void do_free(int domain, void *p)
{
    switch (domain) {
    case 0: case 5: PyMem_RawFree(p); break;
    case 3: case 4: free(p); break;
    case 1: PyMem_Free(p); break;
    default: PyObject_Free(p); break;
    }
}

#define WITH_GIL(domain, stmt)                                    \
    do {                                                          \
        if ((domain) == 0 || (domain) == 3) {                     \
            stmt;                                                 \
        } else {                                                  \
            PyGILState_STATE st_ = PyGILState_Ensure();           \
            stmt;                                                 \
            PyGILState_Release(st_);                              \
        }                                                         \
    } while (0)

uintptr_t h_malloc(int domain, size_t size)
{
    void *p;
    WITH_GIL(domain, p = do_malloc(domain, size));
    return (uintptr_t)p;
}

uintptr_t h_calloc(int domain, size_t n, size_t size)
{
    void *p;
    WITH_GIL(domain, p = do_calloc(domain, n, size));
    return (uintptr_t)p;
}

uintptr_t h_realloc(int domain, uintptr_t ptr, size_t size)
{
    void *p;
    WITH_GIL(domain, p = do_realloc(domain, (void *)ptr, size));
    return (uintptr_t)p;
}

void h_free(int domain, uintptr_t ptr)
{
    WITH_GIL(domain, do_free(domain, (void *)ptr));
}

/* n allocations of size bytes, stored in out[] when out is not NULL, else
   freed at once. Returns how many failed (0: a cached small int in Python, so
   the call itself allocates nothing that tests would have to subtract). */
int h_alloc_many(int domain, size_t size, int n, uintptr_t *out)
{
    int ok = 0;
    for (int i = 0; i < n; i++) {
        void *p;
        WITH_GIL(domain, p = do_malloc(domain, size));
        if (p == NULL)
            continue;
        ok++;
        if (out != NULL)
            out[i] = (uintptr_t)p;
        else
            WITH_GIL(domain, do_free(domain, p));
    }
    return n - ok;
}

void h_free_many(int domain, uintptr_t *ptrs, int n)
{
    for (int i = 0; i < n; i++) {
        if (ptrs[i] != 0)
            WITH_GIL(domain, do_free(domain, (void *)ptrs[i]));
    }
}

/* malloc sizes[0], then realloc the block to each following size; the final
   block is stored in *out. Returns 0 on success. */
int h_realloc_chain(int domain, const size_t *sizes, int n, uintptr_t *out)
{
    void *p;
    WITH_GIL(domain, p = do_malloc(domain, sizes[0]));
    for (int i = 1; p != NULL && i < n; i++) {
        void *q;
        WITH_GIL(domain, q = do_realloc(domain, p, sizes[i]));
        if (q == NULL)
            break;
        p = q;
    }
    *out = (uintptr_t)p;
    return p == NULL;
}

/* count calloc(nelem, elsize) blocks stored in out[]. Returns failures. */
int h_calloc_many(int domain, size_t nelem, size_t elsize, int count, uintptr_t *out)
{
    int failed = 0;
    for (int i = 0; i < count; i++) {
        void *p;
        WITH_GIL(domain, p = do_calloc(domain, nelem, elsize));
        out[i] = (uintptr_t)p;
        failed += p == NULL;
    }
    return failed;
}

/* The tracker's C API, imported on first use (the GIL is taken for that). */
static const oa_tracker_capi *tracker_api(void)
{
    static const oa_tracker_capi *api;
    if (api == NULL) {
        PyGILState_STATE gil = PyGILState_Ensure();
        const oa_tracker_capi *found = PyCapsule_Import(OA_TRACKER_CAPI_NAME, 0);
        if (found == NULL || found->version < 5)
            PyErr_Clear();
        else
            api = found;
        PyGILState_Release(gil);
    }
    return api;
}

static int read_counts(uint64_t group, oa_group_counts *out)
{
    const oa_tracker_capi *api = tracker_api();
    return api == NULL ? -1 : api->group_counts(group, out);
}

static void counts_delta(const oa_group_counts *before, const oa_group_counts *after,
                         uint64_t *delta)
{
    delta[0] = after->alloc_bytes - before->alloc_bytes;
    delta[1] = after->alloc_count - before->alloc_count;
    delta[2] = after->freed_bytes - before->freed_bytes;
    delta[3] = after->freed_count - before->freed_count;
}

/* Run `stmt` between two reads of `group`'s counters, their difference going
   to delta[0..3]; the enclosing function returns -1 when a read fails. */
#define MEASURED(group, delta, stmt)                                          \
    do {                                                                      \
        oa_group_counts before_, after_;                                      \
        if (read_counts((group), &before_) != 0)                              \
            return -1;                                                        \
        stmt;                                                                 \
        if (read_counts((group), &after_) != 0)                               \
            return -1;                                                        \
        counts_delta(&before_, &after_, (delta));                             \
    } while (0)

/* h_alloc_many, measured in C: the change of `group`'s counters across the
   loop goes to delta[0..3] (alloc bytes, alloc count, freed bytes, freed
   count). No Python code runs in this thread between the two reads, so
   nothing but the loop's own blocks can be charged there. -1 when the
   tracker's C API or the group cannot be read. */
int h_alloc_many_measured(int domain, size_t size, int n, uint64_t group, uint64_t *delta)
{
    int failed = 0;
    MEASURED(group, delta, failed = h_alloc_many(domain, size, n, NULL));
    return failed;
}

/* The most blocks h_cross_measured takes: their addresses are kept on the
   stack, since a malloc of this helper's own is native and would be
   charged. */
#define H_CROSS_MAX 1024

/* n blocks of `size` bytes allocated through alloc_domain, then freed
   through free_domain (0 and 5: RAW without and with the GIL; 3 and 4:
   native), measured in C like h_alloc_many_measured. -1 when n is out of
   range or the tracker's C API or the group cannot be read. */
int h_cross_measured(int alloc_domain, int free_domain, size_t size, int n, uint64_t group,
                     uint64_t *delta)
{
    uintptr_t ptrs[H_CROSS_MAX] = {0};
    int failed = 0;
    if (n < 0 || n > H_CROSS_MAX)
        return -1;
    MEASURED(group, delta, {
        failed = h_alloc_many(alloc_domain, size, n, ptrs);
        h_free_many(free_domain, ptrs, n);
    });
    return failed;
}

/* ------------------------------------------------ the malloc family, one by one */

/* One call of the family member `fn` (H_NATIVE_* in helper.h) with
   arguments a and b, as an extension would make it; the block or 0. */
uintptr_t h_native_call(int fn, size_t a, size_t b)
{
    void *p = NULL;
    switch (fn) {
    case 0: p = malloc(a); break;
    case 1: p = calloc(a, b); break;
    case 2: if (posix_memalign(&p, a, b) != 0) p = NULL; break;
    case 3: p = aligned_alloc(a, b); break;
    case 4: p = memalign(a, b); break;
    case 5: p = valloc(a); break;
    case 6: p = pvalloc(a); break;
    case 7: p = reallocarray(NULL, a, b); break;
    default: break;
    }
    return (uintptr_t)p;
}

/* C23's sized frees (glibc 2.41+), weak: NULL where the C library has none.
   Called through this object's GOT, as an extension would call them (a
   pointer from dlsym would bypass native mode's patched slots). */
void free_sized(void *ptr, size_t size);
void free_aligned_sized(void *ptr, size_t alignment, size_t size);
#pragma weak free_sized
#pragma weak free_aligned_sized

/* free, free_sized or free_aligned_sized (fn 0, 1, 2) of p; the last two
   only where the C library has them (else -1 and p is not freed). */
int h_native_free(int fn, uintptr_t p, size_t alignment, size_t size)
{
    if (fn == 0) {
        free((void *)p);
        return 0;
    }
    if (fn == 1 && free_sized != NULL) {
        free_sized((void *)p, size);
        return 0;
    }
    if (fn == 2 && free_aligned_sized != NULL) {
        free_aligned_sized((void *)p, alignment, size);
        return 0;
    }
    return -1;
}

/* h_native_call measured in C like h_alloc_many_measured; the block goes
   to *out. */
int h_native_call_measured(int fn, size_t a, size_t b, uint64_t group, uint64_t *delta,
                           uintptr_t *out)
{
    MEASURED(group, delta, *out = h_native_call(fn, a, b));
    return *out == 0;
}

/* realloc(p, size) measured in C; the block goes to *out. */
int h_native_realloc_measured(uintptr_t p, size_t size, uint64_t group, uint64_t *delta,
                              uintptr_t *out)
{
    MEASURED(group, delta, *out = (uintptr_t)realloc((void *)p, size));
    return 0;
}

/* h_native_free measured in C. */
int h_native_free_measured(int fn, uintptr_t p, size_t alignment, size_t size, uint64_t group,
                           uint64_t *delta)
{
    int rc = 0;
    MEASURED(group, delta, rc = h_native_free(fn, p, alignment, size));
    return rc;
}

/* A malloc-like function of another library (loaded with ctypes), called
   through its address and measured in C like h_native_call_measured. */
int h_call_alloc_measured(uintptr_t fn, size_t size, uint64_t group, uint64_t *delta,
                          uintptr_t *out)
{
    MEASURED(group, delta, *out = (uintptr_t)((void *(*)(size_t))fn)(size));
    return *out == 0;
}

/* A free-like function of another library, the same way. */
int h_call_free_measured(uintptr_t fn, uintptr_t p, uint64_t group, uint64_t *delta)
{
    MEASURED(group, delta, ((void (*)(void *))fn)((void *)p));
    return 0;
}

/* h_free in `domain` (which may not be the one that allocated ptr),
   measured in C. */
int h_free_measured(int domain, uintptr_t ptr, uint64_t group, uint64_t *delta)
{
    MEASURED(group, delta, h_free(domain, ptr));
    return 0;
}

/* n rounds, the GIL held throughout, of a MEM block of mem_size bytes then
   a block of other_size bytes through other_domain (5: RAW, 4: native, both
   under the GIL), each freed at once; measured in C like
   h_alloc_many_measured. The MEM allocation leaves the thread's
   attribution cache current, so in counts mode the other one is charged
   from that cache (core/track.c: twin_alloc_cached). -1 for another
   domain, or when the tracker's C API or the group cannot be read. */
static int interleaved(size_t mem_size, int other_domain, size_t other_size, int n,
                       uint64_t group, uint64_t *delta)
{
    int failed = 0;
    MEASURED(group, delta, {
        for (int i = 0; i < n; i++) {
            void *m = PyMem_Malloc(mem_size);
            void *o = do_malloc(other_domain, other_size);
            failed += (m == NULL) + (o == NULL);
            if (o != NULL)
                do_free(other_domain, o);
            PyMem_Free(m);
        }
    });
    return failed;
}

int h_interleaved_measured(size_t mem_size, int other_domain, size_t other_size, int n,
                           uint64_t group, uint64_t *delta)
{
    if (other_domain != 4 && other_domain != 5)
        return -1;
    PyGILState_STATE gil = PyGILState_Ensure();
    int rc = interleaved(mem_size, other_domain, other_size, n, group, delta);
    PyGILState_Release(gil);
    return rc;
}

/* ------------------------------------------------------------- peaks */

#define H_PEAK_MAX 4096
static uintptr_t h_peak_blocks[H_PEAK_MAX];
static int h_peak_first, h_peak_end, h_peak_domain;

/* Live bytes that rise and fall within one call, with no Python code in
   between: n1 blocks of `size`, the first k of them freed, n2 more. All are
   freed before returning unless `keep`, in which case they stay alive until
   h_peak_release(). The calling group's peak then rose by exactly
   size * max(n1, n1 - k + n2). -1 on a bad argument or a failed allocation. */
int h_peak_sequence(int domain, size_t size, int n1, int k, int n2, int keep)
{
    if (n1 < 0 || k < 0 || k > n1 || n2 < 0 || n1 + n2 > H_PEAK_MAX || h_peak_end != 0)
        return -1;
    /* Zeroed: h_free_many skips a slot whose allocation failed. */
    memset(h_peak_blocks, 0, (size_t)(n1 + n2) * sizeof(h_peak_blocks[0]));
    h_peak_domain = domain;
    h_peak_end = n1 + n2;
    int failed = h_alloc_many(domain, size, n1, h_peak_blocks);
    h_free_many(domain, h_peak_blocks, k);
    h_peak_first = k;
    failed += h_alloc_many(domain, size, n2, h_peak_blocks + n1);
    if (!keep || failed)
        h_peak_release();
    return failed ? -1 : 0;
}

/* Free what h_peak_sequence kept. */
void h_peak_release(void)
{
    h_free_many(h_peak_domain, h_peak_blocks + h_peak_first, h_peak_end - h_peak_first);
    h_peak_first = h_peak_end = 0;
}

/* The allocators of the three PyMem domains when h_allocators_snapshot ran. */
static PyMemAllocatorEx h_snapshot[3];

/* Remember each domain's allocator (GIL held: cffi releases it). */
void h_allocators_snapshot(void)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    for (int d = 0; d < 3; d++)
        PyMem_GetAllocator((PyMemAllocatorDomain)d, &h_snapshot[d]);
    PyGILState_Release(gil);
}

/* Which functions of `domain`'s allocator now differ from the snapshot's:
   bit 0 ctx, 1 malloc, 2 calloc, 3 realloc, 4 free. */
int h_allocator_changes(int domain)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    PyMemAllocatorEx now;
    PyMem_GetAllocator((PyMemAllocatorDomain)domain, &now);
    PyGILState_Release(gil);
    const PyMemAllocatorEx *then = &h_snapshot[domain];
    return (now.ctx != then->ctx) | (now.malloc != then->malloc) << 1 |
           (now.calloc != then->calloc) << 2 | (now.realloc != then->realloc) << 3 |
           (now.free != then->free) << 4;
}

/* A fork child signals itself SIGTERM from a pthread_atfork child handler:
   inside fork(), before CPython's own after-fork steps run, as a signal
   that reaches a child before it first runs does. */
static void sigterm_self(void)
{
    kill(getpid(), SIGTERM);
}

int h_sigterm_in_fork_children(void)
{
    return pthread_atfork(NULL, NULL, sigterm_self);
}
