/*
 * The control-byte groups of the pointer table (ptable.h): the hash, and
 * compares of a key's seven hash bits against a whole group of control
 * bytes at once. In a header of their own because ptable.h's inline fast
 * paths and ptable.c's general paths both use them.
 */
#ifndef OA_PTABLE_GROUP_H
#define OA_PTABLE_GROUP_H

#include <stdint.h>
#include <string.h>

#if defined(__SSE2__) && !defined(OA_PTABLE_PORTABLE)
#define OA_PTABLE_SSE2 1
/* Included before the visibility pragma: it declares libc's malloc. */
#include <emmintrin.h>
#else
#define OA_PTABLE_SSE2 0
#endif

#pragma GCC visibility push(hidden)

/* Control bytes: a full slot holds seven bits of its key's hash (high bit
   clear); an empty or deleted slot has the high bit set. */
#define OA_CTRL_EMPTY 0x80u
#define OA_CTRL_DELETED 0xFEu

/* A group's control bytes are compared all at once: sixteen with SSE2 (every
   x86-64 has it), else eight in a 64-bit word. OA_PTABLE_PORTABLE forces
   the word version, so its tests run on x86-64 too. A mask has one bit per
   matching slot (SSE2) or the high bit of each matching byte (word). */
#if OA_PTABLE_SSE2
#define OA_GROUP 16
typedef __m128i oa_group_bits;

static inline oa_group_bits oa_group_load(const uint8_t *ctrl, size_t group)
{
    /* The control bytes start 16*cap bytes into a page-aligned mapping. */
    return _mm_load_si128((const __m128i *)(const void *)(ctrl + group * OA_GROUP));
}

static inline uint64_t oa_match_byte(oa_group_bits g, uint8_t byte)
{
    return (uint64_t)_mm_movemask_epi8(_mm_cmpeq_epi8(g, _mm_set1_epi8((char)byte)));
}

static inline uint64_t oa_match_h2(oa_group_bits g, uint64_t h2)
{
    return oa_match_byte(g, (uint8_t)h2);
}

static inline uint64_t oa_match_empty(oa_group_bits g)
{
    return oa_match_byte(g, OA_CTRL_EMPTY);
}

static inline uint64_t oa_match_free(oa_group_bits g)
{
    return (uint64_t)_mm_movemask_epi8(g);
}

static inline size_t oa_mask_slot(uint64_t mask)
{
    return (size_t)__builtin_ctzll(mask);
}
#else
#define OA_GROUP 8
#define OA_LSBS UINT64_C(0x0101010101010101)
#define OA_MSBS UINT64_C(0x8080808080808080)
typedef uint64_t oa_group_bits;

static inline oa_group_bits oa_group_load(const uint8_t *ctrl, size_t group)
{
    uint64_t w;
    memcpy(&w, ctrl + group * OA_GROUP, sizeof(w));
    return w;
}

/* A byte just above a true match may be flagged too (the borrow of the
   zero-byte test); callers compare keys, so that costs one compare. */
static inline uint64_t oa_match_h2(oa_group_bits w, uint64_t h2)
{
    uint64_t x = w ^ (OA_LSBS * h2);
    return (x - OA_LSBS) & ~x & OA_MSBS;
}

/* Empty: high bit set and bit 1 clear (deleted has bit 1 set); the shift
   carries each byte's bit 1 to its own bit 7 only. */
static inline uint64_t oa_match_empty(oa_group_bits w)
{
    return w & ~(w << 6) & OA_MSBS;
}

static inline uint64_t oa_match_free(oa_group_bits w)
{
    return w & OA_MSBS;
}

static inline size_t oa_mask_slot(uint64_t mask)
{
    return (size_t)__builtin_ctzll(mask) >> 3;
}
#endif

/* Multiplicative (Fibonacci) hash: the high bits of key * phi depend on
   every bit of the key. fastrange maps the top bits onto any number of
   groups, so the capacity need not be a power of two (the table grows by
   1.5x); bits 32 to 38 are the control byte, independent of those. */
static inline uint64_t oa_hash_of(uintptr_t key)
{
    return (uint64_t)key * UINT64_C(0x9E3779B97F4A7C15);
}

static inline size_t oa_home_group(uint64_t h, size_t ngroups)
{
    return (size_t)(((unsigned __int128)h * ngroups) >> 64);
}

static inline uint64_t oa_h2_of(uint64_t h)
{
    return (h >> 32) & 0x7F;
}

#pragma GCC visibility pop

#endif
