"""The setups teams write: several processors and providers, limits, old SDKs."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import otel_alloc
from otel_alloc import AllocationSpanProcessor, tracker
from otel_alloc.otel import sdk_compat
from otel_alloc.otel.instrumentor import AllocationInstrumentor
from tests.unit.conftest import OBJ, RAW, Helper
from tests.unit.otel.test_processor import SETUPS, Pipeline

needs_on_ending = pytest.mark.skipif(
    not sdk_compat.SDK_CALLS_ON_ENDING,
    reason="this opentelemetry-sdk has no _on_ending (test_old_sdk_beside_exporter_warns_once)")


def _attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


@needs_on_ending
def test_two_processors_on_one_provider_share_groups_and_leak_none(helper: Helper) -> None:
    """The reported case: 2,000 spans, 64 groups, two allocation processors."""
    otel_alloc.install("counts", max_groups=64)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    first = AllocationSpanProcessor()
    provider.add_span_processor(first)
    provider.add_span_processor(AllocationSpanProcessor(SimpleSpanProcessor(exporter)))
    tracer = provider.get_tracer("test")
    for i in range(2000):
        with tracer.start_as_current_span(f"s{i % 7}"):
            helper.alloc_many(OBJ, 500, 4)
    spans = exporter.get_finished_spans()
    assert len(spans) == 2000
    assert all(2000 <= _attrs(s)["alloc.bytes"] < 2000 + 8192 for s in spans)
    assert otel_alloc.counters().groups_open == 0
    assert otel_alloc.counters().groups_dropped == 0
    assert first.open_spans == 0
    provider.shutdown()
    otel_alloc.uninstall()


def test_wrapped_processor_gets_on_ending(tracker_counts: None) -> None:
    seen: list[str] = []

    class Recorder(SpanProcessor):
        def _on_ending(self, span: Span) -> None:
            seen.append("ending:" + span.name)

        def on_end(self, span: ReadableSpan) -> None:
            seen.append("end:" + span.name)

    provider = TracerProvider()
    provider.add_span_processor(AllocationSpanProcessor(Recorder()))
    with provider.get_tracer("t").start_as_current_span("op"):
        pass
    expected = ["ending:op", "end:op"] if sdk_compat.SDK_CALLS_ON_ENDING else ["end:op"]
    assert seen == expected
    provider.shutdown()


def test_wrapped_on_start_is_called_with_the_parent_context(tracker_counts: None) -> None:
    seen: list[tuple[str, object]] = []

    class Recorder(SpanProcessor):
        def on_start(self, span: Span, parent_context: Any = None) -> None:
            seen.append((span.name, parent_context))

    provider = TracerProvider()
    provider.add_span_processor(AllocationSpanProcessor(Recorder()))
    marker = object()
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("outer"):
        pass
    from opentelemetry.context import Context

    parent = Context({"marker": marker})
    tracer.start_span("inner", context=parent).end()
    assert [name for name, _ in seen] == ["outer", "inner"]
    assert seen[1][1] is parent
    provider.shutdown()


def test_the_sdk_export_processors_do_nothing_on_start_and_ending() -> None:
    """Their on_start and _on_ending are not called (a Python call each, per span)."""
    for processor in (SimpleSpanProcessor(InMemorySpanExporter()),
                      BatchSpanProcessor(InMemorySpanExporter())):
        on_start, on_ending, on_end = sdk_compat.forwarded(processor)
        assert on_start is None and on_ending is None
        assert on_end == processor.on_end
        processor.shutdown()
    assert sdk_compat.forwarded(None) == (None, None, None)


def test_only_methods_that_do_nothing_are_skipped() -> None:
    class Busy(SpanProcessor):
        def __init__(self) -> None:
            self.calls = 0

        def on_start(self, span: Any, parent_context: Any = None) -> None:
            self.calls += 1

        def _on_ending(self, span: Any) -> None:
            """A docstring, then work."""
            self.calls += 1

    class Quiet(SpanProcessor):
        def on_start(self, span: Any, parent_context: Any = None) -> None:
            """Only a docstring."""

        def _on_ending(self, span: Any) -> None:
            return None

    class WrongShape(SpanProcessor):
        def on_start(self, span: Any) -> None:  # type: ignore[override]
            pass  # called with parent_context=: raises, and the error is reported

    class Yields(SpanProcessor):
        def on_start(self, span: Any, parent_context: Any = None) -> Any:  # type: ignore[override]
            return
            yield  # a generator: calling it does make one

    busy = sdk_compat.forwarded(Busy())
    assert busy[0] is not None
    assert busy[1] is not None or not sdk_compat.SDK_CALLS_ON_ENDING
    assert sdk_compat.forwarded(Quiet())[:2] == (None, None)
    assert sdk_compat.forwarded(WrongShape())[0] is not None
    assert sdk_compat.forwarded(Yields())[0] is not None
    assert not sdk_compat.does_nothing(len)  # a builtin: no code to read
    assert not sdk_compat.does_nothing(lambda: None)  # not a bound method


@needs_on_ending
@pytest.mark.parametrize("order", ["ours-first", "exporter-first"])
def test_attribute_limit_is_respected_and_drops_counted(tracker_counts: None, order: str) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(span_limits=SpanLimits(max_span_attributes=3))
    ours = AllocationSpanProcessor()
    export = SimpleSpanProcessor(exporter)
    for p in ((ours, export) if order == "ours-first" else (export, ours)):
        provider.add_span_processor(p)
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("full") as span:
        span.set_attribute("app.a", 1)
        span.set_attribute("app.b", 2)
    with tracer.start_as_current_span("room") as span:
        span.set_attribute("app.a", 1)
    exported = {s.name: s for s in exporter.get_finished_spans()}
    full, room = exported["full"], exported["room"]
    # The app's attributes are never evicted; ours fill what is left.
    assert _attrs(full) == {"app.a": 1, "app.b": 2, "alloc.bytes": _attrs(full)["alloc.bytes"]}
    # alloc.count, alloc.inclusive_bytes (and alloc.native_bytes in native mode)
    native = 1 if tracker.native_enabled() else 0
    assert full.dropped_attributes == 2 + native
    assert set(_attrs(room)) == {"app.a", "alloc.bytes", "alloc.count"}
    assert room.dropped_attributes == 1 + native
    assert ours.attributes_dropped == 3 + 2 * native
    provider.shutdown()


@needs_on_ending
def test_attributes_reach_an_ordered_mapping_in_order(tracker_counts: None) -> None:
    """Older SDKs turn a span's attribute dict into an OrderedDict at their
    limit; keys added there with the plain-dict call were counted by len()
    but never iterated, so no exporter saw them."""
    from collections import OrderedDict

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(AllocationSpanProcessor(SimpleSpanProcessor(exporter)))
    with provider.get_tracer("t").start_as_current_span("ordered") as span:
        span.set_attribute("app.a", 1)
        span._attributes._dict = OrderedDict(span._attributes._dict)  # type: ignore[attr-defined]
    (done,) = exporter.get_finished_spans()
    keys = list(done.attributes or {})
    assert keys[0] == "app.a" and {"alloc.bytes", "alloc.count"} <= set(keys)
    assert len(keys) == len(done.attributes or {})
    provider.shutdown()


@needs_on_ending
def test_several_providers_in_one_process(tracker_counts: None, helper: Helper) -> None:
    exporters = [InMemorySpanExporter(), InMemorySpanExporter()]
    providers = []
    for i, exporter in enumerate(exporters):
        provider = TracerProvider()
        if i == 0:
            provider.add_span_processor(AllocationSpanProcessor())
            provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=50))
        else:
            provider.add_span_processor(AllocationSpanProcessor(SimpleSpanProcessor(exporter)))
        providers.append(provider)
    outer_tracer, inner_tracer = (p.get_tracer("t") for p in providers)
    with outer_tracer.start_as_current_span("outer"):
        helper.alloc_many(RAW, 10_000, 20)
        with inner_tracer.start_as_current_span("inner"):
            helper.alloc_many(OBJ, 300, 1000)
    for p in providers:
        p.force_flush()
    (outer,) = exporters[0].get_finished_spans()
    (inner,) = exporters[1].get_finished_spans()
    assert 200_000 <= _attrs(outer)["alloc.bytes"] < 200_000 + 16_384
    assert 300_000 <= _attrs(inner)["alloc.bytes"] < 300_000 + 16_384
    assert otel_alloc.counters().groups_open == 0
    for p in providers:
        p.shutdown()


@needs_on_ending
def test_instrumentor_beside_a_hand_added_processor(tracker_counts: None, helper: Helper,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_ALLOC_ENABLED", "true")
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=50))
    hand_added = AllocationSpanProcessor()
    provider.add_span_processor(hand_added)
    instrumentor = AllocationInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        tracer = provider.get_tracer("t")
        for _ in range(50):
            with tracer.start_as_current_span("job"):
                helper.alloc_many(OBJ, 1000, 10)
        provider.force_flush()
        spans = exporter.get_finished_spans()
        assert len(spans) == 50
        assert all(10_000 <= _attrs(s)["alloc.bytes"] < 10_000 + 8192 for s in spans)
        assert otel_alloc.counters().groups_open == 0
    finally:
        instrumentor.uninstrument()
        provider.shutdown()


def test_old_sdk_beside_exporter_warns_once(tracker_counts: None, monkeypatch: pytest.MonkeyPatch,
                                            caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(sdk_compat, "SDK_CALLS_ON_ENDING", False)
    monkeypatch.setattr(sdk_compat, "_route_warned", False)
    with caplog.at_level(logging.WARNING, logger="otel_alloc"):
        AllocationSpanProcessor().shutdown()
        AllocationSpanProcessor().shutdown()
        AllocationSpanProcessor(SimpleSpanProcessor(InMemorySpanExporter())).shutdown()
    warnings = [r.getMessage() for r in caplog.records if "_on_ending" in r.getMessage()]
    assert len(warnings) == 1
    assert "AllocationSpanProcessor(BatchSpanProcessor(exporter))" in warnings[0]


@pytest.mark.parametrize("mode", ["counts", "live"])
# Two allocation processors would each record the span's bytes in the metrics.
@pytest.mark.parametrize("form", [s for s in SETUPS if s != "two-processors"])
def test_span_attributes_off_leaves_spans_alone_and_keeps_metrics(
        helper: Helper, mode: str, form: str) -> None:
    """``span_attributes=False``: no ``alloc.*`` attribute on any exported
    span, in every form, while the span's bytes still reach the metrics."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    otel_alloc.install(mode)
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    pipe = Pipeline(mode, "simple", form, span_attributes=False, meter_provider=meters)
    try:
        with pipe.tracer.start_as_current_span("work", attributes={"app": 1}):
            helper.alloc_many(OBJ, 1000, 100)
        pipe.provider.force_flush()
        (span,) = pipe.exporter.get_finished_spans()
        assert _attrs(span) == {"app": 1}
        meters.force_flush()
        data = reader.get_metrics_data()
        points = [p for rm in data.resource_metrics for sm in rm.scope_metrics
                  for m in sm.metrics if m.name == "python.alloc.allocated"
                  for p in m.data.data_points if p.attributes.get("span.name") == "work"]
        assert len(points) == 1 and 100_000 <= points[0].value < 100_000 + 16_384
    finally:
        pipe.provider.shutdown()
        meters.shutdown()
        otel_alloc.uninstall()


def test_span_attributes_off_is_no_reason_to_warn_of_an_old_sdk(
        tracker_counts: None, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(sdk_compat, "SDK_CALLS_ON_ENDING", False)
    monkeypatch.setattr(sdk_compat, "_route_warned", False)
    with caplog.at_level(logging.WARNING, logger="otel_alloc"):
        AllocationSpanProcessor(span_attributes=False).shutdown()
    assert not [r for r in caplog.records if "_on_ending" in r.getMessage()]
