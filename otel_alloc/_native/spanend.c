/*
 * span_end_core: the span processor's span-end path, and SpanRecords, the bounded
 * queue of ended spans that the watch thread drains into metrics and sinks.
 *
 * A record holds only strings and ints (never GC-tracked objects), so spans
 * waiting in the queue add nothing to the garbage collector's counts: as a
 * deque of Python tuples the queue made young collections run every few
 * hundred spans and promoted each waiting record to older generations.
 */
#include "spanctx.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    PyObject *name;     /* str, or NULL */
    PyObject *trace_id; /* int, or NULL */
    PyObject *span_id;  /* int, or NULL */
    PyObject *start;    /* int, None or NULL */
    PyObject *end;
    uint64_t gid;
    oa_span_figures f;
} span_record;

typedef struct {
    PyObject_HEAD
    span_record *ring;
    Py_ssize_t capacity;
    Py_ssize_t head; /* oldest */
    Py_ssize_t len;
    unsigned long long dropped;
} SpanRecords;

/* Exact types of the SDK's ReadableSpan and BoundedAttributes (configure()). */
static PyTypeObject *g_readable_type;
static PyTypeObject *g_bounded_type;

static void clear_record(span_record *r)
{
    Py_CLEAR(r->name);
    Py_CLEAR(r->trace_id);
    Py_CLEAR(r->span_id);
    Py_CLEAR(r->start);
    Py_CLEAR(r->end);
}

/* ------------------------------------------------------------ SpanRecords */

static PyObject *sr_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"capacity", NULL};
    Py_ssize_t capacity;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "n:SpanRecords", kwlist, &capacity))
        return NULL;
    if (capacity < 1 || capacity > 100000000) {
        PyErr_SetString(PyExc_ValueError, "capacity must be between 1 and 100000000");
        return NULL;
    }
    SpanRecords *self = (SpanRecords *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    /* calloc, not PyMem: the queue is the tracker's own memory, not the app's. */
    self->ring = calloc((size_t)capacity, sizeof(span_record));
    if (self->ring == NULL) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    self->capacity = capacity;
    return (PyObject *)self;
}

static void sr_clear_all(SpanRecords *self)
{
    while (self->len > 0) {
        clear_record(&self->ring[self->head]);
        self->head = (self->head + 1) % self->capacity;
        self->len--;
    }
    self->head = 0;
}

static void sr_dealloc(SpanRecords *self)
{
    if (self->ring != NULL) {
        sr_clear_all(self);
        free(self->ring);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *or_zero(PyObject *o)
{
    return o != NULL ? Py_NewRef(o) : PyLong_FromLong(0);
}

/* A tuple of n new references; on a NULL among them, all are released. */
static PyObject *tuple_of(PyObject **items, int n)
{
    for (int i = 0; i < n; i++) {
        if (items[i] == NULL) {
            for (int j = 0; j < n; j++)
                Py_XDECREF(items[j]);
            return NULL;
        }
    }
    PyObject *t = PyTuple_New(n);
    if (t == NULL) {
        for (int j = 0; j < n; j++)
            Py_DECREF(items[j]);
        return NULL;
    }
    for (int i = 0; i < n; i++)
        PyTuple_SET_ITEM(t, i, items[i]);
    return t;
}

/* One drained record: (name, trace_id, span_id, group_id, bytes, count,
   inclusive_bytes, live_bytes, peak_bytes, start_time, end_time). */
static PyObject *record_tuple(const span_record *r)
{
    PyObject *items[11] = {
        r->name != NULL ? Py_NewRef(r->name) : PyUnicode_FromString(""),
        or_zero(r->trace_id),
        or_zero(r->span_id),
        PyLong_FromUnsignedLongLong(r->gid),
        PyLong_FromUnsignedLongLong(r->f.alloc_bytes),
        PyLong_FromUnsignedLongLong(r->f.alloc_count),
        PyLong_FromUnsignedLongLong(r->f.inclusive_bytes),
        PyLong_FromLongLong(r->f.live_bytes),
        PyLong_FromLongLong(r->f.peak_bytes),
        r->start != NULL && r->start != Py_None ? Py_NewRef(r->start) : PyLong_FromLong(0),
        r->end != NULL && r->end != Py_None ? Py_NewRef(r->end) : PyLong_FromLong(0),
    };
    return tuple_of(items, 11);
}

static PyObject *sr_drain(SpanRecords *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t max = self->len;
    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError, "drain([max_records])");
        return NULL;
    }
    if (nargs == 1) {
        max = PyLong_AsSsize_t(args[0]);
        if (max == -1 && PyErr_Occurred())
            return NULL;
    }
    Py_ssize_t n = max < self->len ? (max < 0 ? 0 : max) : self->len;
    if (n == 0)
        return PyList_New(0);
    /* The records are moved out of the ring before any Python object is
       made: making one can run a collection, finalizers and other threads,
       which may end spans (appending here) or drain too. */
    span_record *taken = malloc((size_t)n * sizeof(span_record));
    if (taken == NULL)
        return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < n; i++) {
        taken[i] = self->ring[self->head];
        memset(&self->ring[self->head], 0, sizeof(span_record));
        self->head = (self->head + 1) % self->capacity;
        self->len--;
    }
    PyObject *out = PyList_New(n);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (out != NULL) {
            PyObject *t = record_tuple(&taken[i]);
            if (t == NULL)
                Py_CLEAR(out);
            else
                PyList_SET_ITEM(out, i, t);
        }
        clear_record(&taken[i]);
    }
    free(taken);
    return out;
}

