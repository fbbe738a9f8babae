/*
 * The thread-state fields the MEM/OBJ hooks read, per CPython version.
 *
 * With frames.c, runtime.c, tstate_slot.c and long_value.h this is the only
 * place that reads CPython internals: a new CPython version changes these
 * files and nothing else.
 *
 *   OA_TSTATE()            the calling thread's state, NULL when it has none,
 *                          without the fatal error PyThreadState_Get raises
 *   oa_ts_context_ver(ts)  a number CPython changes whenever the thread enters
 *                          or leaves a context (Context.run, asyncio steps)
 *   oa_ts_id(ts)           the thread state's unique id (thread states are
 *                          reused at the same address)
 *   oa_ts_interp(ts)       the interpreter the thread state belongs to
 *
 * Together they key the hooks' per-thread cache of the current group, as
 * they key CPython's own ContextVar cache: a switch to another context
 * changes the version, so the cached group is never read for another
 * context.
 */
#ifndef OA_COMPAT_THREAD_STATE_H
#define OA_COMPAT_THREAD_STATE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>

#if PY_VERSION_HEX >= 0x030C0000
/* 3.12+: the interpreter's thread-local, read through its address, which
   each thread finds on its first hook (compat/tstate_slot.c); NULL there
   when it cannot be found, and the API is called. */
#define OA_TSTATE_BY_SLOT 1
#pragma GCC visibility push(hidden)
extern __thread PyThreadState **oa_tstate_slot __attribute__((tls_model("initial-exec")));
/* Under the GIL, before the hooks go in: finds the variable from the API's
   code and checks it against the API. 1 when the hooks will read it. */
int oa_tstate_slot_init(void);
int oa_tstate_slot_found(void);
/* A thread's first read: finds its address (or calls the API). */
PyThreadState *oa_tstate_first(void);
#pragma GCC visibility pop
static inline PyThreadState *oa_tstate(void)
{
    PyThreadState **slot = oa_tstate_slot;
    if (__builtin_expect(slot != NULL, 1))
        return *slot;
    return oa_tstate_first();
}
#define OA_TSTATE() oa_tstate()
#else
/* 3.10, 3.11: the pointer _PyThreadState_UncheckedGet loads, read without
   the call (compat/runtime.c). */
#include <stdatomic.h>
#include <stdint.h>
#define OA_TSTATE_BY_SLOT 0
extern _Atomic(uintptr_t) *const oa_tstate_current __attribute__((visibility("hidden")));
#define OA_TSTATE()                                                                        \
    ((PyThreadState *)atomic_load_explicit(oa_tstate_current, memory_order_relaxed))
#endif

/* Whether a hook that may run without the GIL (RAW) can read the calling
   thread's own state: from 3.12 the current thread state is a true
   thread-local. Before, OA_TSTATE() is the GIL holder's, which may be another
   thread's state being freed meanwhile (ThreadSanitizer saw exactly that):
   RAW hooks there reuse what the thread's last MEM/OBJ hook found. */
#if PY_VERSION_HEX >= 0x030C0000
#define OA_TSTATE_WITHOUT_GIL 1
#else
#define OA_TSTATE_WITHOUT_GIL 0
#endif

/* The calling thread's state when the thread holds the GIL, else NULL, from
   code that may run without it (the native hooks). From 3.12 a thread state
   is attached exactly while its thread holds the GIL. Before, OA_TSTATE() is
   the holder's: it is this thread's own state only when this thread holds
   it (the pointers are only compared, never read). PyGILState_Check is not
   used: it answers 1 for every thread once a subinterpreter exists. A
   subinterpreter with a GIL of its own counts: the caller checks the
   interpreter where it matters. */
static inline PyThreadState *oa_gil_tstate(void)
{
#if OA_TSTATE_WITHOUT_GIL
    return OA_TSTATE();
#else
    PyThreadState *own = PyGILState_GetThisThreadState();
    return own != NULL && OA_TSTATE() == own ? own : NULL;
#endif
}

/* Whether the calling thread holds the GIL (see oa_gil_tstate). */
static inline int oa_holds_gil(void)
{
    return oa_gil_tstate() != NULL;
}

/* 3.10 to 3.15: public fields of struct _ts (cpython/pystate.h). */
static inline PyInterpreterState *oa_ts_interp(PyThreadState *ts)
{
    return ts->interp;
}

static inline uint64_t oa_ts_context_ver(PyThreadState *ts)
{
    return (uint64_t)ts->context_ver;
}

static inline uint64_t oa_ts_id(PyThreadState *ts)
{
    return (uint64_t)ts->id;
}

#endif
