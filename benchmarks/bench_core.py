"""Tracker overhead on a request-like workload (issue: native tracking allocator).

Each measurement runs in a fresh interpreter, modes alternated, and the medians
of the runs are printed as ratios to untraced. Also reports live-mode
bookkeeping bytes per live block. Usage::

    python benchmarks/bench_core.py [--runs 5] [--requests 3000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench_util import alternated

HERE = Path(__file__).resolve().parent
MODES = ("untraced", "disabled", "counts", "sampled", "live", "tracemalloc")


def child(mode: str, requests: int) -> None:
    sys.path.insert(0, str(HERE))
    import workload

    group = None
    if mode in ("counts", "live"):
        import otel_alloc

        otel_alloc.install(mode)
        group = otel_alloc.Group()
        group.__enter__()
    elif mode == "sampled":  # counts + stack sampling at the default mean
        import otel_alloc
        from otel_alloc.profiling import sampling

        otel_alloc.install("counts")
        sampling.configure()
        group = otel_alloc.Group()
        group.__enter__()
    elif mode == "disabled":  # hooks in place, counting off: the pass-through floor
        import otel_alloc

        otel_alloc.install("counts")
        otel_alloc.disable()
    elif mode == "tracemalloc":
        import tracemalloc

        tracemalloc.start(1)
    workload.run(requests // 10)  # warm up
    start = time.perf_counter()
    workload.run(requests)
    elapsed = time.perf_counter() - start
    print(json.dumps({"mode": mode, "seconds": elapsed}))


def bytes_per_block() -> dict[str, float]:
    import otel_alloc

    sys.path.insert(0, str(HERE))
    otel_alloc.install("live")
    base = otel_alloc.memory_usage()
    keep = [{"i": i, "s": str(i)} for i in range(200_000)]
    usage = otel_alloc.memory_usage()
    result = {
        "live_blocks": usage.live_blocks,
        "table_bytes": usage.table_bytes,
        "bytes_per_live_block": usage.bytes_per_live_block,
        "tracker_total_bytes": usage.total_bytes,
        "blocks_added": usage.live_blocks - base.live_blocks,
    }
    del keep
    otel_alloc.uninstall()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--child", choices=MODES)
    parser.add_argument("--modes", default=",".join(MODES))
    args = parser.parse_args()
    if args.child:
        child(args.child, args.requests)
        return
    modes = args.modes.split(",")
    times: dict[str, list[float]] = {m: [] for m in modes}
    for run in range(args.runs):
        for mode in alternated(modes, run):
            out = subprocess.run(
                [sys.executable, __file__, "--child", mode, "--requests", str(args.requests)],
                check=True, capture_output=True, text=True,
            ).stdout
            times[mode].append(json.loads(out.strip().splitlines()[-1])["seconds"])
    base = statistics.median(times["untraced"])
    print(f"python {sys.version.split()[0]}, {args.runs} alternated runs of "
          f"{args.requests} requests, medians")
    for mode in modes:
        med = statistics.median(times[mode])
        print(f"  {mode:12s} {med * 1000:8.1f} ms   {med / base:6.2f}x untraced")
    print("live-mode bookkeeping:", json.dumps(bytes_per_block()))


if __name__ == "__main__":
    main()
