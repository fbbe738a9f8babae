/*
 * What the tracker's compiled module publishes to other code at load:
 * the C API capsule (tracker_capi.h) and the attribution context variable.
 * Both become attributes of the module object, so Python code and the
 * span-path extension reach them by import, never by address.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "../accounting/groups.h"
#include "../core/attribution.h"
#include "tracker_api.h"
#include "tracker_capi.h"

static int group_counts(uint64_t gid, oa_group_counts *out)
{
    oa_stats st;
    int rc = oa_group_stats(gid, &st);
    out->alloc_bytes = st.alloc_bytes;
    out->alloc_count = st.alloc_count;
    out->freed_bytes = st.freed_bytes;
    out->freed_count = st.freed_count;
    return rc;
}

static const oa_tracker_capi g_capi = {
    .version = OA_TRACKER_CAPI_VERSION,
    .size = sizeof(oa_tracker_capi),
    .set_thread_group = oa_set_thread_group,
    .group_new = oa_group_new_gil_held,
    .span_end = oa_span_end,
    .span_read = oa_span_read,
    .group_counts = group_counts,
    .reset_group_var = oa_reset_group_var,
};

/* Set `name` on `module` to a new reference `value` (stolen). */
static int set_attr(PyObject *module, const char *name, PyObject *value)
{
    if (value == NULL)
        return -1;
    int rc = PyObject_SetAttrString(module, name, value);
    Py_DECREF(value);
    return rc;
}

int oa_publish(void)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    int rc = OA_ERR_NOMEM;
    PyObject *module = PyImport_ImportModule(OA_TRACKER_MODULE);
    if (module == NULL)
        goto done;
    PyObject *var = oa_group_var();
    if (var == NULL)
        goto done;
    if (set_attr(module, "group_var", Py_NewRef(var)) < 0 ||
        set_attr(module, "_C_API", PyCapsule_New((void *)&g_capi, OA_TRACKER_CAPI_NAME, NULL)) < 0)
        goto done;
    rc = OA_OK;
done:
    if (rc != OA_OK)
        PyErr_Clear(); /* cffi would only print it: the caller reports the code */
    Py_XDECREF(module);
    PyGILState_Release(gil);
    return rc;
}
