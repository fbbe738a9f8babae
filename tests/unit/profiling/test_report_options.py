"""`otel-alloc report`: options per kind, threads by name, --url as --serve, pids."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from otel_alloc import cli
from otel_alloc.profiling import scope
from otel_alloc.profiling.profile import Frame, Profile, SiteStats
from otel_alloc.profiling.render import APPLIES, KINDS
from otel_alloc.profiling.report_server import ReportServer

ALPHA = (Frame("alpha", "app.py", 1), Frame("main", "app.py", 9))
BETA = (Frame("beta", "app.py", 2), Frame("main", "app.py", 9))
WORKER, MAIN = "worker (11)", "MainThread (10)"


def _profile() -> Profile:
    prof = Profile(sample_bytes=4096, live=True, pid=4321)
    prof.cells[(ALPHA, "span-a", WORKER)] = SiteStats(9000.0, 9.0, 1000.0, 1.0, 9)
    prof.cells[(BETA, "span-b", MAIN)] = SiteStats(5000.0, 5.0, 1000.0, 1.0, 5)
    return prof


@pytest.fixture
def profile_file(tmp_path: Path) -> str:
    path = tmp_path / "prof.json"
    _profile().dump(str(path))
    return str(path)


def _report(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(["report", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def _shows(kind: str, text: str, site: str, thread: str) -> bool:
    return (thread.split(" ")[0] if kind == "threads" else site) in text


OPTION_ARGS = {"span": ["--span", "span-a"], "thread": ["--thread", "worker"],
               "key": ["--key", "span"], "value": ["--value", "count"], "n": ["-n", "1"]}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("option", list(OPTION_ARGS))
def test_each_option_applies_or_is_refused(capsys: pytest.CaptureFixture[str],
                                           profile_file: str, kind: str, option: str) -> None:
    code, out, err = _report(capsys, "--file", profile_file, "--kind", kind,
                             *OPTION_ARGS[option])
    flag = OPTION_ARGS[option][0]
    if option not in APPLIES[kind]:
        assert code == 2
        assert flag in err and f"--kind {kind}" in err, err
        return
    assert code == 0, err
    full = _report(capsys, "--file", profile_file, "--kind", kind)[1]
    if option in ("span", "thread"):  # restricts every kind to span-a / the worker
        assert _shows(kind, out, "alpha", WORKER) and not _shows(kind, out, "beta", MAIN), out
        assert _shows(kind, full, "beta", MAIN)
    elif option == "n":  # one row: the larger
        assert _shows(kind, out, "alpha", WORKER) and not _shows(kind, out, "beta", MAIN), out
    elif option == "key":
        assert "span-a" in out and "span-b" in out and "span-a" not in full
    else:  # --value count: counts (9 + 5 - 2 live blocks, or 14 allocations)
        assert out != full
        if kind == "live":
            assert "live count" in out and "~8" in out


def test_live_values_are_refused_by_text_kinds(capsys: pytest.CaptureFixture[str],
                                               profile_file: str) -> None:
    code, _, err = _report(capsys, "--file", profile_file, "--kind", "live",
                           "--value", "live_bytes")
    assert code == 2 and "--value" in err and "--kind live" in err


@pytest.mark.parametrize(("wanted", "matches"), [
    ("worker", True), (WORKER, True), ("Worker", False), ("work", False), ("worker (12)", False),
])
def test_threads_match_by_name_exactly(capsys: pytest.CaptureFixture[str], profile_file: str,
                                       wanted: str, matches: bool) -> None:
    code, out, err = _report(capsys, "--file", profile_file, "--kind", "top",
                             "--thread", wanted)
    if matches:
        assert code == 0 and "alpha" in out and "beta" not in out
    else:
        assert code == 2 and "--thread" in err and "matches nothing" in err and WORKER in err


def test_url_takes_what_serve_takes(capsys: pytest.CaptureFixture[str]) -> None:
    server = ReportServer(_profile)
    try:
        for url in (f"127.0.0.1:{server.port}", str(server.port), server.url):
            code, out, err = _report(capsys, "--url", url, "--kind", "top")
            assert code == 0, (url, err)
            assert "alpha" in out
    finally:
        server.close()
    code, _, err = _report(capsys, "--url", "abc")
    assert code == 2 and "--url='abc'" in err


@pytest.mark.parametrize("kind", ["top", "live", "threads", "churn"])
def test_text_tables_show_the_pid(capsys: pytest.CaptureFixture[str], profile_file: str,
                                  kind: str) -> None:
    code, out, _ = _report(capsys, "--file", profile_file, "--kind", kind)
    assert code == 0 and "pid 4321" in out


def test_profile_keeps_its_pid(tmp_path: Path) -> None:
    assert Profile(sample_bytes=1, live=False).pid == os.getpid()
    data = _profile().to_json()
    assert Profile.from_json(json.loads(json.dumps(data))).pid == 4321
    del data["pid"]  # a file from before the pid was recorded
    assert Profile.from_json(data).pid is None


def test_own_frames_and_threads_are_recognised() -> None:
    pkg = scope.PACKAGE_DIR
    runner = (Frame("_run_program", pkg + "cli/runner.py", 1), Frame("run", "<frozen runpy>", 2))
    program = (Frame("site", "/app/x.py", 3), Frame("<module>", "/app/x.py", 4))
    assert scope.program_stack(program + runner) == program
    assert scope.program_stack(runner) is None
    served = (Frame("dumps", "/usr/lib/json/__init__.py", 5),
              Frame("do_GET", pkg + "profiling/report_server.py", 6),
              Frame("run", "/usr/lib/threading.py", 7))
    assert scope.program_stack(served) is None
    assert scope.program_stack(()) == ()
    bootstrap = (Frame("Thread._delete", "/usr/lib/threading.py", 8),)
    assert scope.program_stack(bootstrap) is None
    for own in ("otel-alloc-watch (5)", "otel-alloc-report (6)",
                "OtelBatchSpanRecordProcessor (7)", "OtelPeriodicExportingMetricReader (8)"):
        assert scope.is_own_thread(own)
    assert not scope.is_own_thread("MainThread (1)")


def _get(url: str) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("option", list(OPTION_ARGS))
def test_endpoint_applies_or_refuses_each_option_like_the_cli(kind: str, option: str) -> None:
    server = ReportServer(_profile)
    try:
        status, body = _get(f"{server.url}/report?kind={kind}&{option}="
                            f"{OPTION_ARGS[option][1].replace(' ', '+')}")
        full = _get(f"{server.url}/report?kind={kind}")[1]
    finally:
        server.close()
    if option not in APPLIES[kind]:
        assert status == 400 and f"{option}=" in body and f"kind {kind}" in body, body
        return
    assert status == 200, body
    if option in ("span", "thread", "n"):  # the worker's / span-a's site alone
        assert _shows(kind, body, "alpha", WORKER) and not _shows(kind, body, "beta", MAIN)
        assert _shows(kind, full, "beta", MAIN)


@pytest.mark.parametrize("query", ["kind=top&bogus=1", "kind=nope", "kind=top&n=many",
                                   "kind=live&value=live_bytes", "kind=live&key=colour"])
def test_endpoint_refuses_bad_requests_naming_them(query: str) -> None:
    server = ReportServer(_profile)
    try:
        status, body = _get(f"{server.url}/report?{query}")
        flame_status, flame_body = _get(f"{server.url}/flamegraph.html?n=3")
    finally:
        server.close()
    name, _, value = query.split("&")[-1].partition("=")
    assert status == 400 and name in body and value in body, body
    assert flame_status == 400 and "n=" in flame_body and "kind flamegraph" in flame_body


def test_endpoint_request_threads_leave_nothing_even_when_every_allocation_is_sampled() -> None:
    """What a request thread allocates while it starts (a RAW block, no stack) is dropped too."""
    import urllib.request

    import otel_alloc
    from otel_alloc.profiling import sampling
    from otel_alloc.tracker import sampler as native_sampler

    otel_alloc.install("live")
    try:
        collector = sampling.shared_collector(4096, True)
        server = ReportServer(lambda: collector.profile)
        try:
            native_sampler.sampler_configure(1, 8, 1 << 18)  # every allocation, below the floor
            for _ in range(10):
                urllib.request.urlopen(server.url + "/profile.json", timeout=10).read()
            collector.drain()
        finally:
            sampling.configure(0)
            server.close()
        threads = {str(key[2]) for key in collector.profile.snapshot()}
    finally:
        otel_alloc.uninstall()
    assert all(t.startswith("MainThread") for t in threads), threads
