/*
 * What Python sees of the native tracker: the one interface of the cffi
 * module otel_alloc.tracker._tracker, used only by otel_alloc.tracker._binding.
 *
 * This header is read twice: by the C compiler (through tracker_api.h, in
 * the tracker's C files and the cffi generated module) and by cffi's cdef
 * parser, so it must stay plain C declarations: no includes, no include
 * guards, no function-like macros.
 */

/* Install modes. */
#define OA_MODE_NONE 0
#define OA_MODE_COUNTS 1
#define OA_MODE_LIVE 2
/* Counts, plus live bytes estimated from a Poisson sample of the blocks
   (sampler/estimate.c): only sampled blocks enter the pointer tables. */
#define OA_MODE_ESTIMATE 3

/* Allocator domains, same values as PyMemAllocatorDomain. */
#define OA_DOMAIN_RAW 0
#define OA_DOMAIN_MEM 1
#define OA_DOMAIN_OBJ 2
/* Not a CPython domain: the malloc family called by extension modules and
   the libraries they load, seen in native mode (GOT patching). */
#define OA_DOMAIN_NATIVE 3

/* Result codes. */
#define OA_OK 0
#define OA_ALREADY 1
#define OA_ERR_MODE_CONFLICT -1
#define OA_ERR_FREE_THREADED -2
#define OA_ERR_NOMEM -3
#define OA_ERR_NOT_INSTALLED -4
#define OA_ERR_BAD_ARGUMENT -5
#define OA_ERR_STALE_GROUP -6
#define OA_ERR_NATIVE -7
/* install: a counts-mode hook kept in another tool's chain cannot see frees */
#define OA_ERR_KEPT_HOOK -8

/* Reserved group ids. */
#define OA_GROUP_NONE 0
#define OA_GROUP_OVERFLOW 1

/* Hook status bits (oa_hook_status): bit d = hook of domain d is in the chain,
   bit 8+d = hook of domain d is the outermost allocator. */
#define OA_HOOK_IN_CHAIN 1
#define OA_HOOK_ON_TOP 256

typedef struct {
    uint64_t alloc_bytes;
    uint64_t alloc_count;
    uint64_t freed_bytes;
    uint64_t freed_count;
    int64_t live_bytes;
    int64_t live_count;
    int64_t peak_bytes;
    uint64_t native_bytes; /* of alloc_bytes, allocated by native code (native mode) */
} oa_stats;

typedef struct {
    uint64_t native_id;
    int alive;
    oa_stats stats;
} oa_thread_stats;

typedef struct {
    uint64_t total_bytes;
    uint64_t table_bytes;
    uint64_t table_capacity;
    uint64_t live_blocks;
    uint64_t group_table_bytes;
    uint64_t thread_bytes;
    uint64_t event_bytes;
    uint64_t sampler_bytes;
} oa_memory;

typedef struct {
    uint64_t groups_open;
    uint64_t groups_capacity;
    uint64_t groups_dropped;
    uint64_t events_dropped;
    uint64_t untracked_frees;
    uint64_t tracking_failures;
    uint64_t replaced_blocks;
    uint64_t released_group_free_bytes;
    uint64_t threads_dropped;
    uint64_t stale_group_allocs;
    uint64_t subinterpreter_allocs; /* passed through untracked: made in a subinterpreter */
    uint64_t subinterpreter_bytes;
    uint64_t slots_parked; /* group slots held back while older blocks live */
    uint64_t rehooks;      /* hooks put back after another tool removed them */
} oa_counters;

typedef struct {
    uint64_t timestamp_ns;
    uint64_t size;
    uint64_t group;
    uint64_t native_id;
    int domain;
} oa_event;

/* Lifecycle. */
int oa_install(int mode, uint32_t max_groups, uint64_t threshold, uint32_t event_capacity);
int oa_uninstall(void);
int oa_mode(void);
/* Put back the hooks another tool removed from the chain while installed;
   how many domains were re-hooked. */
int oa_rehook(void);
int oa_hook_status(void);
int oa_set_enabled(int enabled);
/* Native mode (native/): charge the malloc family called by extension
   modules and the libraries they load. on = 1 needs an install; uninstall
   turns it off. OA_OK, OA_ALREADY, OA_ERR_NOT_INSTALLED or OA_ERR_NATIVE. */
int oa_native_set(int on);
int oa_native_enabled(void);
/* GOT slots of loaded objects that point at a native hook now. */
uint64_t oa_native_patched_slots(void);
int oa_is_enabled(void);
int oa_free_threaded_build(void);
/* 1 when the hooks read the thread state without calling the interpreter:
   always before 3.12; from 3.12 once an install found its thread-local
   (compat/tstate_slot.c). */
