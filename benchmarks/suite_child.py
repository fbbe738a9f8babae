"""One measurement of the suite, in a fresh interpreter: one item under one variant.

Run by ``suite.py`` as ``python suite.py --child ITEM VARIANT --scale S``;
prints one JSON line, ``{"seconds": ..., "cpu_seconds": ...}`` (wall clock and
the process's CPU time, all threads) or ``{"na": "why"}`` when the
variant cannot run here (a tool not installed, ``native=`` not accepted).

With ``--serve`` instead of ``--child`` (``suite.py --interleave``) the
child sets its variant up, warms up, prints ``{"ready": true}`` (or the
``na`` line and exits), then reads burst sizes from stdin, one a line, and
answers each with one timed burst's JSON line, until stdin closes. The
suite keeps one such child per variant and hands them bursts in turn, so
every variant is timed across the same stretch of the host's time.

Span items run every op in an OpenTelemetry SDK span (TracerProvider with a
no-op exporter, and an SDK MeterProvider) in every variant, the untraced one
included, so the ratio is the cost of allocation tracking alone. The tracked
variants add ``AllocationSpanProcessor`` with metrics on and every span in
the size histogram (``span_size_sample_rate=1``); the timed window ends with
``force_flush``, so what the watch thread still has to do is counted.
"""

from __future__ import annotations

import contextlib
import gc
import json
import operator
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any, TypeVar

from bench_util import NullExporter, alternated
from suite_items import ITEMS

VARIANTS = ("untraced", "counts", "live", "native", "estimate", "tracemalloc", "memray")
# mode, native: counts, live and estimate ask for native=False (native mode may be on by
# default).
TRACKED = {"counts": ("counts", False), "live": ("live", False), "native": ("live", True),
           "estimate": ("estimate", False)}
T = TypeVar("T")


class NotApplicable(Exception):
    """The variant cannot run in this environment; the message says why."""


def native_refused(error: Exception) -> bool:
    """Whether ``error`` is this build refusing the ``native`` keyword."""
    return "native" in str(error) and isinstance(error, (TypeError, ValueError))


def check_native(native: bool) -> None:
    """Fail if the tracker's native mode is not what the variant asked for."""
    from otel_alloc import tracker

    enabled = getattr(tracker, "native_enabled", lambda: False)()
    if enabled != native:
        raise RuntimeError(f"native mode is {'on' if enabled else 'off'}, asked {native}")


def with_native(build: Callable[[dict[str, Any]], T], native: bool) -> T:
    """``build(keywords)`` with ``native=`` set; a build without that keyword has it off.

    Raises:
        NotApplicable: ``native`` is asked for and this build does not take it.
    """
    try:
        return build({"native": native})
    except (TypeError, ValueError) as exc:
        if not native_refused(exc):
            raise
        if native:
            raise NotApplicable("no native= in this build") from exc
        return build({})


