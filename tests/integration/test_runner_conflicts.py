"""`otel-alloc run` names the conflict when the program's own setup disagrees with it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.integration.test_runner import ROOT, _env

OWN_PROCESSOR = textwrap.dedent("""
    from opentelemetry.sdk.trace import TracerProvider
    from otel_alloc import AllocationSpanProcessor
    provider = TracerProvider()
    provider.add_span_processor(AllocationSpanProcessor(mode="live"))
    print("program ran on")
""")

OWN_INSTALL = textwrap.dedent("""
    import otel_alloc
    otel_alloc.install("live")
    print("program ran on")
""")


@pytest.mark.parametrize("program", [OWN_PROCESSOR, OWN_INSTALL], ids=["processor", "install"])
def test_live_program_under_plain_runner_is_told_to_pass_mode(tmp_path: Path,
                                                             program: str) -> None:
    script = tmp_path / "own.py"
    script.write_text(program)
    proc = subprocess.run([sys.executable, "-m", "otel_alloc", "run", str(script)],
                          capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "mode conflict" in proc.stderr, proc.stderr
    assert "--mode live" in proc.stderr and "'counts'" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and "program ran on" not in proc.stdout


def test_matching_mode_runs(tmp_path: Path) -> None:
    script = tmp_path / "own.py"
    script.write_text(OWN_PROCESSOR)
    proc = subprocess.run([sys.executable, "-m", "otel_alloc", "run", "--mode", "live",
                           str(script)], capture_output=True, text=True, cwd=ROOT, env=_env(),
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "program ran on" in proc.stdout
