/*
 * otel_alloc native tracker: PyMem hooks on the RAW, MEM and OBJ domains that
 * charge every allocation to an allocation group.
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
#include "tracker.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/syscall.h>
#endif

#if PY_VERSION_HEX >= 0x030D0000
#define OA_TSTATE() PyThreadState_GetUnchecked()
#else
#define OA_TSTATE() _PyThreadState_UncheckedGet()
#endif

#define OA_MAX_THREADS 4096
#define OA_GROUP_FREE 0
#define OA_GROUP_OPEN 1
#define OA_GROUP_CLOSED 2
#define OA_FIRST_USER_SLOT 2
#define OA_NO_SLOT UINT32_MAX

/* ------------------------------------------------------------------ state */

typedef struct {
    PyMemAllocatorEx prev; /* the allocator we wrapped: always called */
    int domain;
} oa_hook;

typedef struct oa_thread {
    uint64_t native_id;
    _Atomic int alive;
    oa_ctr c;              /* written by the owning thread only */
    _Atomic int64_t peak;  /* high-water mark of c.live_bytes (net bytes) */
} oa_thread;

typedef struct {
    _Atomic uint64_t gen; /* full generation; group id = gen << 20 | slot */
    _Atomic int state;
    oa_ctr gil; /* MEM/OBJ: updated under the GIL */
    oa_ctr raw; /* RAW: updated with atomic read-modify-write */
    _Atomic int64_t peak;
    uint32_t next; /* FIFO free-slot queue link */
} oa_group;

/* Thread-local state in one struct so a hook pays for one TLS address. The
   initial-exec model avoids __tls_get_addr calls; the struct is small enough
   for glibc's static TLS surplus reserved for dlopen'ed modules. */
typedef struct {
    int guard;
    int probing;
    int probe_hits;
    int no_record; /* thread exited, or the registry was full */
    uint64_t gid;  /* group resolved by the last MEM/OBJ hook, used by RAW */
    oa_thread *rec;
    /* Cache of the last resolution: valid while the thread state, its context
       object and its context version are unchanged. CPython bumps
       context_ver whenever a context is entered or left (Context.run, asyncio
       task steps); our own ContextVar.set calls are followed by
       oa_set_thread_group, which drops the cache. */
    int ctx_valid;
    uint64_t ctx_ver;
    uint64_t ctx_tsid;
    void *ctx_obj;
} oa_tls;

static __thread oa_tls tls __attribute__((tls_model("initial-exec")));

static oa_hook g_hooks[3];
static int g_hooked[3]; /* our hook of that domain is (believed) in the chain */

static _Atomic int g_mode;
static _Atomic int g_enabled;
static _Atomic uint64_t g_threshold;

static PyObject *g_ctxvar; /* strong reference, set under the GIL */

static oa_group *_Atomic g_groups;
static uint32_t g_ngroups;
static uint32_t g_free_head = OA_NO_SLOT, g_free_tail = OA_NO_SLOT;
static uint64_t g_groups_open;
/* Group tables replaced by a reinstall with another size are kept, never
   freed: a RAW hook on another thread may still hold a pointer into one. */
static oa_group *g_retired_groups[16];
static int g_nretired;

static oa_ctr g_proc[3];
static _Atomic int64_t g_proc_peak;

static oa_ptable g_gil_table; /* MEM/OBJ blocks, guarded by the GIL */
static oa_ptable g_raw_table; /* RAW blocks, guarded by g_raw_lock */
static oa_spin g_raw_lock = {ATOMIC_FLAG_INIT};

static oa_thread *g_threads[OA_MAX_THREADS];
static int g_nthreads;
static oa_spin g_threads_lock = {ATOMIC_FLAG_INIT};
static pthread_key_t g_thread_key;

static oa_event *g_ring;
static uint32_t g_ring_cap, g_ring_head, g_ring_len;
static oa_spin g_ring_lock = {ATOMIC_FLAG_INIT};

static _Atomic uint64_t g_groups_dropped, g_events_dropped, g_untracked_raw,
    g_tracking_failures, g_replaced, g_released_free_bytes, g_threads_dropped,
    g_stale_raw;
static _Atomic uint64_t g_untracked_gil, g_stale_gil; /* under the GIL */

static pthread_once_t g_once = PTHREAD_ONCE_INIT;

/* ------------------------------------------------------------ primitives */

void oa_spin_lock(oa_spin *s)
{
    unsigned spins = 0;
    while (atomic_flag_test_and_set_explicit(&s->flag, memory_order_acquire)) {
        if (++spins > 64) {
            sched_yield();
            spins = 0;
        }
    }
}

