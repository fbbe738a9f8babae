"""AllocationSpanProcessor: an allocation group per span, reported at span end."""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Protocol

from opentelemetry._logs import LoggerProvider
from opentelemetry.context import Context
from opentelemetry.metrics import MeterProvider
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from otel_alloc import _core, attribution, config, names, sampling, tracker
from otel_alloc.events import AllocationEvents
from otel_alloc.metrics import AllocationMetrics, SpanNames, span_context
from otel_alloc.profile import Profile
from otel_alloc.sampling import SampleCollector
from otel_alloc.settings import Settings
from otel_alloc.spans import SpanAllocation, with_attributes
from otel_alloc.watch import SpanWatch

_log = logging.getLogger(__name__)
# Ended spans waiting for the watch thread to record them; past this they are
# dropped and counted (records_dropped) rather than let memory grow.
MAX_PENDING = 100_000
_OVERFLOW = _core.GROUP_OVERFLOW
_UNTRACKED = -1  # a span that gets no group at all (see _overflowed)
_span_group_new = _core.span_group_new
_span_end = _core.span_end


class SpanSink(Protocol):
    """Receives each ended span's allocation record (metrics, reports)."""

    def on_span(self, record: SpanAllocation) -> None:
        """Handle one record; must not block or raise."""

    def shutdown(self) -> None:
        """Release resources; safe to call twice."""


