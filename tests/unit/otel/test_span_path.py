"""The C span path (otel_alloc.otel._spanpath): record queue, runtime-context stand-in, errors."""

from __future__ import annotations

import threading
import time
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
from otel_alloc.otel import context_follower as attribution
from otel_alloc.otel._spanpath import ContextFollower
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


def _bare_path(records: Any, groups: dict[Any, int], failures: list[str], live: int = 0) -> Any:
    return _spanpath.SpanPath(
        groups=groups, holders={}, open={}, by_gid={}, records=records, next_on_start=None,
        next_on_ending=None, next_on_end=None, live=live, overflowed=lambda: -1,
        failed=lambda where, error: failures.append(where), wake=lambda: None,
        live_end=lambda *args: None, with_figures=lambda s, f, live: s, note_thread=None)


def test_record_queue_is_bounded_and_ordered() -> None:
    otel_alloc.install("counts")
    try:
        records = _spanpath.SpanRecords(3)
        groups: dict[Any, int] = {}
        failures: list[str] = []
        tracer = _tracer(_Direct(_bare_path(records, groups, failures)))
        ids = []
        for i in range(5):
            with tracer.start_as_current_span(f"s{i}") as span:
                ids.append(span.get_span_context().span_id)
        assert len(records) == 3
        assert records.dropped == 2
        sums, whole = records.take(100, True)
        assert [r[0] for r in whole] == ["s0", "s1", "s2"]
        assert [r[2] for r in whole] == ids[:3]
        assert [s[0] for s in sums] == ["s0", "s1", "s2"]
        assert len(records) == 0 and records.take(100, True) == ([], [])
        # A span whose group id went stale (released) queues nothing.
        with tracer.start_as_current_span("stale") as span:
            tracker.release_group(groups[span])
        assert len(records) == 0
        assert failures == []
    finally:
        otel_alloc.uninstall()


def test_take_sums_per_name_with_the_largest_span_first(helper: Helper) -> None:
    otel_alloc.install("counts")
    try:
        records = _spanpath.SpanRecords(100)
        # The runtime-context stand-in charges a span's allocations to the
        # group it finds in the registry.
        attribution.install_context_hook()
        tracer = _tracer(_Direct(_bare_path(records, attribution.span_registry(), [])))
        sizes = {"a": [1000, 5000, 3000], "b": [2000]}
        largest: dict[str, int] = {}
        for _ in range(3):  # first calls pay for one-time set-up (SDK, cffi)
            with tracer.start_as_current_span("a"):
                helper.alloc_many(OBJ, 8, 1)
        records.take(100)
        for name, each in (("a", 1000), ("b", 2000), ("a", 5000), ("a", 3000)):
            with tracer.start_as_current_span(name) as span:
                helper.alloc_many(OBJ, each, 1)
            if each == max(sizes[name]):
                largest[name] = span.get_span_context().span_id
        sums, whole = records.take(100, False, 4000)
        by_name = {s[0]: s for s in sums}
        assert set(by_name) == {"a", "b"}
        name, total, count, trace_id, span_id, each_bytes, native_bytes = by_name["a"]
        assert native_bytes == 0  # the helper allocates through PyMem only
        assert len(each_bytes) == 3 and each_bytes[0] == max(each_bytes)
        assert total == sum(each_bytes) and count >= 3
        # Each span: its exact size plus the little the SDK allocates while it is current.
        for got, want in zip(sorted(each_bytes), sorted(sizes["a"]), strict=True):
            assert want <= got < want + 512
        assert span_id == largest["a"] and trace_id != 0
        assert by_name["b"][4] == largest["b"]
        # Whole records: only spans of at least the threshold (4000 bytes).
        assert [(r[0], r[2]) for r in whole] == [("a", largest["a"])]
        assert records.take(100, False, 0) == ([], [])
    finally:
        otel_alloc.uninstall()


