"""`otel-alloc run` at the smallest accepted sampling mean exits; below it is refused."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from otel_alloc import validation
from tests.integration.test_runner import ROOT, _env

# Spans of request-like work while a background thread allocates without
# pause: at exit the runner flushes the profile while samples keep coming.
BUSY = textwrap.dedent("""
    import json, threading
    from opentelemetry import trace

    def churn():
        while True:
            json.dumps([{"k": i, "v": str(i)} for i in range(500)])

    threading.Thread(target=churn, daemon=True).start()
    tracer = trace.get_tracer("busy")
    for i in range(60):
        with tracer.start_as_current_span("request"):
            json.dumps([{"a": j, "b": str(j) * 3} for j in range(2000)])
    print("program done")
""")


def test_smallest_accepted_mean_exits(tmp_path: Path) -> None:
    script = tmp_path / "busy.py"
    script.write_text(BUSY)
    profile = tmp_path / "prof.json"
    # A hang shows as TimeoutExpired; nothing here is timed otherwise.
    proc = subprocess.run(
        [sys.executable, "-m", "otel_alloc", "run", "--no-table", "--profile", str(profile),
         str(script)], capture_output=True, text=True, cwd=ROOT, timeout=120,
        env=_env(OTEL_ALLOC_SAMPLE_BYTES=str(validation.MIN_SAMPLE_BYTES)))
    assert proc.returncode == 0, proc.stderr
    assert "program done" in proc.stdout
    data = json.loads(profile.read_text())
    assert data["sample_bytes"] == validation.MIN_SAMPLE_BYTES and data["cells"]


def test_mean_below_the_floor_stops_before_the_program(tmp_path: Path) -> None:
    script = tmp_path / "program.py"
    script.write_text("print('program ran')\n")
    proc = subprocess.run([sys.executable, "-m", "otel_alloc", "run", str(script)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60,
                          env=_env(OTEL_ALLOC_SAMPLE_BYTES="256"))
    assert proc.returncode == 2, proc.stderr
    assert "OTEL_ALLOC_SAMPLE_BYTES='256'" in proc.stderr, proc.stderr
    assert f"0 (off) or a byte size from {validation.MIN_SAMPLE_BYTES}" in proc.stderr
    assert "Traceback" not in proc.stderr and "program ran" not in proc.stdout
