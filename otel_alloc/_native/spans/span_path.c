/*
 * SpanPath: AllocationSpanProcessor's on_start and on_end, in C.
 *
 * They run for every span. The processor (Python) keeps everything else and
 * installs these two bound methods on itself; rare paths call back into it
 * (a full group table, large-allocation events waiting, live-mode
 * retention, spans of another shape than the SDK's). Nothing here raises
 * out of on_start/on_end: errors go to the processor's `failed` callback.
 */
#include "spans.h"

#include "../api/tracker_api.h"

#define UNTRACKED (-1)

typedef struct {
    PyObject_HEAD
    PyObject *groups;  /* dict: span -> group id (read by ContextFollower) */
    PyObject *open;    /* dict: span id -> span */
    PyObject *by_gid;  /* dict: group id -> span */
    PyObject *records; /* SpanRecords */
    PyObject *next_on_start, *next_on_end; /* bound methods of the wrapped processor, or NULL */
    PyObject *overflowed;  /* () -> int: group id after the table was full, or -1 */
    PyObject *failed;      /* (where: str, error: BaseException) -> None */
    PyObject *wake;        /* () -> None: large-allocation events are waiting */
    PyObject *live_end;    /* (span, span_context, gid, figures) -> None: a kept group */
    PyObject *with_figures; /* (span, figures, live) -> span, for other span shapes */
    PyObject *note_thread; /* () -> None, or NULL */
    int live;
    long long keep_from; /* keep a group still holding this many live bytes (live mode); -1: never */
    int shutdown;
    long long overflow_open;
    uint64_t serial; /* for the per-thread "thread noted" mark */
} SpanPath;

static uint64_t g_serial;
static _Thread_local uint64_t tl_noted;

/* Hand the pending exception to the processor's `failed` callback. */
static void failed(SpanPath *self, const char *where)
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

/* Removes `key` from dict `d`; new reference to its value, or NULL (error set
   only on a real failure). */
static PyObject *dict_pop(PyObject *d, PyObject *key)
{
    PyObject *v = PyDict_GetItemWithError(d, key);
    if (v == NULL)
        return NULL;
    Py_INCREF(v);
    if (PyDict_DelItem(d, key) < 0) {
        Py_DECREF(v);
        return NULL;
    }
    return v;
}

/* --------------------------------------------------------------- on_start */

static int open_group(SpanPath *self, PyObject *span)
{
    uint64_t gid = g_tracker->group_new();
    PyObject *gid_obj;
    if (gid == OA_GROUP_OVERFLOW) {
        gid_obj = PyObject_CallNoArgs(self->overflowed);
        if (gid_obj == NULL)
            return -1;
        long long v = PyLong_AsLongLong(gid_obj);
        if (v == -1 && PyErr_Occurred()) {
            Py_DECREF(gid_obj);
            return -1;
        }
        if (v == UNTRACKED) {
            Py_DECREF(gid_obj);
            return 0;
        }
        gid = (uint64_t)v;
    } else {
        gid_obj = PyLong_FromUnsignedLongLong(gid);
        if (gid_obj == NULL)
            return -1;
    }
    int rc = -1;
    PyObject *ctx = span_field(span, SF_CONTEXT);
    PyObject *sid = ctx != NULL ? context_id(ctx, 1) : NULL;
    if (sid == NULL)
        goto done;
    if (gid != OA_GROUP_OVERFLOW && PyDict_SetItem(self->by_gid, gid_obj, span) < 0)
        goto done;
    /* Read by ContextFollower on attach: the span's allocations go to its
       group from its first attach on. */
    if (PyDict_SetItem(self->groups, span, gid_obj) < 0 ||
        PyDict_SetItem(self->open, sid, span) < 0)
        goto done;
    rc = 0;
done:
    Py_XDECREF(sid);
    Py_XDECREF(ctx);
    Py_DECREF(gid_obj);
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
            failed(self, "on_start");
        if (self->note_thread != NULL && tl_noted != self->serial) {
            PyObject *r = PyObject_CallNoArgs(self->note_thread);
            if (r == NULL)
                failed(self, "on_start");
            else
                tl_noted = self->serial;
            Py_XDECREF(r);
        }
    }
    if (self->next_on_start != NULL) {
        PyObject *call_args[2] = {span, parent_context};
        PyObject *r = PyObject_Vectorcall(self->next_on_start, call_args, 1, g_names.parent_context_kwnames);
        if (r == NULL)
            failed(self, "wrapped on_start");
        Py_XDECREF(r);
    }
    Py_RETURN_NONE;
}

