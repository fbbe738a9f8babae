/*
 * Sampled allocation sites.
 *
 * Poisson sampling over bytes (poisson.h): an allocation of s bytes is
 * sampled with probability 1 - exp(-s / mean), and Python weighs each
 * sample by the inverse of that.
 *
 * A sample taken while the thread holds the GIL records the Python stack,
 * interned (stacks.c). RAW and native samples without the GIL carry none.
 * Samples go to a bounded ring that Python drains; in live mode the sampled
 * block is flagged in the pointer table and its free is reported too.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "poisson.h"
#include "sampler.h"
#include "stacks.h"

#include "../accounting/process_stats.h"
#include "../accounting/threads.h"
#include "../api/tracker_api.h"
#include "../compat/thread_state.h"
#include "../core/hooks.h"
#include "../support/ring.h"
#include "../support/spinlock.h"

#include <stdlib.h>
#include <string.h>

_Atomic uint64_t g_sample_mean;

/* Ring of samples and the sampled-block table, under g_sample_lock. */
static oa_spin g_sample_lock = OA_SPIN_INIT;
static oa_ring g_samples;
static oa_ptable g_sampled;
static _Atomic uint64_t g_sample_ids, g_samples_taken, g_samples_dropped, g_sample_frees;

/* Threads draining samples (oa_sampler_pause_thread): their allocations are
   the profiler's own. Sampled, they refilled the buffer as fast as the drain
   emptied it, and at a small mean the drain never ended. Read only here,
   when the countdown crosses zero, so the per-allocation path is unchanged. */
static __thread int t_paused __attribute__((tls_model("initial-exec")));

void oa_sampler_pause_thread(int paused)
{
    t_paused += paused ? 1 : (t_paused > 0 ? -1 : 0);
}

_Atomic uint32_t g_sample_gen;

/* The countdown crossed zero, or was drawn under another configuration (or
   never): decide and refill. */
int oa_sample_tick_slow(size_t size)
{
    /* The generation first: a configuration publishes its mean before its
       generation, so a thread that sees the new generation sees that mean. */
    uint32_t gen = atomic_load_explicit(&g_sample_gen, memory_order_acquire);
    uint64_t mean = atomic_load_explicit(&g_sample_mean, OA_RELAXED);
    if (mean == 0) {
        /* Off: park the countdown (a configuration bumps the generation,
           and oa_sample_refresh then drops it). */
        tls.sample_gen = gen;
        tls.sample_left = INT64_MAX;
        return 0;
    }
    if (!oa_countdown_crossed(&tls.sample_gen, &tls.sample_left, gen, mean, size))
        return 0;
    return !t_paused;
}

/* ------------------------------------------------------------ recording */

static void push_sample(const oa_sample *s)
{
    oa_spin_lock(&g_sample_lock);
    int rc = oa_ring_push(&g_samples, s);
    oa_spin_unlock(&g_sample_lock);
    if (rc != 0)
        atomic_fetch_add_explicit(&g_samples_dropped, 1, OA_RELAXED);
}

void oa_sample_alloc(int domain, void *ptr, size_t size, uint64_t gid, uint64_t mean, int tracked)
{
    oa_sample s;
    memset(&s, 0, sizeof(s));
    s.id = atomic_fetch_add_explicit(&g_sample_ids, 1, OA_RELAXED) + 1;
    s.group = gid;
    s.size = size;
    s.mean = mean;
    s.kind = OA_SAMPLE_ALLOC;
    s.domain = domain;
    s.native_id = tls.rec != NULL ? tls.rec->native_id : 0;
    /* RAW and native hooks may run without the GIL: they record the Python
       stack when the calling thread holds it (NumPy 2.5+ allocates array
       data with PyMem_RawMalloc, older NumPy with malloc, both from Python
       code holding the GIL). */
    int stack = (domain == OA_DOMAIN_NATIVE || domain == OA_DOMAIN_RAW) ? oa_holds_gil() : 1;
    s.stack = stack ? oa_capture_stack() : OA_STACK_NONE;
    atomic_fetch_add_explicit(&g_samples_taken, 1, OA_RELAXED);
    if (tracked) {
        uint64_t os, om;
        oa_spin_lock(&g_sample_lock);
        if (g_sampled.slots != NULL)
            (void)oa_ptable_put(&g_sampled, (uintptr_t)ptr, 0, s.id << OA_SLOT_SHIFT, &os, &om);
        oa_spin_unlock(&g_sample_lock);
    }
    push_sample(&s);
}

