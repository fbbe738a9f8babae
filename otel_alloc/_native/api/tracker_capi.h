/*
 * The tracker's C API for the span-path extension (otel_alloc.otel._spanpath).
 *
 * The span path calls these on every span, so it calls them directly rather
 * than through cffi (which would release and re-take the GIL around each
 * call and build its results in Python). The tracker hands the table over
 * the way NumPy and datetime export their C APIs: a PyCapsule named
 * OA_TRACKER_CAPI_NAME, set as the `_C_API` attribute of the tracker's
 * compiled module when otel_alloc.tracker._binding loads it. The importer
 * checks the capsule's name, the table's version and its size before using
 * it; no address ever passes through Python as a number.
 *
 * A change to the table's layout or to the meaning of a field bumps
 * OA_TRACKER_CAPI_VERSION; fields are only ever added at the end.
 */
#ifndef OA_TRACKER_CAPI_H
#define OA_TRACKER_CAPI_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stddef.h>
#include <stdint.h>

#define OA_TRACKER_MODULE "otel_alloc.tracker._tracker"
#define OA_TRACKER_CAPI_NAME "otel_alloc.tracker._tracker._C_API"
#define OA_TRACKER_CAPI_VERSION 7

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
    uint64_t native_bytes;    /* of alloc_bytes, allocated by native code (version 6) */
    int native;               /* native mode is on: alloc.native_bytes is reported (version 6) */
} oa_span_figures;

/* A group's counters as read by group_counts. */
typedef struct {
    uint64_t alloc_bytes;
    uint64_t alloc_count;
    uint64_t freed_bytes;
    uint64_t freed_count;
} oa_group_counts;

typedef struct {
    unsigned version;   /* OA_TRACKER_CAPI_VERSION of the exporting tracker */
    size_t size;        /* sizeof(oa_tracker_capi) of the exporting tracker */
    /* Make `group` the calling thread's current group (after a ContextVar.set). */
    void (*set_thread_group)(uint64_t group);
    /* Open a group; OA_GROUP_OVERFLOW when the table is full. */
    uint64_t (*group_new)(void);
    /* Close `group`, read it, add its inclusive bytes to `parent` (0: none),
       and release it unless `keep_from` >= 0 and at least that many of its
       bytes are still alive (live mode: the span is worth watching for a
       leak). OA_OK, or an error for a stale id. */
    int (*span_end)(uint64_t group, uint64_t parent, int64_t keep_from, oa_span_figures *out);
    /* Close `group` and read it like span_end, but pass nothing to a parent
       and never release it: for a processor that shares the group with
       another one, which ends the span after it (version 4). */
    int (*span_read)(uint64_t group, oa_span_figures *out);
    /* Read a group's counters without changing it; OA_OK, or an error for a
       stale id (version 5). For native code that measures exactly what it
       allocates between two reads, with no Python code in between. */
    int (*group_counts)(uint64_t group, oa_group_counts *out);
    /* ContextVar.reset of the tracker's group variable with `token` (from a
       set of it), then make the value it leaves the calling thread's group:
       0, or -1 with an exception set (version 7). The one safe way to reset
       it, as the hooks never read the variable during the reset (see
       core/attribution.h). */
    int (*reset_group_var)(PyObject *token);
} oa_tracker_capi;

#endif
