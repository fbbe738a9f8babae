/*
 * Internal declarations shared by the tracker's C files.
 *
 *   hooks.c    the PyMem hooks and their hot path: attribution, accounting,
 *              the live tables; defines the thread-local state
 *   install.c  install/uninstall, chain probing, settings, the fork handler
 *   groups.c   group table, group ids, free-slot queue, group API
 *   threads.c  per-thread records and their registry, thread figures
 *   events.c   ring buffer of large-allocation events
 *   figures.c  process and domain figures, counters, memory usage
 *   ptable.c   pointer -> (size, group) table of live mode
 *
 * Everything below the includes is internal to the extension and declared
 * with hidden visibility: the hooks then reach the shared globals
 * PC-relative (not through the GOT) and call internal functions directly
 * (not through the PLT), as they did when all this was static in one file.
 * Helpers on the hooks' fast path are static inline here, so splitting the
 * tracker into files adds no function call to that path.
 */
#ifndef OA_TRACKER_H
#define OA_TRACKER_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "fastpath.h"
#include "oa_api.h"
#include "ptable.h"
#include "ring.h"

#pragma GCC visibility push(hidden)

#define OA_RELAXED memory_order_relaxed

/* One set of counters. Counters written only under the GIL (or by their
   owning thread) are updated with relaxed load + store, which compiles to
   plain moves; counters written without the GIL use atomic read-modify-write. */
typedef struct {
    _Atomic uint64_t alloc_bytes;
    _Atomic uint64_t alloc_count;
    _Atomic uint64_t freed_bytes;
    _Atomic uint64_t freed_count;
    _Atomic int64_t live_bytes;
    _Atomic int64_t live_count;
} oa_ctr;

static inline void oa_ctr_alloc_plain(oa_ctr *c, uint64_t size)
{
    atomic_store_explicit(&c->alloc_bytes, atomic_load_explicit(&c->alloc_bytes, OA_RELAXED) + size, OA_RELAXED);
    atomic_store_explicit(&c->alloc_count, atomic_load_explicit(&c->alloc_count, OA_RELAXED) + 1, OA_RELAXED);
}
static inline void oa_ctr_alloc_atomic(oa_ctr *c, uint64_t size)
{
    atomic_fetch_add_explicit(&c->alloc_bytes, size, OA_RELAXED);
    atomic_fetch_add_explicit(&c->alloc_count, 1, OA_RELAXED);
}
static inline void oa_ctr_live_plain(oa_ctr *c, int64_t bytes, int64_t count)
{
    atomic_store_explicit(&c->live_bytes, atomic_load_explicit(&c->live_bytes, OA_RELAXED) + bytes, OA_RELAXED);
    atomic_store_explicit(&c->live_count, atomic_load_explicit(&c->live_count, OA_RELAXED) + count, OA_RELAXED);
}
static inline void oa_ctr_live_atomic(oa_ctr *c, int64_t bytes, int64_t count)
{
    atomic_fetch_add_explicit(&c->live_bytes, bytes, OA_RELAXED);
    atomic_fetch_add_explicit(&c->live_count, count, OA_RELAXED);
}
static inline void oa_ctr_free_plain(oa_ctr *c, uint64_t size)
{
    atomic_store_explicit(&c->freed_bytes, atomic_load_explicit(&c->freed_bytes, OA_RELAXED) + size, OA_RELAXED);
    atomic_store_explicit(&c->freed_count, atomic_load_explicit(&c->freed_count, OA_RELAXED) + 1, OA_RELAXED);
}
static inline void oa_ctr_free_atomic(oa_ctr *c, uint64_t size)
{
    atomic_fetch_add_explicit(&c->freed_bytes, size, OA_RELAXED);
    atomic_fetch_add_explicit(&c->freed_count, 1, OA_RELAXED);
}
static inline void oa_ctr_zero(oa_ctr *c)
{
    atomic_store_explicit(&c->alloc_bytes, 0, OA_RELAXED);
    atomic_store_explicit(&c->alloc_count, 0, OA_RELAXED);
    atomic_store_explicit(&c->freed_bytes, 0, OA_RELAXED);
    atomic_store_explicit(&c->freed_count, 0, OA_RELAXED);
    atomic_store_explicit(&c->live_bytes, 0, OA_RELAXED);
    atomic_store_explicit(&c->live_count, 0, OA_RELAXED);
}
/* out += c */
static inline void oa_ctr_sum(const oa_ctr *c, oa_stats *out)
{
    out->alloc_bytes += atomic_load_explicit(&c->alloc_bytes, OA_RELAXED);
    out->alloc_count += atomic_load_explicit(&c->alloc_count, OA_RELAXED);
    out->freed_bytes += atomic_load_explicit(&c->freed_bytes, OA_RELAXED);
    out->freed_count += atomic_load_explicit(&c->freed_count, OA_RELAXED);
    out->live_bytes += atomic_load_explicit(&c->live_bytes, OA_RELAXED);
    out->live_count += atomic_load_explicit(&c->live_count, OA_RELAXED);
}

