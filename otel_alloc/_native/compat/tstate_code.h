/*
 * Recognising, in x86-64 machine code, how CPython's thread-state getter
 * (PyThreadState_GetUnchecked, 3.12's _PyThreadState_UncheckedGet) loads
 * its thread-local. Pure byte matching over a bounded range, nothing
 * dereferenced: tstate_slot.c reads what a form points at, and the tests
 * feed it byte strings (tests/unit/tracker/test_thread_state_read.py).
 */
#ifndef OA_COMPAT_TSTATE_CODE_H
#define OA_COMPAT_TSTATE_CODE_H

#include <stddef.h>
#include <stdint.h>

#pragma GCC visibility push(hidden)

/* The forms, and what `value` holds for each. A "position" is relative to
   the start of the code given (a RIP-relative operand resolved), and may lie
   outside it. */
enum {
    OA_TS_CODE_NONE = 0,      /* not recognised */
    OA_TS_CODE_TP_OFFSET = 1, /* local-exec: the variable's offset from the thread pointer */
    OA_TS_CODE_GOT_TP = 2,    /* initial-exec: position of the GOT entry holding that offset */
    OA_TS_CODE_TLS_INDEX = 3, /* general-dynamic: position of __tls_get_addr's argument */
    OA_TS_CODE_PLT = 4,       /* a PLT entry: position of the GOT entry holding the target */
};

/* The form of the `len` bytes at `code` (OA_TS_CODE_*), its value in *value. */
int oa_ts_code_parse(const unsigned char *code, size_t len, int64_t *value);

#pragma GCC visibility pop

#endif
