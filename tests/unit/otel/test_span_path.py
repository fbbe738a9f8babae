"""The C span path (otel_alloc.otel._spanpath): runtime-context stand-in, span reads,
attributes, errors."""

from __future__ import annotations

import threading
import time
from collections import Counter
from contextvars import ContextVar
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.context.context import Context
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import otel_alloc
from otel_alloc import AllocationSpanProcessor, tracker
from otel_alloc.otel import _spanpath
from otel_alloc.otel._spanpath import ContextFollower
from tests.unit.conftest import OBJ, Helper
from tests.unit.otel.span_path_helpers import bare_span_path, tracer_for


def test_span_path_never_raises_from_a_broken_next_processor() -> None:
    otel_alloc.install("counts")
    try:
        class Broken(SpanProcessor):
            def on_start(self, span: Any, parent_context: Context | None = None) -> None:
                raise RuntimeError("on_start broke")

            def on_end(self, span: ReadableSpan) -> None:
                raise RuntimeError("on_end broke")

        processor = AllocationSpanProcessor(Broken())
        tracer = tracer_for(processor)
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

    groups = _spanpath.SpanIndex(by_identity=True)
    stand_in = ContextFollower(inner=Other(), context_var=None, span_key=None,
                                span_getter=trace.get_current_span, groups=groups,
                                group_var=otel_alloc.tracker.CURRENT_GROUP)
    try:
        group = otel_alloc.Group()
        span = trace.NonRecordingSpan(trace.INVALID_SPAN_CONTEXT)
        groups[span] = group.id
        token = stand_in.attach(trace.set_span_in_context(span))
        # Read in C around the loop alone: the interpreter's own upkeep in
        # between (a dict resized now and then, on 3.13) is not counted.
        attached = helper.alloc_measured(OBJ, 1000, 10, group.id)
        stand_in.detach(token)
        detached = helper.alloc_measured(OBJ, 1000, 10, group.id)
        assert calls == ["attach", "detach"]
        assert attached[:2] == (10_000, 10)
        assert detached[:2] == (0, 0)
        assert stand_in.errors == 0
    finally:
        otel_alloc.uninstall()


def test_span_path_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="capacity"):
        _spanpath.SpanRecords(0)
    with pytest.raises(TypeError):
        bare_span_path(object(), None, [])
    for live in (-1, 3):
        with pytest.raises(ValueError, match="live must be 0, 1 or 2"):
            bare_span_path(_spanpath.SpanRecords(1), None, [], live)


def test_live_mode_keeps_only_groups_holding_enough_live_bytes(helper: Helper) -> None:
    """The keep-or-release decision at span end is made in C from the span's live bytes."""
    otel_alloc.install("live")
    try:
        processor = AllocationSpanProcessor(leak_min_bytes="64KiB", leak_grace_seconds=60,
                                            metrics=False, events=False, sample_bytes=0)
        tracer = tracer_for(processor)
        before = otel_alloc.counters().groups_open
        with tracer.start_as_current_span("frees"):
            helper.free_many(OBJ, helper.alloc_many(OBJ, 1000, 100, keep=True), 100)
        assert otel_alloc.counters().groups_open == before  # released at once
        with tracer.start_as_current_span("keeps"):
            kept = helper.alloc_many(OBJ, 1000, 100, keep=True)
        assert otel_alloc.counters().groups_open == before + 1  # watched for a leak
        helper.free_many(OBJ, kept, 100)
        processor.shutdown()
    finally:
        otel_alloc.uninstall()


def test_spans_of_other_types_are_read_through_their_properties() -> None:
    """The direct field reads are for the SDK's exact types; others use the public API."""
    otel_alloc.install("counts")
    try:
        class Context2(trace.SpanContext):
            pass

        class OtherSpan:
            def __init__(self) -> None:
                self._context = trace.INVALID_SPAN_CONTEXT  # must not be what is read

            @property
            def context(self) -> trace.SpanContext:
                return Context2(trace_id=7, span_id=9, is_remote=False)

            name = "other"
            parent = None
            start_time = 1
            end_time = 2

        records = _spanpath.SpanRecords(10)
        path = bare_span_path(records, None, [])
        span = OtherSpan()
        path.on_start(span)
        path.on_end(span)
        _, (whole,) = records.take(10, True)
        assert whole[:3] == ("other", 7, 9)
        # Native bytes: None when native mode is off, else what the span took.
        assert whole[9:11] == (1, 2)
        if tracker.native_enabled():
            assert isinstance(whole[11], int) and whole[11] >= 0
        else:
            assert whole[11] is None
    finally:
        otel_alloc.uninstall()


