/*
 * SpanIndex: an open-addressing hash table (linear probing, deletion by
 * backward shift, so no tombstones and no resizes from churn) of key object
 * -> value, keyed by a 64-bit integer. See span_index.h.
 */
#include "span_index.h"

#include <stdlib.h>

#define SI_MIN_CAPACITY 8
/* Shrink below this load only past this capacity: a service whose open
   spans come and go in bursts keeps its table. */
#define SI_SHRINK_FROM 1024

static inline size_t si_home(uint64_t key, size_t mask)
{
    /* Fibonacci hashing, folded: addresses are 16-aligned and group ids keep
       their slot in the low bits, and neither may crowd one run of slots. */
    uint64_t h = key * 0x9E3779B97F4A7C15ULL;
    return (size_t)(h ^ (h >> 32)) & mask;
}

/* The slot holding `key`, or the free slot where it would go. */
static inline si_entry *si_find(const SpanIndex *self, uint64_t key)
{
    size_t i = si_home(key, self->mask);
    for (;;) {
        si_entry *e = &self->entries[i];
        if (e->obj == NULL || e->key == key)
            return e;
        i = (i + 1) & self->mask;
    }
}

/* Move every entry into a table of `capacity` slots. -1 when libc has no
   memory for it (nothing changed then). */
static int si_resize(SpanIndex *self, size_t capacity)
{
    si_entry *fresh = calloc(capacity, sizeof(si_entry));
    if (fresh == NULL)
        return -1;
    si_entry *old = self->entries;
    size_t old_capacity = old != NULL ? self->mask + 1 : 0;
    self->entries = fresh;
    self->mask = capacity - 1;
    for (size_t i = 0; i < old_capacity; i++)
        if (old[i].obj != NULL)
            *si_find(self, old[i].key) = old[i];
    free(old);
    return 0;
}

PyObject *si_get(SpanIndex *self, uint64_t key)
{
    if (self->used == 0)
        return NULL;
    si_entry *e = si_find(self, key);
    return e->obj != NULL ? e->value : NULL;
}

int si_set(SpanIndex *self, uint64_t key, PyObject *key_obj, PyObject *value)
{
    size_t capacity = self->entries != NULL ? self->mask + 1 : 0;
    if ((size_t)(self->used + 1) * 2 > capacity &&
        si_resize(self, capacity ? capacity * 2 : SI_MIN_CAPACITY) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    si_entry *e = si_find(self, key);
    PyObject *old_obj = e->obj, *old_value = e->value;
    e->key = key;
    e->obj = Py_NewRef(key_obj);
    e->value = Py_NewRef(value);
    if (old_obj == NULL) {
        /* A replaced entry keeps its place in the order, as in a dict. */
        e->serial = self->next_serial++;
        self->used++;
    } else {
        /* After the entry is whole: a deallocation may run any code. */
        Py_DECREF(old_obj);
        Py_DECREF(old_value);
    }
    return 0;
}

/* Take out entry e (a full slot), closing the gap behind it. */
static void si_remove(SpanIndex *self, si_entry *e)
{
    size_t mask = self->mask, i = (size_t)(e - self->entries), j = i;
    for (;;) {
        j = (j + 1) & mask;
        si_entry *next = &self->entries[j];
        if (next->obj == NULL)
            break;
        size_t home = si_home(next->key, mask);
        /* next may move into the gap at i when its home is not in (i, j]. */
        int stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
        if (!stays) {
            self->entries[i] = *next;
            i = j;
        }
    }
    self->entries[i].obj = NULL;
    self->entries[i].value = NULL;
    self->used--;
    size_t capacity = mask + 1;
    if (capacity > SI_SHRINK_FROM && (size_t)self->used * 8 < capacity)
        (void)si_resize(self, capacity / 2); /* no memory: stays as large */
}

PyObject *si_pop(SpanIndex *self, uint64_t key)
{
    if (self->used == 0)
        return NULL;
    si_entry *e = si_find(self, key);
    if (e->obj == NULL)
        return NULL;
    PyObject *obj = e->obj, *value = e->value;
    si_remove(self, e);
    Py_DECREF(obj);
    return value;
}

/* Detach every entry and drop them: the table is empty before any
   deallocation runs. */
static void si_clear_all(SpanIndex *self)
{
    si_entry *old = self->entries;
    size_t capacity = old != NULL ? self->mask + 1 : 0;
    self->entries = NULL;
    self->mask = 0;
    self->used = 0;
    for (size_t i = 0; i < capacity; i++) {
        if (old[i].obj != NULL) {
            Py_DECREF(old[i].obj);
            Py_DECREF(old[i].value);
        }
    }
    free(old);
}

/* ----------------------------------------------------------- Python side */

/* The C key of Python key `k`: 1 with *key set, 0 when no entry can have
   it (an int index given a non-int or an int outside 0..2**64-1). Only
   Python code calls it: the span path converts its keys itself. */
static int py_key(SpanIndex *self, PyObject *k, uint64_t *key)
{
    if (self->by_identity) {
        *key = si_identity(k);
        return 1;
    }
    if (!PyLong_Check(k))
        return 0;
    unsigned long long v = PyLong_AsUnsignedLongLong(k);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear(); /* negative or 2**64 and over: OverflowError */
        return 0;
    }
    *key = (uint64_t)v;
    return 1;
}

