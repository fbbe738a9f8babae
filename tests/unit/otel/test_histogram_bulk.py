"""The size histogram's bulk path exports exactly what one record per span would."""

from __future__ import annotations

import random
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import Histogram as SdkHistogram
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics._internal.exemplar import (
    AlwaysOnExemplarFilter,
    TraceBasedExemplarFilter,
)
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.metrics.view import SumAggregation, View
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import otel_alloc
from otel_alloc import AllocationSpanProcessor
from otel_alloc.otel import contract as names
from otel_alloc.otel import histogram_bulk
from otel_alloc.otel.histogram_bulk import SizeRecorder
from otel_alloc.otel.metrics import span_context
from tests.unit.conftest import OBJ, Helper

BUCKETS = names.SPAN_SIZE_BUCKETS
# Sizes on, beside and between the bucket boundaries, zero and past the last one.
EDGES = [0, 1, *BUCKETS, *(b + 1 for b in BUCKETS), *(b - 1 for b in BUCKETS if b > 0),
         int(BUCKETS[-1]) * 10]


def _points(reader: InMemoryMetricReader, exemplars: bool = True) -> list[tuple[Any, ...]]:
    """Every point of every metric, with its exemplars, in a comparable form."""
    data = reader.get_metrics_data()
    if data is None:
        return []
    points = []
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                for p in metric.data.data_points:
                    fields = [metric.name, sorted(p.attributes.items())]
                    if hasattr(p, "bucket_counts"):
                        fields += [tuple(p.explicit_bounds), tuple(p.bucket_counts), p.count,
                                   p.sum, p.min, p.max]
                    else:
                        fields += [p.value]
                    if exemplars:
                        fields.append(sorted((e.value, e.span_id, e.trace_id)
                                             for e in (p.exemplars or ())))
                    points.append(tuple(fields))
    return sorted(points, key=repr)


def _pair(**provider_args: Any) -> tuple[list[InMemoryMetricReader], list[Any]]:
    """Two identical MeterProviders (one reader per temporality each), their histograms."""
    readers, histograms = [], []
    for _ in range(2):
        cumulative = InMemoryMetricReader()
        delta = InMemoryMetricReader(preferred_temporality={
            SdkHistogram: AggregationTemporality.DELTA})
        provider = MeterProvider(metric_readers=[cumulative, delta], **provider_args)
        readers.append((cumulative, delta))
        histograms.append(provider.get_meter("m").create_histogram(
            names.SPAN_SIZE, unit="By",
            explicit_bucket_boundaries_advisory=BUCKETS))
    return readers, histograms  # type: ignore[return-value]


def _each(sizes: dict[int, int], attrs: dict[str, str], ctx: Any,
          record: Callable[..., None]) -> None:
    """What the processor did before the bulk path: one record per span, the
    first size with the exemplar's context, the others in the mapping's order."""
    if sizes:
        first = next(iter(sizes))
        record(first, attrs, context=ctx)
        for size, spans in sizes.items():
            for _ in range(spans - (size == first)):
                record(size, attrs)


def _counted(sizes: list[int]) -> dict[int, int]:
    """``sizes`` as SpanRecords.take() hands them on: spans per size, the first one first."""
    counts: dict[int, int] = {}
    for size in sizes:
        counts[size] = counts.get(size, 0) + 1
    return counts


def _compare(batches: list[tuple[list[int], dict[str, str]]], *, expect_bulk: bool,
             exemplars: bool = True, **provider_args: Any) -> None:
    readers, (one_by_one, bulk) = _pair(**provider_args)
    recorder = SizeRecorder(bulk)
    ctx = span_context(0xABC, 0xDEF)
    for i, (sizes, attrs) in enumerate(batches):
        _each(_counted(sizes), attrs, ctx, one_by_one.record)
        recorder.record(_counted(sizes), attrs, ctx)
        if i % 3 == 2:  # collections between batches (delta resets, cumulative keeps)
            _same(readers, exemplars)
    _same(readers, exemplars)
    # On an SDK whose internals differ (older than 1.45: no per-attribute
    # aggregation lookup) every batch takes the one-by-one path.
    assert (recorder.bulk_batches > 0) == (expect_bulk and histogram_bulk.SUPPORTED)


def _same(readers: list[Any], exemplars: bool) -> None:
    (c1, d1), (c2, d2) = readers
    assert _points(c1, exemplars) == _points(c2, exemplars)
    assert _points(d1, exemplars) == _points(d2, exemplars)


