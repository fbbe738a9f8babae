"""What native mode costs: counts and live mode with native on beside native off.

Two workloads: the request-like one of ``bench_core`` (Python objects; native
mode only adds the patched ``malloc`` calls of the interpreter's extension
modules) and a NumPy-heavy job (array creation, arithmetic temporaries,
reductions: most bytes are native). Each measurement runs in a fresh
interpreter; the variants are alternated within each round, and the medians
of the rounds are printed as ratios to untraced, with the ratio native on /
native off beside them. Usage::

    python benchmarks/bench_native.py [--rounds 9] [--workloads request,numpy]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
VARIANTS = ("untraced", "counts", "counts+native", "live", "live+native")


def numpy_job(rounds: int) -> float:
    """Array work of a data-processing step; returns a checksum."""
    import numpy as np

    rng = np.random.default_rng(7)
    total = 0.0
    for _ in range(rounds):
        a = rng.random(20_000)
        b = np.sqrt(a * 2.0 + 1.0)            # temporaries
        c = np.concatenate([a, b])[::2].copy()
        m = np.outer(a[:200], b[:200])        # 320 KB
        total += float(c.sum() + m.mean() + np.sort(b)[100])
    return total


def child(variant: str, workload: str, size: int) -> None:
    sys.path.insert(0, str(HERE))
    if workload == "numpy":
        def run(n: int) -> None:
            numpy_job(n)
    else:
        import workload as request_like

        def run(n: int) -> None:
            request_like.run(n)

    if variant != "untraced":
        import otel_alloc

        mode, _, native = variant.partition("+")
        otel_alloc.install(mode, native=bool(native))
        otel_alloc.Group().__enter__()
    run(max(1, size // 10))  # warm up
    start = time.perf_counter()
    run(size)
    print(json.dumps({"seconds": time.perf_counter() - start}))


def measure(variant: str, workload: str, size: int) -> float:
    out = subprocess.run([sys.executable, __file__, "--child", variant, "--workload", workload,
                          "--size", str(size)], capture_output=True, text=True, check=True)
    return float(json.loads(out.stdout.strip().splitlines()[-1])["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--workloads", default="request,numpy")
    parser.add_argument("--child", choices=VARIANTS)
    parser.add_argument("--workload", default="request")
    parser.add_argument("--size", type=int, default=0)
    args = parser.parse_args()
    sizes = {"request": 3000, "numpy": 300}
    if args.child:
        child(args.child, args.workload, args.size or sizes[args.workload])
        return
    for workload in args.workloads.split(","):
        times: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for r in range(args.rounds):
            order = VARIANTS if r % 2 == 0 else tuple(reversed(VARIANTS))
            for variant in order:
                times[variant].append(measure(variant, workload, sizes[workload]))
        base = statistics.median(times["untraced"])
        print(f"\n{workload} ({args.rounds} alternated rounds, medians; untraced "
              f"{base * 1000:.0f} ms)")
        print(f"{'variant':<16}{'vs untraced':>12}{'min-max':>16}")
        for variant in VARIANTS:
            ratios = sorted(t / b for t, b in zip(times[variant], times["untraced"], strict=True))
            print(f"{variant:<16}{statistics.median(times[variant]) / base:>11.3f}x"
                  f"{ratios[0]:>8.2f}-{ratios[-1]:.2f}")
        for mode in ("counts", "live"):
            on = statistics.median(times[f"{mode}+native"])
            off = statistics.median(times[mode])
            print(f"native on / off, {mode}: {on / off:.3f}x")


if __name__ == "__main__":
    main()
