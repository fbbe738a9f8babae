"""Where counts mode's cost on a span goes, on the wall clock (issue 18).

The suite's ``spans`` item (a span around a 20-key dict) in one interpreter,
in bursts, each variant set up before its burst and undone after it, as
``suite.py --interleave B --same-interpreter`` does, variants alternated
from one pair to the next; prints each variant's median ratio of its burst
to the baseline's burst of the same pair. The variants take the tracker
apart:

- ``sdk``: SDK spans, no tracker (the baseline, 1.00x);
- ``hooks``: the tracker installed in counts mode, no processor: every
  allocation passes the hooks, none is counted (no group is open);
- ``path``: the processor in counts mode with counting off
  (``otel_alloc.disable()``): the span path runs, the hooks pass;
- ``counts``: the suite's counts variant;
- ``no-attributes``, ``no-metrics``: the same with ``span_attributes=False``,
  with ``metrics=False``.

Usage::

    python benchmarks/bench_span_parts.py [--pairs 40] [--burst 2000]
"""

from __future__ import annotations

import argparse
import gc
import statistics

import suite_child
from bench_util import alternated
from suite_items import ITEMS, Op

VARIANTS = ("sdk", "hooks", "path", "counts", "no-attributes", "no-metrics")
SETTINGS: dict[str, dict[str, object]] = {"no-attributes": {"span_attributes": False},
                                          "no-metrics": {"metrics": False}}


def _burst(variant: str, op: Op, count: int) -> float:
    """One burst of ``count`` ops under ``variant``, set up and undone around it: seconds."""
    import otel_alloc

    hooks_only = variant == "hooks"
    if hooks_only:
        otel_alloc.install("counts", native=False)
    tracked = variant not in ("sdk", "hooks")
    tracing = suite_child.Tracing("counts" if tracked else "untraced", True,
                                  SETTINGS.get(variant))
    try:
        if variant == "path":
            otel_alloc.disable()
        return float(suite_child.burst(op, count, "spans", tracing)["seconds"])  # type: ignore[arg-type]
    finally:
        tracing.close()
        if hooks_only:
            otel_alloc.uninstall()
        gc.collect()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=40)
    parser.add_argument("--burst", type=int, default=2000, help="spans a burst")
    args = parser.parse_args()
    op = ITEMS["spans"].build()
    seconds: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for number in range(args.pairs):
        for variant in alternated(VARIANTS, number):
            seconds[variant].append(_burst(variant, op, args.burst))
    print(f"spans, {args.pairs} rounds of {args.burst}-span bursts, one interpreter; "
          "median of each round's ratio to sdk (min-max)")
    for variant in VARIANTS:
        ratios = sorted(m / b for b, m in zip(seconds["sdk"], seconds[variant], strict=True))
        print(f"  {variant:14s} {statistics.median(ratios):.3f}x "
              f"({ratios[0]:.2f}-{ratios[-1]:.2f})")


if __name__ == "__main__":
    main()
