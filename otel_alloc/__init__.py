"""otel_alloc: per-span allocation tracking for Python, exported through OpenTelemetry."""

from otel_alloc.config import ConfigError
from otel_alloc.processor import AllocationSpanProcessor
from otel_alloc.spans import SpanAllocation
from otel_alloc.stats import AllocEvent, Counters, MemoryUsage, Stats, ThreadStats
from otel_alloc.tracker import (
    Group,
    TrackerError,
    counters,
    current_thread_stats,
    disable,
    domain_stats,
    enable,
    hook_status,
    install,
    installed_mode,
    is_enabled,
    memory_usage,
    process_stats,
    reset_peaks,
    thread_stats,
    uninstall,
)

__version__ = "0.1.0"

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
