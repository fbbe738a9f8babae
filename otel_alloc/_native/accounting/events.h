/*
 * Large-allocation events (events.c): a bounded ring filled by the hooks and
 * drained by Python; a full ring drops and counts.
 */
#ifndef OA_EVENTS_H
#define OA_EVENTS_H

#include <stdint.h>

#include "../support/ring.h"
#include "../support/spinlock.h"

#pragma GCC visibility push(hidden)

extern oa_ring g_events; /* under g_ring_lock */
extern oa_spin g_ring_lock;

void push_event(int domain, uint64_t size, uint64_t gid);
int setup_ring(uint32_t capacity);

#pragma GCC visibility pop

#endif
