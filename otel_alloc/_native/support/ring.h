/*
 * Bounded FIFO of fixed-size records (large-allocation events, samples),
 * filled from the hooks and drained by Python. Not synchronised: every call
 * is made under the lock that owns the ring. A full ring refuses the record;
 * the caller counts the drop.
 */
#ifndef OA_RING_H
#define OA_RING_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *buf;
    size_t elem;
    uint32_t cap, head, len;
} oa_ring;

static inline void oa_ring_clear(oa_ring *r)
{
    r->head = r->len = 0;
}

/* Empty the ring and give it room for `capacity` records of `elem` bytes
   (memory from libc, never traced). Returns 0, or -1 without memory. */
static inline int oa_ring_reset(oa_ring *r, uint32_t capacity, size_t elem)
{
    if (r->cap != capacity || r->elem != elem) {
        free(r->buf);
        r->buf = calloc(capacity, elem);
        r->cap = r->buf != NULL ? capacity : 0;
        r->elem = elem;
    }
    oa_ring_clear(r);
    return r->buf != NULL ? 0 : -1;
}

/* Append one record; -1 when the ring is full (or was never sized). */
static inline int oa_ring_push(oa_ring *r, const void *record)
{
    if (r->len == r->cap)
        return -1;
    memcpy(r->buf + (size_t)((r->head + r->len) % r->cap) * r->elem, record, r->elem);
    r->len++;
    return 0;
}

/* Move up to `max` records, oldest first, to `out`; returns how many. */
static inline int oa_ring_pop(oa_ring *r, void *out, int max)
{
    int n = 0;
    while (n < max && r->len > 0) {
        memcpy((char *)out + (size_t)n * r->elem, r->buf + (size_t)r->head * r->elem, r->elem);
        r->head = (r->head + 1) % r->cap;
        r->len--;
        n++;
    }
    return n;
}

static inline size_t oa_ring_bytes(const oa_ring *r)
{
    return (size_t)r->cap * r->elem;
}

#endif