static inline void oa_peak_update(_Atomic int64_t *peak, int64_t cur)
{
    int64_t p = atomic_load_explicit(peak, OA_RELAXED);
    while (cur > p && !atomic_compare_exchange_weak_explicit(peak, &p, cur, OA_RELAXED, OA_RELAXED)) {
    }
}

/* Spinlock for short critical sections reachable from RAW hooks (no GIL,
   possibly no thread state): never sleeps on a kernel object we could be
   forked in the middle of, and is reset in the child after fork. */
typedef struct {
    atomic_flag flag;
} oa_spin;

void oa_spin_lock(oa_spin *s);
static inline void oa_spin_unlock(oa_spin *s)
{
    atomic_flag_clear_explicit(&s->flag, memory_order_release);
}

/* Counter written under the GIL only: relaxed load + store, no lock prefix. */
static inline void plain_inc(_Atomic uint64_t *c, uint64_t by)
{
    atomic_store_explicit(c, atomic_load_explicit(c, OA_RELAXED) + by, OA_RELAXED);
}

/* ---------------------------------------------------------- thread-local */

typedef struct oa_thread oa_thread;

/* Thread-local state in one struct so a hook pays for one TLS address. The
   initial-exec model avoids __tls_get_addr calls; the struct is small enough
   for glibc's static TLS surplus reserved for dlopen'ed modules. Defined in
   hooks.c; the model is given here so every file uses it. */
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
    int fork_saved_guard; /* guard before atfork_prepare set it */
    /* Sampler: bytes left until the next sample, and the PRNG state. */
    int sample_init;
    int64_t sample_left;
    uint64_t rng;
} oa_tls;

extern __thread oa_tls tls __attribute__((tls_model("initial-exec")));

#if PY_VERSION_HEX >= 0x030D0000
#define OA_TSTATE() PyThreadState_GetUnchecked()
#else
#define OA_TSTATE() _PyThreadState_UncheckedGet()
#endif

/* ------------------------------------------------------ sampler.c */

extern _Atomic uint64_t g_sample_mean; /* 0: sampling off */
int oa_sample_tick_slow(uint64_t mean);
/* Count size bytes down; 1 when this allocation is sampled. Inline: it runs
   on every allocation while sampling is on. */
static inline int oa_sample_tick(uint64_t mean, size_t size)
{
    tls.sample_left -= (int64_t)size;
    return tls.sample_left > 0 ? 0 : oa_sample_tick_slow(mean);
}
/* Record a sampled allocation (tracked: flagged in the live table). */
void oa_sample_alloc(int domain, void *ptr, size_t size, uint64_t gid, uint64_t mean,
                     int tracked);
/* A block flagged as sampled is being freed. */
void oa_sample_freed(void *ptr);
uint64_t oa_sampler_bytes(void);
void oa_sampler_atfork_prepare(void);
void oa_sampler_atfork_parent(void);
void oa_sampler_atfork_child(void);
void oa_sampler_uninstall(void);

/* ------------------------------------------------------ hooks (hooks.c) */

typedef struct {
    PyMemAllocatorEx prev; /* the allocator we wrapped: always called */
    int domain;
} oa_hook;

extern _Atomic int g_mode;
extern _Atomic int g_enabled;
extern _Atomic uint64_t g_threshold;

extern oa_ptable g_gil_table; /* MEM/OBJ blocks, guarded by the GIL */
extern oa_ptable g_raw_table; /* RAW blocks, guarded by g_raw_lock */
extern oa_spin g_raw_lock;

void *hook_malloc(void *ctx, size_t size);
void *hook_calloc(void *ctx, size_t nelem, size_t elsize);
void *hook_realloc(void *ctx, void *ptr, size_t size);
void hook_free(void *ctx, void *ptr);

/* -------------------------------------------------- threads (threads.c) */

