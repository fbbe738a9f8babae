"""benchmarks/bench_native.py: its settings, and a round against a checkout."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks" / "bench_native.py"
VARIANTS = ("untraced", "counts", "counts+native", "live", "live+native")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True,
                          timeout=600)


@pytest.mark.parametrize(("args", "message"), [
    (["--workloads", "alloc,bogus"], "--workloads: bogus unknown; accepted: alloc, numpy, request"),
    (["--rounds", "0"], "--rounds: 0 is not a positive number of rounds"),
    (["--against", "/"], "--against: '/' is not a checkout of this project"),
])
def test_bad_settings_are_refused_before_any_run(args: list[str], message: str) -> None:
    proc = _run(*args)
    assert proc.returncode != 0 and message in proc.stderr


def test_a_round_against_a_checkout_prints_both_builds_and_their_ratios() -> None:
    pytest.importorskip("numpy")
    proc = _run("--rounds", "1", "--workloads", "alloc", "--clock", "cpu", "--against",
                str(ROOT))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"[here: {ROOT}]" in out and f"[there: {ROOT}]" in out
    # Each build's table: a ratio to untraced per variant, untraced itself 1.
    rows = re.findall(r"^(\S+) +(\d+\.\d{3})x +\d+\.\d\d-\d+\.\d\d$", out, re.M)
    assert [name for name, _ in rows] == list(VARIANTS) * 2, out
    assert all(ratio == "1.000" for name, ratio in rows if name == "untraced")
    # Then this build's time over the other's, per variant.
    pairs = out.split("time here / time there")[1]
    found = re.findall(r"^(\S+) +(\d+\.\d{3})  (\d+\.\d{3})-(\d+\.\d{3})$", pairs, re.M)
    assert [name for name, *_ in found] == list(VARIANTS), out
    # The same code on both sides: no pair is off by a factor of three.
    assert all(1 / 3 < float(median) < 3 for _, median, _, _ in found), out
