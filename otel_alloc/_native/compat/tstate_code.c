/*
 * The getter forms tstate_code.h lists, matched byte for byte. Each is what
 * GCC and Clang emit for `return _Py_tss_tstate;` under one TLS model, with
 * or without an endbr64 (-fcf-protection) and a frame-pointer prologue
 * (-mno-omit-leaf-frame-pointer, as distributions that keep frame pointers
 * build). Anything else is OA_TS_CODE_NONE, and the hooks call the API.
 */
#include "tstate_code.h"

#include <string.h>

typedef struct {
    const unsigned char *start, *at, *end;
} cursor;

/* Whether the next bytes are `bytes`; moves past them if so. */
static int take(cursor *c, const char *bytes, size_t n)
{
    if ((size_t)(c->end - c->at) < n || memcmp(c->at, bytes, n) != 0)
        return 0;
    c->at += n;
    return 1;
}

/* A 32-bit little-endian signed operand; moves past it. 0 if none is left. */
static int take_i32(cursor *c, int32_t *out)
{
    if (c->end - c->at < 4)
        return 0;
    memcpy(out, c->at, sizeof *out);
    c->at += 4;
    return 1;
}

/* The position a RIP-relative displacement, just taken, refers to. */
static int64_t rip_target(const cursor *c, int32_t disp)
{
    return (int64_t)(c->at - c->start) + disp;
}

/* The return after the load: `ret`, or `pop %rbp; ret` after a prologue. */
static int take_return(cursor *c, int frame)
{
    return frame ? take(c, "\x5d\xc3", 2) : take(c, "\xc3", 1);
}

int oa_ts_code_parse(const unsigned char *code, size_t len, int64_t *value)
{
    cursor c = {code, code, code + len};
    int32_t disp;
    *value = 0;
    take(&c, "\xf3\x0f\x1e\xfa", 4); /* endbr64 */

    /* jmp *got(%rip) (bnd jmp under MPX-era flags) */
    if ((take(&c, "\xff\x25", 2) || take(&c, "\xf2\xff\x25", 3)) && take_i32(&c, &disp)) {
        *value = rip_target(&c, disp);
        return OA_TS_CODE_PLT;
    }
    int frame = take(&c, "\x55\x48\x89\xe5", 4); /* push %rbp; mov %rsp, %rbp */

    /* mov %fs:disp32, %rax ; ret */
    if (take(&c, "\x64\x48\x8b\x04\x25", 5)) {
        if (!take_i32(&c, &disp) || !take_return(&c, frame))
            return OA_TS_CODE_NONE;
        *value = disp;
        return OA_TS_CODE_TP_OFFSET;
    }
    /* mov off@GOTTPOFF(%rip), %rax ; mov %fs:(%rax), %rax ; ret */
    if (take(&c, "\x48\x8b\x05", 3)) {
        if (!take_i32(&c, &disp))
            return OA_TS_CODE_NONE;
        int64_t got = rip_target(&c, disp);
        if (!take(&c, "\x64\x48\x8b\x00", 4) || !take_return(&c, frame))
            return OA_TS_CODE_NONE;
        *value = got;
        return OA_TS_CODE_GOT_TP;
    }
    /* [sub $8, %rsp] ; data16 lea idx@TLSGD(%rip), %rdi ;
       data16 data16 rex.W call __tls_get_addr ; mov (%rax), %rax */
    if (!frame)
        take(&c, "\x48\x83\xec\x08", 4);
    if (take(&c, "\x66\x48\x8d\x3d", 4)) {
        if (!take_i32(&c, &disp))
            return OA_TS_CODE_NONE;
        int64_t index = rip_target(&c, disp);
        int32_t call;
        if (!take(&c, "\x66\x66\x48\xe8", 4) || !take_i32(&c, &call) ||
            !take(&c, "\x48\x8b\x00", 3))
            return OA_TS_CODE_NONE;
        *value = index;
        return OA_TS_CODE_TLS_INDEX;
    }
    return OA_TS_CODE_NONE;
}
