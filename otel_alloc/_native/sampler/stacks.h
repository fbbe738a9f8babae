/*
 * Interned Python stacks of sampled allocations (stacks.c). Everything here
 * runs under the GIL.
 */
#ifndef OA_STACKS_H
#define OA_STACKS_H

#include <stdint.h>

#pragma GCC visibility push(hidden)

/* Deepest stack a sample records (oa_sampler_configure's bound). */
#define OA_MAX_DEPTH 128

/* The running thread's stack, interned: OA_STACK_NONE without a thread
   state, OA_STACK_DROPPED when the tables are full. */
uint32_t oa_capture_stack(void);
void oa_stacks_set_depth(uint32_t depth);
void oa_stacks_counts(uint64_t *frames, uint64_t *stacks, uint64_t *dropped);
/* Memory held by the interned frames and stacks. */
uint64_t oa_stacks_bytes(void);

#pragma GCC visibility pop

#endif
