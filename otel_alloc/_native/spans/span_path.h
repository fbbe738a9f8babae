/*
 * SpanPath (span_path.c, span_finish.c): AllocationSpanProcessor's on_start,
 * _on_ending and on_end, in C.
 */
#ifndef OA_SPAN_PATH_H
#define OA_SPAN_PATH_H

#include "span_index.h"

#define UNTRACKED (-1)

typedef struct {
    PyObject_HEAD
    /* Shared by every processor: one allocation is charged to one group, so
       processors that see the same span share its group. */
    SpanIndex *groups; /* by identity: span -> group id (read by ContextFollower) */
    PyObject *holders; /* dict: span -> how many more processors hold its group */
    /* This processor's own. */
    SpanIndex *open;   /* by int: span id -> span, in the order they started */
    PyObject *joined;  /* dict: span id -> span, open spans whose group another opened */
    SpanIndex *by_gid; /* by int: group id -> span (SpanWatch.open) */
    PyObject *records; /* SpanRecords */
    /* Bound methods of the wrapped processor, or NULL. */
    PyObject *next_on_start, *next_on_ending, *next_on_end;
    PyObject *overflowed;  /* () -> int: group id after the table was full, or -1 */
    PyObject *failed;      /* (where: str, error: BaseException) -> None */
    PyObject *wake;        /* () -> None: large-allocation events are waiting */
    PyObject *live_end;    /* (span, span_context, gid, figures) -> None: a kept group */
    PyObject *with_figures; /* (span, figures, live, mask) -> a copy of span with attributes */
    PyObject *note_thread; /* () -> None, or NULL */
    int live; /* how live bytes are kept: an SP_LIVE_* kind (spans.h) */
    int attributes; /* the alloc.* attributes ended spans get (bit i: attr_keys[i]); 0: none */
    long long keep_from; /* keep a group still holding this many live bytes (live mode); -1: never */
    int shutdown;
    long long overflow_open;
    uint64_t serial; /* for the per-thread "thread noted" mark */
    unsigned long long attributes_dropped;    /* alloc.* attributes past a span's limit */
    unsigned long long attributes_unwritable; /* _on_ending spans without the SDK's mapping */
} SpanPath;

/* The key of span id `sid` in `open`: its low 64 bits (a span id outside
   0..2**64-1, which no exporter takes, still gets a place, as it had in a
   dict). 0, or -1 with TypeError set when sid is not an int. */
static inline int sid_key(PyObject *sid, uint64_t *key)
{
    if (!PyLong_Check(sid)) {
        PyErr_Format(PyExc_TypeError, "a span id is an int, not %R", sid);
        return -1;
    }
    *key = oa_long_u64_mask(sid);
    return 0;
}

/* Hand the pending exception to the processor's `failed` callback. */
OA_HIDDEN __attribute__((cold)) void sp_failed(SpanPath *self, const char *where);
/* Removes `key` from dict `d`; new reference to its value, or NULL (error set
   only on a real failure). */
OA_HIDDEN PyObject *dict_pop(PyObject *d, PyObject *key);
OA_HIDDEN PyObject *sp_on_ending(SpanPath *self, PyObject *span);
OA_HIDDEN PyObject *sp_on_end(SpanPath *self, PyObject *span);

#endif
