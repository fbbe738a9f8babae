"""Subinterpreters: their allocations pass through untracked and counted, never corrupt state.

An isolated subinterpreter (3.12+) has its own GIL, so its MEM/OBJ hooks run
concurrently with the main interpreter's. The tracker only tracks the main
interpreter; this stress test has three subinterpreters allocating in
threads while the main interpreter measures exact groups in live mode.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable

import pytest

import otel_alloc
from tests.unit.conftest import DOMAINS, Helper

# Allocates in every domain: small objects (OBJ), lists and strings (MEM),
# blocks over 512 bytes (pymalloc hands them to RAW) and a large buffer.
_SUBINTERP_WORK = """
import time
deadline = time.monotonic() + {seconds}
rounds = 0
while time.monotonic() < deadline:
    junk = [{{"k": i, "v": str(i) * 3}} for i in range(2000)]
    blobs = [bytes(600 + i) for i in range(50)] + [bytearray(70_000)]
    del junk, blobs
    rounds += 1
assert rounds > 0
"""


def _interpreter_api() -> tuple[Callable[[], object], Callable[[object, str], None],
                                 Callable[[object], None]] | None:
    """(create, run code, destroy) for isolated subinterpreters on this CPython."""
    try:  # 3.14+
        from concurrent import interpreters  # type: ignore[import-not-found]

        def run(interp: object, code: str) -> None:
            interp.exec(code)  # type: ignore[attr-defined]

        return interpreters.create, run, lambda interp: interp.close()  # type: ignore[attr-defined]
    except ImportError:
        pass
    try:  # 3.13
        import _interpreters  # type: ignore[import-not-found]

        def run13(iid: object, code: str) -> None:
            failure = _interpreters.exec(iid, code)
            assert failure is None, failure

        return (lambda: _interpreters.create("isolated")), run13, _interpreters.destroy
    except ImportError:
        pass
    try:  # 3.10-3.12 (isolated, with its own GIL, from 3.12)
        import _xxsubinterpreters as xx  # type: ignore[import-not-found]

        create = ((lambda: xx.create(isolated=True)) if sys.version_info >= (3, 12)
                  else xx.create)
        return create, xx.run_string, xx.destroy
    except ImportError:
        return None


API = _interpreter_api()
pytestmark = pytest.mark.skipif(API is None, reason="this CPython has no subinterpreter API")


def _start_subinterpreters(count: int, seconds: float) -> tuple[list[threading.Thread],
                                                                 list[BaseException]]:
    assert API is not None
    create, run, destroy = API
    errors: list[BaseException] = []
    interps = [create() for _ in range(count)]

    def body(interp: object) -> None:
        try:
            run(interp, _SUBINTERP_WORK.format(seconds=seconds))
        except BaseException as err:  # reported by the test
            errors.append(err)
        finally:
            destroy(interp)

    threads = [threading.Thread(target=body, args=(i,)) for i in interps]
    for t in threads:
        t.start()
    return threads, errors


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["counts", "live", "estimate"])
def test_three_subinterpreters_beside_exact_groups(mode: str, helper: Helper) -> None:
    otel_alloc.install(mode)
    try:
        before = otel_alloc.counters().subinterpreter_allocs
        threads, errors = _start_subinterpreters(3, seconds=2.0)
        measured = 0
        deadline = time.monotonic() + 30
        # At least one round: before 3.12 subinterpreters share the GIL, and
        # the threads may finish before this one runs again.
        while measured == 0 or (any(t.is_alive() for t in threads)
                                and time.monotonic() < deadline):
            for domain in DOMAINS.values():
                group = otel_alloc.Group()
                with group:
                    got = helper.alloc_measured(domain, 777, 40, group.id)
                group.release()
                freed = (40 * 777, 40) if mode == "live" else (0, 0)
                assert got == (40 * 777, 40, *freed)
                measured += 1
        for t in threads:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in threads)
        assert errors == []
        counters = otel_alloc.counters()
        assert counters.subinterpreter_allocs - before > 1000
        assert counters.subinterpreter_bytes > 0
        assert counters.tracking_failures == 0
    finally:
        otel_alloc.uninstall()


def test_main_interpreter_figures_exclude_subinterpreters(helper: Helper) -> None:
    """A group open in the main interpreter is not charged for a subinterpreter's work."""
    otel_alloc.install("live")
    try:
        before = otel_alloc.counters().subinterpreter_bytes
        group = otel_alloc.Group()
        with group:
            threads, errors = _start_subinterpreters(1, seconds=0.5)
            for t in threads:
                t.join(timeout=30)
        stats = group.stats()
        group.release()
        passed_through = otel_alloc.counters().subinterpreter_bytes - before
        assert errors == []
        # The group pays for what the main interpreter did under it (creating
        # the interpreter's state, starting and joining the thread: ~100 KiB
        # here), never for the subinterpreter's own work (megabytes).
        assert passed_through > 10 * 1024 * 1024
        assert stats.alloc_bytes < 512 * 1024, stats
    finally:
        otel_alloc.uninstall()
