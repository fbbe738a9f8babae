from __future__ import annotations

import functools
import gc
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pytest

import otel_alloc
from tests.native.build import build_helper

RAW, MEM, OBJ = 0, 1, 2
# The test helper's domains beyond CPython's (tests/native/helper.c): plain
# malloc/free without and with the GIL held, and PyMem_RawMalloc/RawFree with it.
NATIVE, NATIVE_GIL, RAW_GIL = 3, 4, 5
DOMAINS = {"raw": RAW, "mem": MEM, "obj": OBJ}


def other_allocator() -> str | None:
    """Why glibc's malloc is not the one in use (a sanitizer, valgrind), or None."""
    preload = os.environ.get("LD_PRELOAD", "")
    if "asan" in preload or "tsan" in preload:
        return "a sanitizer's allocator"
    with open("/proc/self/maps") as maps:
        if "vgpreload" in maps.read():
            return "valgrind's allocator"
    return None


@dataclass
class Helper:
    """Exact-size allocations in a chosen domain, made in C."""

    module: ModuleType

    @property
    def ffi(self) -> Any:
        return self.module.ffi

    def malloc(self, domain: int, size: int) -> int:
        return int(self.module.lib.h_malloc(domain, size))

    def calloc(self, domain: int, n: int, size: int) -> int:
        return int(self.module.lib.h_calloc(domain, n, size))

    def realloc(self, domain: int, ptr: int, size: int) -> int:
        return int(self.module.lib.h_realloc(domain, ptr, size))

    def free(self, domain: int, ptr: int) -> None:
        self.module.lib.h_free(domain, ptr)

    def alloc_many(self, domain: int, size: int, n: int, keep: bool = False) -> Any:
        out = self.ffi.new("uintptr_t[]", n) if keep else self.ffi.NULL
        failed = self.module.lib.h_alloc_many(domain, size, n, out)
        assert failed == 0
        return out if keep else None

    def alloc_measured(self, domain: int, size: int, n: int,
                       group_id: int) -> tuple[int, int, int, int]:
        """Allocate and free n blocks; what group ``group_id`` took meanwhile.

        Read in C before and after the loop: (alloc bytes, alloc count, freed
        bytes, freed count). No Python code runs in between in this thread.
        """
        delta = self.ffi.new("uint64_t[4]")
        assert self.module.lib.h_alloc_many_measured(domain, size, n, group_id, delta) == 0
        return delta[0], delta[1], delta[2], delta[3]

    def free_many(self, domain: int, ptrs: Any, n: int) -> None:
        self.module.lib.h_free_many(domain, ptrs, n)


# CPython 3.10 gives a code object its LOAD_GLOBAL/LOAD_ATTR cache (two
# PyMem blocks, 7 and 32 bytes for a short function) on its 1024th call. A
# function that measured windows share (entering and leaving a group, the
# helper's methods) reached it inside a window once the suite grew: real
# allocations, rightly charged, that only one side of charged()'s
# comparison had. Called this often at the start, they have it before.
_OPCACHE_CALLS = 1100 if sys.version_info[:2] == (3, 10) else 0


def _warm_opcache(helper: Helper) -> None:
    if not _OPCACHE_CALLS:
        return
    ours = otel_alloc.installed_mode() is None  # else a fixture installed it first
    if ours:
        otel_alloc.install("counts")
    try:
        group = otel_alloc.Group()
        for _ in range(_OPCACHE_CALLS):
            with group:
                helper.alloc_many(OBJ, 8, 0)
                helper.alloc_measured(OBJ, 8, 0, group.id)
                helper.free(OBJ, helper.malloc(OBJ, 8))
                helper.free(OBJ, helper.realloc(OBJ, helper.calloc(OBJ, 1, 8), 16))
                helper.free_many(OBJ, helper.ffi.NULL, 0)
        group.release()
    finally:
        if ours:
            otel_alloc.uninstall()


@pytest.fixture(scope="session")
def helper(tmp_path_factory: pytest.TempPathFactory) -> Helper:
    made = Helper(build_helper(tmp_path_factory.mktemp("native_helper")))
    _warm_opcache(made)
    return made


