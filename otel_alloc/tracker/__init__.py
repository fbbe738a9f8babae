"""The native allocation tracker: hooks, groups, and what they count.

Owns the compiled tracker (``_tracker``, built by cffi from
``otel_alloc/_native``) and its one binding module (``_binding``), installing
and removing the hooks (``lifecycle``), allocation groups (``groups``), and
reading the figures (``counts``, value types in ``stats``).

May import: the standard library, :mod:`otel_alloc.validation` and
:mod:`otel_alloc.units`. Never OpenTelemetry, nor any other part of
otel_alloc: the OpenTelemetry side, profiling and the command line import
this package, never the other way round.

Names load lazily: importing this package loads no native code; the first
use of a function that needs the tracker does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from otel_alloc._lazy import lazy_getattr

if TYPE_CHECKING:
    from otel_alloc.tracker.counts import (
        counters,
        current_thread_stats,
        domain_stats,
        drain_events,
        memory_usage,
        process_stats,
        reset_peaks,
        thread_stats,
    )
    from otel_alloc.tracker.errors import ModeConflictError, TrackerError
    from otel_alloc.tracker.groups import (
        CURRENT_GROUP,
        GROUP_NONE,
        GROUP_OVERFLOW,
        Group,
        current_group_id,
        enter_group,
        exit_group,
        finish_group,
        group_stats,
        new_group_id,
        overflow_stats,
        release_group,
        unattributed_stats,
    )
    from otel_alloc.tracker.lifecycle import (
        DEFAULT_MAX_GROUPS,
        MODES,
        check_estimate_bytes,
        check_install_settings,
        disable,
        enable,
        ensure_hooked,
        estimate_bytes,
        hook_status,
        install,
        installed_mode,
        is_enabled,
        native_enabled,
        native_patched_slots,
        resolve_mode,
        set_threshold,
        uninstall,
    )
    from otel_alloc.tracker.stats import (
        AllocEvent,
        Counters,
        MemoryUsage,
        ProcessStats,
        Stats,
        ThreadStats,
    )

_SOURCES = {
    **dict.fromkeys(("counters", "current_thread_stats", "domain_stats", "drain_events",
                     "memory_usage", "process_stats", "reset_peaks", "thread_stats"),
                    "otel_alloc.tracker.counts"),
    **dict.fromkeys(("CURRENT_GROUP", "GROUP_NONE", "GROUP_OVERFLOW", "Group",
                     "current_group_id", "enter_group", "exit_group", "finish_group",
                     "group_stats", "new_group_id", "overflow_stats", "release_group",
                     "unattributed_stats"), "otel_alloc.tracker.groups"),
    **dict.fromkeys(("DEFAULT_MAX_GROUPS", "MODES", "check_estimate_bytes", "resolve_mode",
                     "check_install_settings", "disable", "enable", "ensure_hooked",
                     "estimate_bytes", "hook_status", "install", "installed_mode", "is_enabled",
                     "native_enabled", "native_patched_slots", "set_threshold", "uninstall"),
                    "otel_alloc.tracker.lifecycle"),
    "ModeConflictError": "otel_alloc.tracker.errors",
    "TrackerError": "otel_alloc.tracker.errors",
    **dict.fromkeys(("AllocEvent", "Counters", "MemoryUsage", "ProcessStats", "Stats",
                     "ThreadStats"),
                    "otel_alloc.tracker.stats"),
}

__all__ = [
    "CURRENT_GROUP",
    "DEFAULT_MAX_GROUPS",
    "GROUP_NONE",
    "GROUP_OVERFLOW",
    "MODES",
    "AllocEvent",
    "Counters",
    "Group",
    "MemoryUsage",
    "ModeConflictError",
    "ProcessStats",
    "Stats",
    "ThreadStats",
    "TrackerError",
    "check_estimate_bytes",
    "check_install_settings",
    "counters",
    "current_group_id",
    "current_thread_stats",
    "disable",
    "domain_stats",
    "drain_events",
    "enable",
    "ensure_hooked",
    "enter_group",
    "estimate_bytes",
    "exit_group",
    "finish_group",
    "group_stats",
    "hook_status",
    "install",
    "installed_mode",
    "is_enabled",
    "memory_usage",
    "native_enabled",
    "native_patched_slots",
    "new_group_id",
    "overflow_stats",
    "process_stats",
    "release_group",
    "reset_peaks",
    "resolve_mode",
    "set_threshold",
    "thread_stats",
    "unattributed_stats",
    "uninstall",
]
__getattr__ = lazy_getattr(__name__, globals(), _SOURCES)