void oa_sample_freed(void *ptr)
{
    uint64_t size = 0, meta = 0;
    oa_spin_lock(&g_sample_lock);
    int found = g_sampled.slots != NULL && oa_ptable_pop(&g_sampled, (uintptr_t)ptr, &size, &meta);
    oa_spin_unlock(&g_sample_lock);
    if (!found)
        return;
    oa_sample s;
    memset(&s, 0, sizeof(s));
    s.id = meta >> OA_SLOT_SHIFT;
    s.kind = OA_SAMPLE_FREE;
    atomic_fetch_add_explicit(&g_sample_frees, 1, OA_RELAXED);
    push_sample(&s);
}

/* ------------------------------------------------------------------ API */

int oa_sampler_configure(uint64_t mean_bytes, uint32_t max_depth, uint32_t capacity)
{
    if (max_depth < 1 || max_depth > OA_MAX_DEPTH || capacity < 1)
        return OA_ERR_BAD_ARGUMENT;
    PyGILState_STATE gil = PyGILState_Ensure();
    atomic_store_explicit(&g_sample_mean, 0, OA_RELAXED);
    oa_stacks_set_depth(max_depth);
    int rc = OA_OK;
    oa_spin_lock(&g_sample_lock);
    if (g_sampled.slots == NULL && oa_ptable_init(&g_sampled, 0) != 0)
        rc = OA_ERR_NOMEM;
    else
        oa_ptable_clear(&g_sampled);
    if (oa_ring_reset(&g_samples, capacity, sizeof(oa_sample)) != 0)
        rc = OA_ERR_NOMEM;
    oa_spin_unlock(&g_sample_lock);
    if (rc == OA_OK) {
        atomic_store_explicit(&g_sample_mean, mean_bytes, OA_RELAXED);
        atomic_fetch_add_explicit(&g_sample_gen, 1, memory_order_release);
        oa_attr_epoch_bump(); /* each thread's next MEM/OBJ hook sees the generation */
    }
    PyGILState_Release(gil);
    return rc;
}

uint64_t oa_sampler_mean(void)
{
    return atomic_load_explicit(&g_sample_mean, OA_RELAXED);
}

int oa_drain_samples(oa_sample *out, int max_samples)
{
    oa_spin_lock(&g_sample_lock);
    int n = oa_ring_pop(&g_samples, out, max_samples);
    oa_spin_unlock(&g_sample_lock);
    return n;
}

void oa_sampler_stats_get(oa_sampler_stats *out)
{
    memset(out, 0, sizeof(*out));
    out->samples = atomic_load_explicit(&g_samples_taken, OA_RELAXED);
    out->dropped = atomic_load_explicit(&g_samples_dropped, OA_RELAXED);
    out->frees = atomic_load_explicit(&g_sample_frees, OA_RELAXED);
    PyGILState_STATE gil = PyGILState_Ensure();
    oa_stacks_counts(&out->frames, &out->stacks, &out->stacks_dropped);
    out->bytes = oa_sampler_bytes();
    PyGILState_Release(gil);
}

uint64_t oa_sampler_bytes(void)
{
    return oa_stacks_bytes() + oa_ring_bytes(&g_samples) + oa_ptable_bytes(&g_sampled);
}

void oa_sampler_atfork_prepare(void)
{
    oa_spin_lock(&g_sample_lock);
}

void oa_sampler_atfork_parent(void)
{
    oa_spin_unlock(&g_sample_lock);
}

/* Fork child: only this thread exists; pending samples are the parent's. */
void oa_sampler_atfork_child(void)
{
    atomic_flag_clear(&g_sample_lock.flag);
    oa_ring_clear(&g_samples);
    oa_ptable_clear(&g_sampled);
}

void oa_sampler_uninstall(void)
{
    /* Sampling ends with the install: a later install starts without it
       until something configures it again (the shared collector does when
       the mean it wants is not the native one). Left on, it went on marking
       groups as noted under a tracker installed for something else. */
    atomic_store_explicit(&g_sample_mean, 0, OA_RELAXED);
    oa_spin_lock(&g_sample_lock);
    oa_ptable_clear(&g_sampled);
    oa_ring_clear(&g_samples);
    oa_spin_unlock(&g_sample_lock);
}
