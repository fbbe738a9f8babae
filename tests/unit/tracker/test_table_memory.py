"""The live-mode pointer table's own memory: where it comes from, and failing to get it.

Where from: the table stays out of the program's malloc heap.

A table of a few MiB is below glibc's dynamic mmap threshold once the program
has freed a big mapped block (NumPy does, all the time), so a table taken from
malloc lands in the program's heap: it changes where the program's own blocks
go and how far glibc trims the heap. On a NumPy job that cost the program a
quarter more page faults in one tracer mode and not in another. The table's
slots are mapped pages instead; this checks that growing it leaves the heap's
in-use bytes alone even after the threshold was raised.

Failing: when the table cannot grow, the blocks it cannot hold are counted
as allocated and kept apart ("unheld"), so the figures stay exact: freed is
allocated less live less unheld. An address-space limit makes the growth's
mapping fail for real, with room left for the program's own objects.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys

import pytest

import otel_alloc
from tests.unit.conftest import OBJ, Helper, installed, other_allocator

CHILD = r"""
import ctypes, json
import otel_alloc

libc = ctypes.CDLL(None)
names = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
         "uordblks", "fordblks", "keepcost")
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in names]
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
# Freeing a mapped 24 MiB block lifts glibc's mmap threshold to 24 MiB: from
# then on a calloc'd table of up to that size would come from the heap.
libc.free(libc.malloc(24 << 20))

otel_alloc.install("live")
heap0 = libc.mallinfo2().uordblks
table0 = otel_alloc.memory_usage().table_bytes
chain = None
for _ in range(300_000):
    chain = (chain,)  # pymalloc blocks only: no container grows in the heap
table1 = otel_alloc.memory_usage().table_bytes
heap1 = libc.mallinfo2().uordblks
print(json.dumps({"table_growth": table1 - table0, "heap_growth": heap1 - heap0}))
"""


def test_table_growth_does_not_touch_the_programs_heap() -> None:
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "mallinfo2"):
        pytest.skip("this C library has no mallinfo2 (glibc 2.33+)")
    other = other_allocator()
    if other is not None:
        pytest.skip(f"glibc's heap figures mean nothing under {other}")
    if os.environ.get("PYTHONMALLOC", "pymalloc") not in ("pymalloc", "pymalloc_debug"):
        pytest.skip("the objects must come from pymalloc, not the heap measured")
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                         timeout=120, check=True)
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    # 300k live blocks need a table of several MiB ...
    assert figures["table_growth"] > 4 << 20, figures
    # ... none of which may come from the heap the program allocates from.
    assert figures["heap_growth"] < 1 << 20, figures


UNHELD_CHILD = r"""
import json, resource
import otel_alloc

def vm_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize")

otel_alloc.install("live")
failures0 = otel_alloc.counters().tracking_failures
chain = None
with otel_alloc.Group() as g:
    for _ in range(600_000):
        chain = (chain,)
    usage = otel_alloc.memory_usage()
    to_growth = usage.table_capacity * 3 // 4 - usage.live_blocks
    # Room for the blocks up to the table's next growth and some more (each
    # under 64 bytes with its share of pymalloc's arenas), not for the 1.5x
    # larger table that growth maps beside the old one.
    room = to_growth * 64 + (4 << 20)
    assert room < usage.table_capacity * 24, (room, usage)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (vm_bytes() + room, hard))
    try:
        while otel_alloc.counters().tracking_failures == failures0:
            for _ in range(1000):
                chain = (chain,)
        for _ in range(5000):
            chain = (chain,)
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    failures = otel_alloc.counters().tracking_failures - failures0
    # With the limit gone the table grows again and holds new blocks.
    for _ in range(200_000):
        chain = (chain,)
    regrown = otel_alloc.counters().tracking_failures - failures0 - failures
    chain = None
    after = g.stats()
print(json.dumps({"failures": failures, "regrown_failures": regrown,
                  "alloc": after.alloc_count, "live": after.live_count,
                  "freed": after.freed_count, "live_bytes": after.live_bytes}))
