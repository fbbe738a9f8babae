"""A queued span record's ids and times (``record_ints.c``): exact at every width, exact
out of range too, and held as values, not as references to the span's own int objects."""

from __future__ import annotations

import random
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.id_generator import IdGenerator

from otel_alloc.otel import _spanpath
from tests.unit.otel.span_path_helpers import DirectProcessor, bare_span_path


class FixedIds(IdGenerator):
    """Hands out the given trace and span ids in turn."""

    def __init__(self, trace_ids: list[int], span_ids: list[int]) -> None:
        self._trace_ids: Iterator[int] = iter(trace_ids)
        self._span_ids: Iterator[int] = iter(span_ids)

    def generate_trace_id(self) -> int:
        return next(self._trace_ids)

    def generate_span_id(self) -> int:
        return next(self._span_ids)


def _queue(records: Any, trace_ids: list[int], span_ids: list[int],
           times: list[tuple[int, int]]) -> list[Any]:
    """End one root span per entry of ``times`` into ``records``; the ended spans."""
    provider = TracerProvider(id_generator=FixedIds(trace_ids, span_ids))
    provider.add_span_processor(DirectProcessor(bare_span_path(records, None, [])))
    tracer = provider.get_tracer("test")
    spans = []
    for i, (start, end) in enumerate(times):
        span = tracer.start_span(f"s{i}", start_time=start)
        span.end(end_time=end)
        spans.append(span)
    return spans


def _as_recorded(span: Any) -> tuple[int, int, int, int]:
    ctx = span.get_span_context()
    return ctx.trace_id, ctx.span_id, span.start_time, span.end_time


@pytest.mark.usefixtures("tracker_counts")
def test_ids_and_times_come_back_exact_at_every_width() -> None:
    """128-bit trace ids with the top bit set, 64-bit span ids at the top of
    their range, small values and negative times: the whole records and the
    sums' exemplar ids are exactly the span's."""
    trace_ids = [2**128 - 1, 1, 2**127 + 5, 2**64, 2**64 - 1]
    span_ids = [2**64 - 1, 1, 2**63, 2**32 + 7, 12345]
    times = [(1, 2), (2**63 - 2, 2**63 - 1), (-(2**63), -5), (10**18, 10**18 + 1), (7, 7)]
    records = _spanpath.SpanRecords(100)
    spans = _queue(records, trace_ids, span_ids, times)
    sums, whole = records.take(100, True)
    assert [tuple(r[1:3]) + tuple(r[9:11]) for r in whole] == [_as_recorded(s) for s in spans]
    assert [(s[3], s[4]) for s in sums] == [_as_recorded(s)[:2] for s in spans]


class SubInt(int):
    """An int subclass: same digits, another type."""


@pytest.mark.usefixtures("tracker_counts")
def test_every_bit_length_round_trips() -> None:
    """The ids are read from the int's digits (compat/long_value.h): every
    bit length up to and past the C ranges, each digit boundary, patterns
    with only the top or only the bottom bits set, and int subclasses, come
    back exactly as the span had them."""
    rng = random.Random(18)
    trace_ids: list[int] = []
    span_ids: list[int] = []
    for bits in range(0, 131):
        for value in (2**bits - 1, 2**bits, rng.getrandbits(bits) | (1 << max(bits - 1, 0)),
                      (2**bits - 1) ^ ((2**max(bits - 31, 0)) - 1)):
            trace_ids.append(value)
            span_ids.append(value if value < 2**64 else value % 2**64)
    trace_ids[-1] = SubInt(2**127 + 3)
    span_ids[-1] = SubInt(2**63 + 5)
    times = [(i, i + 1) for i in range(len(trace_ids))]
    times[-2] = (SubInt(10**18), 10**18 + 9)
    records = _spanpath.SpanRecords(len(times))
    spans = _queue(records, trace_ids, span_ids, times)
    _, whole = records.take(len(times), True)
    assert [tuple(r[1:3]) + tuple(r[9:11]) for r in whole] == [_as_recorded(s) for s in spans]
    assert len(whole) == len(times)


@pytest.mark.usefixtures("tracker_counts")
def test_values_outside_the_c_ranges_are_kept_as_read() -> None:
    """An id generator or caller can hand the SDK ints no OpenTelemetry
    exporter accepts; the record still says exactly what the span said."""
    trace_ids = [2**130 + 3, 5, 6]
    span_ids = [7, 2**64 + 9, 8]
    times = [(1, 2), (3, 4), (2**70, 2**70 + 1)]
    records = _spanpath.SpanRecords(100)
    spans = _queue(records, trace_ids, span_ids, times)
    _, whole = records.take(100, True)
    assert [tuple(r[1:3]) + tuple(r[9:11]) for r in whole] == [_as_recorded(s) for s in spans]


@pytest.mark.usefixtures("tracker_counts")
def test_a_queued_record_holds_no_reference_to_the_span_ints() -> None:
    """Queued records once kept four of the span's int objects alive each (and
    in live mode four entries per queued span in the live-block table)."""
    records = _spanpath.SpanRecords(100)
    (span,) = _queue(records, [2**127 + 1], [2**63 + 1], [(10**18, 10**18 + 3)])
    values = [span.get_span_context().trace_id, span.get_span_context().span_id,
              span.start_time, span.end_time]
    queued = [sys.getrefcount(v) for v in values]
    assert len(records) == 1
    records.take(100, True)
    assert [sys.getrefcount(v) for v in values] == queued