/* The value under Python key k, borrowed; NULL: none (never an error). */
static PyObject *py_lookup(SpanIndex *self, PyObject *k)
{
    uint64_t key;
    int r = py_key(self, k, &key);
    return r > 0 ? si_get(self, key) : NULL;
}

static Py_ssize_t si_length(SpanIndex *self)
{
    return self->used;
}

static PyObject *si_subscript(SpanIndex *self, PyObject *k)
{
    PyObject *v = py_lookup(self, k);
    if (v == NULL)
        PyErr_SetObject(PyExc_KeyError, k);
    return Py_XNewRef(v);
}

static int si_ass_subscript(SpanIndex *self, PyObject *k, PyObject *v)
{
    uint64_t key;
    int r = py_key(self, k, &key);
    if (v == NULL) {
        PyObject *old = r > 0 ? si_pop(self, key) : NULL;
        if (old == NULL) {
            PyErr_SetObject(PyExc_KeyError, k);
            return -1;
        }
        Py_DECREF(old);
        return 0;
    }
    if (r == 0) {
        PyErr_Format(PyExc_TypeError, "SpanIndex keys are ints from 0 to 2**64-1, not %R", k);
        return -1;
    }
    return si_set(self, key, k, v);
}

static int si_contains(SpanIndex *self, PyObject *k)
{
    return py_lookup(self, k) != NULL;
}

static PyObject *si_py_get(SpanIndex *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "get(key, default=None)");
        return NULL;
    }
    PyObject *v = py_lookup(self, args[0]);
    return Py_NewRef(v != NULL ? v : nargs == 2 ? args[1] : Py_None);
}

static PyObject *si_py_pop(SpanIndex *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "pop(key[, default])");
        return NULL;
    }
    uint64_t key;
    int r = py_key(self, args[0], &key);
    PyObject *v = r > 0 ? si_pop(self, key) : NULL;
    if (v != NULL)
        return v;
    if (nargs == 2)
        return Py_NewRef(args[1]);
    PyErr_SetObject(PyExc_KeyError, args[0]);
    return NULL;
}

static int by_serial(const void *a, const void *b)
{
    uint64_t x = (*(si_entry *const *)a)->serial, y = (*(si_entry *const *)b)->serial;
    return (x > y) - (x < y);
}

/* A list of what = 0 keys, 1 values, 2 (key, value) pairs, in the order the
   entries were made. The copies are taken first, in a loop that allocates
   nothing (an allocation may run the garbage collector, and a finalizer
   could change the table). */
