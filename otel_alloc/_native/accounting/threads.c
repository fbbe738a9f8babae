/*
 * Per-thread records: one per thread that allocated while installed, kept in
 * a bounded registry; a record of an exited thread is reused when the
 * registry is full.
 */
#include "threads.h"

#include "../api/tracker_api.h"
#include "process_stats.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/syscall.h>
#endif

oa_thread *g_threads[OA_MAX_THREADS];
int g_nthreads;
oa_spin g_threads_lock = OA_SPIN_INIT;
pthread_key_t g_thread_key;

uint64_t native_thread_id(void)
{
#ifdef __linux__
    return (uint64_t)syscall(SYS_gettid);
#else
    return (uint64_t)(uintptr_t)pthread_self();
#endif
}

void thread_exit(void *arg)
{
    oa_thread *rec = arg;
    atomic_store_explicit(&rec->alive, 0, OA_RELAXED);
    tls.rec = NULL;
    tls.no_record = 1;
    tls.attr_epoch = 0; /* the attribution cache takes a record for granted */
}

void zero_thread(oa_thread *rec)
{
    oa_ctr_zero(&rec->c);
    atomic_store_explicit(&rec->peak, 0, OA_RELAXED);
}

/* Called from a hook the first time a thread allocates. */
oa_thread *thread_record_slow(void)
{
    oa_thread *rec = NULL;
    oa_spin_lock(&g_threads_lock);
    if (g_nthreads < OA_MAX_THREADS) {
        rec = calloc(1, sizeof(oa_thread));
        if (rec != NULL)
            g_threads[g_nthreads++] = rec;
    } else {
        /* Full: reuse the record of a thread that has exited. */
        for (int i = 0; i < g_nthreads; i++) {
            if (!atomic_load_explicit(&g_threads[i]->alive, OA_RELAXED)) {
                rec = g_threads[i];
                zero_thread(rec);
                break;
            }
        }
    }
    if (rec != NULL) {
        rec->native_id = native_thread_id();
        atomic_store_explicit(&rec->alive, 1, OA_RELAXED);
    }
    oa_spin_unlock(&g_threads_lock);
    if (rec == NULL) {
        atomic_fetch_add_explicit(&g_threads_dropped, 1, OA_RELAXED);
        tls.no_record = 1;
        return NULL;
    }
    /* The destructor marks the record dead at thread exit. */
    pthread_setspecific(g_thread_key, rec);
    tls.rec = rec;
    return rec;
}

/* ------------------------------------------------------------- figures */

static void thread_to_stats(oa_thread *rec, oa_thread_stats *out)
{
    memset(out, 0, sizeof(*out));
    out->native_id = rec->native_id;
    out->alive = atomic_load_explicit(&rec->alive, OA_RELAXED);
    oa_ctr_sum(&rec->c, figures_live(), &out->stats);
    out->stats.peak_bytes = atomic_load_explicit(&rec->peak, OA_RELAXED);
}

int oa_threads_stats(oa_thread_stats *out, int max_threads)
{
    oa_spin_lock(&g_threads_lock);
    int n = g_nthreads < max_threads ? g_nthreads : max_threads;
    for (int i = 0; i < n; i++)
        thread_to_stats(g_threads[i], &out[i]);
    oa_spin_unlock(&g_threads_lock);
    return n;
}

int oa_current_thread_stats(oa_thread_stats *out)
{
    oa_thread *rec = tls.rec;
    if (rec == NULL) {
        memset(out, 0, sizeof(*out));
        out->native_id = native_thread_id();
        out->alive = 1;
        return 0;
    }
    thread_to_stats(rec, out);
    return 1;
}
