/*
 * Ring buffer of large-allocation events: filled by the hooks (any domain,
 * with or without the GIL) under a spinlock, drained by Python. A full ring
 * drops the event and counts it.
 */
#include "tracker.h"

#include <stdlib.h>
#include <time.h>

oa_event *g_ring;
uint32_t g_ring_cap, g_ring_head, g_ring_len;
oa_spin g_ring_lock = {ATOMIC_FLAG_INIT};

void push_event(int domain, uint64_t size, uint64_t gid)
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

int setup_ring(uint32_t capacity)
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

int oa_events_pending(void)
{
    return g_ring_len != 0;
}
