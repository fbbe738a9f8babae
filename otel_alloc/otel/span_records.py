"""Per-span allocation records and the span attributes made from them."""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import ReadableSpan

# Span attribute names (contract: dashboards and users depend on them).
ATTR_BYTES = "alloc.bytes"
ATTR_COUNT = "alloc.count"
ATTR_INCLUSIVE_BYTES = "alloc.inclusive_bytes"
ATTR_LIVE_BYTES = "alloc.live_bytes"
ATTR_PEAK_BYTES = "alloc.peak_bytes"
ATTR_NATIVE_BYTES = "alloc.native_bytes"
ATTR_LIVE_BYTES_ESTIMATE = "alloc.live_bytes_estimate"

# Each attribute, in the order of the C span path's keys (its bit in the mask
# SpanPath takes), with the tracker modes that set it. alloc.native_bytes
# also needs native mode on.
ATTRIBUTE_MODES = {
    ATTR_BYTES: ("counts", "live", "estimate"),
    ATTR_COUNT: ("counts", "live", "estimate"),
    ATTR_INCLUSIVE_BYTES: ("counts", "live", "estimate"),
    ATTR_LIVE_BYTES: ("live",),
    ATTR_PEAK_BYTES: ("live",),
    ATTR_NATIVE_BYTES: ("counts", "live", "estimate"),
    ATTR_LIVE_BYTES_ESTIMATE: ("estimate",),
}
# Each attribute's bit in that mask, and the mask of them all.
ATTRIBUTE_BITS = {name: 1 << i for i, name in enumerate(ATTRIBUTE_MODES)}
ALL_ATTRIBUTES = sum(ATTRIBUTE_BITS.values())


def attribute_mask(choice: bool | frozenset[str]) -> int:
    """The mask of ``alloc.*`` attributes SpanPath writes for a ``span_attributes`` choice.

    Bit i stands for the i-th of :data:`ATTRIBUTE_MODES`. True: all of them
    (each where its mode has it); False: none; else those named.
    """
    if isinstance(choice, bool):
        return ALL_ATTRIBUTES if choice else 0
    return sum(ATTRIBUTE_BITS[name] for name in choice)

# How the tracker's mode keeps live bytes (the C span path's ``live``): not at
# all (counts), exactly (live), or as an estimate from a sample (estimate).
LIVE_NONE, LIVE_EXACT, LIVE_ESTIMATE = 0, 1, 2
LIVE_KINDS = {"counts": LIVE_NONE, "live": LIVE_EXACT, "estimate": LIVE_ESTIMATE}

# What the C span path (otel_alloc.otel._spanpath.SpanPath) reads at span end: bytes,
# count, inclusive bytes, live bytes, peak bytes, large-allocation events
# waiting, whether the alloc.* attributes were set on the span already, native
# bytes (None unless native mode is on).
Figures = tuple[int, int, int, int, int, bool, bool, int | None]
# A record of an ended span as the watch thread drains it from the native
# queue (SpanRecords), turned into metrics and, when something wants one, a
# SpanAllocation: (name, trace id, span id, group id, bytes, count, inclusive
# bytes, live bytes, peak bytes, start time, end time, native bytes or None).
RawRecord = tuple[str, int, int, int, int, int, int, int, int, int, int, int | None]


