"""The otel-alloc runner and the opentelemetry-instrument entry point, as subprocesses."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.child_env import child_env
from tests.support.hung import end_hung

ROOT = Path(__file__).resolve().parents[2]
MIB = 1 << 20


def _env(**extra: str) -> dict[str, str]:
    return child_env(drop_pythonpath=True, **extra)


def run_cli(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """``otel-alloc ARGS`` to its end; a run past 120 s fails with its processes' stacks."""
    cmd = [sys.executable, "-m", "otel_alloc", *args]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          cwd=cwd or ROOT, env=_env(**env)) as proc:
        try:
            out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            evidence, err = end_hung(proc)
            raise AssertionError(f"{cmd} hung:\n{evidence}\n--- stderr:\n{err[-5000:]}") from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@contextmanager
def served(script: Path, *args: str, run_args: tuple[str, ...] = ()) -> Iterator[str]:
    """``otel-alloc run --serve 0 script args`` sampling every 64 KiB; yields the endpoint's URL.

    The script prints ``ready`` once its sites exist. The runner is stopped
    with SIGTERM afterwards; one that does not end in 30 s fails the test,
    with its processes' stacks.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "otel_alloc", "run", *run_args, "--serve", "0", str(script),
         *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env=_env(OTEL_ALLOC_SAMPLE_BYTES="64KiB"))
    try:
        assert proc.stderr is not None and proc.stdout is not None
        line = proc.stderr.readline()
        url = re.search(r"(http://127\.0\.0\.1:\d+)", line)
        assert url, line
        assert proc.stdout.readline().strip() == "ready"
        yield url.group(1)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired as timeout:
            evidence, err = end_hung(proc)
            # The chain also keeps whatever the test's body raised.
            raise AssertionError(
                f"the runner outlived its SIGTERM by 30 s:\n{evidence}\n--- stderr:\n"
                f"{err[-5000:]}") from timeout


def table_rows(stderr: str) -> dict[str, list[str]]:
    """Parse the exit table: span name -> the other columns."""
    lines = stderr.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("span name"))
    rows = {}
    for line in lines[start + 2:]:
        if not line.strip():
            break
        cells = re.split(r"\s{2,}", line.strip())
        rows[cells[0]] = cells[1:]
    return rows


def parse_size(text: str) -> float:
    number, unit = text.lstrip("~").split()
    return float(number) * {"B": 1, "KiB": 1024, "MiB": MIB, "GiB": 1024 * MIB}[unit]


KNOWN = textwrap.dedent("""
    import sys
    from opentelemetry import trace
    tracer = trace.get_tracer("known")
    keep = []
    for i in range(5):
        with tracer.start_as_current_span("one-mib"):
            len(bytearray(1 << 20))  # freed within the span
        with tracer.start_as_current_span("keeps-256k"):
            keep.append(bytearray(256 << 10))
    sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
