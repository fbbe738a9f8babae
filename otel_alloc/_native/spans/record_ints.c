/*
 * A queued span record's ids and times as C integers: see record_ints.h.
 */
#include "record_ints.h"

#include "../compat/long_value.h"
#include "span_record.h"

/* v as an unsigned 128-bit int; 0 when it is not an int in [0, 2**128). */
static int u128_of(PyObject *v, uint64_t *hi, uint64_t *lo)
{
    return PyLong_Check(v) && oa_long_u128(v, hi, lo);
}

static PyObject *u128_to_int(uint64_t hi, uint64_t lo)
{
    if (hi == 0)
        return PyLong_FromUnsignedLongLong(lo);
    unsigned char buf[16];
    for (int i = 0; i < 16; i++)
        buf[i] = (unsigned char)((i < 8 ? lo : hi) >> (8 * (i % 8)));
#if PY_VERSION_HEX >= 0x030D0000
    return PyLong_FromUnsignedNativeBytes(buf, sizeof(buf), Py_ASNATIVEBYTES_LITTLE_ENDIAN);
#else
    return _PyLong_FromByteArray(buf, sizeof(buf), 1, 0);
#endif
}

/* An unsigned 64-bit id; 0 when v is not an int in range. */
static int u64_of(PyObject *v, uint64_t *out)
{
    uint64_t hi;
    return u128_of(v, &hi, out) && hi == 0;
}

/* A time in ns: None (not ended, or not started) reads as 0 as it always
   has; 0 when v is neither None nor an int in [0, 2**63). */
static int time_of(PyObject *v, int64_t *out)
{
    uint64_t hi, lo;
    if (v == Py_None) {
        *out = 0;
        return 1;
    }
    if (!u128_of(v, &hi, &lo) || hi != 0 || lo > INT64_MAX)
        return 0;
    *out = (int64_t)lo;
    return 1;
}

void record_ints_set(record_ints *ri, PyObject *trace_id, PyObject *span_id, PyObject *start,
                     PyObject *end)
{
    ri->trace_hi = ri->trace_lo = ri->span_id = 0;
    ri->start = ri->end = 0;
    ri->odd = NULL;
    /* NULL (unreadable) is 0 in every field, which it reads as anyway. */
    int fits = (trace_id == NULL || u128_of(trace_id, &ri->trace_hi, &ri->trace_lo)) &
               (span_id == NULL || u64_of(span_id, &ri->span_id)) &
               (start == NULL || time_of(start, &ri->start)) &
               (end == NULL || time_of(end, &ri->end));
    if (fits)
        return;
    PyObject *items[4] = {trace_id, span_id, start, end};
    ri->odd = PyTuple_New(4);
    if (ri->odd == NULL) {
        PyErr_Clear();
        return;
    }
    for (int i = 0; i < 4; i++)
        PyTuple_SET_ITEM(ri->odd, i, Py_NewRef(items[i] != NULL ? items[i] : Py_None));
}

void record_ints_clear(record_ints *ri)
{
    Py_CLEAR(ri->odd);
}

PyObject *record_int(const record_ints *ri, int which)
{
    if (ri->odd != NULL)
        return or_zero(PyTuple_GET_ITEM(ri->odd, which)); /* None: unreadable */
    switch (which) {
    case RI_TRACE_ID:
        return u128_to_int(ri->trace_hi, ri->trace_lo);
    case RI_SPAN_ID:
        return PyLong_FromUnsignedLongLong(ri->span_id);
    case RI_START:
        return PyLong_FromLongLong(ri->start);
    default:
        return PyLong_FromLongLong(ri->end);
    }
}