static PyObject *sr_clear(SpanRecords *self, PyObject *Py_UNUSED(ignored))
{
    sr_clear_all(self);
    Py_RETURN_NONE;
}

static Py_ssize_t sr_len(SpanRecords *self)
{
    return self->len;
}

static PyObject *sr_get_dropped(SpanRecords *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong(self->dropped);
}

static PyObject *sr_get_capacity(SpanRecords *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(self->capacity);
}

static PyMethodDef sr_methods[] = {
    {"drain", (PyCFunction)(void (*)(void))sr_drain, METH_FASTCALL,
     "Remove and return up to max_records records, oldest first."},
    {"clear", (PyCFunction)sr_clear, METH_NOARGS, "Drop every queued record."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef sr_getset[] = {
    {"dropped", (getter)sr_get_dropped, NULL, "Records not queued because the queue was full.",
     NULL},
    {"capacity", (getter)sr_get_capacity, NULL, "Most records held at once.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PySequenceMethods sr_as_sequence = {
    .sq_length = (lenfunc)sr_len,
};

PyTypeObject SpanRecordsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "otel_alloc._spanctx.SpanRecords",
    .tp_doc = "Bounded queue of ended spans' records (strings and ints only).",
    .tp_basicsize = sizeof(SpanRecords),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = sr_new,
    .tp_dealloc = (destructor)sr_dealloc,
    .tp_methods = sr_methods,
    .tp_getset = sr_getset,
    .tp_as_sequence = &sr_as_sequence,
};

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

static void queue_record(SpanRecords *records, uint64_t gid, const oa_span_figures *f,
                         PyObject *span, PyObject *ctx)
{
    if (records->len == records->capacity) {
        records->dropped++;
        return;
    }
    span_record r = {.gid = gid, .f = *f};
    r.name = get_quiet(span, g_names.name);
    r.trace_id = get_quiet(ctx, g_names.trace_id);
    r.span_id = get_quiet(ctx, g_names.span_id);
    r.start = get_quiet(span, g_names.start_time);
    r.end = get_quiet(span, g_names.end_time);
    /* The getattrs may have run Python code (properties), and with it other
       threads: check for room again. */
    if (records->len == records->capacity) {
        records->dropped++;
        clear_record(&r);
        return;
    }
    records->ring[(records->head + records->len) % records->capacity] = r;
    records->len++;
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

int span_end_core(PyObject *records, uint64_t gid, uint64_t parent, int live, int release,
                  PyObject *span, PyObject *ctx, int want_attrs, oa_span_figures *f,
                  int *attrs_set)
{
    *attrs_set = 0;
    if (g_fp->span_end(gid, parent, release, f) != 0)
        return -1;
    queue_record((SpanRecords *)records, gid, f, span, ctx);
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
