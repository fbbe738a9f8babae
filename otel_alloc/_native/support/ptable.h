/*
 * Open-addressing pointer table: live block address -> packed (size, group).
 *
 * Slots come in aligned groups of sixteen (eight without SSE2), each slot
 * with a control byte: empty, deleted, or seven bits of the key's hash. A
 * lookup compares its home group's control bytes with the key's seven bits
 * all at once and looks only at the slots that match (the design of
 * Abseil's and Rust's "Swiss" tables; ptable_group.h). Each group also has
 * an "overflowed" mark, set when a put found it without a free slot and
 * went on: a lookup goes past a group only when it is marked. A free marks
 * its slot empty in an unmarked group (no key lives past it), else deleted;
 * deleted slots are reused by later puts and dropped when the table is
 * rebuilt. put and pop are inline for the common case (the home group
 * answers) and call ptable.c for the rest.
 *
 * In front of the slots sits a nursery: OA_NEAR entries, one per value of
 * twelve of the hash's top bits, in pages of its own. A new key always
 * takes its nursery entry, and the key there before moves to the slots.
 * Most of a Python program's blocks die young, and pymalloc hands the block
 * freed last out first, so most pops find their key there: one compare in
 * 64 KiB that stay in the cache, where a pop from the slots misses it twice
 * on a large table (the control bytes, then the entry). On the suite's
 * service 95.5 % of the MEM/OBJ frees did, and only one put in twenty moved
 * a key to the slots. A put reads its home group's control bytes, to know
 * the key is not in the slots: a key is never in both places, and a key put
 * twice is found and replaced at once. Not when the nursery entry says the
 * key was popped from it and not put since: a pop leaves the key there with
 * its low bit set (OA_NEAR_POPPED), and such an entry is free to any put.
 * A key popped from its nursery entry was not in the slots, and until the
 * entry is taken again every put of that key passes through it (the
 * general path's one way past it, a size too big for the packed field,
 * clears the mark first), so the put of the same address, which pymalloc
 * makes soon after its free, skips the control bytes: on the suite's
 * service their load had 27 % of live mode's allocation-hook samples.
 * Rejected: a nursery entry kept by the key that took it first until that
 * key is popped. The objects a program makes at start-up took them for
 * good: 3 % of the service's frees found their key there.
 *
 * The table is rebuilt at 3/4 use (live entries and deleted slots) to 7/12
 * load, and to that load again when live entries fall below 1/4 of the
 * slots: 17 bytes per slot (16 of entry, one control byte) and a byte per
 * group of sixteen, so 23 to 30 bytes per live block while it grows, and
 * the nursery's fixed 64 KiB.
 *
 * The slots are pages mapped for the table alone (mmap), never from a PyMem
 * domain, so the table's own bookkeeping is never traced, and never from
 * malloc, so it does not change the program's heap (ptable.c says why). The
 * rare list of huge blocks comes from libc. The table is not synchronised:
 * callers hold the lock (or the GIL) that owns it, and call put and pop
 * only on a table that has slots (initialised, not destroyed), with keys
 * that are even and not 0: block addresses, which every allocator aligns
 * (an odd key is a popped nursery entry's, 0 a free one's, and 1 is
 * OA_NEAR_NONE).
 */
#ifndef OA_PTABLE_H
#define OA_PTABLE_H

#include <stddef.h>
#include <stdint.h>

#include "ptable_filter.h"
#include "ptable_group.h"

/* Hidden, like every header of the core: calls from the hooks bind
   directly instead of through the PLT. */
#pragma GCC visibility push(hidden)

/* Packed value layout, low to high: size (27 bits), a "sampled" flag, the
   group slot (20 bits), the low 16 bits of the group's generation. Sizes that
   do not fit in 27 bits are stored as OA_SIZE_BIG and kept exactly in the
   big-block list. */
