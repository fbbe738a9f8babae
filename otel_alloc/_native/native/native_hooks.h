/*
 * Native mode (native_hooks.c): the malloc family as called by extension
 * modules and the shared libraries they load, charged to the current group
 * in the native domain (OA_DOMAIN_NATIVE). The route is GOT patching
 * (elf_patch.h); libraries loaded later are patched by our dlopen.
 */
#ifndef OA_NATIVE_HOOKS_H
#define OA_NATIVE_HOOKS_H

#include <stdatomic.h>
#include <stdint.h>

#pragma GCC visibility push(hidden)

/* Native mode is on: the GOT slots point at our hooks. */
extern _Atomic int g_native_on;

/* Patch every loaded object (OA_OK, OA_ALREADY, or OA_ERR_NATIVE when a GOT
   page could not be made writable: then nothing stays patched), and
   restore them. Both with the GIL held; oa_uninstall calls the second. */
int oa_native_start(void);
void oa_native_stop(void);

#pragma GCC visibility pop

#endif