@dataclass(slots=True)
class SpanAllocation:
    """What one ended span allocated.

    Attributes:
        name: The span's name.
        trace_id: The span's trace id.
        span_id: The span's id.
        group_id: The allocation group that recorded it.
        bytes: Bytes allocated while the span was current (self). Exact.
        count: Allocations made while the span was current (self). Exact.
        inclusive_bytes: ``bytes`` plus the inclusive bytes of descendants
            that ended before this span.
        live_bytes: Live mode: bytes the span allocated still alive at its
            end; ``None`` in counts mode.
        peak_bytes: Live mode: highest net bytes while the span was open.
        start_time_ns: The span's start time.
        end_time_ns: The span's end time.
        native_bytes: Native mode: of ``bytes``, those allocated by native
            code (extension modules and their libraries); ``None`` otherwise.
        live_bytes_estimate: Estimate mode: an unbiased estimate of the bytes
            the span allocated still alive at its end, from a sample of its
            blocks (``live_bytes`` and ``peak_bytes`` are then ``None``).

    """

    name: str
    trace_id: int
    span_id: int
    group_id: int
    bytes: int
    count: int
    inclusive_bytes: int
    live_bytes: int | None
    peak_bytes: int | None
    start_time_ns: int
    end_time_ns: int
    native_bytes: int | None = None
    live_bytes_estimate: int | None = None

    @property
    def live_or_estimate(self) -> int | None:
        """``live_bytes``, else ``live_bytes_estimate`` (``None`` in counts mode)."""
        return self.live_bytes if self.live_bytes is not None else self.live_bytes_estimate

    def attributes(self) -> dict[str, int]:
        """The ``alloc.*`` span attributes for this record."""
        attrs = {
            ATTR_BYTES: self.bytes,
            ATTR_COUNT: self.count,
            ATTR_INCLUSIVE_BYTES: self.inclusive_bytes,
        }
        if self.live_bytes is not None:
            attrs[ATTR_LIVE_BYTES] = self.live_bytes
        if self.peak_bytes is not None:
            attrs[ATTR_PEAK_BYTES] = self.peak_bytes
        if self.native_bytes is not None:
            attrs[ATTR_NATIVE_BYTES] = self.native_bytes
        if self.live_bytes_estimate is not None:
            attrs[ATTR_LIVE_BYTES_ESTIMATE] = self.live_bytes_estimate
        return attrs


def make_record(name: str, trace_id: int, span_id: int, gid: int, alloc_bytes: int, count: int,
                inclusive: int, live_bytes: int, peak_bytes: int, start: int, end: int,
                native_bytes: int | None, live: int) -> SpanAllocation:
    """A :class:`SpanAllocation` from figures kept under ``live`` (a ``LIVE_*`` kind)."""
    exact = live == LIVE_EXACT
    return SpanAllocation(name, trace_id, span_id, gid, alloc_bytes, count, inclusive,
                          live_bytes if exact else None, peak_bytes if exact else None, start,
                          end, native_bytes, live_bytes if live == LIVE_ESTIMATE else None)


def to_record(raw: RawRecord, live: int) -> SpanAllocation:
    """The :class:`SpanAllocation` of a raw record (``live``: a ``LIVE_*`` kind)."""
    return make_record(*raw, live)


def with_figures(span: ReadableSpan, figures: Figures, live: int,
                 mask: int = ALL_ATTRIBUTES) -> ReadableSpan:
    """A copy of the ended span with its ``alloc.*`` attributes added.

    ``live`` is a ``LIVE_*`` kind, ``mask`` the attributes wanted
    (:func:`attribute_mask`). For spans that ``_on_ending`` did not
    reach (an SDK before 1.40): the span's own attribute mapping may already
    sit in another processor's export queue, where an exporter iterates it
    without a lock, so it is never changed; the wrapped processor gets this
    copy.
    """
    extra = {ATTR_BYTES: figures[0], ATTR_COUNT: figures[1], ATTR_INCLUSIVE_BYTES: figures[2]}
    if live == LIVE_EXACT:
        extra[ATTR_LIVE_BYTES] = figures[3]
        extra[ATTR_PEAK_BYTES] = figures[4]
    if figures[7] is not None:
        extra[ATTR_NATIVE_BYTES] = figures[7]
    if live == LIVE_ESTIMATE:
        extra[ATTR_LIVE_BYTES_ESTIMATE] = figures[3]
    return with_attributes(span, {k: v for k, v in extra.items() if mask & ATTRIBUTE_BITS[k]})


def with_attributes(span: ReadableSpan, extra: dict[str, int]) -> ReadableSpan:
    """A copy of an ended span with ``extra`` attributes added.

    The SDK freezes a span before ``on_end``, so ``set_attribute`` is
    dropped there; the copy is made through ReadableSpan's public
    constructor.
    """
    original = span.attributes or {}
    merged: dict[str, object] = dict(original)
    dropped = span.dropped_attributes
    # The provider's attribute limit holds for the copy too: past it, the
    # alloc.* attributes give way (and are counted), never the app's.
    limit = getattr(getattr(span, "_attributes", None), "maxlen", None)
    for key, value in extra.items():
        if key in merged or limit is None or len(merged) < limit:
            merged[key] = value
        else:
            dropped += 1
    attributes: object = merged
    if dropped:
        bounded = BoundedAttributes(maxlen=None, attributes=merged, immutable=True)  # type: ignore[arg-type]
        bounded.dropped = dropped
        attributes = bounded
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=attributes,  # type: ignore[arg-type]
        events=span.events,
        links=span.links,
        kind=span.kind,
        status=span.status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )
