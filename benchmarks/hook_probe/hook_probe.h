/* The hook probe's functions (bench_hook_parts.py builds it with cffi). */
void oa_probe_save(int slot);
int oa_probe_restore(int slot);
void oa_probe_install_guard(void);
/* Bytes the guard hook has counted on this thread. */
unsigned long long oa_probe_guard_bytes(void);
