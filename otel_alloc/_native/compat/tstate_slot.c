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
 * once, recognises the three ways a compiler emits that one load, and works
 * out where the variable is; each thread then keeps the variable's address
 * in oa_tstate_slot (thread_state.h), and a hook reads the thread state
 * through it with one load. The address is checked before it is trusted:
 * the value there must be the API's answer. Any other code, architecture or
 * a failed check leaves oa_tstate_slot NULL and the hooks call the API, as
 * before. What counts as a match is exact bytes, so a CPython build that
 * emits something else falls back rather than misreads.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "thread_state.h"

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

static inline uintptr_t thread_pointer(void)
{
    uintptr_t tp;
    __asm__("mov %%fs:0, %0" : "=r"(tp));
    return tp;
}

static int32_t read_i32(const unsigned char *at)
{
    int32_t v;
    memcpy(&v, at, sizeof v);
    return v;
}

/* Whether the code at *at starts with `bytes`; moves *at past them if so. */
static int take(const unsigned char **at, const char *bytes, size_t n)
{
    if (memcmp(*at, bytes, n) != 0)
        return 0;
    *at += n;
    return 1;
}

/* Recognises the API function's body: the SLOT_* kind, with g_tp_offset or
   g_tls_index set. */
static int parse_getter(const unsigned char *code)
{
    const unsigned char *at = code;
    take(&at, "\xf3\x0f\x1e\xfa", 4); /* endbr64, under -fcf-protection */
    /* A PLT entry (the address of a function a non-PIE executable calls):
       jmp *got(%rip), to where the GOT entry points. */
    if (take(&at, "\xff\x25", 2) || take(&at, "\xf2\xff\x25", 3)) {
        const void *const *got = (const void *const *)(const void *)(at + 4 + read_i32(at));
        at = (const unsigned char *)*got;
        take(&at, "\xf3\x0f\x1e\xfa", 4);
    }

    /* Local-exec, the variable in the executable:
         mov %fs:disp32, %rax ; ret */
    if (take(&at, "\x64\x48\x8b\x04\x25", 5)) {
        int32_t disp = read_i32(at);
        if (at[4] != 0xc3)
            return 0;
        g_tp_offset = disp;
        return SLOT_TP_OFFSET;
    }
    /* Initial-exec, the variable in a shared libpython:
         mov off@GOTTPOFF(%rip), %rax ; mov %fs:(%rax), %rax ; ret */
    if (take(&at, "\x48\x8b\x05", 3)) {
        const unsigned char *next = at + 4;
        const int64_t *got = (const int64_t *)(const void *)(next + read_i32(at));
        if (memcmp(next, "\x64\x48\x8b\x00\xc3", 5) != 0)
            return 0;
        g_tp_offset = (intptr_t)*got;
        return SLOT_TP_OFFSET;
    }
    /* General-dynamic, the variable in a shared libpython:
         [sub $8, %rsp] ; data16 lea idx@TLSGD(%rip), %rdi ;
         data16 data16 rex.W call __tls_get_addr ; mov (%rax), %rax */
    take(&at, "\x48\x83\xec\x08", 4);
    if (take(&at, "\x66\x48\x8d\x3d", 4)) {
        const unsigned char *next = at + 4;
        if (memcmp(next, "\x66\x66\x48\xe8", 4) != 0 || memcmp(next + 8, "\x48\x8b\x00", 3) != 0)
            return 0;
        g_tls_index = (void *)(uintptr_t)(next + read_i32(at));
        return SLOT_TLS_INDEX;
    }
    return SLOT_NONE;
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

static PyThreadState *api_tstate(void)
{
#if PY_VERSION_HEX >= 0x030D0000
    return PyThreadState_GetUnchecked();
#else
    return _PyThreadState_UncheckedGet();
#endif
}

int oa_tstate_slot_init(void)
{
    if (atomic_load_explicit(&g_slot_kind, memory_order_acquire) != SLOT_NONE)
        return 1;
    PyThreadState *api = api_tstate();
    if (api == NULL)
        return 0;
#if PY_VERSION_HEX >= 0x030D0000
    const unsigned char *code = (const unsigned char *)(uintptr_t)&PyThreadState_GetUnchecked;
#else
    const unsigned char *code = (const unsigned char *)(uintptr_t)&_PyThreadState_UncheckedGet;
#endif
    int kind = parse_getter(code);
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
        return api_tstate();
    oa_tstate_slot = slot;
    return *slot;
}

#endif
