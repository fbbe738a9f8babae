/*
 * The tracker's thread-local state, in one struct so a hook pays for one TLS
 * address. The initial-exec model avoids __tls_get_addr calls; the struct is
 * small enough for glibc's static TLS surplus reserved for dlopen'ed
 * modules. Defined in core/hooks.c.
 */
#ifndef OA_TLS_H
#define OA_TLS_H

#include <stdint.h>

#pragma GCC visibility push(hidden)

typedef struct oa_thread oa_thread;

typedef struct {
    int guard;      /* inside a hook: nested allocations pass through */
    int probing;    /* install's chain probe is running on this thread */
    int probe_hits; /* bit d: the probe reached our hook of domain d */
    int no_record;  /* thread exited, or the registry was full */
    uint64_t gid;   /* group resolved by the last MEM/OBJ hook, used by RAW */
    oa_thread *rec;
    /* Cache of the last resolution: valid while the thread state, its context
       object and its context version are unchanged (compat/thread_state.h);
       our own ContextVar.set calls are followed by oa_set_thread_group, which
       drops the cache. */
    int ctx_valid;
    uint64_t ctx_ver;
    uint64_t ctx_tsid;
    void *ctx_obj;
    int fork_saved_guard; /* guard before the fork handler set it */
    int in_subinterp;     /* the last MEM/OBJ hook ran in a subinterpreter */
    /* Sampler: bytes left until the next sample, and the PRNG state. */
    uint32_t sample_gen; /* g_sample_gen the countdown was drawn under (0: none) */
    int64_t sample_left;
    uint64_t rng;
} oa_tls;

extern __thread oa_tls tls __attribute__((tls_model("initial-exec")));

#pragma GCC visibility pop

#endif
