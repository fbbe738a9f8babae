/*
 * xorshift64*: the small, fast generator both extensions use where a
 * statistical choice must not cost a call into Python (the tracker's
 * sampling intervals, the span-size sample of SpanRecords).
 */
#ifndef OA_XORSHIFT_H
#define OA_XORSHIFT_H

#include <stdint.h>

/* Next output; `state` must not be 0. */
static inline uint64_t oa_xorshift64s(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * UINT64_C(2685821657736338717);
}

#endif
