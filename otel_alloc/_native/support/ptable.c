#include "ptable.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define OA_PTABLE_MIN_CAP 1024 /* slots; a multiple of OA_GROUP */

/* put and pop run on every allocation and free: the rare work (rebuilding,
   exact sizes of huge blocks, a key put twice) lives in functions of its
   own, out of the way of the common path. */
#define OA_COLD __attribute__((noinline, cold))

static inline size_t next_group(size_t group, size_t ngroups)
{
    return ++group == ngroups ? 0 : group;
}

/* Rebuild at 3/4 use to 7/12 load (growth by 9/7), and below 1/4 load to
   7/12 again (never under the minimum): 17 bytes a slot and one per group
   make at most 30 bytes per live block right after growing. At 7/8 use, groups filled up
   and put walked past its home group more often (ptable_bench.c: 127
   against 99 instructions a put). The old table (linear probing with
   backward-shift deletion, 16 bytes a slot, 3/4 load) scanned to the end
   of its run on every free: callgrind, core workload, live mode, 71
   instructions a pop and 42 a put; now both are inline and mostly answer
   from the home group. */
static size_t cap_for(size_t count)
{
    size_t cap = count * 12 / 7 + OA_GROUP;
    cap -= cap % OA_GROUP;
    return cap < OA_PTABLE_MIN_CAP ? OA_PTABLE_MIN_CAP : cap;
}

static void set_limits(oa_ptable *t)
{
    t->growth_left = t->cap - t->cap / 4 - t->count; /* 3/4 use */
    t->shrink_at = t->cap > OA_PTABLE_MIN_CAP ? t->cap / 4 : 0;
}

/* Slot arrays are mapped pages, not malloc blocks: a table of up to a few
   MiB is below glibc's (dynamic) mmap threshold and would sit in the
   program's heap, changing where the program's own blocks go and how far the
   heap is trimmed. On a NumPy job that cost the program a quarter more page
   faults, in one tracer mode and not another, depending only on where the
   table happened to land. The control bytes follow the slots in the same
   mapping. */
static size_t mapping_bytes(size_t cap)
{
    return cap * (sizeof(oa_entry) + 1) + cap / OA_GROUP;
}

/* A table of this many bytes and more asks for transparent huge pages.
   Its puts and pops that miss the nursery land at random in the slots and
   the control bytes: with 4 KiB pages each is a TLB miss besides a cache
   miss once the table outgrows what the TLB maps (the second-level data
   TLB of the AMD Zen 3 here holds 2,048 entries: 8 MiB of 4 KiB pages).
   Held by a long-running program, 3 million tracked blocks made a 78 MiB
   table. Only the 2 MiB extents the mapping covers whole get huge pages,
   so no byte is added, and a kernel without them (or set to "never")
   refuses or ignores the advice: nothing changes. */
#define OA_HUGE_FROM ((size_t)4 << 20)

static int map_table(oa_ptable *t, size_t cap)
{
    size_t bytes = mapping_bytes(cap);
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return -1;
#ifdef MADV_HUGEPAGE
    if (bytes >= OA_HUGE_FROM)
        (void)madvise(p, bytes, MADV_HUGEPAGE);
#endif
    t->slots = (oa_entry *)p;
    t->ctrl = (uint8_t *)p + cap * sizeof(oa_entry);
    t->overflowed = t->ctrl + cap; /* mapped pages come zeroed: none marked */
    memset(t->ctrl, OA_CTRL_EMPTY, cap);
    t->cap = cap;
    t->nflagged = 0;
    t->flagged_at_build = 0;
    return 0;
}

static void unmap_table(oa_entry *slots, size_t cap)
{
    if (slots != NULL)
        munmap(slots, mapping_bytes(cap));
}

oa_entry oa_ptable_no_near = {OA_NEAR_NONE, 0};

/* The nursery's pages (mapped, like the slots, and for the same reasons):
   apart from the slots, which a rebuild maps anew. */
#define OA_NEAR_BYTES (OA_NEAR * sizeof(oa_entry))

