"""Sampling cost is bounded: draining never samples itself, drains end, a floor."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

import otel_alloc
from otel_alloc import validation
from otel_alloc.profiling import sampling
from otel_alloc.profiling.profile import Profile
from otel_alloc.tracker import sampler as native_sampler

BIG = 300_000  # sampled for certain at the smallest accepted mean (1 - exp(-73))


@pytest.fixture
def sampled() -> Iterator[None]:
    otel_alloc.install("counts")
    try:
        sampling.configure(validation.MIN_SAMPLE_BYTES)
        yield
    finally:
        sampling.configure(0)
        otel_alloc.uninstall()


def _pending_big(native_id: int) -> int:
    """Pending samples of BIG bytes this thread made (taking them all)."""
    found = 0
    with native_sampler.paused():
        for _ in range(256):  # bounded: other threads may be sampled meanwhile
            batch = native_sampler.drain_samples(4096)
            found += sum(1 for s in batch
                         if BIG <= s.size < BIG + 64 and s.native_thread_id == native_id)
            if len(batch) < 4096:
                break
    return found


def test_paused_thread_is_not_sampled(sampled: None) -> None:
    me = threading.get_native_id()
    _pending_big(me)
    with native_sampler.paused():
        keep = bytearray(BIG)
    assert _pending_big(me) == 0
    keep = bytearray(BIG)  # the pause ended with the block
    assert _pending_big(me) == 1
    del keep


def test_draining_does_not_sample_itself(sampled: None) -> None:
    """What the drain allocates is never sampled: it cannot feed itself."""
    me = threading.get_native_id()
    collector = sampling.SampleCollector(Profile(sample_bytes=validation.MIN_SAMPLE_BYTES,
                                                 live=False))
    allocated_in_drain: list[bytearray] = []

    def resolver(gid: int) -> str | None:
        # Runs inside drain(), once per sample: a block that is sampled for
        # certain unless the drain paused sampling on this thread.
        allocated_in_drain.append(bytearray(BIG))
        return None

    collector.add_resolver(resolver)
    _pending_big(me)
    keep = bytearray(BIG)  # one sample for the drain to take
    assert collector.drain() >= 1
    assert allocated_in_drain
    assert _pending_big(me) == 0
    del keep


def test_drain_takes_at_most_its_limit(sampled: None) -> None:
    collector = sampling.SampleCollector(Profile(sample_bytes=validation.MIN_SAMPLE_BYTES,
                                                 live=False))
    _pending_big(threading.get_native_id())
    keep = [bytearray(BIG) for _ in range(50)]
    assert collector.drain(limit=10) == 10
    assert collector.drain(limit=0) == 0
    del keep


def test_watch_thread_is_not_sampled(sampled: None) -> None:
    """The tracer's own thread: its work (draining included) is never sampled."""
    processor = otel_alloc.AllocationSpanProcessor(
        sample_bytes=validation.MIN_SAMPLE_BYTES, metrics=False, events=False)
    ran = threading.Event()
    ids: list[int] = []

    def task() -> None:
        if not ran.is_set():
            ids.append(threading.get_native_id())
            ids.append(len(bytearray(BIG)))
            ran.set()

    try:
        processor._watch.add_task(task)
        processor._watch.wake()
        assert ran.wait(30)
        assert _pending_big(ids[0]) == 0
    finally:
        processor.shutdown()


@pytest.mark.parametrize("value", [1, 256, "1KiB", validation.MIN_SAMPLE_BYTES - 1])
def test_mean_below_the_floor_is_refused(value: int | str) -> None:
    with pytest.raises(otel_alloc.ConfigError) as err:
        sampling.configure(value)
    assert "sample_bytes" in str(err.value) and "0 (off) or" in str(err.value)
    assert str(validation.MIN_SAMPLE_BYTES) in str(err.value)
    with pytest.raises(otel_alloc.ConfigError, match="sample_bytes"):
        otel_alloc.AllocationSpanProcessor(sample_bytes=value)


def test_zero_and_the_floor_are_accepted() -> None:
    assert validation.sample_bytes("sample_bytes", 0, "X", 1) == 0
    assert validation.sample_bytes("sample_bytes", "4KiB", "X", 1) == 4096
