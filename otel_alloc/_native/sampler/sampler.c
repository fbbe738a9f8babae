/*
 * Sampled allocation sites.
 *
 * Poisson sampling over bytes: each thread counts down a random number of
 * bytes drawn from an exponential distribution with the configured mean; the
 * allocation that crosses zero is sampled. An allocation of s bytes is thus
 * sampled with probability 1 - exp(-s / mean), independent of how it was
 * split into calls, and Python weighs each sample by the inverse of that.
 *
 * A MEM/OBJ sample records the Python stack (compat/frames.c), interned: frames by
 * (code object, line), stacks by their frame ids. Interning runs under the
 * GIL; code objects are kept alive by a reference so their address is never
 * reused for another function. RAW samples carry no stack (no GIL there).
 * Samples go to a bounded ring that Python drains; in live mode the sampled
 * block is flagged in the pointer table and its free is reported too.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "sampler.h"

#include "../accounting/process_stats.h"
#include "../accounting/threads.h"
#include "../api/tracker_api.h"
#include "../compat/thread_state.h"
#include "../core/hooks.h"
#include "../support/ring.h"
#include "../support/spinlock.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../compat/frames.h"
#include "../support/rng.h"

#define OA_MAX_DEPTH 128
#define OA_MAX_FRAMES (1u << 18)
#define OA_MAX_STACKS (1u << 18)
#define OA_MAX_POOL (1u << 23)

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

_Atomic uint64_t g_sample_mean;
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

/* Ring of samples and the sampled-block table, under g_sample_lock. */
static oa_spin g_sample_lock = OA_SPIN_INIT;
static oa_ring g_samples;
static oa_ptable g_sampled;
static _Atomic uint64_t g_sample_ids, g_samples_taken, g_samples_dropped, g_sample_frees;

/* ------------------------------------------------------------ randomness */

static inline uint64_t rng_next(void)
{
    if (tls.rng == 0) {
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        tls.rng = ((uint64_t)(uintptr_t)&tls ^ (uint64_t)t.tv_nsec ^ ((uint64_t)t.tv_sec << 32)) | 1;
    }
    return oa_xorshift64s(&tls.rng);
}

static inline int64_t draw_interval(uint64_t mean)
{
    /* u in (0, 1]: -log(u) is exponential with mean 1. */
    double u = ((double)(rng_next() >> 11) + 1.0) * (1.0 / 9007199254740992.0);
    double v = -log(u) * (double)mean;
    return v >= 9.0e18 ? INT64_MAX : (int64_t)v + 1;
}

/* Threads draining samples (oa_sampler_pause_thread): their allocations are
   the profiler's own. Sampled, they refilled the buffer as fast as the drain
   emptied it, and at a small mean the drain never ended. Read only here,
   when the countdown crosses zero, so the per-allocation path is unchanged. */
static __thread int t_paused __attribute__((tls_model("initial-exec")));

void oa_sampler_pause_thread(int paused)
{
    t_paused += paused ? 1 : (t_paused > 0 ? -1 : 0);
}

_Atomic uint32_t g_sample_gen;

/* The countdown crossed zero, or was drawn under another configuration (or
   never): decide and refill. */
int oa_sample_tick_slow(uint64_t mean, size_t size)
{
    uint32_t gen = atomic_load_explicit(&g_sample_gen, OA_RELAXED);
    if (tls.sample_gen != gen) {
        /* This thread's first allocation under this configuration: a
           countdown left from another mean (up to many times this one) would
           skip what should be sampled now. This allocation starts a fresh
           countdown and is sampled if it crosses it. */
        tls.sample_gen = gen;
        tls.sample_left = draw_interval(mean) - (int64_t)size;
        if (tls.sample_left > 0)
            return 0;
    }
    while (tls.sample_left <= 0)
        tls.sample_left += draw_interval(mean);
    return !t_paused;
}

/* ------------------------------------------------------------- interning */

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

