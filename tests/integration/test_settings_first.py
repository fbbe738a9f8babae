"""`otel-alloc run` checks every setting, file and port before the program starts."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

import otel_alloc
from tests.integration.test_runner import ROOT, _env

PROGRAM = "print('program ran')\n"


def _run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "program.py"
    script.write_text(PROGRAM)
    return subprocess.run([sys.executable, "-m", "otel_alloc", *args, str(script)],
                          capture_output=True, text=True, cwd=ROOT, env=_env(**env), timeout=60)


def test_version() -> None:
    proc = subprocess.run([sys.executable, "-m", "otel_alloc", "--version"], capture_output=True,
                          text=True, cwd=ROOT, env=_env(), timeout=60)
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"otel-alloc {otel_alloc.__version__}"


@pytest.mark.parametrize(("args", "env", "named", "value"), [
    (["run", "--profile", "/nonexistent-folder/p.json"], {}, "--profile",
     "/nonexistent-folder/p.json"),
    (["run"], {"OTEL_ALLOC_PROFILE_FILE": "/nonexistent-folder/p.json"},
     "OTEL_ALLOC_PROFILE_FILE", "/nonexistent-folder/p.json"),
    (["run"], {"OTEL_ALLOC_PROFILE_FILE": "/"}, "OTEL_ALLOC_PROFILE_FILE", "/"),
    (["run"], {"OTEL_ALLOC_REPORT_ADDRESS": "abc"}, "OTEL_ALLOC_REPORT_ADDRESS", "abc"),
    (["run", "--serve", "abc"], {}, "--serve", "abc"),
    (["run"], {"OTEL_ALLOC_THRESHOLD_BYTES": "99999999999999999999"},
     "OTEL_ALLOC_THRESHOLD_BYTES", "99999999999999999999"),
    (["run"], {"OTEL_ALLOC_SAMPLE_BYTES": "100EiB"}, "OTEL_ALLOC_SAMPLE_BYTES", "100EiB"),
])
def test_bad_setting_stops_before_the_program(tmp_path: Path, args: list[str],
                                              env: dict[str, str], named: str,
                                              value: str) -> None:
    proc = _run(tmp_path, *args, **env)
    assert proc.returncode == 2, proc.stderr
    assert named in proc.stderr and value in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "program ran" not in proc.stdout


def test_busy_report_port_stops_before_the_program(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        proc = _run(tmp_path, "run", "--serve", str(port))
    assert proc.returncode == 2, proc.stderr
    assert "--serve" in proc.stderr and "free port" in proc.stderr, proc.stderr
    assert "program ran" not in proc.stdout


def test_mistyped_processor_keyword_lists_the_valid_ones() -> None:
    with pytest.raises(otel_alloc.ConfigError) as err:
        otel_alloc.AllocationSpanProcessor(sample_byte=1024)  # type: ignore[arg-type]
    message = str(err.value)
    assert "sample_byte" in message and "sample_bytes" in message and "leak_min_bytes" in message
