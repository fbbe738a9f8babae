/*
 * Open-addressing pointer table: live block address -> packed (size, group).
 *
 * Linear probing with backward-shift deletion (no tombstones), capacity grown
 * by 1.5x at 3/4 load and halved below 1/4 load, so the table holds 16 bytes
 * per slot at a load between 1/2 and 3/4: 21 to 32 bytes per live block.
 *
 * The slots are pages mapped for the table alone (mmap), never from a PyMem
 * domain, so the table's own bookkeeping is never traced, and never from
 * malloc, so it does not change the program's heap (ptable.c says why). The
 * rare list of huge blocks comes from libc. The table is not synchronised:
 * callers hold the lock (or the GIL) that owns it.
 */
#ifndef OA_PTABLE_H
#define OA_PTABLE_H

#include <stddef.h>
#include <stdint.h>

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

typedef struct {
    uintptr_t key;
    uint64_t size;
} oa_big;

typedef struct {
    oa_entry *slots;
    size_t cap;
    size_t count;
    size_t grow_at;   /* count at which put grows the table (3/4 load) */
    size_t shrink_at; /* count below which pop shrinks it (1/4 load) */
    oa_big *bigs;
    size_t nbig;
    size_t capbig;
} oa_ptable;

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

/* Returns 0 on success, -1 when memory for the table could not be had. */
int oa_ptable_init(oa_ptable *t);
void oa_ptable_destroy(oa_ptable *t);
/* Forget every entry, keep the capacity (used in a forked child). */
void oa_ptable_clear(oa_ptable *t);

/* Insert key with size and packed group. If key was present its previous size
   and meta are returned through *old_size / *old_meta and 1 is returned;
   0 when new; -1 when the table could not grow (entry not stored). */
int oa_ptable_put(oa_ptable *t, uintptr_t key, uint64_t size, uint64_t meta,
                  uint64_t *old_size, uint64_t *old_meta);

/* Remove key; 1 with its size and meta when found, 0 when absent. */
int oa_ptable_pop(oa_ptable *t, uintptr_t key, uint64_t *size, uint64_t *meta);

size_t oa_ptable_bytes(const oa_ptable *t);

#pragma GCC visibility pop

#endif