/* Stack of the running thread; only from MEM/OBJ hooks (GIL held). */
static uint32_t capture_stack(void)
{
    PyThreadState *ts = OA_TSTATE();
    if (ts == NULL)
        return OA_STACK_NONE;
    void *codes[OA_MAX_DEPTH];
    int lines[OA_MAX_DEPTH];
    uint32_t ids[OA_MAX_DEPTH];
    int n = oa_walk_stack(ts, (int)g_depth, codes, lines);
    uint32_t depth = 0;
    for (int i = 0; i < n; i++) {
        uint32_t id = intern_frame((PyObject *)codes[i], lines[i]);
        if (id == UINT32_MAX)
            break;
        ids[depth++] = id;
    }
    return intern_stack(ids, depth);
}

/* ------------------------------------------------------------ recording */

static void push_sample(const oa_sample *s)
{
    oa_spin_lock(&g_sample_lock);
    int rc = oa_ring_push(&g_samples, s);
    oa_spin_unlock(&g_sample_lock);
    if (rc != 0)
        atomic_fetch_add_explicit(&g_samples_dropped, 1, OA_RELAXED);
}

void oa_sample_alloc(int domain, void *ptr, size_t size, uint64_t gid, uint64_t mean, int tracked)
{
    oa_sample s;
    memset(&s, 0, sizeof(s));
    s.id = atomic_fetch_add_explicit(&g_sample_ids, 1, OA_RELAXED) + 1;
    s.group = gid;
    s.size = size;
    s.mean = mean;
    s.kind = OA_SAMPLE_ALLOC;
    s.domain = domain;
    s.native_id = tls.rec != NULL ? tls.rec->native_id : 0;
    /* RAW and native hooks may run without the GIL: they record the Python
       stack when the calling thread holds it (NumPy 2.5+ allocates array
       data with PyMem_RawMalloc, older NumPy with malloc, both from Python
       code holding the GIL). */
    int stack = (domain == OA_DOMAIN_NATIVE || domain == OA_DOMAIN_RAW) ? oa_holds_gil() : 1;
    s.stack = stack ? capture_stack() : OA_STACK_NONE;
    atomic_fetch_add_explicit(&g_samples_taken, 1, OA_RELAXED);
    if (tracked) {
        uint64_t os, om;
        oa_spin_lock(&g_sample_lock);
        if (g_sampled.slots != NULL)
            (void)oa_ptable_put(&g_sampled, (uintptr_t)ptr, 0, s.id << OA_SLOT_SHIFT, &os, &om);
        oa_spin_unlock(&g_sample_lock);
    }
    push_sample(&s);
}

void oa_sample_freed(void *ptr)
{
    uint64_t size = 0, meta = 0;
    oa_spin_lock(&g_sample_lock);
    int found = g_sampled.slots != NULL && oa_ptable_pop(&g_sampled, (uintptr_t)ptr, &size, &meta);
    oa_spin_unlock(&g_sample_lock);
    if (!found)
        return;
    oa_sample s;
    memset(&s, 0, sizeof(s));
    s.id = meta >> OA_SLOT_SHIFT;
    s.kind = OA_SAMPLE_FREE;
    atomic_fetch_add_explicit(&g_sample_frees, 1, OA_RELAXED);
    push_sample(&s);
}

/* ------------------------------------------------------------------ API */

int oa_sampler_configure(uint64_t mean_bytes, uint32_t max_depth, uint32_t capacity)
{
    if (max_depth < 1 || max_depth > OA_MAX_DEPTH || capacity < 1)
        return OA_ERR_BAD_ARGUMENT;
    PyGILState_STATE gil = PyGILState_Ensure();
    atomic_store_explicit(&g_sample_mean, 0, OA_RELAXED);
    g_depth = max_depth;
    int rc = OA_OK;
    oa_spin_lock(&g_sample_lock);
    if (g_sampled.slots == NULL && oa_ptable_init(&g_sampled) != 0)
        rc = OA_ERR_NOMEM;
    else
        oa_ptable_clear(&g_sampled);
    if (oa_ring_reset(&g_samples, capacity, sizeof(oa_sample)) != 0)
        rc = OA_ERR_NOMEM;
    oa_spin_unlock(&g_sample_lock);
    if (rc == OA_OK) {
        atomic_fetch_add_explicit(&g_sample_gen, 1, OA_RELAXED);
        atomic_store_explicit(&g_sample_mean, mean_bytes, OA_RELAXED);
    }
    PyGILState_Release(gil);
    return rc;
}

