"""The suite's same-interpreter rounds (``--interleave B --same-interpreter``).

Every variant of a round shares one interpreter, set up before and undone
after each of its bursts; what matters is that undoing leaves the process as
it was, so that the baseline's bursts run without any tracer.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.integration.conftest import progress_cells, suite_module

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "benchmarks" / "suite.py"
ALL = ("untraced", "counts", "live", "native", "estimate", "tracemalloc", "memray")


def _in_child(code: str, timeout: float = 180) -> dict[str, object]:
    """Run ``code`` (with the suite's modules importable) in a fresh interpreter; its JSON."""
    prelude = f"import json, sys\nsys.path.insert(0, {str(SUITE.parent)!r})\n"
    proc = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_same_interpreter_smoke_times_every_variant_and_prints_one_table(
        tmp_path: Path) -> None:
    raw = tmp_path / "raw.json"
    proc = subprocess.run([sys.executable, str(SUITE), "--smoke", "--only", "core,spans",
                           "--interleave", "3", "--same-interpreter", "--json", str(raw)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert ("1 rounds, one fresh interpreter per round holding every variant, switched on "
            "for each of its 3 bursts and off after it") in proc.stdout
    rows = suite_module("suite_table").parse(proc.stdout)
    assert [row["item"] for row in rows] == ["core", "spans"]
    results = json.loads(raw.read_text())["results"]
    for series in results:
        assert {"untraced", "counts", "live", "estimate", "tracemalloc"} <= set(
            series["values"]), series
        assert not series["errors"], series["errors"]
        for variant, shown in progress_cells(proc.stderr, series["item"]):
            if shown != "n/a":
                assert series["values"][variant][0] > 0, (variant, series)


def test_same_interpreter_needs_interleave() -> None:
    proc = subprocess.run([sys.executable, str(SUITE), "--only", "core", "--same-interpreter"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert ("--same-interpreter: given without --interleave; accepted only with "
            "--interleave B") in proc.stderr


@pytest.mark.parametrize("spans", [True, False])
def test_undoing_a_variant_leaves_no_tracer_behind(spans: bool) -> None:
    state = _in_child(f"""
        import threading
        import tracemalloc
        from opentelemetry import context
        import otel_alloc
        from otel_alloc.otel import context_follower
        import suite_child

        found = context._RUNTIME_CONTEXT
        threads = threading.active_count()
        left = {{}}
        for variant in {ALL!r}:
            try:
                with suite_child._tracing(variant, {spans}) as tracing:
                    with tracing.span("x"):
                        bytes(100)
                    on = otel_alloc.installed_mode()
                    traced = tracemalloc.is_tracing()
            except suite_child.NotApplicable:
                continue
            left[variant] = {{
                "on": on,
                "traced": traced,
                "installed": otel_alloc.installed_mode(),
                "in_chain": any(d["in_chain"] for d in otel_alloc.hook_status().values()),
                "hook": context_follower.context_hook_installed(),
                "same_context": context._RUNTIME_CONTEXT is found,
                "tracemalloc": tracemalloc.is_tracing(),
                "threads": threading.active_count() - threads,
            }}
        print(json.dumps(left))
    """)
    assert {"untraced", "counts", "live", "estimate", "tracemalloc"} <= set(state), state
    for variant, seen in state.items():
        # While on: the variant's tracer. After it is undone: none, nothing hooked,
        # OpenTelemetry's own runtime context, no thread left running.
        assert seen == {"on": seen["on"], "traced": variant == "tracemalloc",
                        "installed": None, "in_chain": False, "hook": False,
                        "same_context": True, "tracemalloc": False, "threads": 0}, (variant, seen)
        expected = {"counts": "counts", "live": "live", "native": "live",
                    "estimate": "estimate"}.get(variant)
        assert seen["on"] == expected, (variant, seen)


def test_a_round_sums_whole_bursts_and_the_baseline_runs_untracked_after_each_variant() -> None:
    result = _in_child("""
        import otel_alloc
        import suite_child
        from suite_items import ITEMS

        total = ITEMS["core"].ops(0.01)
        out = suite_child.switched_round("core", ["counts", "untraced", "live"], 0.01, 3)
        print(json.dumps({"total": total, "out": out, "after": otel_alloc.installed_mode()}))
    """)
    burst = int(result["total"]) // 3  # type: ignore[call-overload]
    out = result["out"]
    assert isinstance(out, dict)
    for variant in ("counts", "untraced", "live"):
        assert out[variant]["ops"] == 3 * burst, out
        assert out[variant]["seconds"] > 0 and out[variant]["cpu_seconds"] > 0, out
    assert result["after"] is None


def test_an_item_of_fewer_ops_than_bursts_takes_one_op_a_burst() -> None:
    result = _in_child("""
        import suite_child

        print(json.dumps(suite_child.switched_round("spans", ["untraced"], 0.0001, 10)))
    """)
    assert result["untraced"]["ops"] == 2, result  # spans at scale 0.0001: 2 ops, 2 bursts


def test_a_variant_that_cannot_set_up_is_an_error_and_the_others_run(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A bad setting stops the processor's construction; no tracker stays installed.
    monkeypatch.setenv("OTEL_ALLOC_MAX_SPAN_NAMES", "many")
    result = _in_child("""
        import otel_alloc
        import suite_child

        out = suite_child.switched_round("spans", ["counts", "untraced", "tracemalloc"], 0.01, 2)
        print(json.dumps({"out": out, "after": otel_alloc.installed_mode()}))
    """)
    out = result["out"]
    assert isinstance(out, dict)
    assert "OTEL_ALLOC_MAX_SPAN_NAMES" in out["counts"]["error"], out
    assert out["untraced"]["seconds"] > 0 and out["tracemalloc"]["seconds"] > 0, out
    assert result["after"] is None


def test_memray_runs_beside_its_own_baseline_and_is_put_on_the_rounds_scale(
        monkeypatch: pytest.MonkeyPatch) -> None:
    suite = suite_module("suite")
    calls: list[list[str]] = []

    def child(item: str, variants: list[str], plan: object) -> dict[str, dict[str, object]]:
        calls.append(list(variants))
        if "memray" in variants:  # its own interpreter: a baseline twice as slow
            return {"untraced": {"seconds": 2.0, "cpu_seconds": 4.0, "ops": 9},
                    "memray": {"seconds": 3.0, "cpu_seconds": 6.0, "ops": 9}}
        return {v: {"seconds": 1.0, "cpu_seconds": 2.0, "ops": 9} for v in variants}

    monkeypatch.setattr(suite, "_switch_child", child)
    plan = suite.Plan(rounds=1, scale=1.0, service_seconds=1.0, items=["core"], clock="wall",
                      bursts=2, same_interpreter=True)
    results = suite._switched("core", ["memray", "counts", "untraced"], plan)
    assert calls == [["counts", "untraced"], ["memray", "untraced"]]
    assert list(results) == ["memray", "counts", "untraced"]
    # 1.5x its own baseline, on the round's: 1.5 s and 3.0 s of CPU.
    assert results["memray"] == {"seconds": 1.5, "cpu_seconds": 3.0, "ops": 9}
    assert results["counts"]["seconds"] == 1.0


def test_memray_without_a_baseline_figure_to_scale_by_is_an_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    suite = suite_module("suite")

    def child(item: str, variants: list[str], plan: object) -> dict[str, dict[str, object]]:
        if "memray" in variants:
            return {"untraced": {"error": "exit 1: boom"},
                    "memray": {"seconds": 3.0, "cpu_seconds": 6.0, "ops": 9}}
        return {v: {"seconds": 1.0, "cpu_seconds": 2.0, "ops": 9} for v in variants}

    monkeypatch.setattr(suite, "_switch_child", child)
    plan = suite.Plan(rounds=1, scale=1.0, service_seconds=1.0, items=["core"], clock="wall",
                      bursts=2, same_interpreter=True)
    results = suite._switched("core", ["untraced", "memray"], plan)
    assert results["memray"] == {"error": "no baseline seconds to scale memray's by"}
    assert results["untraced"]["seconds"] == 1.0


def test_span_parts_prints_every_part_and_leaves_no_tracer_after_each_burst() -> None:
    proc = subprocess.run([sys.executable, str(SUITE.parent / "bench_span_parts.py"),
                           "--pairs", "2", "--burst", "20"],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    shown = dict(re.findall(r"^  (\S+) +(\d+\.\d+)x \(", proc.stdout, re.M))
    assert list(shown) == ["sdk", "hooks", "path", "counts", "no-attributes", "no-metrics"]
    assert shown["sdk"] == "1.000" and all(float(v) > 0 for v in shown.values()), shown
    state = _in_child("""
        import otel_alloc
        import bench_span_parts
        from suite_items import ITEMS

        op = ITEMS["spans"].build()
        left = {}
        for variant in bench_span_parts.VARIANTS:
            seconds = bench_span_parts._burst(variant, op, 5)
            left[variant] = [seconds > 0, otel_alloc.installed_mode(),
                             any(d["in_chain"] for d in otel_alloc.hook_status().values())]
        print(json.dumps(left))
    """)
    # Each burst timed; after each, nothing installed and nothing in the allocator chain.
    parts = ("sdk", "hooks", "path", "counts", "no-attributes", "no-metrics")
    assert state == {part: [True, None, False] for part in parts}
