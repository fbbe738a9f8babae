/*
 * One ended span's record as SpanRecords queues it (span_records.c), and
 * what the watch thread's take() makes of taken records (record_sums.c).
 */
#ifndef OA_SPAN_RECORD_H
#define OA_SPAN_RECORD_H

#include "record_ints.h"
#include "spans.h"

typedef struct {
    PyObject *name; /* str, or NULL */
    record_ints ints; /* trace and span id, start and end time */
    uint64_t gid;
    oa_span_figures f;
} span_record;

/* A new reference to o, or to 0 when o is NULL or None. */
OA_HIDDEN PyObject *or_zero(PyObject *o);
/* A new reference to s, or to "" when s is NULL (a name that could not be read). */
OA_HIDDEN PyObject *str_or_empty(PyObject *s);
/* A new reference to the record's span name, or "" when it could not be read. */
OA_HIDDEN PyObject *name_of(const span_record *r);
/* A whole record: (name, trace_id, span_id, group_id, bytes, count,
   inclusive_bytes, live_bytes, peak_bytes, start_time, end_time,
   native_bytes or None). */
OA_HIDDEN PyObject *record_tuple(const span_record *r);
/* The taken records summed per span name: a list of (name, bytes, count,
   trace_id, span_id, sizes, native_bytes) tuples; each span's bytes go into sizes with
   probability `rate`, drawn from *rng. */
OA_HIDDEN PyObject *sums_by_name(span_record *taken, Py_ssize_t n, double rate, uint64_t *rng);

#endif
