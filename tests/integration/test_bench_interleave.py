"""The suite's interleaved rounds (``suite.py --interleave B``): bursts in turn."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import progress_cells, suite_module

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
    for variant, shown in progress_cells(proc.stderr, "core"):
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


def test_a_round_sums_each_variants_bursts_in_whole_ops() -> None:
    suite = suite_module("suite")
    scale = 0.01
    plan = suite.Plan(rounds=1, scale=scale, service_seconds=1.0, items=["core"], clock="wall",
                      bursts=3)
    burst = max(1, suite.ITEMS["core"].ops(scale) // 3)
    results = suite._interleaved("core", ["untraced", "counts"], plan)
    for variant in ("untraced", "counts"):
        result = results[variant]
        assert result["ops"] == 3 * burst and isinstance(result["ops"], int), result
        assert result["seconds"] > 0 and result["cpu_seconds"] > 0, result


@pytest.mark.parametrize(("seconds", "bursts", "plan"), [
    (5.0, 10, (5, 1)), (5.0, 2, (2, 2)), (1.0, 10, (2, 1)), (12.0, 4, (4, 3))])
def test_service_bursts_keep_whole_seconds_and_about_the_plain_runs_load(
        seconds: float, bursts: int, plan: tuple[int, int]) -> None:
    assert suite_module("suite_service").burst_plan(seconds, bursts) == plan


def _service_or_skip() -> object:
    """The suite's service module; skips where wrk or a package is missing.

    Under ``OTEL_ALLOC_REQUIRE_SERVICE=1`` (CI's service lane, which
    installs them) a missing piece fails the test instead.
    """
    suite_service = suite_module("suite_service")
    if (why := suite_service.missing()) is not None:
        if os.environ.get("OTEL_ALLOC_REQUIRE_SERVICE") == "1":
            pytest.fail(f"OTEL_ALLOC_REQUIRE_SERVICE=1 but {why}")
        pytest.skip(why)
    return suite_service


def test_a_missing_wrk_skips_the_service_tests_or_fails_them_where_required(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no wrk on it
    monkeypatch.delenv("OTEL_ALLOC_REQUIRE_SERVICE", raising=False)
    with pytest.raises(pytest.skip.Exception, match="wrk not installed"):
        _service_or_skip()
    monkeypatch.setenv("OTEL_ALLOC_REQUIRE_SERVICE", "1")
    with pytest.raises(pytest.fail.Exception, match="REQUIRE_SERVICE=1 but wrk not installed"):
        _service_or_skip()


def test_interleaved_service_loads_every_server_in_turn_and_checks_each_histogram(
        tmp_path: Path) -> None:
    _service_or_skip()
    raw = tmp_path / "raw.json"
    proc = subprocess.run([sys.executable, str(SUITE), "--smoke", "--only", "service",
                           "--interleave", "2", "--json", str(raw)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "all servers up at once, 2 bursts of 1 s of wrk each, in turn" in proc.stdout
    assert [row["item"] for row in suite_module("suite_table").parse(proc.stdout)] == ["service"]
    series = json.loads(raw.read_text())["results"][0]
    for variant in ("otel", "counts", "live"):
        assert series["values"][variant][0] > 0, series
        assert series["extras"]["cpu_ms"][variant][0] > 0, series
    # Each server exported to a receiver of its own: the size histogram of
    # every tracked variant held every span that server ended.
    assert not [note for note in series["notes"] if "histogram" in note or "no metrics" in note]


def test_interleaved_service_records_a_server_that_cannot_start_and_runs_the_rest(
        monkeypatch: pytest.MonkeyPatch) -> None:
    suite_service = _service_or_skip()
    # A bad setting stops the tracked server before it serves; OTel alone has no tracker.
    monkeypatch.setenv("OTEL_ALLOC_MAX_SPAN_NAMES", "many")
    results = suite_service.measure_interleaved(  # type: ignore[attr-defined]
        ["otel", "counts"], 1.0, 2)
    assert results["otel"]["rps"] > 0 and results["otel"]["spans"] > 0, results["otel"]
    error = results["counts"]["error"]
    assert "service counts did not start" in error and "OTEL_ALLOC_MAX_SPAN_NAMES" in error


def test_a_service_flush_exports_the_spans_a_batch_still_holds() -> None:
    suite_service = _service_or_skip()
    receiver = suite_service.Receiver()  # type: ignore[attr-defined]
    server = suite_service.Server("counts", receiver)  # type: ignore[attr-defined]
    try:
        assert server.start() is None
        receiver.reset()
        # One request's spans: far under the batch's 512, so only a flush
        # exports them within the batch's 5 s delay.
        with urllib.request.urlopen(
                f"http://127.0.0.1:{server.port}{suite_service.PATH}",  # type: ignore[attr-defined]
                timeout=10) as response:
            assert response.status == 200
        assert server.flush() > 0
        assert receiver.posts.get("/v1/traces") == 1, receiver.posts
        result = server.stop()
        assert result["histogram"] == result["spans"], result
    finally:
        server.kill()
        receiver.close()