int oa_tstate_direct(void);
/* What the hooks read as the calling thread's state, against the API's
   answer: 2 the same and read directly, 1 the same through the API, 0
   another state. */
int oa_tstate_agrees(void);
/* Which form of thread-state getter `len` bytes of x86-64 code are (0 none,
   1 local-exec, 2 initial-exec, 3 general-dynamic, 4 a PLT entry), and the
   offset or position it gives in *value (compat/tstate_code.h). For tests. */
int oa_tstate_code_form(const unsigned char *code, uint32_t len, int64_t *value);
void oa_set_threshold(uint64_t threshold);
/* Estimate mode: the mean bytes between sampled blocks (the weight a small
   sampled block stands for). Takes effect at each thread's next draw; the
   blocks sampled before keep the weight they were given. OA_OK, or
   OA_ERR_BAD_ARGUMENT outside 1..OA_ESTIMATE_MEAN_MAX. */
#define OA_ESTIMATE_MEAN_MAX 67108864
int oa_set_estimate_mean(uint64_t mean_bytes);
uint64_t oa_estimate_mean(void);

/* Publish, on the tracker's module object, `group_var` (the
   contextvars.ContextVar[int] holding the running context's group id, which
   MEM/OBJ hooks read) and `_C_API` (the capsule of tracker_capi.h). Called
   once when otel_alloc.tracker._binding loads the module. */
int oa_publish(void);

/* Attribution: the calling thread's current group, after its context
   variable was set. */
void oa_set_thread_group(uint64_t group);
uint64_t oa_thread_group(void);

/* Groups. */
uint64_t oa_group_new(void);
int oa_group_close(uint64_t group);
int oa_group_release(uint64_t group);
int oa_group_stats(uint64_t group, oa_stats *out);
/* Close the group, read its figures, release it when `release` is set. */
int oa_group_finish(uint64_t group, int release, oa_stats *out);
/* Whether the event ring holds anything (a racy hint). */
int oa_events_pending(void);

/* Process, domain and thread figures. */
void oa_process_stats(oa_stats *out);
int oa_domain_stats(int domain, oa_stats *out);
int oa_threads_stats(oa_thread_stats *out, int max_threads);
int oa_current_thread_stats(oa_thread_stats *out);
void oa_reset_peaks(void);
void oa_memory_usage(oa_memory *out);
void oa_counters_get(oa_counters *out);

/* Large-allocation events, drained by Python. */
int oa_drain_events(oa_event *out, int max_events);

/* Sampled allocation sites (Poisson sampling by bytes). */
#define OA_SAMPLE_ALLOC 0
#define OA_SAMPLE_FREE 1
#define OA_STACK_NONE 0
#define OA_STACK_DROPPED 1

typedef struct {
    uint64_t id;
    uint64_t group;
    uint64_t native_id;
    uint64_t size;
    uint64_t mean;
    uint32_t stack;
    int kind;
    int domain;
} oa_sample;

typedef struct {
    const char *function;
    const char *filename;
    int line;
} oa_frame_info;

typedef struct {
    uint64_t samples;
    uint64_t dropped;
    uint64_t frees;
    uint64_t frames;
    uint64_t stacks;
    uint64_t stacks_dropped;
    uint64_t bytes;
} oa_sampler_stats;

/* mean_bytes 0 turns sampling off. Resets pending samples. */
int oa_sampler_configure(uint64_t mean_bytes, uint32_t max_depth, uint32_t capacity);
uint64_t oa_sampler_mean(void);
int oa_drain_samples(oa_sample *out, int max_samples);
/* Nonzero: allocations of the calling thread are not sampled (nests). */
void oa_sampler_pause_thread(int paused);
/* The frames of n interned stacks, and what n frames are, in one call each
   (a cffi call releases the GIL and these take it back to read the
   tables, so a drain batch's new stacks cost one hand-over, not one per
   stack): stack i's frame ids at frames[i * max_frames], innermost first,
   its depth in depths[i] (0 for an unknown id); frame i's info in out[i],
   NULL strings for an unknown id. OA_OK, or bad argument for a negative
   count. */
int oa_stacks_frames(const uint32_t *stacks, int n, uint32_t *frames, int max_frames,
                     int *depths);
int oa_frames_get(const uint32_t *frames, int n, oa_frame_info *out);
void oa_sampler_stats_get(oa_sampler_stats *out);
