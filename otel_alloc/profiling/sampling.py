"""Turning native samples into a :class:`~otel_alloc.profiling.profile.Profile`."""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable

from otel_alloc import validation as config
from otel_alloc.profiling import scope
from otel_alloc.profiling.profile import NO_STACK, Entry, Frame, Profile
from otel_alloc.tracker import sampler as native_sampler
from otel_alloc.tracker.stats import RawSample

DEFAULT_SAMPLE_BYTES = 512 * 1024
DEFAULT_DEPTH = 32
DEFAULT_CAPACITY = 65536
NO_SPAN = "(no span)"
DRAIN_BATCH = 1024
# The native buffer's capacity, as last configured: the most one drain takes.
_capacity = DEFAULT_CAPACITY
_DROPPED = (Frame("<stack table full>", "", 0),)


def weights(size: int, mean: int) -> tuple[float, float]:
    """Unbiased (bytes, count) weights of one sampled allocation of ``size`` bytes.

    Sampled with probability ``p = 1 - exp(-size / mean)``, it stands for
    ``size / p`` bytes and ``1 / p`` allocations.
    """
    p = -math.expm1(-size / mean) if size > 0 else 1.0 / mean
    return size / p, 1.0 / p


def resolve(sample_bytes: int | str | None = None, *, max_depth: int | None = None,
            capacity: int | None = None) -> tuple[int, int, int]:
    """Validate the sampler's settings: ``(mean bytes, stack depth, buffer capacity)``.

    Raises:
        ConfigError: A setting has a bad value.

    """
    mean = config.sample_bytes("sample_bytes", sample_bytes, "OTEL_ALLOC_SAMPLE_BYTES",
                               DEFAULT_SAMPLE_BYTES)
    depth = config.integer("max_depth", max_depth, "OTEL_ALLOC_STACK_DEPTH", DEFAULT_DEPTH, 1, 128)
    cap = config.integer("capacity", capacity, "OTEL_ALLOC_SAMPLE_BUFFER", DEFAULT_CAPACITY,
                         1, 10_000_000)
    return mean, depth, cap


def configure(sample_bytes: int | str | None = None, *, max_depth: int | None = None,
              capacity: int | None = None) -> int:
    """Start (or stop, with 0) sampling; returns the mean bytes between samples.

    The mean is 0 or at least ``validation.MIN_SAMPLE_BYTES`` (4 KiB): below it the
    program would spend more time being sampled than running.

    Defaults: ``OTEL_ALLOC_SAMPLE_BYTES`` (else 512 KiB), ``OTEL_ALLOC_STACK_DEPTH``
    (else 32), ``OTEL_ALLOC_SAMPLE_BUFFER`` (else 65536).
    """
    mean, depth, cap = resolve(sample_bytes, max_depth=max_depth, capacity=capacity)
    if native_sampler.sampler_configure(mean, depth, cap) != native_sampler.OK:
        raise MemoryError("otel_alloc could not allocate the sample buffer")
    global _capacity
    _capacity = cap
    return mean


