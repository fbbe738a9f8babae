"""How close estimate mode's live bytes come to live mode's exact ones.

Usage::

    python benchmarks/estimate_accuracy.py [--reps 200] [--means 1KiB,4KiB,64KiB]

Each workload keeps some of what it allocates alive in a group (a span, to
the processor). Live mode measures the group's live bytes exactly; estimate
mode, run in its own fresh interpreter per mean, measures them ``--reps``
times, each in a new group. Per workload and mean the table gives the exact
figure, the estimate's mean bias and standard deviation relative to it, the
95th percentile of the absolute relative error, and the standard deviation
expected from the sampling alone (``sqrt(live * mean)`` for blocks much
smaller than the mean). One run, no timing: these are not noisy.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
from collections.abc import Callable

KIB = 1024


def keep_small() -> object:
    """64 KiB kept in ~100-byte objects, 1 MiB churned."""
    churn = [bytearray(90) for _ in range(10_000)]
    del churn
    return [bytearray(90) for _ in range(640)]


def keep_1mib() -> object:
    """1 MiB kept in ~200-byte objects."""
    return [bytearray(150) for _ in range(5_300)]


def keep_dicts() -> object:
    """About 8 MiB kept in small dicts and strings (a parsed JSON document)."""
    return [{"id": i, "name": f"item-{i}", "tags": ["a", "b"]} for i in range(20_000)]


def keep_mixed() -> object:
    """Mixed sizes: a few large buffers, many small objects, 40 MiB churned."""
    for _ in range(40):
        buf = bytearray(1 << 20)
        del buf
    return ([bytes(300_000) for _ in range(4)] + [bytearray(40) for _ in range(20_000)]
            + [str(i) * 30 for i in range(3_000)])


WORKLOADS: dict[str, Callable[[], object]] = {
    "small 64KiB": keep_small, "1MiB": keep_1mib, "dicts": keep_dicts, "mixed": keep_mixed}


def child(mode: str, mean: int, reps: int) -> None:
    """Print {workload: [live bytes per rep]} measured in `mode`."""
    import gc

    import otel_alloc

    otel_alloc.install(mode, estimate_bytes=mean, native=False)
    gc.disable()
    out: dict[str, list[int]] = {}
    for name, work in WORKLOADS.items():
        work()  # warm-up: caches and free lists filled outside the groups
        values = []
        for _ in range(reps):
            group = otel_alloc.Group()
            with group:
                kept = work()
            values.append(group.stats().live_bytes)
            del kept
            group.release()
        out[name] = values
    print(json.dumps(out))


def _run(mode: str, mean: int, reps: int) -> dict[str, list[int]]:
    proc = subprocess.run([sys.executable, __file__, "--child", mode, str(mean), str(reps)],
                          capture_output=True, text=True, check=True)
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--means", default="1KiB,4KiB,64KiB")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), int(args.child[2]))
        return
    from otel_alloc.validation import size

    means = [size("--means", m.strip(), "", 0, 1) for m in args.means.split(",")]
    exact = {name: statistics.median(v) for name, v in _run("live", 4096, 5).items()}
    print("| workload | exact live | mean | bias | sd | p95 abs error | sd expected |")
    print("|---|---|---|---|---|---|---|")
    for mean in means:
        for name, values in _run("estimate", mean, args.reps).items():
            truth = exact[name]
            errors = sorted(abs(v - truth) / truth for v in values)
            bias = statistics.fmean(values) / truth - 1
            sd = statistics.pstdev(values) / truth
            expected = math.sqrt(truth * mean) / truth
            print(f"| {name} | {truth / KIB:,.0f} KiB | {mean // KIB} KiB | {bias:+.1%} | "
                  f"{sd:.1%} | {errors[int(0.95 * (len(errors) - 1))]:.1%} | "
                  f"{expected:.1%} |")


if __name__ == "__main__":
    main()
