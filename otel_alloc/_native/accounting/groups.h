/*
 * Allocation groups (groups.c): a bounded table of slots; a group id is
 * generation << OA_SLOT_BITS | slot, so a recycled slot never passes for the
 * group that owned it before. Slots 0 (no group) and 1 (overflow) are
 * always open.
 */
#ifndef OA_GROUPS_H
#define OA_GROUPS_H

#include <stdatomic.h>
#include <stdint.h>

#include "../api/tracker_capi.h"
#include "../support/ptable.h"
#include "../support/spinlock.h"
#include "counters.h"
#include "process_stats.h"

#pragma GCC visibility push(hidden)

#define OA_GROUP_FREE 0
#define OA_GROUP_OPEN 1
#define OA_GROUP_CLOSED 2
#define OA_FIRST_USER_SLOT 2
#define OA_NO_SLOT UINT32_MAX

typedef struct {
    _Atomic uint64_t gen; /* full generation; group id = gen << OA_SLOT_BITS | slot */
    _Atomic int state;
    oa_ctr mem_obj; /* MEM and OBJ domains: updated under the GIL */
    oa_ctr raw;     /* RAW domain: updated with atomic read-modify-write */
    _Atomic int64_t peak;
    _Atomic uint64_t child_bytes; /* inclusive bytes reported by ended child spans */
    _Atomic int noted; /* a sample or large-allocation event names this group */
    uint32_t next;     /* FIFO free-slot queue link */
} oa_group;

extern oa_group *_Atomic g_groups;
extern uint32_t g_ngroups;
extern uint64_t g_groups_open;
extern oa_spin g_groups_lock; /* free-slot queue and group states */

void reset_group(oa_group *g);
int setup_groups(uint32_t max_groups);
/* The span processor's span-end path in one call (api/capsule.c exports it). */
int oa_span_end(uint64_t gid, uint64_t parent, int64_t keep_from, oa_span_figures *out);
int oa_span_read(uint64_t gid, oa_span_figures *out);

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
        plain_inc(&g_stale_mem_obj, 1);
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
