"""Installing and removing the native tracker, and switching it on and off.

The tracker hooks CPython's RAW, MEM and OBJ allocator domains and charges
every allocation to the *group* current in the running context
(:mod:`otel_alloc.tracker.groups`).
"""

from __future__ import annotations

import threading

from otel_alloc import validation as config
from otel_alloc.tracker import _binding
from otel_alloc.tracker.errors import FREE_THREADED_MESSAGE, ModeConflictError, TrackerError
from otel_alloc.tracker.groups import group_of_value

MODES = ("counts", "live", "estimate")
_MODE_CODES = {"counts": _binding.MODE_COUNTS, "live": _binding.MODE_LIVE,
               "estimate": _binding.MODE_ESTIMATE}
_MODE_NAMES = {v: k for k, v in _MODE_CODES.items()}

DEFAULT_MAX_GROUPS = 8192
DEFAULT_THRESHOLD = 64 * 1024 * 1024
DEFAULT_EVENT_CAPACITY = 1024
# Estimate mode's mean bytes between sampled blocks. A span's estimate of L
# live bytes in small blocks has a standard deviation of about
# sqrt(L * mean): 6 % at 1 MiB with 4 KiB (benchmarks/estimate_accuracy.py).
DEFAULT_ESTIMATE_BYTES = 4096
MIN_ESTIMATE_BYTES = 64
# Native mode is on unless turned off: it costs under 2 % of the instructions
# of counts or live mode (benchmarks/bench_native.py, README "Native memory").
DEFAULT_NATIVE = True

_install_lock = threading.Lock()


def install(
    mode: str | None = None,
    *,
    max_groups: int | None = None,
    threshold_bytes: int | str | None = None,
    event_capacity: int | None = None,
    native: bool | None = None,
    estimate_bytes: int | str | None = None,
) -> str:
    """Hook CPython's allocators and start counting.

    Args:
        mode: ``"counts"`` (bytes and allocations per group, no per-block
            table), ``"live"`` (adds freed, live and peak bytes, exact, with
            a pointer table of every block) or ``"estimate"`` (counts, plus
            live bytes estimated from a sample of the blocks: only
            ``live_bytes`` is filled, and it is an estimate). Default:
            ``OTEL_ALLOC_MODE``, else ``"counts"``.
        max_groups: Groups open at once; more go to the overflow group.
            Default: ``OTEL_ALLOC_MAX_GROUPS``, else 8192.
        threshold_bytes: A single allocation at least this big is reported
            as an event; 0 turns it off. Default: ``OTEL_ALLOC_THRESHOLD_BYTES``,
            else 64 MiB.
        event_capacity: Size of the buffer of such events; when full, events
            are dropped and counted. Default: ``OTEL_ALLOC_EVENT_BUFFER``, else 1024.
        native: Also charge the ``malloc`` family called by extension modules
            and the shared libraries they load (NumPy < 2.5 array data,
            Pillow images, libxml2 trees, C++ ``new``), found by patching
            their GOT entries, including libraries loaded later. Once on, it
            stays on until :func:`uninstall`; on a tracker installed already,
            only ``native=True`` (or the variable) turns it on. Default:
            ``OTEL_ALLOC_NATIVE``, else on.
        estimate_bytes: Estimate mode: the mean bytes between sampled
            blocks, from 64 B to 64 MiB. Smaller is closer and costs more.
            Default: ``OTEL_ALLOC_ESTIMATE_BYTES``, else 4 KiB.

    Returns:
        The mode installed.

    Raises:
        ConfigError: A setting has a bad value.
        ModeConflictError: Installed already with another mode.
        TrackerError: The interpreter is a free-threaded build, or native mode
            could not patch a library.

    """
    name = resolve_mode(mode)
    groups, capacity = check_install_settings(max_groups=max_groups,
                                              event_capacity=event_capacity)
    threshold = config.size("threshold_bytes", threshold_bytes, "OTEL_ALLOC_THRESHOLD_BYTES",
                            DEFAULT_THRESHOLD)
    estimate_mean = check_estimate_bytes(estimate_bytes)
    with_native = config.flag("native", native, "OTEL_ALLOC_NATIVE", DEFAULT_NATIVE)
    # On a tracker installed already, only an explicit request turns it on.
    asked_native = config.flag("native", native, "OTEL_ALLOC_NATIVE", False)
    if _binding.free_threaded_build():
        raise TrackerError(FREE_THREADED_MESSAGE)
    with _install_lock:
        if name == "estimate" and _binding.mode() == _binding.MODE_NONE:
            _binding.set_estimate_mean(estimate_mean)
        rc = _binding.install(_MODE_CODES[name], groups, threshold, capacity)
        native_rc = _binding.native_set(True) if with_native and rc == _binding.OK else rc
        if native_rc == _binding.ERR_NATIVE:
            _binding.uninstall()
    if native_rc == _binding.ERR_NATIVE:
        raise TrackerError("otel_alloc native mode could not make a library's GOT writable "
                           "(mprotect failed); installed nothing. Turn it off with "
                           "native=False / OTEL_ALLOC_NATIVE=false / --no-native")
    if asked_native and rc == _binding.ALREADY:
        rc = _binding.native_set(True)
        rc = _binding.ALREADY if rc == _binding.OK else rc
    if rc == _binding.ERR_MODE_CONFLICT:
        raise ModeConflictError(installed_mode() or "?", name)
    if rc == _binding.ERR_KEPT_HOOK:
        raise TrackerError(
            f"otel_alloc cannot install mode {name!r}: the hooks of an earlier 'counts' "
            "install are still wrapped by another allocation hook (tracemalloc, say) that "
            "was started after it, and counts mode's hooks pass frees by, which mode "
            f"{name!r} must see. Stop that tool first (tracemalloc.stop()), or install "
            "'counts'")
    if rc == _binding.ERR_NOMEM:
        raise MemoryError("otel_alloc could not allocate its tables")
    if rc not in (_binding.OK, _binding.ALREADY):
        raise TrackerError(f"otel_alloc install failed (code {rc})")
    _binding.set_thread_group(group_of_value(_binding.GROUP_VAR.get()))
    return name


