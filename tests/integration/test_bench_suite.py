"""The benchmark scripts run: the suite prints a table that parses, callgrind_ratios a ratio each.

Smoke mode on the smallest item, one round: a few seconds. It measures
nothing; it keeps the script from breaking silently.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "benchmarks" / "suite.py"
COLUMNS = ["item", "1.00x =", "counts", "live", "live+native", "estimate", "tracemalloc",
           "memray"]
RATIO = re.compile(r"^\d+\.\d\dx \(\d+\.\d\d-\d+\.\d\d\)")
VERDICT = re.compile(r" [<>]=\d+\.\d+%? (pass|FAIL)$")


def test_suite_smoke_prints_one_table_that_parses() -> None:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, str(SUITE), "--smoke", "--only", "core",
                           "--rounds", "1"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - start < 60
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert len(rows) == 2, proc.stdout  # the header and one item
    titles = [c.strip() for c in rows[0].strip(" |").split("|")]
    assert titles == COLUMNS
    cells = dict(zip(titles, (c.strip() for c in rows[1].strip(" |").split("|")), strict=True))
    assert cells["item"] == "core"
    assert cells["1.00x ="].startswith("untraced, ")
    for column in ("counts", "live"):  # the targets are printed beside the values
        assert RATIO.match(cells[column]) and VERDICT.search(cells[column]), cells[column]
    for column in ("tracemalloc", "estimate"):  # no target of their own
        assert RATIO.match(cells[column]) and not VERDICT.search(cells[column]), cells[column]
    for column in ("live+native", "memray"):  # measured, or said why not
        assert RATIO.match(cells[column]) or cells[column].startswith("n/a ("), cells[column]
    assert re.search(r"^targets: \d+ pass, \d+ FAIL$", proc.stdout, re.M)
    assert "1 rounds" in proc.stdout
    # The suite's own parser agrees.
    sys.path.insert(0, str(SUITE.parent))
    try:
        import suite_table

        assert [row["item"] for row in suite_table.parse(proc.stdout)] == ["core"]
    finally:
        sys.path.remove(str(SUITE.parent))


CALLGRIND = ROOT / "benchmarks" / "callgrind_ratios.py"


# Options every callgrind script refuses, and what its error must say.
BAD_OPTIONS: tuple[tuple[list[str], str], ...] = (
    (["--variants", "counts,fast"], "--variants: fast not accepted"),
    (["--small", "9", "--large", "3"], "--small/--large"),
)


def _skip_without_valgrind() -> None:
    if shutil.which("valgrind") is None:
        pytest.skip("valgrind not installed")
    if "san" in os.environ.get("LD_PRELOAD", ""):
        pytest.skip("a sanitizer runtime is preloaded: valgrind cannot run under it")


def _assert_refused(script: Path, cases: tuple[tuple[list[str], str], ...]) -> None:
    for args, needle in cases:
        proc = subprocess.run([sys.executable, str(script), *args], capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode != 0 and needle in proc.stderr, (args, proc.stderr)


def test_callgrind_ratios_refuse_bad_names_and_sizes() -> None:
    _assert_refused(CALLGRIND, ((["--workloads", "nope"], "--workloads: nope not accepted"),
                                *BAD_OPTIONS))


def test_callgrind_ratios_smoke_prints_a_ratio_per_variant() -> None:
    _skip_without_valgrind()
    proc = subprocess.run([sys.executable, str(CALLGRIND), "--variants", "counts",
                           "--small", "1", "--large", "2"], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    ratios = re.findall(r"^  core +(\w+) +[\d,]+  (\d+\.\d{4})x untraced$", proc.stdout, re.M)
    assert [name for name, _ in ratios] == ["untraced", "counts"], proc.stdout
    assert float(ratios[0][1]) == 1.0 and float(ratios[1][1]) > 1.0


SERVICE_CALLGRIND = ROOT / "benchmarks" / "service_callgrind.py"


def test_service_callgrind_refuses_bad_names_and_sizes() -> None:
    _assert_refused(SERVICE_CALLGRIND, BAD_OPTIONS)


def test_service_callgrind_smoke_prints_a_row_per_variant() -> None:
    _skip_without_valgrind()
    sys.path.insert(0, str(SUITE.parent))
    try:
        from suite_service import missing
    finally:
        sys.path.remove(str(SUITE.parent))
    if (why := missing()) is not None:
        pytest.skip(why)
    proc = subprocess.run([sys.executable, str(SERVICE_CALLGRIND), "--variants",
                           "counts-noattr", "--small", "1", "--large", "2"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    rows = re.findall(r"^  (\S+) +([\d,]+) +([\d,]+) +([\d,]+)  (\d+\.\d{4})x$", proc.stdout,
                      re.M)
    assert [r[0] for r in rows] == ["otel", "counts-noattr"], proc.stdout
    # One request minus none: the export thread's batches and the collector
    # move a pair this small by several per cent either way.
    assert float(rows[0][4]) == 1.0 and 0.5 < float(rows[1][4]) < 2.0
