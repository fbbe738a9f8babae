/*
 * Allocation groups: a bounded table of slots, group id = generation << 20 |
 * slot so a recycled slot never passes for the group that owned it before,
 * and a FIFO queue of free slots. Changed only under the GIL.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "groups.h"
#include "../native/native_hooks.h"

#include "../api/tracker_api.h"
#include "../core/tls.h"
#include "events.h"

#include <sched.h>
#include <stdlib.h>
#include <string.h>

oa_group *_Atomic g_groups;
uint32_t g_ngroups;
static uint32_t g_free_head = OA_NO_SLOT, g_free_tail = OA_NO_SLOT;
/* Released slots held back from a new generation epoch (see oa_group_new). */
static uint32_t g_parked_head = OA_NO_SLOT, g_parked_tail = OA_NO_SLOT;
_Atomic uint64_t g_slots_parked;
uint64_t g_groups_open;
/* Group tables replaced by a reinstall with another size are kept, never
   freed: a RAW hook on another thread may still hold a pointer into one. */
static oa_group *g_retired_groups[64]; /* tables replaced by reinstalls, never freed */
static int g_nretired;

/* Group operations run from Python with the GIL released by cffi: they
   serialise on a spinlock, not the GIL (taking the GIL back here would cost
   two more GIL hand-overs per call, on every span start and end). A hook
   charges a group only after checking its generation and state, and a slot
   goes back to the FIFO queue only when released, so recycling a slot under
   this lock does not race with charges to it (a MEM/OBJ hook that checked an
   id just before its slot was released and reused would need 8192 other
   groups created in between). */
oa_spin g_groups_lock = OA_SPIN_INIT;

void reset_group(oa_group *g)
{
    oa_ctr_zero(&g->mem_obj);
    oa_ctr_zero(&g->raw);
    oa_ctr_zero(&g->native);
    atomic_store_explicit(&g->native_gil_bytes, 0, OA_RELAXED);
    atomic_store_explicit(&g->peak, 0, OA_RELAXED);
    atomic_store_explicit(&g->peak_gil, 0, OA_RELAXED);
    atomic_store_explicit(&g->child_bytes, 0, OA_RELAXED);
    atomic_store_explicit(&g->noted, 0, OA_RELAXED);
}

static void queue_push(uint32_t *head, uint32_t *tail, oa_group *groups, uint32_t slot)
{
    groups[slot].next = OA_NO_SLOT;
    if (*tail == OA_NO_SLOT)
        *head = slot;
    else
        groups[*tail].next = slot;
    *tail = slot;
}

static uint32_t queue_pop(uint32_t *head, uint32_t *tail, oa_group *groups)
{
    uint32_t slot = *head;
    if (slot != OA_NO_SLOT) {
        *head = groups[slot].next;
        if (*head == OA_NO_SLOT)
            *tail = OA_NO_SLOT;
        groups[slot].next = OA_NO_SLOT;
    }
    return slot;
}

static void groups_reset_all(void)
{
    oa_spin_lock(&g_groups_lock);
    oa_group *groups = group_table();
    g_free_head = g_free_tail = OA_NO_SLOT;
    g_parked_head = g_parked_tail = OA_NO_SLOT;
    atomic_store_explicit(&g_slots_parked, 0, OA_RELAXED);
    for (uint32_t i = 0; i < g_ngroups; i++) {
        oa_group *g = &groups[i];
        reset_group(g);
        /* Install starts with empty live tables: nothing is tagged. */
        atomic_store_explicit(&g->tagged_mem_obj, 0, OA_RELAXED);
        atomic_store_explicit(&g->tagged_raw, 0, OA_RELAXED);
        g->next = OA_NO_SLOT;
        if (i < OA_FIRST_USER_SLOT) {
            atomic_store_explicit(&g->state, OA_GROUP_OPEN, OA_RELAXED);
            continue;
        }
        atomic_store_explicit(&g->state, OA_GROUP_FREE, OA_RELAXED);
        queue_push(&g_free_head, &g_free_tail, groups, i);
    }
    g_groups_open = 0;
    oa_spin_unlock(&g_groups_lock);
    oa_attr_epoch_bump();
}

int setup_groups(uint32_t max_groups)
{
    uint32_t n = max_groups + OA_FIRST_USER_SLOT;
    oa_group *cur = group_table();
    if (cur == NULL || g_ngroups != n) {
        char *mem = calloc(1, OA_GROUP_HEADER + (size_t)n * sizeof(oa_group));
        if (mem == NULL)
            return -1;
        *(uint32_t *)mem = n;
        oa_group *fresh = (oa_group *)(mem + OA_GROUP_HEADER);
        if (cur != NULL) {
            if (g_nretired == (int)(sizeof(g_retired_groups) / sizeof(g_retired_groups[0]))) {
                free(mem);
                return -1;
            }
            g_retired_groups[g_nretired++] = cur;
            /* Generations continue above every one the old table issued:
               restarting them at 0 would hand out the ids of groups from
               before the reinstall again, and a Group object (or a thread's
               current group) kept from then would close, release or be
               charged for the new group that got its id. */
            uint64_t gen_floor = 0;
            for (uint32_t i = 0; i < g_ngroups; i++) {
                uint64_t gen = atomic_load_explicit(&cur[i].gen, OA_RELAXED);
                if (gen > gen_floor)
                    gen_floor = gen;
            }
            for (uint32_t i = 0; i < n; i++)
                atomic_store_explicit(&fresh[i].gen, gen_floor, OA_RELAXED);
        }
        atomic_store_explicit(&g_groups, fresh, memory_order_release);
        g_ngroups = n;
    }
    groups_reset_all();
    return 0;
}