static inline void plain_inc(_Atomic uint64_t *c, uint64_t by)
{
    atomic_store_explicit(c, atomic_load_explicit(c, OA_RELAXED) + by, OA_RELAXED);
}

static uint64_t native_thread_id(void)
{
#ifdef __linux__
    return (uint64_t)syscall(SYS_gettid);
#else
    return (uint64_t)(uintptr_t)pthread_self();
#endif
}

/* --------------------------------------------------------------- threads */

static void thread_exit(void *arg)
{
    oa_thread *rec = arg;
    atomic_store_explicit(&rec->alive, 0, OA_RELAXED);
    tls.rec = NULL;
    tls.no_record = 1;
}

static void zero_thread(oa_thread *rec)
{
    oa_ctr_zero(&rec->c);
    atomic_store_explicit(&rec->peak, 0, OA_RELAXED);
}

/* Called from a hook the first time a thread allocates. */
static oa_thread *thread_record_slow(void)
{
    oa_thread *rec = NULL;
    oa_spin_lock(&g_threads_lock);
    if (g_nthreads < OA_MAX_THREADS) {
        rec = calloc(1, sizeof(oa_thread));
        if (rec != NULL)
            g_threads[g_nthreads++] = rec;
    } else {
        /* Full: reuse the record of a thread that has exited. */
        for (int i = 0; i < g_nthreads; i++) {
            if (!atomic_load_explicit(&g_threads[i]->alive, OA_RELAXED)) {
                rec = g_threads[i];
                zero_thread(rec);
                break;
            }
        }
    }
    if (rec != NULL) {
        rec->native_id = native_thread_id();
        atomic_store_explicit(&rec->alive, 1, OA_RELAXED);
    }
    oa_spin_unlock(&g_threads_lock);
    if (rec == NULL) {
        atomic_fetch_add_explicit(&g_threads_dropped, 1, OA_RELAXED);
        tls.no_record = 1;
        return NULL;
    }
    /* The destructor marks the record dead at thread exit. */
    pthread_setspecific(g_thread_key, rec);
    tls.rec = rec;
    return rec;
}

static inline oa_thread *thread_record(void)
{
    oa_thread *rec = tls.rec;
    if (rec != NULL || tls.no_record)
        return rec;
    return thread_record_slow();
}

/* ---------------------------------------------------------------- groups */

static inline oa_group *group_table(void)
{
    return atomic_load_explicit(&g_groups, memory_order_acquire);
}

/* The group an allocation under `gid` is charged to: the open group itself,
   or group 0 (no group) for an unknown, closed or recycled id. */
static inline oa_group *group_for_alloc(oa_group *groups, uint64_t gid, int raw)
{
    uint32_t slot = (uint32_t)(gid & OA_SLOT_MASK);
    if (slot < OA_FIRST_USER_SLOT)
        return &groups[slot];
    if (slot < g_ngroups) {
        oa_group *g = &groups[slot];
        if (atomic_load_explicit(&g->gen, OA_RELAXED) == (gid >> OA_SLOT_BITS) &&
            atomic_load_explicit(&g->state, OA_RELAXED) == OA_GROUP_OPEN)
            return g;
    }
    if (raw)
        atomic_fetch_add_explicit(&g_stale_raw, 1, OA_RELAXED);
    else
        plain_inc(&g_stale_gil, 1);
    return &groups[0];
}

/* The group that allocated a block, from its packed table entry, or NULL
   when that group has been released since. */
static inline oa_group *group_for_free(oa_group *groups, uint64_t meta)
{
    uint32_t slot = oa_meta_slot(meta);
    if (slot >= g_ngroups)
        return NULL;
    oa_group *g = &groups[slot];
    if ((atomic_load_explicit(&g->gen, OA_RELAXED) & 0xFFFFu) != oa_meta_gen16(meta) ||
        atomic_load_explicit(&g->state, OA_RELAXED) == OA_GROUP_FREE)
        return NULL;
    return g;
}

static void reset_group(oa_group *g)
{
    oa_ctr_zero(&g->gil);
    oa_ctr_zero(&g->raw);
    atomic_store_explicit(&g->peak, 0, OA_RELAXED);
}

static void groups_reset_all(void)
{
    oa_group *groups = group_table();
    g_free_head = g_free_tail = OA_NO_SLOT;
    for (uint32_t i = 0; i < g_ngroups; i++) {
        oa_group *g = &groups[i];
        reset_group(g);
        g->next = OA_NO_SLOT;
        if (i < OA_FIRST_USER_SLOT) {
            atomic_store_explicit(&g->state, OA_GROUP_OPEN, OA_RELAXED);
            continue;
        }
        atomic_store_explicit(&g->state, OA_GROUP_FREE, OA_RELAXED);
        if (g_free_tail == OA_NO_SLOT)
            g_free_head = i;
        else
            groups[g_free_tail].next = i;
        g_free_tail = i;
    }
    g_groups_open = 0;
}