class SampleCollector:
    """Drains native samples into a profile, naming spans and threads.

    The native sample buffer is one per process, so there is one collector
    per process too (:func:`shared_collector`); every span processor adds its
    way of naming a group's span.
    """

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self._resolvers: list[Callable[[int], str | None]] = []
        # Stack id -> the program's frames, None for the tracer's own stacks.
        self._stacks: dict[int, tuple[Frame, ...] | None] = {
            native_sampler.STACK_NONE: (), native_sampler.STACK_DROPPED: _DROPPED}
        self._frames: dict[int, Frame] = {}
        self._threads: dict[int, str] = {}
        self._lock = threading.Lock()

    def note_thread(self) -> None:
        """Remember the calling thread's name.

        Samples are drained later, possibly after the thread has exited.
        """
        native_id = threading.get_native_id()
        if native_id not in self._threads:
            self._threads[native_id] = f"{threading.current_thread().name} ({native_id})"

    def drain(self, limit: int | None = None) -> int:
        """Move pending samples into the profile; returns how many.

        Bounded, so it ends whatever the sampling rate: the calling thread's
        own allocations are not sampled meanwhile (they refilled the buffer
        as fast as it was emptied), it takes at most ``limit`` samples
        (default: one buffer's worth, what can be pending at once; the rest
        waits for the next call, and a full buffer drops and counts), and it
        lets other threads have the GIL between batches.
        """
        limit = _capacity if limit is None else limit
        total = 0
        # One drainer at a time keeps frees after their allocs.
        with self._lock, native_sampler.paused():
            while total < limit:
                batch = native_sampler.drain_samples(min(DRAIN_BATCH, limit - total))
                self.profile.record(self._entries(batch))
                total += len(batch)
                if len(batch) < DRAIN_BATCH:
                    break
                time.sleep(0)  # releases the GIL: the program runs between batches
        return total

    def _entries(self, batch: list[RawSample]) -> list[Entry]:
        """The profile's entries for a batch of samples, the tracer's own left out.

        A batch comes from few threads and spans: their labels and names are
        looked up once per batch (a name cannot change within one).
        """
        entries: list[Entry] = []
        threads: dict[int, str | None] = {}  # native id -> label, None: the tracer's
        spans: dict[int, str] = {}
        stacks = self._stacks
        self._resolve_stacks({s.stack for s in batch
                              if s.kind != native_sampler.SAMPLE_FREE and s.stack not in stacks})
        for s in batch:
            if s.kind == native_sampler.SAMPLE_FREE:
                entries.append((s.id, None, 0.0, 0.0))
                continue
            stack = stacks[s.stack]
            if stack is None:
                continue  # the tracer's own work
            if s.native_thread_id not in threads:
                threads[s.native_thread_id] = self._program_thread(s.native_thread_id)
            thread = threads[s.native_thread_id]
            if thread is None:
                continue  # a thread of the tracer's
            span = spans.get(s.group)
            if span is None:
                span = spans[s.group] = self._span(s.group)
            wb, wc = weights(s.size, s.mean)
            entries.append((s.id, (stack, span, thread), wb, wc))
        return entries

    def add_resolver(self, span_of: Callable[[int], str | None]) -> None:
        """Name spans of groups with ``span_of`` (gid -> span name or None)."""
        self._resolvers.append(span_of)

    def remove_resolver(self, span_of: Callable[[int], str | None]) -> None:
        """Stop asking ``span_of`` (its processor shut down)."""
        if span_of in self._resolvers:
            self._resolvers.remove(span_of)

    def _span(self, gid: int) -> str:
        if gid == native_sampler.GROUP_OVERFLOW:
            return "(overflow)"
        for span_of in self._resolvers:
            name = span_of(gid)
            if name is not None:
                return name
        return NO_SPAN

    def _resolve_stacks(self, new: set[int]) -> None:
        """Resolve stacks met for the first time, all of a batch's at once.

        Two calls into the tracker for the batch (each releases the GIL, and
        the tracker takes it back inside to read its tables) where one for
        each stack and for each new frame made two hand-overs of the GIL
        with the program apiece.
        """
        if not new:
            return
        stack_ids = list(new)
        frame_ids = native_sampler.stacks_frames(stack_ids)
        unknown = list({fid for fids in frame_ids for fid in fids} - self._frames.keys())
        for fid, info in zip(unknown, native_sampler.frames_info(unknown), strict=True):
            self._frames[fid] = Frame(*info) if info else Frame(*NO_STACK)
        for stack_id, fids in zip(stack_ids, frame_ids, strict=True):
            frames = tuple(self._frames[fid] for fid in fids)
            self._stacks[stack_id] = scope.program_stack(frames)

    def _program_thread(self, native_id: int) -> str | None:
        """The thread's label, or None for a thread of the tracer's."""
        label = self._thread(native_id)
        if scope.is_own_thread(label) or scope.is_own_thread_id(native_id):
            return None
        return label

    def _thread(self, native_id: int) -> str:
        name = self._threads.get(native_id)
        if name is None:
            for t in threading.enumerate():
                if t.native_id is not None:
                    self._threads[t.native_id] = f"{t.name} ({t.native_id})"
            name = self._threads.setdefault(native_id, f"thread {native_id}")
        return name


_shared: SampleCollector | None = None
_shared_lock = threading.Lock()


def shared_collector(sample_bytes: int, live: bool) -> SampleCollector:
    """The process's collector, sampling every ``sample_bytes`` on average.

    Made (and sampling started) on first use; a later call with another mean
    (or after sampling was turned off) restarts sampling into a fresh profile
    of the same collector, so every processor's watch thread keeps draining
    into the profile that is current.
    """
    global _shared
    resolve(sample_bytes)  # the variables are checked by every processor, not only the first
    with _shared_lock:
        if _shared is None:
            configure(sample_bytes)
            _shared = SampleCollector(Profile(sample_bytes=sample_bytes, live=live))
        elif (_shared.profile.sample_bytes != sample_bytes or _shared.profile.live != live
              or native_sampler.sampler_mean() != sample_bytes):
            configure(sample_bytes)
            _shared.profile = Profile(sample_bytes=sample_bytes, live=live)
        return _shared


def _fresh_profile_in_child() -> None:
    # A forked child samples into a profile of its own (its pid, none of the
    # parent's samples: the native buffer starts empty there too).
    if _shared is not None:
        _shared.profile = Profile(sample_bytes=_shared.profile.sample_bytes,
                                  live=_shared.profile.live)
        _shared._lock = threading.Lock()


os.register_at_fork(after_in_child=_fresh_profile_in_child)
