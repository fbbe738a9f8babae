/*
 * Microbenchmark for the live-mode pointer table (otel_alloc/_native/support/
 * ptable.c). Not part of the package: build and run it by hand, and count
 * instructions with callgrind, since wall time on a shared machine is noise:
 *
 *   gcc -std=gnu11 -O2 -I otel_alloc/_native/support -o /tmp/ptable_bench \
 *       benchmarks/ptable_bench.c otel_alloc/_native/support/ptable.c
 *   valgrind --tool=callgrind --callgrind-out-file=/tmp/ptb.out /tmp/ptable_bench
 *
 * Arguments: request rounds (200000) and long-lived blocks (200000); with
 * 3000000 of them the table maps some 78 MiB, where its transparent huge
 * pages show (ptable.c, OA_HUGE_FROM) on the wall clock too.
 *
 * put and pop are inline (ptable.h), so compare the program totals of two
 * builds (add -DOA_PTABLE_PORTABLE for the word-wide groups); the replayed
 * pattern itself is the same in both. Last measured: 3,715M instructions
 * with the linear-probing table, 2,697M with SSE2 groups, 3,065M with the
 * word-wide ones.
 *
 * The replayed pattern imitates a Python service: a heap of long-lived
 * objects (200k), then request-like churn where most blocks die in LIFO order
 * shortly after birth, some live for a random while, and the long-lived set
 * slowly turns over; finally most of the heap is released and rebuilt (shrink
 * and regrow). Addresses come from a small pymalloc model (16 KiB pools of
 * one size class in 1 MiB arenas, LIFO free lists per pool, 16-byte aligned)
 * and, for one block in ten, a malloc model (16-byte aligned bump heap with
 * LIFO reuse per size bin).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ptable.h"

static uint64_t rng_state = UINT64_C(0x853c49e6748fea9b);

static uint64_t rnd(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

static uint32_t below(uint32_t n)
{
    return (uint32_t)(((rnd() >> 32) * n) >> 32);
}

/* --- pymalloc model ---------------------------------------------------- */

#define POOL_SIZE 16384
#define ARENA_SIZE (1 << 20)
#define POOL_HEADER 48
#define NCLASSES 32 /* 16..512 bytes */

typedef struct pool {
    uintptr_t base;
    uint32_t size;
    uint32_t nfresh; /* blocks never handed out yet */
    uint32_t nused;
    uint32_t nfree;
    uintptr_t *freelist; /* LIFO of freed addresses */
    uint32_t capfree;
    struct pool *next; /* in its class's list of pools with room */
    int listed;
} pool;

static pool *pools; /* indexed by (addr - heap_base) / POOL_SIZE */
static size_t npools, cappools;
static pool *usable[NCLASSES];
static uintptr_t heap_base = UINT64_C(0x7f3a12000000);
static uintptr_t next_pool_addr;

static pool *new_pool(uint32_t cls)
{
    if (npools == cappools) {
        cappools = cappools ? cappools * 2 : 1024;
        pools = realloc(pools, cappools * sizeof(pool));
        /* Re-link the class lists after the move. */
        for (int c = 0; c < NCLASSES; c++)
            usable[c] = NULL;
        for (size_t i = 0; i < npools; i++) {
            if (pools[i].listed) {
                uint32_t c = pools[i].size / 16 - 1;
                pools[i].next = usable[c];
                usable[c] = &pools[i];
            }
        }
    }
    if (next_pool_addr == 0)
        next_pool_addr = heap_base;
    pool *p = &pools[npools++];
    memset(p, 0, sizeof(*p));
    p->base = next_pool_addr;
    next_pool_addr += POOL_SIZE;
    /* Arenas are not contiguous: leave a gap after every 64 pools. */
    if ((next_pool_addr - heap_base) % ARENA_SIZE == 0)
        next_pool_addr += (uintptr_t)(1 + below(8)) * ARENA_SIZE;
    p->size = (cls + 1) * 16;
    p->nfresh = (POOL_SIZE - POOL_HEADER) / p->size;
    p->next = usable[cls];
    p->listed = 1;
    usable[cls] = p;
    return p;
}

