#include "ptable.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define OA_PTABLE_MIN_CAP 1024

/* put and pop run on every allocation and free: the rare work (resizing,
   exact sizes of huge blocks, a key put twice) lives in functions of its
   own, out of the way of the common path. */
#define OA_COLD __attribute__((noinline, cold))
#define OA_UNLIKELY(x) __builtin_expect(!!(x), 0)

/* Multiplicative hash; the top bits of the product are well mixed and
   fastrange maps them onto any capacity, so the capacity need not be a power
   of two (which lets the table grow by 1.5x). */
static inline size_t home_of(uintptr_t key, size_t cap)
{
    /* Fibonacci hashing: the high bits of key * phi depend on every bit of
       the key, and fastrange reads exactly those high bits. */
    uint64_t h = (uint64_t)key * UINT64_C(0x9E3779B97F4A7C15);
    return (size_t)(((unsigned __int128)h * cap) >> 64);
}

/* Grow at 3/4 load by 1.5x, back to 1/2 load: 32 bytes per live block at
   most while growing. A load kept at or under 2/3 (growth by 4/3) shortened
   the probe runs of a 200k-block table (benchmarks/ptable_bench.c) but cost
   about 5 bytes per block, and on the Python workloads, whose tables are
   small, it was slower (callgrind, core workload, live mode: 1.4385x against
   1.4248x untraced). Shrink below 1/4 (never under the minimum). */
static void set_limits(oa_ptable *t)
{
    t->grow_at = t->cap * 3 / 4;
    t->shrink_at = t->cap > OA_PTABLE_MIN_CAP ? t->cap / 4 : 0;
}

/* Slot arrays are mapped pages, not malloc blocks: a table of up to a few
   MiB is below glibc's (dynamic) mmap threshold and would sit in the
   program's heap, changing where the program's own blocks go and how far the
   heap is trimmed. On a NumPy job that cost the program a quarter more page
   faults, in one tracer mode and not another, depending only on where the
   table happened to land. Mapped pages come zeroed, as calloc's did. */
static oa_entry *slots_map(size_t cap)
{
    void *p = mmap(NULL, cap * sizeof(oa_entry), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : (oa_entry *)p;
}

static void slots_unmap(oa_entry *slots, size_t cap)
{
    if (slots != NULL)
        munmap(slots, cap * sizeof(oa_entry));
}

int oa_ptable_init(oa_ptable *t)
{
    memset(t, 0, sizeof(*t));
    t->slots = slots_map(OA_PTABLE_MIN_CAP);
    if (t->slots == NULL)
        return -1;
    t->cap = OA_PTABLE_MIN_CAP;
    set_limits(t);
    return 0;
}

void oa_ptable_destroy(oa_ptable *t)
{
    slots_unmap(t->slots, t->cap);
    free(t->bigs);
    memset(t, 0, sizeof(*t));
}

void oa_ptable_clear(oa_ptable *t)
{
    if (t->slots != NULL)
        memset(t->slots, 0, t->cap * sizeof(oa_entry));
    t->count = 0;
    t->nbig = 0;
}

size_t oa_ptable_bytes(const oa_ptable *t)
{
    return t->cap * sizeof(oa_entry) + t->capbig * sizeof(oa_big);
}

/* Place an entry known to be absent; the table has a free slot (resize). */
static void place(oa_entry *slots, size_t cap, uintptr_t key, uint64_t meta)
{
    size_t i = home_of(key, cap);
    while (slots[i].key != 0) {
        if (++i == cap)
            i = 0;
    }
    slots[i].key = key;
    slots[i].meta = meta;
}

OA_COLD static int resize(oa_ptable *t, size_t new_cap)
{
    oa_entry *fresh = slots_map(new_cap);
    if (fresh == NULL)
        return -1;
    for (size_t i = 0; i < t->cap; i++) {
        if (t->slots[i].key != 0)
            place(fresh, new_cap, t->slots[i].key, t->slots[i].meta);
    }
    slots_unmap(t->slots, t->cap);
    t->slots = fresh;
    t->cap = new_cap;
    set_limits(t);
    return 0;
}

OA_COLD static int shrink(oa_ptable *t)
{
    size_t nc = t->cap / 2 < OA_PTABLE_MIN_CAP ? OA_PTABLE_MIN_CAP : t->cap / 2;
    /* Shrinking is an optimisation: on failure keep the larger table. */
    (void)resize(t, nc);
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

/* Backward-shift deletion of slot i: pull later members of the probe run
   into the hole when their home allows it, so no tombstones build up. An
   entry may move back to the hole when it sits at least as far from its home
   (cyclically) as from the hole, which is gap slots behind it. */
static inline void remove_at(oa_ptable *t, size_t i)
{
    oa_entry *slots = t->slots;
    size_t cap = t->cap;
    size_t hole = i;
    size_t gap = 0;
    for (;;) {
        if (++i == cap)
            i = 0;
        gap++;
        uintptr_t k = slots[i].key;
        if (k == 0)
            break;
        size_t h = home_of(k, cap);
        size_t from_home = i >= h ? i - h : i + cap - h;
        if (from_home >= gap) {
            slots[hole] = slots[i];
            hole = i;
            gap = 0;
        }
    }
    slots[hole].key = 0;
    t->count--;
}

/* The slow cases below are reached by tail calls, so that put and pop keep
   no registers across a call and need no stack frame. */

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
        remove_at(t, i);
        if (t->count < t->shrink_at)
            shrink(t);
        return -1;
    }
    t->slots[i].meta = meta;
    return 1;
}

