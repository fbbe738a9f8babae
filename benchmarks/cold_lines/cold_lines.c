/*
 * Cold-line probe for bench_cold_lines.py: 512 functions of one 64-byte
 * code line each, chained by direct tail jumps. oa_cold_lines_run(k) runs
 * the first k of the chain once, so a span that calls it runs k code lines
 * of its own, as the span path's once-a-span code does.
 *
 * The functions sit in source order (built with -fno-toplevel-reorder):
 * line_A_B at line 16*A + B. The chain goes line_A_B -> line_(A+1)_B, 1 KiB
 * further on, and from row 31 to row 0 of the next column, so no call lands
 * on the line after the one before it (the next-line prefetch cannot fetch
 * it ahead) and every jump is direct, like the span path's calls.
 */
#include <stdint.h>

#include "cold_lines.h"

#define ROWS 32
#define LINE(a, b) line_##a##_##b

/* Each function: a few dependent integer operations (about 40 bytes with
   the test and the jump), padded to its own line. */
#define DEFINE(a, an, b, bn)                                                                      \
    static __attribute__((noinline, aligned(64))) uint64_t LINE(a, b)(uint64_t x, long left)     \
    {                                                                                             \
        x = x * (2u * (16u * a + b) + 3u) + (16u * a + b);                                        \
        x ^= x >> ((a + b) % 13 + 3);                                                             \
        x += 7u * a + b;                                                                          \
        if (--left <= 0)                                                                          \
            return x;                                                                             \
        return (a == ROWS - 1 ? LINE(0, bn) : LINE(an, b))(x, left);                              \
    }
#define DECLARE(a, an, b, bn) static uint64_t LINE(a, b)(uint64_t x, long left);

/* Row a (the next row an): its 16 lines, b and the next column bn. */
#define ROW(F, a, an)                                                                             \
    F(a, an, 0, 1) F(a, an, 1, 2) F(a, an, 2, 3) F(a, an, 3, 4) F(a, an, 4, 5) F(a, an, 5, 6)     \
    F(a, an, 6, 7) F(a, an, 7, 8) F(a, an, 8, 9) F(a, an, 9, 10) F(a, an, 10, 11)                 \
    F(a, an, 11, 12) F(a, an, 12, 13) F(a, an, 13, 14) F(a, an, 14, 15) F(a, an, 15, 0)
#define ALL(F)                                                                                    \
    ROW(F, 0, 1) ROW(F, 1, 2) ROW(F, 2, 3) ROW(F, 3, 4) ROW(F, 4, 5) ROW(F, 5, 6) ROW(F, 6, 7)     \
    ROW(F, 7, 8) ROW(F, 8, 9) ROW(F, 9, 10) ROW(F, 10, 11) ROW(F, 11, 12) ROW(F, 12, 13)          \
    ROW(F, 13, 14) ROW(F, 14, 15) ROW(F, 15, 16) ROW(F, 16, 17) ROW(F, 17, 18) ROW(F, 18, 19)     \
    ROW(F, 19, 20) ROW(F, 20, 21) ROW(F, 21, 22) ROW(F, 22, 23) ROW(F, 23, 24) ROW(F, 24, 25)     \
    ROW(F, 25, 26) ROW(F, 26, 27) ROW(F, 27, 28) ROW(F, 28, 29) ROW(F, 29, 30) ROW(F, 30, 31)     \
    ROW(F, 31, 0)

ALL(DECLARE)
ALL(DEFINE)

uint64_t oa_cold_lines_run(long lines)
{
    return lines > 0 ? LINE(0, 0)(1, lines) : 1;
}