/* ---------------------------------------------------------------- events */

static void push_event(int domain, uint64_t size, uint64_t gid)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    oa_thread *rec = tls.rec;
    oa_spin_lock(&g_ring_lock);
    if (g_ring == NULL || g_ring_len == g_ring_cap) {
        oa_spin_unlock(&g_ring_lock);
        atomic_fetch_add_explicit(&g_events_dropped, 1, OA_RELAXED);
        return;
    }
    oa_event *e = &g_ring[(g_ring_head + g_ring_len) % g_ring_cap];
    e->timestamp_ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    e->size = size;
    e->group = gid;
    e->native_id = rec != NULL ? rec->native_id : 0;
    e->domain = domain;
    g_ring_len++;
    oa_spin_unlock(&g_ring_lock);
}

/* ----------------------------------------------------------- attribution */

/* Group of the running context. Only from MEM/OBJ hooks: the GIL is held,
   so the thread state read here is this thread's. */
static inline uint64_t resolve_gid(void)
{
    PyObject *var = g_ctxvar;
    if (var == NULL)
        return tls.gid;
    PyThreadState *ts = OA_TSTATE();
    if (ts == NULL)
        return tls.gid;
    if (tls.ctx_valid && ts->context_ver == tls.ctx_ver && ts->context == tls.ctx_obj &&
        (uint64_t)ts->id == tls.ctx_tsid)
        return tls.gid;
    PyObject *val = NULL;
    if (PyContextVar_Get(var, NULL, &val) < 0) {
        /* Cannot happen for a real ContextVar; never leave an error set. */
        PyErr_Clear();
        return tls.gid;
    }
    uint64_t gid = 0;
    if (val != NULL) {
        if (PyLong_CheckExact(val))
            gid = (uint64_t)PyLong_AsUnsignedLongLongMask(val);
        /* The context still holds val, so this never deallocates. */
        Py_DECREF(val);
    }
    tls.gid = gid;
    tls.ctx_ver = ts->context_ver;
    tls.ctx_obj = ts->context;
    tls.ctx_tsid = (uint64_t)ts->id;
    tls.ctx_valid = 1;
    return gid;
}

/* ------------------------------------------------------------ accounting */

static inline void table_lock(int raw)
{
    if (raw)
        oa_spin_lock(&g_raw_lock);
}
static inline void table_unlock(int raw)
{
    if (raw)
        oa_spin_unlock(&g_raw_lock);
}

