"""OTLP metrics for span allocations (names in :mod:`otel_alloc.otel.contract`)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from otel_alloc import tracker
from otel_alloc.otel import contract as names
from otel_alloc.otel.histogram_bulk import SizeRecorder
from otel_alloc.otel.span_records import LIVE_ESTIMATE, LIVE_EXACT

# One span name's ended spans in a batch, summed natively (SpanRecords.take):
# (name, bytes, allocations, trace id, span id, sizes, native bytes). Bytes and
# allocations cover every span; sizes counts the spans span_size_sample_rate
# keeps per size ({size: spans}), the largest first, whose ids are given (else
# the largest span's); of the bytes, those native code allocated.
NameSums = tuple[str, int, int, int, int, dict[int, int], int]


def span_context(trace_id: int, span_id: int) -> Context:
    """A context whose current span has these ids, for exemplars and log records."""
    ctx = SpanContext(trace_id=trace_id, span_id=span_id, is_remote=False,
                      trace_flags=TraceFlags(TraceFlags.SAMPLED))
    return trace.set_span_in_context(NonRecordingSpan(ctx))


class SpanNames:
    """Caps the number of distinct ``span.name`` values (cardinality).

    The first ``limit`` names are kept; later ones are reported as ``_other``.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self.overflowed = 0

    def __call__(self, name: str) -> str:
        """The name to report for ``name``: itself, or ``_other`` past the cap."""
        if name in self._seen:
            return name
        with self._lock:
            if len(self._seen) < self._limit:
                self._seen.add(name)
                return name
        self.overflowed += 1
        return names.OVERFLOW_SPAN_NAME


class AllocationMetrics:
    """Records each ended span into counters and a histogram, by span name.

    Points carry exemplars with the span's trace and span id (the SDK's default
    trace-based exemplar filter keeps them for sampled spans).
    """

    def __init__(
        self,
        meter_provider: MeterProvider | None,
        span_names: SpanNames,
        live: int,
        live_by_name: Callable[[], dict[str, int]],
        dropped_events: Callable[[], int],
        *,
        native: bool = False,
    ) -> None:
        provider = meter_provider or metrics.get_meter_provider()
        meter = provider.get_meter(names.METER_NAME)
        self._names = span_names
        self._attrs: dict[str, dict[str, str]] = {}  # span name -> attributes, made once
        self._allocated = meter.create_counter(
            names.ALLOCATED, unit="By",
            description="Bytes allocated while a span was current (self bytes)")
        self._allocations = meter.create_counter(
            names.ALLOCATIONS, unit="{allocation}",
            description="Allocations made while a span was current")
        self._size = meter.create_histogram(
            names.SPAN_SIZE, unit="By", description="Bytes allocated per span (self)",
            explicit_bucket_boundaries_advisory=names.SPAN_SIZE_BUCKETS)
        self._sizes = SizeRecorder(self._size)
        # Native mode: the part of ALLOCATED native code allocated, so the
        # Python-object part is their difference.
        self._native = (meter.create_counter(
            names.NATIVE_ALLOCATED, unit="By",
            description="Of python.alloc.allocated, the bytes native code (extension modules "
                        "and their libraries) allocated while a span was current")
            if native else None)
        self._events = meter.create_counter(
            names.EVENTS, unit="{event}", description="Allocation events emitted, by event name")
        self._live_by_name = live_by_name
        self._dropped_events = dropped_events
        if live == LIVE_ESTIMATE:
            meter.create_observable_up_down_counter(
                names.LIVE_ESTIMATE, callbacks=[self._observe_live], unit="By",
                description="Estimate, from a sample of their blocks, of the bytes allocated "
                            "by spans of this name still alive (open spans and ended spans "
                            "still being watched)")
        if live == LIVE_EXACT:
            meter.create_observable_up_down_counter(
                names.LIVE, callbacks=[self._observe_live], unit="By",
                description="Bytes allocated by spans of this name still alive "
                            "(open spans and ended spans still being watched)")
            meter.create_observable_gauge(
                names.PEAK, callbacks=[self._observe_peak], unit="By",
                description="Process high-water mark of traced live bytes")
        meter.create_observable_counter(
            names.EVENTS_DROPPED, callbacks=[self._observe_dropped], unit="{event}",
            description="Allocation events lost to a full buffer")
        meter.create_observable_counter(
            names.GROUPS_DROPPED, callbacks=[self._observe_groups_dropped], unit="{span}",
            description="Spans that found the group table full (charged to the overflow group)")

    def on_spans(self, batch: list[NameSums]) -> None:
        """Record a batch of ended spans, summed per span name.

        The histogram takes every span (or the sample of them that
        ``span_size_sample_rate`` keeps), a batch of one name at once where
        the SDK allows it (:mod:`otel_alloc.otel.histogram_bulk`: the same
        data points as one ``Histogram.record`` per span, which costs about
        what the SDK spends on a whole span); the counters take one sum per
        span name per batch over every span (the SDK would sum them anyway).
        Exemplars link to the batch's largest span of each name: building a
        span context for every span would cost more than the rest of the
        recording.
        """
        record_sizes = self._sizes.record
        for name, alloc_bytes, count, trace_id, span_id, sizes, native_bytes in batch:
            reported = self._names(name)
            attrs = self._attrs.get(reported)
            if attrs is None:
                attrs = self._attrs.setdefault(reported, {names.SPAN_NAME: reported})
            ctx = span_context(trace_id, span_id)
            record_sizes(sizes, attrs, ctx)  # none when span_size_sample_rate kept none
            self._allocated.add(alloc_bytes, attrs, context=ctx)
            self._allocations.add(count, attrs, context=ctx)
            if self._native is not None:
                self._native.add(native_bytes, attrs, context=ctx)

    def count_event(self, event_name: str, span_name: str | None,
                    ctx: Context | None = None) -> None:
        """Count one emitted event."""
        attrs = {names.EVENT_NAME_ATTR: event_name}
        if span_name is not None:
            attrs[names.SPAN_NAME] = self._names(span_name)
        self._events.add(1, attrs, context=ctx)

    def shutdown(self) -> None:
        """Nothing to release: the MeterProvider owns the readers."""

    def _observe_live(self, options: CallbackOptions) -> Iterable[Observation]:
        totals: dict[str, int] = {}
        for name, live in self._live_by_name().items():
            key = self._names(name)
            totals[key] = totals.get(key, 0) + live
        return [Observation(v, {names.SPAN_NAME: k}) for k, v in totals.items()]

    def _observe_peak(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(tracker.process_stats().peak_bytes)]

    def _observe_dropped(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(self._dropped_events())]

    def _observe_groups_dropped(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(tracker.counters().groups_dropped)]
