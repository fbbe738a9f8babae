/*
 * The filter of a pointer table without a nursery (ptable.h): one byte per
 * bucket of the key hash's top bits, counting the keys the slots hold, so
 * that "is this block in the table?" is one load for a table that holds
 * few of the blocks it is asked about (estimate mode's sample).
 */
#ifndef OA_PTABLE_FILTER_H
#define OA_PTABLE_FILTER_H

#include <stdint.h>

#pragma GCC visibility push(hidden)

/* The filter of a table without a nursery (estimate mode's, which holds a
   sample and is asked about every free): per bucket of the hash's top
   OA_FILTER_BITS bits, how many keys the slots hold, up to 255, which then
   stays (a bucket that once held 255 keys answers "maybe" for good). A
   missed lowering only makes a "maybe" of a "no"; every key entering the
   slots raises its bucket. 64 KiB, mapped with the table. */
#define OA_FILTER_BITS 16
#define OA_FILTER (1u << OA_FILTER_BITS)
#define OA_FILTER_FULL 255u

static inline uint8_t *oa_filter_of(uint8_t *filter, uint64_t h)
{
    return &filter[h >> (64 - OA_FILTER_BITS)];
}

static inline void oa_filter_raise(uint8_t *filter, uint64_t h)
{
    uint8_t *b = oa_filter_of(filter, h);
    if (*b != OA_FILTER_FULL)
        (*b)++;
}

static inline void oa_filter_lower(uint8_t *filter, uint64_t h)
{
    uint8_t *b = oa_filter_of(filter, h);
    if (*b != OA_FILTER_FULL)
        (*b)--;
}

#pragma GCC visibility pop

#endif