int oa_ptable_init(oa_ptable *t, int nursery)
{
    memset(t, 0, sizeof(*t));
    t->near = &oa_ptable_no_near;
    if (!nursery) {
        void *p = mmap(NULL, OA_FILTER, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                       -1, 0);
        if (p == MAP_FAILED)
            return -1;
        t->filter = (uint8_t *)p; /* mapped pages come zeroed: no key anywhere */
    } else {
        void *p = mmap(NULL, OA_NEAR_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                       -1, 0);
        if (p == MAP_FAILED)
            return -1;
        t->near = (oa_entry *)p; /* mapped pages come zeroed: every entry free */
        t->near_mask = OA_NEAR - 1;
    }
    if (map_table(t, OA_PTABLE_MIN_CAP) != 0) {
        oa_ptable_destroy(t);
        return -1;
    }
    set_limits(t);
    return 0;
}

void oa_ptable_destroy(oa_ptable *t)
{
    unmap_table(t->slots, t->cap);
    if (t->near_mask != 0)
        munmap(t->near, OA_NEAR_BYTES);
    if (t->filter != NULL)
        munmap(t->filter, OA_FILTER);
    free(t->bigs);
    memset(t, 0, sizeof(*t));
}

void oa_ptable_clear(oa_ptable *t)
{
    if (t->slots != NULL) {
        memset(t->ctrl, OA_CTRL_EMPTY, t->cap);
        memset(t->overflowed, 0, t->cap / OA_GROUP);
    }
    t->nflagged = 0;
    t->flagged_at_build = 0;
    t->count = 0;
    t->nbig = 0;
    if (t->near_mask != 0)
        memset(t->near, 0, OA_NEAR_BYTES);
    if (t->filter != NULL)
        memset(t->filter, 0, OA_FILTER);
    t->near_count = 0;
    set_limits(t);
}

size_t oa_ptable_bytes(const oa_ptable *t)
{
    size_t near_bytes = t->near_mask != 0 ? OA_NEAR_BYTES : 0;
    size_t filter_bytes = t->filter != NULL ? OA_FILTER : 0;
    return mapping_bytes(t->cap) + near_bytes + filter_bytes + t->capbig * sizeof(oa_big);
}

/* Mark a group that a put went past without finding a free slot. */
static void mark_overflowed(oa_ptable *t, size_t group)
{
    if (!t->overflowed[group]) {
        t->overflowed[group] = 1;
        t->nflagged++;
    }
}

/* The first free (empty or deleted) slot from the key's home group on,
   marking every group passed on the way. */
static size_t free_slot_from(oa_ptable *t, size_t group)
{
    size_t ngroups = t->cap / OA_GROUP;
    uint64_t avail;
    while ((avail = oa_match_free(oa_group_load(t->ctrl, group))) == 0) {
        mark_overflowed(t, group);
        group = next_group(group, ngroups);
    }
    return group * OA_GROUP + oa_mask_slot(avail);
}

/* Place an entry known to be absent in a table without deleted slots that
   has room (rebuild). */
static void place(oa_ptable *t, uintptr_t key, uint64_t meta)
{
    uint64_t h = oa_hash_of(key);
    size_t i = free_slot_from(t, oa_home_group(h, t->cap / OA_GROUP));
    t->ctrl[i] = (uint8_t)oa_h2_of(h);
    t->slots[i].key = key;
    t->slots[i].meta = meta;
}

/* Move every live entry of the slots into fresh slots of new_cap (dropping
   the deleted ones); the nursery stays as it is. -1, the old slots kept,
   when the pages cannot be had (map_table changes nothing then). */
OA_COLD static int rebuild(oa_ptable *t, size_t new_cap)
{
    oa_entry *old_slots = t->slots;
    const uint8_t *old_ctrl = t->ctrl;
    size_t old_cap = t->cap;
    if (map_table(t, new_cap) != 0)
        return -1;
    for (size_t i = 0; i < old_cap; i++) {
        if (!(old_ctrl[i] & 0x80u))
            place(t, old_slots[i].key, old_slots[i].meta);
    }
    unmap_table(old_slots, old_cap);
    t->flagged_at_build = t->nflagged;
    t->rebuilds++;
    set_limits(t);
    return 0;
}

