"""Native blocks under the GIL and without it: two counter sets, one figure.

Native allocations made by a thread that holds the GIL are counted with
plain adds in a counter set of their own, and those made without it with
atomic ones (accounting/counters.h). A block may be allocated under one and
freed under the other. These tests check that every reader (a group's
figures, the native domain's, the process's) sums both sets exactly, and
that threads of both kinds hammering one group lose no update.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

import otel_alloc
from tests.unit.conftest import Helper

NATIVE, NATIVE_GIL = 3, 4  # the helper's plain malloc/free, without and with the GIL
CROSSINGS = [(NATIVE_GIL, NATIVE), (NATIVE, NATIVE_GIL), (NATIVE_GIL, NATIVE_GIL),
             (NATIVE, NATIVE)]
CROSSING_IDS = ["gil-then-nogil", "nogil-then-gil", "gil-both", "nogil-both"]


@pytest.fixture(params=["counts", "live"])
def native_mode(request: pytest.FixtureRequest) -> Iterator[str]:
    otel_alloc.install(request.param, native=True)
    try:
        yield request.param
    finally:
        otel_alloc.uninstall()


@pytest.mark.parametrize(("alloc_domain", "free_domain"), CROSSINGS, ids=CROSSING_IDS)
def test_a_block_freed_under_the_other_kind_of_thread_is_charged_exactly(
        helper: Helper, native_mode: str, alloc_domain: int, free_domain: int) -> None:
    size, n = 3000, 400
    delta = helper.ffi.new("uint64_t[4]")
    with otel_alloc.Group() as group:
        failed = helper.module.lib.h_cross_measured(alloc_domain, free_domain, size, n,
                                                    group.id, delta)
    assert failed == 0
    freed = (size * n, n) if native_mode == "live" else (0, 0)
    assert tuple(delta) == (size * n, n, *freed)
    group.release()


def _native() -> tuple[int, ...]:
    """The native domain's figures that the tests compare."""
    s = otel_alloc.domain_stats("native")
    return (s.alloc_bytes, s.alloc_count, s.freed_bytes, s.freed_count, s.live_bytes,
            s.live_count, s.native_bytes)


def _minus(after: tuple[int, ...], before: tuple[int, ...],
           reading: tuple[int, ...]) -> tuple[int, ...]:
    """What changed from before to after, less what one reading allocates."""
    return tuple(a - b - r for a, b, r in zip(after, before, reading, strict=True))


def _reading_cost() -> tuple[int, ...]:
    """What one reading of the figures changes in them (cffi allocates a
    little): the same read twice with nothing in between."""
    first = _native()
    return _minus(_native(), first, (0,) * 7)


@pytest.mark.parametrize(("alloc_domain", "free_domain"), CROSSINGS, ids=CROSSING_IDS)
def test_the_native_domain_sums_both_sets(helper: Helper, alloc_domain: int,
                                          free_domain: int) -> None:
    otel_alloc.install("live", native=True)
    try:
        size, n = 5000, 300
        ptrs = helper.ffi.new("uintptr_t[]", n)
        _native()
        reading = _reading_cost()
        before = _native()
        helper.module.lib.h_alloc_many(alloc_domain, size, n, ptrs)
        held = _native()
        helper.free_many(free_domain, ptrs, n)
        after = _native()
        process_native = otel_alloc.process_stats().native_bytes
    finally:
        otel_alloc.uninstall()
    # alloc bytes and count, freed bytes and count, live bytes and count,
    # native bytes
    assert _minus(held, before, reading) == (size * n, n, 0, 0, size * n, n, size * n)
    assert _minus(after, held, reading) == (0, 0, size * n, n, -size * n, -n, 0)
    # The process's native bytes sum both sets too (the reading between
    # allocates a few hundred bytes).
    assert 0 <= process_native - after[6] < 4096


def test_the_peak_sees_blocks_of_both_sets(helper: Helper) -> None:
    """A group's peak is the most it held, whichever set its blocks are in."""
    otel_alloc.install("live", native=True)
    try:
        size, n = 100_000, 20
        ptrs_gil = helper.ffi.new("uintptr_t[]", n)
        ptrs = helper.ffi.new("uintptr_t[]", n)
        with otel_alloc.Group() as group:
            helper.module.lib.h_alloc_many(NATIVE_GIL, size, n, ptrs_gil)
            helper.module.lib.h_alloc_many(NATIVE, size, n, ptrs)
            helper.free_many(NATIVE, ptrs_gil, n)
            helper.free_many(NATIVE_GIL, ptrs, n)
            stats = group.stats()
        group.release()
    finally:
        otel_alloc.uninstall()
    assert stats is not None
    # The blocks, and what cffi allocated for the calls (a few hundred bytes).
    assert 2 * size * n <= stats.native_bytes < 2 * size * n + 4096
    assert 2 * size * n <= stats.peak_bytes < 2 * size * n + size


def test_threads_of_both_kinds_hammering_one_group(helper: Helper) -> None:
    """Half the threads allocate under the GIL and free without it, half the
    other way round: no update is lost from either set."""
    otel_alloc.install("live", native=True)
    threads_n, per_thread, size, rounds = 8, 1000, 256, 4
    domains = [(NATIVE_GIL, NATIVE) if i % 2 else (NATIVE, NATIVE_GIL)
               for i in range(threads_n)]
    arrays = [helper.ffi.new("uintptr_t[]", per_thread) for _ in range(threads_n)]
    errors: list[BaseException] = []
    # The main thread reads the figures while the workers wait: after their
    # first calls (cffi allocates per thread) and before they exit.
    barrier = threading.Barrier(threads_n + 1)
    group = otel_alloc.Group()

    def work(index: int) -> None:
        alloc_domain, free_domain = domains[index]
        try:
            helper.module.lib.h_alloc_many(alloc_domain, size, 0, arrays[index])
            barrier.wait()  # ready
            barrier.wait()  # read
            with group:
                for _ in range(rounds):
                    helper.module.lib.h_alloc_many(alloc_domain, size, per_thread,
                                                   arrays[index])
                    helper.free_many(free_domain, arrays[index], per_thread)
            barrier.wait()  # done
            barrier.wait()  # read
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)
            barrier.abort()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(threads_n)]
    try:
        for t in threads:
            t.start()
        barrier.wait()
        group_before = group.stats()
        _native()
        reading = _reading_cost()
        before = _native()
        barrier.wait()
        barrier.wait()
        after = _native()
        group_after = group.stats()
        barrier.wait()
        for t in threads:
            t.join()
        group.release()
    finally:
        otel_alloc.uninstall()
    total = threads_n * rounds * per_thread
    assert not errors and group_before is not None and group_after is not None
    assert group_after.native_bytes - group_before.native_bytes == total * size
    assert _minus(after, before, reading) == (total * size, total, total * size, total, 0, 0,
                                              total * size)
