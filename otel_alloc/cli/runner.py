"""``otel-alloc run``: run a program with tracing and allocation tracking set up."""

from __future__ import annotations

import os
import runpy
import signal
import sys
import threading
import traceback
from dataclasses import dataclass
from types import FrameType
from typing import TextIO

from opentelemetry.sdk.trace import SpanProcessor, SynchronousMultiSpanProcessor

from otel_alloc import tracker
from otel_alloc import validation as config
from otel_alloc.cli.exit_table import SummarySink, memory_lines
from otel_alloc.otel.processor import AllocationSpanProcessor
from otel_alloc.otel.providers import build_providers, set_global
from otel_alloc.profiling.report_server import ReportServer, parse_address
from otel_alloc.tracker.errors import ModeConflictError, set_conflict_hint


class _Terminated(BaseException):
    """Raised in the main thread by our SIGTERM handler to unwind the program."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@dataclass
class RunOptions:
    """What to run and how.

    Attributes:
        target: Script path, or module name when ``module`` is set.
        args: Arguments for the program (``sys.argv[1:]``).
        module: Run ``target`` as ``python -m target``.
        mode: Tracker mode, or ``None`` for ``OTEL_ALLOC_MODE`` / counts.
        native: Native mode (``--native``/``--no-native``), or ``None`` for
            ``OTEL_ALLOC_NATIVE`` / on.
        table: ``True``/``False`` to force the exit table on/off; ``None``
            prints it when no exporter is configured.
        table_stream: Where the table goes (default stderr).
        profile_path: Write the sampled profile here at exit (default
            ``OTEL_ALLOC_PROFILE_FILE``).
        serve: ``[host:]port`` of the report endpoint (default
            ``OTEL_ALLOC_REPORT_ADDRESS``; off when unset).
        shutdown_timeout: Seconds the exit (or SIGTERM) may wait for
            telemetry to leave (default ``OTEL_ALLOC_SHUTDOWN_TIMEOUT``, else 5).
        estimate_bytes: Estimate mode's mean bytes between sampled blocks
            (``--estimate-bytes``; default ``OTEL_ALLOC_ESTIMATE_BYTES``, else
            4 KiB). Given in another mode, it is an error.
    """

    target: str
    args: list[str]
    module: bool = False
    mode: str | None = None
    native: bool | None = None
    table: bool | None = None
    table_stream: TextIO | None = None
    profile_path: str | None = None
    serve: str | None = None
    shutdown_timeout: float | None = None
    estimate_bytes: str | None = None


DEFAULT_SHUTDOWN_TIMEOUT = 5.0


def _estimate_bytes(opts: RunOptions) -> int | None:
    """``--estimate-bytes``, validated and named as the flag; None when not given."""
    if opts.estimate_bytes is None:
        return None
    mode = tracker.resolve_mode(opts.mode, setting="--mode")
    if mode != "estimate":
        raise config.ConfigError(
            "--estimate-bytes", opts.estimate_bytes,
            f"--mode estimate with it (it sets estimate mode's sampling; the mode is {mode!r})")
    return tracker.check_estimate_bytes(opts.estimate_bytes, setting="--estimate-bytes")


def run(opts: RunOptions) -> int:
    """Run the program; returns its exit code (or re-raises its fatal signal)."""
    budget = config.number("shutdown_timeout", opts.shutdown_timeout,
                           "OTEL_ALLOC_SHUTDOWN_TIMEOUT", DEFAULT_SHUTDOWN_TIMEOUT, 0.0, 300.0)
    estimate_bytes = _estimate_bytes(opts)
    profile_path = opts.profile_path or config.env_value("OTEL_ALLOC_PROFILE_FILE")
    if profile_path:
        _check_writable("--profile" if opts.profile_path else "OTEL_ALLOC_PROFILE_FILE",
                        profile_path)
    providers = build_providers()
    summary = SummarySink()
    inner: SpanProcessor | None = None
    if len(providers.span_exporters) == 1:
        inner = providers.span_exporters[0]
    elif providers.span_exporters:
        multi = SynchronousMultiSpanProcessor()  # type: ignore[no-untyped-call]
        for sp in providers.span_exporters:
            multi.add_span_processor(sp)
        inner = multi
    # A program that builds its own processor (or installs the tracker) in
    # another mode finds it installed by us: tell it how to ask for its mode.
    set_conflict_hint("the program runs under `otel-alloc run`, which installed it in mode "
                      "{installed!r}: pass `otel-alloc run --mode {wanted}` (or set "
                      "OTEL_ALLOC_MODE={wanted})")
    processor = AllocationSpanProcessor(
        inner, mode=opts.mode, native=opts.native, estimate_bytes=estimate_bytes,
        meter_provider=providers.meter_provider,
        logger_provider=providers.logger_provider, sinks=[summary])
    providers.tracer_provider.add_span_processor(processor)
    set_global(providers)
    address = opts.serve or config.env_value("OTEL_ALLOC_REPORT_ADDRESS")
    server = None
    if address:
        setting = "--serve" if opts.serve else "OTEL_ALLOC_REPORT_ADDRESS"
        host, port = parse_address(address, setting)
        try:
            server = ReportServer(lambda: processor.profile, host, port)
        except OSError as err:
            raise config.ConfigError(setting, address,
                                     f"a free port on that host ({err.strerror})") from None
        print(f"otel-alloc: reports at {server.url}/report", file=sys.stderr, flush=True)

    runner_pid = os.getpid()
    code, signum = _run_program(opts)
    if profile_path and os.getpid() != runner_pid:
        # A bare os.fork() child came back here: its profile is its own, and
        # the parent's file is the parent's.
        root, ext = os.path.splitext(profile_path)
        profile_path = f"{root}.{os.getpid()}{ext}"

    delivered = True
    try:
        if processor.profile is not None and profile_path:
            processor.force_flush()
            processor.profile.dump(profile_path)
        delivered = providers.shutdown(budget)
    finally:
        if server is not None:
            server.close()
        show = opts.table if opts.table is not None else not providers.exporting
        if show:
            stream = opts.table_stream or sys.stderr
            # The pid tells apart the tables of a parent and a forked child
            # that returned into the runner.
            print(f"\notel-alloc: allocations per span ({tracker.installed_mode()} mode, "
                  f"pid {os.getpid()})", file=stream)
            print(summary.render(), file=stream)
            if tracker.installed_mode() is not None:
                lines = memory_lines(tracker.process_stats(), tracker.native_enabled())
                print("\n" + "\n".join(lines), file=stream)
            stream.flush()
    if signum is not None:
        # Pass the signal through: die of it, as the program would have.
        sys.stdout.flush()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    if not delivered:
        # The SDK's exit hooks would shut the providers down again and wait
        # on the same exporters: leave without them.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _run_program(opts: RunOptions) -> tuple[int, int | None]:
    runner_pid = os.getpid()

    def on_term(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != runner_pid:
            # A forked child that still has our handler (forked before the
            # at-fork reset below ran, or by C code): die of the signal, as
            # it would without the runner. Raising here once unwound a pool
            # worker inside the SDK's own after-fork hook, and the worker
            # lived on while its parent waited for it.
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise _Terminated(signum)

    previous = signal.signal(signal.SIGTERM, on_term)
    _reset_in_children(on_term, previous)
    saved_argv, saved_path0 = sys.argv[:], sys.path[0] if sys.path else ""
    try:
        if opts.module:
            sys.argv = [opts.target, *opts.args]
            sys.path.insert(0, os.getcwd())
            runpy.run_module(opts.target, run_name="__main__", alter_sys=True)
        else:
            sys.argv = [opts.target, *opts.args]
            sys.path.insert(0, os.path.dirname(os.path.abspath(opts.target)))
            runpy.run_path(opts.target, run_name="__main__")
        return 0, None
    except SystemExit as exc:
        return _exit_code(exc.code), None
    except KeyboardInterrupt:
        return 130, signal.SIGINT
    except _Terminated as exc:
        return 128 + exc.signum, exc.signum
    except ModeConflictError as err:
        # A setting conflict, not a bug in the program: said as the runner's
        # own setting errors are, with the --mode that resolves it.
        print(f"otel-alloc: {err}", file=sys.stderr)
        return 2, None
    except BaseException:
        traceback.print_exc()
        return 1, None
    finally:
        sys.argv = saved_argv
        if sys.path and sys.path[0] != saved_path0:
            sys.path.pop(0)
        signal.signal(signal.SIGTERM, previous)


def _check_writable(setting: str, path: str) -> None:
    """The profile file can be written: its folder exists and takes files."""
    folder = os.path.dirname(os.path.abspath(path)) or "."
    accepted = "a file path in an existing, writable folder"
    if os.path.isdir(path):
        raise config.ConfigError(setting, path, accepted + " (this is a folder)")
    if not os.path.isdir(folder):
        raise config.ConfigError(setting, path, accepted + f" ({folder} does not exist)")
    if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise config.ConfigError(setting, path, accepted + " (not writable)")


def _reset_in_children(ours: object, previous: object) -> None:
    """Give forked children the SIGTERM handling the program had.

    Multiprocessing workers and bare ``os.fork()`` children are not the
    runner: its handler is for the runner's own process only. The child
    inherits the handler at the fork and CPython drops a SIGTERM that comes
    before the after-fork hook below replaces it (it clears signals caught
    before its own after-fork step, and ignores those caught for a Python
    handler that is gone by the time they would run). A pool worker still
    starting when ``Pool.terminate()`` signalled it lived on, and its parent
    waited for it forever. So the forking thread blocks SIGTERM across the
    fork: in the child, one that came meanwhile stays pending until the
    program's handling is back, and then acts.
    """
    saved = threading.local()  # forks may start in several threads at once

    def before() -> None:
        saved.blocked = False
        if signal.getsignal(signal.SIGTERM) is ours:
            mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
            saved.blocked = signal.SIGTERM not in mask  # else the program blocked it

    def unblock() -> None:
        if getattr(saved, "blocked", False):
            saved.blocked = False
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})

    def in_child() -> None:
        if signal.getsignal(signal.SIGTERM) is ours:
            signal.signal(signal.SIGTERM, previous)  # type: ignore[arg-type]
        unblock()

    os.register_at_fork(before=before, after_in_parent=unblock, after_in_child=in_child)


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1
