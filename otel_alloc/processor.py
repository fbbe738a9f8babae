"""AllocationSpanProcessor: an allocation group per span, reported at span end."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from otel_alloc import _core, attribution, config, tracker
from otel_alloc.spans import SpanAllocation, with_attributes

_log = logging.getLogger(__name__)

DEFAULT_STALE_SPAN_SECONDS = 600.0


class SpanSink(Protocol):
    """Receives each ended span's allocation record (metrics, events, reports)."""

    def on_span(self, record: SpanAllocation) -> None:
        """Handle one record; must not block or raise."""

    def shutdown(self) -> None:
        """Release resources; safe to call twice."""


@dataclass
class _OpenSpan:
    gid: int
    name: str
    started: float
    child_bytes: int = 0


class AllocationSpanProcessor(SpanProcessor):
    """Charges allocations to the span current in the running context.

    Wrap the app's export processor so exported spans carry the ``alloc.*``
    attributes::

        provider.add_span_processor(AllocationSpanProcessor(BatchSpanProcessor(exporter)))

    The processor installs the native tracker if it is not installed yet. It
    never raises out of ``on_start``/``on_end`` and never blocks on I/O.

    Args:
        span_processor: The processor (usually a ``BatchSpanProcessor``) that
            receives every span, ended spans with ``alloc.*`` attributes added.
            ``None``: no span attributes, only the sinks.
        mode: Tracker mode when this processor installs it (``"counts"`` or
            ``"live"``); default ``OTEL_ALLOC_MODE``, else ``"counts"``.
        max_groups: Spans open at once with their own group; default
            ``OTEL_ALLOC_MAX_GROUPS``, else 8192.
        stale_span_seconds: When the group table is full, groups of spans open
            longer than this (never ended, say) are reclaimed and counted;
            default ``OTEL_ALLOC_STALE_SPAN_SECONDS``, else 600.
        sinks: Receivers of each ended span's record.

    """

    def __init__(
        self,
        span_processor: SpanProcessor | None = None,
        *,
        mode: str | None = None,
        max_groups: int | None = None,
        stale_span_seconds: float | None = None,
        sinks: list[SpanSink] | None = None,
    ) -> None:
        self._next = span_processor
        self._stale_after = config.number("stale_span_seconds", stale_span_seconds,
                                          "OTEL_ALLOC_STALE_SPAN_SECONDS",
                                          DEFAULT_STALE_SPAN_SECONDS)
        installed = tracker.installed_mode()
        if installed is None:
            installed = tracker.install(mode, max_groups=max_groups)
        elif mode is not None:
            wanted = config.choice("mode", mode, "OTEL_ALLOC_MODE", "counts", tracker.MODES)
            if wanted != installed:
                raise tracker.TrackerError(
                    f"otel_alloc is installed in mode {installed!r}, not {wanted!r}")
        self.mode = installed
        self._live = installed == "live"
        self._sinks: list[SpanSink] = list(sinks or [])
        self._open: dict[int, _OpenSpan] = {}
        self._lock = threading.Lock()
        self._shutdown = False
        self.spans_reclaimed = 0
        self.errors = 0
        attribution.install_context_hook()
        os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        # A lock held by another thread at fork time would stay held forever.
        self._lock = threading.Lock()

    def add_sink(self, sink: SpanSink) -> None:
        """Add a receiver of span records."""
        self._sinks.append(sink)

    # -- SpanProcessor ---------------------------------------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Open the span's allocation group, then pass the span on."""
        try:
            if not self._shutdown:
                self._open_group(span)
        except Exception:
            self._failed("on_start")
        if self._next is not None:
            try:
                self._next.on_start(span, parent_context=parent_context)
            except Exception:
                self._failed("wrapped on_start")

    def on_end(self, span: ReadableSpan) -> None:
        """Close the span's group, record it, pass on a copy with attributes."""
        out = span
        try:
            record = self._close_group(span)
            if record is not None:
                if self._next is not None:
                    out = with_attributes(span, record.attributes())
                for sink in self._sinks:
                    sink.on_span(record)
        except Exception:
            self._failed("on_end")
        if self._next is not None:
            try:
                self._next.on_end(out)
            except Exception:
                self._failed("wrapped on_end")

    def shutdown(self) -> None:
        """Shut down the sinks and the wrapped processor; safe to call twice."""
        if self._shutdown:
            return
        self._shutdown = True
        for sink in self._sinks:
            try:
                sink.shutdown()
            except Exception:
                self._failed("sink shutdown")
        if self._next is not None:
            self._next.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Flush the wrapped processor."""
        if self._next is not None:
            return self._next.force_flush(timeout_millis)
        return True

    # -- groups ----------------------------------------------------------

    def _open_group(self, span: Span) -> None:
        ctx = span.get_span_context()
        gid = _core.group_new()
        if gid == _core.GROUP_OVERFLOW and self._reclaim_stale():
            gid = _core.group_new()
        if gid == _core.GROUP_OVERFLOW:
            # Charged to the shared overflow group; the drop is counted natively.
            attribution.register_span(ctx.span_id, gid)
            return
        self._open[ctx.span_id] = _OpenSpan(gid=gid, name=span.name, started=time.monotonic())
        attribution.register_span(ctx.span_id, gid)

    def _reclaim_stale(self) -> bool:
        """Release the groups of spans open longer than the stale age."""
        cutoff = time.monotonic() - self._stale_after
        stale: list[tuple[int, _OpenSpan]] = []
        with self._lock:
            for span_id, state in self._open.items():
                if state.started > cutoff:
                    break  # insertion order: the rest are younger
                stale.append((span_id, state))
            for span_id, _ in stale:
                del self._open[span_id]
        for span_id, state in stale:
            attribution.unregister_span(span_id)
            _core.group_close(state.gid)
            _core.group_release(state.gid)
        self.spans_reclaimed += len(stale)
        return bool(stale)

    def _close_group(self, span: ReadableSpan) -> SpanAllocation | None:
        ctx = span.context
        if ctx is None:
            return None
        attribution.unregister_span(ctx.span_id)
        with self._lock:
            state = self._open.pop(ctx.span_id, None)
        if state is None:
            return None  # overflowed, reclaimed, or started before this processor
        _core.group_close(state.gid)
        stats = _core.group_stats(state.gid)
        _core.group_release(state.gid)
        if stats is None:
            return None
        with self._lock:
            inclusive = stats.alloc_bytes + state.child_bytes
            parent = self._open.get(span.parent.span_id) if span.parent is not None else None
            if parent is not None:
                parent.child_bytes += inclusive
        return SpanAllocation(
            name=span.name,
            trace_id=ctx.trace_id,
            span_id=ctx.span_id,
            group_id=state.gid,
            bytes=stats.alloc_bytes,
            count=stats.alloc_count,
            inclusive_bytes=inclusive,
            live_bytes=stats.live_bytes if self._live else None,
            peak_bytes=stats.peak_bytes if self._live else None,
            start_time_ns=span.start_time or 0,
            end_time_ns=span.end_time or 0,
        )

    # -- health ----------------------------------------------------------

    @property
    def open_spans(self) -> int:
        """Spans with an open group."""
        return len(self._open)

    def _failed(self, where: str, _log_first: Callable[..., None] = _log.warning) -> None:
        self.errors += 1
        if self.errors <= 10:  # then stay quiet: this runs on every span
            _log_first("otel_alloc: %s failed", where, exc_info=True)
