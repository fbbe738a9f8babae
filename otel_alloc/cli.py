"""The ``otel-alloc`` command line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from otel_alloc import config, tracker

USAGE_RUN = ("otel-alloc run [--mode counts|live] [--table|--no-table] "
             "(-m module | script.py) [args]")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="otel-alloc",
        description="Per-span allocation tracking for Python programs traced with OpenTelemetry.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    run = sub.add_parser(
        "run", usage=USAGE_RUN,
        help="run a program with tracing and allocation tracking set up",
        description="Run a Python program with an OpenTelemetry SDK and allocation tracking set "
                    "up from the OTEL_* variables. With no exporter configured, print a table "
                    "of allocations per span name at exit.")
    run.add_argument("--mode", choices=tracker.MODES, default=None,
                     help="tracker mode (default: OTEL_ALLOC_MODE, else counts)")
    table = run.add_mutually_exclusive_group()
    table.add_argument("--table", dest="table", action="store_true", default=None,
                       help="print the table at exit even when exporting")
    table.add_argument("--no-table", dest="table", action="store_false",
                       help="never print the table")
    run.add_argument("-m", dest="module", metavar="module",
                     help="run a library module as a script (like python -m)")
    run.add_argument("args", nargs=argparse.REMAINDER,
                     help="script path and its arguments (or the module's arguments)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``otel-alloc``; returns the exit code."""
    parser = _parser()
    ns = parser.parse_args(argv)
    if ns.command == "run":
        return _run(parser, ns)
    parser.error(f"unknown command {ns.command!r}")
    return 2


def _run(parser: argparse.ArgumentParser, ns: argparse.Namespace) -> int:
    from otel_alloc.runner import RunOptions, run

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
                              table=ns.table))
    except config.ConfigError as err:
        print(f"otel-alloc: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
