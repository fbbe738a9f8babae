"""``benchmarks/bench_heap.py``: variants timed after a held heap made under them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "bench_heap.py"


def _run(*args: str, timeout: float = 300,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, env=env)


@pytest.mark.parametrize("item", ["core", "request"])
def test_held_blocks_are_in_live_modes_table_and_not_in_counts(item: str) -> None:
    runs = {}
    for variant, blocks in (("live", 0), ("live", 50_000), ("counts", 50_000)):
        proc = _run("--child", item, variant, str(blocks), "--scale", "0.01")
        assert proc.returncode == 0, proc.stderr
        runs[variant, blocks] = json.loads(proc.stdout.strip().splitlines()[-1])
    # The table gained the held blocks while they were made (the list too,
    # and a span's own blocks for a span item).
    assert runs["live", 50_000]["held_in_table"] >= 50_000, runs
    assert runs["live", 0]["held_in_table"] < 100, runs
    assert runs["live", 50_000]["live_blocks"] >= 50_000, runs
    assert runs["live", 50_000]["bytes_per_live_block"] <= 32
    # Counts mode keeps no table.
    assert runs["counts", 50_000]["held_in_table"] == runs["counts", 50_000]["live_blocks"] == 0
    assert all(r["seconds"] > 0 and r["ops"] >= 1 for r in runs.values())


def test_prints_a_row_per_heap_size_with_every_variant() -> None:
    proc = _run("--items", "core", "--blocks", "0,20000", "--variants",
                "untraced,counts,live,tracemalloc", "--runs", "1", "--scale", "0.01")
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()
            if re.match(r"^\s+[\d,]+ +[\d.]+s ", line)]
    assert [row[0] for row in rows] == ["0", "20,000"]
    for row in rows:
        ratios = [float(cell[:-1]) for cell in row[2:] if re.fullmatch(r"[\d.]+x", cell)]
        assert len(ratios) == 3 and all(r > 0 for r in ratios), row
    from_held = [int(m.replace(",", "")) for m in
                 re.findall(r"\(([\d,]+) from the held heap\)", proc.stdout)]
    assert len(from_held) == 2 and from_held[0] < 100 and from_held[1] >= 20_000, proc.stdout


@pytest.mark.parametrize(("args", "named"), [
    (("--blocks", "1e6"), "--blocks: '1e6'"),
    (("--blocks", "0,-5"), "--blocks: '0,-5'"),
    (("--variants", "counts,live"), "untraced among them"),
    (("--items", "nope"), "['nope'] not accepted"),
    (("--runs", "0"), "--runs 0"),
])
def test_bad_settings_are_refused_naming_them(args: tuple[str, ...], named: str) -> None:
    proc = _run(*args, timeout=60)
    assert proc.returncode != 0
    assert named in proc.stderr, proc.stderr


def test_a_failing_run_ends_the_script_naming_it() -> None:
    proc = _run("--items", "request", "--blocks", "0", "--variants", "untraced,live",
                "--runs", "1", "--scale", "0.01",
                env={**os.environ, "OTEL_ALLOC_MAX_SPAN_NAMES": "many"})
    assert proc.returncode != 0
    assert "request/live with 0 held blocks failed" in proc.stderr, proc.stderr
    assert "OTEL_ALLOC_MAX_SPAN_NAMES" in proc.stderr, proc.stderr