#define OA_SIZE_BITS 27
#define OA_SLOT_BITS 20
#define OA_SIZE_BIG ((UINT64_C(1) << OA_SIZE_BITS) - 1)
#define OA_SAMPLED_FLAG (UINT64_C(1) << OA_SIZE_BITS)
#define OA_SLOT_SHIFT (OA_SIZE_BITS + 1)
#define OA_GEN_SHIFT (OA_SLOT_SHIFT + OA_SLOT_BITS)
#define OA_SLOT_MASK ((UINT64_C(1) << OA_SLOT_BITS) - 1)

typedef struct {
    uintptr_t key;
    uint64_t meta;
} oa_entry;

/* The nursery's entries, for a table that has one (a power of two, at most
   2^(64 - OA_NEAR_SHIFT)). */
#define OA_NEAR_BITS 12
#define OA_NEAR (1u << OA_NEAR_BITS)
/* The hash bits that pick a nursery entry start here (then masked). */
#define OA_NEAR_SHIFT 52
/* The key of a table's one nursery entry when it has no nursery: never
   free, never a block's address. */
#define OA_NEAR_NONE ((uintptr_t)1)
/* Or'ed into the key a pop takes out of its nursery entry: the entry is
   free, and its key was in no slot when popped (see above). */
#define OA_NEAR_POPPED ((uintptr_t)1)

/* Whether a nursery entry's key is a block's (not free: neither 0 nor
   marked popped). Not for OA_NEAR_NONE, which callers rule out first. */
static inline int oa_near_holds(uintptr_t near_key)
{
    return near_key != 0 && !(near_key & OA_NEAR_POPPED);
}

typedef struct {
    uintptr_t key;
    uint64_t size;
} oa_big;

typedef struct {
    oa_entry *slots;
    uint8_t *ctrl;      /* cap control bytes, in the same mapping after the slots */
    oa_entry *near;     /* the nursery: an entry with key 0 or an odd key is free */
    uint64_t near_mask; /* its entries less one (0: no nursery, `near` is a
                           single entry that is never free) */
    uint8_t *overflowed; /* per group, after the control bytes: 1 when a key whose
                            probe started at or before it lives past it */
    size_t cap;         /* a multiple of the group size (OA_GROUP) */
    size_t count;       /* live entries in the slots (the nursery's apart) */
    size_t growth_left; /* empty slots a put may still take before a rebuild */
    size_t shrink_at;   /* count below which pop rebuilds smaller (1/4 load) */
    size_t nflagged;    /* groups marked overflowed */
    size_t flagged_at_build; /* of which marked by the last rebuild itself */
    uint64_t rebuilds;  /* rebuilds so far (growth, shrinking, marks) */
    oa_big *bigs;
    size_t nbig;
    size_t capbig;
    size_t near_count;  /* live entries in the nursery */
    uint8_t *filter;    /* a table without a nursery: keys in the slots per
                           OA_FILTER bucket (see oa_ptable_may_hold); NULL with one */
} oa_ptable;

/* `near` of every table without a nursery: its key is OA_NEAR_NONE, and
   nothing writes it. */
extern oa_entry oa_ptable_no_near;

/* Packing helpers. */
static inline uint64_t oa_meta_pack(uint64_t size, uint32_t slot, uint64_t gen, int sampled)
{
    uint64_t s = size >= OA_SIZE_BIG ? OA_SIZE_BIG : size;
    return s | (sampled ? OA_SAMPLED_FLAG : 0) |
           ((uint64_t)(slot & OA_SLOT_MASK) << OA_SLOT_SHIFT) | ((gen & 0xFFFFu) << OA_GEN_SHIFT);
}
static inline uint32_t oa_meta_slot(uint64_t meta)
{
    return (uint32_t)((meta >> OA_SLOT_SHIFT) & OA_SLOT_MASK);
}
static inline uint16_t oa_meta_gen16(uint64_t meta)
{
    return (uint16_t)(meta >> OA_GEN_SHIFT);
}

/* `nursery`: 1 for a table with a nursery (OA_NEAR entries, mapped with
   the table), 0 without (a table that holds few of the blocks it is asked
   about, like estimate mode's sample). Returns 0 on success, -1 when memory
   for the table could not be had. */
