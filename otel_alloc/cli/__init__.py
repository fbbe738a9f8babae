"""The ``otel-alloc`` command line: ``run``, ``report``, and the exit table.

Owns argument parsing (here), running a program with tracing and tracking set
up (``runner``), and the per-span table printed at exit (``exit_table``).

May import every other part of otel_alloc; nothing imports it (but the
``otel-alloc`` entry point and ``python -m otel_alloc``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from otel_alloc import tracker
from otel_alloc import validation as config
from otel_alloc.profiling import text_reports as reports
from otel_alloc.profiling.render import KINDS

USAGE_RUN = ("otel-alloc run [--mode counts|live|estimate] [--estimate-bytes SIZE] [--[no-]native] "
             "[--table|--no-table] "
             "(-m module | script.py) [args]")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="otel-alloc",
        description="Per-span allocation tracking for Python programs traced with OpenTelemetry.")
    from importlib.metadata import version

    parser.add_argument("--version", action="version",
                        version=f"otel-alloc {version('otel-alloc')}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    run = sub.add_parser(
        "run", usage=USAGE_RUN,
        help="run a program with tracing and allocation tracking set up",
        description="Run a Python program with an OpenTelemetry SDK and allocation tracking set "
                    "up from the OTEL_* variables. With no exporter configured, print a table "
                    "of allocations per span name at exit.")
    run.add_argument("--mode", choices=tracker.MODES, default=None,
                     help="tracker mode (default: OTEL_ALLOC_MODE, else counts)")
    run.add_argument("--estimate-bytes", metavar="SIZE", default=None,
                     help="estimate mode: mean bytes allocated between sampled blocks, 64B "
                          "to 64MiB; smaller is closer and costs more (default: "
                          "OTEL_ALLOC_ESTIMATE_BYTES, else 4KiB)")
    run.add_argument("--native", action=argparse.BooleanOptionalAction, default=None,
                     help="charge what extension modules and their libraries allocate with "
                          "malloc too (default: OTEL_ALLOC_NATIVE, else on)")
    table = run.add_mutually_exclusive_group()
    table.add_argument("--table", dest="table", action="store_true", default=None,
                       help="print the table at exit even when exporting")
    table.add_argument("--no-table", dest="table", action="store_false",
                       help="never print the table")
    run.add_argument("--profile", metavar="PATH",
                     help="write the sampled allocation profile (JSON) here at exit, "
                          "for 'otel-alloc report' (default: OTEL_ALLOC_PROFILE_FILE)")
    run.add_argument("--serve", metavar="[HOST:]PORT",
                     help="serve reports over HTTP while running (127.0.0.1 unless a host "
                          "is given; default: OTEL_ALLOC_REPORT_ADDRESS)")
    run.add_argument("--shutdown-timeout", metavar="SECONDS", type=float, default=None,
                     help="longest wait for telemetry to leave at exit or SIGTERM; what "
                          "is not sent by then is dropped and counted (default "
                          "OTEL_ALLOC_SHUTDOWN_TIMEOUT, else 5)")
    run.add_argument("-m", dest="module", metavar="module",
                     help="run a library module as a script (like python -m)")
    run.add_argument("args", nargs=argparse.REMAINDER,
                     help="script path and its arguments (or the module's arguments)")
    rep = sub.add_parser(
        "report", help="allocation sites, live dumps, churn and flame graphs (estimates)",
        description="Reports from a sampled allocation profile, read from a file written by "
                    "'otel-alloc run --profile' or from a running program's endpoint "
                    "('otel-alloc run --serve'). All figures are estimates from samples.")
    src = rep.add_mutually_exclusive_group(required=True)
    src.add_argument("--file", metavar="PATH", help="profile JSON written at exit")
    src.add_argument("--url", metavar="URL", help="endpoint of a running program: "
                                                  "http://127.0.0.1:9999, or [host:]port "
                                                  "as --serve takes it")
    rep.add_argument("--kind", choices=KINDS, default="top")
    rep.add_argument("--span", help="only this span name (every kind)")
    rep.add_argument("--thread", help="only this thread, by name or 'name (id)' as --kind "
                                      "threads shows it; exact, case-sensitive (every kind)")
    rep.add_argument("--key", choices=reports.KEYS, default=None,
                     help="grouping of live and churn reports (default site)")
    rep.add_argument("--value", default=None,
                     choices=("bytes", "count", "live_bytes", "live_count"),
                     help="what live, collapsed and flamegraph sum (default bytes; the "
                          "stack kinds also take live_bytes/live_count)")
    rep.add_argument("-n", type=int, default=None,
                     help="rows of top, live, threads and churn (default 20)")
    rep.add_argument("-o", "--output", metavar="PATH", help="write here instead of stdout")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``otel-alloc``; returns the exit code."""
    parser = _parser()
    ns = parser.parse_args(argv)
    if ns.command == "run":
        return _run(parser, ns)
    if ns.command == "report":
        return _report(ns)
    parser.error(f"unknown command {ns.command!r}")
    return 2


def _run(parser: argparse.ArgumentParser, ns: argparse.Namespace) -> int:
    from otel_alloc.cli.runner import RunOptions, run

    args = list(ns.args)
    if args and args[0] == "--":
        args = args[1:]
    if ns.module:
        target, module = ns.module, True
    elif args:
        target, args, module = args[0], args[1:], False
        if not os.path.isfile(target):
            parser.error(f"script {target!r} not found (to run a module use: -m {target})")
    else:
        parser.error("nothing to run: give a script path or -m module\nusage: " + USAGE_RUN)
    try:
        return run(RunOptions(target=target, args=args, module=module, mode=ns.mode,
                              native=ns.native, table=ns.table, profile_path=ns.profile,
                              serve=ns.serve, shutdown_timeout=ns.shutdown_timeout,
                              estimate_bytes=ns.estimate_bytes))
    except config.ConfigError as err:
        print(f"otel-alloc: {err}", file=sys.stderr)
        return 2


def _report(ns: argparse.Namespace) -> int:
    from otel_alloc.cli.report import report

    return report(ns)


if __name__ == "__main__":
    sys.exit(main())
