/* The cold-line probe's one function (bench_cold_lines.py builds it with cffi). */
void oa_cold_lines_run(long lines);
