/*
 * Interned Python stacks of sampled allocations: frames by (code object,
 * line), stacks by their frame ids, and an index of the sites (code object,
 * instruction offset) already mapped to a frame. Interning runs under the GIL; code
 * objects are kept alive by a reference so their address is never reused
 * for another function. Frames come from compat/frames.c.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "stacks.h"

#include <stdlib.h>
#include <string.h>

#include "../api/tracker_api.h"
#include "../compat/frames.h"
#include "../compat/thread_state.h"

#define OA_MAX_FRAMES (1u << 18)
#define OA_MAX_STACKS (1u << 18)
#define OA_MAX_POOL (1u << 23)
#define OA_MAX_SITES (1u << 20) /* slots of the site index at most */

typedef struct {
    PyObject *code; /* strong reference */
    int line;
    char *function;
    char *filename;
} oa_frame_rec;

typedef struct {
    uint32_t offset;
    uint32_t depth;
    uint64_t hash;
} oa_stack_rec;

static uint32_t g_depth = 32;

/* Interning, under the GIL. Index tables hold id + 1 (0: empty). */
static oa_frame_rec *g_frames;
static uint32_t g_nframes, g_capframes;
static uint32_t *g_frame_index;
static uint32_t g_frame_index_cap;
static oa_stack_rec *g_stacks;
static uint32_t g_nstacks = 2, g_capstacks; /* 0: no stack, 1: dropped */
static uint32_t *g_stack_index;
static uint32_t g_stack_index_cap;
static uint32_t *g_pool;
static uint32_t g_npool, g_cappool;
static uint64_t g_stacks_dropped;

/* Sites: (code object, instruction offset) -> frame id, so a sample at a
   site seen before skips the line-table walk (PyCode_Addr2Line), which was
   nearly all of a sample's cost: callgrind, the suite's request item,
   counts mode with the default 512 KiB sampling, 20k instructions per
   request, 6 % of what counting added. An entry names a frame whose code
   object g_frames holds a reference to, so its address is never another
   code object's. Open addressing, half full at most; once OA_MAX_SITES
   slots would not do, sites not yet indexed are walked every time. */
typedef struct {
    void *code;
    int offset;
    uint32_t frame1; /* frame id + 1; 0: empty slot */
} oa_site;

static oa_site *g_sites;
static uint32_t g_nsites, g_site_cap;


static char *copy_str(PyObject *s)
{
    const char *utf8 = NULL;
    Py_ssize_t n = 0;
    if (s != NULL && PyUnicode_Check(s)) {
        if (PyUnicode_IS_COMPACT_ASCII(s)) {
            utf8 = (const char *)PyUnicode_DATA(s);
            n = PyUnicode_GET_LENGTH(s);
        } else {
            /* May fill the string's UTF-8 cache (a plain, untracked block)
               or fail; keep whatever exception was already being raised. */
            PyObject *type, *value, *tb;
            PyErr_Fetch(&type, &value, &tb);
            utf8 = PyUnicode_AsUTF8AndSize(s, &n);
            if (utf8 == NULL)
                PyErr_Clear();
            PyErr_Restore(type, value, tb);
        }
    }
    if (utf8 == NULL) {
        utf8 = "?";
        n = 1;
    }
    char *out = malloc((size_t)n + 1);
    if (out != NULL) {
        memcpy(out, utf8, (size_t)n);
        out[n] = '\0';
    }
    return out;
}

static inline uint64_t mix(uint64_t h, uint64_t v)
{
    h ^= v + UINT64_C(0x9E3779B97F4A7C15) + (h << 6) + (h >> 2);
    return h * UINT64_C(0xBF58476D1CE4E5B9);
}

/* Make room for `need` elements of `elem` bytes in *arr (capacity *cap,
   doubled from `first`). Returns 0, or -1 when memory ran out (*arr kept). */
static int grow_array(void **arr, uint32_t *cap, uint32_t need, size_t elem, uint32_t first)
{
    if (need <= *cap)
        return 0;
    uint32_t nc = *cap ? *cap : first;
    while (nc < need)
        nc *= 2;
    void *grown = realloc(*arr, (size_t)nc * elem);
    if (grown == NULL)
        return -1;
    *arr = grown;
    *cap = nc;
    return 0;
}

static int grow_index(uint32_t **index, uint32_t *cap, uint32_t count,
                      uint64_t (*hash_of)(uint32_t id))
{
    if ((count + 1) * 2 <= *cap)
        return 0;
    uint32_t ncap = *cap ? *cap * 2 : 1024;
    uint32_t *fresh = calloc(ncap, sizeof(uint32_t));
    if (fresh == NULL)
        return -1;
    for (uint32_t i = 0; i < *cap; i++) {
        uint32_t id1 = (*index)[i];
        if (id1 == 0)
            continue;
        uint32_t j = (uint32_t)(hash_of(id1 - 1) & (ncap - 1));
        while (fresh[j] != 0)
            j = (j + 1) & (ncap - 1);
        fresh[j] = id1;
    }
    free(*index);
    *index = fresh;
    *cap = ncap;
    return 0;
}

