"""What native mode costs: counts and live mode with native on beside native off.

Three workloads: the request-like one of ``bench_core`` (Python objects;
native mode only adds the patched ``malloc`` calls of the interpreter's
extension modules), a NumPy-heavy job (array creation, arithmetic
temporaries, reductions: most bytes are native) and ``alloc``, a loop of
``np.empty(1024)`` (each array's 8 KiB data block is one native allocation
made under the GIL before NumPy 2.5 and one RAW allocation from 2.5: the
hooks' cost with little else around it). Each measurement runs in a fresh
interpreter; the variants are alternated within each round, and the medians
of the rounds are printed as ratios to untraced, with the ratio native on /
native off beside them. ``--against DIR`` measures another checkout of the
project too (built in place for this interpreter, e.g. a ``git worktree``
of an older commit), alternated with this one in every round, and prints
each variant's time here over its time there. ``--clock cpu`` times the
main thread's CPU time instead of the wall clock (time another process
takes from this one's CPU is then left out). Usage::

    python benchmarks/bench_native.py [--rounds 9] [--workloads request,numpy,alloc]
        [--against ../old-checkout] [--clock wall|cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench_util import alternated

HERE = Path(__file__).resolve().parent
VARIANTS = ("untraced", "counts", "counts+native", "live", "live+native")
SIZES = {"request": 3000, "numpy": 300, "alloc": 200_000}
CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}


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


def alloc_job(rounds: int) -> None:
    """Arrays made and dropped: four 8 KiB data blocks a round."""
    import numpy as np

    empty = np.empty
    for _ in range(rounds):
        empty(1024)
        empty(1024)
        empty(1024)
        empty(1024)


def child(variant: str, workload: str, size: int, clock: str) -> None:
    sys.path.insert(0, str(HERE))
    if workload == "numpy":
        def run(n: int) -> None:
            numpy_job(n)
    elif workload == "alloc":
        def run(n: int) -> None:
            alloc_job(n)
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
    now = CLOCKS[clock]
    start = now()
    run(size)
    print(json.dumps({"seconds": now() - start}))


def measure(variant: str, workload: str, size: int, clock: str, root: Path) -> float:
    """One run in a fresh interpreter, importing ``otel_alloc`` from the
    checkout ``root`` (ahead of any installed copy)."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run([sys.executable, __file__, "--child", variant, "--workload", workload,
                          "--size", str(size), "--clock", clock],
                         capture_output=True, text=True, check=True, env=env)
    return float(json.loads(out.stdout.strip().splitlines()[-1])["seconds"])


def _quartiles(values: list[float]) -> str:
    ordered = sorted(values)
    k = len(ordered) // 4
    return f"{ordered[k]:.3f}-{ordered[-1 - k]:.3f}"


def _report(workload: str, rounds: int, times: dict[str, list[float]]) -> None:
    base = statistics.median(times["untraced"])
    print(f"\n{workload} ({rounds} alternated rounds, medians; untraced "
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


def _check_against(value: str) -> Path:
    root = Path(value).resolve()
    if not (root / "otel_alloc" / "__init__.py").is_file():
        raise SystemExit(f"--against: {value!r} is not a checkout of this project (no "
                         "otel_alloc/__init__.py there); give the root of one, built in place")
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--workloads", default="request,numpy")
    parser.add_argument("--against", help="another checkout, measured beside this one")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall")
    parser.add_argument("--child", choices=VARIANTS)
    parser.add_argument("--workload", default="request", choices=sorted(SIZES))
    parser.add_argument("--size", type=int, default=0)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.workload, args.size or SIZES[args.workload], args.clock)
        return
    workloads = args.workloads.split(",")
    if unknown := [w for w in workloads if w not in SIZES]:
        raise SystemExit(f"--workloads: {','.join(unknown)} unknown; accepted: "
                         f"{', '.join(sorted(SIZES))}")
    if args.rounds < 1:
        raise SystemExit(f"--rounds: {args.rounds} is not a positive number of rounds")
    roots = {"here": HERE.parent}
    if args.against:
        roots["there"] = _check_against(args.against)
    for workload in workloads:
        runs = [(name, v) for name in roots for v in VARIANTS]
        times: dict[tuple[str, str], list[float]] = {run: [] for run in runs}
        for r in range(args.rounds):
            for name, variant in alternated(runs, r):
                times[(name, variant)].append(
                    measure(variant, workload, SIZES[workload], args.clock, roots[name]))
        for name in roots:
            if len(roots) > 1:
                print(f"\n[{name}: {roots[name]}]", end="")
            _report(workload, args.rounds, {v: times[(name, v)] for v in VARIANTS})
        if len(roots) > 1:
            print(f"\n{workload}: time here / time there, per round (median, quartiles)")
            for variant in VARIANTS:
                pairs = [a / b for a, b in zip(times[("here", variant)],
                                               times[("there", variant)], strict=True)]
                print(f"{variant:<16}{statistics.median(pairs):>8.3f}  {_quartiles(pairs)}")


if __name__ == "__main__":
    main()