OA_COLD static int grow_then_put(oa_ptable *t, uintptr_t key, uint64_t size, uint64_t meta,
                                 uint64_t *old_size, uint64_t *old_meta)
{
    /* A destroyed table (no slots) stays empty rather than regrow. */
    if (t->slots == NULL || resize(t, t->cap + t->cap / 2) != 0)
        return -1;
    return oa_ptable_put(t, key, size, meta, old_size, old_meta);
}

/* A new key with a size too big for the packed field, for empty slot i. */
OA_COLD static int put_big(oa_ptable *t, size_t i, uintptr_t key, uint64_t size, uint64_t meta)
{
    if (big_put(t, key, size) != 0)
        return -1;
    t->slots[i].key = key;
    t->slots[i].meta = meta;
    t->count++;
    return 0;
}

OA_COLD static int pop_big(oa_ptable *t, size_t i, uint64_t *size)
{
    *size = big_pop(t, t->slots[i].key);
    remove_at(t, i);
    if (t->count < t->shrink_at)
        shrink(t);
    return 1;
}

int oa_ptable_put(oa_ptable *t, uintptr_t key, uint64_t size, uint64_t meta,
                  uint64_t *old_size, uint64_t *old_meta)
{
    if (OA_UNLIKELY(t->count >= t->grow_at))
        return grow_then_put(t, key, size, meta, old_size, old_meta);
    oa_entry *slots = t->slots;
    size_t cap = t->cap;
    /* One pass: stop at the key or at the first empty slot. */
    size_t i = home_of(key, cap);
    for (;;) {
        uintptr_t k = slots[i].key;
        if (k == 0)
            break;
        if (OA_UNLIKELY(k == key))
            return replace(t, i, size, meta, old_size, old_meta);
        if (++i == cap)
            i = 0;
    }
    if (OA_UNLIKELY((meta & OA_SIZE_BIG) == OA_SIZE_BIG))
        return put_big(t, i, key, size, meta);
    slots[i].key = key;
    slots[i].meta = meta;
    t->count++;
    return 0;
}

int oa_ptable_pop(oa_ptable *t, uintptr_t key, uint64_t *size, uint64_t *meta)
{
    if (t->count == 0)
        return 0;
    oa_entry *slots = t->slots;
    size_t cap = t->cap;
    size_t i = home_of(key, cap);
    for (;;) {
        uintptr_t k = slots[i].key;
        if (k == key)
            break;
        if (k == 0)
            return 0;
        if (++i == cap)
            i = 0;
    }
    uint64_t m = slots[i].meta;
    *meta = m;
    if (OA_UNLIKELY((m & OA_SIZE_BIG) == OA_SIZE_BIG))
        return pop_big(t, i, size);
    *size = m & OA_SIZE_BIG;
    remove_at(t, i);
    if (OA_UNLIKELY(t->count < t->shrink_at))
        return shrink(t);
    return 1;
}
