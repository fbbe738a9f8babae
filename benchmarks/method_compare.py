"""The suite's two ways of timing its in-process items, compared run against run.

``suite.py --interleave B`` times each variant in a child interpreter of its
own per round (fresh interpreters, method A); ``--same-interpreter`` hands
the bursts of every variant to one interpreter per round (method B). One
run of each cannot say which reads lower or spreads less: on the shared
hosts here the baseline drifts between runs by more than the methods
differ. This runs the suite ``--runs`` times, the two methods in the order
A B B A A B B A ..., so a drift linear in time weighs the same on both,
and prints for each item and variant:

- per run, the median of the rounds' ratios to the item's baseline, with
  the standard deviation of those ratios, and the baseline's median time
  and its variation over the rounds (standard deviation over mean);
- per method, the median of the runs' medians (min-max over runs) and the
  median of the runs' standard deviations.

Usage::

    python benchmarks/method_compare.py [--only spans,json_loads] [--runs 8]
        [--rounds 5] [--interleave 10] [--scale 1.0]

(``--scale``: the fraction of each item's op count a round runs.)

At the defaults it took about 20 minutes here (a run of two items, 2.5
minutes). The service is not an item here: ``--same-interpreter`` leaves it
as ``--interleave`` runs it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from suite_table import Series

HERE = Path(__file__).resolve().parent
SUITE = HERE / "suite.py"
METHODS = {"A": "fresh interpreters", "B": "same interpreter"}


def abba(runs: int) -> list[str]:
    """The methods of ``runs`` runs in the order A B B A A B B A ..."""
    return ["A" if number % 4 in (0, 3) else "B" for number in range(runs)]


@dataclass
class RunCell:
    """One item and variant in one run: its rounds' ratios to the baseline."""

    median: float
    sd: float


@dataclass
class ItemRun:
    """One item in one run: the baseline's times and each variant's cell."""

    baseline_median: float
    baseline_cv: float
    cells: dict[str, RunCell] = field(default_factory=dict)


def item_runs(suite_json: dict[str, object]) -> dict[str, ItemRun]:
    """Each item's figures out of a ``suite.py --json`` file (variants without values left out).

    The per-round ratios are the suite's own (``Series.ratios``): a round
    that failed for a variant or the baseline is left out of that variant's.
    """
    out: dict[str, ItemRun] = {}
    for result in suite_json["results"]:  # type: ignore[attr-defined]
        series = Series(**result)
        base = [b for b in series.values.get(series.baseline, []) if b]
        if not base:
            continue
        run = ItemRun(statistics.median(base), statistics.pstdev(base) / statistics.mean(base))
        for variant in series.values:
            if variant != series.baseline and (ratios := series.ratios(variant)):
                run.cells[variant] = RunCell(statistics.median(ratios), statistics.pstdev(ratios))
        out[series.item] = run
    return out


def run_suite(items: list[str], rounds: int, bursts: int, scale: float, method: str,
              number: int, out: Path) -> dict[str, ItemRun]:
    """One suite run by ``method`` (A or B); its figures by item."""
    args = [sys.executable, str(SUITE), "--only", ",".join(items), "--rounds", str(rounds),
            "--interleave", str(bursts), "--scale", repr(scale), "--json", str(out)]
    if method == "B":
        args.append("--same-interpreter")
    proc = subprocess.run(args, capture_output=True, text=True, cwd=HERE)
    if proc.returncode != 0 or not out.exists():
        raise SystemExit(f"run {number} ({METHODS[method]}) failed (exit {proc.returncode}):\n"
                         f"{proc.stdout[-1500:]}{proc.stderr[-1500:]}")
    return item_runs(json.loads(out.read_text()))


def summary(runs: list[tuple[str, dict[str, ItemRun]]], item: str) -> list[str]:
    """The item's lines: a row per run, then a row per method."""
    per_run = [(method, figures[item]) for method, figures in runs if item in figures]
    if not per_run:
        return [f"{item}: no figures"]
    variants = [v for v in per_run[0][1].cells if all(v in r.cells for _, r in per_run)]
    lines = [f"{item}: median of the rounds' ratios to the baseline (their standard deviation)",
             "  run method baseline (cv)   " + " ".join(f"{v:>15s}" for v in variants)]
    for number, (method, run) in enumerate(per_run, 1):
        row = " ".join(f"{run.cells[v].median:>7.3f} ({run.cells[v].sd:.3f})"
                       for v in variants)
        lines.append(f"  {number:>3d} {method:>6s} {run.baseline_median:6.3f}s "
                     f"({run.baseline_cv:.3f}) {row}")
    for method, name in METHODS.items():
        chosen = [run for m, run in per_run if m == method]
        if not chosen:
            continue
        medians = {v: sorted(run.cells[v].median for run in chosen) for v in variants}
        rows = {
            "median": [f"{statistics.median(medians[v]):.3f}" for v in variants],
            "min-max": [f"{medians[v][0]:.3f}-{medians[v][-1]:.3f}" for v in variants],
            "median sd": [f"{statistics.median(run.cells[v].sd for run in chosen):.3f}"
                          for v in variants],
        }
        lines.append(f"  {method}, {name}, {len(chosen)} run{'s' if len(chosen) > 1 else ''}:")
        for label, cells in rows.items():
            lines.append(f"  {label:>26s} " + " ".join(f"{c:>15s}" for c in cells))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="spans,json_loads")
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--interleave", type=int, default=10, metavar="B")
    parser.add_argument("--scale", type=float, default=1.0)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from suite_items import ITEMS

    items = args.only.split(",")
    unknown = [i for i in items if i not in ITEMS]
    if unknown:
        named = ",".join(unknown) if all(unknown) else repr(args.only)
        raise SystemExit(f"--only: {named} not accepted; in-process items: {', '.join(ITEMS)}")
    if args.runs < 2 or args.runs % 2:
        raise SystemExit(f"--runs: {args.runs} not accepted; an even number >= 2 (as many "
                         "runs of each method)")
    if args.rounds < 2:
        raise SystemExit(f"--rounds: {args.rounds} not accepted; 2 or more (a standard "
                         "deviation over rounds)")
    if args.interleave < 2:
        raise SystemExit(f"--interleave: {args.interleave} not accepted; 2 or more bursts "
                         "per variant")
    if not 0 < args.scale <= 10:
        raise SystemExit(f"--scale: {args.scale} not accepted; 0 < scale <= 10")
    order = abba(args.runs)
    print(f"python {sys.version.split()[0]}; {args.runs} suite runs of {', '.join(items)}, "
          f"{args.rounds} rounds of {args.interleave} bursts, in the order {' '.join(order)} "
          f"(A {METHODS['A']}, B {METHODS['B']})", flush=True)
    runs: list[tuple[str, dict[str, ItemRun]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for number, method in enumerate(order, 1):
            figures = run_suite(items, args.rounds, args.interleave, args.scale, method,
                                number, Path(tmp) / f"run{number}.json")
            runs.append((method, figures))
            print(f"run {number} ({METHODS[method]}) done", flush=True)
    for item in items:
        for line in summary(runs, item):
            print(line)


if __name__ == "__main__":
    main()
