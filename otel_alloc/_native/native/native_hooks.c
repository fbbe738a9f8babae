/*
 * Native mode: hooks for the malloc family that GOT patching puts in the
 * way of extension modules and the shared libraries they load (see
 * native_hooks.h and elf_patch.h).
 *
 * Rules these hooks keep, on top of those of core/hooks.c:
 *  - They may run on any thread, with or without the GIL or a thread state,
 *    before Python starts a thread's state and after it is gone: they touch
 *    only thread-local storage, atomics and spinlocked tables, like the RAW
 *    hook, and charge the group the thread last resolved.
 *  - They call the malloc family through this object's own GOT, which is
 *    never patched: whatever the process's malloc is (libc, ASan's, a
 *    preloaded allocator), that is what the patched slot pointed at.
 *  - A call made while the thread is inside one of our hooks passes through
 *    (tls.guard), so the tracker's bookkeeping is never charged.
 *  - Which objects are left alone is decided once, by path, in skip_object:
 *    the C library and the loader (their internal calls are not ours to
 *    see), sanitizer runtimes and allocators, the tracker itself, and
 *    libpython, whose own malloc calls are the RAW domain's (only its dlopen
 *    is patched, so extension modules imported later are patched too).
 */
#define _GNU_SOURCE
#include "native_hooks.h"

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dlfcn.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#include "../api/tracker_api.h"
#include "../core/hooks.h"
#include "../core/tls.h"
#include "elf_patch.h"

_Atomic int g_native_on;

/* ------------------------------------------------------------------ hooks */

static inline int tracking(void)
{
    return !tls.guard && atomic_load_explicit(&g_native_on, memory_order_relaxed) &&
           atomic_load_explicit(&g_mode, memory_order_relaxed) != OA_MODE_NONE;
}

static inline int sees_frees(void)
{
    return oa_mode_sees_frees(atomic_load_explicit(&g_mode, memory_order_relaxed));
}

/* A hook for an allocating member of the family: `call` (which uses the
   hook's parameters) allocates `size` bytes. One definition per member. */
#define OA_NATIVE_ALLOC_HOOK(name, params, call, size)                            \
    static void *native_##name params                                          \
    {                                                                          \
        if (!tracking())                                                       \
            return call;                                                       \
        tls.guard = 1;                                                         \
        void *p = call;                                                        \
        oa_track_if_enabled(OA_DOMAIN_NATIVE, p, size);                        \
        tls.guard = 0;                                                         \
        return p;                                                              \
    }

OA_NATIVE_ALLOC_HOOK(malloc, (size_t size), malloc(size), size)
/* On success the product did not overflow. */
OA_NATIVE_ALLOC_HOOK(calloc, (size_t nelem, size_t elsize), calloc(nelem, elsize), nelem * elsize)
OA_NATIVE_ALLOC_HOOK(aligned_alloc, (size_t alignment, size_t size),
                     aligned_alloc(alignment, size), size)
OA_NATIVE_ALLOC_HOOK(memalign, (size_t alignment, size_t size), memalign(alignment, size), size)
OA_NATIVE_ALLOC_HOOK(valloc, (size_t size), valloc(size), size)
OA_NATIVE_ALLOC_HOOK(pvalloc, (size_t size), pvalloc(size), size)

static void *call_realloc(void *ctx, void *ptr, size_t size)
{
    return realloc(ptr, size);
}

static void *native_realloc(void *ptr, size_t size)
{
    if (!tracking())
        return realloc(ptr, size);
    tls.guard = 1;
    void *p = oa_track_realloc(OA_DOMAIN_NATIVE, call_realloc, NULL, ptr, size);
    tls.guard = 0;
    return p;
}

static void *native_reallocarray(void *ptr, size_t nelem, size_t elsize)
{
    size_t size;
    if (!tracking() || __builtin_mul_overflow(nelem, elsize, &size))
        return reallocarray(ptr, nelem, elsize); /* an overflow fails, untouched */
    tls.guard = 1;
    void *p = oa_track_realloc(OA_DOMAIN_NATIVE, call_realloc, NULL, ptr, size);
    tls.guard = 0;
    return p;
}

/* The free functions of C23 (glibc 2.41+), looked up at run time: NULL
   where the C library has none, and then never hooked. */
static void (*g_free_sized)(void *, size_t);
static void (*g_free_aligned_sized)(void *, size_t, size_t);

/* Forget a block before it is freed: after the free, its address may be
   handed out again by another thread. */
static inline int before_free(void *ptr)
{
    if (ptr == NULL || !tracking() || !sees_frees())
        return 0;
    tls.guard = 1;
    oa_track_free(OA_DOMAIN_NATIVE, ptr);
    return 1;
}

static void native_free(void *ptr)
{
    int guarded = before_free(ptr);
    free(ptr);
    if (guarded)
        tls.guard = 0;
}

static void native_free_sized(void *ptr, size_t size)
{
    int guarded = before_free(ptr);
    g_free_sized(ptr, size);
    if (guarded)
        tls.guard = 0;
}

static void native_free_aligned_sized(void *ptr, size_t alignment, size_t size)
{
    int guarded = before_free(ptr);
    g_free_aligned_sized(ptr, alignment, size);
    if (guarded)
        tls.guard = 0;
}

static int native_posix_memalign(void **out, size_t alignment, size_t size)
{
    if (!tracking())
        return posix_memalign(out, alignment, size);
    tls.guard = 1;
    int rc = posix_memalign(out, alignment, size);
    oa_track_if_enabled(OA_DOMAIN_NATIVE, rc == 0 ? *out : NULL, size);
    tls.guard = 0;
    return rc;
}

