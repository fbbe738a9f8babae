/*
 * Which group an allocation is charged to: the group of the span current in
 * the running contextvars.Context, read from the tracker's context variable
 * (a ContextVar[int] holding a group id, created here and published as
 * `group_var` of the tracker's module, api/capsule.c).
 *
 * MEM/OBJ hooks resolve it (the GIL is held there): PyContextVar_Get reads a
 * per-variable cache or the context's HAMT and allocates nothing, and the
 * result is cached per thread until the thread's context changes (the
 * attribution cache in tls.h, checked by account.h's attr_current). RAW hooks
 * may run without the GIL or a thread state: they reuse the group the
 * thread's last MEM/OBJ hook resolved.
 */
#ifndef OA_ATTRIBUTION_H
#define OA_ATTRIBUTION_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>

#include "../compat/thread_state.h"
#include "tls.h"

#pragma GCC visibility push(hidden)

/* Strong reference, created once under the GIL and never released: a hook
   may read it at any time after install. */
extern PyObject *g_group_var;

/* The context variable, created on the first call (GIL held); NULL with an
   exception set when it cannot be created. */
PyObject *oa_group_var(void);

void oa_set_thread_group(uint64_t group);

/* Group of the running context in thread state `ts` (OA_TSTATE(), read by
   the caller), also left in tls.gid for RAW hooks. Only from MEM/OBJ hooks:
   the GIL is held, so that thread state is this thread's. */
static inline uint64_t resolve_gid(PyThreadState *ts)
{
    PyObject *var = g_group_var;
    if (var == NULL || ts == NULL)
        return tls.gid;
    PyObject *val = NULL;
    if (PyContextVar_Get(var, NULL, &val) < 0) {
        /* Cannot happen for a real ContextVar; never leave an error set. */
        PyErr_Clear();
        return tls.gid;
    }
    uint64_t gid = 0;
    if (val != NULL) {
        if (PyLong_CheckExact(val))
            gid = (uint64_t)PyLong_AsUnsignedLongLongMask(val);
        /* The context still holds val, so this never deallocates. */
        Py_DECREF(val);
    }
    tls.gid = gid;
    return gid;
}

#pragma GCC visibility pop

#endif
