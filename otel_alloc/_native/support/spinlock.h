/*
 * Spinlock for short critical sections reachable from RAW hooks, which run
 * without the GIL and possibly without a thread state: it never sleeps on a
 * kernel object that a fork could copy in the locked state, and the fork
 * handler (core/fork.c) releases it in the child.
 */
#ifndef OA_SPINLOCK_H
#define OA_SPINLOCK_H

#include <stdatomic.h>

#pragma GCC visibility push(hidden)

typedef struct {
    atomic_flag flag;
} oa_spin;

#define OA_SPIN_INIT {ATOMIC_FLAG_INIT}

/* Spins, yielding the CPU now and then; never blocks in the kernel. */
void oa_spin_lock_contended(oa_spin *s);

/* The uncontended case inline: the live-mode RAW hooks take this lock on
   every allocation and free. */
static inline void oa_spin_lock(oa_spin *s)
{
    if (!atomic_flag_test_and_set_explicit(&s->flag, memory_order_acquire))
        return;
    oa_spin_lock_contended(s);
}

static inline void oa_spin_unlock(oa_spin *s)
{
    atomic_flag_clear_explicit(&s->flag, memory_order_release);
}

/* In a child after fork: the lock was taken by the forking thread before
   fork (core/fork.c) and nobody else exists to release it. */
static inline void oa_spin_reset(oa_spin *s)
{
    atomic_flag_clear(&s->flag);
}

#pragma GCC visibility pop

#endif
