/*
 * SpanPath: AllocationSpanProcessor's on_start and on_end, in C.
 *
 * They run for every span. The processor (Python) keeps everything else and
 * installs these two bound methods on itself; rare paths call back into it
 * (a full group table, large-allocation events waiting, live-mode
 * retention, spans of another shape than the SDK's). Nothing here raises
 * out of on_start/on_end: errors go to the processor's `failed` callback.
 */
#include "span_path.h"

#include "../api/tracker_api.h"

static uint64_t g_serial;
/* initial-exec, like the tracker's thread-locals: the default model for a
   shared object called __tls_get_addr on every span. */
static _Thread_local uint64_t tl_noted __attribute__((tls_model("initial-exec")));

void sp_failed(SpanPath *self, const char *where)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (value != NULL && tb != NULL)
        PyException_SetTraceback(value, tb);
    PyObject *w = PyUnicode_FromString(where);
    if (w != NULL && self->failed != NULL) {
        PyObject *args[2] = {w, value != NULL ? value : Py_None};
        PyObject *r = PyObject_Vectorcall(self->failed, args, 2, NULL);
        Py_XDECREF(r);
    }
    Py_XDECREF(w);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    PyErr_Clear();
}

PyObject *dict_pop(PyObject *d, PyObject *key)
{
    /* Most pops at a span's end look in a dict that is empty in a service
       without nested or joined spans (joined, and open in on_end). */
    if (PyDict_GET_SIZE(d) == 0)
        return NULL;
    /* One lookup (a get and a delete took two: a third of the span end's
       dict work). */
#if PY_VERSION_HEX >= 0x030D0000
    PyObject *v = NULL;
    return PyDict_Pop(d, key, &v) > 0 ? v : NULL;
#else
    PyObject *v = _PyDict_Pop(d, key, g_names.missing);
    if (v == g_names.missing) {
        Py_DECREF(v);
        return NULL;
    }
    return v;
#endif
}

/* --------------------------------------------------------------- on_start */

/* A span another processor opened a group for (this one is registered
   after it on the same provider, or both wrap one export processor): this
   processor holds the same group. Whichever processor ends the span last
   releases it. */
static int join_group(SpanPath *self, PyObject *span, PyObject *sid, PyObject *gid_obj)
{
    PyObject *held = PyDict_GetItemWithError(self->holders, span); /* borrowed */
    if (held == NULL && PyErr_Occurred())
        return -1;
    long n = held != NULL ? PyLong_AsLong(held) : 0;
    if (n < 0 && PyErr_Occurred())
        return -1;
    PyObject *count = PyLong_FromLong(n + 1);
    if (count == NULL)
        return -1;
    int rc = PyDict_SetItem(self->holders, span, count);
    Py_DECREF(count);
    uint64_t sid_at;
    if (rc < 0 || sid_key(sid, &sid_at) < 0 || PyDict_SetItem(self->joined, sid, span) < 0 ||
        si_set(self->open, sid_at, sid, span) < 0)
        return -1;
    uint64_t gid = oa_long_u64_mask(gid_obj);
    if (gid != OA_GROUP_OVERFLOW && si_set(self->by_gid, gid, gid_obj, span) < 0)
        return -1;
    return 0;
}

static int open_group(SpanPath *self, PyObject *span)
{
    int rc = -1;
    PyObject *gid_obj = NULL;
    PyObject *ctx = span_field(span, SF_CONTEXT);
    PyObject *sid = ctx != NULL ? context_id(ctx, 1) : NULL;
    uint64_t sid_at;
    if (sid == NULL || sid_key(sid, &sid_at) < 0)
        goto done;
    PyObject *existing = si_get(self->groups, si_identity(span)); /* borrowed */
    if (existing != NULL) {
        rc = join_group(self, span, sid, existing);
        goto done;
    }
    uint64_t gid = g_tracker->group_new();
    if (gid == OA_GROUP_OVERFLOW) {
        gid_obj = PyObject_CallNoArgs(self->overflowed);
        if (gid_obj == NULL)
            goto done;
        long long v = PyLong_AsLongLong(gid_obj);
        if (v == -1 && PyErr_Occurred())
            goto done;
        if (v == UNTRACKED) {
            rc = 0;
            goto done;
        }
        gid = (uint64_t)v;
    } else if ((gid_obj = PyLong_FromUnsignedLongLong(gid)) == NULL) {
        goto done;
    }
    if (gid != OA_GROUP_OVERFLOW && si_set(self->by_gid, gid, gid_obj, span) < 0)
        goto done;
    /* Read by ContextFollower on attach: the span's allocations go to its
       group from its first attach on. */
    if (si_set(self->groups, si_identity(span), span, gid_obj) < 0 ||
        si_set(self->open, sid_at, sid, span) < 0)
        goto done;
    rc = 0;
done:
    Py_XDECREF(gid_obj);
    Py_XDECREF(sid);
    Py_XDECREF(ctx);
    return rc;
}