static pool *pool_of(uintptr_t a)
{
    /* Pools are handed out in address order: binary search. */
    size_t lo = 0, hi = npools;
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (pools[mid].base <= a)
            lo = mid;
        else
            hi = mid;
    }
    return &pools[lo];
}

static uintptr_t py_alloc(uint32_t size)
{
    uint32_t cls = (size + 15) / 16 - 1;
    pool *p = usable[cls];
    if (p == NULL)
        p = new_pool(cls);
    uintptr_t a;
    if (p->nfree > 0) {
        a = p->freelist[--p->nfree];
    } else {
        uint32_t total = (POOL_SIZE - POOL_HEADER) / p->size;
        a = p->base + POOL_HEADER + (uintptr_t)(total - p->nfresh) * p->size;
        p->nfresh--;
    }
    p->nused++;
    if (p->nfree == 0 && p->nfresh == 0) {
        usable[cls] = p->next;
        p->listed = 0;
    }
    return a;
}

static void py_free(uintptr_t a)
{
    pool *p = pool_of(a);
    if (p->nfree == p->capfree) {
        p->capfree = p->capfree ? p->capfree * 2 : 64;
        p->freelist = realloc(p->freelist, p->capfree * sizeof(uintptr_t));
    }
    p->freelist[p->nfree++] = a;
    p->nused--;
    if (!p->listed) {
        uint32_t cls = p->size / 16 - 1;
        p->next = usable[cls];
        usable[cls] = p;
        p->listed = 1;
    }
}

/* --- malloc model ------------------------------------------------------ */

#define NBINS 64

static uintptr_t *mbin[NBINS];
static uint32_t mbin_n[NBINS], mbin_cap[NBINS];
static uintptr_t brk_addr = UINT64_C(0x55d0c8a40000);

static uint32_t bin_of(uint32_t size)
{
    return size / 1024 < NBINS ? size / 1024 : NBINS - 1;
}

static uintptr_t m_alloc(uint32_t size)
{
    uint32_t b = bin_of(size);
    if (mbin_n[b] > 0)
        return mbin[b][--mbin_n[b]];
    uintptr_t a = brk_addr + 16; /* chunk header */
    brk_addr += ((uintptr_t)(b + 1) * 1024 + 16 + 15) & ~(uintptr_t)15;
    return a;
}

static void m_free(uintptr_t a, uint32_t size)
{
    uint32_t b = bin_of(size);
    if (mbin_n[b] == mbin_cap[b]) {
        mbin_cap[b] = mbin_cap[b] ? mbin_cap[b] * 2 : 64;
        mbin[b] = realloc(mbin[b], mbin_cap[b] * sizeof(uintptr_t));
    }
    mbin[b][mbin_n[b]++] = a;
}

/* --- blocks and the table ---------------------------------------------- */

typedef struct {
    uintptr_t addr;
    uint32_t size;
} block;

static oa_ptable table;
static uint64_t nput, npop, nput_replaced;
static double bytes_sum;
static uint64_t bytes_samples;
static double bytes_max;
static uint64_t ops_since_sample;

static void sample_bytes(void)
{
    if (oa_ptable_entries(&table) < 10000)
        return;
    double b = (double)oa_ptable_bytes(&table) / (double)oa_ptable_entries(&table);
    bytes_sum += b;
    bytes_samples++;
    if (b > bytes_max)
        bytes_max = b;
}

static void tick(void)
{
    if (++ops_since_sample == 997) {
        ops_since_sample = 0;
        sample_bytes();
    }
}

