"""Reading what the tracker counts: the process, domains, threads, its own memory."""

from __future__ import annotations

import os

from otel_alloc.tracker import _binding
from otel_alloc.tracker.stats import (
    AllocEvent,
    Counters,
    MemoryUsage,
    ProcessStats,
    Stats,
    ThreadStats,
)
from otel_alloc.validation import ConfigError


def process_stats() -> ProcessStats:
    """Figures for the whole process since install (peak: live mode), and RSS.

    Besides the figures of :class:`Stats`, says what the process's resident
    memory is and how much of it the live figures explain: Python objects,
    native allocations, the tracker's own memory, and the rest (see
    :class:`ProcessStats`; estimates in estimate mode).
    """
    # The figures last: what reading RSS allocates is then in them.
    rss, anon = _resident()
    tracker_bytes = _binding.memory_usage().total_bytes
    native = _binding.domain_stats(_binding.DOMAIN_NATIVE)
    totals = _binding.process_stats()
    python_live = native_live = unexplained = None
    mode = _binding.mode()
    if mode in (_binding.MODE_LIVE, _binding.MODE_ESTIMATE):
        native_live = native.live_bytes
        python_live = totals.live_bytes - native_live
        if anon is not None:
            unexplained = anon - python_live - native_live - tracker_bytes
    return ProcessStats(*totals, rss_bytes=rss, rss_anon_bytes=anon,
                        python_live_bytes=python_live, native_live_bytes=native_live,
                        tracker_bytes=tracker_bytes, unexplained_bytes=unexplained,
                        live_estimated=mode == _binding.MODE_ESTIMATE)


def _resident() -> tuple[int | None, int | None]:
    """(RSS, RSS not backed by files) from /proc/self/statm, or Nones."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            fields = statm.read().split()
        page = os.sysconf("SC_PAGE_SIZE")
        resident, shared = int(fields[1]) * page, int(fields[2]) * page
    except (OSError, ValueError, IndexError):
        return None, None
    return resident, resident - shared


def domain_stats(domain: str) -> Stats:
    """Figures for one allocator domain.

    Args:
        domain: ``"raw"``, ``"mem"`` or ``"obj"`` (CPython's domains), or
            ``"native"`` (the ``malloc`` family called by extension modules
            and their libraries, counted in native mode).
    """
    codes = {name: code for code, name in DOMAIN_NAMES.items()}
    if domain not in codes:
        raise ConfigError("domain", domain, "one of 'raw', 'mem', 'obj', 'native'")
    return _binding.domain_stats(codes[domain])


def thread_stats() -> list[ThreadStats]:
    """Figures per OS thread that allocated since install (exited ones too)."""
    return _binding.threads_stats()


def current_thread_stats() -> ThreadStats:
    """Figures of the calling thread."""
    return _binding.current_thread_stats()


def reset_peaks() -> None:
    """Set the process and per-thread high-water marks to their current level."""
    _binding.reset_peaks()


def memory_usage() -> MemoryUsage:
    """Memory the tracker itself uses."""
    return _binding.memory_usage()


def counters() -> Counters:
    """Health counters: drops, overflow and untracked frees."""
    return _binding.counters()


def drain_events(max_events: int = 1024) -> list[AllocEvent]:
    """Take the pending large-allocation events out of the native buffer."""
    return _binding.drain_events(max_events)


# Domain codes as events and samples carry them -> the names domain_stats takes.
DOMAIN_NAMES = {_binding.DOMAIN_RAW: "raw", _binding.DOMAIN_MEM: "mem", _binding.DOMAIN_OBJ: "obj",
                _binding.DOMAIN_NATIVE: "native"}