int oa_ptable_init(oa_ptable *t, int nursery);
void oa_ptable_destroy(oa_ptable *t);
/* Forget every entry, keep the capacity (used in a forked child). */
void oa_ptable_clear(oa_ptable *t);

/* The general paths of put and pop (ptable.c), which the inline fast paths
   below hand everything else to. */
int oa_ptable_put_slow(oa_ptable *t, uintptr_t key, uint64_t size, uint64_t meta,
                       uint64_t *old_size, uint64_t *old_meta);
int oa_ptable_pop_slow(oa_ptable *t, uintptr_t key, uint64_t *size, uint64_t *meta);

/* put_slow through locals of its own, so that a caller's *old_size and
   *old_meta, once put is inlined, can stay in registers on the fast path
   (passed on to the call, they were spilled and zeroed on the stack for
   every put; the same for pop below). */
static inline int oa_ptable_put_slow_copy(oa_ptable *t, uintptr_t key, uint64_t size,
                                          uint64_t meta, uint64_t *old_size, uint64_t *old_meta)
{
    uint64_t slow_size, slow_meta;
    int r = oa_ptable_put_slow(t, key, size, meta, &slow_size, &slow_meta);
    if (r == 1) {
        *old_size = slow_size;
        *old_meta = slow_meta;
    }
    return r;
}

/* Start fetching the entries of `group` (its 16 x 16 bytes, four cache
   lines): which one put or pop needs is only known once the control bytes
   are in, and a table of a few MiB misses the cache on both. Fetched side
   by side, the two misses cost about one (perf on the suite's service: the
   free hook's wait on the entry went from 29-35 % to 15 % of its
   samples). */
#define OA_PREFETCH_MIN_CAP 32768 /* slots: 544 KiB of table */

static inline void oa_prefetch_entries(const oa_ptable *t, size_t group)
{
    /* A smaller table stays in the cache, where the three lines put or pop
       does not need only crowd out the program's own. The suite's
       in-process items keep 3k to 20k slots; json_loads read 1.04x with
       them in 20 alternated pairs, within the noise of such pairs here, so
       this is a precaution, not a measured win. */
    if (t->cap < OA_PREFETCH_MIN_CAP)
        return;
    const char *entries = (const char *)&t->slots[group * OA_GROUP];
    /* Written out: GCC kept the loop, four compares and jumps more. */
    __builtin_prefetch(entries);
    __builtin_prefetch(entries + 64);
#if OA_GROUP == 16
    __builtin_prefetch(entries + 128);
    __builtin_prefetch(entries + 192);
#endif
}

/* Whether `group` is marked overflowed, `empty` being the empty slots its
   control bytes show. A group with an empty slot is not marked: a group is
   marked only when a put found it without a free slot, and a marked group
   gets no empty slot back until a rebuild clears its mark. So the mark, a
   byte in another part of the mapping (a third cache miss on a large
   table: perf on the suite's service put 11 % of the free hook's samples on
   that load), is read only for a group without an empty slot. Every lookup
   asks this to know whether its key may live past the group. */
static inline uint8_t oa_group_marked(const oa_ptable *t, size_t group, uint64_t empty)
{
    return empty != 0 ? 0 : t->overflowed[group];
}

/* What oa_group_find answers when the key is not in the group. */
#define OA_NOT_FOUND SIZE_MAX

/* The slot of `group` (control bytes w) that holds key, whose seven hash
   bits are h2, or OA_NOT_FOUND: only the slots whose bits match are
   compared (the inline put and pop, and ptable.c's walk). */
static inline size_t oa_group_find(const oa_ptable *t, size_t group, oa_group_bits w,
                                   uint64_t h2, uintptr_t key)
{
    for (uint64_t match = oa_match_h2(w, h2); match != 0; match &= match - 1) {
        size_t i = group * OA_GROUP + oa_mask_slot(match);
        if (t->slots[i].key == key)
            return i;
    }
    return OA_NOT_FOUND;
}