static uint64_t frame_hash(uint32_t id)
{
    return mix(mix(0, (uint64_t)(uintptr_t)g_frames[id].code), (uint64_t)g_frames[id].line);
}

static uint64_t stack_hash(uint32_t id)
{
    return g_stacks[id].hash;
}

/* Frame id of (code, line), interning it on first sight; UINT32_MAX if full. */
static uint32_t intern_frame(PyObject *code, int line)
{
    uint64_t h = mix(mix(0, (uint64_t)(uintptr_t)code), (uint64_t)line);
    if (g_frame_index_cap) {
        for (uint32_t j = (uint32_t)(h & (g_frame_index_cap - 1));; j = (j + 1) & (g_frame_index_cap - 1)) {
            uint32_t id1 = g_frame_index[j];
            if (id1 == 0)
                break;
            if (g_frames[id1 - 1].code == code && g_frames[id1 - 1].line == line)
                return id1 - 1;
        }
    }
    if (g_nframes >= OA_MAX_FRAMES)
        return UINT32_MAX;
    if (grow_array((void **)&g_frames, &g_capframes, g_nframes + 1, sizeof(oa_frame_rec), 1024) != 0)
        return UINT32_MAX;
    if (grow_index(&g_frame_index, &g_frame_index_cap, g_nframes, frame_hash) != 0)
        return UINT32_MAX;
    PyCodeObject *co = (PyCodeObject *)code;
    oa_frame_rec *f = &g_frames[g_nframes];
    f->code = code;
    f->line = line;
    f->function = copy_str(oa_code_name(co));
    f->filename = copy_str(oa_code_filename(co));
    Py_INCREF(code); /* never a deallocation: safe in the hook */
    uint32_t j = (uint32_t)(h & (g_frame_index_cap - 1));
    while (g_frame_index[j] != 0)
        j = (j + 1) & (g_frame_index_cap - 1);
    g_frame_index[j] = ++g_nframes;
    return g_nframes - 1;
}

static uint32_t intern_stack(const uint32_t *ids, uint32_t depth)
{
    if (depth == 0)
        return OA_STACK_NONE;
    uint64_t h = depth;
    for (uint32_t i = 0; i < depth; i++)
        h = mix(h, ids[i]);
    if (g_stack_index_cap) {
        for (uint32_t j = (uint32_t)(h & (g_stack_index_cap - 1));; j = (j + 1) & (g_stack_index_cap - 1)) {
            uint32_t id1 = g_stack_index[j];
            if (id1 == 0)
                break;
            oa_stack_rec *s = &g_stacks[id1 - 1];
            if (s->hash == h && s->depth == depth &&
                memcmp(&g_pool[s->offset], ids, depth * sizeof(uint32_t)) == 0)
                return id1 - 1;
        }
    }
    if (g_nstacks >= OA_MAX_STACKS || g_npool + depth > OA_MAX_POOL)
        goto dropped;
    if (grow_array((void **)&g_stacks, &g_capstacks, g_nstacks + 1, sizeof(oa_stack_rec), 1024) != 0 ||
        grow_array((void **)&g_pool, &g_cappool, g_npool + depth, sizeof(uint32_t), 4096) != 0)
        goto dropped;
    if (grow_index(&g_stack_index, &g_stack_index_cap, g_nstacks, stack_hash) != 0)
        goto dropped;
    oa_stack_rec *s = &g_stacks[g_nstacks];
    s->offset = g_npool;
    s->depth = depth;
    s->hash = h;
    memcpy(&g_pool[g_npool], ids, depth * sizeof(uint32_t));
    g_npool += depth;
    uint32_t j = (uint32_t)(h & (g_stack_index_cap - 1));
    while (g_stack_index[j] != 0)
        j = (j + 1) & (g_stack_index_cap - 1);
    g_stack_index[j] = ++g_nstacks;
    return g_nstacks - 1;
dropped:
    g_stacks_dropped++;
    return OA_STACK_DROPPED;
}

static inline uint32_t site_slot(void *code, int offset, uint32_t cap)
{
    return (uint32_t)(mix(mix(0, (uint64_t)(uintptr_t)code), (uint64_t)(uint32_t)offset) &
                      (cap - 1));
}

/* Room for one more site; 0 when the index cannot (or may not) grow. */
static int sites_room(void)
{
    if ((g_nsites + 1) * 2 <= g_site_cap)
        return 1;
    uint32_t ncap = g_site_cap ? g_site_cap * 2 : 1024;
    if (ncap > OA_MAX_SITES)
        return 0;
    oa_site *fresh = calloc(ncap, sizeof(oa_site));
    if (fresh == NULL)
        return 0;
    for (uint32_t i = 0; i < g_site_cap; i++) {
        if (g_sites[i].frame1 == 0)
            continue;
        uint32_t j = site_slot(g_sites[i].code, g_sites[i].offset, ncap);
        while (fresh[j].frame1 != 0)
            j = (j + 1) & (ncap - 1);
        fresh[j] = g_sites[i];
    }
    free(g_sites);
    g_sites = fresh;
    g_site_cap = ncap;
    return 1;
}

