/*
 * The tracker's thread-local state, in one struct so a hook pays for one TLS
 * address. The initial-exec model avoids __tls_get_addr calls; the struct is
 * small enough for glibc's static TLS surplus reserved for dlopen'ed
 * modules. Defined in core/hooks.c.
 */
#ifndef OA_TLS_H
#define OA_TLS_H

#include <stdatomic.h>
#include <stdint.h>

#pragma GCC visibility push(hidden)

typedef struct oa_thread oa_thread;
struct oa_group_s;

typedef struct {
    int guard;      /* inside a hook: nested allocations pass through */
    int probing;    /* install's chain probe is running on this thread */
    int probe_hits; /* bit d: the probe reached our hook of domain d */
    int no_record;  /* thread exited, or the registry was full */
    uint64_t gid;   /* group resolved by the last MEM/OBJ hook, used by RAW */
    oa_thread *rec;
    /* The MEM/OBJ hooks' attribution cache (core/hooks.c): what the last
       full resolution found, current for a hook compiled for the OA_LIVE_*
       kind k while attr_epoch equals g_attr_epoch + k (filled with the
       installed mode's kind) and the thread state (address and id) and its
       context version are the ones resolved under (attr_current). Filled
       only for a thread with a record (tls.rec), or with attr_group NULL.
       0 in attr_epoch: invalid. */
    uint64_t attr_epoch;
    uint64_t ctx_ver;
    uint64_t ctx_tsid;
    void *ctx_ts;
    struct oa_group_s *attr_group; /* charged group; NULL: counting is off */
    uint64_t attr_threshold;       /* event threshold, UINT64_MAX when off */
    uint64_t attr_fast_below;      /* live mode's fast path takes sizes below this:
                                      the threshold, or OA_SIZE_BIG if lower */
    uint64_t attr_meta_hi;         /* live mode: the group's slot and generation bits
                                      of a table entry (group_meta_hi) */
    int fork_saved_guard; /* guard before the fork handler set it */
    int resolve_hold;     /* inside oa_reset_group_var: MEM/OBJ hooks reuse gid */
    int in_subinterp;     /* the last MEM/OBJ hook ran in a subinterpreter */
    /* Sampler: bytes left until the next sample, and the PRNG state. */
    uint32_t sample_gen; /* g_sample_gen the countdown was drawn under (0: none) */
    int64_t sample_left;
    uint64_t rng;
    /* Estimate mode's countdown (sampler/estimate.h), apart from the
       sampler's so each keeps its own mean. */
    uint32_t est_gen; /* g_est_gen it was drawn under (0: none) */
    int64_t est_left;
} oa_tls;

extern __thread oa_tls tls __attribute__((tls_model("initial-exec")));

/* Bumped (under the GIL) by everything that can change what a MEM/OBJ hook
   would resolve besides the thread's context: install and uninstall,
   enabling, the threshold, the sampler's configuration, a group closing or
   being released, fork. A thread's cache from an earlier epoch is stale.
   It steps by OA_EPOCH_STEP, so a cache's epoch can carry the OA_LIVE_*
   kind of the mode it was filled in (an epoch plus 0, 1 or 2), and a hook
   compiled for one kind compares with one add what took a load and a test
   of the cached kind besides. Never 0, so 0 marks a cache invalid. */
#define OA_EPOCH_STEP 4
extern _Atomic uint64_t g_attr_epoch;
static inline void oa_attr_epoch_bump(void)
{
    atomic_fetch_add_explicit(&g_attr_epoch, OA_EPOCH_STEP, memory_order_release);
}

/* The OA_LIVE_* kinds an epoch can carry (0, 1, 2). */
#define OA_EPOCH_KINDS 3
_Static_assert(OA_EPOCH_KINDS <= OA_EPOCH_STEP, "an epoch's kinds fit in one step");

/* Whether this thread's attribution cache was filled at `epoch` (its
   OA_LIVE_* kind in *kind) and may be changed in place: not while
   oa_reset_group_var or install's probe runs on this thread. */
static inline int oa_attr_cache_at(uint64_t epoch, uint64_t *kind)
{
    *kind = tls.attr_epoch - epoch;
    return tls.attr_epoch != 0 && *kind < OA_EPOCH_KINDS && !tls.resolve_hold && !tls.probing;
}

/* The bump for closing or releasing group `gid`, under the GIL. Only a
   cache that answers for `gid` is wrong after it; the calling thread's own,
   if it was current just before the bump and answers for another group,
   moves to the new epoch instead of resolving in full at its next
   allocation. A span ends after its context is left, so its thread's cache
   answers for the parent by then: closing and releasing the span's group
   made the next allocation resolve in full (about 1.1 times a span,
   callgrind, the suite's spans loop). Other threads' caches still re-resolve
   (they may answer for `gid`). */
static inline void oa_attr_epoch_bump_for_group(uint64_t gid)
{
    uint64_t before =
        atomic_fetch_add_explicit(&g_attr_epoch, OA_EPOCH_STEP, memory_order_release);
    uint64_t kind;
    if (oa_attr_cache_at(before, &kind) && tls.gid != gid)
        tls.attr_epoch += OA_EPOCH_STEP;
}

#pragma GCC visibility pop

#endif
