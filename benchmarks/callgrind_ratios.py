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
        [--variants untraced,disabled,counts,sampled,live,estimate,counts-native,live-native]
        [--small 300 --large 900]

(the README's figures: ``core`` 300/900, ``request`` 100/300, ``deltablue``
20/60, ``json_loads`` 30/90, ``numpy`` 10/30). The ``-native`` variants also hook native memory
(``native=True``); the others leave it off. Needs ``valgrind``; takes
about a minute per variant and workload.

The suite's span items (every op in an SDK span, the processor with metrics
and every span in the size histogram, as ``suite.py`` sets them up) are
measured the same way with ``--items``, e.g. ``--items spans --small 1000
--large 3000`` (``--item-variants untraced,counts,live``, the suite's own
variant names). Each thread is counted apart (``--separate-threads``): the
processor's watch thread works on a timer, and under valgrind's slowdown it
ticks many times more often per span than in real time, so the main
thread's ratio is the one to compare; the all-thread ratio is printed
beside it. ``--items all --item-variants untraced,counts,live,native
--jobs 2`` measures every span item, each at its own sizes (a twentieth of
its suite count and three times that) unless ``--small``/``--large`` are
given, two runs at a time, and ends with one table of the main thread's
ratios. It needs no interpreter symbols, so it works on a stripped build
(Debian's 3.14 and 3.15).

The main thread's difference still holds what the final flush does with
the span records the watch thread had not taken yet, an amount that moves
with thread timing. ``--items spans --loop-only --large 1000 --seeds 1,2,3``
counts the timed loop alone (each run collects only inside the
``operator.call`` the suite child times it through) and prints the median
over the hash seeds: one build's ratios then agree to 0.1 % across seeds,
where the difference method's moved by 2 %.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
VARIANTS = ("untraced", "disabled", "counts", "sampled", "live", "estimate", "counts-native",
            "live-native")
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
        otel_alloc.install(mode if mode in ("live", "estimate") else "counts",
                           native=native == "native")
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
        return file_events(out)["Ir"]


def file_events(path: Path) -> dict[str, int]:
    """The event totals of one callgrind output file, by event name.

    ``Ir`` always; with ``--cache-sim=yes`` also ``I1mr``, ``D1mr``,
    ``D1mw``, ``ILmr``, ``DLmr``, ``DLmw``.
    """
    text = path.read_text()
    names = re.search(r"^events: (.+)$", text, re.MULTILINE)
    found = re.search(r"^(?:summary|totals): (.+)$", text, re.MULTILINE)
    if names is None or found is None:
        raise RuntimeError(f"no event totals in {path}")
    values = [int(v) for v in found.group(1).split()]
    events = names.group(1).split()
    return dict(zip(events, values + [0] * (len(events) - len(values)), strict=True))


def thread_events(out: Path) -> tuple[dict[str, int], dict[str, int]]:
    """(main thread, all threads) event totals of a ``--separate-threads`` run (file_events)."""
    per_thread = {part.name: file_events(part)
                  for part in sorted(out.parent.glob(out.name + "-*"))}
    if not per_thread:
        raise RuntimeError(f"no per-thread output next to {out}")
    main = per_thread.get(out.name + "-01")
    if main is None:
        raise RuntimeError(f"no main-thread output {out.name}-01")
    every: dict[str, int] = {}
    for events_of_thread in per_thread.values():
        for name, value in events_of_thread.items():
            every[name] = every.get(name, 0) + value
    return main, every


def _totals(out: Path) -> tuple[int, int]:
    """(main thread, all threads) instructions of a ``--separate-threads`` run."""
    main, every = thread_events(out)
    return main["Ir"], every["Ir"]


# The suite child runs its timed loop through operator.call (suite_child.py):
# collecting inside that function alone counts the loop and nothing else.
LOOP_FUNCTION = "_operator_call"


def run_item(item: str, variant: str, ops: int, out: Path, seed: int = 0,
             loop_only: bool = False, options: tuple[str, ...] = ()) -> None:
    """``suite.py --child`` for ``ops`` ops under callgrind, one output per thread.

    The main thread's output is ``out`` with ``-01`` appended. ``options``
    are more callgrind options (``--cache-sim=yes``, say).
    """
    from suite_items import ITEMS

    scale = ops / ITEMS[item].count
    toggle = [f"--toggle-collect={LOOP_FUNCTION}"] if loop_only else []
    proc = subprocess.run(
        ["valgrind", "--tool=callgrind", "--separate-threads=yes", *toggle, *options,
         f"--callgrind-out-file={out}", sys.executable, str(HERE / "suite.py"),
         "--child", item, variant, "--scale", repr(scale)],
        capture_output=True, text=True, cwd=HERE,
        env={**os.environ, "PYTHONHASHSEED": str(seed), "OPENBLAS_NUM_THREADS": "1",
             "OMP_NUM_THREADS": "1"})
    if proc.returncode != 0 or '"seconds"' not in proc.stdout:
        raise SystemExit(f"callgrind run of {item}/{variant} failed (exit "
                         f"{proc.returncode}):\n{proc.stdout[-1000:]}{proc.stderr[-2000:]}")


def item_instructions(item: str, variant: str, ops: int, seed: int = 0,
                      loop_only: bool = False) -> tuple[int, int]:
    """(main thread, all threads) instructions of ``suite.py --child`` for ``ops`` ops."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        run_item(item, variant, ops, out, seed, loop_only)
        return _totals(out)


def _loop_items(items: list[str], variants: list[str], ops: int, seeds: list[int]) -> None:
    """The timed loop alone, main thread, ``ops`` ops, the median over ``seeds``."""
    print(f"callgrind instructions, suite items, the timed loop of {ops} ops alone (main "
          f"thread), PYTHONHASHSEED {','.join(map(str, seeds))}, Python "
          f"{sys.version.split()[0]}")
    for item in items:
        per_op = {v: [item_instructions(item, v, ops, seed, loop_only=True)[0] / ops
                      for seed in seeds] for v in variants}
        for v in variants:
            ratios = [n / base for n, base in zip(per_op[v], per_op["untraced"], strict=True)]
            print(f"  {item:10} {v:9} {statistics.median(per_op[v]):>10,.0f} an op  "
                  f"{statistics.median(ratios):.4f}x untraced (by seed: "
                  f"{' '.join(f'{r:.4f}' for r in ratios)})", flush=True)


def item_sizes(item: str) -> tuple[int, int]:
    """An item's own --small/--large: a twentieth of its suite count and three times that.

    The suite's counts give each item about a second of work, so these take
    about as long under callgrind whatever the item (``spans`` 1000/3000,
    ``go`` 1/3).
    """
    from suite_items import ITEMS

    small = max(1, ITEMS[item].count // 20)
    return small, 3 * small


def _span_items(items: list[str], variants: list[str], sizes: tuple[int, int] | None,
                jobs: int) -> None:
    """Each item's ratios by the difference of a large and a small run, then one table.

    ``sizes`` None: each item's own (item_sizes). ``jobs`` runs at once: each
    run is counted alone, so running them side by side changes no count.
    """
    print(f"callgrind instructions, suite items, large minus small ops, PYTHONHASHSEED=0, "
          f"Python {sys.version.split()[0]}")
    table: dict[str, dict[str, float]] = {}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for item in items:
            small, large = sizes or item_sizes(item)
            runs = {(v, ops): pool.submit(item_instructions, item, v, ops)
                    for v in variants for ops in (small, large)}
            diffs = {}
            for v in variants:
                big, few = runs[v, large].result(), runs[v, small].result()
                diffs[v] = (big[0] - few[0], big[1] - few[1])
            base_main, base_all = diffs["untraced"]
            table[item] = {}
            for v in variants:
                main, every = diffs[v]
                table[item][v] = main / base_main
                print(f"  {item:10} {v:9} main thread {main / (large - small):>10,.0f} an op  "
                      f"{main / base_main:.4f}x untraced   all threads {every / base_all:.4f}x "
                      f"({large} minus {small} ops)", flush=True)
    traced = [v for v in variants if v != "untraced"]
    print("\n| item | " + " | ".join(traced) + " |")
    print("|---|" + "---|" * len(traced))
    for item, ratios in table.items():
        print(f"| {item} | " + " | ".join(f"{ratios[v]:.4f}x" for v in traced) + " |")


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
    parser.add_argument("--items", default="",
                        help="suite span items to measure instead of --workloads (all: "
                             "every one)")
    parser.add_argument("--item-variants", default="untraced,counts,live")
    parser.add_argument("--loop-only", action="store_true",
                        help="--items: count the timed loop alone, --large ops per run")
    parser.add_argument("--seeds", default="0",
                        help="--loop-only: PYTHONHASHSEED values (comma-separated); the "
                             "median ratio is printed")
    parser.add_argument("--small", type=int, default=None,
                        help="ops of the small run (default 300; --items: each item's own)")
    parser.add_argument("--large", type=int, default=None,
                        help="ops of the large run (default 900; --items: each item's own)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="--items: callgrind runs at once (each is counted alone)")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--workload", default="core", help=argparse.SUPPRESS)
    parser.add_argument("--ops", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.workload, args.ops)
        return
    if (args.small is None) != (args.large is None) and not args.loop_only:
        raise SystemExit("--small/--large: give both or neither")
    if args.small is not None and args.large is not None and not 0 < args.small < args.large:
        raise SystemExit(f"--small/--large: need 0 < small < large, got {args.small}/{args.large}")
    if args.jobs < 1:
        raise SystemExit(f"--jobs: {args.jobs} not accepted; accepted: an integer of 1 or more")
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind not installed (apt-get install -y valgrind)")
    if args.items:
        sys.path.insert(0, str(HERE))
        from suite_child import VARIANTS as ITEM_VARIANTS
        from suite_items import ITEMS

        span_items = tuple(name for name, item in ITEMS.items() if item.spans)
        items = list(span_items) if args.items == "all" else _names(args.items, span_items,
                                                                     "--items")
        item_variants = _names(args.item_variants, tuple(
            v for v in ITEM_VARIANTS if v in ("untraced", "counts", "live", "native", "estimate")),
            "--item-variants")
        if "untraced" not in item_variants:
            item_variants.insert(0, "untraced")
        if args.loop_only:
            try:
                seeds = [int(s) for s in args.seeds.split(",")]
            except ValueError:
                raise SystemExit(f"--seeds: {args.seeds!r} not accepted; accepted: "
                                 "comma-separated integers, e.g. 1,2,3") from None
            if args.large is not None and args.large < 1:
                raise SystemExit(f"--large: {args.large} not accepted; accepted: 1 or more ops")
            _loop_items(items, item_variants, args.large or 1000, seeds)
        else:
            sizes = None if args.small is None else (args.small, args.large)
            _span_items(items, item_variants, sizes, args.jobs)
        return
    small, large = (300, 900) if args.small is None else (args.small, args.large)
    workloads = _names(args.workloads, WORKLOADS, "--workloads")
    variants = _names(args.variants, VARIANTS, "--variants")
    if "untraced" not in variants:
        variants.insert(0, "untraced")
    print(f"callgrind instructions, {large} minus {small} ops, PYTHONHASHSEED=0, "
          f"Python {sys.version.split()[0]}")
    for workload in workloads:
        diffs = {v: instructions(v, workload, large) - instructions(v, workload, small)
                 for v in variants}
        for variant in variants:
            print(f"  {workload:10} {variant:9} {diffs[variant]:>14,}  "
                  f"{diffs[variant] / diffs['untraced']:.4f}x untraced", flush=True)


if __name__ == "__main__":
    main()