/* Frame id of the instruction at `offset` in `code`: from the site index,
   else from the line table (then indexed); UINT32_MAX when the frame table
   is full. */
static uint32_t site_frame(void *code, int offset)
{
    uint32_t j = 0;
    if (g_site_cap) {
        for (j = site_slot(code, offset, g_site_cap);; j = (j + 1) & (g_site_cap - 1)) {
            oa_site *site = &g_sites[j];
            if (site->frame1 == 0)
                break;
            if (site->code == code && site->offset == offset)
                return site->frame1 - 1;
        }
    }
    uint32_t id = intern_frame((PyObject *)code, oa_code_line(code, offset));
    if (id == UINT32_MAX || !sites_room())
        return id;
    j = site_slot(code, offset, g_site_cap);
    while (g_sites[j].frame1 != 0)
        j = (j + 1) & (g_site_cap - 1);
    g_sites[j] = (oa_site){code, offset, id + 1};
    g_nsites++;
    return id;
}

/* Stack of the running thread; only from MEM/OBJ hooks (GIL held). */
uint32_t oa_capture_stack(void)
{
    PyThreadState *ts = OA_TSTATE();
    if (ts == NULL)
        return OA_STACK_NONE;
    void *codes[OA_MAX_DEPTH];
    int offsets[OA_MAX_DEPTH];
    uint32_t ids[OA_MAX_DEPTH];
    int n = oa_walk_stack(ts, (int)g_depth, codes, offsets);
    uint32_t depth = 0;
    for (int i = 0; i < n; i++) {
        uint32_t id = site_frame(codes[i], offsets[i]);
        if (id == UINT32_MAX)
            break;
        ids[depth++] = id;
    }
    return intern_stack(ids, depth);
}

int oa_stacks_frames(const uint32_t *stacks, int n, uint32_t *frames, int max_frames,
                     int *depths)
{
    if (n < 0 || max_frames < 0)
        return OA_ERR_BAD_ARGUMENT;
    /* One GIL hand-over for all of a drain batch's new stacks: a cffi call
       releases the GIL, and taking it back here waits for the program. */
    PyGILState_STATE gil = PyGILState_Ensure();
    for (int i = 0; i < n; i++) {
        uint32_t *out = frames + (size_t)i * (size_t)max_frames;
        int depth = 0;
        if (stacks[i] >= 2 && stacks[i] < g_nstacks) {
            oa_stack_rec *s = &g_stacks[stacks[i]];
            for (; depth < (int)s->depth && depth < max_frames; depth++)
                out[depth] = g_pool[s->offset + (uint32_t)depth];
        }
        depths[i] = depth;
    }
    PyGILState_Release(gil);
    return OA_OK;
}

int oa_frames_get(const uint32_t *frames, int n, oa_frame_info *out)
{
    if (n < 0)
        return OA_ERR_BAD_ARGUMENT;
    PyGILState_STATE gil = PyGILState_Ensure();
    for (int i = 0; i < n; i++) {
        uint32_t frame = frames[i];
        if (frame < g_nframes) {
            /* The strings live as long as the process: safe to hand out. */
            out[i].function = g_frames[frame].function ? g_frames[frame].function : "?";
            out[i].filename = g_frames[frame].filename ? g_frames[frame].filename : "?";
            out[i].line = g_frames[frame].line;
        } else {
            out[i].function = out[i].filename = NULL; /* not a frame id */
            out[i].line = 0;
        }
    }
    PyGILState_Release(gil);
    return OA_OK;
}

void oa_stacks_set_depth(uint32_t depth)
{
    g_depth = depth;
}

void oa_stacks_counts(uint64_t *frames, uint64_t *stacks, uint64_t *dropped)
{
    *frames = g_nframes;
    *stacks = g_nstacks - 2;
    *dropped = g_stacks_dropped;
}

uint64_t oa_stacks_bytes(void)
{
    uint64_t b = (uint64_t)g_capframes * sizeof(oa_frame_rec) +
                 (uint64_t)g_frame_index_cap * sizeof(uint32_t) +
                 (uint64_t)g_capstacks * sizeof(oa_stack_rec) +
                 (uint64_t)g_stack_index_cap * sizeof(uint32_t) +
                 (uint64_t)g_cappool * sizeof(uint32_t) +
                 (uint64_t)g_site_cap * sizeof(oa_site);
    for (uint32_t i = 0; i < g_nframes; i++) {
        b += g_frames[i].function ? strlen(g_frames[i].function) + 1 : 0;
        b += g_frames[i].filename ? strlen(g_frames[i].filename) + 1 : 0;
    }
    return b;
}
