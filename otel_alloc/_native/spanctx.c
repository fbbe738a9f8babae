/*
 * otel_alloc._spanctx: the per-span path, in C (see spanctx.h for the files).
 *
 * OpenTelemetry makes a span current by attaching a Context (a dict holding
 * the span) to its runtime context, and detaches it at the end of the block.
 * FollowingContext stands in for that runtime context: it does what the
 * wrapped one does, then sets the tracker's group variable to the group of
 * the span now current (looked up in a dict span -> group id that the span
 * processor keeps) and tells the tracker the thread's group changed.
 *
 * This runs several times per span (the span's own attach/detach, and the
 * export processor's suppress-instrumentation attach/detach), so it is a C
 * type rather than Python: as Python it cost more per span than the
 * OpenTelemetry SDK's own span handling. It is a plain CPython extension
 * rather than part of the cffi module because its methods are called by
 * OpenTelemetry as Python methods, which cffi cannot provide, and because
 * cffi releases the GIL around every call.
 *
 * Everything here runs with the GIL held, outside the allocator hooks.
 */
#include "spanctx.h"

const oa_fastpath *g_fp;
sc_names g_names;

static int intern_names(void)
{
    struct {
        PyObject **slot;
        const char *text;
    } names[] = {
        {&g_names.span_id, "span_id"},
        {&g_names.trace_id, "trace_id"},
        {&g_names.field[SF_CONTEXT], "context"},
        {&g_names.field[SF_NAME], "name"},
        {&g_names.field[SF_PARENT], "parent"},
        {&g_names.field[SF_START_TIME], "start_time"},
        {&g_names.field[SF_END_TIME], "end_time"},
        {&g_names.private[SF_CONTEXT], "_context"},
        {&g_names.private[SF_NAME], "_name"},
        {&g_names.private[SF_PARENT], "_parent"},
        {&g_names.private[SF_START_TIME], "_start_time"},
        {&g_names.private[SF_END_TIME], "_end_time"},
        {&g_names.attributes, "_attributes"},
        {&g_names.dict, "_dict"},            {&g_names.on_start, "on_start"},
        {&g_names.on_end, "on_end"},         {&g_names.attr_keys[0], "alloc.bytes"},
        {&g_names.attr_keys[1], "alloc.count"},
        {&g_names.attr_keys[2], "alloc.inclusive_bytes"},
        {&g_names.attr_keys[3], "alloc.live_bytes"},
        {&g_names.attr_keys[4], "alloc.peak_bytes"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if ((*names[i].slot = PyUnicode_InternFromString(names[i].text)) == NULL)
            return -1;
    g_names.parent_context_kwnames = Py_BuildValue("(s)", "parent_context");
    return g_names.parent_context_kwnames != NULL ? 0 : -1;
}

int fastpath_ready(void)
{
    if (g_fp != NULL)
        return 1;
    PyErr_SetString(PyExc_RuntimeError, "otel_alloc._spanctx.bind() was not called");
    return 0;
}

/* ------------------------------------------------- module functions */

static PyObject *mod_bind(PyObject *Py_UNUSED(module), PyObject *arg)
{
    unsigned long long address = PyLong_AsUnsignedLongLong(arg);
    if (address == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    const oa_fastpath *fp = (const oa_fastpath *)(uintptr_t)address;
    if (fp == NULL || fp->version != OA_FASTPATH_VERSION) {
        PyErr_SetString(PyExc_ValueError, "not an otel_alloc fast-path table of this version");
        return NULL;
    }
    g_fp = fp;
    Py_RETURN_NONE;
}

static PyObject *mod_group_new(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    if (!fastpath_ready())
        return NULL;
    return PyLong_FromUnsignedLongLong(g_fp->group_new());
}

static PyMethodDef module_methods[] = {
    {"bind", mod_bind, METH_O, "Take the tracker's fast-path table (its address)."},
    {"group_new", mod_group_new, METH_NOARGS,
     "Open a group; the overflow group id when the table is full."},
    {"configure", (PyCFunction)(void (*)(void))sc_configure, METH_FASTCALL,
     "configure(readable_span_type, bounded_attributes_type[, span_type,\n"
     "span_context_type]): the SDK's exact types whose fields the span path may read,\n"
     "and whose attribute mapping it may write into, directly."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef spanctx_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "otel_alloc._spanctx",
    .m_doc = "The per-span path of otel_alloc: attribution on context changes, span groups,\n"
             "the queue of ended spans.",
    .m_size = -1,
    .m_methods = module_methods,
};

static int add_type(PyObject *m, const char *name, PyTypeObject *type)
{
    if (PyType_Ready(type) < 0)
        return -1;
    Py_INCREF(type);
    if (PyModule_AddObject(m, name, (PyObject *)type) < 0) {
        Py_DECREF(type);
        return -1;
    }
    return 0;
}

PyMODINIT_FUNC PyInit__spanctx(void)
{
    if (g_names.span_id == NULL && intern_names() < 0)
        return NULL;
    PyObject *m = PyModule_Create(&spanctx_module);
    if (m == NULL)
        return NULL;
    if (add_type(m, "FollowingContext", &FollowingContextType) < 0 ||
        add_type(m, "SpanRecords", &SpanRecordsType) < 0 ||
        add_type(m, "SpanPath", &SpanPathType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
