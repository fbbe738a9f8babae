"""Contract names: metrics, events and attributes that dashboards rely on."""

from __future__ import annotations

METER_NAME = "otel_alloc"

ALLOCATED = "python.alloc.allocated"
ALLOCATIONS = "python.alloc.allocations"
NATIVE_ALLOCATED = "python.alloc.native.allocated"
SPAN_SIZE = "python.alloc.span.size"
LIVE = "python.alloc.live"
LIVE_ESTIMATE = "python.alloc.live.estimate"
PEAK = "python.alloc.peak"
EVENTS = "python.alloc.events"
EVENTS_DROPPED = "python.alloc.events.dropped"
GROUPS_DROPPED = "python.alloc.groups.dropped"

SPAN_NAME = "span.name"
EVENT_NAME_ATTR = "event.name"
OVERFLOW_SPAN_NAME = "_other"

EVENT_THRESHOLD = "alloc.threshold_exceeded"
EVENT_LEAK = "alloc.leak_suspected"
EVENT_SUMMARY = "alloc.span_summary"

# Bucket boundaries for bytes per span: powers of four from 256 B to 16 GiB,
# so one histogram covers tiny handlers and multi-gigabyte batch steps.
SPAN_SIZE_BUCKETS: tuple[float, ...] = tuple(float(256 * 4**i) for i in range(14))