class AllocationSpanProcessor(SpanProcessor):
    """Charges allocations to the span current in the running context.

    Wrap the app's export processor so exported spans carry the ``alloc.*``
    attributes::

        provider.add_span_processor(AllocationSpanProcessor(BatchSpanProcessor(exporter)))

    The processor installs the native tracker if it is not installed yet,
    records metrics through the MeterProvider (given, or the global one) and
    emits events through the LoggerProvider (given, or the global one). It
    never raises out of ``on_start``/``on_end`` and never blocks on I/O.

    Args:
        span_processor: The processor (usually a ``BatchSpanProcessor``) that
            receives every span, ended spans with ``alloc.*`` attributes added.
            ``None``: no span attributes, only metrics, events and sinks.
        mode: Tracker mode when this processor installs it (``"counts"`` or
            ``"live"``); default ``OTEL_ALLOC_MODE``, else ``"counts"``.
        max_groups: Spans open at once with their own group; default
            ``OTEL_ALLOC_MAX_GROUPS``, else 8192.
        threshold_bytes: A single allocation at least this big is reported as
            ``alloc.threshold_exceeded``; default ``OTEL_ALLOC_THRESHOLD_BYTES``,
            else 64 MiB; 0 turns it off.
        meter_provider: Where metrics go; default the global MeterProvider.
        logger_provider: Where events go; default the global LoggerProvider.
        sinks: Further receivers of each ended span's record.
        **settings: Any field of :class:`~otel_alloc.settings.Settings`
            (``stale_span_seconds``, ``max_span_names``, ``span_threshold_bytes``,
            ``leak_grace_seconds``, ``leak_min_bytes``, ``max_retained_spans``,
            ``span_summary_events``, ``metrics``, ``events``, ``sample_bytes``:
            mean bytes between sampled allocation sites, 0 for none).
    """

    def __init__(
        self,
        span_processor: SpanProcessor | None = None,
        *,
        mode: str | None = None,
        max_groups: int | None = None,
        threshold_bytes: int | str | None = None,
        meter_provider: MeterProvider | None = None,
        logger_provider: LoggerProvider | None = None,
        sinks: list[SpanSink] | None = None,
        **settings: object,
    ) -> None:
        try:
            self.settings = Settings.resolve(**settings)  # type: ignore[arg-type]
        except TypeError as err:
            raise config.ConfigError("AllocationSpanProcessor", str(err),
                                     "a setting named in otel_alloc.settings.Settings") from None
        self.mode = self._install(mode, max_groups, threshold_bytes)
        self._live = self.mode == "live"
        self._next = span_processor
        self._names = SpanNames(self.settings.max_span_names)
        self._metrics = (AllocationMetrics(meter_provider, self._names, self._live,
                                           self._live_by_name, self._dropped_events)
                         if self.settings.metrics else None)
        self._events = (AllocationEvents(logger_provider, on_emit=self._count_event)
                        if self.settings.events else None)
        self._watch = SpanWatch(self.settings, self._events, self._live)
        self._pending: deque[SpanAllocation] = deque()
        self.records_dropped = 0
        self._watch.add_task(self._publish_pending)
        self._collector: SampleCollector | None = None
        if self.settings.sample_bytes > 0:
            self._collector = sampling.shared_collector(self.settings.sample_bytes, self._live)
            self._collector.add_resolver(self._watch.span_name_of)
            self._watch.add_task(self._collector.drain)
        self._sinks: list[SpanSink] = list(sinks or [])
        # The open spans: span id -> span, span -> group id (read by the C
        # runtime context, see attribution), group id -> span (the watch's).
        self._open: dict[int, ReadableSpan] = {}
        self._groups = attribution.span_registry()
        self._by_gid = self._watch.open
        self._overflow_open = 0
        self._max_groups = tracker.counters().groups_capacity
        self._shutdown = False
        self.spans_reclaimed = 0
        self.errors = 0
        attribution.install_context_hook()

    @staticmethod
    def _install(mode: str | None, max_groups: int | None,
                 threshold_bytes: int | str | None) -> str:
        installed = tracker.installed_mode()
        if installed is None:
            installed = tracker.install(mode, max_groups=max_groups,
                                        threshold_bytes=threshold_bytes)
        else:
            if mode is not None:
                wanted = config.choice("mode", mode, "OTEL_ALLOC_MODE", "counts", tracker.MODES)
                if wanted != installed:
                    raise tracker.TrackerError(
                        f"otel_alloc is installed in mode {installed!r}, not {wanted!r}")
            if threshold_bytes is not None:
                tracker.set_threshold(threshold_bytes)
        return installed

    @property
    def profile(self) -> Profile | None:
        """The sampled allocation sites (``None`` when sampling is off)."""
        return self._collector.profile if self._collector is not None else None

    def add_sink(self, sink: SpanSink) -> None:
        """Add a receiver of span records."""
        self._sinks.append(sink)

    # -- SpanProcessor ---------------------------------------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Open the span's allocation group, then pass the span on."""
        try:
            if not self._shutdown:
                gid = _span_group_new()
                if gid == _OVERFLOW:
                    gid = self._overflowed()
                if gid != _UNTRACKED:
                    if gid != _OVERFLOW:
                        self._by_gid[gid] = span
                    # Read by the C runtime context on attach: the span's
                    # allocations go to its group from its first attach on.
                    self._groups[span] = gid
                    self._open[span.context.span_id] = span
                    if self._collector is not None:
                        self._collector.note_thread()
        except Exception:
            self._failed("on_start")
        if self._next is not None:
            try:
                self._next.on_start(span, parent_context=parent_context)
            except Exception:
                self._failed("wrapped on_start")

    def on_end(self, span: ReadableSpan) -> None:
        """Close the span's group, record it, pass it on with attributes."""
        out = span
        try:
            record = self._close_group(span)
            if record is not None:
                if self._next is not None:
                    out = with_attributes(span, record.attributes())
                # Metrics, events and sinks run on the watch thread, off the
                # request path; the queue is bounded.
                if len(self._pending) < MAX_PENDING:
                    self._pending.append(record)
                else:
                    self.records_dropped += 1
        except Exception:
            self._failed("on_end")
        if self._next is not None:
            try:
                self._next.on_end(out)
            except Exception:
                self._failed("wrapped on_end")

    def shutdown(self) -> None:
        """Stop the watch, shut down sinks and the wrapped processor; idempotent."""
        if self._shutdown:
            return
        self._shutdown = True
        self._watch.shutdown()
        if self._collector is not None:
            self._collector.drain()
            self._collector.remove_resolver(self._watch.span_name_of)
        self._publish_pending()
        for sink in self._sinks:
            try:
                sink.shutdown()
            except Exception:
                self._failed("sink shutdown")
        if self._next is not None:
            self._next.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Emit pending events and flush the wrapped processor."""
        try:
            self._watch.flush()
        except Exception:
            self._failed("force_flush")
        if self._next is not None:
            return self._next.force_flush(timeout_millis)
        return True

    # -- groups ----------------------------------------------------------

    def _overflowed(self) -> int:
        """The group table is full: reclaim stale spans, or use the overflow group.

        Returns the span's group: its own after a reclaim, else the shared
        overflow group, or _UNTRACKED when the overflow group already
        holds as many open spans as the table has slots, which bounds the
        memory spans that are never ended can hold.
        """
        if self._reclaim_stale():
            gid = _span_group_new()
            if gid != _OVERFLOW:
                return gid
        if self._overflow_open >= self._max_groups:
            return _UNTRACKED
        self._overflow_open += 1
        return _OVERFLOW

    def _reclaim_stale(self) -> bool:
        """Release the groups of spans open longer than the stale age."""
        cutoff = time.time_ns() - int(self.settings.stale_span_seconds * 1e9)
        try:
            oldest = next(iter(self._open.values()))
        except (StopIteration, RuntimeError):
            return False
        if (oldest.start_time or 0) > cutoff:
            return False  # nothing is stale: skip copying the table
        stale: list[int] = []
        # A snapshot (spans end on other threads meanwhile); only spans still
        # open when popped here are reclaimed.
        for span_id, span in list(self._open.items()):
            if (span.start_time or 0) > cutoff:
                break  # insertion order: the rest are younger
            if self._open.pop(span_id, None) is not None:
                gid = self._groups.pop(span, _OVERFLOW)
                if gid == _OVERFLOW:
                    self._overflow_open -= 1
                else:
                    self._by_gid.pop(gid, None)
                    stale.append(gid)
        for gid in stale:
            _span_end(gid, 0, True)
        self.spans_reclaimed += len(stale)
        return bool(stale)

    def _close_group(self, span: ReadableSpan) -> SpanAllocation | None:
        ctx = span.context
        if ctx is None:
            return None
        started = self._open.pop(ctx.span_id, None)
        if started is None:
            return None  # reclaimed, or started before this processor
        gid = self._groups.pop(started, _OVERFLOW)
        if gid == _OVERFLOW:
            self._overflow_open -= 1
            return None  # charged to the overflow group; counted natively
        parent_gid = 0
        parent = span.parent
        if parent is not None:
            parent_span = self._open.get(parent.span_id)
            if parent_span is not None:
                parent_gid = self._groups.get(parent_span, 0)
        # Closed first: from here on, work done while the ended span is still
        # current (ours, the SDK's, the exporter's) is charged to no group.
        figures = _span_end(gid, parent_gid, not self._live)
        watch = self._watch
        watch.open.pop(gid, None)
        if figures is None:
            return None
        alloc_bytes, count, inclusive, live_bytes, peak_bytes, events_pending = figures
        live = self._live
        record = SpanAllocation(  # positional: this runs for every span
            span.name, ctx.trace_id, ctx.span_id, gid, alloc_bytes, count, inclusive,
            live_bytes if live else None, peak_bytes if live else None,
            span.start_time or 0, span.end_time or 0,
        )
        watch.ended(record)
        if events_pending:
            watch.wake()
        if live and not watch.retain(record):
            _core.group_release(gid)
        return record

    def _publish_pending(self) -> None:
        """Record the queued span records (watch thread, flush, shutdown)."""
        pending = self._pending
        while True:
            try:
                record = pending.popleft()
            except IndexError:
                return
            try:
                self._publish(record)
            except Exception:
                self._failed("publish")

    def _publish(self, record: SpanAllocation) -> None:
        if self._metrics is not None:
            self._metrics.on_span(record)
        if self._events is not None:
            if record.bytes >= self.settings.span_threshold_bytes > 0:
                self._events.emit(
                    names.EVENT_THRESHOLD, trace_id=record.trace_id, span_id=record.span_id,
                    span_name=record.name,
                    attributes={"alloc.kind": "span", "alloc.bytes": record.bytes,
                                "alloc.threshold_bytes": self.settings.span_threshold_bytes},
                    body=f"span {record.name!r} allocated {record.bytes} bytes")
            if self.settings.span_summary_events:
                self._events.emit(
                    names.EVENT_SUMMARY, trace_id=record.trace_id, span_id=record.span_id,
                    span_name=record.name, attributes=record.attributes(),
                    body=f"span {record.name!r}: {record.bytes} bytes in "
                         f"{record.count} allocations")
        for sink in self._sinks:
            try:
                sink.on_span(record)
            except Exception:
                self._failed("sink")

    # -- health ----------------------------------------------------------

    def _live_by_name(self) -> dict[str, int]:
        return self._watch.live_by_name()

    @staticmethod
    def _dropped_events() -> int:
        return tracker.counters().events_dropped

    def _count_event(self, event_name: str, span_name: str | None, trace_id: int,
                     span_id: int) -> None:
        if self._metrics is not None:
            ctx = span_context(trace_id, span_id) if trace_id else None
            self._metrics.count_event(event_name, span_name, ctx)

    @property
    def open_spans(self) -> int:
        """Spans with a group of their own open."""
        return len(self._by_gid)

    def _failed(self, where: str) -> None:
        self.errors += 1
        if self.errors <= 10:  # then stay quiet: this runs on every span
            _log.warning("otel_alloc: %s failed", where, exc_info=True)
