"""What a code line run once a span costs on this host's wall clock (issue 18).

Counts mode's span path runs about 190 lines of code (64 bytes each) once a
span, and callgrind says they miss the instruction cache each time and push
some of the interpreter's code out. This host has no hardware counters, so
this probe measures that from outside: the suite's ``spans`` item, SDK spans
and no tracker, where each span first runs ``k`` lines of code of its own
(``cold_lines/cold_lines.c``: one-line functions chained by direct jumps,
1 KiB apart). Spans of each ``k`` (0 included) take turns span by span, in a
rotating order, so a slow spell of the host falls on all of them alike.

For each ``k`` it prints the median of the per-span differences from the
neighbouring ``k = 0`` span, what the same ``k`` lines take run hot (back to
back), and the rest divided by ``k``: what a line costs for being cold.
Usage::

    python benchmarks/bench_cold_lines.py [--blocks 100000] [--lines 96,192,288]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import suite_child
from bench_util import build_probe
from suite_items import ITEMS

HERE = Path(__file__).resolve().parent / "cold_lines"
MAX_LINES = 512


def hot_ns(run: Callable[[int], int], lines: int, calls: int = 20000) -> float:
    """Nanoseconds ``lines`` probe lines take beyond a call of none, run back to back."""
    def timed(k: int) -> float:
        start = time.perf_counter()
        for _ in range(calls):
            run(k)
        return time.perf_counter() - start
    pairs = [(timed(lines), timed(0)) for _ in range(7)]
    return statistics.median(a - b for a, b in pairs) / calls * 1e9


def lines_arg(text: str) -> list[int]:
    """``--lines``: line counts from 1 to 512, comma-separated."""
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        counts = []
    if not counts or any(not 0 < k <= MAX_LINES for k in counts):
        raise argparse.ArgumentTypeError(
            f"{text!r}: give line counts from 1 to {MAX_LINES}, comma-separated (e.g. 96,192)")
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=100000,
                        help="spans of each line count (default 100000)")
    parser.add_argument("--lines", type=lines_arg, default=[96, 192, 288],
                        help="cold line counts to probe (default 96,192,288)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="oa-cold-lines-") as target:
        # Source order is address order: the chain's 1 KiB steps.
        run = build_probe(HERE, "_oa_cold_lines", Path(target),
                          ("-O2", "-fno-toplevel-reorder")).lib.oa_cold_lines_run
        op = ITEMS["spans"].build()
        counts = [0, *args.lines]
        tracing = suite_child.Tracing("untraced", True, None)
        span, clock = tracing.span, time.perf_counter_ns
        ns: dict[int, list[int]] = {k: [] for k in counts}
        try:
            for number in range(args.blocks):
                turn = number % len(counts)
                for k in counts[turn:] + counts[:turn]:
                    start = clock()
                    with span("spans"):
                        run(k)
                        op(span)
                    ns[k].append(clock() - start)
        finally:
            tracing.close()
        warm = args.blocks // 10
        base = ns[0][warm:]
        print(f"spans, SDK alone, {args.blocks} spans of each line count taking turns; "
              f"k = 0: median {statistics.median(base) / 1000:.2f} us a span")
        print("  lines   adds a span (median)   hot     cold, a line")
        for k in args.lines:
            added = statistics.median(b - a for a, b in zip(base, ns[k][warm:], strict=True))
            hot = hot_ns(run, k)
            cold = (added - hot) / k
            print(f"  {k:5d}   {added:8.0f} ns            {hot:5.0f} ns  {cold:6.2f} ns")


if __name__ == "__main__":
    main()
