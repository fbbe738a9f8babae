/* The cold-line probe's one function (bench_cold_lines.py builds it with cffi;
   includers include <stdint.h> first: cffi reads this file as it is). */

/* Runs the first `lines` lines of the chain once; what the chain computed (1 for none). */
uint64_t oa_cold_lines_run(long lines);