""")


def test_table_numbers_match_known_allocations(tmp_path: Path) -> None:
    script = tmp_path / "known.py"
    script.write_text(KNOWN)
    res = run_cli("run", "--mode", "live", str(script))
    assert res.returncode == 0, res.stderr
    rows = table_rows(res.stderr)
    spans, total, _count, p50, p99, live = rows["one-mib"]
    assert spans == "5"
    assert 5 * MIB <= parse_size(total) <= 5 * MIB * 1.02
    assert MIB <= parse_size(p50) <= MIB * 1.02 and MIB <= parse_size(p99) <= MIB * 1.02
    k_spans, *_, k_live = rows["keeps-256k"]
    assert k_spans == "5"
    assert 5 * 256 * 1024 <= parse_size(k_live) <= 5 * 256 * 1024 * 1.05
    assert parse_size(live) < 64 * 1024  # the 1 MiB buffers were freed within the span


def test_estimate_mode_table_says_it_estimates(tmp_path: Path) -> None:
    script = tmp_path / "known.py"
    script.write_text(KNOWN)
    res = run_cli("run", "--mode", "estimate", str(script))
    assert res.returncode == 0, res.stderr
    assert "(estimate mode," in res.stderr and "live at span end (estimated)" in res.stderr
    rows = table_rows(res.stderr)
    # A 256 KiB block is sampled for sure (p = 1 - exp(-64)) and counts its own
    # size; the span's small objects may add a sample of about 4 KiB each.
    *_, k_live = rows["keeps-256k"]
    assert 5 * 256 * 1024 <= parse_size(k_live) <= 5 * 256 * 1024 * 1.10
    *_, live = rows["one-mib"]
    assert parse_size(live) < 64 * 1024


def test_estimate_bytes_flag_sets_the_mean(tmp_path: Path) -> None:
    script = tmp_path / "mean.py"
    script.write_text("from otel_alloc import tracker\nprint(tracker.estimate_bytes())\n")
    res = run_cli("run", "--mode", "estimate", "--estimate-bytes", "1KiB", str(script),
                  OTEL_ALLOC_ESTIMATE_BYTES="2KiB")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "1024"  # the flag over the variable
    res = run_cli("run", "--mode", "estimate", str(script), OTEL_ALLOC_ESTIMATE_BYTES="2KiB")
    assert res.stdout.strip() == "2048", res.stderr


def test_exit_code_is_passed_through(tmp_path: Path) -> None:
    script = tmp_path / "known.py"
    script.write_text(KNOWN)
    res = run_cli("run", str(script), "7")
    assert res.returncode == 7
    assert "one-mib" in res.stderr  # the table is still printed


def test_run_module(tmp_path: Path) -> None:
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "job.py").write_text(KNOWN)
    res = run_cli("run", "-m", "mypkg.job", "3", cwd=tmp_path)
    assert res.returncode == 3, res.stderr
    assert table_rows(res.stderr)["one-mib"][0] == "5"


def test_exception_exit_code_and_traceback(tmp_path: Path) -> None:
    script = tmp_path / "boom.py"
    script.write_text("raise ValueError('boom')\n")
    res = run_cli("run", str(script))
    assert res.returncode == 1
    assert "ValueError: boom" in res.stderr


def test_sigterm_is_passed_through(tmp_path: Path) -> None:
    script = tmp_path / "sleepy.py"
    script.write_text(textwrap.dedent("""
        import time
        from opentelemetry import trace
        with trace.get_tracer("t").start_as_current_span("before-sleep"):
            x = bytearray(100_000)
        print("ready", flush=True)
        time.sleep(60)
    """))
    proc = subprocess.Popen([sys.executable, "-m", "otel_alloc", "run", str(script)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, env=_env())
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGTERM
    assert "before-sleep" in err


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["run", "--mode", "fast", "x.py"], {}, "invalid choice: 'fast'"),
        (["run"], {}, "nothing to run"),
        (["run", "no/such/script.py"], {}, "not found"),
        (["run", "examples/batch_job.py", "1"], {"OTEL_ALLOC_MODE": "turbo"}, "OTEL_ALLOC_MODE"),
        (["run", "examples/batch_job.py", "1"], {"OTEL_TRACES_EXPORTER": "carrier-pigeon"},
         "OTEL_TRACES_EXPORTER"),
        (["run", "examples/batch_job.py", "1"], {"OTEL_ALLOC_MAX_GROUPS": "-5"},
         "OTEL_ALLOC_MAX_GROUPS"),
        (["run", "--mode", "estimate", "examples/batch_job.py", "1"],
         {"OTEL_ALLOC_ESTIMATE_BYTES": "1B"}, "OTEL_ALLOC_ESTIMATE_BYTES"),
        (["run", "--mode", "estimate", "--estimate-bytes", "12", "examples/batch_job.py", "1"],
         {}, "--estimate-bytes='12' is not valid: expected a byte size from 64 to 67108864"),
        (["run", "--estimate-bytes", "1KiB", "examples/batch_job.py", "1"],
         {"OTEL_ALLOC_MODE": "live"}, "expected --mode estimate with it"),
    ],
)
def test_bad_options_are_clear_errors(args: list[str], env: dict[str, str], message: str) -> None:
    res = run_cli(*args, **env)
    assert res.returncode == 2, res.stderr
    assert message in res.stderr
    assert "Traceback" not in res.stderr


def test_exporting_skips_the_table_unless_asked(tmp_path: Path) -> None:
    script = tmp_path / "known.py"
    script.write_text(KNOWN)
    env = {"OTEL_TRACES_EXPORTER": "console", "OTEL_METRICS_EXPORTER": "none",
           "OTEL_LOGS_EXPORTER": "none"}
    res = run_cli("run", str(script), **env)
    assert res.returncode == 0, res.stderr
    assert "span name" not in res.stderr
    assert '"alloc.bytes"' in res.stdout  # console exporter printed enriched spans
    res = run_cli("run", "--table", str(script), **env)
    assert "span name" in res.stderr


def test_opentelemetry_instrument_entry_point(tmp_path: Path) -> None:
    script = tmp_path / "known.py"
    script.write_text(KNOWN)
    instrument = Path(sys.executable).with_name("opentelemetry-instrument")
    if not instrument.exists():
        pytest.skip("opentelemetry-distro is not installed")
    env = _env(OTEL_ALLOC_ENABLED="true", OTEL_TRACES_EXPORTER="console",
               OTEL_METRICS_EXPORTER="none", OTEL_LOGS_EXPORTER="none",
               OTEL_SERVICE_NAME="known")
    res = subprocess.run([str(instrument), sys.executable, str(script)], capture_output=True,
                         text=True, cwd=ROOT, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    sizes = [int(m) for m in re.findall(r'"alloc\.bytes": (\d+)', res.stdout)]
    assert len(sizes) == 10
    assert sum(1 for s in sizes if MIB <= s <= MIB * 1.02) == 5
    # Without the variable the instrumentor stays out of the way.
    env.pop("OTEL_ALLOC_ENABLED")
    res = subprocess.run([str(instrument), sys.executable, str(script)], capture_output=True,
                         text=True, cwd=ROOT, env=env, timeout=120)
    assert res.returncode == 0 and '"alloc.bytes"' not in res.stdout


SITES = textwrap.dedent("""
    import sys, time
    from opentelemetry import trace
    tracer = trace.get_tracer("sites")

    def hot_site():
        return [bytearray(4000) for _ in range(5000)]

    keep = []
    with tracer.start_as_current_span("hot"):
        keep.append(hot_site())
    print("ready", flush=True)
    if len(sys.argv) > 1:
        time.sleep(float(sys.argv[1]))
