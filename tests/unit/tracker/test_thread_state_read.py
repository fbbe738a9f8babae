"""The hooks read the current thread state without calling the interpreter.

From CPython 3.12 the thread state is an interpreter thread-local whose
address install finds from the API's own code (compat/tstate_slot.c); each
thread then learns the address on its first hook. These tests check that the
address is found on the interpreters this project tests, and that what the
hooks read through it is the calling thread's state: in a thread that
existed before install (its first hook finds the address), in threads made
after, and across a subinterpreter switch on one thread.
"""

from __future__ import annotations

import platform
import sys
import threading

import pytest

import otel_alloc
from otel_alloc.tracker import _binding
from tests.unit.conftest import MEM, OBJ, Helper, charged, gc_paused, installed


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
    """Eight threads measured at once: each one's group gets exactly its blocks.

    Each thread allocates blocks of its own size while the others run, with
    the GIL handed over every microsecond, so a hook that read another
    thread's state (and charged its group) would change a count or a byte
    total. The loop counts with small ints: on 3.14 a range iterator comes
    from a free list the threads share, so whether one is allocated inside
    a thread's window depends on the other threads.
    """
    start = threading.Barrier(8)
    results: dict[int, otel_alloc.Stats] = {}

    def worker(i: int) -> None:
        def work(real: bool) -> None:
            n = 0
            while n < 20:
                n += 1
                if real:
                    helper.alloc_many(OBJ, 16 * (i + 1), 50)

        work(True)  # first calls, outside the measurement
        start.wait(10)
        results[i] = charged(work)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        with gc_paused():  # each worker's charged() leaves it off, as it found it
            threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
    finally:
        sys.setswitchinterval(interval)
    assert sorted(results) == list(range(8))
    for i, stats in results.items():
        assert (stats.alloc_count, stats.alloc_bytes) == (1000, 1000 * 16 * (i + 1))
