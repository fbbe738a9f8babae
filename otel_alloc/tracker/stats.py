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


class ProcessStats(NamedTuple):
    """The process's figures (those of :class:`Stats`) and its memory.

    The last fields say what the process's resident memory (RSS) is and how
    much of it the live figures account for, so a user knows how much of
    their memory the tool covers. Read from ``/proc/self/statm`` (Linux);
    ``None`` where it cannot be read, and the live parts ``None`` in counts
    mode, which keeps no live figures. In estimate mode the live parts are
    estimates (``live_estimated``), as ``live_bytes`` is.

    Attributes:
        rss_bytes: Resident memory of the process.
        rss_anon_bytes: Of it, memory not backed by a file (heaps, arenas,
            thread stacks): what allocations can explain. The rest is code
            and mapped files.
        python_live_bytes: Live bytes allocated through CPython's domains
            (RAW, MEM, OBJ) since install.
        native_live_bytes: Live bytes allocated by native code since install
            (native mode).
        tracker_bytes: The tracker's own memory (:class:`MemoryUsage`).
        unexplained_bytes: ``rss_anon_bytes`` minus the three above: memory
            allocated before install, allocator overhead and fragmentation,
            thread stacks, ``mmap`` outside the ``malloc`` family, and native
            allocations when native mode is off. Negative when allocated
            memory was never touched (not resident yet), as ``calloc`` of a
            large block often is.
        live_estimated: The live parts (and ``live_bytes``) are estimates
            from a sample of the blocks (estimate mode), not exact figures.
    """

    # The fields of Stats, in its order, repeated: a named tuple cannot
    # extend another's fields, and ProcessStats(*stats, ...) relies on it.
    alloc_bytes: int = 0
    alloc_count: int = 0
    freed_bytes: int = 0
    freed_count: int = 0
    live_bytes: int = 0
    live_count: int = 0
    peak_bytes: int = 0
    native_bytes: int = 0
    rss_bytes: int | None = None
    rss_anon_bytes: int | None = None
    python_live_bytes: int | None = None
    native_live_bytes: int | None = None
    tracker_bytes: int = 0
    unexplained_bytes: int | None = None
    live_estimated: bool = False

    @property
    def covered_fraction(self) -> float | None:
        """Share of ``rss_anon_bytes`` the live figures explain (0 to 1)."""
        if not self.rss_anon_bytes or self.python_live_bytes is None or \
                self.native_live_bytes is None:
            return None
        covered = self.python_live_bytes + self.native_live_bytes + self.tracker_bytes
        return max(0.0, min(1.0, covered / self.rss_anon_bytes))


@dataclass(frozen=True)
class ThreadStats:
    """Figures of one OS thread (``native_id`` is ``threading.get_native_id()``)."""

    native_id: int
    alive: bool
    stats: Stats


@dataclass(frozen=True)
class MemoryUsage:
    """Memory the tracker itself uses, never traced.

    The pointer tables are mapped pages of their own, so they never sit in
    the program's malloc heap; the rest comes from libc.

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


class RawSample(NamedTuple):
    """One record from the native sampler (an allocation, or a sampled block's free).

    (A named tuple: the watch thread drains hundreds a second, and a frozen
    dataclass took longer to build than the collector took to file it.)
    """

    id: int
    kind: int
    stack: int
    group: int
    native_thread_id: int
    size: int
    mean: int
    domain: int