@contextmanager
def installed(mode: str, native: bool = False) -> Iterator[str]:
    """The tracker installed in `mode` (native memory too when `native`) for
    the block, uninstalled after it."""
    otel_alloc.install(mode, native=native)
    try:
        yield mode
    finally:
        otel_alloc.uninstall()


@pytest.fixture
def uninstalled() -> Iterator[None]:
    """No tracker installed when the test starts, and none left after it."""
    otel_alloc.uninstall()
    try:
        yield
    finally:
        otel_alloc.uninstall()


@pytest.fixture
def native_live() -> Iterator[None]:
    with installed("live", native=True):
        yield


@pytest.fixture
def tracker_counts() -> Iterator[None]:
    with installed("counts"):
        yield


@pytest.fixture
def tracker_live() -> Iterator[None]:
    with installed("live"):
        yield


@pytest.fixture
def tracker_estimate() -> Iterator[None]:
    with installed("estimate"):
        yield


@pytest.fixture(params=["counts", "live", "estimate"])
def tracker_any(request: pytest.FixtureRequest) -> Iterator[str]:
    with installed(request.param) as mode:
        yield mode


@pytest.fixture(params=["live", "estimate"])
def tracker_tables(request: pytest.FixtureRequest) -> Iterator[str]:
    """A tracker in each mode that keeps a pointer table."""
    with installed(request.param) as mode:
        yield mode


def delta(after: otel_alloc.Stats, before: otel_alloc.Stats) -> otel_alloc.Stats:
    """Field-wise difference of two Stats (peak excluded)."""
    return otel_alloc.Stats(
        alloc_bytes=after.alloc_bytes - before.alloc_bytes,
        alloc_count=after.alloc_count - before.alloc_count,
        freed_bytes=after.freed_bytes - before.freed_bytes,
        freed_count=after.freed_count - before.freed_count,
        live_bytes=after.live_bytes - before.live_bytes,
        live_count=after.live_count - before.live_count,
    )


def charged(work: Any) -> otel_alloc.Stats:
    """What ``work(True)`` charges to a group, minus what ``work(False)`` does.

    Entering and leaving a group allocates a little (context variable
    updates); running the same code path with and without the allocations
    and subtracting leaves exactly the allocations under test. One
    measurement, no vote: a count that is off is a failure. The cyclic
    garbage collector is off meanwhile: a collection started by any thread
    runs finalizers in the measured window (real allocations, not the test's).
    """
    with gc_paused():
        return _charged_once(work)


@contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off for the block (restored after)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _charged_once(work: Any) -> otel_alloc.Stats:
    # Warm caches (attribute lookups, cffi type cache, the context's first
    # variables) with one full cycle before anything is measured.
    warm = otel_alloc.Group()
    with warm:
        work(False)
    warm.release()
    base = otel_alloc.Group()
    with base:
        work(False)
    # Snapshot at once: objects the group machinery left alive are freed
    # later, under whatever group is current then, but still charged here.
    base_stats = base.stats()
    group = otel_alloc.Group()
    with group:
        work(True)
    result = delta(group.stats(), base_stats)
    base.release()
    group.release()
    return result


@pytest.fixture(autouse=True)
def _processors_shut_down(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Shut down every processor a test built, so its watch thread stops.

    A processor left running keeps draining the process-wide event and
    sample buffers: a later test that counts events or drops found them
    taken (seen as a flaky ``events_dropped`` under load).
    """
    from otel_alloc.otel.processor import AllocationSpanProcessor

    built: list[AllocationSpanProcessor] = []
    original = AllocationSpanProcessor.__init__

    @functools.wraps(original)  # keeps the signature tests inspect
    def recording_init(self: AllocationSpanProcessor, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        built.append(self)  # only built ones: a constructor that raised left nothing running

    monkeypatch.setattr(AllocationSpanProcessor, "__init__", recording_init)
    yield
    for processor in built:
        processor.shutdown()  # safe to call twice
