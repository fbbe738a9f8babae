/*
 * Which group an allocation is charged to: the group of the span current in
 * the running contextvars.Context, read from the tracker's context variable
 * (created here and published as `group_var` of the tracker's module,
 * api/capsule.c). Its value is a group id (an int), or a binding: a 2-tuple
 * (group id, payload) whose payload the hooks never touch (the OTel
 * runtime-context stand-in keeps the current Context there, see
 * spans/context_follower.c).
 *
 * MEM/OBJ hooks resolve it (the GIL is held there): PyContextVar_Get reads a
 * per-variable cache or the context's HAMT and allocates nothing, and the
 * result is cached per thread until the thread's context changes (the
 * attribution cache in tls.h, checked by account.h's attr_current). RAW hooks
 * may run without the GIL or a thread state: they reuse the group the
 * thread's last MEM/OBJ hook resolved.
 *
 * Resetting the variable to "no value" deletes it from the context, and
 * CPython's delete clears the variable's cache before it allocates the new
 * HAMT: a PyContextVar_Get from a hook during that allocation would cache
 * the value being deleted (a borrowed reference the context is about to
 * drop). So the variable is reset only by oa_reset_group_var, during which
 * the hooks reuse tls.gid and cache nothing; Python code only ever sets it
 * (otel_alloc.tracker.groups).
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

/* ContextVar.reset(token) of the group variable, safely (see above), then
   the value it leaves becomes the thread's group. 0, or -1 with an
   exception set. GIL held. */
int oa_reset_group_var(PyObject *token);

/* The group id a value of the group variable stands for: an int, or a
   binding (id, payload). 0 for anything else. Allocates nothing. */
static inline uint64_t oa_gid_of_value(PyObject *val)
{
    if (val == NULL)
        return 0;
    if (PyTuple_CheckExact(val) && PyTuple_GET_SIZE(val) == 2)
        val = PyTuple_GET_ITEM(val, 0); /* a binding */
    return PyLong_CheckExact(val) ? (uint64_t)PyLong_AsUnsignedLongLongMask(val) : 0;
}

/* Group of the running context in thread state `ts` (OA_TSTATE(), read by
   the caller), also left in tls.gid for RAW hooks. Only from MEM/OBJ hooks:
   the GIL is held, so that thread state is this thread's. */
static inline uint64_t resolve_gid(PyThreadState *ts)
{
    PyObject *var = g_group_var;
    if (var == NULL || ts == NULL || tls.resolve_hold)
        return tls.gid;
    PyObject *val = NULL;
    if (PyContextVar_Get(var, NULL, &val) < 0) {
        /* Cannot happen for a real ContextVar; never leave an error set. */
        PyErr_Clear();
        return tls.gid;
    }
    uint64_t gid = oa_gid_of_value(val);
    /* The context still holds val, so this never deallocates. */
    Py_XDECREF(val);
    tls.gid = gid;
    return gid;
}

#pragma GCC visibility pop

#endif