/* Take slot i out, its group's mark being `marked`: empty when the group
   is not marked overflowed (no lookup needs to go past it), else deleted,
   which lookups step over and puts reuse. */
static inline void oa_ptable_remove_marked(oa_ptable *t, size_t i, uint8_t marked)
{
    /* Two branches, not one store of a computed byte and an add of !marked:
       GCC paired that add with count's into one vector add through the
       stack, 15 instructions on every live free where these take 5 (the
       unmarked case is nearly every free). */
    if (__builtin_expect(marked, 0)) {
        t->ctrl[i] = OA_CTRL_DELETED;
    } else {
        t->ctrl[i] = OA_CTRL_EMPTY;
        t->growth_left++;
    }
    t->count--;
}

/* Take slot i out, reading its group's mark, and lower the filter for its
   key if the table has one (ptable.c's general paths). */
static inline void oa_ptable_remove_at(oa_ptable *t, size_t i)
{
    if (t->filter != NULL)
        oa_filter_lower(t->filter, oa_hash_of(t->slots[i].key));
    oa_ptable_remove_marked(t, i, t->overflowed[i / OA_GROUP]);
}

/* The nursery entry of hash h: the top bits of the Fibonacci hash, which
   spread neighbouring addresses (one pymalloc pool's blocks) apart. */
static inline oa_entry *oa_near_of(oa_ptable *t, uint64_t h)
{
    return &t->near[(h >> OA_NEAR_SHIFT) & t->near_mask];
}

/* Live entries, the nursery's included. */
static inline size_t oa_ptable_entries(const oa_ptable *t)
{
    return t->count + t->near_count;
}

/* The inline part of put: 1 when key went in with `meta`, 0 when
   ptable.c's general path must do it (nothing changed). The key takes its
   nursery entry; the key there before, if any, moves to an empty slot of
   its home group. It does the common case: the key is neither in its
   nursery entry nor in its home group, that group has an empty slot (so
   it is not marked overflowed: a marked group gets no empty slot back
   until the table is rebuilt, and the key is nowhere else), the moving
   key's home group has an empty slot and the growth budget room, and the
   size fits the packed field. Only the home group's control bytes are
   read to know the key is absent; its entries, only for slots whose seven
   hash bits match (with ten entries in a group, one put in thirteen meets
   such a slot, and callgrind on json_loads counted about 2,000 slow-path
   puts per op when any match went to the slow path). A caller that hands
   0 on to a function of its own (the live MEM/OBJ allocation hook) keeps
   that call off its common path. `fits`: a constant, 1 when the caller
   knows the size is below OA_SIZE_BIG (meta's size field is not
   checked). For a table with a nursery (put_home_fast is the one without:
   a table without a nursery sends every put here to the general path). */
static inline __attribute__((always_inline)) int oa_ptable_put_fast(oa_ptable *t, uintptr_t key,
                                                                    uint64_t meta, int fits)
{
    uint64_t h = oa_hash_of(key);
    oa_entry *near = oa_near_of(t, h);
    uintptr_t near_key = near->key;
    if (near_key == (key | OA_NEAR_POPPED) && (fits || (meta & OA_SIZE_BIG) != OA_SIZE_BIG)) {
        /* Popped from here and not put since: in no slot (see above). */
        near->key = key;
        near->meta = meta;
        t->near_count++;
        return 1;
    }
    size_t ngroups = t->cap / OA_GROUP;
    size_t group = oa_home_group(h, ngroups);
    oa_group_bits w = oa_group_load(t->ctrl, group);
    if (__builtin_expect(oa_match_empty(w) == 0 || near_key == key ||
                             near_key == OA_NEAR_NONE ||
                             (!fits && (meta & OA_SIZE_BIG) == OA_SIZE_BIG),
                         0))
        return 0;
    /* oa_group_find written out: through it, GCC gave live mode's
       allocation hook a register and a stack frame more. */
    for (uint64_t match = oa_match_h2(w, oa_h2_of(h)); match != 0; match &= match - 1) {
        if (__builtin_expect(t->slots[group * OA_GROUP + oa_mask_slot(match)].key == key, 0))
            return 0;
    }
    if (oa_near_holds(near_key)) {
        /* The nursery entry's key moves to the slots. */
        uint64_t moved_h = oa_hash_of(near_key);
        size_t moved_group = oa_home_group(moved_h, ngroups);
        uint64_t empty = oa_match_empty(oa_group_load(t->ctrl, moved_group));
        if (__builtin_expect(empty == 0 || t->growth_left == 0, 0))
            return 0;
        size_t i = moved_group * OA_GROUP + oa_mask_slot(empty);
        t->ctrl[i] = (uint8_t)oa_h2_of(moved_h);
        t->slots[i] = *near;
        t->growth_left--;
        t->count++;
    } else {
        t->near_count++;
    }
    near->key = key;
    near->meta = meta;
    return 1;
}

