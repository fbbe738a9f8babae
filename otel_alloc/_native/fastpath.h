/*
 * The tracker functions the span path calls on every span, handed from the
 * cffi tracker module to otel_alloc._spanctx as one table (by address), so
 * that module calls them directly: through cffi each call would release and
 * re-take the GIL and build its result objects in Python.
 */
#ifndef OA_FASTPATH_H
#define OA_FASTPATH_H

#include <stdint.h>

#define OA_FASTPATH_VERSION 2

/* What span_end reads from a span's group. */
typedef struct {
    uint64_t alloc_bytes;
    uint64_t alloc_count;
    uint64_t inclusive_bytes; /* alloc_bytes plus what ended children reported */
    int64_t live_bytes;
    int64_t peak_bytes;
    int events_pending;       /* the large-allocation event ring is not empty */
    int released;             /* span_end released the group */
    int noted;                /* a sample or large-allocation event names the group */
} oa_span_figures;

typedef struct {
    unsigned version;
    void (*set_thread_group)(uint64_t group);
    uint64_t (*group_new)(void);
    /* Close `group`, read it, add its inclusive bytes to `parent` (0: none),
       and release it unless `keep_from` >= 0 and at least that many of its
       bytes are still alive (live mode: the span is worth watching for a
       leak). OA_OK, or an error for a stale id. */
    int (*span_end)(uint64_t group, uint64_t parent, int64_t keep_from, oa_span_figures *out);
} oa_fastpath;

#endif
