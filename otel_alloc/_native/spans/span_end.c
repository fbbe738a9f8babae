/*
 * The span processor's span-end core: close the span's group, hand the span's
 * record to SpanRecords (span_records.c); and the alloc.* attributes written
 * into an ended span's own attributes, under their lock (_on_ending).
 */
#include "spans.h"

/* The SDK's exact types (configure()); NULL until configured. */
static PyTypeObject *g_readable_type; /* opentelemetry.sdk.trace.ReadableSpan */
static PyTypeObject *g_span_type;     /* opentelemetry.sdk.trace.Span */
/* The type the SDK's tracer actually makes (opentelemetry.sdk.trace._Span, a
   subclass adding nothing to Span's fields), or NULL. Without it every SDK
   span missed the field read below and went through the Python properties:
   about 600 instructions a read instead of about 100, seven reads a span. */
static PyTypeObject *g_sdk_span_type;
static PyTypeObject *g_bounded_type;  /* opentelemetry.attributes.BoundedAttributes */
static PyTypeObject *g_context_type;  /* opentelemetry.trace.SpanContext */

/* -------------------------------------------------------- span_end_core */

PyObject *sc_configure(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 && nargs != 4 && nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "configure(readable_span_type, bounded_attributes_type"
                                         "[, span_type, span_context_type[, sdk_span_type]])");
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
    if (nargs >= 4) {
        Py_XSETREF(g_span_type, (PyTypeObject *)Py_NewRef(args[2]));
        Py_XSETREF(g_context_type, (PyTypeObject *)Py_NewRef(args[3]));
    }
    if (nargs == 5)
        Py_XSETREF(g_sdk_span_type, (PyTypeObject *)Py_NewRef(args[4]));
    Py_RETURN_NONE;
}

