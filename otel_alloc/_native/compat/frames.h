/*
 * Reading the running thread's Python stack from inside an allocator hook.
 */
#ifndef OA_FRAMES_H
#define OA_FRAMES_H

/* Fill codes[] (borrowed PyCodeObject pointers) and lines[] with up to max
   frames of the thread state's Python stack, innermost first; returns how
   many. Creates no object, takes no reference and runs no Python code, so it
   is safe in a MEM/OBJ hook (the GIL is held there). */
int oa_walk_stack(void *tstate, int max, void **codes, int *lines);

#endif