"""


def test_blocks_the_table_cannot_hold_keep_the_figures_exact() -> None:
    if other_allocator() == "a sanitizer's allocator":
        pytest.skip("a sanitizer's shadow memory does not fit under an address-space limit")
    out = subprocess.run([sys.executable, "-c", UNHELD_CHILD], capture_output=True, text=True,
                         timeout=300, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["failures"] >= 5000, got  # the table really could not grow
    assert got["regrown_failures"] == 0, got
    # Every allocation is live, freed, or one the table could not hold.
    assert got["alloc"] - got["live"] - got["freed"] == got["failures"], got
    # What stays live: CPython's free list of 1-tuples (2000 kept for reuse)
    # and the group's own context bookkeeping.
    assert 0 <= got["live_bytes"] < 2100 * 64 and got["live"] < 2100 + 300, got


HUGE_CHILD = r"""
import json
import otel_alloc

def huge_kib():
    with open("/proc/self/smaps_rollup") as f:
        return sum(int(line.split()[1]) for line in f if line.startswith("AnonHugePages:"))

otel_alloc.install("live")
before = huge_kib()
with otel_alloc.Group():
    held = [bytes(16 + i % 48) for i in range(600_000)]
usage = otel_alloc.memory_usage()
print(json.dumps({"huge_kib": huge_kib() - before, "table_bytes": usage.table_bytes,
                  "live_blocks": usage.live_blocks,
                  "bytes_per_live_block": usage.bytes_per_live_block}))
"""


def _thp_mode() -> str:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            text = f.read()
    except OSError:
        return "unavailable"
    return text.split("[", 1)[1].split("]", 1)[0] if "[" in text else "unavailable"


@pytest.mark.skipif(_thp_mode() != "madvise", reason=(
    "only the kernel's 'madvise' setting of transparent huge pages tells the table's "
    f"advice apart (this kernel: {_thp_mode()})"))
def test_a_large_table_asks_for_huge_pages() -> None:
    """A table of 4 MiB and more is advised onto transparent huge pages.

    Under the kernel's "madvise" setting only advised mappings get them, and
    neither pymalloc's arenas nor glibc's heap advise: huge pages that appear
    while the table grows to some 16 MiB are the table's. The advice adds no
    byte: the bookkeeping per live block stays as it was.
    """
    proc = subprocess.run([sys.executable, "-c", HUGE_CHILD], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["live_blocks"] >= 600_000
    assert got["table_bytes"] >= 8 << 20
    assert got["huge_kib"] >= 2048, got  # at least one 2 MiB extent
    assert got["huge_kib"] * 1024 <= got["table_bytes"], got  # and none but the table's
    assert got["bytes_per_live_block"] <= 32, got


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_large_table_across_fork_keeps_both_sides_exact(helper: Helper) -> None:
    """A table of some 16 MiB (on huge pages where the kernel gives them), forked.

    The child starts from an empty table and counts its own blocks exactly;
    the parent's figures are untouched by what the child frees.
    """
    held_blocks, size = 600_000, 32
    with installed("live"):
        held_group = otel_alloc.Group()
        with held_group:
            ptrs = helper.alloc_many(OBJ, size, held_blocks, keep=True)
        assert otel_alloc.memory_usage().table_bytes >= 8 << 20
        live_before = held_group.stats().live_bytes  # and the helper's own blocks
        assert live_before >= held_blocks * size
        pid = os.fork()
        if pid == 0:  # child: report failures through the exit code only
            code = 0
            try:
                if held_group.stats().live_bytes != 0:
                    code = 2
                else:
                    helper.free_many(OBJ, ptrs, held_blocks)  # untracked here
                    child_group = otel_alloc.Group()
                    with child_group:
                        measured = helper.alloc_measured(OBJ, 24, 50_000, child_group.id)
                    if measured != (24 * 50_000, 50_000, 24 * 50_000, 50_000):
                        code = 3
                    elif held_group.stats().freed_bytes != 0:
                        code = 4
            except BaseException:
                code = 5
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert held_group.stats().live_bytes == live_before
        freed_before = held_group.stats().freed_count
        helper.free_many(OBJ, ptrs, held_blocks)
        assert held_group.stats().live_bytes == live_before - held_blocks * size
        assert held_group.stats().freed_count == freed_before + held_blocks