def test_recently_ended_spans_by_group_id(helper: Helper) -> None:
    """Ended spans that an event or sample names are remembered, the last `recent` of them.

    Here every other span makes one allocation over the event threshold; the
    queue (10 records) is full almost at once, which does not matter.
    """
    otel_alloc.install("counts", threshold_bytes="64KiB")
    try:
        records = _spanpath.SpanRecords(10, recent=64)
        attribution.install_context_hook()
        groups = attribution.span_registry()
        noted: list[tuple[int, str, int]] = []
        quiet: list[int] = []
        tracer = _tracer(_Direct(_bare_path(records, groups, [])))
        for i in range(1000):  # many evictions: exercises deletion from the index
            with tracer.start_as_current_span(f"s{i}") as span:
                gid = groups[span]
                if i % 2 == 0:
                    helper.alloc_many(OBJ, 100_000, 1)
            if i % 2 == 0:
                noted.append((gid, f"s{i}", span.get_span_context().span_id))
            else:
                quiet.append(gid)
        assert records.dropped > 900
        assert records.recent == 64
        for gid, name, span_id in noted[-64:]:
            found = records.lookup(gid)
            assert found is not None and found[0] == name and found[2] == span_id
        assert all(records.lookup(gid) is None for gid, _, _ in noted[:-64])
        assert all(records.lookup(gid) is None for gid in quiet)
        assert records.lookup(0) is None
        records.clear()
        assert records.recent == 0 and records.lookup(noted[-1][0]) is None
        assert len(records) == 0
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
    stand_in = ContextFollower(inner=Other(), context_var=None, span_key=None,
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
        _spanpath.SpanRecords(0)
    with pytest.raises(TypeError):
        _bare_path(object(), {}, [])
    for live in (-1, 3):
        with pytest.raises(ValueError, match="live must be 0, 1 or 2"):
            _bare_path(_spanpath.SpanRecords(1), {}, [], live)


def test_live_mode_keeps_only_groups_holding_enough_live_bytes(helper: Helper) -> None:
    """The keep-or-release decision at span end is made in C from the span's live bytes."""
    otel_alloc.install("live")
    try:
        processor = AllocationSpanProcessor(leak_min_bytes="64KiB", leak_grace_seconds=60,
                                            metrics=False, events=False, sample_bytes=0)
        tracer = _tracer(processor)
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


def test_take_samples_span_sizes_at_a_rate_and_keeps_sums_exact(helper: Helper) -> None:
    otel_alloc.install("counts")
    try:
        records = _spanpath.SpanRecords(5000)
        tracer = _tracer(_Direct(_bare_path(records, {}, [])))

        def spans(n: int) -> None:
            for _ in range(n):
                with tracer.start_as_current_span("s"):
                    pass

        spans(2000)
        (everything,), _ = records.take(5000)
        assert len(everything[5]) == 2000
        spans(2000)
        (none,), _ = records.take(5000, rate=0.0)
        assert none[5] == [] and none[2] == everything[2]  # same allocations counted
        spans(2000)
        (some,), _ = records.take(5000, rate=0.25)
        assert 400 <= len(some[5]) <= 600  # 500 expected; this is over 6 sigma wide
        assert some[1] == everything[1] and some[2] == everything[2]
        with pytest.raises(ValueError, match="rate"):
            records.take(1, rate=1.5)
    finally:
        otel_alloc.uninstall()


def test_span_size_sample_rate_reaches_the_histogram(helper: Helper) -> None:
    """With a real MeterProvider: rate 0 records no histogram point, counters stay exact."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    def run(rate: float) -> tuple[int, int]:
        reader = InMemoryMetricReader()
        processor = AllocationSpanProcessor(
            meter_provider=MeterProvider(metric_readers=[reader]), span_size_sample_rate=rate,
            events=False, sample_bytes=0)
        tracer = _tracer(processor)
        for _ in range(50):
            with tracer.start_as_current_span("sized"):
                helper.alloc_many(OBJ, 1000, 4)
        processor.force_flush()
        data = reader.get_metrics_data()
        assert data is not None
        found = {m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics
                 for m in sm.metrics}
        allocated = sum(p.value for p in found["python.alloc.allocated"].data.data_points)
        size = found.get("python.alloc.span.size")
        count = sum(p.count for p in size.data.data_points) if size is not None else 0
        processor.shutdown()
        return count, allocated

    otel_alloc.install("counts")
    try:
        count, allocated = run(1.0)
        assert count == 50 and allocated >= 50 * 4000
        count, allocated = run(0.0)
        assert count == 0 and allocated >= 50 * 4000
        with pytest.raises(otel_alloc.ConfigError, match=r"span_size_sample_rate.*<= 1"):
            AllocationSpanProcessor(span_size_sample_rate=2)
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
        path = _bare_path(records, {}, [])
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
