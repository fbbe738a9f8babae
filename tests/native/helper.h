uintptr_t h_malloc(int domain, size_t size);
uintptr_t h_calloc(int domain, size_t n, size_t size);
uintptr_t h_realloc(int domain, uintptr_t ptr, size_t size);
void h_free(int domain, uintptr_t ptr);
int h_alloc_many(int domain, size_t size, int n, uintptr_t *out);
void h_free_many(int domain, uintptr_t *ptrs, int n);
int h_realloc_chain(int domain, const size_t *sizes, int n, uintptr_t *out);
int h_calloc_many(int domain, size_t nelem, size_t elsize, int count, uintptr_t *out);
int h_alloc_many_measured(int domain, size_t size, int n, uint64_t group, uint64_t *delta);
int h_cross_measured(int alloc_domain, int free_domain, size_t size, int n, uint64_t group,
                     uint64_t *delta);
uintptr_t h_native_call(int fn, size_t a, size_t b);
int h_native_free(int fn, uintptr_t p, size_t alignment, size_t size);
int h_native_call_measured(int fn, size_t a, size_t b, uint64_t group, uint64_t *delta,
                           uintptr_t *out);
int h_native_realloc_measured(uintptr_t p, size_t size, uint64_t group, uint64_t *delta,
                              uintptr_t *out);
int h_native_free_measured(int fn, uintptr_t p, size_t alignment, size_t size, uint64_t group,
                           uint64_t *delta);
int h_call_alloc_measured(uintptr_t fn, size_t size, uint64_t group, uint64_t *delta,
                          uintptr_t *out);
int h_call_free_measured(uintptr_t fn, uintptr_t p, uint64_t group, uint64_t *delta);
int h_free_measured(int domain, uintptr_t ptr, uint64_t group, uint64_t *delta);
int h_interleaved_measured(size_t mem_size, int other_domain, size_t other_size, int n,
                           uint64_t group, uint64_t *delta);
int h_peak_sequence(int domain, size_t size, int n1, int k, int n2, int keep);
void h_peak_release(void);
void h_allocators_snapshot(void);
int h_allocator_changes(int domain);
int h_sigterm_in_fork_children(void);