OA_COLD static int shrink(oa_ptable *t)
{
    /* Shrinking is an optimisation: on failure keep the larger table. */
    (void)rebuild(t, cap_for(t->count));
    return 1;
}

/* Exact sizes of blocks too big for the packed field: rare, a short list. */
OA_COLD static int big_put(oa_ptable *t, uintptr_t key, uint64_t size)
{
    for (size_t i = 0; i < t->nbig; i++) {
        if (t->bigs[i].key == key) {
            t->bigs[i].size = size;
            return 0;
        }
    }
    if (t->nbig == t->capbig) {
        size_t nc = t->capbig ? t->capbig * 2 : 8;
        oa_big *nb = realloc(t->bigs, nc * sizeof(oa_big));
        if (nb == NULL)
            return -1;
        t->bigs = nb;
        t->capbig = nc;
    }
    t->bigs[t->nbig].key = key;
    t->bigs[t->nbig].size = size;
    t->nbig++;
    return 0;
}

OA_COLD static uint64_t big_pop(oa_ptable *t, uintptr_t key)
{
    for (size_t i = 0; i < t->nbig; i++) {
        if (t->bigs[i].key == key) {
            uint64_t size = t->bigs[i].size;
            t->bigs[i] = t->bigs[--t->nbig];
            return size;
        }
    }
    return OA_SIZE_BIG;
}

static inline uint64_t entry_size(oa_ptable *t, uintptr_t key, uint64_t meta)
{
    uint64_t s = meta & OA_SIZE_BIG;
    return s == OA_SIZE_BIG ? big_pop(t, key) : s;
}

/* The key is in slot i already (a block we never saw freed, e.g. freed while
   the hooks were out of the chain): hand back its old value, store the new. */
OA_COLD static int replace(oa_ptable *t, size_t i, uint64_t size, uint64_t meta,
                           uint64_t *old_size, uint64_t *old_meta)
{
    uintptr_t key = t->slots[i].key;
    *old_meta = t->slots[i].meta;
    *old_size = entry_size(t, key, *old_meta);
    if ((meta & OA_SIZE_BIG) == OA_SIZE_BIG && big_put(t, key, size) != 0) {
        /* Cannot keep the exact size: drop the entry entirely. */
        oa_ptable_remove_at(t, i);
        if (t->count < t->shrink_at)
            shrink(t);
        return -1;
    }
    t->slots[i].meta = meta;
    return 1;
}

/* Hand back slot i's entry and take it out. */
static inline int take(oa_ptable *t, size_t i, uint64_t *size, uint64_t *meta)
{
    *meta = t->slots[i].meta;
    *size = entry_size(t, t->slots[i].key, *meta);
    oa_ptable_remove_at(t, i);
    if (t->count < t->shrink_at)
        return shrink(t);
    return 1;
}

/* Enter key, known to be in neither the slots nor the nursery, in the
   first free slot from its home group on (groups passed without one are
   marked), or in the big list too when its size needs it. 0, or -1 when
   the table could not grow. */
static int insert_slots(oa_ptable *t, uintptr_t key, uint64_t size, uint64_t meta,
                        int may_rebuild_crowded)
{
    uint64_t h = oa_hash_of(key);
    size_t ngroups = t->cap / OA_GROUP;
    /* Marked groups only make walks longer until a rebuild clears them:
       once one group in eight has been marked since the last rebuild,
       rebuild now (the same size, or larger when the live entries need
       it). Marks the rebuild itself sets come from live entries and would
       come back: they do not count, or a table whose entries crowd some
       groups would rebuild on every put (seen under ThreadSanitizer's
       allocator, whose addresses filled a minimum-size table's groups). */
    int crowded = may_rebuild_crowded && t->nflagged - t->flagged_at_build > ngroups / 8;
    size_t i = crowded ? 0 : free_slot_from(t, oa_home_group(h, ngroups));
    int takes_empty = !crowded && t->ctrl[i] == OA_CTRL_EMPTY;
    if (crowded || (takes_empty && t->growth_left == 0)) {
        if (rebuild(t, cap_for(t->count + 1)) != 0)
            return -1;
        /* Once: keys that crowd one place even in a fresh table (not
           pointers, say) must not rebuild on every put. */
        return insert_slots(t, key, size, meta, 0);
    }
    if ((meta & OA_SIZE_BIG) == OA_SIZE_BIG && big_put(t, key, size) != 0)
        return -1;
    t->growth_left -= (size_t)takes_empty;
    t->ctrl[i] = (uint8_t)oa_h2_of(h);
    t->slots[i].key = key;
    t->slots[i].meta = meta;
    t->count++;
    if (t->filter != NULL)
        oa_filter_raise(t->filter, h);
    return 0;
}

