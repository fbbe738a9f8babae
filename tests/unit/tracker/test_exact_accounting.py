"""Exact byte and allocation counts through every PyMem domain."""

from __future__ import annotations

import threading
from typing import Any

import pytest

import otel_alloc
from otel_alloc import tracker
from tests.unit.conftest import DOMAINS, OBJ, RAW, Helper, charged, delta

# 511/512/513 straddle pymalloc's small-object limit: above it pymalloc hands
# the block to the RAW domain, and it must still be counted once.
SIZES = [1, 8, 100, 511, 512, 513, 4096, 1 << 20]


@pytest.mark.parametrize("domain", DOMAINS.values(), ids=DOMAINS.keys())
@pytest.mark.parametrize("size", SIZES)
def test_malloc_exact_bytes_and_count(tracker_any: str, helper: Helper, domain: int,
                                      size: int) -> None:
    n = 50

    def work(real: bool) -> None:
        helper.alloc_many(domain, size, n if real else 0)

    got = charged(work)
    assert got.alloc_bytes == n * size
    assert got.alloc_count == n
    if tracker_any == "live":
        assert got.freed_bytes == n * size
        assert got.freed_count == n
        assert got.live_bytes == 0
        assert got.live_count == 0


# A live-table entry packs sizes below 2**27 - 1 (128 MiB); larger blocks
# are kept exactly beside the table, and the live MEM/OBJ hook's inline path
# leaves them to the general one. Just below, at and just above that size.
BEYOND_PACKED = [(1 << 27) - 2, (1 << 27) - 1, (1 << 27) + 5]


@pytest.mark.parametrize("domain", DOMAINS.values(), ids=DOMAINS.keys())
@pytest.mark.parametrize("size", BEYOND_PACKED)
@pytest.mark.parametrize("events", ["events-off", "events-at-64MiB"])
def test_sizes_beyond_the_packed_entry_stay_exact(tracker_any: str, helper: Helper, domain: int,
                                                  size: int, events: str) -> None:
    # With events at 64 MiB such blocks are events too; with events off,
    # only their size sends them off the inline path.
    tracker.set_threshold(0 if events == "events-off" else 64 << 20)
    tracker.drain_events()
    n = 2  # the pages are never touched: address space, not memory
    lib, ffi = helper.module.lib, helper.ffi
    kept = ffi.new("uintptr_t[]", n)  # made outside the measured window

    def work(real: bool) -> None:
        assert lib.h_alloc_many(domain, size, n if real else 0, kept) == 0

    got = charged(work)
    assert got.alloc_bytes == n * size
    assert got.alloc_count == n
    if tracker_any == "live":
        assert got.live_bytes == n * size
        assert got.live_count == n
    helper.free_many(domain, kept, n)
    # Allocated and freed with no Python code in between, read in C.
    with otel_alloc.Group() as group:
        measured = helper.alloc_measured(domain, size, n, group.id)
    group.release()
    freed = (n * size, n) if tracker_any == "live" else (0, 0)
    assert measured == (n * size, n, *freed)
    # Each block above the threshold is one event (charged() and the C loop).
    assert len(tracker.drain_events()) == (2 * n if events == "events-at-64MiB" else 0)


@pytest.mark.parametrize("domain", DOMAINS.values(), ids=DOMAINS.keys())
def test_calloc_exact(tracker_any: str, helper: Helper, domain: int) -> None:
    lib, ffi = helper.module.lib, helper.ffi
    out = ffi.new("uintptr_t[]", 10)

    def work(real: bool) -> None:
        assert lib.h_calloc_many(domain, 7, 33, 10 if real else 0, out) == 0

    got = charged(work)
    assert got.alloc_bytes == 10 * 7 * 33
    assert got.alloc_count == 10
    if tracker_any == "live":
        assert got.live_bytes == 10 * 7 * 33
    helper.free_many(domain, out, 10)


@pytest.mark.parametrize("domain", DOMAINS.values(), ids=DOMAINS.keys())
@pytest.mark.parametrize("chain", [[100, 10_000, 10], [600, 300, 5000, 1 << 20, 8]])
def test_realloc_grow_and_shrink(tracker_any: str, helper: Helper, domain: int,
                                 chain: list[int]) -> None:
    lib, ffi = helper.module.lib, helper.ffi
    sizes = ffi.new("size_t[]", chain)
    last = sizes + (len(chain) - 1)  # made here: a cdata pointer is an allocation
    # The final blocks stay in C: made into a Python int inside the measured
    # window, a block's address would cost one or two digits depending on
    # where the allocator put it (below 2**30 on a non-PIE interpreter's heap).
    kept = ffi.new("uintptr_t[]", 16)
    n_kept = [0]

    def work(real: bool) -> None:
        out = kept + n_kept[0]
        n_kept[0] += 1
        # Baseline: a single malloc of the final size, so both sides leave
        # one block of the same size alive.
        if real:
            assert lib.h_realloc_chain(domain, sizes, len(chain), out) == 0
        else:
            assert lib.h_realloc_chain(domain, last, 1, out) == 0

    got = charged(work)
    # A realloc counts as an allocation of its new size and a free of the
    # old block: the chain allocates sum(chain) in len(chain) allocations.
    assert got.alloc_bytes == sum(chain) - chain[-1]
    assert got.alloc_count == len(chain) - 1
    if tracker_any == "live":
        assert got.freed_bytes == sum(chain[:-1])
        assert got.freed_count == len(chain) - 1
        assert got.live_bytes == 0  # both sides keep one block of chain[-1] bytes
    for i in range(n_kept[0]):
        helper.free(domain, kept[i])


