#include "spinlock.h"

#include <sched.h>

void oa_spin_lock_contended(oa_spin *s)
{
    unsigned spins = 0;
    while (atomic_flag_test_and_set_explicit(&s->flag, memory_order_acquire)) {
        if (++spins > 64) {
            sched_yield();
            spins = 0;
        }
    }
}