def _batches(seed: int) -> list[tuple[list[int], dict[str, str]]]:
    rng = random.Random(seed)
    out = []
    for _ in range(12):
        sizes = [rng.choice(EDGES) if rng.random() < 0.3 else rng.randrange(0, 1 << 24)
                 for _ in range(rng.randrange(0, 300))]
        out.append((sizes, {names.SPAN_NAME: rng.choice("abc")}))
    out.append((list(EDGES), {names.SPAN_NAME: "edges"}))
    out.append(([5], {names.SPAN_NAME: "single"}))
    out.append(([7, 7, 7, 7], {names.SPAN_NAME: "same"}))
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_bulk_equals_one_record_per_size(seed: int) -> None:
    """Buckets, count, sum, min, max and exemplars match, cumulative and delta."""
    _compare(_batches(seed), expect_bulk=True)


def test_the_bulk_path_is_taken_on_current_sdks() -> None:
    """Checked on 1.45.2; 1.35.0 and 1.40.0 lack what it needs and record one by one."""
    sdk = tuple(int(part) for part in version("opentelemetry-sdk").split(".")[:2])
    assert (sdk >= (1, 45)) == histogram_bulk.SUPPORTED


def test_bulk_with_views_that_keep_a_bucket_histogram() -> None:
    """A view with other buckets, one that drops the span.name attribute, a renamed copy."""
    from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation

    views = [
        View(instrument_name=names.SPAN_SIZE,
             aggregation=ExplicitBucketHistogramAggregation([10, 1000, 5000]),
             attribute_keys=set()),
        View(instrument_name=names.SPAN_SIZE, name="copy",
             aggregation=ExplicitBucketHistogramAggregation(BUCKETS, record_min_max=False)),
    ]
    _compare(_batches(4), expect_bulk=True, views=views)


def test_other_aggregations_and_exemplar_filters_record_one_by_one() -> None:
    """What the bulk path cannot vouch for takes the SDK's own path (and still matches).

    Those exemplars are the SDK's random reservoir picks: compared without them.
    """
    sum_view = [View(instrument_name=names.SPAN_SIZE, aggregation=SumAggregation())]
    _compare(_batches(5), expect_bulk=False, exemplars=False, views=sum_view)
    _compare(_batches(6), expect_bulk=False, exemplars=False,
             exemplar_filter=AlwaysOnExemplarFilter())
    _compare(_batches(7), expect_bulk=True, exemplar_filter=TraceBasedExemplarFilter())


def test_sampled_current_span_on_the_recording_thread_records_one_by_one() -> None:
    """Each size would be offered as an exemplar with the thread's sampled span."""
    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("around"):
        _compare(_batches(8), expect_bulk=False)
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_processor_histogram_matches_each_spans_alloc_bytes(helper: Helper) -> None:
    """End to end: the exported histogram is the spans' alloc.bytes recorded one by one."""
    otel_alloc.install("counts")
    try:
        reader = InMemoryMetricReader()
        spans = InMemorySpanExporter()
        processor = AllocationSpanProcessor(
            SimpleSpanProcessor(spans), meter_provider=MeterProvider(metric_readers=[reader]),
            span_size_sample_rate=1.0, events=False, sample_bytes=0)
        provider = TracerProvider()
        provider.add_span_processor(processor)
        tracer = provider.get_tracer("test")
        for i in range(600):
            with tracer.start_as_current_span("even" if i % 2 else "odd"):
                helper.alloc_many(OBJ, 1 + i % 7, 64 * (1 + i % 13))
        processor.force_flush()
        expected_reader = InMemoryMetricReader()
        expected = MeterProvider(metric_readers=[expected_reader]).get_meter("m").create_histogram(
            names.SPAN_SIZE, unit="By", explicit_bucket_boundaries_advisory=BUCKETS)
        for span in spans.get_finished_spans():
            expected.record(span.attributes["alloc.bytes"], {names.SPAN_NAME: span.name})
        got = [p[:-1] for p in _points(reader) if p[0] == names.SPAN_SIZE]
        want = [p[:-1] for p in _points(expected_reader)]
        assert len(got) == 2 and got == want  # exemplars aside: only the largest span has one
        processor.shutdown()
    finally:
        otel_alloc.uninstall()