static PyObject *sp_on_start(SpanPath *self, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames)
{
    Py_ssize_t nkw = kwnames != NULL ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs < 1 || nargs + nkw > 2) {
        PyErr_SetString(PyExc_TypeError, "on_start(span, parent_context=None)");
        return NULL;
    }
    PyObject *span = args[0];
    PyObject *parent_context = nargs + nkw == 2 ? args[1] : Py_None;
    if (!self->shutdown && g_tracker != NULL) {
        if (open_group(self, span) < 0)
            sp_failed(self, "on_start");
        if (self->note_thread != NULL && tl_noted != self->serial) {
            PyObject *r = PyObject_CallNoArgs(self->note_thread);
            if (r == NULL)
                sp_failed(self, "on_start");
            else
                tl_noted = self->serial;
            Py_XDECREF(r);
        }
    }
    if (self->next_on_start != NULL) {
        PyObject *call_args[2] = {span, parent_context};
        PyObject *r = PyObject_Vectorcall(self->next_on_start, call_args, 1, g_names.parent_context_kwnames);
        if (r == NULL)
            sp_failed(self, "wrapped on_start");
        Py_XDECREF(r);
    }
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------- type */

static PyObject *optional_callable(PyObject *o, const char *name)
{
    if (o == Py_None)
        return NULL;
    if (!PyCallable_Check(o)) {
        PyErr_Format(PyExc_TypeError, "%s must be callable or None", name);
        return NULL;
    }
    return Py_NewRef(o);
}

static PyObject *sp_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"groups", "holders", "open", "by_gid", "records", "next_on_start",
                             "next_on_ending", "next_on_end", "live", "overflowed", "failed",
                             "wake", "live_end", "with_figures", "note_thread", "keep_from",
                             "attributes", NULL};
    PyObject *groups, *holders, *open, *by_gid, *records, *next_start, *next_ending, *next_end,
        *overflowed, *failed_cb, *wake, *live_end, *with_figures, *note_thread;
    int live;
    long long keep_from = -1;
    int attributes = OA_ATTR_ALL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O!O!O!O!OOOiOOOOOO|Li:SpanPath", kwlist,
                                     &SpanIndexType, &groups, &PyDict_Type, &holders,
                                     &SpanIndexType, &open, &SpanIndexType, &by_gid,
                                     &SpanRecordsType, &records, &next_start, &next_ending,
                                     &next_end, &live, &overflowed, &failed_cb, &wake, &live_end,
                                     &with_figures, &note_thread, &keep_from, &attributes))
        return NULL;
    if (!PyCallable_Check(overflowed) || !PyCallable_Check(failed_cb) ||
        !PyCallable_Check(wake) || !PyCallable_Check(live_end) ||
        !PyCallable_Check(with_figures)) {
        PyErr_SetString(PyExc_TypeError, "SpanPath callbacks must be callable");
        return NULL;
    }
    if (!((SpanIndex *)groups)->by_identity || ((SpanIndex *)by_gid)->by_identity ||
        ((SpanIndex *)open)->by_identity) {
        PyErr_SetString(PyExc_TypeError, "SpanPath takes groups=SpanIndex(by_identity=True), "
                                         "open=SpanIndex() and by_gid=SpanIndex()");
        return NULL;
    }
    if (live < SP_LIVE_NONE || live > SP_LIVE_ESTIMATE) {
        PyErr_Format(PyExc_ValueError, "live must be 0, 1 or 2, not %d", live);
        return NULL;
    }
    if (attributes < 0 || attributes > OA_ATTR_ALL) {
        PyErr_Format(PyExc_ValueError, "attributes must be a mask from 0 to %d, not %d",
                     OA_ATTR_ALL, attributes);
        return NULL;
    }
    SpanPath *self = (SpanPath *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->groups = (SpanIndex *)Py_NewRef(groups);
    self->holders = Py_NewRef(holders);
    self->open = (SpanIndex *)Py_NewRef(open);
    self->joined = PyDict_New();
    if (self->joined == NULL)
        goto fail;
    self->by_gid = (SpanIndex *)Py_NewRef(by_gid);
    self->records = Py_NewRef(records);
    self->overflowed = Py_NewRef(overflowed);
    self->failed = Py_NewRef(failed_cb);
    self->wake = Py_NewRef(wake);
    self->live_end = Py_NewRef(live_end);
    self->with_figures = Py_NewRef(with_figures);
    self->live = live;
    self->attributes = attributes;
    self->keep_from = live != SP_LIVE_NONE && keep_from >= 0 ? keep_from : -1;
    self->serial = ++g_serial;
    self->note_thread = optional_callable(note_thread, "note_thread");
    if (self->note_thread == NULL && PyErr_Occurred())
        goto fail;
    /* The wrapped processor's methods this one passes spans on to; None for
       one it does not call (no wrapped processor, an SDK without
       _on_ending, or a method that does nothing: sdk_compat.forwarded). */
    self->next_on_start = optional_callable(next_start, "next_on_start");
    if (self->next_on_start == NULL && PyErr_Occurred())
        goto fail;
    self->next_on_ending = optional_callable(next_ending, "next_on_ending");
    if (self->next_on_ending == NULL && PyErr_Occurred())
        goto fail;
    self->next_on_end = optional_callable(next_end, "next_on_end");
    if (self->next_on_end == NULL && PyErr_Occurred())
        goto fail;
    return (PyObject *)self;
fail:
    Py_DECREF(self);
    return NULL;
}

