/*
 * Ring buffer of large-allocation events: filled by the hooks (any domain,
 * with or without the GIL) under a spinlock, drained by Python. A full ring
 * drops the event and counts it.
 */
#include "events.h"

#include "../api/tracker_api.h"
#include "../core/tls.h"
#include "process_stats.h"
#include "threads.h"

#include <time.h>

oa_ring g_events;
oa_spin g_ring_lock = OA_SPIN_INIT;

void push_event(int domain, uint64_t size, uint64_t gid)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    oa_thread *rec = tls.rec;
    oa_event e;
    e.timestamp_ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    e.size = size;
    e.group = gid;
    e.native_id = rec != NULL ? rec->native_id : 0;
    e.domain = domain;
    oa_spin_lock(&g_ring_lock);
    int rc = oa_ring_push(&g_events, &e);
    oa_spin_unlock(&g_ring_lock);
    if (rc != 0)
        atomic_fetch_add_explicit(&g_events_dropped, 1, OA_RELAXED);
}

int setup_ring(uint32_t capacity)
{
    oa_spin_lock(&g_ring_lock);
    int rc = oa_ring_reset(&g_events, capacity, sizeof(oa_event));
    oa_spin_unlock(&g_ring_lock);
    return rc;
}

int oa_drain_events(oa_event *out, int max_events)
{
    oa_spin_lock(&g_ring_lock);
    int n = oa_ring_pop(&g_events, out, max_events);
    oa_spin_unlock(&g_ring_lock);
    return n;
}

int oa_events_pending(void)
{
    return g_events.len != 0;
}
