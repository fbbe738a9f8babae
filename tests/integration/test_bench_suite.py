"""The benchmark scripts run: the suite prints a table that parses, callgrind_ratios a ratio each.

Smoke mode on the smallest item, one round: a few seconds. It measures
nothing; it keeps the script from breaking silently.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.integration.conftest import suite_module

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "benchmarks" / "suite.py"
COLUMNS = ["item", "1.00x =", "counts", "live", "live+native", "estimate", "tracemalloc",
           "memray"]
RATIO = re.compile(r"^\d+\.\d\dx \(\d+\.\d\d-\d+\.\d\d\)")
VERDICT = re.compile(r" [<>]=\d+\.\d+%? (pass|FAIL)$")


def test_suite_smoke_prints_one_table_that_parses() -> None:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, str(SUITE), "--smoke", "--only", "core",
                           "--rounds", "1"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - start < 60
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert len(rows) == 2, proc.stdout  # the header and one item
    titles = [c.strip() for c in rows[0].strip(" |").split("|")]
    assert titles == COLUMNS
    cells = dict(zip(titles, (c.strip() for c in rows[1].strip(" |").split("|")), strict=True))
    assert cells["item"] == "core"
    assert cells["1.00x ="].startswith("untraced, ")
    for column in ("counts", "live"):  # the targets are printed beside the values
        assert RATIO.match(cells[column]) and VERDICT.search(cells[column]), cells[column]
    for column in ("tracemalloc", "estimate"):  # no target of their own
        assert RATIO.match(cells[column]) and not VERDICT.search(cells[column]), cells[column]
    for column in ("live+native", "memray"):  # measured, or said why not
        assert RATIO.match(cells[column]) or cells[column].startswith("n/a ("), cells[column]
    assert re.search(r"^targets: \d+ pass, \d+ FAIL$", proc.stdout, re.M)
    # One round gives no interval, so no verdict is listed as unsettled.
    assert re.search(r"^verdicts the rounds cannot settle .*: none$", proc.stdout, re.M)
    assert "1 rounds" in proc.stdout
    # The suite's own parser agrees.
    assert [row["item"] for row in suite_module("suite_table").parse(proc.stdout)] == ["core"]


CALLGRIND = ROOT / "benchmarks" / "callgrind_ratios.py"


# Options every callgrind script refuses, and what its error must say.
BAD_OPTIONS: tuple[tuple[list[str], str], ...] = (
    (["--variants", "counts,fast"], "--variants: fast not accepted"),
    (["--small", "9", "--large", "3"], "--small/--large"),
)


def _skip_without_valgrind() -> None:
    if shutil.which("valgrind") is None:
        pytest.skip("valgrind not installed")
    if "san" in os.environ.get("LD_PRELOAD", ""):
        pytest.skip("a sanitizer runtime is preloaded: valgrind cannot run under it")


def _assert_refused(script: Path, cases: tuple[tuple[list[str], str], ...]) -> None:
    for args, needle in cases:
        proc = subprocess.run([sys.executable, str(script), *args], capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode != 0 and needle in proc.stderr, (args, proc.stderr)


def test_callgrind_ratios_refuse_bad_names_and_sizes() -> None:
    _assert_refused(CALLGRIND, ((["--workloads", "nope"], "--workloads: nope not accepted"),
                                (["--items", "spans,nope"], "--items: nope not accepted"),
                                (["--items", "all", "--jobs", "0"], "--jobs: 0 not accepted"),
                                (["--items", "all", "--small", "3"], "give both or neither"),
                                *BAD_OPTIONS))


def test_callgrind_item_sizes_take_a_twentieth_of_the_suite_count_and_three_times_it() -> None:
    callgrind_ratios, suite_items = suite_module("callgrind_ratios"), suite_module("suite_items")
    assert callgrind_ratios.item_sizes("spans") == (1000, 3000)
    for name, item in suite_items.ITEMS.items():
        small, large = callgrind_ratios.item_sizes(name)
        assert 1 <= small <= max(1, item.count // 20) and large == 3 * small, name


def test_callgrind_items_end_with_one_table_of_every_item_and_variant() -> None:
    _skip_without_valgrind()
    proc = subprocess.run([sys.executable, str(CALLGRIND), "--items", "spans",
                           "--item-variants", "counts", "--small", "1", "--large", "2",
                           "--jobs", "2"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    lines = re.findall(r"^  spans +(\w+) +main thread +[\d,-]+ an op  (-?\d+\.\d{4})x untraced",
                       proc.stdout, re.M)
    assert [name for name, _ in lines] == ["untraced", "counts"], proc.stdout
    table = [line for line in proc.stdout.splitlines() if line.startswith("|")]
    assert table[:2] == ["| item | counts |", "|---|---|"], proc.stdout
    # The table repeats the main thread's ratio printed above it.
    assert table[2:] == [f"| spans | {lines[1][1]}x |"], proc.stdout


def test_callgrind_ratios_smoke_prints_a_ratio_per_variant() -> None:
    _skip_without_valgrind()
    proc = subprocess.run([sys.executable, str(CALLGRIND), "--variants", "counts",
                           "--small", "1", "--large", "2"], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    ratios = re.findall(r"^  core +(\w+) +[\d,]+  (\d+\.\d{4})x untraced$", proc.stdout, re.M)
    assert [name for name, _ in ratios] == ["untraced", "counts"], proc.stdout
    assert float(ratios[0][1]) == 1.0 and float(ratios[1][1]) > 1.0


SERVICE_CALLGRIND = ROOT / "benchmarks" / "service_callgrind.py"


def test_service_callgrind_refuses_bad_names_and_sizes() -> None:
    _assert_refused(SERVICE_CALLGRIND, BAD_OPTIONS)


def test_service_callgrind_smoke_prints_a_row_per_variant() -> None:
    _skip_without_valgrind()
    if (why := suite_module("suite_service").missing()) is not None:
        pytest.skip(why)
    proc = subprocess.run([sys.executable, str(SERVICE_CALLGRIND), "--variants",
                           "counts-noattr,live-few,native", "--small", "1", "--large", "2"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    # Two requests minus one: the other threads' share (export batches, the
    # metrics reader's ticks) can come out below zero, the serving thread's not.
    rows = re.findall(r"^  (\S+) +([\d,]+) +(-?[\d,]+) +([\d,]+)  (\d+\.\d{4})x$",
                      proc.stdout, re.M)
    assert [r[0] for r in rows] == ["otel", "counts-noattr", "live-few", "native"], proc.stdout
    assert float(rows[0][4]) == 1.0
    # The serving thread's count against OpenTelemetry alone. Not the total:
    # in a window of one request, an export batch or a metrics tick that
    # falls inside it more than doubled the other threads' share (2.20x for
    # counts-noattr once, against about 1.05x).
    def serving(row: tuple[str, ...]) -> int:
        return int(row[1].replace(",", ""))
    assert all(0.5 < serving(row) / serving(rows[0]) < 2.0 for row in rows[1:]), proc.stdout


def _write_thread_outputs(directory: Path, threads: dict[str, str]) -> Path:
    """callgrind's per-thread files (``out-01``, ...) holding the given summary lines."""
    out = directory / "callgrind.out"
    for suffix, summary in threads.items():
        (out.parent / f"{out.name}-{suffix}").write_text(
            "version: 1\ncmd: python\npart: 1\n"
            "events: Ir I1mr D1mr D1mw ILmr DLmr DLmw\n"
            f"fn=(1) f\n0 1\nsummary: {summary}\ntotals: {summary}\n")
    return out


