/*
 * ContextFollower: stands in for OpenTelemetry's runtime context and keeps
 * the tracker's group variable equal to the group of the current span.
 *
 * When the wrapped runtime context is OpenTelemetry's own (a ContextVar of
 * Contexts), the stand-in keeps the current Context in the tracker's group
 * variable itself, as a binding (group id, Context): one ContextVar set per
 * attach and one reset per detach (the tracker's, which may delete the
 * variable safely), where keeping two variables in step cost two of each,
 * a lookup of the restored span's group on every detach, and (since the
 * group variable could never be deleted) a HAMT copy where OpenTelemetry's
 * own reset deletes. The tracker's hooks read the id out of the binding
 * (core/attribution.h); get_current reads the Context. OpenTelemetry's own
 * variable keeps what it held when the stand-in went in, which is still
 * what is current wherever the group variable holds no binding.
 */
#include "span_index.h"

typedef struct {
    PyObject_HEAD
    PyObject *inner;        /* the runtime context being wrapped */
    PyObject *context_var;  /* its ContextVar when it is OTel's ContextVarsRuntimeContext */
    PyObject *inner_attach; /* its bound methods, used when context_var is NULL */
    PyObject *inner_detach;
    PyObject *inner_get;
    PyObject *span_key;     /* key of the current span in an OTel Context, or NULL */
    PyObject *span_getter;  /* callable(context) -> span, used when span_key is NULL */
    SpanIndex *groups;      /* by identity: span -> group id (int) */
    PyObject *group_var;    /* the tracker's group variable */
    PyObject *zero;
    unsigned long long errors;
} ContextFollower;

/* The group id of the span current in `context` (new reference). */
static PyObject *group_of(ContextFollower *self, PyObject *context)
{
    PyObject *span;
    if (self->span_key != NULL && PyDict_Check(context)) {
        span = PyDict_GetItemWithError(context, self->span_key);
        if (span == NULL) {
            if (PyErr_Occurred())
                return NULL;
            return Py_NewRef(self->zero);
        }
        Py_INCREF(span);
    } else {
        span = PyObject_CallOneArg(self->span_getter, context);
        if (span == NULL)
            return NULL;
    }
    PyObject *gid = si_get(self->groups, si_identity(span)); /* borrowed */
    Py_DECREF(span);
    return Py_NewRef(gid != NULL ? gid : self->zero);
}

/* The group id a value of the group variable stands for: an int, or a
   binding (group id, Context) (borrowed reference). */
static PyObject *gid_of_value(ContextFollower *self, PyObject *value)
{
    if (value != NULL && PyTuple_CheckExact(value) && PyTuple_GET_SIZE(value) == 2)
        value = PyTuple_GET_ITEM(value, 0);
    return value != NULL && PyLong_CheckExact(value) ? value : self->zero;
}

static void set_thread_group(PyObject *gid)
{
    unsigned long long value = oa_long_u64_mask(gid);
    if (value == (unsigned long long)-1 && PyErr_Occurred())
        PyErr_Clear();
    else
        g_tracker->set_thread_group((uint64_t)value);
}

/* Other runtime contexts: make the group of `context`'s span the running
   context's group, a plain id in the group variable. Errors are counted and
   cleared: attribution must never break the app's tracing. */
static void follow(ContextFollower *self, PyObject *context)
{
    PyObject *gid = group_of(self, context);
    if (gid == NULL)
        goto failed;
    PyObject *cur = NULL;
    if (PyContextVar_Get(self->group_var, NULL, &cur) < 0) {
        Py_DECREF(gid);
        goto failed;
    }
    PyObject *cur_gid = gid_of_value(self, cur);
    int same = cur_gid == gid ||
               oa_long_u64_mask(cur_gid) == oa_long_u64_mask(gid);
    Py_XDECREF(cur);
    if (!same) {
        /* A set, never a reset: the token is dropped (see
           otel_alloc.tracker.groups). */
        PyObject *token = PyContextVar_Set(self->group_var, gid);
        if (token == NULL) {
            Py_DECREF(gid);
            goto failed;
        }
        Py_DECREF(token);
        set_thread_group(gid);
    }
    Py_DECREF(gid);
    return;
failed:
    self->errors++;
    PyErr_Clear();
}

/* A binding (group id of context's span, context) set in the group
   variable: the token of the set, or NULL with an error set. */
