/*
 * The attribution context variable and the thread's current group
 * (see attribution.h).
 */
#include "attribution.h"

#include "../api/tracker_api.h"

PyObject *g_group_var;

PyObject *oa_group_var(void)
{
    if (g_group_var == NULL) {
        PyObject *zero = PyLong_FromLong(0);
        if (zero == NULL)
            return NULL;
        /* The default 0 is "no group". Reset only by oa_reset_group_var
           (attribution.h); Python code only sets it. */
        g_group_var = PyContextVar_New("otel_alloc.group", zero);
        Py_DECREF(zero);
    }
    return g_group_var;
}

void oa_set_thread_group(uint64_t group)
{
    /* The attribution cache answers for the group id it resolved, which is
       tls.gid while the cache is valid: a set that leaves the id as it was
       (a context with the same span, OpenTelemetry's suppress-instrumentation
       attach around an export) leaves the answer right. Anything else the
       cache depends on changes the context it is keyed on or the epoch. */
    if (group == tls.gid)
        return;
    tls.gid = group;
    tls.attr_epoch = 0; /* the context changed under the cache's feet */
}

int oa_reset_group_var(PyObject *token)
{
    PyObject *var = oa_group_var();
    if (var == NULL)
        return -1;
    /* A counter: a finalizer run by a collection inside the reset may
       reset again. */
    tls.resolve_hold++;
    int rc = PyContextVar_Reset(var, token);
    tls.resolve_hold--;
    PyObject *val = NULL;
    if (rc < 0 || PyContextVar_Get(var, NULL, &val) < 0) {
        tls.attr_epoch = 0; /* the cache may not vouch for what happened */
        return -1;
    }
    oa_set_thread_group(oa_gid_of_value(val));
    Py_XDECREF(val);
    return 0;
}

uint64_t oa_thread_group(void)
{
    return tls.gid;
}
