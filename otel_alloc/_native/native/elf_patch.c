/*
 * GOT patching (see elf_patch.h). The walk follows the dynamic section of
 * each object that dl_iterate_phdr reports; it reads only what the loader
 * has already mapped and relocated.
 */
#define _GNU_SOURCE
#include "elf_patch.h"

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <elf.h>
#include <link.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#if defined(__x86_64__)
#define OA_R_JUMP_SLOT R_X86_64_JUMP_SLOT
#define OA_R_GLOB_DAT R_X86_64_GLOB_DAT
#define OA_R_ABS R_X86_64_64
#elif defined(__aarch64__)
#define OA_R_JUMP_SLOT R_AARCH64_JUMP_SLOT
#define OA_R_GLOB_DAT R_AARCH64_GLOB_DAT
#define OA_R_ABS R_AARCH64_ABS64
#elif defined(__i386__)
#define OA_R_JUMP_SLOT R_386_JMP_SLOT
#define OA_R_GLOB_DAT R_386_GLOB_DAT
#define OA_R_ABS R_386_32
#else
#error "native mode: GOT patching is implemented for x86_64, aarch64 and i386"
#endif

#if __ELF_NATIVE_CLASS == 64
#define OA_R_SYM(info) ELF64_R_SYM(info)
#define OA_R_TYPE(info) ELF64_R_TYPE(info)
#else
#define OA_R_SYM(info) ELF32_R_SYM(info)
#define OA_R_TYPE(info) ELF32_R_TYPE(info)
#endif

typedef struct {
    const oa_elf_symbol *symbols;
    size_t nsymbols;
    size_t nloader;
    int action;
    oa_elf_filter filter;
    int written;
    int failed;
} walk_args;

/* What the dynamic section of one object says about its relocations. */
typedef struct {
    uintptr_t base;
    const ElfW(Sym) *symtab;
    const char *strtab;
    uintptr_t relro_start, relro_end; /* read-only after relocation */
} object_info;

static uintptr_t dyn_addr(uintptr_t base, ElfW(Addr) ptr)
{
    /* glibc relocates the dynamic section's pointers in place; an object it
       did not (the vDSO) still holds offsets from its base. */
    return ptr < base ? base + ptr : ptr;
}

static int contains(const struct dl_phdr_info *info, const void *addr)
{
    uintptr_t a = (uintptr_t)addr;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        uintptr_t start = info->dlpi_addr + ph->p_vaddr;
        if (ph->p_type == PT_LOAD && a >= start && a < start + ph->p_memsz)
            return 1;
    }
    return 0;
}

/* Write `value` into one GOT slot. A slot in the RELRO range is made
   writable for the write and read-only again after it. */
static int write_slot(const object_info *obj, void **slot, void *value)
{
    long page = sysconf(_SC_PAGESIZE);
    uintptr_t start = (uintptr_t)slot & ~(uintptr_t)(page - 1);
    int relro = (uintptr_t)slot >= obj->relro_start && (uintptr_t)slot < obj->relro_end;
    if (mprotect((void *)start, (size_t)page, PROT_READ | PROT_WRITE) != 0)
        return -1;
    /* Other threads may call through this slot right now: one atomic store
       of an aligned pointer, seen whole or not at all. */
    __atomic_store_n(slot, value, __ATOMIC_RELEASE);
    if (relro)
        (void)mprotect((void *)start, (size_t)page, PROT_READ);
    return 0;
}

