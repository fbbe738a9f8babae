/*
 * 3.12 and later: where this thread's current thread state lives.
 *
 * From 3.12 the current thread state is an interpreter thread-local,
 * _Py_tss_tstate, that the interpreter does not export; the API that reads
 * it, PyThreadState_GetUnchecked (3.13+, _PyThreadState_UncheckedGet in
 * 3.12), is one load wrapped in a call. The MEM/OBJ hooks need it on every
 * allocation, and in live mode on every free: through the PLT that call was
 * about 16 instructions a hook with a statically linked interpreter (callgrind,
 * core workload on 3.13: 5.2M of the 23.1M instructions counting added), more
 * with a shared libpython, where it also calls __tls_get_addr.
 *
 * So, on x86-64, oa_tstate_slot_init reads the API function's machine code
 * once, recognises the three ways a compiler emits that one load
 * (tstate_code.c), and works out where the variable is; each thread then
 * keeps the variable's address in oa_tstate_slot (thread_state.h), and a
 * hook reads the thread state through it with two loads and a test. The
 * address is checked before it is trusted: the value there must be the
 * API's answer. Any other code, architecture or a failed check leaves
 * oa_tstate_slot NULL and the hooks call the API, as before. What counts
 * as a match is exact bytes, so a CPython build that emits something else
 * falls back rather than misreads.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdatomic.h>
#include <stdint.h>

#include "../api/tracker_api.h"
#include "thread_state.h"
#include "tstate_code.h"

#if OA_TSTATE_BY_SLOT

__thread PyThreadState **oa_tstate_slot __attribute__((tls_model("initial-exec")));

/* How this interpreter's API reaches the variable (set once, under the GIL,
   before any hook is in place; read by each thread's first hook). */
enum { SLOT_NONE, SLOT_TP_OFFSET, SLOT_TLS_INDEX };
static _Atomic int g_slot_kind = SLOT_NONE;
static intptr_t g_tp_offset;   /* SLOT_TP_OFFSET: from the thread pointer */
static void *g_tls_index;      /* SLOT_TLS_INDEX: the argument of __tls_get_addr */

#if defined(__x86_64__) && defined(__linux__)
extern void *__tls_get_addr(void *);

/* Bytes of the getter read: more than any form it matches. */
#define GETTER_BYTES 64

static inline uintptr_t thread_pointer(void)
{
    uintptr_t tp;
    __asm__("mov %%fs:0, %0" : "=r"(tp));
    return tp;
}

/* The SLOT_* kind of the getter at `code`, with g_tp_offset or g_tls_index
   set: what tstate_code.c recognised, with the GOT entries it points at
   read. A PLT entry (a non-PIE executable's canonical address of the
   function) is followed once. */
static int parse_getter(const unsigned char *code)
{
    int64_t value;
    int form = oa_ts_code_parse(code, GETTER_BYTES, &value);
    if (form == OA_TS_CODE_PLT) {
        code = *(const unsigned char *const *)(const void *)(code + value);
        if (code == NULL)
            return SLOT_NONE;
        form = oa_ts_code_parse(code, GETTER_BYTES, &value);
    }
    switch (form) {
    case OA_TS_CODE_TP_OFFSET:
        g_tp_offset = (intptr_t)value;
        return SLOT_TP_OFFSET;
    case OA_TS_CODE_GOT_TP:
        g_tp_offset = (intptr_t)*(const int64_t *)(const void *)(code + value);
        return SLOT_TP_OFFSET;
    case OA_TS_CODE_TLS_INDEX:
        g_tls_index = (void *)(uintptr_t)(code + value);
        return SLOT_TLS_INDEX;
    default:
        return SLOT_NONE;
    }
}

static PyThreadState **slot_of_this_thread(int kind)
{
    if (kind == SLOT_TP_OFFSET)
        return (PyThreadState **)(thread_pointer() + (uintptr_t)g_tp_offset);
    if (kind == SLOT_TLS_INDEX)
        return (PyThreadState **)__tls_get_addr(g_tls_index);
    return NULL;
}
#else
static int parse_getter(const unsigned char *code)
{
    (void)code;
    return SLOT_NONE;
}

static PyThreadState **slot_of_this_thread(int kind)
{
    (void)kind;
    return NULL;
}
#endif

/* The API getter, called and read as code. */
#if PY_VERSION_HEX >= 0x030D0000
#define API_GETTER PyThreadState_GetUnchecked
#else
#define API_GETTER _PyThreadState_UncheckedGet
#endif

int oa_tstate_slot_init(void)
{
    if (atomic_load_explicit(&g_slot_kind, memory_order_acquire) != SLOT_NONE)
        return 1;
    PyThreadState *api = API_GETTER();
    if (api == NULL)
        return 0;
    int kind = parse_getter((const unsigned char *)(uintptr_t)&API_GETTER);
    PyThreadState **slot = slot_of_this_thread(kind);
    if (slot == NULL || *slot != api)
        return 0;
    oa_tstate_slot = slot;
    atomic_store_explicit(&g_slot_kind, kind, memory_order_release);
    return 1;
}

int oa_tstate_slot_found(void)
{
    return atomic_load_explicit(&g_slot_kind, memory_order_acquire) != SLOT_NONE;
}

PyThreadState *oa_tstate_first(void)
{
    PyThreadState **slot =
        slot_of_this_thread(atomic_load_explicit(&g_slot_kind, memory_order_acquire));
    if (slot == NULL)
        return API_GETTER();
    oa_tstate_slot = slot;
    return *slot;
}

#endif

/* ---------------------------------------------- what the tests ask (binding.h) */

int oa_tstate_direct(void)
{
#if OA_TSTATE_BY_SLOT
    return oa_tstate_slot_found();
#else
    return 1;
#endif
}

int oa_tstate_code_form(const unsigned char *code, uint32_t len, int64_t *value)
{
    int64_t ignored;
    if (code == NULL)
        return OA_TS_CODE_NONE;
    return oa_ts_code_parse(code, len, value != NULL ? value : &ignored);
}

int oa_tstate_agrees(void)
{
    /* cffi calls this without the GIL; the hooks' read is compared with
       the API's while the thread holds it, as a MEM/OBJ hook runs. */
    PyGILState_STATE gil = PyGILState_Ensure();
    PyThreadState *read = OA_TSTATE();
#if OA_TSTATE_BY_SLOT
    int direct = oa_tstate_slot != NULL;
#else
    int direct = 1;
#endif
    int agrees = read != NULL && read == PyThreadState_Get() ? 1 + direct : 0;
    PyGILState_Release(gil);
    return agrees;
}
