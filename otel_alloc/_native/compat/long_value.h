/*
 * An int's value as an unsigned 128-bit number, read from its digits.
 *
 * The span path keeps each ended span's trace id (128 bits), span id and
 * times as C integers (spans/record_ints.c). The public conversions of a
 * value that does not fit a machine word go through a byte-by-byte loop:
 * _PyLong_AsByteArray (3.10-3.12) and PyLong_AsNativeBytes (3.13, which
 * calls it) cost about 850 instructions and nine code lines of the
 * interpreter a trace id (callgrind, the suite's `spans` loop on 3.11).
 * Read from the digits it is a few dozen.
 *
 *   oa_long_u128(v, &hi, &lo)  1 with v's value when v is an int in
 *                              [0, 2**128); 0 when it is an int outside
 *                              that range (no error set). v must pass
 *                              PyLong_Check.
 *   oa_long_u64_mask(v)        PyLong_AsUnsignedLongLongMask(v), read from
 *                              the digits when v is an exact int in
 *                              [0, 2**128) (group ids, read twice a span).
 *
 * 3.14 and later: PyLong_Export, the public view of the digits (PEP 757).
 * Before: the digit array of the object itself, laid out as each version's
 * cpython/longintrepr.h says. Header-only: the spans extension includes it.
 */
#ifndef OA_COMPAT_LONG_VALUE_H
#define OA_COMPAT_LONG_VALUE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>

/* The value of n digits of `bits` bits each, least significant first, the
   top one nonzero (CPython keeps its ints so): 0 when it is 2**128 or more. */
#define OA_U128_OF_DIGITS(type, digits, n, bits, hi, lo, ok)                           \
    do {                                                                               \
        const type *oa_d_ = (const type *)(digits);                                    \
        Py_ssize_t oa_top_ = (n) > 0 ? ((n) - 1) * (Py_ssize_t)(bits) : 0;             \
        if (oa_top_ >= 128 ||                                                          \
            ((n) > 0 && oa_top_ + (bits) > 128 && (oa_d_[(n) - 1] >> (128 - oa_top_)) != 0)) { \
            (ok) = 0;                                                                  \
            break;                                                                     \
        }                                                                              \
        unsigned __int128 oa_acc_ = 0;                                                 \
        for (Py_ssize_t oa_i_ = (n) - 1; oa_i_ >= 0; oa_i_--)                          \
            oa_acc_ = (oa_acc_ << (bits)) | oa_d_[oa_i_];                              \
        *(hi) = (uint64_t)(oa_acc_ >> 64);                                             \
        *(lo) = (uint64_t)oa_acc_;                                                     \
        (ok) = 1;                                                                      \
    } while (0)

#if PY_VERSION_HEX >= 0x030E0000

static inline int oa_long_u128(PyObject *v, uint64_t *hi, uint64_t *lo)
{
    PyLongExport e;
    if (PyLong_Export(v, &e) < 0) {
        PyErr_Clear(); /* not reached for an int */
        return 0;
    }
    if (e.digits == NULL) { /* fits an int64_t */
        if (e.value < 0)
            return 0;
        *hi = 0;
        *lo = (uint64_t)e.value;
        return 1;
    }
    const PyLongLayout *layout = PyLong_GetNativeLayout();
    /* CPython's own layout has always been least significant digit first;
       any other is left to the caller's slow way. */
    uint64_t h = 0, l = 0;
    int ok = !e.negative && layout->digits_order == -1 && layout->bits_per_digit <= 32 &&
             layout->bits_per_digit > 0;
    if (ok && layout->digit_size == 4)
        OA_U128_OF_DIGITS(uint32_t, e.digits, e.ndigits, layout->bits_per_digit, &h, &l, ok);
    else if (ok && layout->digit_size == 2)
        OA_U128_OF_DIGITS(uint16_t, e.digits, e.ndigits, layout->bits_per_digit, &h, &l, ok);
    else
        ok = 0;
    if (ok) {
        *hi = h;
        *lo = l;
    }
    PyLong_FreeExport(&e);
    return ok;
}

#else

static inline int oa_long_u128(PyObject *v, uint64_t *hi, uint64_t *lo)
{
    const PyLongObject *o = (const PyLongObject *)v;
#if PY_VERSION_HEX >= 0x030C0000
    /* lv_tag: the digit count above three flag bits, the sign (0 positive,
       1 zero, 2 negative) in the lowest two. */
    uintptr_t tag = o->long_value.lv_tag;
    if ((tag & 3) == 2)
        return 0;
    Py_ssize_t n = (Py_ssize_t)(tag >> 3);
    const digit *d = o->long_value.ob_digit;
#else
    /* ob_size: the digit count, negative for a negative value. */
    Py_ssize_t n = Py_SIZE(o);
    if (n < 0)
        return 0;
    const digit *d = o->ob_digit;
#endif
    uint64_t h = 0, l = 0;
    int ok;
    OA_U128_OF_DIGITS(digit, d, n, PyLong_SHIFT, &h, &l, ok);
    if (ok) {
        *hi = h;
        *lo = l;
    }
    return ok;
}

#endif

static inline unsigned long long oa_long_u64_mask(PyObject *v)
{
#if PY_VERSION_HEX < 0x030E0000
    /* The call is the interpreter's code a span touches for nothing else:
       about 100 instructions and 11 first-level instruction-cache misses a
       span (callgrind, the suite's `spans` loop, counts mode, 3.11). From
       3.14 the digits are read through PyLong_Export, a call too. */
    uint64_t hi, lo;
    if (PyLong_CheckExact(v) && oa_long_u128(v, &hi, &lo))
        return lo;
#endif
    return PyLong_AsUnsignedLongLongMask(v);
}

#endif