static PyObject *si_list(SpanIndex *self, int what)
{
    si_entry **order = NULL;
    PyObject *keys = PyList_New(self->used), *values = PyList_New(self->used);
    if (keys == NULL || values == NULL)
        goto fail;
    order = malloc(sizeof(si_entry *) * (size_t)(self->used > 0 ? self->used : 1));
    if (order == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    Py_ssize_t n = 0;
    size_t capacity = self->entries != NULL ? self->mask + 1 : 0;
    for (size_t i = 0; i < capacity && n < self->used; i++)
        if (self->entries[i].obj != NULL)
            order[n++] = &self->entries[i];
    qsort(order, (size_t)n, sizeof(si_entry *), by_serial);
    for (Py_ssize_t j = 0; j < n; j++) {
        PyList_SET_ITEM(keys, j, Py_NewRef(order[j]->obj));
        PyList_SET_ITEM(values, j, Py_NewRef(order[j]->value));
    }
    free(order);
    order = NULL;
    if (what != 2) {
        PyObject *out = what == 0 ? keys : values;
        Py_DECREF(what == 0 ? values : keys);
        return out;
    }
    PyObject *pairs = PyList_New(n);
    for (Py_ssize_t j = 0; pairs != NULL && j < n; j++) {
        PyObject *pair = PyTuple_Pack(2, PyList_GET_ITEM(keys, j), PyList_GET_ITEM(values, j));
        if (pair == NULL)
            Py_CLEAR(pairs);
        else
            PyList_SET_ITEM(pairs, j, pair);
    }
    Py_DECREF(keys);
    Py_DECREF(values);
    return pairs;
fail:
    free(order);
    Py_XDECREF(keys);
    Py_XDECREF(values);
    return NULL;
}

/* The value entered first of those present, or None: what a dict's
   next(iter(d.values())) gives, without copying the table. */
static PyObject *si_first(SpanIndex *self, PyObject *Py_UNUSED(ignored))
{
    si_entry *first = NULL;
    size_t capacity = self->entries != NULL ? self->mask + 1 : 0;
    for (size_t i = 0; i < capacity; i++) {
        si_entry *e = &self->entries[i];
        if (e->obj != NULL && (first == NULL || e->serial < first->serial))
            first = e;
    }
    return Py_NewRef(first != NULL ? first->value : Py_None);
}

static PyObject *si_keys(SpanIndex *self, PyObject *Py_UNUSED(ignored))
{
    return si_list(self, 0);
}

static PyObject *si_values(SpanIndex *self, PyObject *Py_UNUSED(ignored))
{
    return si_list(self, 1);
}

static PyObject *si_items(SpanIndex *self, PyObject *Py_UNUSED(ignored))
{
    return si_list(self, 2);
}

static PyObject *si_py_clear(SpanIndex *self, PyObject *Py_UNUSED(ignored))
{
    si_clear_all(self);
    Py_RETURN_NONE;
}

static PyObject *si_iter(SpanIndex *self)
{
    PyObject *keys = si_list(self, 0);
    if (keys == NULL)
        return NULL;
    PyObject *it = PyObject_GetIter(keys);
    Py_DECREF(keys);
    return it;
}

static PyObject *si_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"by_identity", NULL};
    int by_identity = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|p:SpanIndex", kwlist, &by_identity))
        return NULL;
    SpanIndex *self = (SpanIndex *)type->tp_alloc(type, 0);
    if (self != NULL)
        self->by_identity = by_identity;
    return (PyObject *)self;
}

static int si_traverse(SpanIndex *self, visitproc visit, void *arg)
{
    size_t capacity = self->entries != NULL ? self->mask + 1 : 0;
    for (size_t i = 0; i < capacity; i++) {
        if (self->entries[i].obj != NULL) {
            Py_VISIT(self->entries[i].obj);
            Py_VISIT(self->entries[i].value);
        }
    }
    return 0;
}

static int si_tp_clear(SpanIndex *self)
{
    si_clear_all(self);
    return 0;
}

static void si_dealloc(SpanIndex *self)
{
    PyObject_GC_UnTrack(self);
    si_clear_all(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *si_get_by_identity(SpanIndex *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->by_identity);
}

static PyMethodDef si_methods[] = {
    {"get", (PyCFunction)(void (*)(void))si_py_get, METH_FASTCALL,
     "get(key, default=None): the value under key, or default."},
    {"pop", (PyCFunction)(void (*)(void))si_py_pop, METH_FASTCALL,
     "pop(key[, default]): remove key and return its value (KeyError without default)."},
    {"keys", (PyCFunction)si_keys, METH_NOARGS, "A list of the keys."},
    {"values", (PyCFunction)si_values, METH_NOARGS, "A list of the values."},
    {"items", (PyCFunction)si_items, METH_NOARGS, "A list of (key, value) pairs."},
    {"clear", (PyCFunction)si_py_clear, METH_NOARGS, "Remove every entry."},
    {"first", (PyCFunction)si_first, METH_NOARGS,
     "The value entered first of those present (None when empty)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef si_getset[] = {
    {"by_identity", (getter)si_get_by_identity, NULL,
     "True: keyed by the key object's identity; False: by an int from 0 to 2**64-1.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMappingMethods si_as_mapping = {
    .mp_length = (lenfunc)si_length,
    .mp_subscript = (binaryfunc)si_subscript,
    .mp_ass_subscript = (objobjargproc)si_ass_subscript,
};

static PySequenceMethods si_as_sequence = {
    .sq_contains = (objobjproc)si_contains,
};

PyTypeObject SpanIndexType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "otel_alloc.otel._spanpath.SpanIndex",
    .tp_doc = "SpanIndex(by_identity=False): the span path's map of open spans, in C.\n\n"
              "by_identity=True: span -> group id, keyed by the span's identity;\n"
              "False: keyed by an int from 0 to 2**64-1 (group id or span id -> span).\n"
              "Keys, values and items come in the order the entries were made.",
    .tp_basicsize = sizeof(SpanIndex),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = si_new,
    .tp_dealloc = (destructor)si_dealloc,
    .tp_traverse = (traverseproc)si_traverse,
    .tp_clear = (inquiry)si_tp_clear,
    .tp_iter = (getiterfunc)si_iter,
    .tp_as_mapping = &si_as_mapping,
    .tp_as_sequence = &si_as_sequence,
    .tp_methods = si_methods,
    .tp_getset = si_getset,
};
