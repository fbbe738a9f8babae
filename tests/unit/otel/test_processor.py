"""AllocationSpanProcessor: bytes follow the active span."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import otel_alloc
from otel_alloc import AllocationSpanProcessor, tracker
from otel_alloc.otel import sdk_compat
from tests.unit.conftest import OBJ, RAW, Helper

MB = 1 << 20


# How the allocation processor meets the export processor: wrapping it,
# beside it (registered before or after it), or two allocation processors on
# one provider (one beside, one wrapping), which then share each span's group.
SETUPS = ("wrap", "beside-first", "beside-last", "two-processors")


class Pipeline:
    def __init__(self, mode: str, export: str, setup: str = "wrap", **kwargs: Any) -> None:
        self.exporter = InMemorySpanExporter()
        inner = (SimpleSpanProcessor(self.exporter) if export == "simple"
                 else BatchSpanProcessor(self.exporter, schedule_delay_millis=50))
        self.provider = TracerProvider()
        if setup == "wrap":
            self.processor = AllocationSpanProcessor(inner, mode=mode, **kwargs)
            self.provider.add_span_processor(self.processor)
        elif setup == "beside-first":
            self.processor = AllocationSpanProcessor(mode=mode, **kwargs)
            self.provider.add_span_processor(self.processor)
            self.provider.add_span_processor(inner)
        elif setup == "beside-last":
            self.processor = AllocationSpanProcessor(mode=mode, **kwargs)
            self.provider.add_span_processor(inner)
            self.provider.add_span_processor(self.processor)
        else:
            self.provider.add_span_processor(AllocationSpanProcessor(mode=mode, **kwargs))
            self.processor = AllocationSpanProcessor(inner, mode=mode, **kwargs)
            self.provider.add_span_processor(self.processor)
        self.tracer = self.provider.get_tracer("test")

    def spans(self) -> dict[str, ReadableSpan]:
        self.provider.force_flush()
        return {s.name: s for s in self.exporter.get_finished_spans()}


PIPELINES = [
    ("counts", "simple", "wrap"), ("live", "batch", "wrap"),
    ("counts", "batch", "beside-first"), ("live", "simple", "beside-first"),
    ("counts", "simple", "beside-last"), ("live", "batch", "beside-last"),
    ("counts", "batch", "two-processors"), ("live", "simple", "two-processors"),
    ("estimate", "batch", "wrap"), ("estimate", "simple", "beside-first"),
    ("estimate", "batch", "two-processors"),
]


@pytest.fixture(params=PIPELINES, ids=["-".join(p) for p in PIPELINES])
def pipe(request: pytest.FixtureRequest) -> Iterator[Pipeline]:
    mode, export, setup = request.param
    if setup != "wrap" and not sdk_compat.SDK_CALLS_ON_ENDING:
        pytest.skip("this opentelemetry-sdk has no _on_ending: only the wrapping form "
                    "carries attributes (test_old_sdk_beside_exporter_warns_once)")
    otel_alloc.install(mode)
    p = Pipeline(mode, export, setup)
    try:
        yield p
        p.provider.force_flush()
        if mode == "counts":  # live mode keeps leaky spans' groups to watch them
            assert otel_alloc.counters().groups_open == 0, "a group was leaked"
    finally:
        p.provider.shutdown()
        otel_alloc.uninstall()


def _bytes(span: ReadableSpan, key: str = "alloc.bytes") -> int:
    value = (span.attributes or {})[key]
    assert isinstance(value, int)
    return value


def test_exported_spans_carry_attributes(pipe: Pipeline, helper: Helper) -> None:
    with pipe.tracer.start_as_current_span("work"):
        helper.alloc_many(OBJ, 1000, 100)
    span = pipe.spans()["work"]
    attrs = span.attributes or {}
    assert {"alloc.bytes", "alloc.count", "alloc.inclusive_bytes"} <= set(attrs)
    assert 100_000 <= _bytes(span) < 100_000 + 16_384
    assert attrs["alloc.count"] >= 100
    if pipe.processor.mode == "live":
        assert "alloc.live_bytes" in attrs and "alloc.peak_bytes" in attrs
    else:
        assert "alloc.live_bytes" not in attrs and "alloc.peak_bytes" not in attrs
    assert ("alloc.live_bytes_estimate" in attrs) == (pipe.processor.mode == "estimate")


def test_nested_self_and_inclusive(pipe: Pipeline, helper: Helper) -> None:
    with pipe.tracer.start_as_current_span("parent"):
        helper.alloc_many(RAW, 1000, 200)
        with pipe.tracer.start_as_current_span("child"):
            helper.alloc_many(OBJ, 2000, 500)
            with pipe.tracer.start_as_current_span("grandchild"):
                helper.alloc_many(RAW, 4000, 250)
    spans = pipe.spans()
    parent, child, grand = spans["parent"], spans["child"], spans["grandchild"]
    assert 1 * MB - 48_576 <= _bytes(grand) < 1 * MB
    assert 1_000_000 <= _bytes(child) < 1_000_000 + 32_768
    assert 200_000 <= _bytes(parent) < 200_000 + 32_768
    assert _bytes(grand, "alloc.inclusive_bytes") == _bytes(grand)
    assert _bytes(child, "alloc.inclusive_bytes") == _bytes(child) + _bytes(grand)
    assert _bytes(parent, "alloc.inclusive_bytes") == _bytes(parent) + _bytes(child) + _bytes(grand)


def test_started_but_not_current_span_gets_nothing(pipe: Pipeline, helper: Helper) -> None:
    with pipe.tracer.start_as_current_span("current"):
        background = pipe.tracer.start_span("not-current")
        helper.alloc_many(OBJ, 10_000, 100)
        background.end()
    spans = pipe.spans()
    assert _bytes(spans["not-current"]) < 8192
    assert _bytes(spans["current"]) >= 1_000_000


def test_asyncio_tasks_each_get_their_own_bytes(pipe: Pipeline) -> None:
    amounts = {f"task-{i}": (i + 1) * 500_000 for i in range(10)}

    async def task(name: str, total: int) -> None:
        with pipe.tracer.start_as_current_span(name):
            keep = []
            for _ in range(10):
                keep.append(bytearray(total // 10))
                await asyncio.sleep(0)
            del keep

    async def main() -> None:
        await asyncio.gather(*(task(n, a) for n, a in amounts.items()))

    asyncio.run(main())
    spans = pipe.spans()
    for name, amount in amounts.items():
        got = _bytes(spans[name])
        assert abs(got - amount) <= 0.02 * amount, (name, got, amount)


def test_threads_each_span(pipe: Pipeline, helper: Helper) -> None:
    def worker(i: int) -> None:
        with pipe.tracer.start_as_current_span(f"thread-{i}"):
            helper.alloc_many(RAW if i % 2 else OBJ, 1000 * (i + 1), 200)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    spans = pipe.spans()
    for i in range(6):
        expected = 200 * 1000 * (i + 1)
        assert expected <= _bytes(spans[f"thread-{i}"]) < expected + 32_768


def test_thread_pool_with_copied_context(pipe: Pipeline, helper: Helper) -> None:
    with pipe.tracer.start_as_current_span("request"), ThreadPoolExecutor(2) as pool:
        ctx = contextvars.copy_context()
        pool.submit(ctx.run, helper.alloc_many, OBJ, 5000, 200).result()
        otel_ctx = otel_context.get_current()

        def attached() -> None:
            token = otel_context.attach(otel_ctx)
            try:
                helper.alloc_many(RAW, 5000, 200)
            finally:
                otel_context.detach(token)
            helper.alloc_many(RAW, 5000, 200)  # after detach: not the request's

        pool.submit(attached).result()
    got = _bytes(pipe.spans()["request"])
    assert 2_000_000 <= got < 2_000_000 + 65_536


def test_span_ended_in_another_thread(pipe: Pipeline, helper: Helper) -> None:
    span = pipe.tracer.start_span("handoff")
    with trace.use_span(span, end_on_exit=False):
        helper.alloc_many(OBJ, 3000, 100)
    t = threading.Thread(target=span.end)
    t.start()
    t.join()
    assert 300_000 <= _bytes(pipe.spans()["handoff"]) < 300_000 + 16_384


def test_span_ended_in_another_task(pipe: Pipeline) -> None:
    async def main() -> None:
        span = pipe.tracer.start_span("cross-task")

        async def producer() -> None:
            with trace.use_span(span, end_on_exit=False):
                _ = bytearray(500_000)
                await asyncio.sleep(0)

        async def closer() -> None:
            await asyncio.sleep(0.01)
            span.end()

        await asyncio.gather(producer(), closer())

    asyncio.run(main())
    assert 500_000 <= _bytes(pipe.spans()["cross-task"]) < 520_000


def test_never_ended_spans_stay_bounded(helper: Helper) -> None:
    otel_alloc.install("counts", max_groups=16)
    try:
        p = Pipeline("counts", "simple")
        leaked = [p.tracer.start_span(f"leak-{i}") for i in range(100)]
        assert p.processor.open_spans <= 16
        assert otel_alloc.counters().groups_dropped >= 100 - 16
        # Ended spans still work once the table is full (their group is the
        # shared overflow group, so they carry no per-span figures).
        with p.tracer.start_as_current_span("after"):
            pass
        assert "after" in p.spans()
        del leaked
    finally:
        otel_alloc.uninstall()


def test_stale_spans_are_reclaimed(helper: Helper) -> None:
    otel_alloc.install("counts", max_groups=16)
    try:
        p = Pipeline("counts", "simple", stale_span_seconds=0.0)
        for i in range(50):
            p.tracer.start_span(f"leak-{i}")
        assert p.processor.open_spans <= 16
        assert p.processor.spans_reclaimed >= 50 - 16
        with p.tracer.start_as_current_span("fresh"):
            helper.alloc_many(OBJ, 1000, 10)
        assert _bytes(p.spans()["fresh"]) >= 10_000
    finally:
        otel_alloc.uninstall()


def test_processor_never_raises(pipe: Pipeline) -> None:
    class Broken:
        def on_span(self, record: object) -> None:
            raise RuntimeError("sink broke")

        def shutdown(self) -> None:
            raise RuntimeError("sink broke again")

    pipe.processor.add_sink(Broken())
    with pipe.tracer.start_as_current_span("still-exported"):
        pass
    assert "still-exported" in pipe.spans()
    assert pipe.processor.errors >= 1
    pipe.processor.shutdown()
    pipe.processor.shutdown()  # twice is fine


def test_processor_installs_tracker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_ALLOC_MODE", "live")
    try:
        AllocationSpanProcessor()
        assert otel_alloc.installed_mode() == "live"
        with pytest.raises(otel_alloc.TrackerError):
            AllocationSpanProcessor(mode="counts")
    finally:
        otel_alloc.uninstall()


def test_bad_setting_names_it() -> None:
    with pytest.raises(otel_alloc.ConfigError, match="stale_span_seconds"):
        AllocationSpanProcessor(stale_span_seconds=-1)


class _BlockingSink:
    """A sink whose ``on_span`` blocks on the watch thread until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()  # the watch thread is inside on_span
        self.release = threading.Event()
        self.order: list[str] = []  # what was published, and what the test adds

    def on_span(self, record: Any) -> None:
        if threading.current_thread() is not threading.main_thread():
            self.entered.set()
            self.release.wait(timeout=60)
        self.order.append(f"published {record.name}")

    def shutdown(self) -> None:
        """Nothing to release."""


