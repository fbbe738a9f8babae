"""Native mode: the malloc family called by extension code, charged exactly.

The test helper (tests/native/helper.c) calls each member of the family
directly, as an extension module would, and reads the group's counters in C
just before and after the call, so the figures are exact, with no tolerance.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import otel_alloc
from otel_alloc import tracker
from tests.unit.conftest import NATIVE, NATIVE_GIL, RAW, Helper, installed

# The family as the helper numbers it: (name, a, b, bytes charged).
FAMILY = [
    ("malloc", 1000, 0, 1000),
    ("calloc", 10, 100, 1000),
    ("posix_memalign", 64, 1000, 1000),
    ("aligned_alloc", 64, 1024, 1024),
    ("memalign", 64, 1000, 1000),
    ("valloc", 1000, 0, 1000),
    ("pvalloc", 1000, 0, 1000),
    ("reallocarray", 10, 100, 1000),
]


@pytest.fixture(params=["counts", "live", "estimate"])
def native_any(request: pytest.FixtureRequest) -> Iterator[str]:
    with installed(request.param, native=True) as mode:
        yield mode


def _call(helper: Helper, fn: int, a: int, b: int, gid: int) -> tuple[tuple[int, ...], int]:
    delta = helper.ffi.new("uint64_t[4]")
    out = helper.ffi.new("uintptr_t *")
    assert helper.module.lib.h_native_call_measured(fn, a, b, gid, delta, out) == 0
    return tuple(delta), int(out[0])


def _free(helper: Helper, ptr: int, gid: int, fn: int = 0, alignment: int = 0,
          size: int = 0) -> tuple[int, ...] | None:
    delta = helper.ffi.new("uint64_t[4]")
    if helper.module.lib.h_native_free_measured(fn, ptr, alignment, size, gid, delta) != 0:
        return None
    return tuple(delta)


@pytest.mark.parametrize(("fn", "case"), list(enumerate(FAMILY)), ids=[f[0] for f in FAMILY])
def test_each_family_member_is_charged_exactly(helper: Helper, native_any: str, fn: int,
                                               case: tuple[str, int, int, int]) -> None:
    name, a, b, size = case
    if name == "pvalloc" and "vgpreload" in os.environ.get("LD_PRELOAD", ""):
        pytest.skip("valgrind aborts on pvalloc (it does not implement it)")
    with otel_alloc.Group() as group:
        got, ptr = _call(helper, fn, a, b, group.id)
        freed = _free(helper, ptr, group.id)
    assert got == (size, 1, 0, 0)
    assert freed == ((0, 0, size, 1) if native_any == "live" else (0, 0, 0, 0))
    # The group also holds what cffi (an extension too) allocated outside
    # the measured window: the window is exact, the total at least that.
    stats = group.stats()
    assert stats is not None and stats.native_bytes >= size
    group.release()


def test_realloc_is_an_allocation_and_a_free_of_the_old_block(helper: Helper,
                                                              native_live: None) -> None:
    with otel_alloc.Group() as group:
        _, ptr = _call(helper, 0, 1000, 0, group.id)
        delta = helper.ffi.new("uint64_t[4]")
        out = helper.ffi.new("uintptr_t *")
        assert helper.module.lib.h_native_realloc_measured(ptr, 5000, group.id, delta, out) == 0
        grown = tuple(delta)
        assert helper.module.lib.h_native_realloc_measured(out[0], 0, group.id, delta, out) == 0
        to_zero = tuple(delta)
    assert grown == (5000, 1, 1000, 1)
    # realloc(p, 0) frees p (glibc returns NULL): one free, nothing allocated.
    assert out[0] == 0 and to_zero == (0, 0, 5000, 1)
    group.release()


@pytest.mark.parametrize(("fn", "name"), [(1, "free_sized"), (2, "free_aligned_sized")])
def test_sized_frees(helper: Helper, native_live: None, fn: int, name: str) -> None:
    if not hasattr(ctypes.CDLL(None), name):
        pytest.skip(f"this C library has no {name} (C23; glibc 2.41+)")
    with otel_alloc.Group() as group:
        _, ptr = _call(helper, 3, 64, 1024, group.id)
        freed = _free(helper, ptr, group.id, fn, 64, 1024)
    assert freed == (0, 0, 1024, 1)
    group.release()


@pytest.mark.parametrize("domain", [NATIVE, NATIVE_GIL], ids=["without-gil", "with-gil"])
def test_many_blocks_with_and_without_the_gil(helper: Helper, native_any: str,
                                              domain: int) -> None:
    with otel_alloc.Group() as group:
        got = helper.alloc_measured(domain, 4096, 500, group.id)
    freed = (4096 * 500, 500) if native_any == "live" else (0, 0)
    assert got == (4096 * 500, 500, *freed)
    group.release()


def test_nothing_is_counted_twice(helper: Helper, native_live: None) -> None:
    """PyMem_RawMalloc calls libpython's malloc, which is never patched."""
    with otel_alloc.Group() as group:
        got = helper.alloc_measured(RAW, 4096, 300, group.id)
    assert got == (4096 * 300, 300, 4096 * 300, 300)
    group.release()