/* ------------------------------------------------------------ groups API */

static int64_t tagged_blocks(oa_group *g)
{
    return atomic_load_explicit(&g->tagged_mem_obj, OA_RELAXED) +
           atomic_load_explicit(&g->tagged_raw, OA_RELAXED);
}

/* A live block remembers the low 16 bits of its group's generation. So a
   slot is not reused into a new epoch of 65,536 generations while blocks
   tagged with it are alive: such a slot is parked instead, and goes back to
   the free queue once they are all freed. Every block tagged with a slot
   then belongs to the slot's current epoch, where 16 bits tell its group
   apart from every other. Parking happens at most once per 65,536 reuses of
   a slot, and only while long-lived blocks hold it. */
static uint32_t take_slot(oa_group *groups)
{
    if (g_parked_head != OA_NO_SLOT && tagged_blocks(&groups[g_parked_head]) == 0)
        queue_push(&g_free_head, &g_free_tail, groups,
                   queue_pop(&g_parked_head, &g_parked_tail, groups));
    for (;;) {
        uint32_t slot = queue_pop(&g_free_head, &g_free_tail, groups);
        if (slot == OA_NO_SLOT)
            return slot;
        oa_group *g = &groups[slot];
        uint64_t next_gen = atomic_load_explicit(&g->gen, OA_RELAXED) + 1;
        if ((next_gen & 0xFFFFu) != 0 || tagged_blocks(g) == 0)
            return slot;
        queue_push(&g_parked_head, &g_parked_tail, groups, slot);
        atomic_fetch_add_explicit(&g_slots_parked, 1, OA_RELAXED);
    }
}

uint64_t oa_group_new_gil_held(void)
{
    oa_spin_lock(&g_groups_lock);
    uint64_t gid = OA_GROUP_OVERFLOW;
    oa_group *groups = group_table();
    uint32_t slot = groups != NULL ? take_slot(groups) : OA_NO_SLOT;
    if (slot != OA_NO_SLOT) {
        oa_group *g = &groups[slot];
        /* A RAW hook that pinned the slot before its release may still be
           charging it: its counters are reset for the new group only after
           (the fence pairs with pin_group's). Such a hook runs no code that
           waits for this lock, so this ends. */
        atomic_thread_fence(memory_order_seq_cst);
        while (atomic_load_explicit(&g->raw_pins, memory_order_acquire) != 0)
            sched_yield();
        reset_group(g);
        uint64_t gen = atomic_load_explicit(&g->gen, OA_RELAXED) + 1;
        atomic_store_explicit(&g->gen, gen, OA_RELAXED);
        atomic_store_explicit(&g->state, OA_GROUP_OPEN, memory_order_release);
        g_groups_open++;
        gid = (gen << OA_SLOT_BITS) | slot;
    } else {
        atomic_fetch_add_explicit(&g_groups_dropped, 1, OA_RELAXED);
    }
    oa_spin_unlock(&g_groups_lock);
    return gid;
}

/* The group slot of a user group id, or NULL when unknown or stale. */
static oa_group *user_group(uint64_t gid)
{
    oa_group *groups = group_table();
    uint32_t slot = (uint32_t)(gid & OA_SLOT_MASK);
    if (groups == NULL || slot < OA_FIRST_USER_SLOT || slot >= table_slots(groups))
        return NULL;
    oa_group *g = &groups[slot];
    if (atomic_load_explicit(&g->gen, OA_RELAXED) != (gid >> OA_SLOT_BITS) ||
        atomic_load_explicit(&g->state, OA_RELAXED) == OA_GROUP_FREE)
        return NULL;
    return g;
}

int oa_group_close_gil_held(uint64_t gid)
{
    if (gid == OA_GROUP_NONE || gid == OA_GROUP_OVERFLOW)
        return OA_OK;
    oa_spin_lock(&g_groups_lock);
    oa_group *g = user_group(gid);
    if (g != NULL)
        atomic_store_explicit(&g->state, OA_GROUP_CLOSED, OA_RELAXED);
    oa_spin_unlock(&g_groups_lock);
    if (g != NULL)
        oa_attr_epoch_bump_for_group(gid); /* threads that cached it re-resolve */
    return g != NULL ? OA_OK : OA_ERR_STALE_GROUP;
}