static int repatch(void);

/* A library loaded while native mode is on is patched before its caller
   sees the handle; its constructors ran unpatched. */
static void *native_dlopen(const char *file, int flags)
{
    void *handle = dlopen(file, flags);
    if (handle != NULL && atomic_load_explicit(&g_native_on, memory_order_acquire))
        (void)repatch();
    return handle;
}

/* ------------------------------------------------------------- patching */

/* dlopen first: the loader symbols (elf_patch.h). */
#define OA_NLOADER 1
static oa_elf_symbol g_symbols[] = {
    {"dlopen", (void *)native_dlopen, NULL},
    {"malloc", (void *)native_malloc, NULL},
    {"calloc", (void *)native_calloc, NULL},
    {"realloc", (void *)native_realloc, NULL},
    {"reallocarray", (void *)native_reallocarray, NULL},
    {"free", (void *)native_free, NULL},
    {"free_sized", (void *)native_free_sized, NULL},
    {"free_aligned_sized", (void *)native_free_aligned_sized, NULL},
    {"posix_memalign", (void *)native_posix_memalign, NULL},
    {"aligned_alloc", (void *)native_aligned_alloc, NULL},
    {"memalign", (void *)native_memalign, NULL},
    {"valloc", (void *)native_valloc, NULL},
    {"pvalloc", (void *)native_pvalloc, NULL},
};
#define OA_NSYMBOLS (sizeof(g_symbols) / sizeof(g_symbols[0]))

static void resolve_originals(void)
{
    /* The addresses every unpatched caller reaches, through our own GOT. */
    void *originals[] = {(void *)dlopen,        (void *)malloc,        (void *)calloc,
                         (void *)realloc,       (void *)reallocarray,  (void *)free,
                         NULL,                  NULL,                  (void *)posix_memalign,
                         (void *)aligned_alloc, (void *)memalign,      (void *)valloc,
                         (void *)pvalloc};
    g_free_sized = (void (*)(void *, size_t))dlsym(RTLD_DEFAULT, "free_sized");
    g_free_aligned_sized =
        (void (*)(void *, size_t, size_t))dlsym(RTLD_DEFAULT, "free_aligned_sized");
    originals[6] = (void *)g_free_sized;
    originals[7] = (void *)g_free_aligned_sized;
    for (size_t i = 0; i < OA_NSYMBOLS; i++)
        g_symbols[i].original = originals[i];
}

static int has_prefix(const char *name, const char *prefix)
{
    return strncmp(name, prefix, strlen(prefix)) == 0;
}

static int skip_object(const char *path, int holds_python)
{
    if (holds_python)
        return OA_PATCH_LOADER_ONLY;
    const char *slash = strrchr(path, '/');
    const char *name = slash != NULL ? slash + 1 : path;
    static const char *const skipped[] = {
        "linux-vdso", "linux-gate", "ld-linux", "ld64.so", "libc.so", "libc-",
        "libasan", "libtsan", "libubsan", "liblsan", "libmsan", "libhwasan",
        "vgpreload", "libjemalloc", "libtcmalloc", "libmimalloc",
        /* The span path of the tracker (the tracker's own object is skipped
           by address in elf_patch.c). */
        "_spanpath.",
    };
    for (size_t i = 0; i < sizeof(skipped) / sizeof(skipped[0]); i++) {
        if (has_prefix(name, skipped[i]))
            return -1;
    }
    return OA_PATCH_ALL;
}

static int repatch(void)
{
    return oa_elf_patch(g_symbols, OA_NSYMBOLS, OA_NLOADER, OA_ELF_PATCH, skip_object);
}

static void restore_all(void)
{
    (void)oa_elf_patch(g_symbols, OA_NSYMBOLS, OA_NLOADER, OA_ELF_RESTORE, skip_object);
}

/* Called with the GIL held (install.c serializes installs through it). */
int oa_native_start(void)
{
    if (atomic_load_explicit(&g_native_on, memory_order_relaxed))
        return OA_ALREADY;
    if (g_symbols[1].original == NULL)
        resolve_originals();
    atomic_store_explicit(&g_native_on, 1, memory_order_release);
    if (repatch() < 0) {
        atomic_store_explicit(&g_native_on, 0, memory_order_release);
        restore_all();
        return OA_ERR_NATIVE;
    }
    return OA_OK;
}

void oa_native_stop(void)
{
    if (!atomic_load_explicit(&g_native_on, memory_order_relaxed))
        return;
    /* Off first: a hook still reached through a slot (a dlopen racing this
       restore may patch one again) passes straight through. */
    atomic_store_explicit(&g_native_on, 0, memory_order_release);
    restore_all();
}

/* ------------------------------------------------------------ interface */

int oa_native_set(int on)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    int rc;
    if (!on) {
        oa_native_stop();
        rc = OA_OK;
    } else if (atomic_load_explicit(&g_mode, memory_order_relaxed) == OA_MODE_NONE) {
        rc = OA_ERR_NOT_INSTALLED;
    } else {
        rc = oa_native_start();
    }
    PyGILState_Release(gil);
    return rc;
}

int oa_native_enabled(void)
{
    return atomic_load_explicit(&g_native_on, memory_order_relaxed);
}

uint64_t oa_native_patched_slots(void)
{
    if (g_symbols[1].original == NULL)
        return 0;
    int n = oa_elf_patch(g_symbols, OA_NSYMBOLS, OA_NLOADER, OA_ELF_COUNT, skip_object);
    return n > 0 ? (uint64_t)n : 0;
}
