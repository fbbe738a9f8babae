/*
 * otel_alloc.otel._spanpath: the per-span path, in C (see spans.h for the files).
 *
 * OpenTelemetry makes a span current by attaching a Context (a dict holding
 * the span) to its runtime context, and detaches it at the end of the block.
 * ContextFollower stands in for that runtime context: it does what the
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
#include "span_index.h"
#include "spans.h"

const oa_tracker_capi *g_tracker;
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
        {&g_names.dict, "_dict"},
        {&g_names.lock, "_lock"},
        {&g_names.maxlen, "maxlen"},
        {&g_names.dropped, "dropped"},
        {&g_names.acquire, "acquire"},
        {&g_names.release, "release"},
        {&g_names.locked, "locked"},
        {&g_names.attr_keys[0], "alloc.bytes"},
        {&g_names.attr_keys[1], "alloc.count"},
        {&g_names.attr_keys[2], "alloc.inclusive_bytes"},
        {&g_names.attr_keys[3], "alloc.live_bytes"},
        {&g_names.attr_keys[4], "alloc.peak_bytes"},
        {&g_names.attr_keys[5], "alloc.native_bytes"},
        {&g_names.attr_keys[6], "alloc.live_bytes_estimate"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if ((*names[i].slot = PyUnicode_InternFromString(names[i].text)) == NULL)
            return -1;
    g_names.parent_context_kwnames = Py_BuildValue("(s)", "parent_context");
    g_names.missing = PyObject_CallNoArgs((PyObject *)&PyBaseObject_Type);
    return g_names.parent_context_kwnames != NULL && g_names.missing != NULL ? 0 : -1;
}

/* The tracker's C API, from the capsule its compiled module publishes when
   otel_alloc.tracker._binding loads it (api/tracker_capi.h). The capsule's
   name, the table's version and its size are all checked: a mismatched
   build fails the import with a message instead of calling through a table
   of another shape. */
static int import_tracker(void)
{
    PyObject *binding = PyImport_ImportModule("otel_alloc.tracker._binding");
    if (binding == NULL)
        return -1;
    Py_DECREF(binding);
    const oa_tracker_capi *api = PyCapsule_Import(OA_TRACKER_CAPI_NAME, 0);
    if (api == NULL)
        return -1;
    if (api->version != OA_TRACKER_CAPI_VERSION || api->size < sizeof(oa_tracker_capi)) {
        PyErr_Format(PyExc_ImportError,
                     "otel_alloc: the tracker's C API is version %u (%zu bytes); this span path "
                     "needs version %d (%zu bytes): reinstall otel_alloc",
                     api->version, api->size, OA_TRACKER_CAPI_VERSION, sizeof(oa_tracker_capi));
        return -1;
    }
    g_tracker = api;
    return 0;
}

/* ------------------------------------------------- module functions */

static PyObject *mod_group_new(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromUnsignedLongLong(g_tracker->group_new());
}

static PyMethodDef module_methods[] = {
    {"group_new", mod_group_new, METH_NOARGS,
     "Open a group; the overflow group id when the table is full."},
    {"configure", (PyCFunction)(void (*)(void))sc_configure, METH_FASTCALL,
     "configure(readable_span_type, bounded_attributes_type[, span_type,\n"
     "span_context_type]): the SDK's exact types whose fields the span path may read,\n"
     "and whose attribute mapping it may write into, directly."},
    {NULL, NULL, 0, NULL},
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

static int spanpath_exec(PyObject *m)
{
    if (g_tracker == NULL && import_tracker() < 0)
        return -1;
    if (g_names.span_id == NULL && intern_names() < 0)
        return -1;
    if (add_type(m, "ContextFollower", &ContextFollowerType) < 0 ||
        add_type(m, "SpanRecords", &SpanRecordsType) < 0 ||
        add_type(m, "SpanPath", &SpanPathType) < 0 ||
        add_type(m, "SpanIndex", &SpanIndexType) < 0)
        return -1;
    return 0;
}

/* Multi-phase init, with what the module honestly supports declared:
   - one interpreter only: its types are static and its state (the
     tracker's C API, interned names, the SDK types) is process-wide, and the
     tracker tracks only the main interpreter;
   - it needs the GIL: SpanRecords, SpanPath and the follower change their
     state without locks of their own. otel_alloc refuses free-threaded
     builds before any of its extensions is imported
     (otel_alloc.tracker.errors), so this never turns the GIL back on. */
static PyModuleDef_Slot spanpath_slots[] = {
    {Py_mod_exec, spanpath_exec},
#if PY_VERSION_HEX >= 0x030C0000
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED},
#endif
#if PY_VERSION_HEX >= 0x030D0000
    {Py_mod_gil, Py_MOD_GIL_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef spanpath_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "otel_alloc.otel._spanpath",
    .m_doc = "The per-span path of otel_alloc: attribution on context changes, span groups,\n"
             "the queue of ended spans.",
    .m_size = 0,
    .m_methods = module_methods,
    .m_slots = spanpath_slots,
};

PyMODINIT_FUNC PyInit__spanpath(void)
{
    return PyModuleDef_Init(&spanpath_module);
}