int oa_group_release_gil_held(uint64_t gid)
{
    if (gid == OA_GROUP_NONE || gid == OA_GROUP_OVERFLOW)
        return OA_OK;
    oa_spin_lock(&g_groups_lock);
    oa_group *g = user_group(gid);
    if (g != NULL) {
        oa_group *groups = group_table();
        uint32_t slot = (uint32_t)(g - groups);
        /* Its MEM/OBJ entries still in the table are tagged from now on
           (groups.h): exact, under the GIL, which every MEM/OBJ hook holds. */
        plain_add_signed(&g->tagged_mem_obj,
                         atomic_load_explicit(&g->mem_obj.live_count, OA_RELAXED));
        atomic_store_explicit(&g->state, OA_GROUP_FREE, memory_order_seq_cst);
        queue_push(&g_free_head, &g_free_tail, groups, slot);
        g_groups_open--;
        oa_attr_epoch_bump_for_group(gid);
    }
    oa_spin_unlock(&g_groups_lock);
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
    int live = figures_live();
    oa_ctr_sum(&g->mem_obj, live, out);
    oa_ctr_sum(&g->raw, live, out);
    oa_ctr_sum(&g->native, live, out);
    out->native_bytes = atomic_load_explicit(&g->native.alloc_bytes, OA_RELAXED) +
                        atomic_load_explicit(&g->native_gil_bytes, OA_RELAXED);
    out->peak_bytes = group_peak(g);
    return OA_OK;
}

/* The span-end path in one call: close, read, and (when asked) release. */
int oa_group_finish_gil_held(uint64_t gid, int release, oa_stats *out)
{
    int rc = oa_group_close_gil_held(gid);
    if (rc != OA_OK)
        return rc;
    rc = oa_group_stats(gid, out);
    if (rc == OA_OK && release)
        rc = oa_group_release_gil_held(gid);
    return rc;
}

/* Close a span's group and read its figures (not released). */
int oa_span_read(uint64_t gid, oa_span_figures *out)
{
    oa_stats st;
    int rc = oa_group_finish_gil_held(gid, 0, &st);
    if (rc != OA_OK)
        return rc;
    oa_group *g = user_group(gid);
    uint64_t children = g != NULL ? atomic_load_explicit(&g->child_bytes, OA_RELAXED) : 0;
    out->alloc_bytes = st.alloc_bytes;
    out->alloc_count = st.alloc_count;
    out->native_bytes = st.native_bytes;
    out->native = atomic_load_explicit(&g_native_on, OA_RELAXED);
    out->inclusive_bytes = st.alloc_bytes + children;
    out->live_bytes = st.live_bytes;
    out->peak_bytes = st.peak_bytes;
    out->noted = g != NULL && atomic_load_explicit(&g->noted, OA_RELAXED);
    out->released = 0;
    out->events_pending = oa_events_pending();
    return OA_OK;
}

/* The span-end path of the span processor in one call (through the C API
   capsule, api/capsule.c): close, read, pass the inclusive bytes up to the
   parent's group, and release unless the span still holds keep_from live
   bytes or more. */
int oa_span_end(uint64_t gid, uint64_t parent, int64_t keep_from, oa_span_figures *out)
{
    int rc = oa_span_read(gid, out);
    if (rc != OA_OK)
        return rc;
    /* Under the lock: the parent's slot cannot be released and reused
       between the generation check and the add. A parent that is already
       released (stale id) does not take it. */
    if (parent != OA_GROUP_NONE && parent != OA_GROUP_OVERFLOW) {
        oa_spin_lock(&g_groups_lock);
        oa_group *p = user_group(parent);
        if (p != NULL)
            atomic_fetch_add_explicit(&p->child_bytes, out->inclusive_bytes, OA_RELAXED);
        oa_spin_unlock(&g_groups_lock);
    }
    out->released = keep_from < 0 || out->live_bytes < keep_from;
    if (out->released)
        rc = oa_group_release_gil_held(gid);
    return rc;
}

/* ------------------------------------------- the same, from the cffi binding */

/* cffi calls these with the GIL released. They take it: MEM/OBJ hooks
   check a group and charge it under the GIL, so a group can then never be
   released and its slot reused between the two (RAW hooks pin the group
   instead). The span path calls the _gil_held versions through the C API. */

uint64_t oa_group_new(void)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    uint64_t gid = oa_group_new_gil_held();
    PyGILState_Release(gil);
    return gid;
}

int oa_group_close(uint64_t gid)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    int rc = oa_group_close_gil_held(gid);
    PyGILState_Release(gil);
    return rc;
}

int oa_group_release(uint64_t gid)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    int rc = oa_group_release_gil_held(gid);
    PyGILState_Release(gil);
    return rc;
}

int oa_group_finish(uint64_t gid, int release, oa_stats *out)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    int rc = oa_group_finish_gil_held(gid, release, out);
    PyGILState_Release(gil);
    return rc;
}
