"""Estimate mode: counts stay exact, live bytes are an unbiased estimate.

The statistical checks allow several standard deviations of the estimate
(about sqrt(live * mean) for blocks much smaller than the mean), so a
correct tracker fails them with a probability under one in a million; the
others (freed blocks take their estimate back, blocks far larger than
the mean count their own size) allow only what the group's own Python
objects may add when one of them is sampled.
"""

from __future__ import annotations

import math
import threading

import pytest

import otel_alloc
from otel_alloc import tracker
from otel_alloc.validation import ConfigError
from tests.unit.conftest import DOMAINS, OBJ, RAW, Helper, gc_paused

MEAN = 4096


def _keep(helper: Helper, group: otel_alloc.Group, domain: int, size: int, n: int) -> object:
    """n blocks of `size` allocated under `group`; their pointers (kept outside it)."""
    ptrs = helper.ffi.new("uintptr_t[]", n)
    with group:
        assert helper.module.lib.h_alloc_many(domain, size, n, ptrs) == 0
    return ptrs


def _sd(live: int, size: int, mean: int = MEAN) -> float:
    """Standard deviation of the estimate of `live` bytes in blocks of `size`."""
    p = -math.expm1(-size / mean)
    return math.sqrt((live // size) * size * size * (1 - p) / p)


@pytest.mark.parametrize("domain", DOMAINS.values(), ids=DOMAINS.keys())
@pytest.mark.parametrize("size", [64, 700, 3000])
def test_kept_blocks_are_estimated_within_six_sigma(tracker_estimate: None, helper: Helper,
                                                     domain: int, size: int) -> None:
    n = 30_000
    group = otel_alloc.Group()
    with gc_paused():
        ptrs = _keep(helper, group, domain, size, n)
        got = group.stats()
    kept = n * size
    # What else the group charged (entering it, the call) is a few hundred
    # bytes at most, each small block standing for about MEAN if sampled.
    assert got.alloc_count >= n and got.alloc_bytes >= kept
    assert abs(got.live_bytes - kept) < 6 * _sd(kept, size) + 4 * MEAN, (got, kept)
    # Only the estimate is reported: no block count, no freed or peak figures.
    assert (got.live_count, got.freed_bytes, got.freed_count, got.peak_bytes) == (0, 0, 0, 0)
    helper.free_many(domain, ptrs, n)
    group.release()


@pytest.mark.parametrize("domain", DOMAINS.values(), ids=DOMAINS.keys())
def test_freed_blocks_take_their_estimate_back(tracker_estimate: None, helper: Helper,
                                               domain: int) -> None:
    """Some 50 MB of blocks allocated and freed leave the estimate where it was.

    Not to the byte: entering the group makes a few Python objects of its
    own, freed later, and one of them may be sampled (standing for about
    MEAN bytes). Every one of the blocks, sampled or not, is gone.
    """
    group = otel_alloc.Group()
    with gc_paused():
        before = group.stats().live_bytes
        for size, n in ((16, 2000), (500, 2000), (5000, 2000), (1 << 20, 40)):
            helper.free_many(domain, _keep(helper, group, domain, size, n), n)
        got = group.stats()
    assert got.alloc_bytes >= 2000 * (16 + 500 + 5000) + 40 * (1 << 20)
    assert abs(got.live_bytes - before) <= 2 * (MEAN + 256), (got, before)
    assert tracker.counters().untracked_frees == 0  # misses are the rule here, not counted
    group.release()


def test_blocks_far_larger_than_the_mean_count_their_own_size(tracker_estimate: None,
                                                               helper: Helper) -> None:
    size = 4 << 20  # p = 1 - exp(-1024): every such block is sampled, weight = size
    group = otel_alloc.Group()
    with gc_paused():
        ptrs = _keep(helper, group, RAW, size, 4)
        got = group.stats().live_bytes
    # Besides the four blocks, the call's own small objects may be sampled
    # (each standing for about MEAN bytes).
    assert 4 * size <= got < 4 * size + 64 * MEAN
    helper.free_many(RAW, ptrs, 4)


def test_realloc_moves_the_estimate_with_the_block(tracker_estimate: None,
                                                   helper: Helper) -> None:
    group = otel_alloc.Group()
    with gc_paused():
        ptrs = _keep(helper, group, RAW, 8 << 20, 2)
        with group:
            grown = [helper.realloc(RAW, ptrs[i], 16 << 20) for i in range(2)]
        got = group.stats().live_bytes
        assert 2 * (16 << 20) <= got < 2 * (16 << 20) + 64 * MEAN
        for p in grown:
            helper.free(RAW, p)
        assert group.stats().live_bytes < 64 * MEAN


def test_threads_hammering_leave_no_estimate_behind(tracker_estimate: None,
                                                    helper: Helper) -> None:
    lib, ffi = helper.module.lib, helper.ffi
    groups = [otel_alloc.Group() for _ in range(6)]
    errors: list[BaseException] = []

    def hammer(i: int) -> None:
        try:
            ptrs = ffi.new("uintptr_t[]", 400)
            domain = (RAW, OBJ, 1)[i % 3]
            for _ in range(50):
                with groups[i]:
                    assert lib.h_alloc_many(domain, 40 + 300 * i, 400, ptrs) == 0
                lib.h_free_many(domain, ptrs, 400)
        except BaseException as exc:  # reported below, in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    # Each group's own blocks are all freed; what Python code in the `with`
    # kept (nothing, once the threads are gone) cannot leave more than a
    # few samples' worth.
    for g in groups:
        assert abs(g.stats().live_bytes) < 16 * MEAN, g.stats()
        g.release()


def test_the_mean_reaches_the_tracker_and_is_validated(helper: Helper) -> None:
    otel_alloc.uninstall()
    try:
        otel_alloc.install("estimate", estimate_bytes="64KiB")
        assert tracker.estimate_bytes() == 64 * 1024
    finally:
        otel_alloc.uninstall()
    for bad in (0, 63, 128 << 20, "x", True):
        with pytest.raises(ConfigError) as err:
            otel_alloc.install("estimate", estimate_bytes=bad)  # type: ignore[arg-type]
        assert err.value.setting == "estimate_bytes" and err.value.value == bad
    assert tracker.installed_mode() is None


def test_bad_variable_fails_before_install(monkeypatch: pytest.MonkeyPatch) -> None:
    otel_alloc.uninstall()
    monkeypatch.setenv("OTEL_ALLOC_ESTIMATE_BYTES", "1TiB")
    with pytest.raises(ConfigError) as err:
        otel_alloc.install("counts")
    assert err.value.setting == "OTEL_ALLOC_ESTIMATE_BYTES" and err.value.value == "1TiB"
    assert tracker.installed_mode() is None


def test_a_smaller_mean_gives_a_closer_estimate(helper: Helper) -> None:
    """The same blocks under a 64 KiB and a 256 B mean: the error bound shrinks with it."""
    n, size = 20_000, 100
    errors = {}
    for mean in (64 * 1024, 256):
        otel_alloc.install("estimate", estimate_bytes=mean)
        try:
            group = otel_alloc.Group()
            with gc_paused():
                ptrs = _keep(helper, group, OBJ, size, n)
                errors[mean] = group.stats().live_bytes - n * size
                assert abs(errors[mean]) < 6 * _sd(n * size, size, mean) + 4 * mean
            helper.free_many(OBJ, ptrs, n)
            group.release()
        finally:
            otel_alloc.uninstall()


@pytest.mark.parametrize("domain", [OBJ, RAW], ids=["OBJ", "RAW"])
def test_a_countdown_drawn_under_an_earlier_mean_is_not_kept(helper: Helper,
                                                             domain: int) -> None:
    """After a reinstall with a smaller mean, the thread draws afresh.

    A countdown drawn under a 64 MiB mean (the largest) is longer than the
    2 MB below with probability 0.97. Were it kept, the blocks it passed
    over would never be sampled and the estimate would come out about 0.
    """
    n, size, mean = 20_000, 100, 256
    otel_alloc.install("estimate", estimate_bytes=64 << 20)
    try:
        group = otel_alloc.Group()
        helper.free_many(domain, _keep(helper, group, domain, size, 100), 100)
        group.release()
    finally:
        otel_alloc.uninstall()
    otel_alloc.install("estimate", estimate_bytes=mean)
    try:
        group = otel_alloc.Group()
        with gc_paused():
            ptrs = _keep(helper, group, domain, size, n)
            error = group.stats().live_bytes - n * size
        assert abs(error) < 6 * _sd(n * size, size, mean) + 4 * mean, error
        helper.free_many(domain, ptrs, n)
        group.release()
    finally:
        otel_alloc.uninstall()
