"""The suite's interleaved rounds (``suite.py --interleave B``): bursts in turn."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import suite_module

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "benchmarks" / "suite.py"


def test_interleaved_smoke_times_every_variant_in_bursts_and_prints_one_table(
        tmp_path: Path) -> None:
    raw = tmp_path / "raw.json"
    proc = subprocess.run([sys.executable, str(SUITE), "--smoke", "--only", "core", "--rounds",
                           "1", "--interleave", "3", "--json", str(raw)],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert "1 rounds, a fresh interpreter per variant and round, 3 bursts each" in proc.stdout
    assert [row["item"] for row in suite_module("suite_table").parse(proc.stdout)] == ["core"]
    # Every variant that ran took its three bursts (core at --smoke: 120 ops, 40 a burst).
    values = json.loads(raw.read_text())["results"][0]["values"]
    assert {"untraced", "counts", "live"} <= set(values), values
    progress = re.search(r"^round 1/1 core: (.*)$", proc.stderr, re.M)
    assert progress is not None, proc.stderr
    for cell in progress.group(1).split(", "):
        variant, shown = cell.split(" ", 1)
        assert shown == "n/a" or float(shown) > 0, cell
        if shown != "n/a":
            assert values[variant][0] > 0


@pytest.mark.parametrize("bursts", ["1", "-2"])
def test_interleave_refuses_fewer_than_two_bursts(bursts: str) -> None:
    proc = subprocess.run([sys.executable, str(SUITE), "--only", "core", "--interleave", bursts],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert f"--interleave: {bursts} not accepted; accepted: an integer of 2 or more" \
        in proc.stderr


def test_serve_answers_ready_then_one_timed_burst_a_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(SUITE.parent))  # the items import their workloads late
    import suite_child

    answers = suite_child.serve("core", "untraced", 0.01, iter(["2", "5"]))
    assert json.loads(next(answers)) == {"ready": True}
    bursts = [json.loads(a) for a in answers]
    assert [b["ops"] for b in bursts] == [2, 5]
    assert all(b["seconds"] > 0 and b["cpu_seconds"] >= 0 for b in bursts)


def test_serve_refuses_a_burst_of_no_ops(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(SUITE.parent))
    import suite_child

    answers: Iterator[str] = suite_child.serve("core", "untraced", 0.01, iter(["0"]))
    next(answers)
    with pytest.raises(ValueError, match="burst of 0 ops"):
        next(answers)


def test_a_child_that_exits_without_answering_is_an_error_with_its_stderr() -> None:
    suite = suite_module("suite")
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stderr.write('boom')"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors,
                                text=True)
        assert suite._answer(proc, errors) == {"error": "exit 0: boom"}
        suite._stop(proc)
