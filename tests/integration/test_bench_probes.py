"""The wall-clock probes of issue 18: bench_cold_lines, bench_hook_parts, bench_span_path."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"
MASK = (1 << 64) - 1


def _run(script: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True,
                          text=True, timeout=timeout, cwd=BENCH)


def _probe(folder: str, name: str, target: Path) -> ModuleType:
    sys.path.insert(0, str(BENCH))
    try:
        from bench_util import build_probe

        return build_probe(BENCH / folder, name, target)
    finally:
        sys.path.remove(str(BENCH))


def _chain(lines: int) -> int:
    """What cold_lines.c's chain computes over its first ``lines`` lines, in Python."""
    x = 1
    for i in range(lines):
        a, b = i % 32, (i // 32) % 16
        n = 16 * a + b
        x = (x * (2 * n + 3) + n) & MASK
        x ^= x >> ((a + b) % 13 + 3)
        x = (x + 7 * a + b) & MASK
    return x


def test_the_cold_line_chain_runs_k_distinct_lines_in_its_order(tmp_path: Path) -> None:
    lib = _probe("cold_lines", "_oa_cold_lines_test", tmp_path).lib
    for lines in (0, 1, 2, 31, 32, 33, 100, 511, 512):
        assert lib.oa_cold_lines_run(lines) == _chain(lines), lines


def test_the_guard_hook_wraps_and_the_saved_sets_come_back(tmp_path: Path) -> None:
    lib = _probe("hook_probe", "_oa_hook_probe_test", tmp_path).lib
    assert lib.oa_probe_restore(3) == -1  # never saved
    lib.oa_probe_save(0)
    lib.oa_probe_install_guard()
    lib.oa_probe_save(1)
    assert lib.oa_probe_restore(0) == 0
    before = lib.oa_probe_guard_bytes()
    kept = bytearray(50_000)  # CPython's own allocators: not seen
    assert lib.oa_probe_guard_bytes() == before
    assert lib.oa_probe_restore(1) == 0
    try:
        kept += bytearray(100_000)
    finally:
        lib.oa_probe_restore(0)
    assert lib.oa_probe_guard_bytes() - before >= 100_000
    assert len(kept) == 150_000


def test_cold_lines_prints_a_row_per_line_count() -> None:
    proc = _run("bench_cold_lines.py", "--blocks", "300", "--lines", "8,64")
    assert proc.returncode == 0, proc.stderr
    rows = re.findall(r"^ +(\d+) +(-?\d+) ns +(-?\d+) ns +(-?[\d.]+) ns$", proc.stdout, re.M)
    assert [row[0] for row in rows] == ["8", "64"], proc.stdout


@pytest.mark.parametrize("processor", [False, True])
def test_hook_parts_prints_the_guard_and_the_tracker(processor: bool) -> None:
    proc = _run("bench_hook_parts.py", "--rounds", "20", "--burst", "5",
                *(["--processor"] if processor else []))
    assert proc.returncode == 0, proc.stderr
    shown = dict(re.findall(r"^  (\w+) +(\d+\.\d+)x ", proc.stdout, re.M))
    assert list(shown) == ["guard", "tracker"], proc.stdout
    assert all(float(v) > 0 for v in shown.values())
    assert ("with AllocationSpanProcessor" in proc.stdout) == processor


def test_hook_parts_runs_another_span_item() -> None:
    proc = _run("bench_hook_parts.py", "--item", "request", "--rounds", "5", "--burst", "1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("request, 5 rounds of 1-span bursts"), proc.stdout
    assert re.search(r"^  tracker +\d+\.\d+x ", proc.stdout, re.M), proc.stdout


def test_span_path_prints_each_setting_from_an_interpreter_of_its_own() -> None:
    proc = _run("bench_span_path.py", "--blocks", "300")
    assert proc.returncode == 0, proc.stderr
    rows = re.findall(r"^  ([\w-]+) +(-?\d+) ns \( *-?[\d.]+ %\)", proc.stdout, re.M)
    assert [row[0] for row in rows] == ["counts", "no-attributes", "no-metrics", "no-sampling"]


@pytest.mark.parametrize("lines", ["0", "513", "8,x", ""])
def test_bad_line_counts_are_refused_naming_the_setting(lines: str) -> None:
    proc = _run("bench_cold_lines.py", "--lines", lines, timeout=60)
    assert proc.returncode != 0
    assert f"--lines: {lines!r}" in proc.stderr and "from 1 to 512" in proc.stderr, proc.stderr