def test_thread_events_sum_each_event_over_threads(tmp_path: Path) -> None:
    ratios = suite_module("callgrind_ratios")
    out = _write_thread_outputs(tmp_path, {"01": "1000 10 20 30 1 2 3",
                                           "02": "500 5 6 7 0 0 1"})
    main, every = ratios.thread_events(out)
    assert main == {"Ir": 1000, "I1mr": 10, "D1mr": 20, "D1mw": 30, "ILmr": 1, "DLmr": 2,
                    "DLmw": 3}
    assert every == {"Ir": 1500, "I1mr": 15, "D1mr": 26, "D1mw": 37, "ILmr": 1, "DLmr": 2,
                     "DLmw": 4}
    assert ratios._totals(out) == (1000, 1500)
    service = suite_module("service_callgrind")
    # Ir + 10 per first-level miss + 100 per last-level one.
    assert service.cycle_estimate(main) == 1000 + 10 * 60 + 100 * 6


def test_thread_events_refuse_a_run_without_its_main_thread(tmp_path: Path) -> None:
    ratios = suite_module("callgrind_ratios")
    with pytest.raises(RuntimeError, match="no per-thread output"):
        ratios.thread_events(tmp_path / "callgrind.out")
    out = _write_thread_outputs(tmp_path, {"02": "500 5 6 7 0 0 1"})
    with pytest.raises(RuntimeError, match="no main-thread output"):
        ratios.thread_events(out)


