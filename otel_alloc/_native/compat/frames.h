/*
 * Reading the running thread's Python stack from inside an allocator hook.
 */
#ifndef OA_FRAMES_H
#define OA_FRAMES_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* Fill codes[] (borrowed PyCodeObject pointers) and offsets[] (the byte
   offset of each frame's current instruction) with up to max frames of the
   thread state's Python stack, innermost first; returns how many. Creates no
   object, takes no reference and runs no Python code, so it is safe in a
   MEM/OBJ hook (the GIL is held there). */
int oa_walk_stack(void *tstate, int max, void **codes, int *offsets);

/* The source line of the instruction at `offset` in `code` (a walk over the
   code's line table, which costs about what the rest of a sample does:
   stacks.c caches it per code object and offset). */
int oa_code_line(void *code, int offset);

/* The function name a sampled frame is reported under (the qualified name
   where CPython has one) and its file; borrowed, read under the GIL from a
   code object the caller keeps alive. */
static inline PyObject *oa_code_name(PyCodeObject *co)
{
#if PY_VERSION_HEX >= 0x030B0000
    return co->co_qualname;
#else
    return co->co_name;
#endif
}

static inline PyObject *oa_code_filename(PyCodeObject *co)
{
    return co->co_filename;
}

#endif
