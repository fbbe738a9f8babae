/*
 * A queued span record's ids and times as C integers (record_ints.c).
 *
 * The queue (span_records.c) once held the span's trace id, span id, start
 * and end time as references to the span's own int objects. Those kept four
 * objects per queued span alive until the watch thread took the record: in
 * live mode four more entries per span in the live-block table, which then
 * grew and was rebuilt (on fresh pages) on the way to tens of thousands of
 * entries and shrank again at each drain. Callgrind does not see that (page
 * faults are the kernel's, the table's misses fall in the level it does not
 * model); wall-clock time on the suite's `spans` item does: records holding
 * no ints took live mode about 4 % less time a span. So a record keeps the
 * values, and makes ints of them only for what the watch thread hands on.
 */
#ifndef OA_RECORD_INTS_H
#define OA_RECORD_INTS_H

#include "spans.h"

typedef struct {
    uint64_t trace_hi, trace_lo; /* trace id, 128 bits */
    uint64_t span_id;
    int64_t start, end;          /* ns; 0 for None or unreadable */
    /* (trace_id, span_id, start, end) as read, when one of them is not an
       int of that range (never for OpenTelemetry's SDK): exact either way.
       NULL otherwise. */
    PyObject *odd;
} record_ints;

/* Fill *ri from the values read at the span's end (any may be NULL: not
   readable). Never fails: values outside the C ranges are kept in ri->odd,
   and if even that tuple cannot be made they read as 0 (the error cleared),
   as an unreadable value always has. */
OA_HIDDEN void record_ints_set(record_ints *ri, PyObject *trace_id, PyObject *span_id,
                               PyObject *start, PyObject *end);
/* Release what ri holds (its odd tuple). */
OA_HIDDEN void record_ints_clear(record_ints *ri);

/* The record's values as ints, 0 where there was none (new references, or
   NULL with an error set). */
enum { RI_TRACE_ID, RI_SPAN_ID, RI_START, RI_END };
OA_HIDDEN PyObject *record_int(const record_ints *ri, int which);

#endif