def test_native_off_charges_no_malloc(helper: Helper) -> None:
    otel_alloc.install("live", native=False)
    try:
        assert not tracker.native_enabled() and tracker.native_patched_slots() == 0
        with otel_alloc.Group() as group:
            got = helper.alloc_measured(NATIVE, 4096, 100, group.id)
        assert got == (0, 0, 0, 0)
        group.release()
    finally:
        otel_alloc.uninstall()


def test_a_free_from_another_thread_is_charged_to_the_allocating_group(
        helper: Helper, native_live: None) -> None:
    with otel_alloc.Group() as owner:
        _, ptr = _call(helper, 0, 7000, 0, owner.id)
    result: list[tuple[int, ...] | None] = []

    def free_elsewhere() -> None:
        with otel_alloc.Group() as other:
            result.append(_free(helper, ptr, owner.id))
        other.release()

    t = threading.Thread(target=free_elsewhere)
    t.start()
    t.join()
    assert result == [(0, 0, 7000, 1)]
    owner.release()


def test_threads_hammering_one_group(helper: Helper, native_live: None) -> None:
    threads_n, per_thread = 8, 2000
    group = otel_alloc.Group()
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads_n)

    def work() -> None:
        try:
            with group:
                barrier.wait()
                helper.alloc_many(NATIVE, 256, per_thread)
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    before = group.stats()
    threads = [threading.Thread(target=work) for _ in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = group.stats()
    assert not errors and before is not None and after is not None
    assert after.native_bytes - before.native_bytes == threads_n * per_thread * 256
    group.release()


def _build_library(tmp_path: Path) -> Path:
    source = tmp_path / "lib_late.c"
    source.write_text(
        "#include <stdlib.h>\n"
        "void *late_alloc(size_t n) { return malloc(n); }\n"
        "void late_free(void *p) { free(p); }\n")
    library = tmp_path / "liblate.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-O1", "-o", str(library), str(source)],
                   check=True)
    return library


def test_library_loaded_after_install_is_patched(tmp_path: Path, helper: Helper,
                                                 native_live: None) -> None:
    lib = ctypes.CDLL(str(_build_library(tmp_path)))  # dlopen'ed after install
    # Called through their addresses from the helper, measured in C: ctypes
    # allocates natively around its own calls.
    alloc_fn = ctypes.cast(lib.late_alloc, ctypes.c_void_p).value
    free_fn = ctypes.cast(lib.late_free, ctypes.c_void_p).value
    delta = helper.ffi.new("uint64_t[4]")
    out = helper.ffi.new("uintptr_t *")
    with otel_alloc.Group() as group:
        assert helper.module.lib.h_call_alloc_measured(alloc_fn, 3 * 2**20, group.id, delta,
                                                       out) == 0
        allocated = tuple(delta)
        assert helper.module.lib.h_call_free_measured(free_fn, out[0], group.id, delta) == 0
        freed = tuple(delta)
    assert allocated == (3 * 2**20, 1, 0, 0)
    assert freed == (0, 0, 3 * 2**20, 1)
    group.release()


