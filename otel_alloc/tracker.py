"""Installing the native tracker and reading what it counts.

The tracker hooks CPython's RAW, MEM and OBJ allocator domains and charges
every allocation to the *group* current in the running context. Groups are
entered with ``with group:``; spans enter them through the span processor.
"""

from __future__ import annotations

import threading
from contextvars import ContextVar
from types import TracebackType

from otel_alloc import _core, config
from otel_alloc.stats import AllocEvent, Counters, MemoryUsage, Stats, ThreadStats

MODES = ("counts", "live")
_MODE_CODES = {"counts": _core.MODE_COUNTS, "live": _core.MODE_LIVE}
_MODE_NAMES = {v: k for k, v in _MODE_CODES.items()}

DEFAULT_MAX_GROUPS = 8192
DEFAULT_THRESHOLD = 64 * 1024 * 1024
DEFAULT_EVENT_CAPACITY = 1024

# The group charged for allocations in the running context. The MEM/OBJ hooks
# read it through PyContextVar_Get, so it follows threads, asyncio tasks and
# Context.run exactly as other context variables do.
#
# It is only ever *set*, never reset to "unset": ContextVar.reset() of a first
# value deletes the variable, and CPython's delete clears the variable's cache
# before allocating the new HAMT, so the hook's own read during that
# allocation would re-fill the cache with the old value. A set writes the
# cache after its allocation, which keeps the hook's view right.
_CURRENT_GROUP: ContextVar[int] = ContextVar("otel_alloc.group", default=0)
CURRENT_GROUP = _CURRENT_GROUP  # for attribution, which sets it on every attach/detach
_SCOPES: ContextVar[tuple[int, ...]] = ContextVar("otel_alloc.scopes", default=())
_install_lock = threading.Lock()


class TrackerError(RuntimeError):
    """The tracker cannot do what was asked (install conflict, unsupported build)."""


def install(
    mode: str | None = None,
    *,
    max_groups: int | None = None,
    threshold_bytes: int | str | None = None,
    event_capacity: int | None = None,
) -> str:
    """Hook CPython's allocators and start counting.

    Args:
        mode: ``"counts"`` (bytes and allocations per group, no per-block
            table) or ``"live"`` (adds freed, live and peak bytes, with a
            pointer table). Default: ``OTEL_ALLOC_MODE``, else ``"counts"``.
        max_groups: Groups open at once; more go to the overflow group.
            Default: ``OTEL_ALLOC_MAX_GROUPS``, else 8192.
        threshold_bytes: A single allocation at least this big is reported
            as an event; 0 turns it off. Default: ``OTEL_ALLOC_THRESHOLD_BYTES``,
            else 64 MiB.
        event_capacity: Size of the buffer of such events; when full, events
            are dropped and counted. Default: ``OTEL_ALLOC_EVENT_BUFFER``, else 1024.

    Returns:
        The mode installed.

    Raises:
        ConfigError: A setting has a bad value.
        TrackerError: Installed already with another mode, or the interpreter
            is a free-threaded build.

    """
    name = config.choice("mode", mode, "OTEL_ALLOC_MODE", "counts", MODES)
    groups = config.integer("max_groups", max_groups, "OTEL_ALLOC_MAX_GROUPS",
                            DEFAULT_MAX_GROUPS, 1, 1_000_000)
    threshold = config.size("threshold_bytes", threshold_bytes, "OTEL_ALLOC_THRESHOLD_BYTES",
                            DEFAULT_THRESHOLD)
    capacity = config.integer("event_capacity", event_capacity, "OTEL_ALLOC_EVENT_BUFFER",
                              DEFAULT_EVENT_CAPACITY, 1, 1_000_000)
    if _core.free_threaded_build():
        raise TrackerError(
            "otel_alloc does not support free-threaded CPython builds (Py_GIL_DISABLED): "
            "its MEM/OBJ accounting relies on the GIL"
        )
    with _install_lock:
        if _core.set_context_var(_CURRENT_GROUP) != _core.OK:
            raise TrackerError("could not register the attribution context variable")
        rc = _core.install(_MODE_CODES[name], groups, threshold, capacity)
    if rc == _core.ERR_MODE_CONFLICT:
        raise TrackerError(
            f"otel_alloc is installed in mode {installed_mode()!r}; call uninstall() "
            f"before installing in mode {name!r}"
        )
    if rc == _core.ERR_NOMEM:
        raise MemoryError("otel_alloc could not allocate its tables")
    if rc not in (_core.OK, _core.ALREADY):
        raise TrackerError(f"otel_alloc install failed (code {rc})")
    _core.set_thread_group(_CURRENT_GROUP.get())
    return name


def uninstall() -> None:
    """Stop counting and unhook.

    A hook that another tool wrapped since (tracemalloc started later, say)
    stays in place as a pass-through, so neither tool loses its hooks.
    Calling it when not installed does nothing.
    """
    with _install_lock:
        _core.uninstall()


def installed_mode() -> str | None:
    """The installed mode, or ``None`` when not installed."""
    return _MODE_NAMES.get(_core.mode())


