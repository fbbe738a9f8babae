"""The native sampler of allocation sites: configuration, samples, stacks.

Poisson sampling over bytes runs in the hooks; this module hands its
settings down and its samples and interned stacks up (profiling turns them
into a profile).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from otel_alloc.tracker._binding import (
    GROUP_OVERFLOW,
    OK,
    SAMPLE_ALLOC,
    SAMPLE_FREE,
    STACK_DROPPED,
    STACK_NONE,
    drain_samples,
    frame_info,
    frames_info,
    sampler_configure,
    sampler_mean,
    sampler_pause_thread,
    sampler_stats,
    stack_frames,
    stacks_frames,
)


@contextmanager
def paused() -> Iterator[None]:
    """Sample none of the calling thread's allocations inside the block.

    For the profiler's own work (draining samples, the watch thread): its
    allocations would otherwise be sampled and refill the buffer being
    drained. Other threads are sampled as usual; blocks nest.
    """
    sampler_pause_thread(True)
    try:
        yield
    finally:
        sampler_pause_thread(False)


__all__ = [
    "GROUP_OVERFLOW",
    "OK",
    "SAMPLE_ALLOC",
    "SAMPLE_FREE",
    "STACK_DROPPED",
    "STACK_NONE",
    "drain_samples",
    "frame_info",
    "frames_info",
    "paused",
    "sampler_configure",
    "sampler_mean",
    "sampler_pause_thread",
    "sampler_stats",
    "stack_frames",
    "stacks_frames",
]
