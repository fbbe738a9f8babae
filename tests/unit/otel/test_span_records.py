"""The ended-span queue (``_spanpath.SpanRecords``): bounds, order, sums per name, sampled
sizes, the recent-span index, sinks, and a take within a take."""

from __future__ import annotations

from collections import Counter
from typing import Any, ClassVar

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import otel_alloc
from otel_alloc import AllocationSpanProcessor, tracker
from otel_alloc.otel import _spanpath
from otel_alloc.otel import context_follower as attribution
from tests.unit.conftest import OBJ, Helper
from tests.unit.otel.span_path_helpers import DirectProcessor, bare_span_path, tracer_for


def _names(whole: list[tuple[Any, ...]]) -> list[str]:
    return [str(record[0]) for record in whole]


@pytest.mark.usefixtures("tracker_counts")
def test_order_holds_across_partial_takes_wraps_and_drains() -> None:
    """A take leaves the rest in order; a drained queue starts over at the
    ring's beginning, which must not reorder or lose what comes next."""
    records = _spanpath.SpanRecords(5)
    tracer = tracer_for(DirectProcessor(bare_span_path(records, None, [])))
    made = 0

    def end_spans(n: int) -> None:
        nonlocal made
        for _ in range(n):
            with tracer.start_as_current_span(f"s{made}"):
                pass
            made += 1

    end_spans(3)
    assert _names(records.take(2, True)[1]) == ["s0", "s1"]
    end_spans(4)  # past the ring's end: s5 and s6 wrap to its start
    assert len(records) == 5
    assert _names(records.take(3, True)[1]) == ["s2", "s3", "s4"]
    assert _names(records.take(100, True)[1]) == ["s5", "s6"]
    for _ in range(3):  # drained each time, then filled to capacity
        first = made
        end_spans(5)
        assert _names(records.take(100, True)[1]) == [f"s{i}" for i in range(first, made)]
    end_spans(6)
    assert records.dropped == 1
    assert _names(records.take(100, True)[1]) == [f"s{i}" for i in range(made - 6, made - 1)]
    assert len(records) == 0


@pytest.mark.usefixtures("tracker_counts")
def test_a_batch_of_many_names_sums_each_name() -> None:
    """More names in one batch than the sums start with room for (16)."""
    records = _spanpath.SpanRecords(1000)
    tracer = tracer_for(DirectProcessor(bare_span_path(records, None, [])))
    names = [f"n{i}" for i in range(40)]
    for _ in range(3):
        for name in names:
            with tracer.start_as_current_span(name):
                pass
    sums, whole = records.take(1000, True)
    assert [s[0] for s in sums] == names  # first seen first
    for name, total, count, _trace, _span, sizes, _native in sums:
        mine = [r for r in whole if r[0] == name]
        assert len(mine) == 3 and sum(sizes.values()) == 3
        assert total == sum(r[4] for r in mine) and count == sum(r[5] for r in mine)
        assert sizes == Counter(r[4] for r in mine)


class _TakesOnHash(str):
    """A span name whose hash takes the queue's remaining records, as a
    finalizer or another thread could while a take makes Python objects."""

    records: ClassVar[Any] = None
    taken: ClassVar[list[Any]] = []

    def __hash__(self) -> int:
        if self.records is not None and len(self.records):
            self.taken.append(self.records.take(100, True))
        return str.__hash__(self)


@pytest.mark.usefixtures("tracker_counts")
def test_a_take_that_runs_while_another_is_making_its_objects() -> None:
    """The inner take cannot use the batch the outer one is still reading."""
    records = _spanpath.SpanRecords(10)
    tracer = tracer_for(DirectProcessor(bare_span_path(records, None, [])))
    first = _TakesOnHash("first")
    for name in (first, "second", "third", "fourth"):
        with tracer.start_as_current_span(name):
            pass
    _TakesOnHash.records = records
    _TakesOnHash.taken = []
    try:
        sums, whole = records.take(2, True)
    finally:
        _TakesOnHash.records = None
    assert _names(whole) == ["first", "second"]
    assert [s[0] for s in sums] == ["first", "second"]
    assert len(_TakesOnHash.taken) == 1
    inner_sums, inner_whole = _TakesOnHash.taken[0]
    assert _names(inner_whole) == ["third", "fourth"]
    assert [s[0] for s in inner_sums] == ["third", "fourth"]
    assert len(records) == 0
    # The kept batch is free again: the next take uses it.
    with tracer.start_as_current_span("fifth"):
        pass
    assert _names(records.take(10, True)[1]) == ["fifth"]


