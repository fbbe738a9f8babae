/*
 * Test-only native helper: allocates exact sizes in a chosen PyMem domain,
 * with no Python allocation in between, so tests can assert exact figures.
 * MEM and OBJ calls take the GIL (cffi releases it around calls); RAW calls
 * run without it, as real RAW users do.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#include "tracker_capi.h"

#include "helper.h"

static void *do_malloc(int domain, size_t size)
{
    switch (domain) {
    case 0: return PyMem_RawMalloc(size);
    case 1: return PyMem_Malloc(size);
    default: return PyObject_Malloc(size);
    }
}

static void *do_calloc(int domain, size_t n, size_t size)
{
    switch (domain) {
    case 0: return PyMem_RawCalloc(n, size);
    case 1: return PyMem_Calloc(n, size);
    default: return PyObject_Calloc(n, size);
    }
}

static void *do_realloc(int domain, void *p, size_t size)
{
    switch (domain) {
    case 0: return PyMem_RawRealloc(p, size);
    case 1: return PyMem_Realloc(p, size);
    default: return PyObject_Realloc(p, size);
    }
}

static void do_free(int domain, void *p)
{
    switch (domain) {
    case 0: PyMem_RawFree(p); break;
    case 1: PyMem_Free(p); break;
    default: PyObject_Free(p); break;
    }
}

#define WITH_GIL(domain, stmt)                                    \
    do {                                                          \
        if ((domain) == 0) {                                      \
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

/* h_alloc_many, measured in C: the change of `group`'s counters across the
   loop goes to delta[0..3] (alloc bytes, alloc count, freed bytes, freed
   count). No Python code runs in this thread between the two reads, so
   nothing but the loop's own blocks can be charged there. -1 when the
   tracker's C API or the group cannot be read. */
int h_alloc_many_measured(int domain, size_t size, int n, uint64_t group, uint64_t *delta)
{
    const oa_tracker_capi *api = tracker_api();
    oa_group_counts before, after;
    if (api == NULL || api->group_counts(group, &before) != 0)
        return -1;
    int failed = h_alloc_many(domain, size, n, NULL);
    if (api->group_counts(group, &after) != 0)
        return -1;
    delta[0] = after.alloc_bytes - before.alloc_bytes;
    delta[1] = after.alloc_count - before.alloc_count;
    delta[2] = after.freed_bytes - before.freed_bytes;
    delta[3] = after.freed_count - before.freed_count;
    return failed;
}