#define OA_MAX_THREADS 4096

struct oa_thread {
    uint64_t native_id;
    _Atomic int alive;
    oa_ctr c;              /* written by the owning thread only */
    _Atomic int64_t peak;  /* high-water mark of c.live_bytes (net bytes) */
};

extern oa_thread *g_threads[OA_MAX_THREADS];
extern int g_nthreads;
extern oa_spin g_threads_lock;
extern pthread_key_t g_thread_key;

uint64_t native_thread_id(void);
void thread_exit(void *arg);
void zero_thread(oa_thread *rec);
oa_thread *thread_record_slow(void);

static inline oa_thread *thread_record(void)
{
    oa_thread *rec = tls.rec;
    if (rec != NULL || tls.no_record)
        return rec;
    return thread_record_slow();
}

/* ---------------------------------------------------- groups (groups.c) */

#define OA_GROUP_FREE 0
#define OA_GROUP_OPEN 1
#define OA_GROUP_CLOSED 2
#define OA_FIRST_USER_SLOT 2
#define OA_NO_SLOT UINT32_MAX

typedef struct {
    _Atomic uint64_t gen; /* full generation; group id = gen << 20 | slot */
    _Atomic int state;
    oa_ctr gil; /* MEM/OBJ: updated under the GIL */
    oa_ctr raw; /* RAW: updated with atomic read-modify-write */
    _Atomic int64_t peak;
    _Atomic uint64_t child_bytes; /* inclusive bytes reported by ended child spans */
    _Atomic int noted; /* a sample or large-allocation event names this group */
    uint32_t next; /* FIFO free-slot queue link */
} oa_group;

extern oa_group *_Atomic g_groups;
extern uint32_t g_ngroups;
extern uint64_t g_groups_open;
extern oa_spin g_groups_lock; /* free-slot queue and group states (groups.c) */

void reset_group(oa_group *g);
int setup_groups(uint32_t max_groups);

/* ----------------------------------------------------- events (events.c) */

extern oa_ring g_events; /* large-allocation events, under g_ring_lock */
extern oa_spin g_ring_lock;

void push_event(int domain, uint64_t size, uint64_t gid);
int setup_ring(uint32_t capacity);

/* --------------------------------------------------- figures (figures.c) */

extern oa_ctr g_proc[3];
extern _Atomic int64_t g_proc_peak;

extern _Atomic uint64_t g_groups_dropped, g_events_dropped, g_untracked_raw,
    g_tracking_failures, g_replaced, g_released_free_bytes, g_threads_dropped,
    g_stale_raw;
extern _Atomic uint64_t g_untracked_gil, g_stale_gil; /* under the GIL */

void zero_figures(void);

static inline int64_t proc_live(void)
{
    return atomic_load_explicit(&g_proc[0].live_bytes, OA_RELAXED) +
           atomic_load_explicit(&g_proc[1].live_bytes, OA_RELAXED) +
           atomic_load_explicit(&g_proc[2].live_bytes, OA_RELAXED);
}

/* ------------------------------------------- group lookup on the hot path */

static inline oa_group *group_table(void)
{
    return atomic_load_explicit(&g_groups, memory_order_acquire);
}

/* Each group table carries its own slot count in a header just before the
   array, so a hook that loaded a table pointer checks slots against that
   table's size, never the size of a table installed since (a reinstall with
   another max_groups replaces the table while RAW hooks may still run). */
#define OA_GROUP_HEADER 64
static inline uint32_t table_slots(const oa_group *groups)
{
    return *(const uint32_t *)((const char *)groups - OA_GROUP_HEADER);
}

/* The group an allocation under `gid` is charged to: the open group itself,
   or group 0 (no group) for an unknown, closed or recycled id. */
static inline oa_group *group_for_alloc(oa_group *groups, uint64_t gid, int raw)
{
    uint32_t slot = (uint32_t)(gid & OA_SLOT_MASK);
    if (slot < OA_FIRST_USER_SLOT)
        return &groups[slot];
    if (slot < table_slots(groups)) {
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
    if (slot >= table_slots(groups))
        return NULL;
    oa_group *g = &groups[slot];
    if ((atomic_load_explicit(&g->gen, OA_RELAXED) & 0xFFFFu) != oa_meta_gen16(meta) ||
        atomic_load_explicit(&g->state, OA_RELAXED) == OA_GROUP_FREE)
        return NULL;
    return g;
}

#pragma GCC visibility pop

#endif