/* oa_ptable_put_fast for a table without a nursery (which sends every put
   to the general path): the key takes an empty slot of its home group.
   Apart, not a constant argument of oa_ptable_put_fast: GCC then gave
   live mode's allocation hook a register and a stack frame more. */
static inline __attribute__((always_inline)) int put_home_fast(oa_ptable *t, uintptr_t key,
                                                               uint64_t meta)
{
    uint64_t h = oa_hash_of(key);
    uint64_t h2 = oa_h2_of(h);
    size_t group = oa_home_group(h, t->cap / OA_GROUP);
    oa_group_bits w = oa_group_load(t->ctrl, group);
    uint64_t empty = oa_match_empty(w);
    if (__builtin_expect(empty == 0 || t->growth_left == 0 ||
                             (meta & OA_SIZE_BIG) == OA_SIZE_BIG,
                         0))
        return 0;
    if (__builtin_expect(oa_group_find(t, group, w, h2, key) != OA_NOT_FOUND, 0))
        return 0;
    size_t i = group * OA_GROUP + oa_mask_slot(empty);
    t->ctrl[i] = (uint8_t)h2;
    t->slots[i].key = key;
    t->slots[i].meta = meta;
    t->growth_left--;
    t->count++;
    oa_filter_raise(t->filter, h); /* a table without a nursery has one */
    return 1;
}

/* Insert key with size and packed group. If key was present its previous size
   and meta are returned through *old_size / *old_meta and 1 is returned;
   0 when new; -1 when the table could not grow (entry not stored). The
   inline part, then the general path. */
static inline __attribute__((always_inline)) int oa_ptable_put(oa_ptable *t, uintptr_t key,
                                                               uint64_t size, uint64_t meta,
                                                               uint64_t *old_size,
                                                               uint64_t *old_meta)
{
    int stored =
        t->near_mask != 0 ? oa_ptable_put_fast(t, key, meta, 0) : put_home_fast(t, key, meta);
    if (__builtin_expect(stored, 1))
        return 0;
    return oa_ptable_put_slow_copy(t, key, size, meta, old_size, old_meta);
}

/* Take the key out of its nursery entry `near`, leaving `left` as the
   entry's key: the key or'ed with OA_NEAR_POPPED when it leaves the table,
   0 when it moves to the slots (ptable.c). */
static inline uint64_t oa_near_take(oa_ptable *t, oa_entry *near, uintptr_t left)
{
    near->key = left;
    t->near_count--;
    return near->meta;
}

/* The inline part of pop: 1 with key's size and meta when it was found
   and removed, 0 when it is surely absent, -1 when ptable.c's general path
   must answer (nothing changed). It answers the common cases: the key is
   in its nursery entry (no size there is too big for the packed field);
   the key is in its home group, its size is in the packed field and the
   table is not due to shrink; or the key is absent and its home group has
   an empty slot. A slot goes back to empty, or to deleted when the group
   is marked overflowed (keys past it are found by walking through it).
   Marked groups were a slow-path case once: perf on the suite's service
   then put a tenth of the live free hook's time in oa_ptable_pop_slow. A
   caller that hands -1 on to a function of its own (the live MEM/OBJ free
   hook) keeps that call, and the registers it saves, off its common
   path. `filtered`: a constant, 0 for a caller that only ever pops from a
   table with a nursery (which has no filter), 1 when the table may have
   one, which is then lowered. */