static void patch_relocations(walk_args *args, const object_info *obj, uintptr_t table,
                              size_t table_bytes, int is_rela, size_t nsymbols)
{
    size_t entry = is_rela ? sizeof(ElfW(Rela)) : sizeof(ElfW(Rel));
    for (size_t off = 0; off + entry <= table_bytes; off += entry) {
        /* Rel is a prefix of Rela: offset and info are read the same way. */
        const ElfW(Rel) *rel = (const ElfW(Rel) *)(table + off);
        unsigned type = (unsigned)OA_R_TYPE(rel->r_info);
        size_t sym = OA_R_SYM(rel->r_info);
        /* PLT and GOT slots, and function pointers stored in data (libxml2's
           `xmlMalloc = malloc`, an allocator table), whose slot then holds
           exactly the function's address (no addend). */
        if (sym == 0 || (type != OA_R_JUMP_SLOT && type != OA_R_GLOB_DAT && type != OA_R_ABS) ||
            (type == OA_R_ABS && is_rela && ((const ElfW(Rela) *)rel)->r_addend != 0))
            continue;
        const char *name = obj->strtab + obj->symtab[sym].st_name;
        for (size_t i = 0; i < nsymbols; i++) {
            const oa_elf_symbol *s = &args->symbols[i];
            if (s->original == NULL || name[0] != s->name[0] || strcmp(name, s->name) != 0)
                continue;
            void **slot = (void **)(obj->base + rel->r_offset);
            void *now = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
            if (args->action == OA_ELF_COUNT) {
                args->written += now == s->hook;
                break;
            }
            int restore = args->action == OA_ELF_RESTORE;
            void *from = restore ? s->hook : NULL;
            void *to = restore ? s->original : s->hook;
            /* Patching skips slots already ours; restoring touches only
               slots that are ours. */
            if (now == to || (from != NULL && now != from))
                break;
            if (write_slot(obj, slot, to) != 0)
                args->failed = 1;
            else
                args->written++;
            break;
        }
    }
}

static int visit(struct dl_phdr_info *info, size_t size, void *data)
{
    walk_args *args = data;
    const ElfW(Dyn) *dyn = NULL;
    object_info obj = {.base = info->dlpi_addr};
    /* Never our own object: the tracker's bookkeeping is not charged. */
    if (contains(info, (const void *)oa_elf_patch))
        return 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_DYNAMIC)
            dyn = (const ElfW(Dyn) *)(info->dlpi_addr + ph->p_vaddr);
        else if (ph->p_type == PT_GNU_RELRO) {
            long page = sysconf(_SC_PAGESIZE);
            obj.relro_start = (info->dlpi_addr + ph->p_vaddr) & ~(uintptr_t)(page - 1);
            obj.relro_end = (info->dlpi_addr + ph->p_vaddr + ph->p_memsz) & ~(uintptr_t)(page - 1);
        }
    }
    if (dyn == NULL)
        return 0;
    int how = args->filter(info->dlpi_name != NULL ? info->dlpi_name : "",
                           contains(info, (const void *)PyMem_RawMalloc));
    if (how < 0)
        return 0;
    size_t nsymbols = how == OA_PATCH_LOADER_ONLY ? args->nloader : args->nsymbols;

    uintptr_t jmprel = 0, rela = 0, rel = 0;
    size_t jmprel_bytes = 0, rela_bytes = 0, rel_bytes = 0;
    int jmprel_is_rela = 1;
    for (; dyn->d_tag != DT_NULL; dyn++) {
        switch (dyn->d_tag) {
        case DT_SYMTAB: obj.symtab = (const ElfW(Sym) *)dyn_addr(obj.base, dyn->d_un.d_ptr); break;
        case DT_STRTAB: obj.strtab = (const char *)dyn_addr(obj.base, dyn->d_un.d_ptr); break;
        case DT_JMPREL: jmprel = dyn_addr(obj.base, dyn->d_un.d_ptr); break;
        case DT_PLTRELSZ: jmprel_bytes = dyn->d_un.d_val; break;
        case DT_PLTREL: jmprel_is_rela = dyn->d_un.d_val == DT_RELA; break;
        case DT_RELA: rela = dyn_addr(obj.base, dyn->d_un.d_ptr); break;
        case DT_RELASZ: rela_bytes = dyn->d_un.d_val; break;
        case DT_REL: rel = dyn_addr(obj.base, dyn->d_un.d_ptr); break;
        case DT_RELSZ: rel_bytes = dyn->d_un.d_val; break;
        default: break;
        }
    }
    if (obj.symtab == NULL || obj.strtab == NULL)
        return 0;
    if (jmprel != 0)
        patch_relocations(args, &obj, jmprel, jmprel_bytes, jmprel_is_rela, nsymbols);
    if (rela != 0)
        patch_relocations(args, &obj, rela, rela_bytes, 1, nsymbols);
    if (rel != 0)
        patch_relocations(args, &obj, rel, rel_bytes, 0, nsymbols);
    return 0;
}

int oa_elf_patch(const oa_elf_symbol *symbols, size_t nsymbols, size_t nloader, int action,
                 oa_elf_filter filter)
{
    walk_args args = {symbols, nsymbols, nloader, action, filter, 0, 0};
    dl_iterate_phdr(visit, &args);
    return args.failed ? -1 : args.written;
}