@pytest.mark.usefixtures("tracker_counts")
def test_a_long_queue_wakes_the_watch_thread_once() -> None:
    """At ``wake_at`` (8,192) queued records the span path asks for the watch
    thread (left to its timer, the queue walked megabytes of fresh pages);
    once per time the queue grows to that length, not on every span after it."""
    records = _spanpath.SpanRecords(20_000)
    wake_at = records.wake_at
    assert wake_at == 8192
    wakes: list[int] = []
    failures: list[str] = []
    tracer = tracer_for(DirectProcessor(bare_span_path(
        records, None, failures, wake=lambda: wakes.append(len(records)))))

    def end(n: int) -> None:
        for _ in range(n):
            with tracer.start_as_current_span("s"):
                pass

    end(wake_at - 1)
    assert wakes == []
    end(1)
    assert wakes == [wake_at]
    end(3000)
    assert wakes == [wake_at]
    records.take(20_000, False)
    end(wake_at)
    assert wakes == [wake_at, wake_at]
    assert failures == []


@pytest.mark.usefixtures("tracker_counts")
def test_record_queue_is_bounded_and_ordered() -> None:
    records = _spanpath.SpanRecords(3)
    groups = _spanpath.SpanIndex(by_identity=True)
    failures: list[str] = []
    tracer = tracer_for(DirectProcessor(bare_span_path(records, groups, failures)))
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


@pytest.mark.usefixtures("tracker_counts")
def test_take_sums_per_name_with_the_largest_span_first(helper: Helper) -> None:
    records = _spanpath.SpanRecords(100)
    # The runtime-context stand-in charges a span's allocations to the
    # group it finds in the registry.
    attribution.install_context_hook()
    registry = attribution.span_registry()
    tracer = tracer_for(DirectProcessor(bare_span_path(records, registry, [])))
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
    # {size: spans}, the largest (the exemplar's) first.
    assert list(each_bytes.values()) == [1, 1, 1] and next(iter(each_bytes)) == max(each_bytes)
    assert total == sum(each_bytes) and count >= 3
    # Each span: its exact size plus the little the SDK allocates while it is current.
    for got, want in zip(sorted(each_bytes), sorted(sizes["a"]), strict=True):
        assert want <= got < want + 512
    assert span_id == largest["a"] and trace_id != 0
    assert by_name["b"][4] == largest["b"]
    # Whole records: only spans of at least the threshold (4000 bytes).
    assert [(r[0], r[2]) for r in whole] == [("a", largest["a"])]
    assert records.take(100, False, 0) == ([], [])


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
        tracer = tracer_for(DirectProcessor(bare_span_path(records, groups, [])))
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


@pytest.mark.usefixtures("tracker_counts")
def test_records_reach_sinks(helper: Helper) -> None:
    seen: list[Any] = []

    class Sink:
        def on_span(self, record: Any) -> None:
            seen.append(record)

        def shutdown(self) -> None:
            pass

    processor = AllocationSpanProcessor(SimpleSpanProcessor(InMemorySpanExporter()),
                                        sinks=[Sink()])
    tracer = tracer_for(processor)
    with tracer.start_as_current_span("measured"):
        helper.alloc_many(OBJ, 1000, 20)
    processor.force_flush()
    (record,) = [r for r in seen if r.name == "measured"]
    assert record.bytes >= 20_000
    assert record.span_id != 0 and record.trace_id != 0
    assert processor.records_dropped == 0
    processor.shutdown()


@pytest.mark.usefixtures("tracker_counts")
def test_take_samples_span_sizes_at_a_rate_and_keeps_sums_exact(helper: Helper) -> None:
    records = _spanpath.SpanRecords(5000)
    tracer = tracer_for(DirectProcessor(bare_span_path(records, None, [])))

    def spans(n: int) -> None:
        for _ in range(n):
            with tracer.start_as_current_span("s"):
                pass

    spans(2000)
    (everything,), _ = records.take(5000)
    assert sum(everything[5].values()) == 2000
    spans(2000)
    (none,), _ = records.take(5000, rate=0.0)
    assert none[5] == {} and none[2] == everything[2]  # same allocations counted
    spans(2000)
    (some,), _ = records.take(5000, rate=0.25)
    assert 400 <= sum(some[5].values()) <= 600  # 500 expected; this is over 6 sigma wide
    assert some[1] == everything[1] and some[2] == everything[2]
    with pytest.raises(ValueError, match="rate"):
        records.take(1, rate=1.5)


@pytest.mark.usefixtures("tracker_counts")
def test_span_size_sample_rate_reaches_the_histogram(helper: Helper) -> None:
    """With a real MeterProvider: rate 0 records no histogram point, counters stay exact."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    def run(rate: float) -> tuple[int, int]:
        reader = InMemoryMetricReader()
        processor = AllocationSpanProcessor(
            meter_provider=MeterProvider(metric_readers=[reader]), span_size_sample_rate=rate,
            events=False, sample_bytes=0)
        tracer = tracer_for(processor)
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

    count, allocated = run(1.0)
    assert count == 50 and allocated >= 50 * 4000
    count, allocated = run(0.0)
    assert count == 0 and allocated >= 50 * 4000
    with pytest.raises(otel_alloc.ConfigError, match=r"span_size_sample_rate.*<= 1"):
        AllocationSpanProcessor(span_size_sample_rate=2)
