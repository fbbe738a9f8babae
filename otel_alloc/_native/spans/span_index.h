/*
 * SpanIndex (span_index.c): the span path's maps of open spans, a hash table
 * in C in place of a dict.
 *
 * Two kinds, fixed when one is made:
 *   by identity  span -> group id (the registry ContextFollower reads on
 *                every attach, shared by every processor): keyed by the
 *                object's address, compared by identity, as a dict keyed by
 *                a span (which has no __hash__ or __eq__ of its own) was;
 *   by int       group id -> span (SpanWatch.open) and span id -> span (a
 *                processor's open spans): keyed by a non-negative int
 *                below 2**64.
 * Each entry holds a reference to its key object and to its value. The span
 * path (span_path.c, span_finish.c, context_follower.c) calls the si_*
 * functions with the key as a C integer; Python code sees a small mapping
 * (len, in, [], get, pop, items, keys, values, clear, first) that keeps the
 * order entries were made in, as a dict does. The table's memory
 * comes from libc: the span path's own bookkeeping is not charged to the
 * span that is current (its dicts' was, and their resizes cost a third of
 * the instructions of the span path's dict work: callgrind, the suite's
 * `spans` item). Everything runs with the GIL held.
 */
#ifndef OA_SPAN_INDEX_H
#define OA_SPAN_INDEX_H

#include "spans.h"

typedef struct {
    uint64_t key;   /* the address (by identity) or the int (by int) */
    PyObject *obj;  /* the key object; NULL: the slot is free */
    PyObject *value;
    uint64_t serial; /* when it was entered: the mapping's order */
} si_entry;

typedef struct {
    PyObject_HEAD
    si_entry *entries; /* NULL until the first entry */
    size_t mask;       /* capacity - 1 (a power of two); 0 without entries */
    Py_ssize_t used;
    uint64_t next_serial;
    int by_identity;
} SpanIndex;

extern OA_HIDDEN PyTypeObject SpanIndexType;

/* The C key of `obj` in an index by identity. */
static inline uint64_t si_identity(PyObject *obj)
{
    return (uint64_t)(uintptr_t)obj;
}

/* The value under `key`, borrowed, or NULL (no error). */
OA_HIDDEN PyObject *si_get(SpanIndex *self, uint64_t key);
/* Enter key_obj -> value under `key` (si_identity(key_obj), or key_obj's int
   value), replacing an entry there. 0, or -1 with MemoryError set. */
OA_HIDDEN int si_set(SpanIndex *self, uint64_t key, PyObject *key_obj, PyObject *value);
/* Remove the entry under `key`: its value (new reference), or NULL (no
   error) when there is none. */
OA_HIDDEN PyObject *si_pop(SpanIndex *self, uint64_t key);

#endif
