"""Deterministic overhead ratios: instructions counted by valgrind's callgrind.

Wall-clock ratios on a shared machine move by up to half the overhead from
one run to the next; instruction counts do not move at all. For each variant
and workload this runs the workload twice in a fresh interpreter under
``valgrind --tool=callgrind`` (``PYTHONHASHSEED=0``), once with ``--small``
and once with ``--large`` operations, and takes the difference of the two
totals, so interpreter start-up, imports and install cancel out. Ratios are
to the untraced difference. They count instructions, not time: cache misses
and atomic operations cost more than their count says, so read them beside
the suite's wall-clock table, not instead of it. Usage::

    python benchmarks/callgrind_ratios.py [--workloads core,request,deltablue]
        [--variants untraced,disabled,counts,sampled,live,counts-native,live-native]
        [--small 300 --large 900]

(the README's figures: ``core`` 300/900, ``request`` 100/300, ``deltablue``
20/60, ``json_loads`` 30/90, ``numpy`` 10/30). The ``-native`` variants also hook native memory
(``native=True``); the others leave it off. Needs ``valgrind``; takes
about a minute per variant and workload.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
VARIANTS = ("untraced", "disabled", "counts", "sampled", "live", "counts-native", "live-native")
WORKLOADS = ("core", "request", "deltablue", "json_loads", "numpy")


def _workload(name: str) -> Callable[[int], object]:
    sys.path.insert(0, str(HERE))
    if name == "core":
        import workload

        return workload.run
    if name == "request":
        from request_like import handle

        return lambda n: [handle() for _ in range(n)]
    if name == "deltablue":
        from suite_items import _pyperformance

        delta_blue = _pyperformance("deltablue").delta_blue
        return lambda n: [delta_blue(100) for _ in range(n)]
    if name == "json_loads":
        from suite_items import _json_loads

        load = _json_loads()
        return lambda n: [load(None) for _ in range(n)]
    if name == "numpy":
        from numpy_job import step

        return lambda n: [step(i % 64) for i in range(n)]
    raise SystemExit(f"--workloads: unknown workload {name!r}; accepted: {', '.join(WORKLOADS)}")


def child(variant: str, workload: str, ops: int) -> None:
    """One measured run (inside valgrind): set the variant up, then run ``ops`` ops."""
    run = _workload(workload)
    if variant != "untraced":
        import otel_alloc

        mode, _, native = variant.partition("-")
        otel_alloc.install("live" if mode == "live" else "counts", native=native == "native")
        if variant == "disabled":
            otel_alloc.disable()
        else:
            if variant == "sampled":
                from otel_alloc.profiling import sampling

                sampling.configure()
            otel_alloc.Group().__enter__()
    run(3)  # warm-up: caches, lazy imports
    run(ops)


def instructions(variant: str, workload: str, ops: int) -> int:
    """Total instructions of one child run under callgrind."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        proc = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
             __file__, "--child", variant, "--workload", workload, "--ops", str(ops)],
            capture_output=True, text=True,
            # One BLAS thread: callgrind runs threads one at a time, and a
            # BLAS pool's waiting threads spin for as long as they are let,
            # which made the NumPy figures move from run to run.
            env={**os.environ, "PYTHONHASHSEED": "0", "OPENBLAS_NUM_THREADS": "1",
                 "OMP_NUM_THREADS": "1"})
        if proc.returncode != 0:
            raise SystemExit(f"callgrind run of {variant}/{workload} failed "
                             f"(exit {proc.returncode}):\n{proc.stderr[-2000:]}")
        found = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.MULTILINE)
        if found is None:
            raise RuntimeError(f"no instruction total in {out}")
        return int(found.group(1))


def _names(value: str, accepted: tuple[str, ...], option: str) -> list[str]:
    names = [n for n in value.split(",") if n]
    bad = [n for n in names if n not in accepted]
    if bad or not names:
        raise SystemExit(f"{option}: {','.join(bad) or repr(value)} not accepted; "
                         f"accepted: {', '.join(accepted)}")
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default="core")
    parser.add_argument("--variants", default="untraced,counts,live")
    parser.add_argument("--small", type=int, default=300)
    parser.add_argument("--large", type=int, default=900)
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--workload", default="core", help=argparse.SUPPRESS)
    parser.add_argument("--ops", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.workload, args.ops)
        return
    if not 0 < args.small < args.large:
        raise SystemExit(f"--small/--large: need 0 < small < large, got {args.small}/{args.large}")
    workloads = _names(args.workloads, WORKLOADS, "--workloads")
    variants = _names(args.variants, VARIANTS, "--variants")
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind not installed (apt-get install -y valgrind)")
    if "untraced" not in variants:
        variants.insert(0, "untraced")
    print(f"callgrind instructions, {args.large} minus {args.small} ops, PYTHONHASHSEED=0, "
          f"Python {sys.version.split()[0]}")
    for workload in workloads:
        diffs = {v: instructions(v, workload, args.large) - instructions(v, workload, args.small)
                 for v in variants}
        for variant in variants:
            print(f"  {workload:10} {variant:9} {diffs[variant]:>14,}  "
                  f"{diffs[variant] / diffs['untraced']:.4f}x untraced", flush=True)


if __name__ == "__main__":
    main()
