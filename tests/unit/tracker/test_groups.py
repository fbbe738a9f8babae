"""Group ids, overflow, recycling, peaks, events and the tracker's own memory."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import otel_alloc
from otel_alloc import tracker
from tests.unit.conftest import OBJ, RAW, Helper


@pytest.fixture
def small_table() -> Iterator[None]:
    otel_alloc.install("live", max_groups=2, threshold_bytes="1MiB", event_capacity=4)
    try:
        yield
    finally:
        otel_alloc.uninstall()


def test_overflow_is_counted_never_a_crash(small_table: None, helper: Helper) -> None:
    a, b = otel_alloc.Group(), otel_alloc.Group()
    assert not a.overflowed and not b.overflowed
    c, d = otel_alloc.Group(), otel_alloc.Group()
    assert c.overflowed and d.overflowed
    assert otel_alloc.counters().groups_dropped == 2
    before = tracker.overflow_stats().alloc_bytes
    with c:
        helper.alloc_many(RAW, 1000, 5)
    assert tracker.overflow_stats().alloc_bytes - before >= 5000
    for g in (a, b, c, d):
        g.release()
    assert otel_alloc.counters().groups_open == 0


def test_recycled_slot_gets_a_new_id(small_table: None, helper: Helper) -> None:
    ids = set()
    for _ in range(50):
        g = otel_alloc.Group()
        assert g.id not in ids
        ids.add(g.id)
        g.release()
    stale = otel_alloc.Group()
    stale.release()
    fresh = otel_alloc.Group()
    fresh2 = otel_alloc.Group()
    assert stale.id not in (fresh.id, fresh2.id)
    # A stale id reads as empty and charges nothing to the slot's new owner.
    before = fresh.stats().alloc_bytes, fresh2.stats().alloc_bytes
    stale_before = otel_alloc.counters().stale_group_allocs
    with stale:
        helper.alloc_many(RAW, 1000, 5)
    assert (fresh.stats().alloc_bytes, fresh2.stats().alloc_bytes) == before
    assert stale.stats() == otel_alloc.Stats()
    assert otel_alloc.counters().stale_group_allocs > stale_before


def test_closed_group_takes_no_allocations_but_frees(small_table: None, helper: Helper) -> None:
    g = otel_alloc.Group()
    with g:
        ptrs = helper.alloc_many(OBJ, 200, 10, keep=True)
    g.close()
    alloc = g.stats().alloc_bytes
    with g:
        helper.alloc_many(OBJ, 200, 10)
    assert g.stats().alloc_bytes == alloc
    live = g.stats().live_bytes
    helper.free_many(OBJ, ptrs, 10)
    assert live - g.stats().live_bytes == 2000


def test_free_after_release_is_not_charged_to_the_new_owner(small_table: None,
                                                            helper: Helper) -> None:
    old = otel_alloc.Group()
    with old:
        ptrs = helper.alloc_many(RAW, 3000, 10, keep=True)
    old.release()
    other = otel_alloc.Group()
    new = otel_alloc.Group()  # FIFO reuse: one of these took old's slot
    before = otel_alloc.counters().released_group_free_bytes
    helper.free_many(RAW, ptrs, 10)
    assert otel_alloc.counters().released_group_free_bytes - before == 30_000
    assert new.stats().freed_bytes == 0 and other.stats().freed_bytes == 0


def test_peaks_and_reset(small_table: None, helper: Helper) -> None:
    g = otel_alloc.Group()
    with g:
        ptrs = helper.alloc_many(RAW, 1 << 20, 8, keep=True)
        helper.free_many(RAW, ptrs, 8)
    assert g.stats().peak_bytes >= 8 << 20
    assert g.stats().live_bytes < 1 << 20
    assert otel_alloc.process_stats().peak_bytes >= 8 << 20
    me = otel_alloc.current_thread_stats()
    assert me.stats.peak_bytes >= 8 << 20
    otel_alloc.reset_peaks()
    assert otel_alloc.process_stats().peak_bytes < 8 << 20
    assert otel_alloc.current_thread_stats().stats.peak_bytes < 8 << 20


def test_large_allocation_events_and_drops(small_table: None, helper: Helper) -> None:
    otel_alloc.tracker.drain_events()
    g = otel_alloc.Group()
    with g:
        helper.alloc_many(RAW, 2 << 20, 1)
        helper.alloc_many(OBJ, 100, 10)  # under the threshold: no event
    events = otel_alloc.tracker.drain_events()
    assert [(e.size, e.group, e.domain) for e in events] == [(2 << 20, g.id, RAW)]
    assert events[0].timestamp_ns > 0
    helper.alloc_many(RAW, 1 << 20, 10)  # buffer holds 4
    assert len(otel_alloc.tracker.drain_events()) == 4
    assert otel_alloc.counters().events_dropped == 6


def test_bytes_per_live_block(helper: Helper) -> None:
    otel_alloc.install("live")
    try:
        n = 300_000
        base = otel_alloc.memory_usage()
        ptrs = helper.alloc_many(OBJ, 16, n, keep=True)
        usage = otel_alloc.memory_usage()
        assert usage.live_blocks - base.live_blocks >= n
        assert usage.bytes_per_live_block <= 32.0
        assert usage.total_bytes >= usage.table_bytes + usage.group_table_bytes
        helper.free_many(OBJ, ptrs, n)
        # The table shrinks back once the blocks are gone.
        assert otel_alloc.memory_usage().table_bytes < usage.table_bytes
    finally:
        otel_alloc.uninstall()


def test_counts_mode_has_no_table(helper: Helper) -> None:
    otel_alloc.install("counts")
    try:
        helper.alloc_many(OBJ, 16, 10_000, keep=True)
        assert otel_alloc.memory_usage().table_bytes == 0
    finally:
        otel_alloc.uninstall()
