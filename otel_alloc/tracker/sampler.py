"""The native sampler of allocation sites: configuration, samples, stacks.

Poisson sampling over bytes runs in the hooks; this module hands its
settings down and its samples and interned stacks up (profiling turns them
into a profile).
"""

from __future__ import annotations

from otel_alloc.tracker._binding import (
    GROUP_OVERFLOW,
    OK,
    SAMPLE_ALLOC,
    SAMPLE_FREE,
    STACK_DROPPED,
    STACK_NONE,
    drain_samples,
    frame_info,
    sampler_configure,
    sampler_mean,
    sampler_stats,
    stack_frames,
)

__all__ = [
    "GROUP_OVERFLOW",
    "OK",
    "SAMPLE_ALLOC",
    "SAMPLE_FREE",
    "STACK_DROPPED",
    "STACK_NONE",
    "drain_samples",
    "frame_info",
    "sampler_configure",
    "sampler_mean",
    "sampler_stats",
    "stack_frames",
]
