"""What a profile covers: the program's own work, and the span or thread asked for.

The tracer's own work is left out of profiles when samples are collected:
its threads (the watch thread, the report endpoint, the shutdown worker, and
the OpenTelemetry SDK's export threads the runner sets up) and any sample
whose stack runs through otel_alloc's code. The frames of the runner that
lead to the program (``otel_alloc.cli`` and ``runpy``) are cut from the
outer end of every stack, so stacks start at the program.

Threads are named ``name (native id)`` in profiles; ``--thread`` matches a
thread by that full label or by its name alone, exactly and case-sensitively.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from http.server import ThreadingHTTPServer
from socket import socket

from otel_alloc.profiling.profile import Frame, Profile

PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
OWN_THREAD_PREFIXES = ("otel-alloc-", "OtelBatch", "OtelPeriodicExportingMetricReader")
# Native ids of the tracer's short-lived unnamed threads (the report
# endpoint's request threads): they often exit before their samples are
# drained, and what they allocate while starting (a RAW block, no stack)
# cannot be told apart by name or stack. Bounded: ids are reused eventually.
# A set for the lookup (once per drained sample), the deque for the order.
_OWN_THREAD_ORDER: deque[int] = deque()
_OWN_THREAD_IDS: set[int] = set()
_OWN_THREADS_KEPT = 256
_own_threads_lock = threading.Lock()


def _is_runner_frame(frame: Frame) -> bool:
    name = frame.filename
    return (name.startswith(PACKAGE_DIR) or name == "<frozen runpy>"
            or os.path.basename(name) == "runpy.py")


def program_stack(stack: tuple[Frame, ...]) -> tuple[Frame, ...] | None:
    """The program's part of a sampled stack (innermost first), or None for our own work.

    Runner frames at the outer end are cut; a stack that still runs through
    otel_alloc (a watch task, the report endpoint, the processor's Python
    code), or that had nothing but runner frames, is the tracer's own.
    """
    end = len(stack)
    while end > 0 and _is_runner_frame(stack[end - 1]):
        end -= 1
    kept = stack[:end]
    if stack and not kept:
        return None
    if any(f.filename.startswith(PACKAGE_DIR) for f in kept):
        return None
    if kept and all(os.path.basename(f.filename) == "threading.py" for f in kept):
        # A thread's start and exit bookkeeping: for the report endpoint's
        # request threads the only part that runs outside their pause.
        return None
    return kept


def thread_name(label: str) -> str:
    """``name`` of a ``name (native id)`` thread label."""
    name, sep, rest = label.rpartition(" (")
    return name if sep and rest.endswith(")") and rest[:-1].isdigit() else label


def is_own_thread(label: str) -> bool:
    """Whether a thread is the tracer's (or its SDK exporters'), not the program's."""
    return thread_name(label).startswith(OWN_THREAD_PREFIXES)


def note_own_thread() -> None:
    """Mark the calling thread as the tracer's: its samples are left out."""
    native_id = threading.get_native_id()
    with _own_threads_lock:
        if native_id in _OWN_THREAD_IDS:
            return
        _OWN_THREAD_ORDER.append(native_id)
        _OWN_THREAD_IDS.add(native_id)
        if len(_OWN_THREAD_ORDER) > _OWN_THREADS_KEPT:
            _OWN_THREAD_IDS.discard(_OWN_THREAD_ORDER.popleft())


def is_own_thread_id(native_id: int) -> bool:
    """Whether a thread marked by :func:`note_own_thread` had this native id."""
    return native_id in _OWN_THREAD_IDS


def thread_matches(label: str, wanted: str) -> bool:
    """``wanted`` is the thread's full label or its name (exact, case-sensitive)."""
    return wanted in (label, thread_name(label))


def restrict(profile: Profile, *, span: str | None = None,
             thread: str | None = None) -> Profile:
    """A copy of the profile with only one span name and/or thread.

    Raises:
        ValueError: Nothing in the profile has that span name or thread
            (the message lists what there is).
    """
    cells = profile.snapshot()
    for what, wanted, index, match in (
            ("span", span, 1, str.__eq__), ("thread", thread, 2, thread_matches)):
        if wanted is None:
            continue
        kept = {k: v for k, v in cells.items() if match(str(k[index]), wanted)}
        if not kept and cells:
            names = sorted({str(k[index]) for k in cells})
            shown = ", ".join(repr(n) for n in names[:10]) + (", …" if len(names) > 10 else "")
            raise ValueError(f"--{what} {wanted!r} matches nothing in the profile "
                             f"(there: {shown})")
        cells = kept
    out = Profile(sample_bytes=profile.sample_bytes, live=profile.live, pid=profile.pid)
    out.cells.update(cells)
    return out


class UnsampledHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server whose request threads are never sampled (the report endpoint)."""

    def process_request_thread(self, request: socket | tuple[bytes, socket],
                               client_address: object) -> None:
        """Handle one request with sampling paused on this thread."""
        # Imported here: importing this module loads no native code.
        from otel_alloc.tracker import sampler

        note_own_thread()  # what it allocated while starting is dropped too
        with sampler.paused():
            super().process_request_thread(request, client_address)
