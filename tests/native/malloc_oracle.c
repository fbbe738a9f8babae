/*
 * Test-only oracle for native mode: an LD_PRELOAD malloc family that counts,
 * on the calling thread and between oracle_start() and oracle_stop(), the
 * bytes requested by calls whose caller lies in one chosen library. A test
 * runs the same work under it (without otel_alloc) and under the tracker,
 * and compares: an independent count of what native mode must see.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

static void *(*real_malloc)(size_t);
static void *(*real_calloc)(size_t, size_t);
static void *(*real_realloc)(void *, size_t);
static int (*real_posix_memalign)(void **, size_t, size_t);
static void *(*real_aligned_alloc)(size_t, size_t);

static __thread int counting;
static __thread uint64_t counted_bytes, counted_calls;
static uintptr_t target_start, target_end;

/* dlsym may allocate (calloc) before the real functions are known. */
static char bootstrap[4096];
static size_t bootstrap_used;

static void resolve(void)
{
    static int resolving;
    if (real_malloc != NULL || resolving)
        return;
    resolving = 1;
    real_calloc = dlsym(RTLD_NEXT, "calloc");
    real_realloc = dlsym(RTLD_NEXT, "realloc");
    real_posix_memalign = dlsym(RTLD_NEXT, "posix_memalign");
    real_aligned_alloc = dlsym(RTLD_NEXT, "aligned_alloc");
    real_malloc = dlsym(RTLD_NEXT, "malloc");
    resolving = 0;
}

static void *from_bootstrap(size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (bootstrap_used + n > sizeof(bootstrap))
        return NULL;
    void *p = bootstrap + bootstrap_used;
    bootstrap_used += n;
    return p;
}

static inline void note(void *caller, void *p, size_t n)
{
    uintptr_t a = (uintptr_t)caller;
    if (counting && p != NULL && a >= target_start && a < target_end) {
        counted_bytes += n;
        counted_calls++;
    }
}

void *malloc(size_t n)
{
    resolve();
    if (real_malloc == NULL)
        return from_bootstrap(n);
    void *p = real_malloc(n);
    note(__builtin_return_address(0), p, n);
    return p;
}

void *calloc(size_t a, size_t b)
{
    resolve();
    if (real_calloc == NULL)
        return from_bootstrap(a * b); /* zeroed: static storage */
    void *p = real_calloc(a, b);
    note(__builtin_return_address(0), p, a * b);
    return p;
}

void *realloc(void *ptr, size_t n)
{
    resolve();
    void *p = real_realloc(ptr, n);
    note(__builtin_return_address(0), p, n);
    return p;
}

int posix_memalign(void **out, size_t align, size_t n)
{
    resolve();
    int rc = real_posix_memalign(out, align, n);
    note(__builtin_return_address(0), rc == 0 ? *out : NULL, n);
    return rc;
}

void *aligned_alloc(size_t align, size_t n)
{
    resolve();
    void *p = real_aligned_alloc(align, n);
    note(__builtin_return_address(0), p, n);
    return p;
}

void free(void *p)
{
    static void (*real_free)(void *);
    if ((char *)p >= bootstrap && (char *)p < bootstrap + sizeof(bootstrap))
        return;
    if (real_free == NULL)
        real_free = dlsym(RTLD_NEXT, "free");
    real_free(p);
}

static int find_target(struct dl_phdr_info *info, size_t size, void *data)
{
    if (info->dlpi_name == NULL || strstr(info->dlpi_name, (const char *)data) == NULL)
        return 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X)) {
            target_start = info->dlpi_addr + ph->p_vaddr;
            target_end = target_start + ph->p_memsz;
            return 1;
        }
    }
    return 0;
}

/* Count calls made from the code of the loaded object whose path contains
   `name`; 0 when no such object is loaded. */
int oracle_target(const char *name)
{
    target_start = target_end = 0;
    return dl_iterate_phdr(find_target, (void *)name);
}

void oracle_start(void)
{
    counted_bytes = counted_calls = 0;
    counting = 1;
}

void oracle_stop(uint64_t *out)
{
    counting = 0;
    out[0] = counted_bytes;
    out[1] = counted_calls;
}
