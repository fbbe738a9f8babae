"""AllocationSpanProcessor: an allocation group per span, reported at span end."""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Protocol

from opentelemetry._logs import LoggerProvider
from opentelemetry.context import Context
from opentelemetry.metrics import MeterProvider
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import SpanContext

from otel_alloc import tracker
from otel_alloc.otel import _spanpath, context_follower, sdk_compat
from otel_alloc.otel import contract as names
from otel_alloc.otel.events import AllocationEvents
from otel_alloc.otel.metrics import AllocationMetrics, SpanNames, span_context
from otel_alloc.otel.settings import Settings, check_keywords, install_tracker
from otel_alloc.otel.span_records import (
    LIVE_EXACT,
    LIVE_KINDS,
    LIVE_NONE,
    Figures,
    SpanAllocation,
    make_record,
    to_record,
    with_figures,
)
from otel_alloc.otel.watch import SpanWatch, keep_hooked
from otel_alloc.profiling import sampling
from otel_alloc.profiling.profile import Profile
from otel_alloc.profiling.sampling import SampleCollector

_log = logging.getLogger(__name__)
# Ended spans waiting for the watch thread to record them; past this they are
# dropped and counted (records_dropped) rather than let memory grow.
MAX_PENDING = 100_000
PUBLISH_WAIT_SECONDS = 5.0  # flush/shutdown's wait for another publisher (a stuck sink)
_OVERFLOW = tracker.GROUP_OVERFLOW
_UNTRACKED = -1  # a span that gets no group at all (see _overflowed)


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
            ``None``: beside the export processor (attributes need SDK 1.40+).
        mode: Tracker mode when this processor installs it (``"counts"``,
            ``"live"`` or ``"estimate"``); default ``OTEL_ALLOC_MODE``, else
            ``"counts"``.
        max_groups: Spans open at once with their own group; default
            ``OTEL_ALLOC_MAX_GROUPS``, else 8192.
        threshold_bytes: A single allocation at least this big is reported as
            ``alloc.threshold_exceeded``; default ``OTEL_ALLOC_THRESHOLD_BYTES``,
            else 64 MiB; 0 turns it off.
        event_capacity: Native buffer of such events when this processor
            installs the tracker (full: dropped and counted); default
            ``OTEL_ALLOC_EVENT_BUFFER``, else 1024.
        native: Also charge the ``malloc`` family called by extension modules
            and their libraries (``alloc.native_bytes``); default
            ``OTEL_ALLOC_NATIVE``, else on (``False`` turns it off when this
            processor installs the tracker). Once on, it is on for the whole
            process until the tracker is uninstalled.
        estimate_bytes: Estimate mode: mean bytes between sampled blocks (64 B
            to 64 MiB); default ``OTEL_ALLOC_ESTIMATE_BYTES``, else 4 KiB.
        meter_provider: Where metrics go; default the global MeterProvider.
        logger_provider: Where events go; default the global LoggerProvider.
        sinks: Further receivers of each ended span's record.
        **settings: Any field of :class:`~otel_alloc.otel.settings.Settings`
            (``stale_span_seconds``, ``max_span_names``, ``span_threshold_bytes``,
            ``leak_grace_seconds``, ``leak_min_bytes``, ``max_retained_spans``,
            ``span_summary_events``, ``span_attributes`` (off: no ``alloc.*``
            span attributes; or those named: ``["alloc.bytes", "live_bytes"]``),
            ``metrics``, ``events``, ``sample_bytes``: mean bytes between sampled
            allocation sites, 0 for none; ``span_size_sample_rate``: the fraction
            of spans whose bytes go into ``python.alloc.span.size``, 1 for all).
    """

    def __init__(
        self,
        span_processor: SpanProcessor | None = None,
        *,
        mode: str | None = None,
        max_groups: int | None = None,
        threshold_bytes: int | str | None = None,
        event_capacity: int | None = None,
        native: bool | None = None,
        estimate_bytes: int | str | None = None,
        meter_provider: MeterProvider | None = None,
        logger_provider: LoggerProvider | None = None,
        sinks: list[SpanSink] | None = None,
        **settings: object,
    ) -> None:
        check_keywords(settings)
        self.settings = Settings.resolve(tracker_mode=mode, **settings)  # type: ignore[arg-type]
        if self.settings.sample_bytes > 0:
            # Checked before anything starts (the watch thread, the tracker).
            sampling.resolve(self.settings.sample_bytes)
        self.mode = install_tracker(mode, max_groups, threshold_bytes, event_capacity, native,
                                    estimate_bytes)
        self._live_kind = LIVE_KINDS[self.mode]
        self._next = span_processor
        self._names = SpanNames(self.settings.max_span_names)
        self._metrics = (AllocationMetrics(meter_provider, self._names, self._live_kind,
                                           self._live_by_name, self._dropped_events,
                                           native=tracker.native_enabled())
                         if self.settings.metrics else None)
        self._events = (AllocationEvents(logger_provider, on_emit=self._count_event)
                        if self.settings.events else None)
        # Ended spans: queued natively at span end (bounded, only strings and
        # ints) and remembered by group id for a while; the watch thread takes
        # the queue in batches, summed per span name, and publishes them.
        self._records = _spanpath.SpanRecords(MAX_PENDING)
        # Held while a batch is taken and published: flush and shutdown wait (bounded) for
        # the watch thread's batch, so spans ended before them are published. Reentrant.
        self._publish_lock = threading.RLock()
        self._watch = SpanWatch(self.settings, self._events, self._live_kind, self._records)
        self._watch.add_task(self._publish_pending)
        self._watch.add_task(keep_hooked)
        os.register_at_fork(after_in_child=_forget_in_child(weakref.ref(self)))
        self._collector: SampleCollector | None = None
        if self.settings.sample_bytes > 0:
            self._collector = sampling.shared_collector(self.settings.sample_bytes,
                                                        self._live_kind == LIVE_EXACT)
            self._collector.add_resolver(self._watch.span_name_of)
            self._watch.add_task(self._collector.drain)
        self._sinks: list[SpanSink] = list(sinks or [])
        # The open spans: span id -> span (in the order they started), span ->
        # group id (read by the C runtime context, see context_follower),
        # group id -> span (the watch's). Tables in C the span path writes.
        self._open = _spanpath.SpanIndex()
        self._groups = context_follower.span_registry()
        self._holders = context_follower.span_holders()
        self._by_gid = self._watch.open
        self._max_groups = tracker.counters().groups_capacity
        # Live and estimate modes: a span still holding leak_min_bytes (or an
        # estimate) at its end keeps its group to be watched; others are released in C.
        keep_from = (self.settings.leak_min_bytes
                     if self._live_kind != LIVE_NONE and self.settings.max_retained_spans > 0
                     else -1)
        next_on_start, next_on_ending, next_on_end = sdk_compat.forwarded(span_processor)
        self._path = _spanpath.SpanPath(
            groups=self._groups, holders=self._holders, open=self._open, by_gid=self._by_gid,
            records=self._records,
            next_on_start=next_on_start, next_on_ending=next_on_ending, next_on_end=next_on_end,
            live=self._live_kind, overflowed=self._overflowed,
            failed=self._failed, wake=self._watch.wake, live_end=self._live_end,
            with_figures=with_figures,
            note_thread=self._collector.note_thread if self._collector is not None else None,
            keep_from=keep_from, attributes=self.settings.attribute_mask)
        self.on_start = self._path.on_start  # type: ignore[method-assign]
        self.on_end = self._path.on_end  # type: ignore[method-assign]
        self._on_ending = self._path.on_ending  # type: ignore[method-assign]
        if (not sdk_compat.SDK_CALLS_ON_ENDING and span_processor is None
                and self.settings.span_attributes):
            sdk_compat.warn_no_attribute_route()
        self._shutdown = False
        self.spans_reclaimed = 0
        self.errors = 0
        context_follower.install_context_hook()

    @property
    def profile(self) -> Profile | None:
        """The sampled allocation sites (``None`` when sampling is off)."""
        return self._collector.profile if self._collector is not None else None

    def add_sink(self, sink: SpanSink) -> None:
        """Add a receiver of span records."""
        self._sinks.append(sink)

    # -- SpanProcessor ---------------------------------------------------

    # on_start and on_end run for every span: __init__ installs the C
    # implementations (otel_alloc.otel._spanpath.SpanPath) on the instance; these
    # methods are what a call through the class reaches.

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Open the span's allocation group, then pass the span on."""
        self._path.on_start(span, parent_context=parent_context)

    def _on_ending(self, span: Span) -> None:
        """Close the span's group, add its ``alloc.*`` attributes, pass the span on.

        The SDK (>= 1.40) calls it on every processor before any ``on_end``,
        so the attributes reach every exporter whatever the processors' order.
        """
        self._path.on_ending(span)

    def on_end(self, span: ReadableSpan) -> None:
        """Pass the span on (a span ``_on_ending`` did not end is ended here)."""
        self._path.on_end(span)

    def shutdown(self) -> None:
        """Stop the watch, shut down sinks and the wrapped processor; idempotent."""
        if self._shutdown:
            return
        self._shutdown = True
        self._path.shutdown = True
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
            gid = _spanpath.group_new()
            if gid != _OVERFLOW:
                return gid
        if self._path.overflow_open >= self._max_groups:
            return _UNTRACKED
        self._path.overflow_open += 1
        return _OVERFLOW

    def _reclaim_stale(self) -> bool:
        """Release the groups of spans open longer than the stale age."""
        cutoff = time.time_ns() - int(self.settings.stale_span_seconds * 1e9)
        oldest = self._open.first()
        if oldest is None:
            return False
        if (oldest.start_time or 0) > cutoff:
            return False  # nothing is stale: skip copying the table
        stale: list[int] = []
        # A snapshot (spans end on other threads meanwhile); only spans still
        # open when popped here are reclaimed.
        for span_id, span in self._open.items():
            if (span.start_time or 0) > cutoff:
                break  # insertion order: the rest are younger
            if self._open.pop(span_id, None) is not None:
                self._holders.pop(span, None)
                gid = self._groups.pop(span, _OVERFLOW)
                if gid == _OVERFLOW:
                    self._path.overflow_open -= 1
                else:
                    self._by_gid.pop(gid, None)
                    stale.append(gid)
        for gid in stale:
            tracker.finish_group(gid, release=True)
        self.spans_reclaimed += len(stale)
        return bool(stale)

    def _live_end(self, span: ReadableSpan, ctx: SpanContext, gid: int, figures: Figures) -> None:
        """A span ended holding enough live bytes (or their estimate): watch its group."""
        record = make_record(span.name, ctx.trace_id, ctx.span_id, gid, *figures[:5],
                             span.start_time or 0, span.end_time or 0, figures[7],
                             self._live_kind)
        if not self._watch.retain(record):
            tracker.release_group(gid)

    def _publish_pending(self) -> None:
        """Publish the queued span records (watch thread, flush, shutdown)."""
        every = bool(self._sinks) or (
            self._events is not None and self.settings.span_summary_events)
        threshold = self.settings.span_threshold_bytes if self._events is not None else 0
        if not self._publish_lock.acquire(timeout=PUBLISH_WAIT_SECONDS):
            self.errors += 1  # the holder publishes what it took; the rest waits
            _log.warning("otel_alloc: waited %s s for a publisher", PUBLISH_WAIT_SECONDS)
            return
        try:  # one publisher at a time keeps batches in queue order, see __init__
            while True:
                sums, whole = self._records.take(4096, every, threshold,
                                                 self.settings.span_size_sample_rate)
                if not sums:
                    break
                if self._metrics is not None:
                    try:
                        self._metrics.on_spans(sums)
                    except Exception:
                        self._failed("metrics")
                for raw in whole:
                    try:
                        self._publish(to_record(raw, self._live_kind))
                    except Exception:
                        self._failed("publish")
        finally:
            self._publish_lock.release()

    def _publish(self, record: SpanAllocation) -> None:
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
    def attributes_dropped(self) -> int:
        """``alloc.*`` attributes not added because a span's attribute limit was reached.

        The app's own attributes are never evicted for them; each is also
        counted in the span's dropped-attributes count that exporters send.
        """
        return int(self._path.attributes_dropped)

    @property
    def records_dropped(self) -> int:
        """Ended spans whose record found the queue full (not in metrics or sinks)."""
        return int(self._records.dropped)

    @property
    def open_spans(self) -> int:
        """Spans with a group of their own open."""
        return len(self._by_gid)

    def _failed(self, where: str, error: BaseException | None = None) -> None:
        self.errors += 1
        if self.errors <= 10:  # then stay quiet: this runs on every span
            _log.warning("otel_alloc: %s failed", where, exc_info=error or True)


def _forget_in_child(ref: weakref.ref[AllocationSpanProcessor]) -> Callable[[], None]:
    """After fork, the child drops the parent's queued records (the parent publishes them)."""
    def forget() -> None:
        processor = ref()
        if processor is not None:
            processor._records.clear()
            processor._publish_lock = threading.RLock()  # maybe held by the parent's watch
    return forget
