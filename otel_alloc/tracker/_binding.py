"""The only module that touches the compiled tracker (``ffi`` / ``lib``).

Everything else in the package calls these thin, typed wrappers, so the C
interface (``otel_alloc/_native/api/binding.h``) stays in one place and the
rest of the code is plain Python. Importing this module loads the compiled
tracker and has it publish its attribution context variable and its C API
capsule (for the span-path extension) on the compiled module.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import fields
from typing import Any

from otel_alloc.tracker.errors import require_gil_build

require_gil_build()  # before the compiled tracker loads (see errors.py)

from otel_alloc.tracker import _tracker  # noqa: E402
from otel_alloc.tracker._tracker import ffi, lib  # noqa: E402
from otel_alloc.tracker.stats import (  # noqa: E402
    AllocEvent,
    Counters,
    MemoryUsage,
    RawSample,
    Stats,
    ThreadStats,
)

MODE_NONE: int = lib.OA_MODE_NONE
MODE_COUNTS: int = lib.OA_MODE_COUNTS
MODE_LIVE: int = lib.OA_MODE_LIVE
MODE_ESTIMATE: int = lib.OA_MODE_ESTIMATE
ESTIMATE_MEAN_MAX: int = lib.OA_ESTIMATE_MEAN_MAX

DOMAIN_RAW: int = lib.OA_DOMAIN_RAW
DOMAIN_MEM: int = lib.OA_DOMAIN_MEM
DOMAIN_OBJ: int = lib.OA_DOMAIN_OBJ
DOMAIN_NATIVE: int = lib.OA_DOMAIN_NATIVE

GROUP_NONE: int = lib.OA_GROUP_NONE
GROUP_OVERFLOW: int = lib.OA_GROUP_OVERFLOW

OK: int = lib.OA_OK
ALREADY: int = lib.OA_ALREADY
ERR_MODE_CONFLICT: int = lib.OA_ERR_MODE_CONFLICT
ERR_FREE_THREADED: int = lib.OA_ERR_FREE_THREADED
ERR_NOMEM: int = lib.OA_ERR_NOMEM
ERR_NOT_INSTALLED: int = lib.OA_ERR_NOT_INSTALLED
ERR_BAD_ARGUMENT: int = lib.OA_ERR_BAD_ARGUMENT
ERR_STALE_GROUP: int = lib.OA_ERR_STALE_GROUP
ERR_NATIVE: int = lib.OA_ERR_NATIVE
ERR_KEPT_HOOK: int = lib.OA_ERR_KEPT_HOOK

HOOK_IN_CHAIN: int = lib.OA_HOOK_IN_CHAIN
HOOK_ON_TOP: int = lib.OA_HOOK_ON_TOP


if lib.oa_publish() != lib.OA_OK:
    raise ImportError("otel_alloc: the native tracker could not publish its context variable")
# The contextvars.ContextVar holding the group of the running context (an id
# or a binding): created by the tracker, read by its MEM/OBJ hooks (see
# tracker.groups).
GROUP_VAR: ContextVar[int | tuple[int, object]] = _tracker.group_var


def _stats(c: Any) -> Stats:
    return Stats(c.alloc_bytes, c.alloc_count, c.freed_bytes, c.freed_count, c.live_bytes,
                 c.live_count, c.peak_bytes, c.native_bytes)


def _thread(c: Any) -> ThreadStats:
    return ThreadStats(native_id=c.native_id, alive=bool(c.alive), stats=_stats(c.stats))


def install(mode: int, max_groups: int, threshold: int, event_capacity: int) -> int:
    return int(lib.oa_install(mode, max_groups, threshold, event_capacity))


def uninstall() -> int:
    return int(lib.oa_uninstall())


def native_set(on: bool) -> int:
    return int(lib.oa_native_set(1 if on else 0))


def native_enabled() -> bool:
    return bool(lib.oa_native_enabled())


def native_patched_slots() -> int:
    return int(lib.oa_native_patched_slots())


def rehook() -> int:
    return int(lib.oa_rehook())


def mode() -> int:
    return int(lib.oa_mode())


def hook_status() -> int:
    return int(lib.oa_hook_status())


def set_enabled(enabled: bool) -> int:
    return int(lib.oa_set_enabled(1 if enabled else 0))


def is_enabled() -> bool:
    return bool(lib.oa_is_enabled())


def free_threaded_build() -> bool:
    return bool(lib.oa_free_threaded_build())


def tstate_direct() -> bool:
    return bool(lib.oa_tstate_direct())


def tstate_agrees() -> int:
    return int(lib.oa_tstate_agrees())


def tstate_code_form(code: bytes) -> tuple[int, int]:
    value = ffi.new("int64_t *")
    form = lib.oa_tstate_code_form(code, len(code), value)
    return int(form), int(value[0])


def set_threshold(threshold: int) -> None:
    lib.oa_set_threshold(threshold)


def set_estimate_mean(mean_bytes: int) -> int:
    return int(lib.oa_set_estimate_mean(mean_bytes))


def estimate_mean() -> int:
    return int(lib.oa_estimate_mean())


def set_thread_group(gid: int) -> None:
    lib.oa_set_thread_group(gid)


def thread_group() -> int:
    return int(lib.oa_thread_group())


def group_new() -> int:
    return int(lib.oa_group_new())


def group_close(gid: int) -> int:
    return int(lib.oa_group_close(gid))


def group_release(gid: int) -> int:
    return int(lib.oa_group_release(gid))


def group_stats(gid: int) -> Stats | None:
    out = ffi.new("oa_stats *")
    if lib.oa_group_stats(gid, out) != lib.OA_OK:
        return None
    return _stats(out)


def group_finish(gid: int, release: bool) -> Stats | None:
    out = ffi.new("oa_stats *")
    if lib.oa_group_finish(gid, 1 if release else 0, out) != lib.OA_OK:
        return None
    return _stats(out)


def events_pending() -> bool:
    return bool(lib.oa_events_pending())



def process_stats() -> Stats:
    out = ffi.new("oa_stats *")
    lib.oa_process_stats(out)
    return _stats(out)


def domain_stats(domain: int) -> Stats:
    out = ffi.new("oa_stats *")
    lib.oa_domain_stats(domain, out)
    return _stats(out)


def threads_stats(max_threads: int = 4096) -> list[ThreadStats]:
    out = ffi.new("oa_thread_stats[]", max_threads)
    n = lib.oa_threads_stats(out, max_threads)
    return [_thread(out[i]) for i in range(n)]


def current_thread_stats() -> ThreadStats:
    out = ffi.new("oa_thread_stats *")
    lib.oa_current_thread_stats(out)
    return _thread(out)


def reset_peaks() -> None:
    lib.oa_reset_peaks()


def _copy_struct(cls: Any, out: Any) -> Any:
    """An instance of dataclass ``cls`` from the C struct field of each of its names."""
    return cls(**{f.name: getattr(out, f.name) for f in fields(cls)})


def memory_usage() -> MemoryUsage:
    out = ffi.new("oa_memory *")
    lib.oa_memory_usage(out)
    return _copy_struct(MemoryUsage, out)  # type: ignore[no-any-return]


def counters() -> Counters:
    out = ffi.new("oa_counters *")
    lib.oa_counters_get(out)
    return _copy_struct(Counters, out)  # type: ignore[no-any-return]


_EVENT_BUF = ffi.new("oa_event[]", 1024)
_EVENT_LOCK = threading.Lock()
_SAMPLE_BUF = ffi.new("oa_sample[]", 4096)
_SAMPLE_LOCK = threading.Lock()


def drain_events(max_events: int = 1024) -> list[AllocEvent]:
    # One preallocated buffer, so that draining allocates nothing when there
    # is nothing to drain; the lock keeps two drainers off the same buffer.
    with _EVENT_LOCK:
        out = _EVENT_BUF
        n = lib.oa_drain_events(out, min(max_events, len(out)))
        return [
            AllocEvent(
                timestamp_ns=out[i].timestamp_ns,
                size=out[i].size,
                group=out[i].group,
                native_thread_id=out[i].native_id,
                domain=out[i].domain,
            )
            for i in range(n)
        ]


# -- sampler ---------------------------------------------------------------

SAMPLE_ALLOC: int = lib.OA_SAMPLE_ALLOC
SAMPLE_FREE: int = lib.OA_SAMPLE_FREE
STACK_NONE: int = lib.OA_STACK_NONE
STACK_DROPPED: int = lib.OA_STACK_DROPPED


def sampler_configure(mean_bytes: int, max_depth: int, capacity: int) -> int:
    return int(lib.oa_sampler_configure(mean_bytes, max_depth, capacity))


def sampler_mean() -> int:
    return int(lib.oa_sampler_mean())


def drain_samples(max_samples: int = 4096) -> list[RawSample]:
    with _SAMPLE_LOCK:
        out = _SAMPLE_BUF
        n = lib.oa_drain_samples(out, min(max_samples, len(out)))
        # One struct view per record (out[i].field made one per field), read
        # here, under the lock that keeps the next drain out of the buffer.
        return [RawSample(e.id, e.kind, e.stack, e.group, e.native_id, e.size, e.mean, e.domain)
                for e in ffi.unpack(out, n)]


def sampler_pause_thread(paused: bool) -> None:
    lib.oa_sampler_pause_thread(1 if paused else 0)


_FRAMES_MAX = 128


def stack_frames(stack: int, max_frames: int = _FRAMES_MAX) -> list[int]:
    """The frame ids of one interned stack, innermost first."""
    return stacks_frames([stack], max_frames)[0]


def stacks_frames(stacks: Sequence[int], max_frames: int = _FRAMES_MAX) -> list[list[int]]:
    """The frame ids of each of ``stacks``, innermost first, in one call.

    A drain batch's new stacks together: every call releases the GIL, and
    the tracker takes it back inside to read its stack table, so one call a
    stack was two hand-overs with the program a stack.
    """
    n = len(stacks)
    if n == 0:
        return []
    ids = ffi.new("uint32_t[]", list(stacks))
    out = ffi.new("uint32_t[]", n * max_frames)
    depths = ffi.new("int[]", n)
    lib.oa_stacks_frames(ids, n, out, max_frames, depths)
    return [list(ffi.unpack(out + i * max_frames, depths[i])) for i in range(n)]


def frames_info(frames: Sequence[int]) -> list[tuple[str, str, int] | None]:
    """``frame_info`` of each of ``frames`` in one call (None for an unknown id)."""
    n = len(frames)
    if n == 0:
        return []
    ids = ffi.new("uint32_t[]", list(frames))
    out = ffi.new("oa_frame_info[]", n)
    lib.oa_frames_get(ids, n, out)
    return [None if out[i].function == ffi.NULL else
            (ffi.string(out[i].function).decode("utf-8", "replace"),
             ffi.string(out[i].filename).decode("utf-8", "replace"), int(out[i].line))
            for i in range(n)]


def frame_info(frame: int) -> tuple[str, str, int] | None:
    """(function, file, line) of one frame id, or None for an unknown id."""
    return frames_info([frame])[0]


def sampler_stats() -> dict[str, int]:
    out = ffi.new("oa_sampler_stats *")
    lib.oa_sampler_stats_get(out)
    return {k: int(getattr(out, k)) for k in
            ("samples", "dropped", "frees", "frames", "stacks", "stacks_dropped", "bytes")}
