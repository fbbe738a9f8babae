/*
 * Process-wide figures: per-domain counters, the process peak and the
 * counters of dropped or unusual events, with their readers.
 */
#include "process_stats.h"

#include "../api/tracker_api.h"
#include "../core/hooks.h"
#include "../sampler/sampler.h"
#include "events.h"
#include "groups.h"
#include "threads.h"

#include <string.h>

oa_ctr g_proc[OA_COUNTER_SETS];
_Atomic int64_t g_proc_peak, g_proc_peak_gil;
_Atomic int g_figures_live;

_Atomic uint64_t g_groups_dropped, g_events_dropped, g_untracked_raw,
    g_tracking_failures, g_replaced, g_released_free_bytes, g_threads_dropped,
    g_stale_raw, g_subinterp_allocs, g_subinterp_bytes, g_rehooks;
_Atomic uint64_t g_untracked_mem_obj, g_stale_mem_obj, g_released_free_bytes_gil; /* under the GIL */

void zero_figures(int live)
{
    atomic_store_explicit(&g_figures_live, live, OA_RELAXED);
    for (int d = 0; d < OA_COUNTER_SETS; d++)
        oa_ctr_zero(&g_proc[d]);
    atomic_store_explicit(&g_proc_peak, 0, OA_RELAXED);
    atomic_store_explicit(&g_proc_peak_gil, 0, OA_RELAXED);
    _Atomic uint64_t *counters[] = {&g_groups_dropped, &g_events_dropped, &g_untracked_raw,
                                    &g_tracking_failures, &g_replaced, &g_released_free_bytes,
                                    &g_threads_dropped, &g_stale_raw, &g_untracked_mem_obj, &g_stale_mem_obj,
                                    &g_released_free_bytes_gil,
                                    &g_subinterp_allocs, &g_subinterp_bytes, &g_rehooks};
    for (size_t i = 0; i < sizeof(counters) / sizeof(counters[0]); i++)
        atomic_store_explicit(counters[i], 0, OA_RELAXED);
    oa_spin_lock(&g_threads_lock);
    for (int i = 0; i < g_nthreads; i++)
        zero_thread(g_threads[i]);
    oa_spin_unlock(&g_threads_lock);
}

void oa_process_stats(oa_stats *out)
{
    memset(out, 0, sizeof(*out));
    for (int d = 0; d < OA_COUNTER_SETS; d++)
        oa_ctr_sum(&g_proc[d], figures_live(), out);
    out->native_bytes = oa_ctr_native_bytes(&g_proc[OA_DOMAIN_NATIVE], &g_proc[OA_DOMAIN_NATIVE_GIL]);
    out->peak_bytes = proc_peak();
}

int oa_domain_stats(int domain, oa_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (domain < 0 || domain > OA_DOMAIN_NATIVE)
        return OA_ERR_BAD_ARGUMENT;
    oa_ctr_sum(&g_proc[domain], figures_live(), out);
    if (domain == OA_DOMAIN_RAW)
        oa_ctr_sum(&g_proc[OA_DOMAIN_RAW_GIL], figures_live(), out);
    if (domain == OA_DOMAIN_NATIVE) {
        oa_ctr_sum(&g_proc[OA_DOMAIN_NATIVE_GIL], figures_live(), out);
        out->native_bytes = out->alloc_bytes;
    }
    return OA_OK;
}

void oa_reset_peaks(void)
{
    int64_t now = proc_live();
    atomic_store_explicit(&g_proc_peak, now, OA_RELAXED);
    atomic_store_explicit(&g_proc_peak_gil, now, OA_RELAXED);
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
    out->table_bytes = oa_ptable_bytes(&g_mem_obj_table);
    out->table_capacity = g_mem_obj_table.cap;
    out->live_blocks = oa_ptable_entries(&g_mem_obj_table);
    for (int i = 0; i < OA_N_LOCKED_DOMAINS; i++) {
        int d = OA_LOCKED_DOMAINS[i];
        oa_spin_lock(lock_of(d));
        out->table_bytes += oa_ptable_bytes(table_of(d));
        out->table_capacity += table_of(d)->cap;
        out->live_blocks += oa_ptable_entries(table_of(d));
        oa_spin_unlock(lock_of(d));
    }
    PyGILState_Release(gil);
    out->group_table_bytes = (uint64_t)g_ngroups * sizeof(oa_group);
    oa_spin_lock(&g_threads_lock);
    out->thread_bytes = (uint64_t)g_nthreads * sizeof(oa_thread) + sizeof(g_threads);
    oa_spin_unlock(&g_threads_lock);
    out->event_bytes = oa_ring_bytes(&g_events);
    gil = PyGILState_Ensure();
    out->sampler_bytes = oa_sampler_bytes();
    PyGILState_Release(gil);
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
                           atomic_load_explicit(&g_untracked_mem_obj, OA_RELAXED);
    out->tracking_failures = atomic_load_explicit(&g_tracking_failures, OA_RELAXED);
    out->replaced_blocks = atomic_load_explicit(&g_replaced, OA_RELAXED);
    out->released_group_free_bytes = atomic_load_explicit(&g_released_free_bytes, OA_RELAXED) +
                                      atomic_load_explicit(&g_released_free_bytes_gil, OA_RELAXED);
    out->threads_dropped = atomic_load_explicit(&g_threads_dropped, OA_RELAXED);
    out->stale_group_allocs = atomic_load_explicit(&g_stale_raw, OA_RELAXED) +
                              atomic_load_explicit(&g_stale_mem_obj, OA_RELAXED);
    out->subinterpreter_allocs = atomic_load_explicit(&g_subinterp_allocs, OA_RELAXED);
    out->subinterpreter_bytes = atomic_load_explicit(&g_subinterp_bytes, OA_RELAXED);
    out->slots_parked = atomic_load_explicit(&g_slots_parked, OA_RELAXED);
    out->rehooks = atomic_load_explicit(&g_rehooks, OA_RELAXED);
}
