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

/* One span name's sums over the records taken. */
typedef struct {
    uint64_t bytes, count, native_bytes;
    Py_ssize_t largest; /* index into the taken records: the largest span */
    Py_ssize_t shown;   /* the largest span whose size is in `sizes`, or -1 */
    PyObject *sizes;    /* list of the spans' bytes (those sampled), the largest first */
} name_sum;

/* Uniform in [0, 1) from the queue's own generator state. */
static double uniform(uint64_t *state)
{
    return (double)(oa_xorshift64s(state) >> 11) * (1.0 / 9007199254740992.0);
}

/* Sum the taken records per span name into (name, bytes, count, trace_id,
   span_id, sizes) tuples. Bytes and count cover every record; each span's
   bytes go into sizes with probability `rate` (all of them at 1). Trace and
   span id are those of the largest span in sizes (else the largest). */
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
            sums[k].sizes = PyList_New(0);
            sums[k].largest = i;
            sums[k].shown = -1;
            nsums++; /* from here on its list is released below */
            if (kobj == NULL || sums[k].sizes == NULL || PyDict_SetItem(where, name, kobj) < 0) {
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
        PyObject *bobj = PyLong_FromUnsignedLongLong(b);
        if (bobj == NULL || PyList_Append(s->sizes, bobj) < 0) {
            Py_XDECREF(bobj);
            goto done;
        }
        Py_DECREF(bobj);
        if (s->shown < 0 || b > taken[s->shown].f.alloc_bytes) {
            /* The largest goes first: it is the point that carries the exemplar. */
            Py_ssize_t last = PyList_GET_SIZE(s->sizes) - 1;
            PyObject **items = ((PyListObject *)s->sizes)->ob_item;
            PyObject *tmp = items[0];
            items[0] = items[last];
            items[last] = tmp;
            s->shown = i;
        }
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
            Py_NewRef(sums[k].sizes),
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
            Py_XDECREF(sums[k].sizes);
        free(sums);
    }
    Py_XDECREF(where);
    return out;
}

