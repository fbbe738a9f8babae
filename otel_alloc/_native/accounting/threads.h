/*
 * Per-thread records (threads.c): each thread's own counters, kept in a
 * bounded registry after the thread exits so its figures can still be read.
 */
#ifndef OA_THREADS_H
#define OA_THREADS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "../core/tls.h"
#include "../support/spinlock.h"
#include "counters.h"

#pragma GCC visibility push(hidden)

#define OA_MAX_THREADS 4096

struct oa_thread {
    uint64_t native_id;
    _Atomic int alive;
    oa_ctr c;             /* written by the owning thread only */
    _Atomic int64_t peak; /* high-water mark of c.live_bytes (net bytes) */
};

extern oa_thread *g_threads[OA_MAX_THREADS];
extern int g_nthreads;
extern oa_spin g_threads_lock;
extern pthread_key_t g_thread_key;

uint64_t native_thread_id(void);
void thread_exit(void *arg);
void zero_thread(oa_thread *rec);
oa_thread *thread_record_slow(void);

static inline oa_thread *thread_record(void)
{
    oa_thread *rec = tls.rec;
    if (rec != NULL || tls.no_record)
        return rec;
    return thread_record_slow();
}

#pragma GCC visibility pop

#endif