@contextmanager
def _watch_thread_in_sink(span_name: str) -> Iterator[tuple[TracerProvider,
                                                           AllocationSpanProcessor,
                                                           _BlockingSink]]:
    """One span ended; yields once the watch thread is blocked publishing it."""
    sink = _BlockingSink()
    provider = TracerProvider()
    processor = AllocationSpanProcessor(mode="counts", sinks=[sink], metrics=False,
                                        events=False, leak_grace_seconds=0.2)
    provider.add_span_processor(processor)
    try:
        with provider.get_tracer("test").start_as_current_span(span_name):
            pass
        assert sink.entered.wait(timeout=10), "the watch thread never took the record"
        yield provider, processor, sink
    finally:
        sink.release.set()
        provider.shutdown()
        otel_alloc.uninstall()


def test_force_flush_waits_for_the_batch_the_watch_thread_is_publishing() -> None:
    # The watch thread takes the ended span's record and blocks in the sink;
    # force_flush meanwhile finds the queue empty, and must still not return
    # before that record has been published (it once did: under valgrind a
    # test read the sink before the watch thread reached it).
    with _watch_thread_in_sink("slow") as (provider, _, sink):
        flusher = threading.Thread(
            target=lambda: (provider.force_flush(), sink.order.append("flushed")))
        flusher.start()
        flusher.join(timeout=0.3)  # blocked on the batch in flight, or done too early
        sink.release.set()
        flusher.join(timeout=10)
        assert sink.order == ["published slow", "flushed"]