static void charge_free(oa_group *groups, int domain, uint64_t size, uint64_t meta)
{
    int raw = domain == OA_DOMAIN_RAW;
    oa_group *g = group_for_free(groups, meta);
    if (raw) {
        if (g != NULL) {
            oa_ctr_free_atomic(&g->raw, size);
            oa_ctr_live_atomic(&g->raw, -(int64_t)size, -1);
        } else {
            atomic_fetch_add_explicit(&g_released_free_bytes, size, OA_RELAXED);
        }
        oa_ctr_free_atomic(&g_proc[domain], size);
        oa_ctr_live_atomic(&g_proc[domain], -(int64_t)size, -1);
    } else {
        if (g != NULL) {
            oa_ctr_free_plain(&g->gil, size);
            oa_ctr_live_plain(&g->gil, -(int64_t)size, -1);
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

static inline int64_t proc_live(void)
{
    return atomic_load_explicit(&g_proc[0].live_bytes, OA_RELAXED) +
           atomic_load_explicit(&g_proc[1].live_bytes, OA_RELAXED) +
           atomic_load_explicit(&g_proc[2].live_bytes, OA_RELAXED);
}

static void on_alloc(int domain, void *ptr, size_t size)
{
    int raw = domain == OA_DOMAIN_RAW;
    uint64_t gid = raw ? tls.gid : resolve_gid();
    oa_group *groups = group_table();
    oa_group *g = group_for_alloc(groups, gid, raw);
    oa_ctr *gc = raw ? &g->raw : &g->gil;
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

    if (atomic_load_explicit(&g_mode, OA_RELAXED) == OA_MODE_LIVE) {
        oa_ptable *t = raw ? &g_raw_table : &g_gil_table;
        uint64_t meta = oa_meta_pack(size, (uint32_t)(g - groups),
                                     atomic_load_explicit(&g->gen, OA_RELAXED));
        uint64_t old_size = 0, old_meta = 0;
        int r = -1;
        table_lock(raw);
        if (t->slots != NULL)
            r = oa_ptable_put(t, (uintptr_t)ptr, size, meta, &old_size, &old_meta);
        table_unlock(raw);
        if (r < 0) {
            atomic_fetch_add_explicit(&g_tracking_failures, 1, OA_RELAXED);
        } else {
            if (r == 1) {
                atomic_fetch_add_explicit(&g_replaced, 1, OA_RELAXED);
                charge_free(groups, domain, old_size, old_meta);
            }
            if (raw) {
                oa_ctr_live_atomic(gc, (int64_t)size, 1);
                oa_ctr_live_atomic(&g_proc[domain], (int64_t)size, 1);
            } else {
                oa_ctr_live_plain(gc, (int64_t)size, 1);
                oa_ctr_live_plain(&g_proc[domain], (int64_t)size, 1);
            }
            oa_peak_update(&g->peak, atomic_load_explicit(&g->gil.live_bytes, OA_RELAXED) +
                                         atomic_load_explicit(&g->raw.live_bytes, OA_RELAXED));
            oa_peak_update(&g_proc_peak, proc_live());
            if (rec != NULL) {
                oa_ctr_live_plain(&rec->c, (int64_t)size, 1);
                int64_t net = atomic_load_explicit(&rec->c.live_bytes, OA_RELAXED);
                if (net > atomic_load_explicit(&rec->peak, OA_RELAXED))
                    atomic_store_explicit(&rec->peak, net, OA_RELAXED);
            }
        }
    }

    uint64_t threshold = atomic_load_explicit(&g_threshold, OA_RELAXED);
    if (threshold != 0 && size >= threshold)
        push_event(domain, size, gid);
}

/* Remove ptr from the live table; 1 with its size and meta when tracked. */
static inline int forget_block(int domain, void *ptr, uint64_t *size, uint64_t *meta)
{
    int raw = domain == OA_DOMAIN_RAW;
    oa_ptable *t = raw ? &g_raw_table : &g_gil_table;
    int found = 0;
    table_lock(raw);
    if (t->slots != NULL)
        found = oa_ptable_pop(t, (uintptr_t)ptr, size, meta);
    table_unlock(raw);
    if (!found) {
        if (raw)
            atomic_fetch_add_explicit(&g_untracked_raw, 1, OA_RELAXED);
        else
            plain_inc(&g_untracked_gil, 1);
    }
    return found;
}

static void restore_block(int domain, void *ptr, uint64_t size, uint64_t meta)
{
    int raw = domain == OA_DOMAIN_RAW;
    oa_ptable *t = raw ? &g_raw_table : &g_gil_table;
    uint64_t os, om;
    table_lock(raw);
    if (t->slots != NULL)
        (void)oa_ptable_put(t, (uintptr_t)ptr, size, meta, &os, &om);
    table_unlock(raw);
}

/* ----------------------------------------------------------------- hooks */

#define OA_PROBE(h)                                  \
    do {                                             \
        if (tls.probing)                             \
            tls.probe_hits |= 1 << (h)->domain;      \
    } while (0)

static void *hook_malloc(void *ctx, size_t size)
{
    oa_hook *h = ctx;
    OA_PROBE(h);
    if (tls.guard || atomic_load_explicit(&g_mode, OA_RELAXED) == OA_MODE_NONE)
        return h->prev.malloc(h->prev.ctx, size);
    tls.guard = 1;
    void *p = h->prev.malloc(h->prev.ctx, size);
    if (p != NULL && atomic_load_explicit(&g_enabled, OA_RELAXED))
        on_alloc(h->domain, p, size);
    tls.guard = 0;
    return p;
}

static void *hook_calloc(void *ctx, size_t nelem, size_t elsize)
{
    oa_hook *h = ctx;
    OA_PROBE(h);
    if (tls.guard || atomic_load_explicit(&g_mode, OA_RELAXED) == OA_MODE_NONE)
        return h->prev.calloc(h->prev.ctx, nelem, elsize);
    tls.guard = 1;
    void *p = h->prev.calloc(h->prev.ctx, nelem, elsize);
    /* On success nelem * elsize did not overflow. */
    if (p != NULL && atomic_load_explicit(&g_enabled, OA_RELAXED))
        on_alloc(h->domain, p, nelem * elsize);
    tls.guard = 0;
    return p;
}

/* A realloc counts as one allocation of the new size and, in live mode, one
   free of the old block charged to the group that allocated it. */
static void *hook_realloc(void *ctx, void *ptr, size_t size)
{
    oa_hook *h = ctx;
    OA_PROBE(h);
    int mode = atomic_load_explicit(&g_mode, OA_RELAXED);
    if (tls.guard || mode == OA_MODE_NONE)
        return h->prev.realloc(h->prev.ctx, ptr, size);
    tls.guard = 1;
    void *p;
    if (mode == OA_MODE_LIVE && ptr != NULL) {
        /* Forget the old block before the call: once realloc returns, its
           address may be handed out again by another thread. */
        uint64_t osize = 0, ometa = 0;
        int found = forget_block(h->domain, ptr, &osize, &ometa);
        p = h->prev.realloc(h->prev.ctx, ptr, size);
        if (p == NULL) {
            if (found)
                restore_block(h->domain, ptr, osize, ometa);
        } else {
            if (found)
                charge_free(group_table(), h->domain, osize, ometa);
            if (atomic_load_explicit(&g_enabled, OA_RELAXED))
                on_alloc(h->domain, p, size);
        }
    } else {
        p = h->prev.realloc(h->prev.ctx, ptr, size);
        if (p != NULL && atomic_load_explicit(&g_enabled, OA_RELAXED))
            on_alloc(h->domain, p, size);
    }
    tls.guard = 0;
    return p;
}

static void hook_free(void *ctx, void *ptr)
{
    oa_hook *h = ctx;
    OA_PROBE(h);
    /* Frees are accounted even while disabled, so live figures stay exact. */
    if (tls.guard || ptr == NULL || atomic_load_explicit(&g_mode, OA_RELAXED) != OA_MODE_LIVE) {
        h->prev.free(h->prev.ctx, ptr);
        return;
    }
    tls.guard = 1;
    uint64_t size = 0, meta = 0;
    if (forget_block(h->domain, ptr, &size, &meta))
        charge_free(group_table(), h->domain, size, meta);
    h->prev.free(h->prev.ctx, ptr);
    tls.guard = 0;
}

/* --------------------------------------------------------------- install */

static void atfork_child(void);

static void init_once(void)
{
    pthread_key_create(&g_thread_key, thread_exit);
    pthread_atfork(NULL, NULL, atfork_child);
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

static int hook_on_top(int domain)
{
    PyMemAllocatorEx cur;
    PyMem_GetAllocator((PyMemAllocatorDomain)domain, &cur);
    return cur.ctx == &g_hooks[domain] && cur.malloc == hook_malloc;
}

static void zero_figures(void)
{
    for (int d = 0; d < 3; d++)
        oa_ctr_zero(&g_proc[d]);
    atomic_store_explicit(&g_proc_peak, 0, OA_RELAXED);
    _Atomic uint64_t *counters[] = {&g_groups_dropped, &g_events_dropped, &g_untracked_raw,
                                    &g_tracking_failures, &g_replaced, &g_released_free_bytes,
                                    &g_threads_dropped, &g_stale_raw, &g_untracked_gil, &g_stale_gil};
    for (size_t i = 0; i < sizeof(counters) / sizeof(counters[0]); i++)
        atomic_store_explicit(counters[i], 0, OA_RELAXED);
    oa_spin_lock(&g_threads_lock);
    for (int i = 0; i < g_nthreads; i++)
        zero_thread(g_threads[i]);
    oa_spin_unlock(&g_threads_lock);
}

static int setup_groups(uint32_t max_groups)
{
    uint32_t n = max_groups + OA_FIRST_USER_SLOT;
    oa_group *cur = group_table();
    if (cur == NULL || g_ngroups != n) {
        oa_group *fresh = calloc(n, sizeof(oa_group));
        if (fresh == NULL)
            return -1;
        if (cur != NULL) {
            if (g_nretired == (int)(sizeof(g_retired_groups) / sizeof(g_retired_groups[0]))) {
                free(fresh);
                return -1;
            }
            g_retired_groups[g_nretired++] = cur;
        }
        /* Shrinking g_ngroups before publishing keeps slot checks in range
           for a RAW hook still looking at the old table. */
        if (cur != NULL && n < g_ngroups)
            g_ngroups = n;
        atomic_store_explicit(&g_groups, fresh, memory_order_release);
        g_ngroups = n;
    }
    groups_reset_all();
    return 0;
}

static int setup_ring(uint32_t capacity)
{
    oa_spin_lock(&g_ring_lock);
    if (g_ring_cap != capacity) {
        free(g_ring);
        g_ring = calloc(capacity, sizeof(oa_event));
        g_ring_cap = g_ring == NULL ? 0 : capacity;
    }
    g_ring_head = g_ring_len = 0;
    int ok = g_ring != NULL;
    oa_spin_unlock(&g_ring_lock);
    return ok ? 0 : -1;
}

static void drop_tables(void)
{
    /* Caller holds the GIL, so no MEM/OBJ hook is inside the GIL table. */
    oa_ptable_destroy(&g_gil_table);
    oa_spin_lock(&g_raw_lock);
    oa_ptable_destroy(&g_raw_table);
    oa_spin_unlock(&g_raw_lock);
}

static int setup_tables(void)
{
    drop_tables();
    if (oa_ptable_init(&g_gil_table) != 0)
        return -1;
    oa_ptable fresh;
    if (oa_ptable_init(&fresh) != 0) {
        oa_ptable_destroy(&g_gil_table);
        return -1;
    }
    oa_spin_lock(&g_raw_lock);
    g_raw_table = fresh;
    oa_spin_unlock(&g_raw_lock);
    return 0;
}

int oa_install(int mode, uint32_t max_groups, uint64_t threshold, uint32_t event_capacity)
{
    if (free_threaded())
        return OA_ERR_FREE_THREADED;
    if ((mode != OA_MODE_COUNTS && mode != OA_MODE_LIVE) || max_groups < 1 ||
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
    if (setup_groups(max_groups) != 0 || setup_ring(event_capacity) != 0 ||
        (mode == OA_MODE_LIVE && setup_tables() != 0)) {
        rc = OA_ERR_NOMEM;
        goto done;
    }
    zero_figures();
    atomic_store_explicit(&g_threshold, threshold, OA_RELAXED);
    tls.gid = 0;
    tls.ctx_valid = 0;

    for (int d = 0; d < 3; d++) {
        /* Still in the chain from an earlier install (left as a pass-through
           under another tool's hook): reuse it; wrapping again would make our
           hook call itself through the other tool. */
        if (g_hooked[d] && probe(d))
            continue;
        g_hooks[d].domain = d;
        PyMem_GetAllocator((PyMemAllocatorDomain)d, &g_hooks[d].prev);
        PyMemAllocatorEx ours = {&g_hooks[d], hook_malloc, hook_calloc, hook_realloc, hook_free};
        PyMem_SetAllocator((PyMemAllocatorDomain)d, &ours);
        g_hooked[d] = 1;
    }
    atomic_store_explicit(&g_enabled, 1, OA_RELAXED);
    atomic_store_explicit(&g_mode, mode, memory_order_release);
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
    atomic_store_explicit(&g_mode, OA_MODE_NONE, memory_order_release);
    atomic_store_explicit(&g_enabled, 0, OA_RELAXED);
    for (int d = 0; d < 3; d++) {
        if (!g_hooked[d])
            continue;
        if (hook_on_top(d)) {
            PyMem_SetAllocator((PyMemAllocatorDomain)d, &g_hooks[d].prev);
            g_hooked[d] = 0;
        } else if (!probe(d)) {
            /* Another tool restored what it saved before us: we are out. */
            g_hooked[d] = 0;
        }
        /* Otherwise another tool wrapped us: stay as a pass-through. */
    }
    drop_tables();
done:
    PyGILState_Release(gil);
    return rc;
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
    return OA_OK;
}

int oa_is_enabled(void)
{
    return atomic_load_explicit(&g_enabled, OA_RELAXED);
}

void oa_set_threshold(uint64_t threshold)
{
    atomic_store_explicit(&g_threshold, threshold, OA_RELAXED);
}

int oa_set_context_var(void *contextvar)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *var = contextvar;
    int rc = OA_OK;
    if (var != NULL && !PyContextVar_CheckExact(var)) {
        rc = OA_ERR_BAD_ARGUMENT;
    } else {
        /* The old variable is kept alive: a hook may still be reading it. */
        Py_XINCREF(var);
        g_ctxvar = var;
    }
    PyGILState_Release(gil);
    return rc;
}

void oa_set_thread_group(uint64_t group)
{
    tls.gid = group;
    tls.ctx_valid = 0;
}

uint64_t oa_thread_group(void)
{
    return tls.gid;
}

/* ------------------------------------------------------------ groups API */

uint64_t oa_group_new(void)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    uint64_t gid = OA_GROUP_OVERFLOW;
    oa_group *groups = group_table();
    if (groups != NULL && g_free_head != OA_NO_SLOT) {
        uint32_t slot = g_free_head;
        oa_group *g = &groups[slot];
        g_free_head = g->next;
        if (g_free_head == OA_NO_SLOT)
            g_free_tail = OA_NO_SLOT;
        g->next = OA_NO_SLOT;
        reset_group(g);
        uint64_t gen = atomic_load_explicit(&g->gen, OA_RELAXED) + 1;
        atomic_store_explicit(&g->gen, gen, OA_RELAXED);
        atomic_store_explicit(&g->state, OA_GROUP_OPEN, memory_order_release);
        g_groups_open++;
        gid = (gen << OA_SLOT_BITS) | slot;
    } else {
        atomic_fetch_add_explicit(&g_groups_dropped, 1, OA_RELAXED);
    }
    PyGILState_Release(gil);
    return gid;
}

/* The group slot of a user group id, or NULL when unknown or stale. */
static oa_group *user_group(uint64_t gid)
{
    oa_group *groups = group_table();
    uint32_t slot = (uint32_t)(gid & OA_SLOT_MASK);
    if (groups == NULL || slot < OA_FIRST_USER_SLOT || slot >= g_ngroups)
        return NULL;
    oa_group *g = &groups[slot];
    if (atomic_load_explicit(&g->gen, OA_RELAXED) != (gid >> OA_SLOT_BITS) ||
        atomic_load_explicit(&g->state, OA_RELAXED) == OA_GROUP_FREE)
        return NULL;
    return g;
}

int oa_group_close(uint64_t gid)
{
    if (gid == OA_GROUP_NONE || gid == OA_GROUP_OVERFLOW)
        return OA_OK;
    PyGILState_STATE gil = PyGILState_Ensure();
    oa_group *g = user_group(gid);
    if (g != NULL)
        atomic_store_explicit(&g->state, OA_GROUP_CLOSED, OA_RELAXED);
    PyGILState_Release(gil);
    return g != NULL ? OA_OK : OA_ERR_STALE_GROUP;
}

int oa_group_release(uint64_t gid)
{
    if (gid == OA_GROUP_NONE || gid == OA_GROUP_OVERFLOW)
        return OA_OK;
    PyGILState_STATE gil = PyGILState_Ensure();
    oa_group *g = user_group(gid);
    if (g != NULL) {
        oa_group *groups = group_table();
        uint32_t slot = (uint32_t)(g - groups);
        atomic_store_explicit(&g->state, OA_GROUP_FREE, OA_RELAXED);
        g->next = OA_NO_SLOT;
        if (g_free_tail == OA_NO_SLOT)
            g_free_head = slot;
        else
            groups[g_free_tail].next = slot;
        g_free_tail = slot;
        g_groups_open--;
    }
    PyGILState_Release(gil);
    return g != NULL ? OA_OK : OA_ERR_STALE_GROUP;
}

int oa_group_stats(uint64_t gid, oa_stats *out)
{
    memset(out, 0, sizeof(*out));
    oa_group *groups = group_table();
    if (groups == NULL)
        return OA_ERR_NOT_INSTALLED;
    oa_group *g;
    if (gid == OA_GROUP_NONE || gid == OA_GROUP_OVERFLOW)
        g = &groups[gid];
    else if ((g = user_group(gid)) == NULL)
        return OA_ERR_STALE_GROUP;
    oa_ctr_sum(&g->gil, out);
    oa_ctr_sum(&g->raw, out);
    out->peak_bytes = atomic_load_explicit(&g->peak, OA_RELAXED);
    return OA_OK;
}

/* ------------------------------------------------------------- figures */

void oa_process_stats(oa_stats *out)
{
    memset(out, 0, sizeof(*out));
    for (int d = 0; d < 3; d++)
        oa_ctr_sum(&g_proc[d], out);
    out->peak_bytes = atomic_load_explicit(&g_proc_peak, OA_RELAXED);
}

int oa_domain_stats(int domain, oa_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (domain < 0 || domain > 2)
        return OA_ERR_BAD_ARGUMENT;
    oa_ctr_sum(&g_proc[domain], out);
    return OA_OK;
}

static void thread_to_stats(oa_thread *rec, oa_thread_stats *out)
{
    memset(out, 0, sizeof(*out));
    out->native_id = rec->native_id;
    out->alive = atomic_load_explicit(&rec->alive, OA_RELAXED);
    oa_ctr_sum(&rec->c, &out->stats);
    out->stats.peak_bytes = atomic_load_explicit(&rec->peak, OA_RELAXED);
}

int oa_threads_stats(oa_thread_stats *out, int max_threads)
{
    oa_spin_lock(&g_threads_lock);
    int n = g_nthreads < max_threads ? g_nthreads : max_threads;
    for (int i = 0; i < n; i++)
        thread_to_stats(g_threads[i], &out[i]);
    oa_spin_unlock(&g_threads_lock);
    return n;
}

int oa_current_thread_stats(oa_thread_stats *out)
{
    oa_thread *rec = tls.rec;
    if (rec == NULL) {
        memset(out, 0, sizeof(*out));
        out->native_id = native_thread_id();
        out->alive = 1;
        return 0;
    }
    thread_to_stats(rec, out);
    return 1;
}

void oa_reset_peaks(void)
{
    atomic_store_explicit(&g_proc_peak, proc_live(), OA_RELAXED);
    oa_spin_lock(&g_threads_lock);
    for (int i = 0; i < g_nthreads; i++) {
        oa_thread *rec = g_threads[i];
        atomic_store_explicit(&rec->peak, atomic_load_explicit(&rec->c.live_bytes, OA_RELAXED),
                              OA_RELAXED);
    }
    oa_spin_unlock(&g_threads_lock);
}

void oa_memory_usage(oa_memory *out)
{
    memset(out, 0, sizeof(*out));
    PyGILState_STATE gil = PyGILState_Ensure();
    out->table_bytes = oa_ptable_bytes(&g_gil_table);
    out->table_capacity = g_gil_table.cap;
    out->live_blocks = g_gil_table.count;
    oa_spin_lock(&g_raw_lock);
    out->table_bytes += oa_ptable_bytes(&g_raw_table);
    out->table_capacity += g_raw_table.cap;
    out->live_blocks += g_raw_table.count;
    oa_spin_unlock(&g_raw_lock);
    PyGILState_Release(gil);
    out->group_table_bytes = (uint64_t)g_ngroups * sizeof(oa_group);
    oa_spin_lock(&g_threads_lock);
    out->thread_bytes = (uint64_t)g_nthreads * sizeof(oa_thread) + sizeof(g_threads);
    oa_spin_unlock(&g_threads_lock);
    out->event_bytes = (uint64_t)g_ring_cap * sizeof(oa_event);
    out->total_bytes = out->table_bytes + out->group_table_bytes + out->thread_bytes +
                       out->event_bytes + out->sampler_bytes;
}

void oa_counters_get(oa_counters *out)
{
    memset(out, 0, sizeof(*out));
    out->groups_open = g_groups_open;
    out->groups_capacity = g_ngroups > OA_FIRST_USER_SLOT ? g_ngroups - OA_FIRST_USER_SLOT : 0;
    out->groups_dropped = atomic_load_explicit(&g_groups_dropped, OA_RELAXED);
    out->events_dropped = atomic_load_explicit(&g_events_dropped, OA_RELAXED);
    out->untracked_frees = atomic_load_explicit(&g_untracked_raw, OA_RELAXED) +
                           atomic_load_explicit(&g_untracked_gil, OA_RELAXED);
    out->tracking_failures = atomic_load_explicit(&g_tracking_failures, OA_RELAXED);
    out->replaced_blocks = atomic_load_explicit(&g_replaced, OA_RELAXED);
    out->released_group_free_bytes = atomic_load_explicit(&g_released_free_bytes, OA_RELAXED);
    out->threads_dropped = atomic_load_explicit(&g_threads_dropped, OA_RELAXED);
    out->stale_group_allocs = atomic_load_explicit(&g_stale_raw, OA_RELAXED) +
                              atomic_load_explicit(&g_stale_gil, OA_RELAXED);
}

int oa_drain_events(oa_event *out, int max_events)
{
    int n = 0;
    oa_spin_lock(&g_ring_lock);
    while (n < max_events && g_ring_len > 0) {
        out[n++] = g_ring[g_ring_head];
        g_ring_head = (g_ring_head + 1) % g_ring_cap;
        g_ring_len--;
    }
    oa_spin_unlock(&g_ring_lock);
    return n;
}

/* ------------------------------------------------------------------ fork */

/* In the child only the forking thread exists: locks another thread held at
   fork time are released, and the parent's figures and live blocks are
   forgotten so the child's groups start from zero. */
static void atfork_child(void)
{
    atomic_flag_clear(&g_raw_lock.flag);
    atomic_flag_clear(&g_threads_lock.flag);
    atomic_flag_clear(&g_ring_lock.flag);
    oa_ptable_clear(&g_gil_table);
    oa_ptable_clear(&g_raw_table);
    g_ring_head = g_ring_len = 0;
    tls.ctx_valid = 0;
    oa_group *groups = group_table();
    for (uint32_t i = 0; groups != NULL && i < g_ngroups; i++)
        reset_group(&groups[i]);
    oa_thread *self = tls.rec;
    zero_figures();
    for (int i = 0; i < g_nthreads; i++) {
        if (g_threads[i] != self)
            atomic_store_explicit(&g_threads[i]->alive, 0, OA_RELAXED);
    }
    if (self != NULL)
        self->native_id = native_thread_id();
}