PyObject *span_field(PyObject *span, int field)
{
    PyTypeObject *t = Py_TYPE(span);
    if (t != NULL && (t == g_sdk_span_type || t == g_readable_type || t == g_span_type)) {
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

#ifndef Py_GIL_DISABLED
/* Whether `lock` is held: 1 held, 0 free, -1 when it cannot tell
   (error cleared). threading.Lock has locked(); an RLock (the SDK's
   attribute mapping before 1.45) has not before Python 3.14, and is then
   always taken. Asked once per lock type, which also keeps the type's
   method descriptor: called with the lock as its argument, it skips the
   method lookup of a call by name (some 150 instructions and six code
   lines of the interpreter a span). */
static int lock_busy(PyObject *lock)
{
    static PyTypeObject *known_type;
    static PyObject *known_locked; /* the type's locked, NULL when it has none */
    PyTypeObject *type = Py_TYPE(lock);
    if (type != known_type) {
        PyObject *locked = PyObject_GetAttr((PyObject *)type, g_names.locked);
        if (locked == NULL)
            PyErr_Clear();
        Py_XSETREF(known_type, (PyTypeObject *)Py_NewRef(type));
        Py_XSETREF(known_locked, locked);
    }
    if (known_locked == NULL)
        return -1;
    PyObject *busy = Py_IS_TYPE(known_locked, &PyMethodDescr_Type)
                         ? PyObject_Vectorcall(known_locked, &lock, 1, NULL)
                         : PyObject_CallMethodNoArgs(lock, g_names.locked);
    int held = busy == NULL ? -1 : PyObject_IsTrue(busy);
    Py_XDECREF(busy);
    if (held < 0)
        PyErr_Clear();
    return held;
}
#endif

int write_span_attributes(PyObject *span, const oa_span_figures *f, int live, int mask,
                          unsigned long long *dropped)
{
    int written = -1, take = 1;
    PyObject *lock = NULL, *d = NULL, *maxlen = NULL, *held = NULL;
    PyObject *bounded = get_quiet(span, g_names.attributes);
    if (bounded == NULL || g_bounded_type == NULL || Py_TYPE(bounded) != g_bounded_type)
        goto done;
    lock = get_quiet(bounded, g_names.lock);
    d = get_quiet(bounded, g_names.dict);
    maxlen = get_quiet(bounded, g_names.maxlen);
    if (lock == NULL || d == NULL || !PyDict_Check(d) || maxlen == NULL)
        goto done;
    Py_ssize_t limit = PY_SSIZE_T_MAX;
    if (maxlen != Py_None && (limit = PyLong_AsSsize_t(maxlen)) < 0) {
        PyErr_Clear();
        goto done;
    }
    /* The mapping's own lock, which its setter and __deepcopy__ take: a
       reader copying it in another thread does not see it change midway.
       (No processor's on_end has run yet in _on_ending, so no exporter is
       reading it.) With the GIL, a lock nobody holds cannot be taken by
       anyone until this function returns: nothing below releases the GIL or
       runs Python code. So a free lock is as good as taken, and only a held
       one is waited for (acquire parses its arguments: five times the cost
       of locked()). */
#ifndef Py_GIL_DISABLED
    take = lock_busy(lock) != 0; /* -1, cannot tell: take it */
#endif
    if (take) {
        held = PyObject_CallMethodNoArgs(lock, g_names.acquire);
        if (held == NULL) {
            PyErr_Clear();
            goto done;
        }
    }
    int64_t values[OA_ATTR_KEYS] = {(int64_t)f->alloc_bytes, (int64_t)f->alloc_count,
                                    (int64_t)f->inclusive_bytes, f->live_bytes, f->peak_bytes,
                                    (int64_t)f->native_bytes, f->live_bytes};
    /* Which of them apply: live and peak exactly in live mode, the estimate
       in estimate mode, native bytes in native mode; of those, the ones the
       processor's span_attributes chose. */
    int exact = live == SP_LIVE_EXACT;
    int applies[OA_ATTR_KEYS] = {1, 1, 1, exact, exact, f->native != 0, live == SP_LIVE_ESTIMATE};
    /* A leaf span's inclusive bytes are its bytes, and live mode's peak
       often equals them too: one int object serves every equal value. */
    PyObject *made[OA_ATTR_KEYS] = {NULL};
    int lost = 0, exact_dict = PyDict_CheckExact(d);
    written = 0;
    for (int i = 0; i < OA_ATTR_KEYS; i++) {
        if (!applies[i] || !(mask >> i & 1))
            continue;
        PyObject *key = g_names.attr_keys[i];
        /* Below the limit any key fits; only at it does it matter whether
           ours is there already (then it is replaced, not added). */
        int has = PyDict_GET_SIZE(d) < limit ? 1 : PyDict_Contains(d, key);
        if (has < 0 || (!has && PyDict_GET_SIZE(d) >= limit)) {
            lost++; /* the app's attributes fill the limit: ours give way */
            continue;
        }
        PyObject *v = NULL;
        for (int j = 0; j < i && v == NULL; j++)
            if (made[j] != NULL && values[j] == values[i])
                v = Py_NewRef(made[j]);
        if (v == NULL)
            v = PyLong_FromLongLong(values[i]);
        made[i] = v;
        /* A dict subclass (the OrderedDict older SDKs switch to at their
           limit) keeps its own order: PyDict_SetItem would add a key its
           iteration, and so every exporter, never sees. */
        if (v == NULL || (exact_dict ? PyDict_SetItem(d, key, v) : PyObject_SetItem(d, key, v)) < 0)
            lost++;
        else
            written++;
    }
    for (int i = 0; i < OA_ATTR_KEYS; i++)
        Py_XDECREF(made[i]);
    if (lost > 0) {
        /* The mapping's count of dropped attributes, which exporters send. */
        PyObject *before = get_quiet(bounded, g_names.dropped);
        PyObject *add = PyLong_FromLong(lost);
        PyObject *after = before != NULL && add != NULL ? PyNumber_Add(before, add) : NULL;
        if (after == NULL || PyObject_SetAttr(bounded, g_names.dropped, after) < 0)
            PyErr_Clear();
        Py_XDECREF(after);
        Py_XDECREF(add);
        Py_XDECREF(before);
        *dropped += (unsigned long long)lost;
        PyErr_Clear(); /* a failed set above left its error */
    }
    if (take) {
        PyObject *r = PyObject_CallMethodNoArgs(lock, g_names.release);
        if (r == NULL)
            PyErr_Clear();
        Py_XDECREF(r);
    }
done:
    Py_XDECREF(held);
    Py_XDECREF(maxlen);
    Py_XDECREF(d);
    Py_XDECREF(lock);
    Py_XDECREF(bounded);
    return written;
}

int span_end_core(PyObject *records, uint64_t gid, uint64_t parent, int last, int64_t keep_from,
                  PyObject *span, PyObject *ctx, oa_span_figures *f)
{
    int rc = last ? g_tracker->span_end(gid, parent, keep_from, f) : g_tracker->span_read(gid, f);
    if (rc != 0)
        return -1;
    queue_record(records, gid, f, span, ctx);
    return 0;
}

PyObject *figures_tuple(const oa_span_figures *f, int attrs_set)
{
    PyObject *items[8] = {
        PyLong_FromUnsignedLongLong(f->alloc_bytes),
        PyLong_FromUnsignedLongLong(f->alloc_count),
        PyLong_FromUnsignedLongLong(f->inclusive_bytes),
        PyLong_FromLongLong(f->live_bytes),
        PyLong_FromLongLong(f->peak_bytes),
        PyBool_FromLong(f->events_pending),
        PyBool_FromLong(attrs_set),
        f->native ? PyLong_FromUnsignedLongLong(f->native_bytes) : Py_NewRef(Py_None),
    };
    return tuple_of(items, 8);
}
