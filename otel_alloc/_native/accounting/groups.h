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

typedef struct oa_group_s {
    _Atomic uint64_t gen; /* full generation; group id = gen << OA_SLOT_BITS | slot */
    _Atomic int state;
    oa_ctr mem_obj; /* MEM and OBJ domains: updated under the GIL */
    oa_ctr raw;     /* RAW domain: updated with atomic read-modify-write */
    oa_ctr native;  /* native domain (native mode): atomic, like RAW */
    /* The twins of RAW and native under the GIL (counters.h) count in
       mem_obj, plain: a group's figures are not split by domain but for
       native bytes, and these are the native ones of those. */
    _Atomic uint64_t native_gil_bytes;
    /* High-water marks of group_live: as seen by RAW and native
       allocations (any thread: compare-and-swap), and by MEM/OBJ ones
       (under the GIL: plain). The group's peak is the higher of the two. */
    _Atomic int64_t peak;
    _Atomic int64_t peak_gil;
    _Atomic uint64_t child_bytes; /* inclusive bytes reported by ended child spans */
    _Atomic int noted; /* a sample or large-allocation event names this group */
    uint32_t next;     /* FIFO free-slot queue link */
    /* Live-table entries tagged with this slot, of any generation: kept
       across reuses (see oa_group_new). RAW and native entries count from
       their put (atomic). MEM/OBJ entries count from their group's
       release, when the group's live count says how many it still has
       (oa_group_release_gil_held), and a free takes one off only for an
       entry of a released group: an open group's entries cost its hooks
       nothing here. Under the GIL. */
    _Atomic int64_t tagged_mem_obj;
    _Atomic int64_t tagged_raw; /* RAW and native tables */
    /* RAW hooks charging this group right now: the slot is not reused (its
       counters reset for another group) until they are done. */
    _Atomic int raw_pins;
} oa_group;

/* The counters a domain's allocations update in a group. The twins
   (counters.h), written under the GIL, update mem_obj. */
static inline oa_ctr *group_ctr(oa_group *g, int domain)
{
    return domain == OA_DOMAIN_RAW ? &g->raw : domain == OA_DOMAIN_NATIVE ? &g->native : &g->mem_obj;
}

static inline int64_t group_live(oa_group *g)
{
    return atomic_load_explicit(&g->mem_obj.live_bytes, OA_RELAXED) +
           atomic_load_explicit(&g->raw.live_bytes, OA_RELAXED) +
           atomic_load_explicit(&g->native.live_bytes, OA_RELAXED);
}

static inline int64_t group_peak(oa_group *g)
{
    return oa_peak_higher(&g->peak, &g->peak_gil);
}

extern oa_group *_Atomic g_groups;
extern uint32_t g_ngroups;
extern uint64_t g_groups_open;
extern oa_spin g_groups_lock; /* free-slot queue and group states */

void reset_group(oa_group *g);

int setup_groups(uint32_t max_groups);
/* The span processor's span-end path in one call (api/capsule.c exports it). */
int oa_span_end(uint64_t gid, uint64_t parent, int64_t keep_from, oa_span_figures *out);
int oa_span_read(uint64_t gid, oa_span_figures *out);
/* Group operations for callers that hold the GIL (the span path's C API);
   binding.h's oa_group_* take the GIL themselves. */
uint64_t oa_group_new_gil_held(void);
int oa_group_close_gil_held(uint64_t gid);
int oa_group_release_gil_held(uint64_t gid);
int oa_group_finish_gil_held(uint64_t gid, int release, oa_stats *out);
extern _Atomic uint64_t g_slots_parked;

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

/* The counter of live-table entries tagged with `slot` (see take_slot in
   groups.c) for a RAW/native or a MEM/OBJ table; NULL for the reserved
   slots, which are never reused. */
static inline _Atomic int64_t *slot_tag(oa_group *groups, uint32_t slot, int raw)
{
    if (slot < OA_FIRST_USER_SLOT || slot >= table_slots(groups))
        return NULL;
    return raw ? &groups[slot].tagged_raw : &groups[slot].tagged_mem_obj;
}

/* The tag counter a put of one of g's entries adds to: RAW and native
   only (MEM/OBJ entries are counted at their group's release). */
static inline _Atomic int64_t *group_tag(oa_group *groups, oa_group *g, int raw)
{
    return raw ? slot_tag(groups, (uint32_t)(g - groups), raw) : NULL;
}

/* Add delta to a tag counter (NULL: none). */
static inline void tag_add(_Atomic int64_t *tag, int64_t delta, int raw)
{
    if (tag == NULL)
        return;
    if (raw)
        atomic_fetch_add_explicit(tag, delta, OA_RELAXED);
    else
        plain_add_signed(tag, delta);
}

