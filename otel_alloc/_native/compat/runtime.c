/*
 * 3.10 and 3.11: where the interpreter keeps the GIL holder's thread state.
 *
 * There, _PyThreadState_UncheckedGet is an exported function that loads one
 * atomic pointer, _PyRuntime.gilstate.tstate_current; the MEM/OBJ hooks
 * called it through the PLT on every allocation and free (about seven
 * instructions a call with the register spills around it, a tenth of the
 * counting hook). The hooks load the pointer themselves through
 * oa_tstate_current (thread_state.h), whose address needs the runtime's
 * internal layout: Py_BUILD_CORE is confined to this file. From 3.12 the
 * current thread state is a thread-local of the interpreter's, read through
 * its address (compat/tstate_slot.c).
 */
#define Py_BUILD_CORE 1
#include <Python.h>

#include "thread_state.h"

#if !OA_TSTATE_BY_SLOT
#include "internal/pycore_runtime.h"

/* The same relaxed load _PyRuntimeState_GetThreadState does. */
_Atomic(uintptr_t) *const oa_tstate_current =
    (_Atomic(uintptr_t) *)(void *)&_PyRuntime.gilstate.tstate_current._value;
#endif
