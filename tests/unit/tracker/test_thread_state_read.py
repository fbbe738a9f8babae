"""The hooks read the current thread state without calling the interpreter.

From CPython 3.12 the thread state is an interpreter thread-local whose
address install finds from the API's own code (compat/tstate_slot.c); each
thread then learns the address on its first hook. These tests check that the
address is found on the interpreters this project tests, and that what the
hooks read through it is the calling thread's state: in a thread that
existed before install (its first hook finds the address) and in threads
made after (subinterpreters: test_subinterpreters.py). The byte forms the
finder recognises are fed to it directly (compat/tstate_code.c).
"""

from __future__ import annotations

import platform
import sys
import threading

import pytest

import otel_alloc
from otel_alloc.tracker import _binding
from tests.unit.conftest import MEM, OBJ, Helper, charged, installed


@pytest.mark.skipif(sys.version_info < (3, 12) or platform.machine() != "x86_64"
                    or sys.platform != "linux",
                    reason="the direct read is for x86-64 Linux from 3.12; "
                    "before 3.12 the hooks always read directly")
def test_install_finds_the_thread_state_variable() -> None:
    # The pyenv builds (shared libpython: general-dynamic TLS) and Debian's
    # (static: local-exec) both have code install recognises; a build it
    # does not recognise still works, through the API call.
    with installed("counts"):
        assert _binding.tstate_direct()


def test_every_thread_reads_its_own_state_directly() -> None:
    """The main thread, one started before install, and eight after.

    2: what a hook reads is the state the API gives that thread, read
    without calling it (1 would be through the API, 0 another thread's).
    """
    found: dict[str, int] = {}
    go = threading.Event()

    def older() -> None:
        go.wait(10)
        found["older"] = _binding.tstate_agrees()

    def newer(name: str) -> None:
        found[name] = _binding.tstate_agrees()

    before = threading.Thread(target=older)
    before.start()
    with installed("counts"):
        expected = 2 if _binding.tstate_direct() else 1
        found["main"] = _binding.tstate_agrees()
        go.set()
        before.join(10)
        after = [threading.Thread(target=newer, args=(f"new{i}",)) for i in range(8)]
        for t in after:
            t.start()
        for t in after:
            t.join(10)
    assert found == {name: expected for name in ("main", "older", *(f"new{i}" for i in range(8)))}


# The getter's first bytes in the builds the CI runs (read from the
# binaries), and the forms no build here has: tstate_code.c's cases.
_REAL_GETTERS = {
    # pyenv 3.12.1, shared libpython: sub $8,%rsp; lea idx(%rip),%rdi;
    # call __tls_get_addr; mov (%rax),%rax
    "3.12 general-dynamic": ("4883ec0866488d3df4c92600666648e8dc10e3ff488b004883c408c3",
                             (3, 12 + 0x26C9F4)),
    "3.13 general-dynamic": ("4883ec0866488d3d147b2500666648e87c4fdfff488b004883c408c3",
                             (3, 12 + 0x257B14)),
    # Debian's 3.14 and 3.15, linked into the executable: mov %fs:-24,%rax
    "3.14 local-exec": ("f30f1efa64488b0425e8ffffffc3", (1, -24)),
    "3.15 local-exec": ("f30f1efa64488b0425e0ffffffc3", (1, -32)),
}
_OTHER_GETTERS = {
    "local-exec, no endbr64": ("64488b0425f0ffffffc3", (1, -16)),
    "local-exec, frame pointer": ("554889e564488b0425f0ffffff5dc3", (1, -16)),
    "initial-exec": ("488b051000000064488b00c3", (2, 7 + 0x10)),
    "initial-exec, endbr64 and frame pointer": ("f30f1efa554889e5488b05f0ffffff64488b005dc3",
                                                (2, 15 - 0x10)),
    "general-dynamic, frame pointer": ("554889e566488d3d00010000666648e800000000488b005dc3",
                                       (3, 12 + 0x100)),
    "PLT entry": ("ff2500100000", (4, 6 + 0x1000)),
    "PLT entry, endbr64, bnd jmp": ("f30f1efaf2ff25fcffffff", (4, 11 - 4)),
}
_NOT_GETTERS = {
    "frame pointer without its pop": "554889e564488b0425f0ffffffc3",
    "local-exec into another register": "64488b1425e8ffffffc3",
    "load then more work": "64488b0425e8ffffff4885c0c3",
    "initial-exec without the TLS load": "488b051000000048c3",
    "general-dynamic, another call": "4883ec0866488d3df4c92600e8dc10e3ff488b00c3",
    "a call to the API instead": "e900000000",
    "empty": "",
}