def test_uninstall_restores_every_patched_entry(helper: Helper) -> None:
    for _ in range(3):
        otel_alloc.install("live", native=True)
        try:
            assert tracker.native_enabled() and tracker.native_patched_slots() > 0
            with otel_alloc.Group() as group:
                got = helper.alloc_measured(NATIVE, 1024, 10, group.id)
            assert got == (10240, 10, 10240, 10)
            group.release()
        finally:
            otel_alloc.uninstall()
        assert not tracker.native_enabled() and tracker.native_patched_slots() == 0


def test_native_is_on_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_ALLOC_NATIVE", raising=False)
    otel_alloc.install("counts")
    try:
        assert tracker.native_enabled() and tracker.native_patched_slots() > 0
    finally:
        otel_alloc.uninstall()
    monkeypatch.setenv("OTEL_ALLOC_NATIVE", "false")
    otel_alloc.install("counts")
    try:
        assert not tracker.native_enabled() and tracker.native_patched_slots() == 0
    finally:
        otel_alloc.uninstall()


def test_native_turns_on_for_an_installed_tracker_and_stays_until_uninstall() -> None:
    otel_alloc.install("counts", native=False)
    try:
        assert not tracker.native_enabled()
        otel_alloc.install("counts")  # not asked for: an installed tracker stays as it is
        assert not tracker.native_enabled()
        assert otel_alloc.install("counts", native=True) == "counts"
        assert tracker.native_enabled()
        otel_alloc.install("counts")  # a later install without native leaves it on
        assert tracker.native_enabled()
    finally:
        otel_alloc.uninstall()
    assert not tracker.native_enabled()


def test_native_setting_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_ALLOC_NATIVE", "sometimes")
    with pytest.raises(otel_alloc.ConfigError, match=r"OTEL_ALLOC_NATIVE.*sometimes"):
        otel_alloc.install("counts")
    assert tracker.installed_mode() is None


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_counts_native_exactly(helper: Helper, native_live: None) -> None:
    pid = os.fork()
    if pid == 0:  # child: report through the exit status only
        code = 1
        try:
            with otel_alloc.Group() as group:
                got = helper.alloc_measured(NATIVE, 512, 100, group.id)
            code = 0 if got == (51200, 100, 51200, 100) else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_native_runs_in_a_fresh_interpreter_from_the_environment(tmp_path: Path) -> None:
    script = tmp_path / "native_env.py"
    script.write_text(
        "import otel_alloc\n"
        "from otel_alloc import tracker\n"
        "otel_alloc.install('counts')\n"
        "print(tracker.native_enabled())\n")
    for value, expected in (("true", "True"), ("false", "False"), ("0", "False")):
        env = {**os.environ, "OTEL_ALLOC_NATIVE": value}
        done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == expected, value


@pytest.mark.skipif("debug" in os.environ.get("PYTHONMALLOC", "") or sys.flags.dev_mode,
                    reason="PyMem debug hooks put headers around RAW blocks")
def test_a_block_freed_through_the_other_route_is_charged(helper: Helper,
                                                          native_live: None) -> None:
    """PyMem_RawMalloc then free(), and malloc then PyMem_RawFree: both found."""
    with otel_alloc.Group() as group:
        raw_block = helper.malloc(RAW, 3000)
        native_block = helper.malloc(NATIVE, 5000)
        freed_raw = _free(helper, raw_block, group.id)  # free() of a RAW block
        delta = helper.ffi.new("uint64_t[4]")
        assert helper.module.lib.h_free_measured(RAW, native_block, group.id, delta) == 0
        freed_native = tuple(delta)  # PyMem_RawFree of a malloc'ed block
    assert freed_raw == (0, 0, 3000, 1)
    assert freed_native == (0, 0, 5000, 1)
    group.release()


def test_a_processor_turns_native_on_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    from otel_alloc import AllocationSpanProcessor

    monkeypatch.delenv("OTEL_ALLOC_NATIVE", raising=False)
    otel_alloc.install("counts", native=False)
    try:
        AllocationSpanProcessor().shutdown()  # not asked: the installed tracker stays as it is
        assert not tracker.native_enabled()
        AllocationSpanProcessor(native=True).shutdown()
        assert tracker.native_enabled()
    finally:
        otel_alloc.uninstall()
