/*
 * Shared declarations of otel_alloc.otel._spanpath (a plain CPython extension:
 * the per-span path of the span processor):
 *
 *   module.c            module init (imports the tracker's C API capsule), group_new
 *   context_follower.c  ContextFollower, the stand-in for OTel's runtime context
 *   span_end.c          the span-end core: close the group, record the span, set attributes
 *   span_records.c      SpanRecords: ended spans queued for the watch thread, and
 *                       the recently ended ones by group id
 *   record_sums.c       what SpanRecords.take() returns: tuples, sums per span name
 *   record_ints.c       a queued record's ids and times as C integers
 *   span_path.c         SpanPath: on_start, its type (span_path.h)
 *   span_finish.c       SpanPath: _on_ending and on_end
 *   span_index.c        SpanIndex: the open spans by span, span id and group id
 *
 * Everything here runs with the GIL held, outside the allocator hooks.
 */
#ifndef OA_SPANS_H
#define OA_SPANS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>

#include "../api/tracker_capi.h"
#include "../compat/long_value.h"

#define OA_HIDDEN __attribute__((visibility("hidden")))

/* The tracker's C API, taken from its capsule when the module is imported
   (module.c); never NULL once the import succeeded. */
extern OA_HIDDEN const oa_tracker_capi *g_tracker;

extern OA_HIDDEN PyTypeObject ContextFollowerType;
extern OA_HIDDEN PyTypeObject SpanRecordsType;

/* Attribute names and attribute keys the span path uses, interned once when
   the module is imported (module.c). */
/* The span fields the span path reads (span_field()). */
enum { SF_CONTEXT, SF_NAME, SF_PARENT, SF_START_TIME, SF_END_TIME, SF_COUNT };

/* The alloc.* span attributes (attr_keys below, in the order of
   span_records.ATTRIBUTE_MODES), and the mask that chooses all of them. */
#define OA_ATTR_KEYS 7
#define OA_ATTR_ALL ((1 << OA_ATTR_KEYS) - 1)

typedef struct {
    PyObject *span_id, *trace_id;
    PyObject *field[SF_COUNT];   /* context, name, parent, start_time, end_time */
    PyObject *private[SF_COUNT]; /* _context, _name, ...: what the SDK's properties return */
    PyObject *attributes, *dict; /* ReadableSpan._attributes, BoundedAttributes._dict */
    PyObject *lock, *maxlen, *dropped, *acquire, *release, *locked; /* BoundedAttributes' */
    PyObject *parent_context_kwnames; /* ("parent_context",) */
    PyObject *missing; /* a sentinel no dict of the span path holds */
    PyObject *attr_keys[OA_ATTR_KEYS]; /* alloc.bytes, .count, .inclusive_bytes, .live_bytes,
                                          .peak_bytes, .native_bytes, .live_bytes_estimate */
} sc_names;

extern OA_HIDDEN sc_names g_names;

/* span.<field> (new reference, or NULL with an error set). For the SDK's
   exact span types it reads the attribute behind the property: the SDK's
   properties are Python functions, and the span path reads ~10 per span. */
OA_HIDDEN PyObject *span_field(PyObject *span, int field);
/* span_context.trace_id (index 0) or .span_id (1); read from the tuple for
   OpenTelemetry's exact SpanContext (a tuple whose ids are properties). */
OA_HIDDEN PyObject *context_id(PyObject *ctx, int index);


/* Close a span's group and read it into *f, and queue its record in
   `records` (a SpanRecords). The processor that ends the span `last` also
   passes its inclusive bytes to `parent` and releases the group (unless
   keep_from >= 0 and the span still holds that many live bytes). -1 for a
   stale id. */
OA_HIDDEN int span_end_core(PyObject *records, uint64_t gid, uint64_t parent, int last,
                            int64_t keep_from, PyObject *span, PyObject *ctx, oa_span_figures *f);
/* How live bytes were kept, as the processor passes it (its LIVE_* kinds,
   the tracker's OA_LIVE_* ones): not at all, exactly, or estimated. */
enum { SP_LIVE_NONE = 0, SP_LIVE_EXACT = 1, SP_LIVE_ESTIMATE = 2 };

/* Add the alloc.* attributes to an ended SDK span's own attributes (its
   BoundedAttributes, which the ReadableSpan every exporter gets shares),
   under their lock, within their limit: past it an alloc.* attribute is
   dropped and counted (in the mapping's `dropped` and *dropped), never one
   of the app's evicted. `live` (an SP_LIVE_* kind) says whether the live
   and peak attributes or the live estimate apply; of those that apply,
   `mask` (bit i: attr_keys[i]) says which are written. How many were
   added, or -1 (error cleared) when the span's attributes are not a
   BoundedAttributes. */
OA_HIDDEN int write_span_attributes(PyObject *span, const oa_span_figures *f, int live,
                                    int mask, unsigned long long *dropped);
/* Queue an ended span's record and remember it as recently ended (span_records.c). */
OA_HIDDEN void records_add(PyObject *records, uint64_t gid, const oa_span_figures *f,
                           PyObject *name, PyObject *trace_id, PyObject *span_id,
                           PyObject *start, PyObject *end);
/* 1 once when the queue has grown long enough that the watch thread should
   take it now (the span path then wakes it), else 0. */
OA_HIDDEN int records_wake_due(PyObject *records);
/* A tuple of n new references; on a NULL among them, all are released. */
OA_HIDDEN PyObject *tuple_of(PyObject **items, int n);
/* (bytes, count, inclusive, live, peak, events_pending, attributes_set). */
OA_HIDDEN PyObject *figures_tuple(const oa_span_figures *f, int attrs_set);

extern OA_HIDDEN PyTypeObject SpanPathType;

OA_HIDDEN PyObject *sc_configure(PyObject *module, PyObject *const *args, Py_ssize_t nargs);

#endif