""")


def test_report_from_file_written_at_exit(tmp_path: Path) -> None:
    script = tmp_path / "sites.py"
    script.write_text(SITES)
    prof = tmp_path / "prof.json"
    res = run_cli("run", "--mode", "live", "--profile", str(prof), str(script),
                  OTEL_ALLOC_SAMPLE_BYTES="64KiB")
    assert res.returncode == 0, res.stderr
    top = run_cli("report", "--file", str(prof), "--kind", "top", "--span", "hot")
    assert top.returncode == 0, top.stderr
    assert "ESTIMATES" in top.stdout and "hot_site" in top.stdout
    page = tmp_path / "flame.html"
    fl = run_cli("report", "--file", str(prof), "--kind", "flamegraph", "-o", str(page))
    assert fl.returncode == 0 and page.read_text().startswith("<!DOCTYPE html>")
    bad = run_cli("report", "--file", str(tmp_path / "missing.json"))
    assert bad.returncode == 2 and "otel-alloc report" in bad.stderr


def test_report_from_running_program(tmp_path: Path) -> None:
    script = tmp_path / "sites.py"
    script.write_text(SITES)
    with served(script, "30") as url:
        deadline = time.monotonic() + 20
        while True:
            res = run_cli("report", "--url", url, "--kind", "collapsed")
            if "hot_site" in res.stdout or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert "hot_site" in res.stdout, res.stderr
