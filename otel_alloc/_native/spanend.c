/*
 * span_end_core: the span processor's span-end path. It closes the span's
 * group, hands the span's record to SpanRecords (records.c) and writes the
 * alloc.* attributes into the ended span.
 */
#include "spanctx.h"

#include <stdlib.h>
#include <string.h>

/* Exact types of the SDK's ReadableSpan and BoundedAttributes (configure()). */
static PyTypeObject *g_readable_type;
static PyTypeObject *g_bounded_type;

/* -------------------------------------------------------- span_end_core */

PyObject *sc_configure(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyType_Check(args[0]) || !PyType_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError,
                        "configure(readable_span_type, bounded_attributes_type)");
        return NULL;
    }
    Py_XSETREF(g_readable_type, (PyTypeObject *)Py_NewRef(args[0]));
    Py_XSETREF(g_bounded_type, (PyTypeObject *)Py_NewRef(args[1]));
    Py_RETURN_NONE;
}

/* getattr that never fails: NULL (error cleared) when it does. */
static PyObject *get_quiet(PyObject *o, PyObject *name)
{
    PyObject *v = PyObject_GetAttr(o, name);
    if (v == NULL)
        PyErr_Clear();
    return v;
}

static void queue_record(PyObject *records, uint64_t gid, const oa_span_figures *f,
                         PyObject *span, PyObject *ctx)
{
    PyObject *name = get_quiet(span, g_names.name);
    PyObject *trace_id = get_quiet(ctx, g_names.trace_id);
    PyObject *span_id = get_quiet(ctx, g_names.span_id);
    PyObject *start = get_quiet(span, g_names.start_time);
    PyObject *end = get_quiet(span, g_names.end_time);
    records_add(records, gid, f, name, trace_id, span_id, start, end);
    Py_XDECREF(name);
    Py_XDECREF(trace_id);
    Py_XDECREF(span_id);
    Py_XDECREF(start);
    Py_XDECREF(end);
}

/* Adds the alloc.* attributes into the ended span's own attribute mapping
   when the span has the SDK's exact shape; returns 1 when it did. */
static int set_attributes(PyObject *span, const oa_span_figures *f, int live)
{
    if (g_readable_type == NULL || Py_TYPE(span) != g_readable_type)
        return 0;
    PyObject *bounded = get_quiet(span, g_names.attributes);
    if (bounded == NULL)
        return 0;
    int done = 0;
    if (Py_TYPE(bounded) == g_bounded_type) {
        PyObject *d = get_quiet(bounded, g_names.dict);
        if (d != NULL && PyDict_CheckExact(d)) {
            int64_t values[5] = {(int64_t)f->alloc_bytes, (int64_t)f->alloc_count,
                                 (int64_t)f->inclusive_bytes, f->live_bytes, f->peak_bytes};
            int n = live ? 5 : 3;
            done = 1;
            for (int i = 0; i < n && done; i++) {
                PyObject *v = PyLong_FromLongLong(values[i]);
                if (v == NULL || PyDict_SetItem(d, g_names.attr_keys[i], v) < 0) {
                    PyErr_Clear();
                    done = 0;
                }
                Py_XDECREF(v);
            }
        }
        Py_XDECREF(d);
    }
    Py_DECREF(bounded);
    return done;
}

int span_end_core(PyObject *records, uint64_t gid, uint64_t parent, int live, int64_t keep_from,
                  PyObject *span, PyObject *ctx, int want_attrs, oa_span_figures *f,
                  int *attrs_set)
{
    *attrs_set = 0;
    if (g_fp->span_end(gid, parent, keep_from, f) != 0)
        return -1;
    queue_record(records, gid, f, span, ctx);
    if (want_attrs)
        *attrs_set = set_attributes(span, f, live);
    return 0;
}

PyObject *figures_tuple(const oa_span_figures *f, int attrs_set)
{
    PyObject *items[7] = {
        PyLong_FromUnsignedLongLong(f->alloc_bytes),
        PyLong_FromUnsignedLongLong(f->alloc_count),
        PyLong_FromUnsignedLongLong(f->inclusive_bytes),
        PyLong_FromLongLong(f->live_bytes),
        PyLong_FromLongLong(f->peak_bytes),
        PyBool_FromLong(f->events_pending),
        PyBool_FromLong(attrs_set),
    };
    return tuple_of(items, 7);
}