@pytest.mark.parametrize("domain", DOMAINS.values(), ids=DOMAINS.keys())
def test_failed_realloc_keeps_the_block_charged_to_its_group(tracker_live: None,
                                                             helper: Helper,
                                                             domain: int) -> None:
    # The old block leaves the table before the realloc call (its address
    # may be reused once the call returns) and goes back in when the call
    # fails: its group still holds it, and its free is charged there once.
    size, impossible = 300, 1 << 62  # more than any address space maps
    group = otel_alloc.Group()
    with group:
        ptr = helper.malloc(domain, size)
    held = group.stats()
    assert helper.realloc(domain, ptr, impossible) == 0
    after_failure = group.stats()
    assert after_failure.live_bytes == held.live_bytes
    assert after_failure.freed_count == held.freed_count
    assert after_failure.alloc_count == held.alloc_count
    helper.free(domain, ptr)
    got = delta(group.stats(), held)
    assert got.freed_bytes == size
    assert got.freed_count == 1
    assert got.live_bytes == -size
    assert otel_alloc.counters().tracking_failures == 0


def _free_elsewhere(helper: Helper, domain: int, n: int, size: int,
                    in_thread: bool) -> otel_alloc.Stats:
    """Allocate n blocks under one group, free them under another (or in
    another thread); return what the owner was charged after its block."""
    owner, other = otel_alloc.Group(), otel_alloc.Group()
    with owner:
        ptrs = helper.alloc_many(domain, size, n, keep=True)
    snap = owner.stats()

    def free() -> None:
        with other:
            helper.free_many(domain, ptrs, n)

    if in_thread:
        t = threading.Thread(target=free)
        t.start()
        t.join()
    else:
        free()
    return delta(owner.stats(), snap)


@pytest.mark.parametrize("domain", DOMAINS.values(), ids=DOMAINS.keys())
@pytest.mark.parametrize("in_thread", [False, True], ids=["other-group", "other-thread"])
def test_free_charged_to_allocating_group(tracker_live: None, helper: Helper, domain: int,
                                          in_thread: bool) -> None:
    n, size = 100, 300
    _free_elsewhere(helper, domain, 0, size, in_thread)  # warm up
    base = _free_elsewhere(helper, domain, 0, size, in_thread)
    got = delta(_free_elsewhere(helper, domain, n, size, in_thread), base)
    assert got.freed_bytes == n * size
    assert got.freed_count == n
    assert got.live_bytes == -n * size
    assert got.alloc_count == 0


def test_pymalloc_fallthrough_counted_once(tracker_counts: None, helper: Helper) -> None:
    raw_before = otel_alloc.domain_stats("raw")
    obj_before = otel_alloc.domain_stats("obj")
    helper.alloc_many(OBJ, 100_000, 20)
    raw_after = otel_alloc.domain_stats("raw")
    obj_after = otel_alloc.domain_stats("obj")
    assert obj_after.alloc_bytes - obj_before.alloc_bytes >= 20 * 100_000
    # Any RAW traffic in between comes from the interpreter, not from the 2 MB
    # that pymalloc handed down.
    assert raw_after.alloc_bytes - raw_before.alloc_bytes < 100_000


def test_process_totals_match_domains(tracker_live: None, helper: Helper) -> None:
    helper.alloc_many(RAW, 1000, 10)
    total = otel_alloc.process_stats()
    parts = [otel_alloc.domain_stats(d) for d in ("raw", "mem", "obj")]
    assert total.alloc_bytes >= sum(p.alloc_bytes for p in parts) - 10_000
    assert total.alloc_count > 0


def test_nested_groups_charge_innermost(tracker_counts: None, helper: Helper) -> None:
    outer, inner = otel_alloc.Group(), otel_alloc.Group()
    with outer:
        o0 = outer.stats()
        with inner:
            helper.alloc_many(RAW, 5000, 10)
        o1 = outer.stats()
    assert inner.stats().alloc_bytes >= 50_000
    assert o1.alloc_bytes - o0.alloc_bytes < 50_000


def test_stats_are_typed(tracker_counts: None) -> None:
    g = otel_alloc.Group()
    with g:
        _ = [bytes(10) for _ in range(10)]
    s: Any = g.stats()
    assert isinstance(s, otel_alloc.Stats)
    assert s.alloc_count >= 10