static int sp_traverse(SpanPath *self, visitproc visit, void *arg)
{
    Py_VISIT(self->groups);
    Py_VISIT(self->holders);
    Py_VISIT(self->open);
    Py_VISIT(self->joined);
    Py_VISIT(self->next_on_ending);
    Py_VISIT(self->by_gid);
    Py_VISIT(self->next_on_start);
    Py_VISIT(self->next_on_end);
    Py_VISIT(self->overflowed);
    Py_VISIT(self->failed);
    Py_VISIT(self->wake);
    Py_VISIT(self->live_end);
    Py_VISIT(self->with_figures);
    Py_VISIT(self->note_thread);
    return 0;
}

static int sp_clear(SpanPath *self)
{
    Py_CLEAR(self->groups);
    Py_CLEAR(self->holders);
    Py_CLEAR(self->open);
    Py_CLEAR(self->joined);
    Py_CLEAR(self->next_on_ending);
    Py_CLEAR(self->by_gid);
    Py_CLEAR(self->records);
    Py_CLEAR(self->next_on_start);
    Py_CLEAR(self->next_on_end);
    Py_CLEAR(self->overflowed);
    Py_CLEAR(self->failed);
    Py_CLEAR(self->wake);
    Py_CLEAR(self->live_end);
    Py_CLEAR(self->with_figures);
    Py_CLEAR(self->note_thread);
    return 0;
}

static void sp_dealloc(SpanPath *self)
{
    PyObject_GC_UnTrack(self);
    sp_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *sp_get_shutdown(SpanPath *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->shutdown);
}

static int sp_set_shutdown(SpanPath *self, PyObject *value, void *Py_UNUSED(closure))
{
    int v = value != NULL ? PyObject_IsTrue(value) : -1;
    if (v < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "cannot delete shutdown");
        return -1;
    }
    self->shutdown = v;
    return 0;
}

static PyObject *sp_get_overflow_open(SpanPath *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLongLong(self->overflow_open);
}

static int sp_set_overflow_open(SpanPath *self, PyObject *value, void *Py_UNUSED(closure))
{
    long long v = value != NULL ? PyLong_AsLongLong(value) : -1;
    if (v == -1 && (value == NULL || PyErr_Occurred())) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "cannot delete overflow_open");
        return -1;
    }
    self->overflow_open = v;
    return 0;
}

static PyObject *sp_get_counter(SpanPath *self, void *closure)
{
    return PyLong_FromUnsignedLongLong(closure == NULL ? self->attributes_dropped
                                                       : self->attributes_unwritable);
}

static PyMethodDef sp_methods[] = {
    {"on_start", (PyCFunction)(void (*)(void))sp_on_start, METH_FASTCALL | METH_KEYWORDS,
     "Open the span's group (or join the one another processor opened), then pass the\n"
     "span on."},
    {"on_ending", (PyCFunction)sp_on_ending, METH_O,
     "The SDK's _on_ending: close the span's group, queue its record, add the alloc.*\n"
     "attributes to the span's own attributes, then pass the span on."},
    {"on_end", (PyCFunction)sp_on_end, METH_O,
     "Pass the span on; a span _on_ending did not end is ended here, and the wrapped\n"
     "processor gets a copy with the alloc.* attributes."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef sp_getset[] = {
    {"shutdown", (getter)sp_get_shutdown, (setter)sp_set_shutdown,
     "When true, new spans get no group.", NULL},
    {"overflow_open", (getter)sp_get_overflow_open, (setter)sp_set_overflow_open,
     "Open spans charged to the shared overflow group.", NULL},
    {"attributes_dropped", (getter)sp_get_counter, NULL,
     "alloc.* attributes not added: the span's attribute limit was reached.", NULL},
    {"attributes_unwritable", (getter)sp_get_counter, NULL,
     "Spans ended in _on_ending whose attributes are not the SDK's BoundedAttributes.",
     (void *)1},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject SpanPathType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "otel_alloc.otel._spanpath.SpanPath",
    .tp_doc = "AllocationSpanProcessor's on_start/_on_ending/on_end.",
    .tp_basicsize = sizeof(SpanPath),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = sp_new,
    .tp_dealloc = (destructor)sp_dealloc,
    .tp_traverse = (traverseproc)sp_traverse,
    .tp_clear = (inquiry)sp_clear,
    .tp_methods = sp_methods,
    .tp_getset = sp_getset,
};
