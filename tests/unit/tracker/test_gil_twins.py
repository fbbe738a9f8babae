"""RAW and native blocks under the GIL and without it: two counter sets,
one figure.

RAW and native allocations made by a thread that holds the GIL are counted
with plain adds in a counter set of their own (the domain's twin), and those
made without it with atomic ones (accounting/counters.h). A block may be
allocated under one and freed under the other. These tests check that every
reader (a group's figures, the domain's, the process's) sums both sets
exactly, and that threads of both kinds hammering one group lose no update.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

import otel_alloc
from tests.unit.conftest import NATIVE, NATIVE_GIL, RAW, RAW_GIL, Helper, installed

# The helper's domains without and with the GIL.
DOMAINS = {"native": (NATIVE, NATIVE_GIL), "raw": (RAW, RAW_GIL)}
# (allocated with the GIL, freed with the GIL)
CROSSINGS = [(True, False), (False, True), (True, True), (False, False)]
CROSSING_IDS = ["gil-then-nogil", "nogil-then-gil", "gil-both", "nogil-both"]


def _helper_domain(domain: str, with_gil: bool) -> int:
    return DOMAINS[domain][with_gil]


@pytest.fixture(params=["counts", "live"])
def native_mode(request: pytest.FixtureRequest) -> Iterator[str]:
    with installed(request.param, native=True) as mode:
        yield mode


@pytest.mark.parametrize("domain", list(DOMAINS))
@pytest.mark.parametrize(("alloc_gil", "free_gil"), CROSSINGS, ids=CROSSING_IDS)
def test_a_block_freed_under_the_other_kind_of_thread_is_charged_exactly(
        helper: Helper, native_mode: str, domain: str, alloc_gil: bool, free_gil: bool) -> None:
    size, n = 3000, 400
    delta = helper.ffi.new("uint64_t[4]")
    with otel_alloc.Group() as group:
        failed = helper.module.lib.h_cross_measured(_helper_domain(domain, alloc_gil),
                                                    _helper_domain(domain, free_gil), size, n,
                                                    group.id, delta)
    assert failed == 0
    freed = (size * n, n) if native_mode == "live" else (0, 0)
    assert tuple(delta) == (size * n, n, *freed)
    group.release()


@pytest.mark.parametrize("mode", ["counts", "live", "estimate"])
@pytest.mark.parametrize("domain", list(DOMAINS))
def test_a_block_right_after_a_mem_one_is_charged_exactly(helper: Helper, mode: str,
                                                         domain: str) -> None:
    """Under the GIL, each RAW or native block follows a MEM one, which leaves
    the thread's attribution cache current: counts mode charges the block
    from that cache, the other modes the general way. Either way every
    block of both is charged to the group, once."""
    mem_size, size, n = 48, 3000, 300
    delta = helper.ffi.new("uint64_t[4]")
    with installed(mode, native=True):
        with otel_alloc.Group() as group:
            failed = helper.module.lib.h_interleaved_measured(
                mem_size, _helper_domain(domain, True), size, n, group.id, delta)
        group.release()
    assert failed == 0
    allocated = (n * (mem_size + size), 2 * n)
    assert tuple(delta)[:2] == allocated
    if mode == "live":
        assert tuple(delta)[2:] == allocated


def _figures(domain: str) -> tuple[int, ...]:
    """The domain's figures that the tests compare."""
    s = otel_alloc.domain_stats(domain)
    return (s.alloc_bytes, s.alloc_count, s.freed_bytes, s.freed_count, s.live_bytes,
            s.live_count, s.native_bytes)


def _minus(after: tuple[int, ...], before: tuple[int, ...],
           reading: tuple[int, ...]) -> tuple[int, ...]:
    """What changed from before to after, less what one reading allocates."""
    return tuple(a - b - r for a, b, r in zip(after, before, reading, strict=True))


def _reading_cost(domain: str) -> tuple[int, ...]:
    """What one reading of the figures changes in them (cffi allocates a
    little): the same read twice with nothing in between."""
    first = _figures(domain)
    return _minus(_figures(domain), first, (0,) * 7)