@pytest.mark.parametrize("name", sorted({**_REAL_GETTERS, **_OTHER_GETTERS}))
def test_getter_forms_are_recognised(name: str) -> None:
    code, expected = {**_REAL_GETTERS, **_OTHER_GETTERS}[name]
    assert _binding.tstate_code_form(bytes.fromhex(code)) == expected
    # Cut short anywhere: nothing, or (once every byte it checks is there)
    # the same answer; never a form read from past the end.
    whole = bytes.fromhex(code)
    answers = {_binding.tstate_code_form(whole[:cut]) for cut in range(len(whole))}
    assert answers <= {(0, 0), expected}
    assert (0, 0) in answers


@pytest.mark.parametrize("name", sorted(_NOT_GETTERS))
def test_other_code_is_not_taken_for_a_getter(name: str) -> None:
    assert _binding.tstate_code_form(bytes.fromhex(_NOT_GETTERS[name])) == (0, 0)


@pytest.mark.parametrize("mode", ["counts", "live"])
def test_a_thread_started_before_install_is_charged_exactly(mode: str,
                                                            helper: Helper) -> None:
    go, done = threading.Event(), threading.Event()
    results: list[otel_alloc.Stats] = []

    def work(real: bool) -> None:
        if real:
            helper.alloc_many(OBJ, 48, 100)
            helper.alloc_many(MEM, 300, 20)

    def worker() -> None:
        work(True)  # first calls (cffi makes the helper's functions on first use)
        go.wait(10)
        results.append(charged(work))
        done.set()

    t = threading.Thread(target=worker)
    t.start()  # before install: its first hook has to find its own slot
    with installed(mode):
        go.set()
        assert done.wait(20)
        t.join(10)
    assert results[0].alloc_count == 120
    assert results[0].alloc_bytes == 100 * 48 + 20 * 300


def test_threads_each_read_their_own_state(tracker_live: None, helper: Helper) -> None:
    """Eight threads at once, each in its own group, the GIL handed over often.

    Each thread's blocks are counted in C before and after each batch with
    no Python code of this thread in between, so its allocated figures are
    exact whatever the interpreter allocates for itself meanwhile (free
    lists shared between threads make that vary); a hook that read another
    thread's state would charge that thread's group, and this one's batch
    would come out short.

    The freed figures can come out higher, rightly: the helper takes the GIL
    for each block and hands it back, and another thread may then free a
    block this group allocated outside its batches, which live mode charges
    to this group. On 3.10 a frame is a heap block its code object keeps
    for reuse, so a frame one thread made inside its group can be freed by
    another thread that ran the same code: CI once found 432 bytes more
    freed in one thread's batches, the size of the 3.10 frame of this
    worker's list comprehension. What the batches found freed beyond their
    own blocks is bounded by what the group allocated outside them.
    """
    start = threading.Barrier(8)
    results: dict[int, tuple[int, ...]] = {}
    outside: dict[int, tuple[int, int]] = {}

    def worker(i: int) -> None:
        size = 16 * (i + 1)
        group = otel_alloc.Group()
        totals = [0, 0, 0, 0]
        start.wait(10)
        with group:
            for _ in range(20):
                batch = helper.alloc_measured(OBJ, size, 50, group.id)
                totals = [a + b for a, b in zip(totals, batch, strict=True)]
        whole = group.stats()
        group.release()
        results[i] = tuple(totals)
        outside[i] = (whole.alloc_bytes - totals[0], whole.alloc_count - totals[1])

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        sys.setswitchinterval(interval)
    assert sorted(results) == list(range(8)), results
    for i, (alloc_bytes, alloc_count, freed_bytes, freed_count) in results.items():
        own = 1000 * 16 * (i + 1)
        assert (alloc_bytes, alloc_count) == (own, 1000), (i, results[i])
        assert 0 <= freed_bytes - own <= outside[i][0], (i, results[i], outside[i])
        assert 0 <= freed_count - 1000 <= outside[i][1], (i, results[i], outside[i])