class Tracing:
    """One variant's setup in this interpreter: spans, tracker, other tracers."""

    def __init__(self, variant: str, spans: bool,
                 settings: dict[str, object] | None = None) -> None:
        self.variant = variant
        # The processor's keywords: metrics on, every span in the size
        # histogram, and what ``settings`` adds or changes (bench_span_parts.py).
        self._settings: dict[str, object] = {"metrics": True, "span_size_sample_rate": 1.0,
                                             **(settings or {})}
        self._stack = contextlib.ExitStack()
        self._provider: Any = None
        self._tmp: str | None = None
        self._installed = False  # the tracker, installed here: uninstalled by close()
        # Only a setup with spans can put the tracker's stand-in in (its
        # processor does); a group item imports no OpenTelemetry for it.
        self._runtime_context = _runtime_context() if spans else None
        try:
            # The other tracers start where the tracker is installed, after the
            # SDK's imports and set-up, so none of them holds the SDK's modules'
            # blocks (4.9 MB of traces, for tracemalloc started before) where
            # the tracker's table holds none. Timed, it made no difference
            # seen (tracemalloc on ``request``, fresh interpreters: 6.1x-6.2x
            # either way).
            if spans:
                self._setup_sdk()
            elif variant in TRACKED:
                self._setup_group()
            if variant == "memray":
                self._start_memray()
            elif variant == "tracemalloc":
                import tracemalloc

                tracemalloc.start(1)
        except BaseException:
            self.close()  # a half-done setup leaves nothing on either
            raise

    def _start_memray(self) -> None:
        try:
            import memray
        except ImportError as exc:
            raise NotApplicable("memray not installed") from exc
        fd, self._tmp = tempfile.mkstemp(suffix=".memray")
        os.close(fd)
        os.unlink(self._tmp)
        self._stack.enter_context(memray.Tracker(self._tmp))

    def _setup_group(self) -> None:
        import otel_alloc

        mode, native = TRACKED[self.variant]
        with_native(lambda kw: otel_alloc.install(mode, **kw), native)
        self._installed = True
        check_native(native)
        self._stack.enter_context(otel_alloc.Group())

    def _setup_sdk(self) -> None:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor

        meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
        export = SimpleSpanProcessor(NullExporter())  # type: ignore[arg-type]
        provider = TracerProvider()
        if self.variant in TRACKED:
            from otel_alloc import AllocationSpanProcessor

            mode, native = TRACKED[self.variant]
            processor = with_native(lambda kw: AllocationSpanProcessor(
                export, mode=mode, meter_provider=meter_provider, **self._settings, **kw),
                native)
            self._installed = True
            check_native(native)
            provider.add_span_processor(processor)
        else:
            provider.add_span_processor(export)
        self._provider = provider
        self._tracer = provider.get_tracer("otel_alloc.benchmarks")

    def span(self, name: str) -> AbstractContextManager[object]:
        """A span (or nothing, for group items) around one op."""
        if self._provider is None:
            return contextlib.nullcontext()
        return self._tracer.start_as_current_span(name)

    def flush(self) -> None:
        """Wait for the span pipeline (and the processor's watch thread)."""
        if self._provider is not None:
            self._provider.force_flush()

    def close(self) -> None:
        """Undo the setup: the process runs as it did before (see ``switched_round``).

        Stops the tracers, removes memray's file, uninstalls the tracker if
        this setup installed it and puts back the runtime context it found.
        """
        if self._provider is not None:
            self._provider.shutdown()
        self._stack.close()
        if self._tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._tmp)
        if self.variant == "tracemalloc":
            import tracemalloc

            tracemalloc.stop()
        if self._installed:
            import otel_alloc

            otel_alloc.uninstall()
            self._installed = False
        if self._runtime_context is not None:
            _set_runtime_context(self._runtime_context)


def _runtime_context() -> object:
    from opentelemetry import context

    return context._RUNTIME_CONTEXT  # see _set_runtime_context


def _set_runtime_context(runtime_context: object) -> None:
    """Put back OpenTelemetry's runtime context as a setup found it.

    The tracker's stand-in for it (``otel_alloc.otel.context_follower``) stays
    for the life of the process once a processor puts it in, as it must while
    any processor may run; it has no way out. A same-interpreter round has to
    run its baseline's bursts exactly as a process without the tracker would,
    so this puts back the object the setup found, through OpenTelemetry's
    module attribute (the only benchmark code that touches it).
    """
    from opentelemetry import context

    context._RUNTIME_CONTEXT = runtime_context  # type: ignore[assignment]


def _loop(op: Callable[[Any], object], count: int, name: str,
          tracing: Tracing) -> None:
    span = tracing.span
    for _ in range(count):
        with span(name):
            op(span)


@contextlib.contextmanager
def _tracing(variant: str, spans: bool) -> Iterator[Tracing]:
    tracing = Tracing(variant, spans)
    try:
        yield tracing
    finally:
        tracing.close()


def _direct_call(func: Callable[..., object], *args: object) -> object:
    return func(*args)


_call: Callable[..., object] = getattr(operator, "call", _direct_call)  # 3.11+


def _timed(op: Callable[[Any], object], count: int, name: str,
           tracing: Tracing) -> dict[str, object]:
    """``count`` ops and the flush after them, timed: the JSON-ready result."""
    start, cpu = time.perf_counter(), time.process_time()
    # Through a C function of its own, so callgrind can count the timed loop
    # alone (callgrind_ratios.py --loop-only).
    _call(_loop, op, count, name, tracing)
    tracing.flush()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"seconds": seconds, "cpu_seconds": cpu, "ops": count}