def test_shutdown_stays_bounded_behind_a_sink_that_never_returns(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The wait for the watch thread's batch is bounded: a stuck sink costs
    # shutdown the watch thread's join and PUBLISH_WAIT_SECONDS, not forever.
    from otel_alloc.otel import processor as processor_module

    monkeypatch.setattr(processor_module, "PUBLISH_WAIT_SECONDS", 0.2)
    with _watch_thread_in_sink("stuck") as (_, processor, _):
        errors = processor.errors
        closer = threading.Thread(target=processor.shutdown)
        closer.start()
        closer.join(timeout=30)  # the watch thread's 2 s join, then 0.2 s
        assert not closer.is_alive(), "shutdown hung behind the stuck sink"
        assert processor.errors == errors + 1


def test_stale_reclaim_releases_the_old_spans_and_keeps_the_young(helper: Helper) -> None:
    """With the table full, a new span reclaims the spans open past the stale age,
    oldest first, and stops at the first young one: none of those is released."""
    otel_alloc.install("counts", max_groups=16)
    try:
        p = Pipeline("counts", "simple", stale_span_seconds=1.0)
        capacity = tracker.counters().groups_capacity
        old = [p.tracer.start_span(f"old-{i}") for i in range(capacity // 2)]
        time.sleep(1.2)
        young = [p.tracer.start_span(f"young-{i}") for i in range(capacity - len(old))]
        assert p.processor.open_spans == capacity and p.processor.spans_reclaimed == 0
        with p.tracer.start_as_current_span("fresh"):
            helper.alloc_many(OBJ, 1000, 10)
        assert p.processor.spans_reclaimed == len(old)
        assert _bytes(p.spans()["fresh"]) >= 10_000
        for span in [*old, *young]:
            span.end()
        ended = p.spans()
        # The young kept their groups and end with figures; the old lost theirs.
        assert all("alloc.bytes" in (ended[f"young-{i}"].attributes or {})
                   for i in range(len(young)))
        assert not any("alloc.bytes" in (ended[f"old-{i}"].attributes or {})
                       for i in range(len(old)))
    finally:
        otel_alloc.uninstall()
