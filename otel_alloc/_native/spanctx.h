/*
 * Shared declarations of otel_alloc._spanctx (a plain CPython extension):
 *
 *   spanctx.c    module, bind() to the tracker's fast-path table, group_new
 *   following.c  FollowingContext, the stand-in for OTel's runtime context
 *   spanend.c    the span-end core and SpanRecords, the bounded queue of ended spans
 *   spanpath.c   SpanPath, the span processor's on_start/on_end
 *
 * Everything here runs with the GIL held, outside the allocator hooks.
 */
#ifndef OA_SPANCTX_H
#define OA_SPANCTX_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>

#include "fastpath.h"

#define OA_HIDDEN __attribute__((visibility("hidden")))

/* The tracker's fast-path table, set once by bind(); NULL before. */
extern OA_HIDDEN const oa_fastpath *g_fp;

extern OA_HIDDEN PyTypeObject FollowingContextType;
extern OA_HIDDEN PyTypeObject SpanRecordsType;

/* Sets RuntimeError and returns 0 when bind() has not run. */
OA_HIDDEN int fastpath_ready(void);

/* Close a span's group, queue its record in `records` (a SpanRecords) and
   set its alloc.* attributes when asked and possible. -1 for a stale id. */
OA_HIDDEN int span_end_core(PyObject *records, uint64_t gid, uint64_t parent, int live,
                            int release, PyObject *span, PyObject *ctx, int want_attrs,
                            oa_span_figures *f, int *attrs_set);
/* (bytes, count, inclusive, live, peak, events_pending, attributes_set). */
OA_HIDDEN PyObject *figures_tuple(const oa_span_figures *f, int attrs_set);

extern OA_HIDDEN PyTypeObject SpanPathType;

OA_HIDDEN PyObject *sc_configure(PyObject *module, PyObject *const *args, Py_ssize_t nargs);

#endif
