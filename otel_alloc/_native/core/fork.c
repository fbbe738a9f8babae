/*
 * The fork handler: the child of a fork keeps working, with the locks free
 * and the parent's figures and live blocks forgotten.
 */
#include <pthread.h>

#include "../accounting/events.h"
#include "../accounting/groups.h"
#include "../accounting/process_stats.h"
#include "../accounting/threads.h"
#include "../sampler/sampler.h"
#include "fork.h"
#include "hooks.h"

/* Before fork() the forking thread takes the spinlocks, so that no other
   thread is in the middle of the RAW table, the thread registry or the ring
   when the address space is copied. Resetting a lock in the child is not
   enough on its own: a RAW hook resizing the live table frees the old slots
   before it stores the new ones, and a child forked in between would clear,
   and later free, a freed array (seen as "double free or corruption" in
   children forked while other threads allocate). No code path holds one of
   these locks while taking another or while waiting for the GIL, so the
   holders always finish. Until the parent or child handler runs, the
   forking thread's own hooks pass through untracked (the guard is set): a
   pthread_atfork handler of another library allocating through PyMem would
   otherwise spin on a lock this thread holds.

   The MEM/OBJ table is guarded by the GIL, which os.fork() holds; a fork from
   C code without the GIL while another thread changes that table is not
   covered. */
static void atfork_prepare(void)
{
    tls.fork_saved_guard = tls.guard;
    tls.guard = 1;
    oa_spin_lock(&g_groups_lock);
    oa_spin_lock(&g_threads_lock);
    oa_spin_lock(&g_ring_lock);
    oa_spin_lock(&g_raw_lock);
    oa_spin_lock(&g_native_lock);
    oa_sampler_atfork_prepare();
}

static void atfork_parent(void)
{
    oa_sampler_atfork_parent();
    oa_spin_unlock(&g_native_lock);
    oa_spin_unlock(&g_raw_lock);
    oa_spin_unlock(&g_ring_lock);
    oa_spin_unlock(&g_threads_lock);
    oa_spin_unlock(&g_groups_lock);
    tls.guard = tls.fork_saved_guard;
}

/* In the child only the forking thread exists: the locks taken before fork
   are released, and the parent's figures and live blocks are forgotten so
   the child's groups start from zero. */
static void atfork_child(void)
{
    oa_spin_reset(&g_raw_lock);
    oa_spin_reset(&g_native_lock);
    oa_spin_reset(&g_groups_lock);
    oa_spin_reset(&g_threads_lock);
    oa_spin_reset(&g_ring_lock);
    oa_ptable_clear(&g_mem_obj_table);
    oa_ptable_clear(&g_raw_table);
    oa_ptable_clear(&g_native_table);
    oa_sampler_atfork_child();
    oa_ring_clear(&g_events);
    oa_attr_epoch_bump();
    oa_group *groups = group_table();
    for (uint32_t i = 0; groups != NULL && i < g_ngroups; i++) {
        reset_group(&groups[i]);
        /* The live tables were cleared; no other thread exists to be
           charging a group. */
        atomic_store_explicit(&groups[i].tagged_mem_obj, 0, OA_RELAXED);
        atomic_store_explicit(&groups[i].tagged_raw, 0, OA_RELAXED);
        atomic_store_explicit(&groups[i].raw_pins, 0, OA_RELAXED);
    }
    oa_thread *self = tls.rec;
    zero_figures(figures_live());
    for (int i = 0; i < g_nthreads; i++) {
        if (g_threads[i] != self)
            atomic_store_explicit(&g_threads[i]->alive, 0, OA_RELAXED);
    }
    if (self != NULL)
        self->native_id = native_thread_id();
    tls.guard = tls.fork_saved_guard;
}

void oa_register_fork_handlers(void)
{
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}
