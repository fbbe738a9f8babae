/*
 * Stack walking for the sampler.
 *
 * The public frame API (PyThreadState_GetFrame, PyFrame_GetBack) creates
 * frame objects on 3.11+, and a GC-tracked allocation inside an allocator
 * hook can start a collection that runs finalizers: Python code in the hook.
 * So, like tracemalloc, this reads the interpreter's own frame records, which
 * needs the internal headers; Py_BUILD_CORE is confined to this file.
 */
#define Py_BUILD_CORE 1
#include <Python.h>
#if PY_VERSION_HEX >= 0x030B0000
#include "internal/pycore_frame.h"
#else
#include <frameobject.h>
#endif

#include "frames.h"

#if PY_VERSION_HEX >= 0x030B0000

static inline PyCodeObject *frame_code(_PyInterpreterFrame *f)
{
#if PY_VERSION_HEX >= 0x030D0000
    return PyCode_Check(f->f_executable) ? (PyCodeObject *)f->f_executable : NULL;
#else
    return f->f_code;
#endif
}

int oa_walk_stack(void *tstate, int max, void **codes, int *lines)
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
        lines[n] = PyCode_Addr2Line(code, _PyInterpreterFrame_LASTI(f) * (int)sizeof(_Py_CODEUNIT));
        n++;
    }
    return n;
}

#else /* 3.10: frames are PyFrameObjects linked by f_back */

int oa_walk_stack(void *tstate, int max, void **codes, int *lines)
{
    PyThreadState *ts = tstate;
    int n = 0;
    for (PyFrameObject *f = ts->frame; f != NULL && n < max; f = f->f_back) {
        codes[n] = f->f_code;
        lines[n] = PyFrame_GetLineNumber(f);
        n++;
    }
    return n;
}

#endif