static PyObject *set_binding(ContextFollower *self, PyObject *context)
{
    PyObject *gid = group_of(self, context);
    if (gid == NULL) {
        self->errors++; /* attribution must never break the app's tracing */
        PyErr_Clear();
        gid = Py_NewRef(self->zero);
    }
    /* PyTuple_Pack's varargs walk was six code lines of the interpreter a
       span that nothing else of the span's path runs. */
    PyObject *binding = PyTuple_New(2);
    if (binding == NULL) {
        Py_DECREF(gid);
        return NULL;
    }
    PyTuple_SET_ITEM(binding, 0, Py_NewRef(gid));
    PyTuple_SET_ITEM(binding, 1, Py_NewRef(context));
    PyObject *token = PyContextVar_Set(self->group_var, binding);
    Py_DECREF(binding);
    if (token != NULL)
        set_thread_group(gid);
    Py_DECREF(gid);
    return token;
}

static PyObject *fc_attach(ContextFollower *self, PyObject *context)
{
    if (self->context_var != NULL)
        return set_binding(self, context); /* fc_detach resets it with the token */
    PyObject *token = PyObject_CallOneArg(self->inner_attach, context);
    if (token == NULL)
        return NULL;
    follow(self, context);
    return token;
}

static PyObject *current(ContextFollower *self)
{
    if (self->context_var == NULL)
        return PyObject_CallNoArgs(self->inner_get);
    PyObject *value = NULL;
    if (PyContextVar_Get(self->group_var, NULL, &value) < 0)
        return NULL;
    if (value != NULL && PyTuple_CheckExact(value) && PyTuple_GET_SIZE(value) == 2) {
        PyObject *ctx = Py_NewRef(PyTuple_GET_ITEM(value, 1));
        Py_DECREF(value);
        return ctx;
    }
    Py_XDECREF(value);
    /* No binding here (nothing was attached in this context since the
       stand-in went in, or a group was entered before anything was):
       OpenTelemetry's variable still says what is current. */
    PyObject *ctx = NULL;
    if (PyContextVar_Get(self->context_var, NULL, &ctx) < 0)
        return NULL;
    if (ctx == NULL) /* OTel's variable has a default; a stand-in never should */
        PyErr_SetString(PyExc_LookupError, "runtime context variable has no value");
    return ctx;
}

static PyObject *fc_get_current(ContextFollower *self, PyObject *Py_UNUSED(ignored))
{
    return current(self);
}

/* A token the group variable refused: one of OpenTelemetry's variable,
   from an attach before the stand-in went in, resets that variable (what
   OpenTelemetry's runtime context would do). Its span started before any
   allocation processor, so it has no group to follow. Otherwise the group
   variable's error stands. */
static PyObject *reset_earlier(ContextFollower *self, PyObject *token)
{
    if (!PyErr_ExceptionMatches(PyExc_ValueError))
        return NULL;
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (PyContextVar_Reset(self->context_var, token) < 0) {
        PyErr_Clear();
        PyErr_Restore(type, value, tb);
        return NULL;
    }
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    Py_RETURN_NONE;
}

static PyObject *fc_detach(ContextFollower *self, PyObject *token)
{
    if (self->context_var != NULL) {
        /* Through the tracker: a reset may delete the variable (a token
           from the first set in this context), which the hooks must not
           read meanwhile (core/attribution.h). */
        if (g_tracker->reset_group_var(token) < 0)
            return reset_earlier(self, token);
        Py_RETURN_NONE;
    }
    PyObject *res = PyObject_CallOneArg(self->inner_detach, token);
    if (res == NULL)
        return NULL;
    Py_DECREF(res);
    PyObject *ctx = current(self);
    if (ctx == NULL) {
        self->errors++;
        PyErr_Clear();
    } else {
        follow(self, ctx);
        Py_DECREF(ctx);
    }
    Py_RETURN_NONE;
}

static PyObject *fc_follow_current(ContextFollower *self, PyObject *Py_UNUSED(ignored))
{
    /* A plain id, not a binding: a token from before the stand-in went in
       may still reset OpenTelemetry's variable (fc_detach), and what is
       current must then be read from there again. */
    PyObject *ctx = current(self);
    if (ctx == NULL)
        return NULL;
    follow(self, ctx);
    Py_DECREF(ctx);
    Py_RETURN_NONE;
}