/* A live-table entry tagged with `meta`'s slot was added (delta 1) or
   removed (-1). */
static inline void tag_slot(oa_group *groups, uint64_t meta, int64_t delta, int raw)
{
    tag_add(slot_tag(groups, oa_meta_slot(meta), raw), delta, raw);
}

/* What a live-table entry of group g holds besides the size: its slot and
   the low bits of its generation (oa_meta_pack). */
static inline uint64_t group_meta_hi(oa_group *groups, oa_group *g)
{
    return oa_meta_pack(0, (uint32_t)(g - groups), atomic_load_explicit(&g->gen, OA_RELAXED), 0);
}

/* A RAW hook about to charge `g` pins it; 0 when pinning is not needed
   (the reserved groups 0 and 1 are never reused). MEM/OBJ hooks need no
   pin: every group operation holds the GIL (api/capsule.c, groups.c). */
static inline int pin_group(oa_group *groups, oa_group *g)
{
    if (g - groups < OA_FIRST_USER_SLOT)
        return 0;
    /* Sequentially consistent with the fence in oa_group_new: either the
       reuse sees this pin and waits, or this hook sees the slot released. */
    atomic_fetch_add_explicit(&g->raw_pins, 1, memory_order_seq_cst);
    return 1;
}

static inline void unpin_group(oa_group *g)
{
    atomic_fetch_sub_explicit(&g->raw_pins, 1, memory_order_release);
}

/* Whether slot `g` holds the open group `gid` names. State first: a reuse
   stores the new generation before it publishes OPEN, so an OPEN seen here
   comes with that generation. Read the other way round, a slot reused
   between the two loads passed as the old group (CI caught one such RAW
   block charged to a group nobody entered). */
static inline int group_is_open(const oa_group *g, uint64_t gid)
{
    return atomic_load_explicit(&g->state, memory_order_seq_cst) == OA_GROUP_OPEN &&
           atomic_load_explicit(&g->gen, memory_order_seq_cst) == (gid >> OA_SLOT_BITS);
}

/* The group an allocation under `gid` is charged to: the open group itself,
   or group 0 (no group) for an unknown, closed or recycled id. A RAW caller
   gets it pinned (*pinned = 1) and unpins it when done charging. */
static inline oa_group *group_for_alloc(oa_group *groups, uint64_t gid, int raw, int *pinned)
{
    uint32_t slot = (uint32_t)(gid & OA_SLOT_MASK);
    *pinned = 0;
    if (slot < OA_FIRST_USER_SLOT)
        return &groups[slot];
    if (slot < table_slots(groups)) {
        oa_group *g = &groups[slot];
        if (raw)
            *pinned = pin_group(groups, g);
        if (group_is_open(g, gid))
            return g;
        if (*pinned) {
            unpin_group(g);
            *pinned = 0;
        }
    }
    if (raw)
        atomic_fetch_add_explicit(&g_stale_raw, 1, OA_RELAXED);
    else
        plain_inc(&g_stale_mem_obj, 1);
    return &groups[0];
}

/* The group that allocated a block, from its packed table entry, or NULL
   when that group has been released since. Its 16-bit generation is
   unambiguous: a slot never enters a new 65,536-generation epoch while
   blocks tagged with it are alive (oa_group_new). A RAW caller gets it
   pinned, as in group_for_alloc. */
static inline oa_group *group_for_free(oa_group *groups, uint64_t meta, int raw, int *pinned)
{
    uint32_t slot = oa_meta_slot(meta);
    *pinned = 0;
    if (slot >= table_slots(groups))
        return NULL;
    oa_group *g = &groups[slot];
    if (raw)
        *pinned = pin_group(groups, g);
    /* State first, as in group_is_open: sequentially consistent for a
       RAW caller, whose pin must be seen before the state is read (pin_group).
       Under the GIL, which every group change holds, relaxed loads do: they
       also let the compiler keep the slot count it loaded above for the
       caller's tag_slot (a seq_cst load made it load it again). */
    memory_order order = raw ? memory_order_seq_cst : memory_order_relaxed;
    if (atomic_load_explicit(&g->state, order) != OA_GROUP_FREE &&
        (atomic_load_explicit(&g->gen, order) & 0xFFFFu) == oa_meta_gen16(meta))
        return g;
    if (*pinned) {
        unpin_group(g);
        *pinned = 0;
    }
    return NULL;
}

#pragma GCC visibility pop

#endif
