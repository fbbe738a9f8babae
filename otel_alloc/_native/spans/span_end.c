/*
 * span_end_core: the span processor's span-end path. It closes the span's
 * group, hands the span's record to SpanRecords (span_records.c) and writes the
 * alloc.* attributes into the ended span.
 */
#include "spans.h"

/* The SDK's exact types (configure()); NULL until configured. */
static PyTypeObject *g_readable_type; /* opentelemetry.sdk.trace.ReadableSpan */
static PyTypeObject *g_span_type;     /* opentelemetry.sdk.trace.Span */
static PyTypeObject *g_bounded_type;  /* opentelemetry.attributes.BoundedAttributes */
static PyTypeObject *g_context_type;  /* opentelemetry.trace.SpanContext */

/* -------------------------------------------------------- span_end_core */

PyObject *sc_configure(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 && nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "configure(readable_span_type, bounded_attributes_type"
                                         "[, span_type, span_context_type])");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        if (!PyType_Check(args[i])) {
            PyErr_SetString(PyExc_TypeError, "configure() takes types");
            return NULL;
        }
    }
    Py_XSETREF(g_readable_type, (PyTypeObject *)Py_NewRef(args[0]));
    Py_XSETREF(g_bounded_type, (PyTypeObject *)Py_NewRef(args[1]));
    if (nargs == 4) {
        Py_XSETREF(g_span_type, (PyTypeObject *)Py_NewRef(args[2]));
        Py_XSETREF(g_context_type, (PyTypeObject *)Py_NewRef(args[3]));
    }
    Py_RETURN_NONE;
}

PyObject *span_field(PyObject *span, int field)
{
    PyTypeObject *t = Py_TYPE(span);
    if (t != NULL && (t == g_readable_type || t == g_span_type)) {
        PyObject *v = PyObject_GetAttr(span, g_names.private[field]);
        if (v != NULL)
            return v;
        if (!PyErr_ExceptionMatches(PyExc_AttributeError))
            return NULL;
        PyErr_Clear(); /* an SDK that renamed it: the property still works */
    }
    return PyObject_GetAttr(span, g_names.field[field]);
}

PyObject *context_id(PyObject *ctx, int index)
{
    if (g_context_type != NULL && Py_TYPE(ctx) == g_context_type &&
        PyTuple_GET_SIZE(ctx) > index)
        return Py_NewRef(PyTuple_GET_ITEM(ctx, index));
    return PyObject_GetAttr(ctx, index == 0 ? g_names.trace_id : g_names.span_id);
}

/* A value that never fails: NULL (error cleared) when reading it does. */
static PyObject *quiet(PyObject *v)
{
    if (v == NULL)
        PyErr_Clear();
    return v;
}

static PyObject *get_quiet(PyObject *o, PyObject *name)
{
    return quiet(PyObject_GetAttr(o, name));
}

static void queue_record(PyObject *records, uint64_t gid, const oa_span_figures *f,
                         PyObject *span, PyObject *ctx)
{
    PyObject *name = quiet(span_field(span, SF_NAME));
    PyObject *trace_id = quiet(context_id(ctx, 0));
    PyObject *span_id = quiet(context_id(ctx, 1));
    PyObject *start = quiet(span_field(span, SF_START_TIME));
    PyObject *end = quiet(span_field(span, SF_END_TIME));
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
    if (g_tracker->span_end(gid, parent, keep_from, f) != 0)
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