def test_service_callgrind_cache_sim_prints_misses_and_estimates() -> None:
    _skip_without_valgrind()
    if (why := suite_module("suite_service").missing()) is not None:
        pytest.skip(why)
    proc = subprocess.run([sys.executable, str(SERVICE_CALLGRIND), "--variants", "otel",
                           "--small", "1", "--large", "2", "--cache-sim"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    rows = re.findall(r"^  otel +([\d,]+) +(-?[\d,]+) +(-?[\d,]+) +([\d,]+) +(\d+\.\d{4})x",
                      proc.stdout, re.M)
    assert len(rows) == 1, proc.stdout
    ir, _, _, estimate, ratio = rows[0]
    # The estimate adds the misses' cycles to the instructions.
    assert int(estimate.replace(",", "")) > int(ir.replace(",", "")) > 0
    assert float(ratio) == 1.0


WRK_REPORT = """Running 5s test @ http://127.0.0.1:40211/orders/4711?limit=20
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     9.12ms    1.30ms  30.21ms   91.05%
    Req/Sec   879.41     40.12   950.00     74.00%
  4398 requests in 5.00s, 2.05MB read
Requests/sec:    878.95
Transfer/sec:    419.21KB
"""


def test_wrk_report_gives_rate_and_requests_or_an_error() -> None:
    suite_service = suite_module("suite_service")
    assert suite_service.wrk_counts(WRK_REPORT) == (878.95, 4398)
    with pytest.raises(RuntimeError, match="request count"):
        suite_service.wrk_counts(WRK_REPORT.replace("4398 requests in", "4398 in"))


def test_thread_cpu_time_follows_the_thread_that_spends_it() -> None:
    suite_service = suite_module("suite_service")
    pid = os.getpid()
    before = suite_service.thread_cpu_ns(pid)
    assert threading.get_native_id() in before
    spent = time.thread_time()
    while time.thread_time() - spent < 0.05:  # 50 ms of this thread's CPU, however long it takes
        pass
    after = suite_service.thread_cpu_ns(pid)
    mine = threading.get_native_id()
    # schedstat counts in ns; a kernel without it falls back to 10 ms ticks.
    assert 0.03e9 <= after[mine] - before[mine] <= 5e9, (before[mine], after[mine])
    assert suite_service.thread_cpu_ns(2**22 + 7) == {}  # no such process


def test_cpu_note_gives_the_baselines_time_and_each_variants_ratio() -> None:
    suite_table = suite_module("suite_table")
    series = suite_table.Series("service", "what", "otel", throughput=True)
    assert suite_table.cpu_note(series) is None
    for variant, every, serving in (("otel", [1.0, 2.0, 1.2], [0.8, 1.6, 1.0]),
                                    ("counts", [1.1, 2.4, None], [0.84, 1.6, None])):
        for a, b in zip(every, serving, strict=True):
            series.add(variant, 800.0)
            series.add_extra("cpu_ms", variant, a)
            series.add_extra("serving_cpu_ms", variant, b)
    note = suite_table.cpu_note(series)
    # Rounds pair up; the third has no counts figure. Ratios 1.1 and 1.2, 1.05 and 1.0.
    assert note == ("server CPU time a request, all threads (serving thread), medians of "
                    "rounds: otel 1.200 ms (serving thread 1.000 ms), counts 1.15x (1.02x)")
    text, _, _ = suite_table.render([series], [])
    assert "- service: server CPU time a request" in text


def test_median_interval_takes_the_order_statistics_that_hold_the_median() -> None:
    suite_table = suite_module("suite_table")
    seven = [1.30, 1.02, 1.10, 1.05, 0.90, 1.20, 1.08]
    # 7 rounds: the second lowest and second highest hold it with 1 - 2 * 8/128.
    assert suite_table.median_interval(seven) == (1.02, 1.20, 0.875)
    # 3 rounds cannot reach 85 %: the lowest and highest, 75 %.
    assert suite_table.median_interval([1.3, 1.1, 1.2]) == (1.1, 1.3, 0.75)
    assert suite_table.median_interval([1.1]) is None
    low, high, cover = suite_table.median_interval([float(i) for i in range(21)])
    # Binomial(21, 1/2): P(B <= 6) = 82,160 / 2**21, so k = 7 (k = 8 gives 81 %).
    assert (low, high) == (6.0, 14.0) and cover == 1 - 2 * 82160 / 2**21


def test_unsettled_lists_the_verdicts_whose_interval_reaches_across_the_target() -> None:
    suite_table = suite_module("suite_table")
    spans = suite_table.Series("spans", "what", "untraced")
    rounds = {"untraced": [1.0] * 7,
              "counts": [1.04, 1.05, 1.06, 1.05, 1.04, 1.06, 1.20],  # tight below 1.10
              "live": [1.20, 1.35, 1.28, 1.33, 1.25, 1.31, 1.40],  # 1.25-1.35 holds 1.30
              "native": [1.50, 1.36, 1.28, 1.33, 1.30, 1.31, 1.41]}
    for variant, values in rounds.items():
        for value in values:
            spans.add(variant, value)
    service = suite_table.Series("service", "what", "otel", throughput=True)
    for otel, counts in ((900.0, 800.0), (900.0, 830.0), (900.0, 790.0)):
        service.add("otel", otel)
        service.add("counts", counts)
    assert suite_table.unsettled(spans, "counts") is None
    assert suite_table.unsettled(spans, "estimate") is None  # no target
    assert suite_table.unsettled(spans, "live") == (
        "spans live (FAIL): 1.25x-1.35x, line 1.30x, 87.5% interval")
    # native over live a round: +25 %, +0.7 %, 0 %, 0 %, +4 %, 0 %, +0.7 %.
    assert suite_table.unsettled(spans, "native") is None
    # Three rounds of 0.89x, 0.92x, 0.88x of OpenTelemetry alone: min to max.
    assert suite_table.unsettled(service, "counts") == (
        "service counts (FAIL): 0.88x-0.92x, line 0.90x, 75.0% interval")
    text, passed, failed = suite_table.render([spans, service], [])
    assert (passed, failed) == (2, 2)  # counts and native; live and the service
    verdicts, rerun = text.splitlines()[-2:]
    assert verdicts.startswith(
        "verdicts the rounds cannot settle (the median's interval from the rounds' order "
        "statistics reaches across the target): spans live (FAIL): 1.25x-1.35x")
    assert verdicts.endswith("service counts (FAIL): 0.88x-0.92x, line 0.90x, 75.0% interval")
    # Each item once, and three times the rounds but never fewer than 21.
    assert rerun == ("more rounds for them: python benchmarks/suite.py --only spans,service "
                     "--rounds 21")
    many = suite_table.Series("spans", "what", "untraced")
    for value in [1.0] * 10 + [1.2] * 10 + [1.1]:
        many.add("untraced", 1.0)
        many.add("counts", value)
    assert suite_table.render([many], [])[0].endswith("--only spans --rounds 63")
    # The run's own options come along.
    assert suite_table.render([many], [], "--interleave 10 --clock cpu")[0].endswith(
        "--only spans --rounds 63 --interleave 10 --clock cpu")
    # A median on the line passes in the cell and in the unsettled list alike.
    edge = suite_table.Series("service", "what", "otel", throughput=True)
    for counts in (800.0, 810.0, 900.0):
        edge.add("otel", 900.0)
        edge.add("counts", counts)
    assert suite_table.cell(edge, "counts")[1] is True
    assert suite_table.unsettled(edge, "counts") == (
        "service counts (pass): 0.89x-1.00x, line 0.90x, 75.0% interval")


FOOTPRINT = ROOT / "benchmarks" / "callgrind_footprint.py"

# callgrind's format with --dump-instr=yes: names given once and reused by id,
# addresses absolute, relative or "*", and a call's inclusive cost on the line
# after "calls=", which is not the caller's own.
CALLGRIND_OUT = """\
events: Ir I1mr
positions: instr line
ob=(1) /usr/lib/libpython3.11.so.1.0
fn=(1) eval
0x1000 10 40 2
+4 11 40
+60 12 3
ob=(2) /x/otel_alloc/tracker/_tracker.cpython-311-x86_64-linux-gnu.so
fn=(2) hook
0x2000 5 20
cob=(1)
cfn=(1)
calls=4 0x1000
* 6 900
+8 7 20
ob=(1)
fn=(1)
0x1080 13 5
summary: 1028 2
"""


def test_footprint_counts_lines_running_once_an_op_by_object() -> None:
    footprint = suite_module("callgrind_footprint")
    fp = footprint.parse(CALLGRIND_OUT.splitlines(True), ops=10, executable="/usr/bin/python3")
    # libpython: the line at 0x1000 (80 instructions: 0x1000 and 0x1004) is hot;
    # 0x1040 (3) and 0x1080 (5) are not. The tracker: 0x2000 and 0x2008 share
    # a line (40, the call's 900 not counted).
    assert fp.lines == {"interpreter": 1, "_tracker": 1}
    assert fp.instructions == 102.8 and fp.i1_misses == 0.2
    static = footprint.parse(CALLGRIND_OUT.replace("/usr/lib/libpython3.11.so.1.0",
                                                   "/usr/bin/python3.14").splitlines(True),
                             ops=10, executable="/usr/bin/python3.14")
    assert static.lines == {"interpreter": 1, "_tracker": 1}  # interpreter linked in


def test_callgrind_footprint_refuses_bad_names_and_counts() -> None:
    _assert_refused(FOOTPRINT, ((["--items", "core"], "--items: core not accepted"),
                                (["--variants", "counts,fast"], "--variants: fast not accepted"),
                                (["--ops", "-1"], "--ops: -1 not accepted")))


def test_footprint_runs_each_item_for_its_own_ops_unless_told() -> None:
    footprint = suite_module("callgrind_footprint")
    # A twentieth of the suite's round, as callgrind_ratios' small run.
    assert [footprint.item_ops(item, 0) for item in ("spans", "request", "chaos", "go")] == \
        [1000, 125, 1, 1]
    assert footprint.item_ops("chaos", 3) == 3


def test_callgrind_footprint_smoke_finds_the_trackers_code() -> None:
    _skip_without_valgrind()
    proc = subprocess.run([sys.executable, str(FOOTPRINT), "--items", "spans", "--variants",
                           "counts", "--ops", "3"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    rows = re.findall(r"^  spans +(\w+) +3 +([\d,]+) +[\d,.]+ +(\d+) +(\d+) +(\d+) +(\d+)"
                      r" +([+-]\d+)$", proc.stdout, re.M)
    assert [r[0] for r in rows] == ["untraced", "counts"], proc.stdout
    untraced, counts = ([int(x.replace(",", "")) for x in r[1:]] for r in rows)
    assert untraced[2:4] == [0, 0]  # no tracker or span-path code without the tracker
    assert counts[2] > 0 and counts[3] > 0, proc.stdout
    assert counts[1] > 100 and counts[0] > untraced[0], proc.stdout
