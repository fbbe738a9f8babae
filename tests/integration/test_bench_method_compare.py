"""``benchmarks/method_compare.py``: the suite's two timing methods, run against run."""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import suite_module

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "method_compare.py"


def _run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


@pytest.mark.parametrize("runs", [2, 4, 6, 8, 12])
def test_the_order_is_abba_with_as_many_runs_of_each_method(runs: int) -> None:
    order = suite_module("method_compare").abba(runs)
    assert "".join(order) == "ABBA" * (runs // 4) + "AB" * (runs % 4 // 2)
    assert order.count("A") == order.count("B") == runs // 2


def _suite_json(values: dict[str, list[float]]) -> dict[str, object]:
    return {"plan": {}, "results": [{"item": "spans", "what": "", "baseline": "untraced",
                                     "values": values}]}


def test_a_runs_cells_are_the_median_and_spread_of_its_rounds_ratios() -> None:
    method_compare = suite_module("method_compare")
    runs = method_compare.item_runs(_suite_json({
        "untraced": [1.0, 2.0, 4.0], "counts": [1.1, 2.4, 4.0], "memray": []}))
    run = runs["spans"]
    assert run.baseline_median == 2.0
    assert run.baseline_cv == pytest.approx(statistics.pstdev([1, 2, 4]) / (7 / 3))
    # Ratios 1.1, 1.2, 1.0: each round against its own baseline.
    assert run.cells["counts"].median == pytest.approx(1.1)
    assert run.cells["counts"].sd == pytest.approx(statistics.pstdev([1.1, 1.2, 1.0]))
    # A variant without values (not applicable here) has no cell.
    assert set(run.cells) == {"counts"}


def test_the_summary_gives_each_method_the_median_of_its_runs() -> None:
    method_compare = suite_module("method_compare")

    def run(counts: list[float]) -> dict[str, object]:
        return method_compare.item_runs(_suite_json({"untraced": [1.0, 1.0],
                                                     "counts": counts}))

    runs = [("A", run([1.2, 1.2])), ("B", run([1.1, 1.3])), ("B", run([1.0, 1.0])),
            ("A", run([1.4, 1.6]))]
    lines = method_compare.summary(runs, "spans")
    assert len([line for line in lines if re.match(r"^ +\d+ +[AB] ", line)]) == 4

    def method_rows(heading: str) -> dict[str, str]:
        # One variant: each row is its label, then one cell.
        at = lines.index(heading)
        return {" ".join(row.split()[:-1]): row.split()[-1] for row in lines[at + 1:at + 4]}

    # A: run medians 1.2 and 1.5, spreads 0 and 0.1; B: 1.2 and 1.0, spreads 0.1 and 0.
    assert method_rows("  A, fresh interpreters, 2 runs:") == {
        "median": "1.350", "min-max": "1.200-1.500", "median sd": "0.050"}
    assert method_rows("  B, same interpreter, 2 runs:") == {
        "median": "1.100", "min-max": "1.000-1.200", "median sd": "0.050"}


@pytest.mark.parametrize(("args", "named"), [
    (("--only", "spans,nope"), "--only: nope not accepted"),
    (("--only", "service"), "--only: service not accepted"),
    (("--runs", "3"), "--runs: 3 not accepted"),
    (("--runs", "0"), "--runs: 0 not accepted"),
    (("--rounds", "1"), "--rounds: 1 not accepted"),
    (("--interleave", "1"), "--interleave: 1 not accepted"),
    (("--scale", "0"), "--scale: 0.0 not accepted"),
])
def test_bad_options_are_refused_naming_the_option(args: tuple[str, ...], named: str) -> None:
    proc = _run(*args, timeout=60)
    assert proc.returncode != 0 and named in proc.stderr, proc.stderr


def test_two_runs_print_every_variant_for_each_method() -> None:
    proc = _run("--only", "core", "--runs", "2", "--rounds", "2", "--interleave", "2",
                "--scale", "0.02")
    assert proc.returncode == 0, proc.stderr
    assert "in the order A B" in proc.stdout
    runs = [line.split() for line in proc.stdout.splitlines()
            if re.match(r"^ +\d+ +[AB] +[\d.]+s", line)]
    assert [row[1] for row in runs] == ["A", "B"], proc.stdout
    out = proc.stdout.splitlines()
    header = next(line for line in out if line.startswith("  run method"))
    variants = header.split()[4:]
    assert {"counts", "live", "tracemalloc"} <= set(variants), header
    for heading in ("  A, fresh interpreters, 1 run:", "  B, same interpreter, 1 run:"):
        median = out[out.index(heading) + 1].split()
        assert median[0] == "median" and len(median) == 1 + len(variants), median
        assert all(float(cell) > 0 for cell in median[1:]), median