def resolve_mode(mode: str | None = None, *, setting: str = "mode") -> str:
    """The tracker mode ``mode`` names, else ``OTEL_ALLOC_MODE``, else ``"counts"``.

    Args:
        mode: ``"counts"``, ``"live"``, ``"estimate"`` or None.
        setting: The name an error gives the argument (a CLI flag, say).

    Raises:
        ConfigError: It is none of :data:`MODES`.

    """
    return config.choice(setting, mode, "OTEL_ALLOC_MODE", "counts", MODES)


def check_estimate_bytes(estimate_bytes: int | str | None = None, *,
                         setting: str = "estimate_bytes") -> int:
    """Validate estimate mode's mean bytes between sampled blocks.

    Args:
        estimate_bytes: The mean, or None for ``OTEL_ALLOC_ESTIMATE_BYTES``.
        setting: The name an error gives the argument (a CLI flag, say).

    Returns:
        The mean, from the argument or ``OTEL_ALLOC_ESTIMATE_BYTES``.

    Raises:
        ConfigError: It is not a size from 64 B to 64 MiB.

    """
    return config.size(setting, estimate_bytes, "OTEL_ALLOC_ESTIMATE_BYTES",
                       DEFAULT_ESTIMATE_BYTES, MIN_ESTIMATE_BYTES,
                       maximum=_binding.ESTIMATE_MEAN_MAX)


def estimate_bytes() -> int:
    """Estimate mode's mean bytes between sampled blocks, as configured now."""
    return _binding.estimate_mean()


def check_install_settings(*, max_groups: int | None = None,
                           event_capacity: int | None = None) -> tuple[int, int]:
    """Validate the table and buffer sizes :func:`install` takes.

    Returns:
        ``(max_groups, event_capacity)``, resolved from the arguments or
        ``OTEL_ALLOC_MAX_GROUPS`` / ``OTEL_ALLOC_EVENT_BUFFER``.

    Raises:
        ConfigError: A setting has a bad value.

    """
    groups = config.integer("max_groups", max_groups, "OTEL_ALLOC_MAX_GROUPS",
                            DEFAULT_MAX_GROUPS, 1, 1_000_000)
    capacity = config.integer("event_capacity", event_capacity, "OTEL_ALLOC_EVENT_BUFFER",
                              DEFAULT_EVENT_CAPACITY, 1, 1_000_000)
    return groups, capacity


def uninstall() -> None:
    """Stop counting and unhook.

    A hook that another tool wrapped since (tracemalloc started later, say)
    stays in place as a pass-through, so neither tool loses its hooks.
    Calling it when not installed does nothing.
    """
    with _install_lock:
        _binding.uninstall()


def native_enabled() -> bool:
    """Whether native mode is on (see ``install(native=True)``)."""
    return _binding.native_enabled()


def native_patched_slots() -> int:
    """GOT entries of loaded libraries that lead to the native hooks now.

    0 after :func:`uninstall`: every patched entry is restored.
    """
    return _binding.native_patched_slots()


def installed_mode() -> str | None:
    """The installed mode, or ``None`` when not installed."""
    return _MODE_NAMES.get(_binding.mode())


def enable() -> None:
    """Resume counting new allocations (frees are always accounted).

    Raises:
        TrackerError: The tracker is not installed.

    """
    if _binding.set_enabled(True) != _binding.OK:
        raise TrackerError("otel_alloc is not installed")


def disable() -> None:
    """Stop counting new allocations without unhooking.

    Frees of blocks counted earlier are still accounted, so live figures
    stay exact. Raises :class:`TrackerError` when not installed.
    """
    if _binding.set_enabled(False) != _binding.OK:
        raise TrackerError("otel_alloc is not installed")


def is_enabled() -> bool:
    """Whether new allocations are being counted."""
    return _binding.mode() != _binding.MODE_NONE and _binding.is_enabled()


def hook_status() -> dict[str, dict[str, bool]]:
    """Per domain, whether our hook is in the allocator chain and outermost."""
    bits = _binding.hook_status()
    return {
        name: {
            "in_chain": bool(bits & (_binding.HOOK_IN_CHAIN << d)),
            "on_top": bool(bits & (_binding.HOOK_ON_TOP << d)),
        }
        for d, name in ((0, "raw"), (1, "mem"), (2, "obj"))
    }


def ensure_hooked() -> int:
    """Put back hooks another tool removed from the allocator chain.

    ``tracemalloc.stop()`` restores the allocator tracemalloc saved when it
    started; when it started before :func:`install`, that removes our hooks.
    The span processor's watch thread calls this every tick; a plain tracker
    user may call it. Counted in ``counters().rehooks``.

    Returns:
        How many domains were re-hooked (0 when all were in place).
    """
    return _binding.rehook()


def set_threshold(threshold_bytes: int | str) -> None:
    """Change the single-allocation event threshold (0 turns events off)."""
    _binding.set_threshold(config.size("threshold_bytes", threshold_bytes, "", 0))
