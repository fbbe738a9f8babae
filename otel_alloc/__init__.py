"""otel_alloc: per-span allocation tracking for Python, exported through OpenTelemetry.

The package is laid out by job (see the README's "Architecture" section):

- :mod:`otel_alloc.tracker`: the native allocation tracker (no OpenTelemetry);
- :mod:`otel_alloc.otel`: the span processor and everything that speaks
  OpenTelemetry;
- :mod:`otel_alloc.profiling`: sampled allocation sites, reports, flame graphs;
- :mod:`otel_alloc.cli`: the ``otel-alloc`` command line.

Importing this package loads neither the OpenTelemetry SDK nor the native
tracker: each public name below is imported from its subpackage on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from otel_alloc._lazy import lazy_getattr

if TYPE_CHECKING:
    from otel_alloc.otel.processor import AllocationSpanProcessor
    from otel_alloc.otel.span_records import SpanAllocation
    from otel_alloc.tracker.counts import (
        counters,
        current_thread_stats,
        domain_stats,
        memory_usage,
        process_stats,
        reset_peaks,
        thread_stats,
    )
    from otel_alloc.tracker.errors import TrackerError
    from otel_alloc.tracker.groups import Group
    from otel_alloc.tracker.lifecycle import (
        disable,
        enable,
        hook_status,
        install,
        installed_mode,
        is_enabled,
        uninstall,
    )
    from otel_alloc.tracker.stats import AllocEvent, Counters, MemoryUsage, Stats, ThreadStats
    from otel_alloc.validation import ConfigError

__version__ = "0.1.0"

_SOURCES = {
    "AllocationSpanProcessor": "otel_alloc.otel.processor",
    "SpanAllocation": "otel_alloc.otel.span_records",
    "ConfigError": "otel_alloc.validation",
    "Group": "otel_alloc.tracker.groups",
    **dict.fromkeys(("counters", "current_thread_stats", "domain_stats", "memory_usage",
                     "process_stats", "reset_peaks", "thread_stats"),
                    "otel_alloc.tracker.counts"),
    **dict.fromkeys(("disable", "enable", "hook_status", "install",
                     "installed_mode", "is_enabled", "uninstall"),
                    "otel_alloc.tracker.lifecycle"),
    "TrackerError": "otel_alloc.tracker.errors",
    **dict.fromkeys(("AllocEvent", "Counters", "MemoryUsage", "Stats", "ThreadStats"),
                    "otel_alloc.tracker.stats"),
}

__all__ = [
    "AllocEvent",
    "AllocationSpanProcessor",
    "ConfigError",
    "Counters",
    "Group",
    "MemoryUsage",
    "SpanAllocation",
    "Stats",
    "ThreadStats",
    "TrackerError",
    "__version__",
    "counters",
    "current_thread_stats",
    "disable",
    "domain_stats",
    "enable",
    "hook_status",
    "install",
    "installed_mode",
    "is_enabled",
    "memory_usage",
    "process_stats",
    "reset_peaks",
    "thread_stats",
    "uninstall",
]

__getattr__ = lazy_getattr(__name__, globals(), _SOURCES)
