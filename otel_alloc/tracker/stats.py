"""Plain value types for the figures the tracker reports (no native code)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


class Stats(NamedTuple):
    """Allocation figures of a group, a thread, a domain or the process.

    (A named tuple: the span processor builds one per span, and tuples are
    the cheapest record Python has.)

    Attributes:
        alloc_bytes: Bytes allocated (a realloc counts as an allocation of its
            new size). Exact.
        alloc_count: Number of allocations. Exact.
        freed_bytes: Live mode: bytes of tracked blocks freed. Exact.
        freed_count: Live mode: number of tracked blocks freed.
        live_bytes: Live mode: bytes allocated and not yet freed. For a thread,
            the net bytes (allocated minus freed by that thread).
        live_count: Live mode: blocks allocated and not yet freed.
        peak_bytes: Live mode: highest ``live_bytes`` seen (high-water mark).
        native_bytes: Of ``alloc_bytes``, the bytes allocated by native code
            (the ``malloc`` family called by extension modules and the
            libraries they load; native mode only). Exact.
    """

    alloc_bytes: int = 0
    alloc_count: int = 0
    freed_bytes: int = 0
    freed_count: int = 0
    live_bytes: int = 0
    live_count: int = 0
    peak_bytes: int = 0
    native_bytes: int = 0


@dataclass(frozen=True)
class ThreadStats:
    """Figures of one OS thread (``native_id`` is ``threading.get_native_id()``)."""

    native_id: int
    alive: bool
    stats: Stats


@dataclass(frozen=True)
class MemoryUsage:
    """Memory the tracker itself uses, all from libc and never traced.

    Attributes:
        total_bytes: Sum of the parts below.
        table_bytes: Live-mode pointer tables.
        table_capacity: Slots in the pointer tables.
        live_blocks: Blocks the pointer tables hold.
        group_table_bytes: The group table.
        thread_bytes: Per-thread records.
        event_bytes: The large-allocation event buffer.
        sampler_bytes: Stack sampler storage.

    """

    total_bytes: int
    table_bytes: int
    table_capacity: int
    live_blocks: int
    group_table_bytes: int
    thread_bytes: int
    event_bytes: int
    sampler_bytes: int

    @property
    def bytes_per_live_block(self) -> float:
        """Pointer-table bytes per tracked live block (0.0 with no blocks)."""
        return self.table_bytes / self.live_blocks if self.live_blocks else 0.0


@dataclass(frozen=True)
class Counters:
    """Health counters: what the tracker dropped or could not attribute.

    Attributes:
        groups_open: Groups created and not yet released.
        groups_capacity: Size of the group table.
        groups_dropped: Group creations that found the table full; their
            allocations went to the overflow group.
        events_dropped: Large-allocation events lost to a full buffer.
        untracked_frees: Frees (live mode) of blocks the tracker never saw
            allocated, e.g. allocated before install.
        tracking_failures: Live blocks not recorded because the pointer table
            could not grow; live figures are then lower bounds.
        replaced_blocks: Addresses allocated again without a seen free.
        released_group_free_bytes: Bytes freed after their group was released.
        threads_dropped: Threads without a per-thread record (registry full).
        stale_group_allocs: Allocations made under a closed or released group,
            charged to "no group" instead.
        subinterpreter_allocs: Allocations made by a subinterpreter: passed
            through untracked (only the main interpreter is tracked).
        subinterpreter_bytes: Their bytes.
        slots_parked: Times a group slot was held back from reuse because
            blocks charged under it 65,536 generations earlier were still
            alive (its 16-bit tag in those blocks would repeat).
        rehooks: Hooks put back after another tool took them out of the
            allocator chain (``tracemalloc.stop()`` when tracemalloc was
            started before install); allocations in between were not seen.

    """

    groups_open: int
    groups_capacity: int
    groups_dropped: int
    events_dropped: int
    untracked_frees: int
    tracking_failures: int
    replaced_blocks: int
    released_group_free_bytes: int
    threads_dropped: int
    stale_group_allocs: int
    subinterpreter_allocs: int = 0
    subinterpreter_bytes: int = 0
    slots_parked: int = 0
    rehooks: int = 0


@dataclass(frozen=True)
class AllocEvent:
    """A single allocation at or above the configured threshold."""

    timestamp_ns: int
    size: int
    group: int
    native_thread_id: int
    domain: int


@dataclass(frozen=True)
class RawSample:
    """One record from the native sampler (an allocation, or a sampled block's free)."""

    id: int
    kind: int
    stack: int
    group: int
    native_thread_id: int
    size: int
    mean: int
    domain: int