def enable() -> None:
    """Resume counting new allocations (frees are always accounted).

    Raises:
        TrackerError: The tracker is not installed.

    """
    if _core.set_enabled(True) != _core.OK:
        raise TrackerError("otel_alloc is not installed")


def disable() -> None:
    """Stop counting new allocations without unhooking.

    Frees of blocks counted earlier are still accounted, so live figures
    stay exact. Raises :class:`TrackerError` when not installed.
    """
    if _core.set_enabled(False) != _core.OK:
        raise TrackerError("otel_alloc is not installed")


def is_enabled() -> bool:
    """Whether new allocations are being counted."""
    return _core.mode() != _core.MODE_NONE and _core.is_enabled()


def hook_status() -> dict[str, dict[str, bool]]:
    """Per domain, whether our hook is in the allocator chain and outermost."""
    bits = _core.hook_status()
    return {
        name: {
            "in_chain": bool(bits & (_core.HOOK_IN_CHAIN << d)),
            "on_top": bool(bits & (_core.HOOK_ON_TOP << d)),
        }
        for d, name in ((0, "raw"), (1, "mem"), (2, "obj"))
    }


def set_threshold(threshold_bytes: int | str) -> None:
    """Change the single-allocation event threshold (0 turns events off)."""
    _core.set_threshold(config.size("threshold_bytes", threshold_bytes, "", 0))


class Group:
    """An allocation group: what the code running inside it allocates.

    ``with group:`` makes it current in the running context (nestable; the
    innermost group is charged). Figures are read with :meth:`stats`. A
    closed group takes no new allocations, but frees of its blocks are still
    charged to it until it is released; its id is never confused with a later
    group's.

    When the group table is full the group is bound to the shared overflow
    group (``overflowed`` is True) and the drop is counted.
    """

    __slots__ = ("id",)

    def __init__(self) -> None:
        if _core.mode() == _core.MODE_NONE:
            raise TrackerError("otel_alloc is not installed; call otel_alloc.install() first")
        self.id: int = _core.group_new()

    @property
    def overflowed(self) -> bool:
        """True when the group table was full and this is the overflow group."""
        return self.id == _core.GROUP_OVERFLOW

    def __enter__(self) -> Group:
        enter_group(self.id)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        exit_group()

    def stats(self) -> Stats:
        """Current figures; an all-zero :class:`Stats` once released."""
        return _core.group_stats(self.id) or Stats()

    def close(self) -> None:
        """Stop charging new allocations to this group."""
        _core.group_close(self.id)

    def release(self) -> None:
        """Give the slot back; later frees of its blocks are no longer charged."""
        _core.group_release(self.id)

    def __repr__(self) -> str:
        return f"Group(id={self.id:#x})"


def enter_group(gid: int) -> None:
    """Make group ``gid`` current in the running context (see :class:`Group`)."""
    _SCOPES.set((*_SCOPES.get(), _CURRENT_GROUP.get()))
    _CURRENT_GROUP.set(gid)
    _core.set_thread_group(gid)


def exit_group() -> None:
    """Undo the innermost :func:`enter_group` of the running context."""
    scopes = _SCOPES.get()
    if not scopes:
        return
    _SCOPES.set(scopes[:-1])
    _CURRENT_GROUP.set(scopes[-1])
    _core.set_thread_group(scopes[-1])


def current_group_id() -> int:
    """Id of the group current in the running context (0: none)."""
    return _CURRENT_GROUP.get()


def group_stats(gid: int) -> Stats | None:
    """Figures of group ``gid``; ``None`` when the id is released or unknown."""
    return _core.group_stats(gid)


def unattributed_stats() -> Stats:
    """Allocations made with no group current (or under a closed group)."""
    return _core.group_stats(_core.GROUP_NONE) or Stats()


def overflow_stats() -> Stats:
    """Allocations charged to the overflow group."""
    return _core.group_stats(_core.GROUP_OVERFLOW) or Stats()


def process_stats() -> Stats:
    """Figures for the whole process since install (peak: live mode)."""
    return _core.process_stats()


def domain_stats(domain: str) -> Stats:
    """Figures for one allocator domain: ``"raw"``, ``"mem"`` or ``"obj"``."""
    codes = {"raw": _core.DOMAIN_RAW, "mem": _core.DOMAIN_MEM, "obj": _core.DOMAIN_OBJ}
    if domain not in codes:
        raise config.ConfigError("domain", domain, "one of 'raw', 'mem', 'obj'")
    return _core.domain_stats(codes[domain])


def thread_stats() -> list[ThreadStats]:
    """Figures per OS thread that allocated since install (exited ones too)."""
    return _core.threads_stats()


def current_thread_stats() -> ThreadStats:
    """Figures of the calling thread."""
    return _core.current_thread_stats()


def reset_peaks() -> None:
    """Set the process and per-thread high-water marks to their current level."""
    _core.reset_peaks()


def memory_usage() -> MemoryUsage:
    """Memory the tracker itself uses."""
    return _core.memory_usage()


def counters() -> Counters:
    """Health counters: drops, overflow and untracked frees."""
    return _core.counters()


def drain_events(max_events: int = 1024) -> list[AllocEvent]:
    """Take the pending large-allocation events out of the native buffer."""
    return _core.drain_events(max_events)
