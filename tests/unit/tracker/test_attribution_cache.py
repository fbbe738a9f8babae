"""The MEM/OBJ hooks' per-thread attribution cache never outlives what it caches.

A thread that keeps allocating in one context answers "which group pays"
from its cache. Each test changes something the cache depends on *without*
the thread's context changing (no ``with`` entered or left in between), so
only the epoch bump can tell the thread, and checks the very next
allocations in C.
"""

from __future__ import annotations

import threading

import otel_alloc
from otel_alloc import tracker
from tests.unit.conftest import MEM, OBJ, Helper


def test_closing_the_current_group_stops_its_charges_at_once(tracker_live: None,
                                                             helper: Helper) -> None:
    g = otel_alloc.Group()
    with g:
        helper.alloc_many(OBJ, 64, 50)  # fills this thread's cache with g
        stale = otel_alloc.counters().stale_group_allocs
        g.close()
        charged = g.stats().alloc_bytes
        assert charged >= 3200
        helper.alloc_many(OBJ, 64, 50)
        helper.alloc_many(MEM, 64, 50)
        assert g.stats().alloc_bytes == charged
        # Every allocation under the closed id is counted stale, not just
        # the first one (a stale answer is never cached).
        assert otel_alloc.counters().stale_group_allocs - stale >= 100
    g.release()


def test_a_group_closed_by_another_thread_stops_its_charges(tracker_counts: None,
                                                            helper: Helper) -> None:
    g = otel_alloc.Group()
    filled, closed = threading.Event(), threading.Event()
    after: list[int] = []

    def worker() -> None:
        with g:
            helper.alloc_many(OBJ, 64, 50)
            filled.set()
            closed.wait(10)
            before = g.stats().alloc_bytes
            helper.alloc_many(OBJ, 64, 50)
            after.append(g.stats().alloc_bytes - before)

    t = threading.Thread(target=worker)
    t.start()
    assert filled.wait(10)
    g.close()
    closed.set()
    t.join(10)
    assert after == [0]
    g.release()


def test_disable_and_enable_take_effect_in_an_unchanged_context(tracker_counts: None,
                                                                helper: Helper) -> None:
    g = otel_alloc.Group()
    with g:
        helper.alloc_many(OBJ, 64, 10)
        otel_alloc.disable()
        before = g.stats().alloc_bytes
        helper.alloc_many(OBJ, 1000, 10)
        off = g.stats().alloc_bytes - before
        otel_alloc.enable()
        before = g.stats().alloc_bytes
        helper.alloc_many(OBJ, 1000, 10)
        on = g.stats().alloc_bytes - before
    assert off == 0
    assert on >= 10_000
    g.release()


def test_a_new_threshold_applies_to_the_next_allocation(helper: Helper) -> None:
    otel_alloc.install("counts", threshold_bytes=0)
    try:
        tracker.drain_events()
        g = otel_alloc.Group()
        with g:
            helper.alloc_many(OBJ, 5000, 3)  # threshold off: no event, cache filled
            tracker.set_threshold(4096)
            helper.alloc_many(OBJ, 5000, 3)
        events = tracker.drain_events()
        assert [(e.size, e.group, e.domain) for e in events] == [(5000, g.id, OBJ)] * 3
        g.release()
    finally:
        otel_alloc.uninstall()


def test_reinstall_in_another_mode_is_seen_by_a_cached_thread(helper: Helper) -> None:
    otel_alloc.install("counts")
    g = otel_alloc.Group()
    with g:
        helper.alloc_many(OBJ, 64, 10)
        otel_alloc.uninstall()
        otel_alloc.install("live")
        try:
            h = otel_alloc.Group()
            with h:
                ptrs = helper.alloc_many(OBJ, 128, 10, keep=True)
            live = h.stats().live_bytes
            helper.free_many(OBJ, ptrs, 10)
            # Live mode: the table took them, so their frees are charged back.
            assert live - h.stats().live_bytes == 1280
        finally:
            otel_alloc.uninstall()


def test_ending_a_child_group_leaves_the_parent_charged_exactly(tracker_any: str,
                                                               helper: Helper) -> None:
    """A span's end: its group is closed and released after its context is left.

    The thread's cache then answers for the parent and moves to the new
    epoch instead of resolving again (core/tls.h); the parent's figures and
    the closed child's must both stay exact.
    """
    parent, child = otel_alloc.Group(), otel_alloc.Group()
    with parent:
        helper.alloc_many(OBJ, 64, 10)
        with child:
            assert helper.alloc_measured(OBJ, 64, 10, child.id)[:2] == (640, 10)
        child.close()
        assert helper.alloc_measured(OBJ, 100, 10, parent.id)[:2] == (1000, 10)
        assert helper.alloc_measured(MEM, 300, 10, parent.id)[:2] == (3000, 10)
        child.release()
        got = helper.alloc_measured(OBJ, 200, 10, parent.id)
        if tracker_any == "live":
            assert got == (2000, 10, 2000, 10)
        else:
            assert got[:2] == (2000, 10)
        # The group the cache answers for, closed by this thread: no more charges.
        parent.close()
        assert helper.alloc_measured(OBJ, 100, 10, parent.id)[:2] == (0, 0)
    parent.release()


def test_a_group_ended_by_another_thread_makes_this_one_resolve(tracker_counts: None,
                                                                helper: Helper) -> None:
    """Only the ending thread's own cache keeps its epoch; others re-resolve."""
    g = otel_alloc.Group()
    other = otel_alloc.Group()
    filled, ended = threading.Event(), threading.Event()
    after: list[tuple[int, ...]] = []

    def worker() -> None:
        with g:
            helper.alloc_many(OBJ, 64, 10)
            filled.set()
            ended.wait(10)
            after.append(helper.alloc_measured(OBJ, 64, 10, g.id)[:2])

    t = threading.Thread(target=worker)
    t.start()
    assert filled.wait(10)
    with other:
        helper.alloc_many(OBJ, 64, 10)  # this thread's cache answers for `other`
    g.close()  # not this thread's cached group: its own cache moves on
    ended.set()
    t.join(10)
    assert after == [(0, 0)]
    g.release()
    other.release()