static block alloc_block(void)
{
    block b;
    if (below(10) == 0) {
        b.size = 600 + below(20000);
        if (below(200000) == 0)
            b.size = (uint32_t)OA_SIZE_BIG + 5; /* an occasional huge block */
        b.addr = m_alloc(b.size);
    } else {
        /* Mostly small objects, as in CPython. */
        uint32_t r = below(100);
        b.size = r < 60 ? 16 + 16 * below(4) : r < 90 ? 64 + 16 * below(12) : 256 + 16 * below(16);
        b.addr = py_alloc(b.size);
    }
    uint64_t os, om;
    uint64_t meta = oa_meta_pack(b.size, below(1000), 7, below(512) == 0);
    int r = oa_ptable_put(&table, b.addr, b.size, meta, &os, &om);
    if (r < 0) {
        fprintf(stderr, "put failed\n");
        exit(1);
    }
    nput++;
    nput_replaced += r;
    tick();
    return b;
}

static void free_block(block b)
{
    uint64_t s, m;
    if (!oa_ptable_pop(&table, b.addr, &s, &m) || s != b.size) {
        fprintf(stderr, "pop mismatch\n");
        exit(1);
    }
    npop++;
    tick();
    if (b.size >= 600)
        m_free(b.addr, b.size);
    else
        py_free(b.addr);
}

int main(int argc, char **argv)
{
    uint32_t rounds = argc > 1 ? (uint32_t)atoi(argv[1]) : 200000;
    const uint32_t nlong = argc > 2 ? (uint32_t)atoi(argv[2]) : 200000, nmid = 20000;
    block *longs = malloc(nlong * sizeof(block));
    block *mids = malloc(nmid * sizeof(block));
    block stack[256];
    uint32_t depth = 0;

    if (oa_ptable_init(&table, 1) != 0)
        return 1;
    /* Start-up: the long-lived heap, with some start-up garbage. */
    for (uint32_t i = 0; i < nlong; i++) {
        longs[i] = alloc_block();
        if (below(4) == 0)
            free_block(alloc_block());
    }
    for (uint32_t i = 0; i < nmid; i++)
        mids[i] = alloc_block();

    for (int phase = 0; phase < 2; phase++) {
        /* Requests: a call stack of temporaries freed mostly LIFO. */
        for (uint32_t r = 0; r < rounds; r++) {
            uint32_t n = 1 + below(24);
            for (uint32_t k = 0; k < n && depth < 256; k++)
                stack[depth++] = alloc_block();
            uint32_t keep = below(depth + 1);
            while (depth > keep) {
                if (depth > 2 && below(5) == 0) {
                    /* Out of order: free one a little deeper first. */
                    uint32_t j = depth - 1 - below(depth < 8 ? depth : 8);
                    block t = stack[j];
                    stack[j] = stack[depth - 1];
                    stack[depth - 1] = t;
                }
                free_block(stack[--depth]);
            }
            /* Medium-lived objects replaced at random. */
            if (below(2) == 0) {
                uint32_t j = below(nmid);
                free_block(mids[j]);
                mids[j] = alloc_block();
            }
            /* The long-lived heap turns over slowly. */
            if (below(16) == 0) {
                uint32_t j = below(nlong);
                free_block(longs[j]);
                longs[j] = alloc_block();
            }
        }
        while (depth > 0)
            free_block(stack[--depth]);
        if (phase == 0) {
            /* Drop most of the heap (a cache flushed), then rebuild it. */
            uint32_t kept = 0;
            for (uint32_t i = 0; i < nlong; i++) {
                if (below(10) != 0)
                    free_block(longs[i]);
                else
                    longs[kept++] = longs[i];
            }
            for (uint32_t i = kept; i < nlong; i++)
                longs[i] = alloc_block();
        }
    }
    printf("puts %llu (replaced %llu) pops %llu live %zu cap %zu bytes %zu\n",
           (unsigned long long)nput, (unsigned long long)nput_replaced,
           (unsigned long long)npop, oa_ptable_entries(&table), table.cap, oa_ptable_bytes(&table));
    printf("bytes per live block: mean %.2f max %.2f (%llu samples)\n",
           bytes_sum / (double)bytes_samples, bytes_max, (unsigned long long)bytes_samples);
    oa_ptable_destroy(&table);
    return 0;
}