@pytest.mark.parametrize("domain", list(DOMAINS))
@pytest.mark.parametrize(("alloc_gil", "free_gil"), CROSSINGS, ids=CROSSING_IDS)
def test_the_domain_sums_both_sets(helper: Helper, native_live: None, domain: str,
                                   alloc_gil: bool, free_gil: bool) -> None:
    size, n = 5000, 300
    ptrs = helper.ffi.new("uintptr_t[]", n)
    _figures(domain)
    reading = _reading_cost(domain)
    before = _figures(domain)
    helper.module.lib.h_alloc_many(_helper_domain(domain, alloc_gil), size, n, ptrs)
    held = _figures(domain)
    helper.free_many(_helper_domain(domain, free_gil), ptrs, n)
    after = _figures(domain)
    process_native = otel_alloc.process_stats().native_bytes
    native = size * n if domain == "native" else 0
    # alloc bytes and count, freed bytes and count, live bytes and count,
    # native bytes
    assert _minus(held, before, reading) == (size * n, n, 0, 0, size * n, n, native)
    assert _minus(after, held, reading) == (0, 0, size * n, n, -size * n, -n, 0)
    if domain == "native":
        # The process's native bytes sum both sets too (the reading between
        # allocates a few hundred bytes).
        assert 0 <= process_native - after[6] < 4096


def test_the_peak_sees_blocks_of_every_set(helper: Helper, native_live: None) -> None:
    """A group's peak is the most it held, whichever set its blocks are in."""
    size, n = 100_000, 20
    ptrs = [helper.ffi.new("uintptr_t[]", n) for _ in range(4)]
    held = [NATIVE_GIL, NATIVE, RAW_GIL, RAW]
    with otel_alloc.Group() as group:
        for domain, blocks in zip(held, ptrs, strict=True):
            helper.module.lib.h_alloc_many(domain, size, n, blocks)
        # Each freed under the other kind of thread.
        for domain, blocks in zip([NATIVE, NATIVE_GIL, RAW, RAW_GIL], ptrs, strict=True):
            helper.free_many(domain, blocks, n)
        stats = group.stats()
    group.release()
    assert stats is not None
    # The blocks, and what cffi allocated for the calls (a few hundred bytes).
    assert 2 * size * n <= stats.native_bytes < 2 * size * n + 4096
    assert 4 * size * n <= stats.peak_bytes < 4 * size * n + size


def _wait_for(condition: Callable[[], bool]) -> None:
    """Poll until condition() holds: a Barrier or an Event allocates a lock
    (RAW) at each wait, which would be charged between the reads."""
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, "the workers did not get there"
        time.sleep(0.001)


@pytest.mark.parametrize("domain", list(DOMAINS))
def test_threads_of_both_kinds_hammering_one_group(helper: Helper, native_live: None,
                                                   domain: str) -> None:
    """Half the threads allocate under the GIL and free without it, half the
    other way round: no update is lost from either set."""
    threads_n, per_thread, size, rounds = 8, 1000, 256, 4
    without, with_gil = DOMAINS[domain]
    domains = [(with_gil, without) if i % 2 else (without, with_gil)
               for i in range(threads_n)]
    arrays = [helper.ffi.new("uintptr_t[]", per_thread) for _ in range(threads_n)]
    errors: list[BaseException] = []
    # The main thread reads the figures while the workers wait: after their
    # first calls (cffi allocates per thread) and before they exit. Each
    # list grows by one entry per worker (append is atomic under the GIL).
    ready: list[int] = []
    done: list[int] = []
    go: list[bool] = []
    leave: list[bool] = []
    group = otel_alloc.Group()

    def work(index: int) -> None:
        alloc_domain, free_domain = domains[index]
        try:
            helper.module.lib.h_alloc_many(alloc_domain, size, 0, arrays[index])
            ready.append(index)
            _wait_for(lambda: bool(go))
            with group:
                for _ in range(rounds):
                    helper.module.lib.h_alloc_many(alloc_domain, size, per_thread,
                                                   arrays[index])
                    helper.free_many(free_domain, arrays[index], per_thread)
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)
        done.append(index)
        _wait_for(lambda: bool(leave))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(threads_n)]
    try:
        for t in threads:
            t.start()
        _wait_for(lambda: len(ready) == threads_n)
        group_before = group.stats()
        _figures(domain)
        reading = _reading_cost(domain)
        before = _figures(domain)
        go.append(True)
        _wait_for(lambda: len(done) == threads_n)
        after = _figures(domain)
        group_after = group.stats()
        leave.append(True)
        for t in threads:
            t.join()
        group.release()
    finally:
        leave.append(True)
    total = threads_n * rounds * per_thread
    assert not errors and group_before is not None and group_after is not None
    native = total * size if domain == "native" else 0
    assert group_after.native_bytes - group_before.native_bytes == native
    assert group_after.alloc_count - group_before.alloc_count >= total
    assert _minus(after, before, reading) == (total * size, total, total * size, total, 0, 0,
                                              native)
