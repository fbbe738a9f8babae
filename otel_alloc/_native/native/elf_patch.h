/*
 * Patching the GOT of loaded ELF objects (elf_patch.c): the route by which
 * the native hooks (native_hooks.c) see the malloc family called by
 * extension modules and the shared libraries they load.
 *
 * Every object's relocations that bind a symbol we hook (DT_JMPREL: PLT
 * slots; DT_RELA: GLOB_DAT slots of code built with -fno-plt or taking a
 * function's address) get our function's address written into their slot.
 * Restoring writes back the address the symbol resolves to for everyone
 * else, so an object loaded or unloaded in between needs no record of ours.
 */
#ifndef OA_ELF_PATCH_H
#define OA_ELF_PATCH_H

#include <stddef.h>
#include <stdint.h>

#pragma GCC visibility push(hidden)

/* One symbol to redirect: slots bound to `name` get `hook` (or, restoring,
   `original`). */
typedef struct {
    const char *name;
    void *hook;
    void *original;
} oa_elf_symbol;

/* Which symbols of an object are patched: all of them, or only the loader
   ones (dlopen), for the object that holds libpython, whose own malloc calls
   are the RAW domain's. */
#define OA_PATCH_ALL 0
#define OA_PATCH_LOADER_ONLY 1

/* The decision for one object, from its path and whether it holds libpython. */
typedef int (*oa_elf_filter)(const char *path, int holds_python);

/* What oa_elf_patch does to each slot bound to one of the symbols. */
#define OA_ELF_PATCH 0   /* write the hook */
#define OA_ELF_RESTORE 1 /* write the original back where the hook is */
#define OA_ELF_COUNT 2   /* only count the slots that hold a hook */

/* Apply `action` to the slots of every loaded object that `filter` does
   not skip (it returns -1 to skip, or one of OA_PATCH_*). `nloader` is how
   many leading entries of `symbols` are loader symbols. Returns the number
   of slots written (counted, for OA_ELF_COUNT), or -1 when a page could not
   be made writable (the other slots are still done). */
int oa_elf_patch(const oa_elf_symbol *symbols, size_t nsymbols, size_t nloader, int action,
                 oa_elf_filter filter);


#pragma GCC visibility pop

#endif
