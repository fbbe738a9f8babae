/*
 * What SpanRecords.take() hands the watch thread: records as tuples, and the
 * records summed per span name (what the metrics need).
 */
#include "span_record.h"

#include <stdlib.h>

#include "../support/rng.h"

PyObject *or_zero(PyObject *o)
{
    return o != NULL && o != Py_None ? Py_NewRef(o) : PyLong_FromLong(0);
}

/* A tuple of n new references; on a NULL among them, all are released. */
PyObject *tuple_of(PyObject **items, int n)
{
    for (int i = 0; i < n; i++) {
        if (items[i] == NULL) {
            for (int j = 0; j < n; j++)
                Py_XDECREF(items[j]);
            return NULL;
        }
    }
    PyObject *t = PyTuple_New(n);
    if (t == NULL) {
        for (int j = 0; j < n; j++)
            Py_DECREF(items[j]);
        return NULL;
    }
    for (int i = 0; i < n; i++)
        PyTuple_SET_ITEM(t, i, items[i]);
    return t;
}

/* A new reference to a span's name, or "" when it could not be read. */
PyObject *str_or_empty(PyObject *s)
{
    return s != NULL ? Py_NewRef(s) : PyUnicode_FromString("");
}

PyObject *name_of(const span_record *r)
{
    return str_or_empty(r->name);
}

/* A whole record: (name, trace_id, span_id, group_id, bytes, count,
   inclusive_bytes, live_bytes, peak_bytes, start_time, end_time,
   native_bytes or None). */
PyObject *record_tuple(const span_record *r)
{
    PyObject *items[12] = {
        name_of(r),
        record_int(&r->ints, RI_TRACE_ID),
        record_int(&r->ints, RI_SPAN_ID),
        PyLong_FromUnsignedLongLong(r->gid),
        PyLong_FromUnsignedLongLong(r->f.alloc_bytes),
        PyLong_FromUnsignedLongLong(r->f.alloc_count),
        PyLong_FromUnsignedLongLong(r->f.inclusive_bytes),
        PyLong_FromLongLong(r->f.live_bytes),
        PyLong_FromLongLong(r->f.peak_bytes),
        record_int(&r->ints, RI_START),
        record_int(&r->ints, RI_END),
        r->f.native ? PyLong_FromUnsignedLongLong(r->f.native_bytes) : Py_NewRef(Py_None),
    };
    return tuple_of(items, 12);
}

/* How many of a name's sampled spans had one size. */
typedef struct {
    uint64_t size;
    uint64_t count; /* 0: a free slot */
} size_count;

/* One span name's sums over the records taken. */
typedef struct {
    uint64_t bytes, count, native_bytes;
    Py_ssize_t largest; /* index into the taken records: the largest span */
    Py_ssize_t shown;   /* the largest span whose size was sampled, or -1 */
    /* The sampled sizes, counted per size (open addressing, at most half
       full). A list of every size made an int object per span, then the
       histogram counted equal ones again: most of the watch thread's time
       per span, and in live mode as many more entries in the live-block
       table while the batch was being recorded. */
    size_count *slots;
    uint32_t cap, used;
} name_sum;

static inline uint32_t size_home(uint64_t size, uint32_t cap)
{
    return (uint32_t)((size * UINT64_C(0x9E3779B97F4A7C15)) >> 32) & (cap - 1);
}

/* One more span of `size` in s's counts; -1 when out of memory. */
static int count_size(name_sum *s, uint64_t size)
{
    if (2 * (s->used + 1) > s->cap) {
        uint32_t cap = s->cap ? 2 * s->cap : 8;
        size_count *grown = calloc(cap, sizeof(size_count));
        if (grown == NULL)
            return -1;
        for (uint32_t i = 0; i < s->cap; i++) {
            if (s->slots[i].count == 0)
                continue;
            uint32_t j = size_home(s->slots[i].size, cap);
            while (grown[j].count != 0)
                j = (j + 1) & (cap - 1);
            grown[j] = s->slots[i];
        }
        free(s->slots);
        s->slots = grown;
        s->cap = cap;
    }
    uint32_t j = size_home(size, s->cap);
    while (s->slots[j].count != 0 && s->slots[j].size != size)
        j = (j + 1) & (s->cap - 1);
    if (s->slots[j].count == 0) {
        s->slots[j].size = size;
        s->used++;
    }
    s->slots[j].count++;
    return 0;
}