/* ----------------------------------------------------------------- on_end */

/* Group id of the open parent of `span`, 0 when none. */
static uint64_t parent_group(SpanPath *self, PyObject *span)
{
    uint64_t pgid = 0;
    PyObject *parent = span_field(span, SF_PARENT);
    if (parent == NULL || parent == Py_None)
        goto done;
    PyObject *psid = context_id(parent, 1);
    if (psid == NULL)
        goto done;
    PyObject *pspan = PyDict_GetItemWithError(self->open, psid); /* borrowed */
    Py_DECREF(psid);
    if (pspan == NULL)
        goto done;
    PyObject *g = PyDict_GetItemWithError(self->groups, pspan); /* borrowed */
    if (g != NULL)
        pgid = PyLong_AsUnsignedLongLongMask(g);
done:
    Py_XDECREF(parent);
    if (PyErr_Occurred())
        PyErr_Clear(); /* a parent we cannot read just gets nothing */
    return pgid;
}

/* The span-end path; a new reference to the span to pass on, or NULL. */
static PyObject *end_span(SpanPath *self, PyObject *span)
{
    PyObject *out = NULL, *ctx = NULL, *sid = NULL, *started = NULL, *gid_obj = NULL;
    ctx = span_field(span, SF_CONTEXT);
    if (ctx == NULL)
        goto done;
    if (ctx == Py_None)
        goto pass;
    sid = context_id(ctx, 1);
    if (sid == NULL)
        goto done;
    started = dict_pop(self->open, sid);
    if (started == NULL) {
        if (PyErr_Occurred())
            goto done;
        goto pass; /* reclaimed, or started before this processor */
    }
    gid_obj = dict_pop(self->groups, started);
    if (gid_obj == NULL) {
        if (PyErr_Occurred())
            goto done;
        goto pass;
    }
    uint64_t gid = PyLong_AsUnsignedLongLongMask(gid_obj);
    if (gid == OA_GROUP_OVERFLOW) {
        self->overflow_open--;
        goto pass; /* charged to the overflow group; counted natively */
    }
    uint64_t pgid = parent_group(self, span);
    oa_span_figures f;
    int attrs_set;
    /* Closes the group first: from here on, work done while the ended span
       is still current (ours, the SDK's, the exporter's) is charged to no
       group. Queues the record before the span leaves by_gid (see
       SpanWatch.span_of). */
    int rc = span_end_core(self->records, gid, pgid, self->live, self->keep_from, span, ctx,
                           self->next_on_end != NULL, &f, &attrs_set);
    PyObject *gone = dict_pop(self->by_gid, gid_obj);
    Py_XDECREF(gone);
    if (PyErr_Occurred())
        goto done;
    if (rc != 0)
        goto pass;
    if (f.events_pending) {
        PyObject *r = PyObject_CallNoArgs(self->wake);
        if (r == NULL)
            goto done;
        Py_DECREF(r);
    }
    int kept = !f.released;
    if (kept || (self->next_on_end != NULL && !attrs_set)) {
        PyObject *figures = figures_tuple(&f, attrs_set);
        if (figures == NULL)
            goto done;
        if (kept) {
            PyObject *args[4] = {span, ctx, gid_obj, figures};
            PyObject *r = PyObject_Vectorcall(self->live_end, args, 4, NULL);
            if (r == NULL) {
                Py_DECREF(figures);
                goto done;
            }
            Py_DECREF(r);
        }
        if (self->next_on_end != NULL && !attrs_set) {
            PyObject *args[3] = {span, figures, self->live ? Py_True : Py_False};
            out = PyObject_Vectorcall(self->with_figures, args, 3, NULL);
            Py_DECREF(figures);
            goto done;
        }
        Py_DECREF(figures);
    }
pass:
    out = Py_NewRef(span);
done:
    Py_XDECREF(gid_obj);
    Py_XDECREF(started);
    Py_XDECREF(sid);
    Py_XDECREF(ctx);
    return out;
}