static inline __attribute__((always_inline)) int pop_fast_in(oa_ptable *t, uintptr_t key,
                                                             uint64_t *size, uint64_t *meta,
                                                             int filtered)
{
    uint64_t h = oa_hash_of(key);
    oa_entry *near = oa_near_of(t, h);
    if (__builtin_expect(near->key == key, 1)) {
        uint64_t m = oa_near_take(t, near, key | OA_NEAR_POPPED);
        *size = m & OA_SIZE_BIG;
        *meta = m;
        return 1;
    }
    size_t group = oa_home_group(h, t->cap / OA_GROUP);
    oa_prefetch_entries(t, group);
    oa_group_bits w = oa_group_load(t->ctrl, group);
    uint64_t empty = oa_match_empty(w);
    size_t i = oa_group_find(t, group, w, oa_h2_of(h), key);
    if (i != OA_NOT_FOUND) {
        uint64_t m = t->slots[i].meta;
        if (__builtin_expect((m & OA_SIZE_BIG) == OA_SIZE_BIG || t->count <= t->shrink_at, 0))
            return -1;
        oa_ptable_remove_marked(t, i, oa_group_marked(t, group, empty));
        if (filtered && t->filter != NULL)
            oa_filter_lower(t->filter, h);
        *size = m & OA_SIZE_BIG;
        *meta = m;
        return 1;
    }
    /* Not in its home group, which is not marked: not in the table (a
       block allocated before install, say). Such frees went to the slow
       path, which looked at the group again, some 70 instructions each:
       78,812 of them in a 63-op json_loads run under callgrind, most in
       its first ops (objects made before install). */
    return oa_group_marked(t, group, empty) ? -1 : 0;
}

/* pop_fast_in for a table with a nursery (live mode's MEM/OBJ free hook):
   the filter check stays off live mode's every free. On a table without a
   nursery it would leave the filter raised for the key, a "maybe" more,
   never a wrong "no". */
static inline __attribute__((always_inline)) int oa_ptable_pop_fast(oa_ptable *t, uintptr_t key,
                                                                    uint64_t *size,
                                                                    uint64_t *meta)
{
    return pop_fast_in(t, key, size, meta, 0);
}

/* Remove key; 1 with its size and meta when found, 0 when absent: the
   inline part, then the general path when it cannot answer. */
static inline __attribute__((always_inline)) int oa_ptable_pop(oa_ptable *t, uintptr_t key,
                                                               uint64_t *size, uint64_t *meta)
{
    int found = pop_fast_in(t, key, size, meta, 1);
    if (__builtin_expect(found >= 0, 1))
        return found;
    uint64_t slow_size, slow_meta;
    found = oa_ptable_pop_slow(t, key, &slow_size, &slow_meta);
    if (found) {
        *size = slow_size;
        *meta = slow_meta;
    }
    return found;
}

/* For a table without a nursery: 0 when key is surely not in it, that is
   its filter bucket counts no key. Estimate mode asks this on every MEM/OBJ
   free, of a table that holds the sampled blocks alone, and looks further
   only on a 1. It read the key's home group's control bytes before (about
   20 instructions, and on the suite's service 15 % of frees matched and
   looked further, nearly all for nothing; callgrind, 44 instructions a
   free in the free hook); the filter is one byte. Reading the nursery
   entry, or even the count that says it is empty, added two to seven
   instructions a free (callgrind, json_loads, estimate 1.157x -> 1.166x
   and 1.174x). */
static inline int oa_ptable_may_hold(const oa_ptable *t, uintptr_t key)
{
    if (t->filter == NULL)
        return 0;
    return *oa_filter_of(t->filter, oa_hash_of(key)) != 0;
}

size_t oa_ptable_bytes(const oa_ptable *t);

#pragma GCC visibility pop

#endif