/* The slot that holds key, or OA_NOT_FOUND. It can only lie in its home
   group or past marked groups: the walk checks those. */
static size_t find_slot(const oa_ptable *t, uintptr_t key)
{
    uint64_t h = oa_hash_of(key);
    uint64_t h2 = oa_h2_of(h);
    size_t ngroups = t->cap / OA_GROUP;
    size_t group = oa_home_group(h, ngroups);
    for (;;) {
        oa_group_bits w = oa_group_load(t->ctrl, group);
        size_t i = oa_group_find(t, group, w, h2, key);
        if (i != OA_NOT_FOUND)
            return i;
        if (!oa_group_marked(t, group, oa_match_empty(w)))
            return OA_NOT_FOUND;
        group = next_group(group, ngroups);
    }
}

/* Every put the inline fast path does not finish (ptable.h), its nursery
   entry checked by oa_ptable_put_slow: the key may be in its home group or
   past it, the home group may have no empty slot, the growth budget may be
   spent, the size may need the big list, the nursery entry's key may have
   to move to the slots. A key found in the slots is replaced there; else,
   when its size fits the packed field, it takes its nursery entry (whose
   key moves to the slots), or goes to the slots itself. */
static int put_walk(oa_ptable *t, uintptr_t key, uint64_t size, uint64_t meta,
                    uint64_t *old_size, uint64_t *old_meta)
{
    size_t found = find_slot(t, key);
    if (found != OA_NOT_FOUND)
        return replace(t, found, size, meta, old_size, old_meta);
    oa_entry *near = oa_near_of(t, oa_hash_of(key));
    if (near->key == OA_NEAR_NONE || (meta & OA_SIZE_BIG) == OA_SIZE_BIG)
        return insert_slots(t, key, size, meta, 1);
    if (oa_near_holds(near->key)) {
        if (insert_slots(t, near->key, near->meta & OA_SIZE_BIG, near->meta, 1) != 0)
            return -1;
        t->near_count--;
    }
    near->key = key;
    near->meta = meta;
    t->near_count++;
    return 0;
}

int oa_ptable_put_slow(oa_ptable *t, uintptr_t key, uint64_t size, uint64_t meta,
                       uint64_t *old_size, uint64_t *old_meta)
{
    /* A destroyed table (no slots) stays empty rather than regrow. */
    if (t->slots == NULL)
        return -1;
    oa_entry *near = oa_near_of(t, oa_hash_of(key));
    if (near->key == key) {
        /* Put twice (see replace): the nursery never holds a size too big
           for the packed field, so such a size moves to the slots. */
        *old_meta = near->meta;
        *old_size = near->meta & OA_SIZE_BIG;
        if ((meta & OA_SIZE_BIG) != OA_SIZE_BIG) {
            near->meta = meta;
            return 1;
        }
        (void)oa_near_take(t, near, 0);
        return insert_slots(t, key, size, meta, 1) < 0 ? -1 : 1;
    }
    /* The one put of a key popped from its nursery entry that may go to
       the slots (a size too big for the entry): the entry must no longer
       say the key is in no slot. */
    if (near->key == (key | OA_NEAR_POPPED))
        near->key = 0;
    return put_walk(t, key, size, meta, old_size, old_meta);
}

/* Every pop the inline fast path does not finish: the key past its home
   group (behind marked groups), absent, huge, or its removal due to shrink
   the table. The fast path has looked in the nursery already. */
int oa_ptable_pop_slow(oa_ptable *t, uintptr_t key, uint64_t *size, uint64_t *meta)
{
    if (t->count == 0)
        return 0;
    size_t found = find_slot(t, key);
    return found != OA_NOT_FOUND ? take(t, found, size, meta) : 0;
}
