/*
 * Randomised differential test of the live pointer table (ptable.c) against
 * a plain reference map. Built and run by tests/unit/tracker/test_ptable.py;
 * exits non-zero with a message on the first disagreement.
 *
 * Keys mix the shapes the table meets: pymalloc-like (16-byte aligned, packed
 * in 16 KiB pools), malloc-like at any even address (2- and 8-aligned too),
 * and arbitrary even 64-bit values. A small key universe forces replaced puts and
 * pops of absent keys; phases of mass insertion and mass removal drive the
 * table through growth, tombstone rebuilds and shrinking.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ptable.h"

static uint64_t rng;

static uint64_t rnd(void)
{
    /* splitmix64 */
    uint64_t z = (rng += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

static uint64_t below(uint64_t n)
{
    return rnd() % n;
}

/* Reference: chained hash map with its own (different) hash. */
typedef struct ref_node {
    uintptr_t key;
    uint64_t size, meta;
    struct ref_node *next;
} ref_node;

#define REF_BUCKETS (1u << 20)
static ref_node *ref[REF_BUCKETS];
static size_t ref_count;

static size_t ref_bucket(uintptr_t key)
{
    uint64_t z = key;
    z = (z ^ (z >> 33)) * UINT64_C(0xFF51AFD7ED558CCD);
    z ^= z >> 33;
    return (size_t)(z & (REF_BUCKETS - 1));
}

static ref_node *ref_find(uintptr_t key)
{
    for (ref_node *n = ref[ref_bucket(key)]; n != NULL; n = n->next) {
        if (n->key == key)
            return n;
    }
    return NULL;
}

static void ref_remove(uintptr_t key)
{
    ref_node **p = &ref[ref_bucket(key)];
    while ((*p)->key != key)
        p = &(*p)->next;
    ref_node *n = *p;
    *p = n->next;
    free(n);
    ref_count--;
}

static void ref_clear(void)
{
    for (size_t b = 0; b < REF_BUCKETS; b++) {
        while (ref[b] != NULL) {
            ref_node *n = ref[b];
            ref[b] = n->next;
            free(n);
        }
    }
    ref_count = 0;
}

/* Every key ever used, so pops can ask for live and dead keys alike. */
static uintptr_t *keys;
static size_t nkeys, capkeys;

static uintptr_t fresh_key(void)
{
    static uintptr_t pool_next = UINT64_C(0x7f0000000000), pool_end, malloc_next = 0x5555000000;
    uintptr_t k;
    switch (below(4)) {
    case 0:
    case 1:
        /* pymalloc-like: blocks of one size class carved from a pool. */
        if (pool_next + 512 > pool_end) {
            pool_end = (pool_next & ~(uintptr_t)16383) + 2 * 16384;
            pool_next = pool_end - 16384 + 48;
        }
        k = pool_next;
        pool_next += 16 * (1 + below(4));
        break;
    case 2:
        /* malloc-like, any even address (the table's keys are even: an
           odd one is a popped nursery entry's). */
        malloc_next += 2 * (1 + below(32));
        k = malloc_next;
        break;
    default:
        do
            k = (uintptr_t)rnd() & ~OA_NEAR_POPPED;
        while (k == 0); /* no block's address */
    }
    if (nkeys == capkeys) {
        capkeys = capkeys ? capkeys * 2 : 4096;
        keys = realloc(keys, capkeys * sizeof(uintptr_t));
    }
    keys[nkeys++] = k;
    return k;
}

static uintptr_t some_key(int fresh_percent)
{
    if (nkeys == 0 || (int)below(100) < fresh_percent)
        return fresh_key();
    /* Mostly recent keys (LIFO-like reuse), sometimes any. */
    if (below(2) == 0)
        return keys[nkeys - 1 - below(nkeys < 64 ? nkeys : 64)];
    return keys[below(nkeys)];
}

static long ops;

#define FAIL(...)                                                                      \
    do {                                                                               \
        fprintf(stderr, "op %ld: ", ops);                                              \
        fprintf(stderr, __VA_ARGS__);                                                  \
        fputc('\n', stderr);                                                           \
        exit(1);                                                                       \
    } while (0)

static uint64_t expected_size(const ref_node *n)
{
    return (n->meta & OA_SIZE_BIG) == OA_SIZE_BIG ? n->size : (n->meta & OA_SIZE_BIG);
}

/* The size and meta the table gave for key are the reference's. */
static void check_entry(const char *what, uintptr_t key, uint64_t size, uint64_t meta,
                        const ref_node *n)
{
    if (meta != n->meta || size != expected_size(n))
        FAIL("%s of %#lx: size/meta %lu/%#lx, expected %lu/%#lx", what, (unsigned long)key,
             (unsigned long)size, (unsigned long)meta, (unsigned long)expected_size(n),
             (unsigned long)n->meta);
}

static void do_put(oa_ptable *t, uintptr_t key)
{
    uint64_t size = below(64) == 0 ? OA_SIZE_BIG - 2 + below(5) + (below(2) << 40) : below(4096);
    uint64_t meta = oa_meta_pack(size, (uint32_t)rnd(), rnd(), (int)below(2));
    uint64_t os = 0, om = 0;
    int r = oa_ptable_put(t, key, size, meta, &os, &om);
    ref_node *n = ref_find(key);
    if (r < 0)
        FAIL("put failed");
    if (n != NULL) {
        if (r != 1)
            FAIL("put of present key %#lx returned %d", (unsigned long)key, r);
        check_entry("put (old entry)", key, os, om, n);
    } else {
        if (r != 0)
            FAIL("put of absent key %#lx returned %d", (unsigned long)key, r);
        n = malloc(sizeof(*n));
        n->key = key;
        n->next = ref[ref_bucket(key)];
        ref[ref_bucket(key)] = n;
        ref_count++;
    }
    n->size = size;
    n->meta = meta;
}

static void do_pop(oa_ptable *t, uintptr_t key)
{
    uint64_t s = 0, m = 0;
    int r = oa_ptable_pop(t, key, &s, &m);
    ref_node *n = ref_find(key);
    if (n == NULL) {
        if (r != 0)
            FAIL("pop of absent key %#lx returned %d", (unsigned long)key, r);
        return;
    }
    if (r != 1)
        FAIL("pop of present key %#lx returned %d", (unsigned long)key, r);
    check_entry("pop", key, s, m, n);
    ref_remove(key);
}

/* A group marked overflowed holds no empty slot: the inline pop reads the
   mark only for a group without one, so an empty slot in a marked group
   would make it free to empty and lose the keys behind the group. */
static void check_marks(oa_ptable *t)
{
    for (size_t g = 0; g < t->cap / OA_GROUP; g++) {
        if (t->overflowed[g] && oa_match_empty(oa_group_load(t->ctrl, g)) != 0)
            FAIL("group %zu is marked overflowed and has an empty slot", g);
    }
}

/* A table without a nursery: each filter bucket counts exactly the live
   keys whose hash falls in it, unless it reached OA_FILTER_FULL, which
   stays (then it counts at least that many once). A table with a nursery
   has no filter. */
static void check_filter(oa_ptable *t)
{
    if (t->near_mask != 0) {
        if (t->filter != NULL)
            FAIL("a table with a nursery has a filter");
        return;
    }
    static uint32_t expected[OA_FILTER];
    memset(expected, 0, sizeof(expected));
    for (size_t b = 0; b < REF_BUCKETS; b++) {
        for (ref_node *n = ref[b]; n != NULL; n = n->next)
            expected[oa_hash_of(n->key) >> (64 - OA_FILTER_BITS)]++;
    }
    for (size_t b = 0; b < OA_FILTER; b++) {
        if (t->filter[b] != OA_FILTER_FULL && t->filter[b] != expected[b])
            FAIL("filter bucket %zu counts %u keys, the table holds %u", b,
                 (unsigned)t->filter[b], (unsigned)expected[b]);
    }
}

static void check_all(oa_ptable *t)
{
    if (oa_ptable_entries(t) != ref_count)
        FAIL("count %zu, reference %zu", oa_ptable_entries(t), ref_count);
    check_marks(t);
    check_filter(t);
    /* Every live key is found with its value (pop and put back), and a
       table without a nursery never says a live key is surely absent. */
    for (size_t b = 0; b < REF_BUCKETS; b++) {
        for (ref_node *n = ref[b]; n != NULL; n = n->next) {
            uint64_t s, m, os, om;
            if (t->near_mask == 0 && !oa_ptable_may_hold(t, n->key))
                FAIL("may_hold denies live key %#lx", (unsigned long)n->key);
            if (oa_ptable_pop(t, n->key, &s, &m) != 1 || m != n->meta || s != expected_size(n))
                FAIL("live key %#lx lost", (unsigned long)n->key);
            if (oa_ptable_put(t, n->key, n->size, n->meta, &os, &om) != 0)
                FAIL("live key %#lx could not be put back", (unsigned long)n->key);
        }
    }
    if (oa_ptable_entries(t) != ref_count)
        FAIL("count %zu after check, reference %zu", oa_ptable_entries(t), ref_count);
}

static void check_budget(oa_ptable *t)
{
    /* Growing never takes the table past 32 bytes of slots per live block
       (the big list, the nursery's fixed pages and the filter's aside).
       Shrinking waits for 1/4 load, so the bound is checked only while the
       table grows. */
    static size_t last_cap;
    size_t near_bytes = t->near_mask != 0 ? OA_NEAR * sizeof(oa_entry) : 0;
    size_t filter_bytes = t->filter != NULL ? OA_FILTER : 0;
    size_t slot_bytes =
        oa_ptable_bytes(t) - t->capbig * sizeof(oa_big) - near_bytes - filter_bytes;
    if (t->cap > last_cap && oa_ptable_entries(t) >= 4096 && slot_bytes > 32 * (oa_ptable_entries(t) + 1))
        FAIL("%zu bytes for %zu live blocks", slot_bytes, oa_ptable_entries(t));
    last_cap = t->cap;
}

/* A key whose hash (key * phi, ptable_group.h) is h with its lowest bit
   cleared and its next set: h times the inverse of phi modulo 2^64. phi is
   odd, so the key is even, like the hash, and not 0 (the table's keys are
   even and not 0). The bits changed pick neither the home group nor the
   seven hash bits. */
static uintptr_t key_with_hash(uint64_t h)
{
    uint64_t phi = UINT64_C(0x9E3779B97F4A7C15), inv = phi;
    for (int i = 0; i < 6; i++)
        inv *= 2 - phi * inv;
    return (uintptr_t)(((h & ~UINT64_C(1)) | 2) * inv);
}

/* Live entries that overfill a few groups of a minimum-size table mark
   them in every rebuild; churn through those groups must not rebuild the
   table again and again (it once did, on every put). */
static void check_crowded_groups(int nursery)
{
    oa_ptable t;
    if (oa_ptable_init(&t, nursery) != 0)
        FAIL("init");
    size_t ngroups = t.cap / 16 > 0 ? t.cap / 16 : 1;
    uint64_t span = UINT64_MAX / ngroups; /* hashes of one home group (16-wide groups) */
    uint64_t os, om, s, m;
    /* 40 keys homed in each of the first 12 groups: 480 entries. */
    for (uint64_t g = 0; g < 12; g++) {
        for (uint64_t j = 0; j < 40; j++) {
            uintptr_t key = key_with_hash(g * span + j * (span / 64) + (j << 32));
            if (oa_ptable_put(&t, key, 16, oa_meta_pack(16, 2, 1, 0), &os, &om) != 0)
                FAIL("crowded put");
        }
    }
    uint64_t before = t.rebuilds;
    for (uint64_t i = 0; i < 200000; i++) {
        uintptr_t key = key_with_hash((i % 12) * span + 41 * (span / 64) + ((i % 97) << 32));
        if (oa_ptable_put(&t, key, 32, oa_meta_pack(32, 3, 1, 0), &os, &om) != 0)
            FAIL("churn put");
        if (oa_ptable_pop(&t, key, &s, &m) != 1 || s != 32)
            FAIL("churn pop");
    }
    if (t.rebuilds - before > 4)
        FAIL("%llu rebuilds over 200000 puts into crowded groups",
             (unsigned long long)(t.rebuilds - before));
    oa_ptable_destroy(&t);
}

/* A table without a nursery: a bucket that reaches OA_FILTER_FULL keys
   answers "maybe" for good, after its keys are gone too; one below it
   counts down to "no" as its keys leave; an empty bucket says "no" from
   the start; the filter's pages count in the table's bytes. */
static void check_filter_bounds(int nursery)
{
    if (nursery)
        return;
    oa_ptable t;
    if (oa_ptable_init(&t, 0) != 0)
        FAIL("init");
    const uint64_t full = 0x1234, few = 0x8765, none = 0x4321, n_full = OA_FILTER_FULL + 45;
    uint64_t os, om, s, m;
    uintptr_t keys[OA_FILTER_FULL + 48];
    for (uint64_t j = 0; j < n_full + 3; j++) {
        uint64_t bucket = j < n_full ? full : few;
        keys[j] = key_with_hash((bucket << (64 - OA_FILTER_BITS)) + (j << 24));
        if (oa_ptable_put(&t, keys[j], 16, oa_meta_pack(16, 2, 1, 0), &os, &om) != 0)
            FAIL("filter put");
    }
    if (t.filter[full] != OA_FILTER_FULL || t.filter[few] != 3 || t.filter[none] != 0)
        FAIL("filter buckets %u, %u, %u after the puts", (unsigned)t.filter[full],
             (unsigned)t.filter[few], (unsigned)t.filter[none]);
    uintptr_t absent_full = key_with_hash((full << (64 - OA_FILTER_BITS)) + (UINT64_C(1) << 44));
    uintptr_t absent_none = key_with_hash((none << (64 - OA_FILTER_BITS)) + (UINT64_C(1) << 44));
    if (!oa_ptable_may_hold(&t, absent_full) || oa_ptable_may_hold(&t, absent_none))
        FAIL("may_hold: a full bucket must say maybe, an empty one no");
    for (uint64_t j = 0; j < n_full + 3; j++) {
        if (oa_ptable_pop(&t, keys[j], &s, &m) != 1 || s != 16)
            FAIL("filter pop");
    }
    if (t.filter[full] != OA_FILTER_FULL || t.filter[few] != 0 ||
        oa_ptable_may_hold(&t, keys[n_full]) || !oa_ptable_may_hold(&t, keys[0]))
        FAIL("after the pops: full bucket %u (must stay), bucket of three %u (must be 0)",
             (unsigned)t.filter[full], (unsigned)t.filter[few]);
    oa_ptable filterless;
    if (oa_ptable_init(&filterless, 1) != 0)
        FAIL("init");
    if (oa_ptable_bytes(&t) != oa_ptable_bytes(&filterless) - OA_NEAR * sizeof(oa_entry) + OA_FILTER)
        FAIL("table bytes %zu leave out the filter", oa_ptable_bytes(&t));
    oa_ptable_destroy(&filterless);
    oa_ptable_clear(&t);
    if (t.filter[full] != 0)
        FAIL("clear left the filter");
    oa_ptable_destroy(&t);
    if (oa_ptable_may_hold(&t, keys[0]))
        FAIL("a destroyed table says maybe");
}

/* A key popped from its nursery entry and put again: put back in place;
   put with a size too big for the entry, it goes to the slots and a third
   put still finds and replaces it (the entry no longer says it is in no
   slot); popped from the slots, it leaves nothing behind. */
static void check_popped_entries(int nursery)
{
    oa_ptable t;
    if (oa_ptable_init(&t, nursery) != 0)
        FAIL("init");
    uintptr_t key = UINT64_C(0x7f0000001230);
    uint64_t os = 0, om = 0, s = 0, m = 0, big = OA_SIZE_BIG + 5;
    for (int round = 0; round < 3; round++) {
        if (oa_ptable_put(&t, key, 48, oa_meta_pack(48, 2, 1, 0), &os, &om) != 0)
            FAIL("put of a popped key: not new");
        if (oa_ptable_pop(&t, key, &s, &m) != 1 || s != 48)
            FAIL("pop after a put of a popped key");
    }
    if (oa_ptable_put(&t, key, big, oa_meta_pack(big, 2, 1, 0), &os, &om) != 0)
        FAIL("big put of a popped key: not new");
    if (oa_ptable_put(&t, key, 64, oa_meta_pack(64, 3, 1, 0), &os, &om) != 1 || os != big)
        FAIL("put twice after a big put of a popped key: not replaced");
    if (oa_ptable_entries(&t) != 1)
        FAIL("%zu entries after a replacement", oa_ptable_entries(&t));
    if (oa_ptable_pop(&t, key, &s, &m) != 1 || s != 64 || oa_ptable_pop(&t, key, &s, &m) != 0)
        FAIL("pop of the replaced key");
    if (oa_ptable_entries(&t) != 0 || t.nbig != 0)
        FAIL("%zu entries, %zu big sizes left", oa_ptable_entries(&t), t.nbig);
    oa_ptable_destroy(&t);
}

int main(int argc, char **argv)
{
    rng = argc > 1 ? strtoull(argv[1], NULL, 0) : 1;
    long rounds = argc > 2 ? strtol(argv[2], NULL, 0) : 40;
    /* 1: the table has a nursery (live mode's), 0: not (estimate mode's). */
    int nursery = argc > 3 ? (int)strtol(argv[3], NULL, 0) : 1;
    oa_ptable t;
    if (oa_ptable_init(&t, nursery) != 0)
        FAIL("init");
    for (long round = 0; round < rounds; round++) {
        int phase = (int)below(5);
        long n = 1000 + (long)below(60000);
        for (long i = 0; i < n; i++, ops++) {
            switch (phase) {
            case 0: /* growth: mostly fresh keys */
                if (below(10) < 8)
                    do_put(&t, some_key(90));
                else
                    do_pop(&t, some_key(0));
                break;
            case 1: /* removal, hits and misses */
                if (below(10) < 2)
                    do_put(&t, some_key(10));
                else
                    do_pop(&t, some_key(5));
                break;
            default: /* churn: reuse of recent addresses, replaces, misses */
                if (below(2) == 0)
                    do_put(&t, some_key(20));
                else
                    do_pop(&t, some_key(2));
            }
            check_budget(&t);
        }
        check_all(&t);
        if (below(20) == 0) {
            oa_ptable_clear(&t);
            ref_clear();
            check_all(&t);
        }
        if (nkeys > 2000000)
            nkeys = 0;
    }
    /* Drain: every key goes, the table shrinks back, nothing is left. */
    for (size_t i = 0; i < nkeys; i++, ops++)
        do_pop(&t, keys[i]);
    while (ref_count > 0) {
        for (size_t b = 0; b < REF_BUCKETS; b++) {
            while (ref[b] != NULL)
                do_pop(&t, ref[b]->key);
        }
    }
    check_all(&t);
    if (oa_ptable_entries(&t) != 0 || t.nbig != 0)
        FAIL("%zu entries, %zu big sizes left", oa_ptable_entries(&t), t.nbig);
    /* A clear keeps the capacity; a batch of puts and pops shrinks it. */
    nkeys = 0;
    for (int i = 0; i < 10000; i++, ops++)
        do_put(&t, fresh_key());
    for (size_t i = 0; i < nkeys; i++, ops++)
        do_pop(&t, keys[i]);
    if (oa_ptable_entries(&t) != 0 || t.cap > 4096)
        FAIL("%zu entries, capacity %zu after draining", oa_ptable_entries(&t), t.cap);
    oa_ptable_destroy(&t);
    check_crowded_groups(nursery);
    check_popped_entries(nursery);
    check_filter_bounds(nursery);
    printf("ok %ld ops\n", ops);
    return 0;
}
