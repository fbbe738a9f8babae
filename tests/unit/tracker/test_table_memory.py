"""The live-mode pointer table stays out of the program's malloc heap.

A table of a few MiB is below glibc's dynamic mmap threshold once the program
has freed a big mapped block (NumPy does, all the time), so a table taken from
malloc lands in the program's heap: it changes where the program's own blocks
go and how far glibc trims the heap. On a NumPy job that cost the program a
quarter more page faults in one tracer mode and not in another. The table's
slots are mapped pages instead; this checks that growing it leaves the heap's
in-use bytes alone even after the threshold was raised.
"""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys

import pytest

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
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                         timeout=120, check=True)
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    # 300k live blocks need a table of several MiB ...
    assert figures["table_growth"] > 4 << 20, figures
    # ... none of which may come from the heap the program allocates from.
    assert figures["heap_growth"] < 1 << 20, figures
