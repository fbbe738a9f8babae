/*
 * Process-wide figures (process_stats.c): totals per domain, the process
 * peak, and the health counters that say what the tracker could not count.
 */
#ifndef OA_PROCESS_STATS_H
#define OA_PROCESS_STATS_H

#include <stdatomic.h>
#include <stdint.h>

#include "counters.h"

#pragma GCC visibility push(hidden)

/* Per domain: RAW, MEM, OBJ, native, and the twins of native and RAW under
   the GIL (counters.h). A twin's set holds its allocated figures; its live
   figures are in its domain's set, updated atomically (so the process's
   live bytes stay four loads, which the MEM/OBJ hooks make for the peak). */
extern oa_ctr g_proc[OA_COUNTER_SETS];
/* How the figures were counted: the mode's OA_LIVE_* kind (counters.h;
   oa_ctr_sum reads live and freed figures by it). Set by install, kept
   after uninstall so the figures read the same. */
extern _Atomic int g_figures_live;
/* The process peak as seen by RAW and native allocations (compare-and-swap)
   and by MEM/OBJ ones (under the GIL: plain); proc_peak() is the higher. */
extern _Atomic int64_t g_proc_peak, g_proc_peak_gil;

/* Written with atomic read-modify-write (RAW hooks, any thread). */
extern _Atomic uint64_t g_groups_dropped, g_events_dropped, g_untracked_raw,
    g_tracking_failures, g_replaced, g_released_free_bytes, g_threads_dropped,
    g_stale_raw, g_subinterp_allocs, g_subinterp_bytes, g_rehooks;
/* Written under the GIL only (MEM/OBJ hooks, the twins of RAW and native),
   with plain adds: a block
   freed after its span ended is common (a request's objects outlive its
   span), and a locked add on each showed in perf on the suite's service. */
extern _Atomic uint64_t g_untracked_mem_obj, g_stale_mem_obj, g_released_free_bytes_gil;

void zero_figures(int live);

static inline int figures_live(void)
{
    return atomic_load_explicit(&g_figures_live, OA_RELAXED);
}

static inline int64_t proc_live(void)
{
    return atomic_load_explicit(&g_proc[0].live_bytes, OA_RELAXED) +
           atomic_load_explicit(&g_proc[1].live_bytes, OA_RELAXED) +
           atomic_load_explicit(&g_proc[2].live_bytes, OA_RELAXED) +
           atomic_load_explicit(&g_proc[3].live_bytes, OA_RELAXED);
}

static inline int64_t proc_peak(void)
{
    return oa_peak_higher(&g_proc_peak, &g_proc_peak_gil);
}

#pragma GCC visibility pop

#endif