def test_the_tracers_own_spans_are_read_without_their_properties(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The spans the SDK's tracer makes (``_Span``) take the direct field reads.

    Their properties are Python functions; through them a span's end cost
    about 600 instructions a field instead of about 100 (callgrind). Every
    property the C path could fall back to counts its calls here, and the
    SDK with no processor of ours is the baseline: ours must add none.
    """
    calls: dict[str, int] = {}
    for name in ("context", "name", "parent", "start_time", "end_time", "attributes"):
        prop = getattr(ReadableSpan, name)

        def counted(self: Any, _get: Any = prop.fget, _name: str = name) -> Any:
            calls[_name] = calls.get(_name, 0) + 1
            return _get(self)

        monkeypatch.setattr(ReadableSpan, name, property(counted))

    def property_calls(processor: SpanProcessor | None) -> dict[str, int]:
        provider = TracerProvider()
        if processor is not None:
            provider.add_span_processor(processor)
        tracer = provider.get_tracer("test")
        calls.clear()
        for _ in range(3):
            with (tracer.start_as_current_span("outer"),
                  tracer.start_as_current_span("inner") as span):
                span.set_attribute("k", 1)
        provider.shutdown()
        return dict(calls)

    baseline = property_calls(None)
    otel_alloc.install("counts")
    try:
        ours = property_calls(AllocationSpanProcessor())
        wrapping = property_calls(AllocationSpanProcessor(SimpleSpanProcessor(
            InMemorySpanExporter())))
        exporter_only = property_calls(SimpleSpanProcessor(InMemorySpanExporter()))
    finally:
        otel_alloc.uninstall()
    assert ours == baseline
    assert wrapping == exporter_only


def _beside_exporter(exporter: InMemorySpanExporter) -> trace.Tracer:
    """A tracer whose provider has the allocation processor beside an export processor."""
    provider = TracerProvider()
    provider.add_span_processor(AllocationSpanProcessor(mode="counts"))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("test")


def _assert_alloc_attributes(exporter: InMemorySpanExporter, *names: str) -> None:
    spans = {s.name: s for s in exporter.get_finished_spans()}
    for name in names:
        attrs = spans[name].attributes or {}
        assert isinstance(attrs.get("alloc.bytes"), int), (name, dict(attrs))


@pytest.mark.skipif(not hasattr(SpanProcessor, "_on_ending"),
                    reason="this opentelemetry-sdk has no _on_ending")
def test_attributes_wait_for_a_reader_holding_their_lock() -> None:
    """A span's alloc.* attributes are written under the mapping's lock.

    With the GIL, a free lock is not taken (no one can take it meanwhile);
    a held one, as a reader mid-``__deepcopy__`` in another thread holds
    it, is waited for: the span's end returns only after the reader lets go.
    """
    exporter = InMemorySpanExporter()
    otel_alloc.install("counts")
    try:
        tracer = _beside_exporter(exporter)
        span = tracer.start_span("locked")
        lock = span._attributes._lock  # type: ignore[attr-defined]
        held, released = threading.Event(), threading.Event()

        def reader() -> None:
            with lock:
                held.set()
                time.sleep(0.3)
                released.set()

        t = threading.Thread(target=reader)
        t.start()
        held.wait(10)
        span.end()
        ended_after_release = released.is_set()
        t.join()
        free = tracer.start_span("free")
        free.end()
    finally:
        otel_alloc.uninstall()
    assert ended_after_release
    _assert_alloc_attributes(exporter, "locked", "free")
    assert lock.acquire(blocking=False)  # left free (a Lock, or an RLock before 1.45)
    lock.release()


@pytest.mark.skipif(not hasattr(SpanProcessor, "_on_ending"),
                    reason="this opentelemetry-sdk has no _on_ending")
def test_attributes_are_written_under_a_reentrant_lock() -> None:
    """SDKs before 1.45 guard the attribute mapping with an ``RLock``.

    Before Python 3.14 it has no ``locked()``, so the write takes it; the
    attributes must arrive either way (they did not, on SDK 1.40, when the
    write gave up on a lock it could not ask).
    """
    exporter = InMemorySpanExporter()
    otel_alloc.install("counts")
    try:
        tracer = _beside_exporter(exporter)
        for name in ("rlock-1", "rlock-2"):
            span = tracer.start_span(name)
            span._attributes._lock = threading.RLock()  # type: ignore[attr-defined]
            span.end()
        plain = tracer.start_span("plain")
        plain.end()
    finally:
        otel_alloc.uninstall()
    _assert_alloc_attributes(exporter, "rlock-1", "rlock-2", "plain")


def test_group_ids_of_two_digits_end_their_spans_exactly(helper: Helper) -> None:
    """The span path reads group ids from the int's digits (compat/long_value.h).

    An id is ``generation << 20 | slot``: with two slots taken in turn,
    about 2,100 spans bring a slot past generation 1,024, where the id no
    longer fits one 30-bit digit. Those spans must still open, follow and
    end their own groups, with the figures the same work had under
    one-digit ids (three 96-byte OBJ blocks and the call's own; now and
    then the interpreter's own upkeep adds a block to one span, so the
    common figures are compared). A misread id leaves a span without
    figures, or charges another group.
    """
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(AllocationSpanProcessor(
        SimpleSpanProcessor(exporter), mode="counts", max_groups=2))
    tracer = provider.get_tracer("test")

    def figures(spans: Any) -> Counter[tuple[object, object]]:
        return Counter(((s.attributes or {}).get("alloc.count"),
                        (s.attributes or {}).get("alloc.bytes")) for s in spans)

    try:
        names = [f"s{i}" for i in range(2_200)]
        for i, name in enumerate(names):
            with tracer.start_as_current_span(name):
                helper.alloc_many(OBJ, 96, 3)
            if i == 299:
                narrow = figures(exporter.get_finished_spans()[100:])
                exporter.clear()
        wide = figures(exporter.get_finished_spans()[-100:])
        (common, spans_with_it), = narrow.most_common(1)
        assert spans_with_it >= 180, narrow  # of 200
        count, size = common
        assert isinstance(count, int) and isinstance(size, int), narrow
        assert count >= 3 and size >= 3 * 96, narrow
        assert wide[common] >= 90, wide  # of 100
        assert all(isinstance(c, int) and c >= count for c, _ in wide), wide
        wide_group = otel_alloc.Group()
        assert wide_group.id >= 1 << 30, wide_group.id  # ids past one digit by now
        wide_group.release()
    finally:
        provider.shutdown()
        otel_alloc.uninstall()
