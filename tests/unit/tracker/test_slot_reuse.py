"""Group slots reused under long-lived blocks and racing RAW hooks: never charged wrongly."""

from __future__ import annotations

import threading

import pytest

import otel_alloc
from otel_alloc import tracker
from tests.unit.conftest import RAW, Helper

SLOT_MASK = (1 << 20) - 1


def _slot(gid: int) -> int:
    return gid & SLOT_MASK


def _gen16(gid: int) -> int:
    return (gid >> 20) & 0xFFFF


@pytest.mark.parametrize("mode", ["live", "estimate"])
@pytest.mark.parametrize("domain", [RAW, 1, 2], ids=["raw", "mem", "obj"])
def test_block_outliving_70000_reuses_of_its_slot(helper: Helper, domain: int, mode: str) -> None:
    """A live block keeps 16 bits of its group's generation: after 65,536
    reuses of its slot they repeat. The slot is held back instead, so the
    block's free is never charged to an unrelated group. In estimate mode
    the block (about 1 MB against a 4 KiB mean) is sampled for sure and
    stands for its own size."""
    otel_alloc.install(mode, max_groups=2)
    try:
        block = helper.ffi.new("uintptr_t[]", 1)  # made outside: it would be tagged too
        # Warm the call path outside any group: its first call leaves caches
        # alive, which would be tagged with the owner's slot.
        assert helper.module.lib.h_alloc_many(domain, 1_000_698, 1, block) == 0
        helper.free_many(domain, block, 1)
        owner = otel_alloc.Group()
        with owner:
            assert helper.module.lib.h_alloc_many(domain, 1_000_698, 1, block) == 0
        owner_slot, owner_gen16 = _slot(owner.id), _gen16(owner.id)
        owner.release()
        freed_before = otel_alloc.counters().released_group_free_bytes
        collided = []
        for _ in range(70_000 * 2):  # two slots, taken in turn
            g = otel_alloc.Group()
            if _slot(g.id) == owner_slot and _gen16(g.id) == owner_gen16:
                # The old code reached here: free the block under the group
                # whose 16-bit tag repeats the owner's.
                helper.free_many(domain, block, 1)
                collided.append(g.stats())
            g.release()
            if collided:
                break
        assert collided == []
        counters = otel_alloc.counters()
        assert counters.slots_parked == 1
        assert counters.groups_dropped == 0  # the other slot served meanwhile
        after = otel_alloc.Group()
        helper.free_many(domain, block, 1)
        assert after.stats().freed_bytes == 0 and after.stats().live_bytes >= 0
        assert otel_alloc.counters().released_group_free_bytes - freed_before == 1_000_698
        after.release()
        # Leaving the owner's group replaced the context's variables while it
        # was current: those objects are live blocks tagged with its slot too,
        # until the context changes again. Once nothing tagged is alive, the
        # parked slot comes back into use.
        for _ in range(3):
            churn = otel_alloc.Group()
            with churn:
                pass
            churn.release()
        slots = {_slot(g.id) for g in [otel_alloc.Group(), otel_alloc.Group()]}
        assert owner_slot in slots
    finally:
        otel_alloc.uninstall()


@pytest.mark.parametrize("mode", ["counts", "live", "estimate"])
def test_eight_threads_charge_one_shared_group_through_raw(helper: Helper, mode: str) -> None:
    """Many threads inside one span (one group), RAW allocations without the GIL."""
    otel_alloc.install(mode)
    try:
        lib = helper.module.lib
        shared = otel_alloc.Group()
        per_thread, size = 20_000, 4_101  # a size nothing else here allocates
        start = threading.Barrier(8)

        def work() -> None:
            with shared:
                start.wait()
                assert lib.h_alloc_many(RAW, size, per_thread, helper.ffi.NULL) == 0

        before = shared.stats()
        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        got = shared.stats()
        # Count the blocks of the test's size exactly: the threads' own start
        # and stop allocate small blocks of other sizes.
        assert got.alloc_count - before.alloc_count >= 8 * per_thread
        assert (got.alloc_bytes - before.alloc_bytes) % size < size
        big = got.alloc_bytes - before.alloc_bytes
        small_allowance = (got.alloc_count - before.alloc_count - 8 * per_thread) * 512
        assert 8 * per_thread * size <= big <= 8 * per_thread * size + small_allowance
        if mode == "live":
            assert got.freed_count - before.freed_count >= 8 * per_thread
            assert got.live_bytes - before.live_bytes < 64 * 1024
        if mode == "estimate":  # 160,000 blocks of about the mean, every one freed
            assert abs(got.live_bytes - before.live_bytes) < 64 * 1024
        shared.release()
    finally:
        otel_alloc.uninstall()


def test_raw_hooks_racing_release_never_charge_the_next_owner(helper: Helper) -> None:
    """RAW hooks of threads whose group is released and its slot reused
    meanwhile: the new group (never entered by anyone) gets nothing."""
    otel_alloc.install("counts", max_groups=4)
    try:
        lib = helper.module.lib
        stop = threading.Event()
        current = [otel_alloc.Group()]

        def hammer() -> None:
            while not stop.is_set():
                tracker.enter_group(current[0].id)
                lib.h_alloc_many(RAW, 5003, 200, helper.ffi.NULL)
                tracker.exit_group()

        threads = [threading.Thread(target=hammer) for _ in range(3)]
        for t in threads:
            t.start()
        wrongly_charged = []
        try:
            for _ in range(3000):
                old = current[0]
                current[0] = otel_alloc.Group()
                old.release()
                bystander = otel_alloc.Group()  # likely the slot just released
                stats = tracker.finish_group(bystander.id, release=True)
                if stats is not None and stats.alloc_bytes != 0:
                    wrongly_charged.append(stats)
        finally:
            stop.set()
            for t in threads:
                t.join()
            current[0].release()
        assert wrongly_charged == []
    finally:
        otel_alloc.uninstall()
