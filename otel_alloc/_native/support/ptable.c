#include "ptable.h"

#include <stdlib.h>
#include <string.h>

#define OA_PTABLE_MIN_CAP 1024

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

int oa_ptable_init(oa_ptable *t)
{
    memset(t, 0, sizeof(*t));
    t->slots = calloc(OA_PTABLE_MIN_CAP, sizeof(oa_entry));
    if (t->slots == NULL)
        return -1;
    t->cap = OA_PTABLE_MIN_CAP;
    return 0;
}

void oa_ptable_destroy(oa_ptable *t)
{
    free(t->slots);
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

static int resize(oa_ptable *t, size_t new_cap)
{
    oa_entry *fresh = calloc(new_cap, sizeof(oa_entry));
    if (fresh == NULL)
        return -1;
    for (size_t i = 0; i < t->cap; i++) {
        if (t->slots[i].key != 0)
            place(fresh, new_cap, t->slots[i].key, t->slots[i].meta);
    }
    free(t->slots);
    t->slots = fresh;
    t->cap = new_cap;
    return 0;
}

static size_t find(const oa_ptable *t, uintptr_t key)
{
    size_t i = home_of(key, t->cap);
    for (;;) {
        uintptr_t k = t->slots[i].key;
        if (k == key)
            return i;
        if (k == 0)
            return (size_t)-1;
        if (++i == t->cap)
            i = 0;
    }
}

/* Exact sizes of blocks too big for the packed field: rare, a short list. */
static int big_put(oa_ptable *t, uintptr_t key, uint64_t size)
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

static uint64_t big_pop(oa_ptable *t, uintptr_t key)
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

static uint64_t entry_size(oa_ptable *t, uintptr_t key, uint64_t meta)
{
    uint64_t s = meta & OA_SIZE_BIG;
    return s == OA_SIZE_BIG ? big_pop(t, key) : s;
}

int oa_ptable_put(oa_ptable *t, uintptr_t key, uint64_t size, uint64_t meta,
                  uint64_t *old_size, uint64_t *old_meta)
{
    if ((t->count + 1) * 4 > t->cap * 3) {
        if (resize(t, t->cap + t->cap / 2) != 0)
            return -1;
    }
    /* One pass: stop at the key (a block we never saw freed, e.g. freed
       while the hooks were out of the chain) or at the first empty slot. */
    size_t i = home_of(key, t->cap);
    for (;;) {
        uintptr_t k = t->slots[i].key;
        if (k == key || k == 0)
            break;
        if (++i == t->cap)
            i = 0;
    }
    int replaced = t->slots[i].key == key;
    if (replaced) {
        *old_meta = t->slots[i].meta;
        *old_size = entry_size(t, key, *old_meta);
    }
    if ((meta & OA_SIZE_BIG) == OA_SIZE_BIG && big_put(t, key, size) != 0) {
        if (replaced) {
            /* Cannot keep the exact size: drop the entry entirely. */
            uint64_t s, m;
            t->slots[i].meta = 0; /* old big size already taken */
            oa_ptable_pop(t, key, &s, &m);
        }
        return -1;
    }
    t->slots[i].meta = meta;
    if (!replaced) {
        t->slots[i].key = key;
        t->count++;
    }
    return replaced;
}

int oa_ptable_pop(oa_ptable *t, uintptr_t key, uint64_t *size, uint64_t *meta)
{
    if (t->count == 0)
        return 0;
    size_t i = find(t, key);
    if (i == (size_t)-1)
        return 0;
    *meta = t->slots[i].meta;
    *size = entry_size(t, key, *meta);
    /* Backward-shift deletion: pull later members of the probe run into the
       hole when their home position allows it, so no tombstones build up. */
    size_t cap = t->cap;
    size_t hole = i;
    size_t j = i;
    for (;;) {
        if (++j == cap)
            j = 0;
        uintptr_t k = t->slots[j].key;
        if (k == 0)
            break;
        size_t h = home_of(k, cap);
        /* Movable when h is not cyclically within (hole, j]. */
        int in_range = hole <= j ? (h > hole && h <= j) : (h > hole || h <= j);
        if (!in_range) {
            t->slots[hole] = t->slots[j];
            hole = j;
        }
    }
    t->slots[hole].key = 0;
    t->slots[hole].meta = 0;
    t->count--;
    if (cap > OA_PTABLE_MIN_CAP && t->count * 4 < cap) {
        size_t nc = cap / 2 < OA_PTABLE_MIN_CAP ? OA_PTABLE_MIN_CAP : cap / 2;
        /* Shrinking is an optimisation: on failure keep the larger table. */
        (void)resize(t, nc);
    }
    return 1;
}
