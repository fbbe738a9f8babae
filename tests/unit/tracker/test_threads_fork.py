"""Threads hammering the allocator, enable/disable under load, and fork."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable

import pytest

import otel_alloc
from tests.support.hung import c_stacks
from tests.unit.conftest import DOMAINS, OBJ, RAW, Helper, other_allocator

THREADS = 8
PER_THREAD = 100_000


def _run_threads(target: Callable[[int], None], n: int = THREADS) -> None:
    threads = [threading.Thread(target=target, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


@pytest.mark.parametrize("domain", DOMAINS.values(), ids=DOMAINS.keys())
def test_eight_threads_no_lost_counts(tracker_any: str, helper: Helper, domain: int) -> None:
    """Eight threads allocating at once, each in its own group: not one count lost.

    Each thread's group is read in C just before and after its loop, so what
    the thread's Python code allocates around the call (entering the group,
    the call's own return path) is outside the measurement by construction.
    """
    size = 48
    groups = [otel_alloc.Group() for _ in range(THREADS)]
    measured: dict[int, tuple[int, int, int, int]] = {}

    def work(i: int) -> None:
        with groups[i]:
            measured[i] = helper.alloc_measured(domain, size, PER_THREAD, groups[i].id)

    process_before = otel_alloc.process_stats().alloc_count
    _run_threads(work)
    freed = PER_THREAD * size if tracker_any == "live" else 0
    expected = (PER_THREAD * size, PER_THREAD, freed, PER_THREAD if freed else 0)
    assert [measured[i] for i in range(THREADS)] == [expected] * THREADS
    assert otel_alloc.process_stats().alloc_count - process_before >= THREADS * PER_THREAD
    for g in groups:
        g.release()


def test_enable_disable_under_load_keeps_live_exact(tracker_live: None, helper: Helper) -> None:
    lib, ffi = helper.module.lib, helper.ffi
    stop = threading.Event()
    groups = [otel_alloc.Group() for _ in range(4)]
    rounds = [0] * 4

    def hammer(i: int) -> None:
        domain = RAW if i % 2 else OBJ
        ptrs = ffi.new("uintptr_t[]", 500)
        with groups[i]:
            while not stop.is_set():
                assert lib.h_alloc_many(domain, 64 + i, 500, ptrs) == 0
                lib.h_free_many(domain, ptrs, 500)
                rounds[i] += 1

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for _ in range(300):
        otel_alloc.disable()
        time.sleep(0.0005)
        otel_alloc.enable()
        time.sleep(0.0005)
    stop.set()
    for t in threads:
        t.join()
    assert all(r > 0 for r in rounds)
    for g in groups:
        s = g.stats()
        # Every tracked block was freed: what stays alive is the group's own
        # context bookkeeping (well under a page), never negative.
        assert 0 <= s.live_bytes < 4096, s
        assert s.freed_count <= s.alloc_count


def _wait_child(pid: int, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    stacks = c_stacks(pid)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    raise AssertionError(f"forked child hung; its threads' stacks:\n{stacks}")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_child_starts_clean_and_keeps_working(tracker_tables: str, helper: Helper) -> None:
    g = otel_alloc.Group()
    with g:
        ptrs = helper.alloc_many(RAW, 1 << 20, 4, keep=True)
    assert g.stats().live_bytes >= 4 << 20
    stop = threading.Event()
    # GCC 12's libasan takes none of its allocator's locks around fork: a
    # child forked while another thread is inside its malloc can wait
    # forever for that thread's size-class lock (google/sanitizers#774; seen
    # here as a child hung in SizeClassAllocator64::GetFromAllocator, one
    # hook frame above). Under a sanitizer the background thread is never
    # inside an allocation at the fork itself; our own locks held across a
    # fork are exercised on glibc's malloc, which is fork-safe.
    between_calls = threading.Lock() if other_allocator() == "a sanitizer's allocator" else None

    def background() -> None:  # allocating while we fork: locks may be held
        while not stop.is_set():
            with between_calls or contextlib.nullcontext():
                helper.alloc_many(RAW, 256, 200)

    t = threading.Thread(target=background)
    t.start()
    try:
        with between_calls or contextlib.nullcontext():
            pid = os.fork()
        if pid == 0:  # child: report failures through the exit code only
            code = 0
            try:
                if g.stats().live_bytes != 0 or g.stats().alloc_bytes != 0:
                    code = 2
                elif otel_alloc.process_stats().live_bytes > 1 << 20:
                    code = 3
                else:
                    helper.free_many(RAW, ptrs, 4)  # parent's blocks: untracked here
                    if g.stats().freed_bytes != 0:
                        code = 4
                    child = otel_alloc.Group()
                    with child:
                        helper.alloc_many(RAW, 1000, 10)
                    if child.stats().alloc_bytes < 10_000:
                        code = 5
            except BaseException:
                code = 6
            os._exit(code)
        assert _wait_child(pid) == 0
    finally:
        stop.set()
        t.join()
    assert g.stats().live_bytes >= 4 << 20  # the parent's figures are untouched
    helper.free_many(RAW, ptrs, 4)


def test_reinstall_with_other_table_sizes_while_threads_allocate(helper: Helper) -> None:
    """A RAW hook may still hold the previous group table while a reinstall
    replaces it with a larger one: slots are checked against that table."""
    lib = helper.module.lib

    def reinstall() -> None:
        for i in range(6):
            otel_alloc.install("live", max_groups=16 * (i + 1))
            groups = [otel_alloc.Group() for _ in range(8)]
            for g in groups:
                with g:
                    lib.h_alloc_many(RAW, 64, 50, helper.ffi.NULL)
                assert g.stats().alloc_count >= 50
            otel_alloc.uninstall()

    _while_raw_hammered(helper, 64, 200, reinstall)


def test_install_and_uninstall_while_a_thread_allocates_raw(helper: Helper) -> None:
    """PyMem_SetAllocator swaps a domain's ctx and functions while threads
    without the GIL read them with two loads: a RAW call may pair our hook
    with the ctx of the allocator it wraps. It must pass through, not crash."""
    def cycle() -> None:
        for _ in range(10_000):
            otel_alloc.install("counts")
            otel_alloc.uninstall()

    _while_raw_hammered(helper, 64, 2000, cycle)


def _while_raw_hammered(helper: Helper, size: int, n: int, body: Callable[[], None]) -> None:
    """Run ``body`` while another thread allocates through RAW without the GIL."""
    lib = helper.module.lib
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            lib.h_alloc_many(RAW, size, n, helper.ffi.NULL)

    t = threading.Thread(target=hammer)
    t.start()
    try:
        body()
    finally:
        stop.set()
        t.join()
