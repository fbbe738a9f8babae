"""The C span path (otel_alloc._spanctx): record queue, runtime-context stand-in, errors."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.context.context import Context
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import otel_alloc
from otel_alloc import AllocationSpanProcessor, _core
from otel_alloc._spanctx import FollowingContext
from tests.unit.conftest import OBJ, Helper


def _tracer(processor: SpanProcessor) -> trace.Tracer:
    provider = TracerProvider()
    provider.add_span_processor(processor)
    return provider.get_tracer("test")


class _Direct(SpanProcessor):
    """Hands spans to a bare SpanPath (no processor around it)."""

    def __init__(self, path: Any) -> None:
        self.path = path

    def on_start(self, span: Any, parent_context: Context | None = None) -> None:
        self.path.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        self.path.on_end(span)


def _bare_path(records: Any, groups: dict[Any, int], failures: list[str]) -> Any:
    return _core.SpanPath(
        groups=groups, open={}, by_gid={}, records=records, next=None, live=False,
        overflowed=lambda: -1, failed=lambda where, error: failures.append(where),
        wake=lambda: None, live_end=lambda *args: None, with_figures=lambda s, f, live: s,
        note_thread=None)


def test_record_queue_is_bounded_and_ordered() -> None:
    otel_alloc.install("counts")
    try:
        records = _core.SpanRecords(3)
        groups: dict[Any, int] = {}
        failures: list[str] = []
        tracer = _tracer(_Direct(_bare_path(records, groups, failures)))
        ids = []
        for i in range(5):
            with tracer.start_as_current_span(f"s{i}") as span:
                ids.append(span.get_span_context().span_id)
        assert len(records) == 3
        assert records.dropped == 2
        drained = records.drain()
        assert [r[0] for r in drained] == ["s0", "s1", "s2"]
        assert [r[2] for r in drained] == ids[:3]
        assert len(records) == 0 and records.drain() == []
        # A span whose group id went stale (released) queues nothing.
        with tracer.start_as_current_span("stale") as span:
            _core.group_release(groups[span])
        assert len(records) == 0
        assert failures == []
    finally:
        otel_alloc.uninstall()


def test_records_reach_sinks(helper: Helper) -> None:
    otel_alloc.install("counts")
    try:
        seen: list[Any] = []

        class Sink:
            def on_span(self, record: Any) -> None:
                seen.append(record)

            def shutdown(self) -> None:
                pass

        processor = AllocationSpanProcessor(SimpleSpanProcessor(InMemorySpanExporter()),
                                            sinks=[Sink()])
        tracer = _tracer(processor)
        with tracer.start_as_current_span("measured"):
            helper.alloc_many(OBJ, 1000, 20)
        processor.force_flush()
        (record,) = [r for r in seen if r.name == "measured"]
        assert record.bytes >= 20_000
        assert record.span_id != 0 and record.trace_id != 0
        assert processor.records_dropped == 0
        processor.shutdown()
    finally:
        otel_alloc.uninstall()


def test_span_path_never_raises_from_a_broken_next_processor() -> None:
    otel_alloc.install("counts")
    try:
        class Broken(SpanProcessor):
            def on_start(self, span: Any, parent_context: Context | None = None) -> None:
                raise RuntimeError("on_start broke")

            def on_end(self, span: ReadableSpan) -> None:
                raise RuntimeError("on_end broke")

        processor = AllocationSpanProcessor(Broken())
        tracer = _tracer(processor)
        with tracer.start_as_current_span("survives"):
            pass
        assert processor.errors == 2
        assert processor.open_spans == 0
        processor.shutdown()
        processor.shutdown()
    finally:
        otel_alloc.uninstall()


def test_following_context_calls_through_another_runtime_context(helper: Helper) -> None:
    """A runtime context that is not OTel's ContextVars one is called, not bypassed."""
    otel_alloc.install("counts")
    calls: list[str] = []
    var: ContextVar[Context] = ContextVar("other")
    var.set(Context())

    class Other:
        def attach(self, context: Context) -> object:
            calls.append("attach")
            return var.set(context)

        def detach(self, token: Any) -> None:
            calls.append("detach")
            var.reset(token)

        def get_current(self) -> Context:
            return var.get()

    groups: dict[object, int] = {}
    stand_in = FollowingContext(inner=Other(), context_var=None, span_key=None,
                                span_getter=trace.get_current_span, groups=groups,
                                group_var=otel_alloc.tracker.CURRENT_GROUP)
    try:
        group = otel_alloc.Group()
        span = trace.NonRecordingSpan(trace.INVALID_SPAN_CONTEXT)
        groups[span] = group.id
        token = stand_in.attach(trace.set_span_in_context(span))
        helper.alloc_many(OBJ, 1000, 10)
        stand_in.detach(token)
        helper.alloc_many(OBJ, 1000, 10)
        assert calls == ["attach", "detach"]
        assert 10_000 <= group.stats().alloc_bytes < 12_000
        assert stand_in.errors == 0
    finally:
        otel_alloc.uninstall()


def test_span_path_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="capacity"):
        _core.SpanRecords(0)
    with pytest.raises(TypeError):
        _bare_path(object(), {}, [])
