"""``otel-alloc run --native``: NumPy's array data charged to spans, and the
exit table's memory lines (RSS, and how much of it the figures explain)."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from tests.integration.test_runner import MIB, parse_size, run_cli, table_rows

pytest.importorskip("numpy", reason="numpy is not installed (CI installs it)")

ARRAYS = textwrap.dedent("""
    import builtins
    import numpy as np
    from opentelemetry import trace
    tracer = trace.get_tracer("arrays")
    builtins.kept = []  # alive at exit, so the memory lines see them
    for i in range(4):
        with tracer.start_as_current_span("load"):
            builtins.kept.append(np.ones(1 << 20))  # 8 MiB each, touched
""")


def _memory(stderr: str) -> str:
    start = stderr.index("memory: RSS")
    return stderr[start:]


@pytest.mark.parametrize("how", ["default", "flag", "env"])
def test_native_charges_numpy_data_to_spans(tmp_path: Path, how: str) -> None:
    script = tmp_path / "arrays.py"
    script.write_text(ARRAYS)
    args = ["run", "--mode", "live", "--table"] + (["--native"] if how == "flag" else [])
    done = run_cli(*args, str(script), **({"OTEL_ALLOC_NATIVE": "true"} if how == "env" else {}))
    assert done.returncode == 0, done.stderr
    load = table_rows(done.stderr)["load"]
    assert load[0] == "4"
    assert 32 * MIB <= parse_size(load[1]) < 33 * MIB  # 4 x 8 MiB of array data
    memory = _memory(done.stderr)
    explained = re.search(r"explained (\d+)%: Python objects (.+?), native (.+?), "
                          r"otel_alloc itself (.+?); unexplained", memory)
    assert explained is not None, memory
    assert 32 * MIB <= parse_size(explained.group(3)) < 33 * MIB


def test_estimate_mode_memory_line_says_it_estimates(tmp_path: Path) -> None:
    script = tmp_path / "arrays.py"
    script.write_text(ARRAYS)
    done = run_cli("run", "--mode", "estimate", "--native", "--table", str(script))
    assert done.returncode == 0, done.stderr
    memory = _memory(done.stderr)
    explained = re.search(r"explained about (\d+)% \(estimated from a sample of the blocks\): "
                          r"Python objects about (.+?), native about (.+?), "
                          r"otel_alloc itself (.+?); unexplained about", memory)
    assert explained is not None, memory
    # Each 8 MiB array is sampled for sure (p = 1 - exp(-2048)) and stands
    # for its own size; other native blocks still alive add a little.
    assert 32 * MIB <= parse_size(explained.group(3)) < 33 * MIB


@pytest.mark.parametrize("how", ["flag", "env"])
def test_without_native_the_table_says_how_to_see_native_code(tmp_path: Path, how: str) -> None:
    script = tmp_path / "arrays.py"
    script.write_text(ARRAYS)
    args = ["run", "--mode", "live", "--table"] + (["--no-native"] if how == "flag" else [])
    done = run_cli(*args, str(script), **({"OTEL_ALLOC_NATIVE": "false"} if how == "env" else {}))
    assert done.returncode == 0, done.stderr
    assert parse_size(table_rows(done.stderr)["load"][1]) < MIB  # array data unseen
    assert "native code: --native" in _memory(done.stderr)


def test_bad_native_setting_fails_before_the_program(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    script = tmp_path / "app.py"
    script.write_text(f"open({str(marker)!r}, 'w').close()\n")
    done = run_cli("run", str(script), OTEL_ALLOC_NATIVE="maybe")
    assert done.returncode == 2
    assert "OTEL_ALLOC_NATIVE" in done.stderr and "maybe" in done.stderr
    assert not marker.exists()
