"""Reports of programs run by `otel-alloc run`: the program's work only, one per process."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

from otel_alloc.profiling.profile import Profile
from otel_alloc.profiling.scope import PACKAGE_DIR
from tests.integration.test_runner import ROOT, _env

FORKS = textwrap.dedent("""
    import os
    from opentelemetry import trace
    tracer = trace.get_tracer("forks")
    pid = os.fork()
    with tracer.start_as_current_span("child" if pid == 0 else "parent"):
        keep = [bytearray(1000) for _ in range(2000)]
    if pid:
        os.waitpid(pid, 0)
        print("parent", os.getpid(), "child", pid)
""")


def _run(tmp_path: Path, program: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "program.py"
    script.write_text(program)
    return subprocess.run([sys.executable, "-m", "otel_alloc", "run", *args, str(script)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env=_env(**env))


def test_forked_child_has_its_own_table_and_profile(tmp_path: Path) -> None:
    profile = tmp_path / "prof.json"
    proc = _run(tmp_path, FORKS, "--table", "--profile", str(profile),
                OTEL_ALLOC_SAMPLE_BYTES="4KiB")
    assert proc.returncode == 0, proc.stderr
    parent, child = map(int, re.findall(r"parent (\d+) child (\d+)", proc.stdout)[0])
    pids = re.findall(r"allocations per span \(counts mode, pid (\d+)\)", proc.stderr)
    assert sorted(map(int, pids)) == sorted([parent, child]), proc.stderr
    child_file = tmp_path / f"prof.{child}.json"
    for path, pid, span in ((profile, parent, "parent"), (child_file, child, "child")):
        prof = Profile.load(str(path))
        assert prof.pid == pid
        assert {k[1] for k in prof.cells} <= {span, "(no span)"}, (path, prof.cells.keys())
        report = subprocess.run([sys.executable, "-m", "otel_alloc", "report", "--file",
                                 str(path)], capture_output=True, text=True, cwd=ROOT,
                                timeout=60, env=_env())
        assert f"pid {pid}" in report.stdout, report.stderr


BUSY_AND_SERVED = textwrap.dedent("""
    import sys, urllib.request
    from opentelemetry import trace
    tracer = trace.get_tracer("busy")
    keep = []
    for i in range(20):
        with tracer.start_as_current_span("work"):
            keep.append([str(j) * 10 for j in range(5000)])
            # The report endpoint's thread works too: not the program's work.
            urllib.request.urlopen(sys.argv[1] + "/profile.json").read()
""")


def test_tracer_frames_and_threads_are_left_out(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    profile = tmp_path / "prof.json"
    script = tmp_path / "program.py"
    script.write_text(BUSY_AND_SERVED)
    proc = subprocess.run(
        [sys.executable, "-m", "otel_alloc", "run", "--mode", "live", "--profile", str(profile),
         "--serve", str(port), str(script), f"http://127.0.0.1:{port}"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
        # Console exporters run the SDK's export threads.
        env=_env(OTEL_ALLOC_SAMPLE_BYTES="4KiB", OTEL_TRACES_EXPORTER="console",
                 OTEL_METRICS_EXPORTER="none", OTEL_LOGS_EXPORTER="console"))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(profile.read_text())
    files = {f[1] for f in data["frames"]}
    threads = {cell[2] for cell in data["cells"]}
    assert str(script) in files
    assert not [f for f in files if f.startswith(PACKAGE_DIR) or "runpy" in f], files
    assert all(t.startswith("MainThread") for t in threads), threads