static PyObject *fc_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"inner", "context_var", "span_key", "span_getter", "groups",
                             "group_var", NULL};
    PyObject *inner, *context_var, *span_key, *span_getter, *groups, *group_var;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOO!O:ContextFollower", kwlist, &inner,
                                     &context_var, &span_key, &span_getter, &SpanIndexType,
                                     &groups, &group_var))
        return NULL;
    if (!((SpanIndex *)groups)->by_identity) {
        PyErr_SetString(PyExc_TypeError, "groups must be a SpanIndex(by_identity=True)");
        return NULL;
    }
    if (context_var != Py_None && !PyContextVar_CheckExact(context_var)) {
        PyErr_SetString(PyExc_TypeError, "context_var must be a ContextVar or None");
        return NULL;
    }
    if (!PyContextVar_CheckExact(group_var)) {
        PyErr_SetString(PyExc_TypeError, "group_var must be a ContextVar");
        return NULL;
    }
    if (span_key != Py_None && !PyUnicode_CheckExact(span_key)) {
        PyErr_SetString(PyExc_TypeError, "span_key must be a str or None");
        return NULL;
    }
    if (span_key == Py_None && !PyCallable_Check(span_getter)) {
        PyErr_SetString(PyExc_TypeError, "span_getter must be callable when span_key is None");
        return NULL;
    }
    ContextFollower *self = (ContextFollower *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->inner = Py_NewRef(inner);
    self->context_var = context_var == Py_None ? NULL : Py_NewRef(context_var);
    self->span_key = span_key == Py_None ? NULL : Py_NewRef(span_key);
    self->span_getter = Py_NewRef(span_getter);
    self->groups = (SpanIndex *)Py_NewRef(groups);
    self->group_var = Py_NewRef(group_var);
    self->zero = PyLong_FromLong(0);
    self->inner_attach = PyObject_GetAttrString(inner, "attach");
    self->inner_detach = self->inner_attach ? PyObject_GetAttrString(inner, "detach") : NULL;
    self->inner_get = self->inner_detach ? PyObject_GetAttrString(inner, "get_current") : NULL;
    if (self->zero == NULL || self->inner_get == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int fc_traverse(ContextFollower *self, visitproc visit, void *arg)
{
    Py_VISIT(self->inner);
    Py_VISIT(self->context_var);
    Py_VISIT(self->inner_attach);
    Py_VISIT(self->inner_detach);
    Py_VISIT(self->inner_get);
    Py_VISIT(self->span_getter);
    Py_VISIT(self->groups);
    Py_VISIT(self->group_var);
    return 0;
}

static int fc_clear(ContextFollower *self)
{
    Py_CLEAR(self->inner);
    Py_CLEAR(self->context_var);
    Py_CLEAR(self->inner_attach);
    Py_CLEAR(self->inner_detach);
    Py_CLEAR(self->inner_get);
    Py_CLEAR(self->span_key);
    Py_CLEAR(self->span_getter);
    Py_CLEAR(self->groups);
    Py_CLEAR(self->group_var);
    Py_CLEAR(self->zero);
    return 0;
}

static void fc_dealloc(ContextFollower *self)
{
    PyObject_GC_UnTrack(self);
    fc_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *fc_get_inner(ContextFollower *self, void *Py_UNUSED(closure))
{
    return Py_NewRef(self->inner);
}

static PyObject *fc_get_errors(ContextFollower *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong(self->errors);
}

static PyMethodDef fc_methods[] = {
    {"attach", (PyCFunction)fc_attach, METH_O,
     "Attach a Context (as the wrapped runtime context does) and follow its span's group."},
    {"detach", (PyCFunction)fc_detach, METH_O,
     "Detach with a token from attach and follow the restored context's span's group."},
    {"get_current", (PyCFunction)fc_get_current, METH_NOARGS, "The current Context."},
    {"follow_current", (PyCFunction)fc_follow_current, METH_NOARGS,
     "Make the group of the span current now the running context's group."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef fc_getset[] = {
    {"inner", (getter)fc_get_inner, NULL, "The wrapped runtime context.", NULL},
    {"errors", (getter)fc_get_errors, NULL, "Attribution lookups that failed (and were skipped).",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject ContextFollowerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "otel_alloc.otel._spanpath.ContextFollower",
    .tp_doc = "OpenTelemetry runtime context that keeps the tracker's group in step.",
    .tp_basicsize = sizeof(ContextFollower),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = fc_new,
    .tp_dealloc = (destructor)fc_dealloc,
    .tp_traverse = (traverseproc)fc_traverse,
    .tp_clear = (inquiry)fc_clear,
    .tp_methods = fc_methods,
    .tp_getset = fc_getset,
};