def _warm(item_name: str, op: Callable[[Any], object], count: int, tracing: Tracing) -> None:
    _loop(op, max(1, count // 10), item_name, tracing)
    tracing.flush()


def burst(op: Callable[[Any], object], count: int, name: str,
          tracing: Tracing) -> dict[str, object]:
    """One burst of ``count`` ops on a variant just set up: warmed, then timed.

    The warm-up, a tenth of the burst, is left out for a burst of one op
    (``go``, ``raytrace``, ``chaos`` in a same-interpreter round), long
    enough alone. Used where each burst has a setup of its own
    (``switched_round``, ``bench_span_parts.py``).
    """
    if count > 1:
        _warm(name, op, count, tracing)
    return _timed(op, count, name, tracing)


def measure(item_name: str, variant: str, scale: float) -> dict[str, object]:
    """Time ``item_name`` under ``variant``; the JSON-ready result."""
    item = ITEMS[item_name]
    op = item.build()
    count = item.ops(scale)
    try:
        with _tracing(variant, item.spans) as tracing:
            _warm(item.name, op, count, tracing)
            return _timed(op, count, item.name, tracing)
    except NotApplicable as exc:
        return {"na": str(exc)}


def serve(item_name: str, variant: str, scale: float, lines: Iterator[str]) -> Iterator[str]:
    """The ``--serve`` child: ready (or ``na``), then one timed burst per line of ``lines``.

    Yields the JSON lines to print. A line that is not a count of 1 or more
    ops ends the child with an error: the suite never sends one.
    """
    item = ITEMS[item_name]
    op = item.build()
    try:
        with _tracing(variant, item.spans) as tracing:
            _warm(item.name, op, item.ops(scale), tracing)
            yield json.dumps({"ready": True})
            for line in lines:
                count = int(line)
                if count < 1:
                    raise ValueError(f"burst of {count} ops")
                yield json.dumps(_timed(op, count, item.name, tracing))
    except NotApplicable as exc:
        yield json.dumps({"na": str(exc)})


def switched_round(item_name: str, variants: list[str], scale: float,
                   bursts: int) -> dict[str, dict[str, object]]:
    """One round of ``item_name`` with every variant in this interpreter.

    ``suite.py --interleave B --same-interpreter`` runs one such round per
    fresh interpreter. The item's ops are cut into ``bursts`` bursts per
    variant (as many as there are ops, for items of fewer), handed to the
    variants in turn, in alternating order from burst to burst. Around each
    burst, outside its timing, the variant is set up (``Tracing``) and
    warmed with a tenth of the burst, and after the burst and its flush it
    is undone (``Tracing.close``: tracker uninstalled, tracers stopped,
    OpenTelemetry's runtime context put back) and the garbage collected, so
    the next burst, the baseline's too, runs as in a process that never had
    it. Every variant then shares the interpreter's heap, code layout and
    stretch of the host's time, which fresh interpreters per variant do
    not. Returns each variant's summed seconds, CPU seconds and ops, or its
    ``na`` or ``error``, after which it takes no more bursts.
    """
    item = ITEMS[item_name]
    op = item.build()
    total = item.ops(scale)
    count = min(bursts, total)
    size = total // count
    sums = {v: {"seconds": 0.0, "cpu_seconds": 0.0, "ops": 0} for v in variants}
    ended: dict[str, dict[str, object]] = {}
    for number in range(count):
        for variant in alternated(variants, number):
            if variant in ended:
                continue
            try:
                with _tracing(variant, item.spans) as tracing:
                    result = burst(op, size, item.name, tracing)
            except NotApplicable as exc:
                ended[variant] = {"na": str(exc)}
                continue
            except Exception as exc:
                ended[variant] = {"error": f"{type(exc).__name__}: {exc}"}
                continue
            finally:
                gc.collect()
            for key, value in result.items():
                sums[variant][key] += value  # type: ignore[operator]
    return {v: ended.get(v) or dict(sums[v]) for v in variants}


def main(item_name: str, variant: str, scale: float) -> None:
    """Entry point of a child interpreter: print one JSON line."""
    print(json.dumps(measure(item_name, variant, scale)), flush=True)


def main_serve(item_name: str, variant: str, scale: float) -> None:
    """Entry point of a ``--serve`` child: bursts from stdin, results to stdout."""
    for answer in serve(item_name, variant, scale, sys.stdin):
        print(answer, flush=True)


def main_switched(item_name: str, variants: list[str], scale: float, bursts: int) -> None:
    """Entry point of a same-interpreter round: print one JSON object, variant -> result."""
    print(json.dumps(switched_round(item_name, variants, scale, bursts)), flush=True)