uint64_t oa_sampler_mean(void)
{
    return atomic_load_explicit(&g_sample_mean, OA_RELAXED);
}

int oa_drain_samples(oa_sample *out, int max_samples)
{
    oa_spin_lock(&g_sample_lock);
    int n = oa_ring_pop(&g_samples, out, max_samples);
    oa_spin_unlock(&g_sample_lock);
    return n;
}

int oa_stack_frames(uint32_t stack, uint32_t *frames, int max_frames)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    int n = 0;
    if (stack >= 2 && stack < g_nstacks) {
        oa_stack_rec *s = &g_stacks[stack];
        for (; n < (int)s->depth && n < max_frames; n++)
            frames[n] = g_pool[s->offset + (uint32_t)n];
    }
    PyGILState_Release(gil);
    return n;
}

int oa_frame_get(uint32_t frame, oa_frame_info *out)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    int rc = OA_ERR_BAD_ARGUMENT;
    if (frame < g_nframes) {
        /* The strings live as long as the process: safe to hand out. */
        out->function = g_frames[frame].function ? g_frames[frame].function : "?";
        out->filename = g_frames[frame].filename ? g_frames[frame].filename : "?";
        out->line = g_frames[frame].line;
        rc = OA_OK;
    }
    PyGILState_Release(gil);
    return rc;
}

void oa_sampler_stats_get(oa_sampler_stats *out)
{
    memset(out, 0, sizeof(*out));
    out->samples = atomic_load_explicit(&g_samples_taken, OA_RELAXED);
    out->dropped = atomic_load_explicit(&g_samples_dropped, OA_RELAXED);
    out->frees = atomic_load_explicit(&g_sample_frees, OA_RELAXED);
    PyGILState_STATE gil = PyGILState_Ensure();
    out->frames = g_nframes;
    out->stacks = g_nstacks - 2;
    out->stacks_dropped = g_stacks_dropped;
    out->bytes = oa_sampler_bytes();
    PyGILState_Release(gil);
}

uint64_t oa_sampler_bytes(void)
{
    uint64_t b = (uint64_t)g_capframes * sizeof(oa_frame_rec) +
                 (uint64_t)g_frame_index_cap * sizeof(uint32_t) +
                 (uint64_t)g_capstacks * sizeof(oa_stack_rec) +
                 (uint64_t)g_stack_index_cap * sizeof(uint32_t) +
                 (uint64_t)g_cappool * sizeof(uint32_t) + oa_ring_bytes(&g_samples) +
                 oa_ptable_bytes(&g_sampled);
    for (uint32_t i = 0; i < g_nframes; i++) {
        b += g_frames[i].function ? strlen(g_frames[i].function) + 1 : 0;
        b += g_frames[i].filename ? strlen(g_frames[i].filename) + 1 : 0;
    }
    return b;
}

void oa_sampler_atfork_prepare(void)
{
    oa_spin_lock(&g_sample_lock);
}

void oa_sampler_atfork_parent(void)
{
    oa_spin_unlock(&g_sample_lock);
}

/* Fork child: only this thread exists; pending samples are the parent's. */
void oa_sampler_atfork_child(void)
{
    atomic_flag_clear(&g_sample_lock.flag);
    oa_ring_clear(&g_samples);
    oa_ptable_clear(&g_sampled);
}

void oa_sampler_uninstall(void)
{
    /* Sampling ends with the install: a later install starts without it
       until something configures it again (the shared collector does when
       the mean it wants is not the native one). Left on, it went on marking
       groups as noted under a tracker installed for something else. */
    atomic_store_explicit(&g_sample_mean, 0, OA_RELAXED);
    oa_spin_lock(&g_sample_lock);
    oa_ptable_clear(&g_sampled);
    oa_ring_clear(&g_samples);
    oa_spin_unlock(&g_sample_lock);
}