/* s's counts as a dict {size: spans}, the exemplar's size (`first`) first. */
static PyObject *size_dict(const name_sum *s, uint64_t first)
{
    PyObject *d = PyDict_New();
    for (int pass = 0; pass < 2 && d != NULL && s->used > 0; pass++) {
        for (uint32_t i = 0; i < s->cap; i++) {
            const size_count *c = &s->slots[i];
            if (c->count == 0 || (c->size == first) != (pass == 0))
                continue;
            PyObject *k = PyLong_FromUnsignedLongLong(c->size);
            PyObject *v = PyLong_FromUnsignedLongLong(c->count);
            if (k == NULL || v == NULL || PyDict_SetItem(d, k, v) < 0)
                Py_CLEAR(d);
            Py_XDECREF(k);
            Py_XDECREF(v);
            if (d == NULL)
                break;
        }
    }
    return d;
}

/* Uniform in [0, 1) from the queue's own generator state. */
static double uniform(uint64_t *state)
{
    return (double)(oa_xorshift64s(state) >> 11) * (1.0 / 9007199254740992.0);
}

/* Sum the taken records per span name into (name, bytes, count, trace_id,
   span_id, sizes, native_bytes) tuples. Bytes and count cover every record;
   each span's bytes are counted in sizes ({size: spans}) with probability
   `rate` (all of them at 1). Trace and span id are those of the largest
   span in sizes (else the largest), and its size is sizes' first key. */
PyObject *sums_by_name(span_record *taken, Py_ssize_t n, double rate, uint64_t *rng)
{
    if (n == 0)
        return PyList_New(0);
    PyObject *out = NULL, *where = PyDict_New(); /* name -> index into sums */
    /* Grown with the names seen, not sized for n of them: a batch has few
       names, and n sums (192 KiB for 4096) would be mapped afresh each time. */
    Py_ssize_t sums_cap = n < 16 ? n : 16;
    name_sum *sums = calloc((size_t)sums_cap, sizeof(name_sum));
    Py_ssize_t nsums = 0;
    if (where == NULL || sums == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        span_record *r = &taken[i];
        PyObject *name = name_of(r);
        if (name == NULL)
            goto done;
        PyObject *at = PyDict_GetItemWithError(where, name); /* borrowed */
        Py_ssize_t k;
        if (at != NULL) {
            k = PyLong_AsSsize_t(at);
        } else if (PyErr_Occurred()) {
            Py_DECREF(name);
            goto done;
        } else {
            if (nsums == sums_cap) {
                Py_ssize_t cap = sums_cap * 2 < n ? sums_cap * 2 : n;
                name_sum *grown = realloc(sums, (size_t)cap * sizeof(name_sum));
                if (grown == NULL) {
                    Py_DECREF(name);
                    PyErr_NoMemory();
                    goto done;
                }
                memset(grown + sums_cap, 0, (size_t)(cap - sums_cap) * sizeof(name_sum));
                sums = grown;
                sums_cap = cap;
            }
            k = nsums;
            PyObject *kobj = PyLong_FromSsize_t(k);
            sums[k].largest = i;
            sums[k].shown = -1;
            nsums++; /* from here on its counts are released below */
            if (kobj == NULL || PyDict_SetItem(where, name, kobj) < 0) {
                Py_XDECREF(kobj);
                Py_DECREF(name);
                goto done;
            }
            Py_DECREF(kobj);
        }
        Py_DECREF(name);
        name_sum *s = &sums[k];
        uint64_t b = r->f.alloc_bytes;
        s->bytes += b;
        s->count += r->f.alloc_count;
        s->native_bytes += r->f.native_bytes;
        if (b > taken[s->largest].f.alloc_bytes)
            s->largest = i;
        if (rate < 1.0 && !(rate > 0.0 && uniform(rng) < rate))
            continue;
        if (count_size(s, b) < 0) {
            PyErr_NoMemory();
            goto done;
        }
        if (s->shown < 0 || b > taken[s->shown].f.alloc_bytes)
            s->shown = i; /* the largest sampled: the point that carries the exemplar */
    }
    out = PyList_New(nsums);
    for (Py_ssize_t k = 0; k < nsums && out != NULL; k++) {
        const span_record *big = &taken[sums[k].shown >= 0 ? sums[k].shown : sums[k].largest];
        PyObject *items[7] = {
            name_of(big),
            PyLong_FromUnsignedLongLong(sums[k].bytes),
            PyLong_FromUnsignedLongLong(sums[k].count),
            record_int(&big->ints, RI_TRACE_ID),
            record_int(&big->ints, RI_SPAN_ID),
            size_dict(&sums[k], sums[k].shown >= 0 ? big->f.alloc_bytes : 0),
            PyLong_FromUnsignedLongLong(sums[k].native_bytes),
        };
        PyObject *t = tuple_of(items, 7);
        if (t == NULL)
            Py_CLEAR(out);
        else
            PyList_SET_ITEM(out, k, t);
    }
done:
    if (sums != NULL) {
        for (Py_ssize_t k = 0; k < nsums; k++)
            free(sums[k].slots);
        free(sums);
    }
    Py_XDECREF(where);
    return out;
}

