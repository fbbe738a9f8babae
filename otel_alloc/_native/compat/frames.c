/*
 * Stack walking for the sampler, one section per CPython version range.
 *
 * The public frame API (PyThreadState_GetFrame, PyFrame_GetBack) creates
 * frame objects on 3.11+, and a GC-tracked allocation inside an allocator
 * hook can start a collection that runs finalizers: Python code in the hook.
 * So, like tracemalloc, this reads the interpreter's own frame records, which
 * needs the internal headers; Py_BUILD_CORE is confined to this file.
 */
#define Py_BUILD_CORE 1
#include <Python.h>
#if PY_VERSION_HEX >= 0x030E0000
#include "internal/pycore_interpframe_structs.h"
#elif PY_VERSION_HEX >= 0x030B0000
#include "internal/pycore_frame.h"
#else
#include <frameobject.h>
#endif

#include "frames.h"

#if PY_VERSION_HEX >= 0x030E0000 /* ------------------------------ 3.14, 3.15 */

/* _PyInterpreterFrame is opaque outside the core since 3.14, its f_executable
   is a tagged _PyStackRef, and the inline helpers used below for 3.11-3.13
   (_PyFrame_IsIncomplete, _PyFrame_GetCode, _PyInterpreterFrame_LASTI) now
   need most of the internal headers. So only the frame's links are read from
   its struct (previous, owner); the code object and the instruction offset
   come from the PyUnstable_InterpreterFrame API (3.12+), which decodes the
   stack reference. In the 3.14 and 3.15 builds GetCode is one Py_INCREF,
   GetLasti pointer arithmetic (the line comes later, from oa_code_line):
   neither allocates or calls out. */

#define OA_CODEUNIT_SIZE 2 /* sizeof(_Py_CODEUNIT), an internal type since 3.14 */

int oa_walk_stack(void *tstate, int max, void **codes, int *offsets)
{
    PyThreadState *ts = tstate;
    int n = 0;
    for (struct _PyInterpreterFrame *f = ts->current_frame; f != NULL && n < max;
         f = f->previous) {
        /* Skip what _PyFrame_IsIncomplete calls incomplete, as tracemalloc
           does: shim frames (owned by the interpreter; 3.14 also has C-stack
           ones, numbered above it) hold no code ... */
        if (f->owner >= FRAME_OWNED_BY_INTERPRETER)
            continue;
        PyObject *code = PyUnstable_InterpreterFrame_GetCode(f);
        /* The frame keeps its code alive, so this returns the count to what
           it was, never to zero; `code` is borrowed from here on. */
        Py_DECREF(code);
        if (!PyCode_Check(code))
            continue;
        int lasti = PyUnstable_InterpreterFrame_GetLasti(f);
        /* ... and frames being set up, not yet past their RESUME. */
        if (f->owner != FRAME_OWNED_BY_GENERATOR &&
            lasti < ((PyCodeObject *)code)->_co_firsttraceable * OA_CODEUNIT_SIZE)
            continue;
        codes[n] = code;
        offsets[n] = lasti;
        n++;
    }
    return n;
}

#elif PY_VERSION_HEX >= 0x030B0000 /* ----------------------------- 3.11-3.13 */

static inline PyCodeObject *frame_code(_PyInterpreterFrame *f)
{
#if PY_VERSION_HEX >= 0x030D0000
    return PyCode_Check(f->f_executable) ? (PyCodeObject *)f->f_executable : NULL;
#else
    return f->f_code;
#endif
}

int oa_walk_stack(void *tstate, int max, void **codes, int *offsets)
{
    PyThreadState *ts = tstate;
#if PY_VERSION_HEX >= 0x030D0000
    _PyInterpreterFrame *f = ts->current_frame;
#else
    _PyInterpreterFrame *f = ts->cframe != NULL ? ts->cframe->current_frame : NULL;
#endif
    int n = 0;
    for (; f != NULL && n < max; f = f->previous) {
        /* Frames being set up or torn down, and C-stack shims, have no
           meaningful instruction yet: skip them as tracemalloc does. */
        if (_PyFrame_IsIncomplete(f))
            continue;
        PyCodeObject *code = frame_code(f);
        if (code == NULL)
            continue;
        codes[n] = code;
        offsets[n] = _PyInterpreterFrame_LASTI(f) * (int)sizeof(_Py_CODEUNIT);
        n++;
    }
    return n;
}

#else /* ------------------------- 3.10: frames are PyFrameObjects linked by f_back */

int oa_walk_stack(void *tstate, int max, void **codes, int *offsets)
{
    PyThreadState *ts = tstate;
    int n = 0;
    for (PyFrameObject *f = ts->frame; f != NULL && n < max; f = f->f_back) {
        /* PyFrame_GetLineNumber's own computation when no tracer set
           f_lineno (a frame not started yet, f_lasti -1, maps to its
           first line). */
        codes[n] = f->f_code;
        offsets[n] = f->f_lasti * (int)sizeof(_Py_CODEUNIT);
        n++;
    }
    return n;
}

#endif

int oa_code_line(void *code, int offset)
{
    return PyCode_Addr2Line((PyCodeObject *)code, offset);
}