static PyObject *sp_on_end(SpanPath *self, PyObject *span)
{
    PyObject *out = g_tracker != NULL ? end_span(self, span) : Py_NewRef(span);
    if (out == NULL) {
        failed(self, "on_end");
        out = Py_NewRef(span);
    }
    if (self->next_on_end != NULL) {
        PyObject *r = PyObject_CallOneArg(self->next_on_end, out);
        if (r == NULL)
            failed(self, "wrapped on_end");
        Py_XDECREF(r);
    }
    Py_DECREF(out);
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
    static char *kwlist[] = {"groups", "open", "by_gid", "records", "next", "live",
                             "overflowed", "failed", "wake", "live_end", "with_figures",
                             "note_thread", "keep_from", NULL};
    PyObject *groups, *open, *by_gid, *records, *next, *overflowed, *failed_cb, *wake,
        *live_end, *with_figures, *note_thread;
    int live;
    long long keep_from = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O!O!O!OpOOOOOO|L:SpanPath", kwlist,
                                     &PyDict_Type, &groups, &PyDict_Type, &open, &PyDict_Type,
                                     &by_gid, &SpanRecordsType, &records, &next, &live,
                                     &overflowed, &failed_cb, &wake, &live_end, &with_figures,
                                     &note_thread, &keep_from))
        return NULL;
    if (!PyCallable_Check(overflowed) || !PyCallable_Check(failed_cb) ||
        !PyCallable_Check(wake) || !PyCallable_Check(live_end) ||
        !PyCallable_Check(with_figures)) {
        PyErr_SetString(PyExc_TypeError, "SpanPath callbacks must be callable");
        return NULL;
    }
    SpanPath *self = (SpanPath *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->groups = Py_NewRef(groups);
    self->open = Py_NewRef(open);
    self->by_gid = Py_NewRef(by_gid);
    self->records = Py_NewRef(records);
    self->overflowed = Py_NewRef(overflowed);
    self->failed = Py_NewRef(failed_cb);
    self->wake = Py_NewRef(wake);
    self->live_end = Py_NewRef(live_end);
    self->with_figures = Py_NewRef(with_figures);
    self->live = live;
    self->keep_from = live && keep_from >= 0 ? keep_from : -1;
    self->serial = ++g_serial;
    self->note_thread = optional_callable(note_thread, "note_thread");
    if (self->note_thread == NULL && PyErr_Occurred())
        goto fail;
    if (next != Py_None) {
        self->next_on_start = PyObject_GetAttr(next, g_names.on_start);
        self->next_on_end = self->next_on_start ? PyObject_GetAttr(next, g_names.on_end) : NULL;
        if (self->next_on_end == NULL)
            goto fail;
    }
    return (PyObject *)self;
fail:
    Py_DECREF(self);
    return NULL;
}

static int sp_traverse(SpanPath *self, visitproc visit, void *arg)
{
    Py_VISIT(self->groups);
    Py_VISIT(self->open);
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
    Py_CLEAR(self->open);
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

static PyMethodDef sp_methods[] = {
    {"on_start", (PyCFunction)(void (*)(void))sp_on_start, METH_FASTCALL | METH_KEYWORDS,
     "Open the span's group, then pass the span on."},
    {"on_end", (PyCFunction)sp_on_end, METH_O,
     "Close the span's group, queue its record, pass it on with attributes."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef sp_getset[] = {
    {"shutdown", (getter)sp_get_shutdown, (setter)sp_set_shutdown,
     "When true, new spans get no group.", NULL},
    {"overflow_open", (getter)sp_get_overflow_open, (setter)sp_set_overflow_open,
     "Open spans charged to the shared overflow group.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject SpanPathType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "otel_alloc.otel._spanpath.SpanPath",
    .tp_doc = "AllocationSpanProcessor's on_start/on_end.",
    .tp_basicsize = sizeof(SpanPath),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = sp_new,
    .tp_dealloc = (destructor)sp_dealloc,
    .tp_traverse = (traverseproc)sp_traverse,
    .tp_clear = (inquiry)sp_clear,
    .tp_methods = sp_methods,
    .tp_getset = sp_getset,
};
