"""Background watch: large-allocation events, leak checks, live bytes by span.

A daemon thread wakes a few times a second. It drains the native buffer of
single large allocations into ``alloc.threshold_exceeded`` events, and in live
mode watches ended spans whose blocks are still alive: past the grace period
one still holding at least ``leak_min_bytes`` yields ``alloc.leak_suspected``,
and its group is released. Everything it holds is bounded.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from otel_alloc import tracker
from otel_alloc.otel import _spanpath
from otel_alloc.otel import contract as names
from otel_alloc.otel.events import AllocationEvents
from otel_alloc.otel.settings import Settings
from otel_alloc.otel.span_records import (
    ATTR_LIVE_BYTES_ESTIMATE,
    LIVE_ESTIMATE,
    LIVE_NONE,
    SpanAllocation,
)
from otel_alloc.tracker import sampler as native_sampler
from otel_alloc.tracker.counts import DOMAIN_NAMES

_log = logging.getLogger(__name__)
_DOMAINS = DOMAIN_NAMES


class SpanRef(NamedTuple):
    """The span that owns (or owned) a group, as events and samples name it."""

    name: str
    trace_id: int
    span_id: int


@dataclass
class _Retained:
    record: SpanAllocation
    deadline: float


class SpanWatch:
    """Open and recently ended spans by group, retained groups, and the thread.

    The span processor writes ``open`` (group id -> span, while the span is
    open, on every span: a ``SpanIndex``, a table in C); ended spans are looked up in the
    processor's native records (the last 32768 ended spans by group id, so
    samples and events drained after their span ended still find its name and
    trace context; group ids are never reused).
    """

    def __init__(self, settings: Settings, events: AllocationEvents | None, live: int,
                 records: _spanpath.SpanRecords) -> None:
        self._settings = settings
        self._events = events
        self._live = live  # a LIVE_* kind: estimate mode watches estimates
        self._records = records
        self._retained: OrderedDict[int, _Retained] = OrderedDict()  # gid -> entry
        # gid -> span of open spans (written by the processor's C span path).
        self.open = _spanpath.SpanIndex()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._tasks: list[Callable[[], object]] = []
        self.retained_dropped = 0
        self.leaks_reported = 0
        self.errors = 0
        self.interval = max(0.05, min(0.5, settings.leak_grace_seconds / 4))
        os.register_at_fork(after_in_child=self._after_fork)

    # -- bookkeeping called by the processor ------------------------------

    def span_name_of(self, gid: int) -> str | None:
        """Name of the span that owns (or recently owned) group ``gid``."""
        ref = self.span_of(gid)
        return ref.name if ref is not None else None

    def add_task(self, task: Callable[[], object]) -> None:
        """Run ``task`` on every tick and flush (sample draining)."""
        self._tasks.append(task)
        self._ensure_thread()

    def span_of(self, gid: int) -> SpanRef | None:
        """The span that owns (or owned, recently) group ``gid``."""
        span = self.open.get(gid)
        if span is not None:
            ctx = span.context
            if ctx is not None:
                return SpanRef(span.name, ctx.trace_id, ctx.span_id)
        # Recorded before the span left `open`, so one of the two has it.
        ended = self._records.lookup(gid)
        if ended is not None:
            return SpanRef(*ended)
        with self._lock:
            entry = self._retained.get(gid)
        if entry is None:
            return None
        record = entry.record
        return SpanRef(record.name, record.trace_id, record.span_id)

    def retain(self, record: SpanAllocation) -> bool:
        """Keep an ended span's closed group to watch its live blocks.

        Returns False when the group should be released at once.
        """
        if self._live == LIVE_NONE or self._settings.max_retained_spans == 0:
            return False
        live = record.live_or_estimate
        if live is None or live < self._settings.leak_min_bytes:
            return False
        evicted: list[_Retained] = []
        with self._lock:
            self._retained[record.group_id] = _Retained(
                record, time.monotonic() + self._settings.leak_grace_seconds)
            while len(self._retained) > self._settings.max_retained_spans:
                evicted.append(self._retained.popitem(last=False)[1])
        for entry in evicted:  # over the bound: stop watching the oldest early
            self.retained_dropped += 1
            tracker.release_group(entry.record.group_id)
        self._ensure_thread()
        return True

    def live_by_name(self) -> dict[str, int]:
        """Live bytes of open and watched spans, summed per span name."""
        totals: dict[str, int] = {}
        with self._lock:
            watched = [(gid, e.record.name) for gid, e in self._retained.items()]
        open_spans = [(gid, span.name) for gid, span in list(self.open.items())]
        for gid, name in [*open_spans, *watched]:
            stats = tracker.group_stats(gid)
            if stats is not None:
                totals[name] = totals.get(name, 0) + max(stats.live_bytes, 0)
        return totals

    # -- the thread -------------------------------------------------------

    def _ensure_thread(self) -> None:
        if self._thread is not None or self._stop:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="otel-alloc-watch",
                                                daemon=True)
                self._thread.start()

    def _run(self) -> None:
        # The tracer's own thread: none of its allocations are sampled (they
        # are not the program's, and draining samples would feed itself).
        native_sampler.sampler_pause_thread(True)
        while not self._stop:
            self._wake.wait(self.interval)
            self._wake.clear()
            try:
                self.tick()
            except Exception:
                self.errors += 1
                if self.errors <= 10:
                    _log.warning("otel_alloc: watch tick failed", exc_info=True)

    def tick(self, now: float | None = None) -> None:
        """Drain large-allocation events and check watched spans once."""
        self.flush()
        if not self._retained:
            return
        now = time.monotonic() if now is None else now
        due: list[_Retained] = []
        with self._lock:
            for gid, entry in list(self._retained.items()):
                if entry.deadline > now:
                    break  # ordered by deadline: the rest are younger
                due.append(entry)
                del self._retained[gid]
        for entry in due:
            stats = tracker.finish_group(entry.record.group_id, release=True)
            if stats is not None and stats.live_bytes >= self._settings.leak_min_bytes:
                self._report_leak(entry, stats.live_bytes, stats.live_count)

    def _report_leak(self, entry: _Retained, live: int, blocks: int) -> None:
        self.leaks_reported += 1
        if self._events is None:
            return
        grace = self._settings.leak_grace_seconds
        name = entry.record.name
        if self._live == LIVE_ESTIMATE:
            # Sampled blocks are no count of the span's blocks: bytes only.
            attributes: dict[str, int | float] = {ATTR_LIVE_BYTES_ESTIMATE: live}
            body = (f"span {name!r} still holds about {live} bytes (estimated from a sample "
                    f"of its blocks) {grace:g}s after it ended")
        else:
            attributes = {"alloc.live_bytes": live, "alloc.live_blocks": blocks}
            body = f"span {name!r} still holds {live} bytes in {blocks} blocks " \
                   f"{grace:g}s after it ended"
        attributes.update({"alloc.bytes": entry.record.bytes, "alloc.grace_seconds": grace})
        self._events.emit(
            names.EVENT_LEAK,
            trace_id=entry.record.trace_id, span_id=entry.record.span_id,
            span_name=name, attributes=attributes, body=body,
        )

    def _drain_native_events(self) -> None:
        while True:
            batch = tracker.drain_events(256)
            for ev in batch:
                info = self.span_of(ev.group)
                if self._events is not None:
                    self._events.emit(
                        names.EVENT_THRESHOLD,
                        trace_id=info.trace_id if info else 0,
                        span_id=info.span_id if info else 0,
                        span_name=info.name if info else None,
                        attributes={"alloc.kind": "allocation", "alloc.size": ev.size,
                                    "alloc.domain": _DOMAINS.get(ev.domain, "?"),
                                    "thread.id": ev.native_thread_id},
                        body=f"single allocation of {ev.size} bytes",
                        timestamp_ns=ev.timestamp_ns,
                    )
            if len(batch) < 256:
                return

    def wake(self) -> None:
        """Run a tick now (large-allocation events are waiting)."""
        self._wake.set()

    def flush(self) -> None:
        """Process pending native events and samples now (force_flush)."""
        self._drain_native_events()
        for task in self._tasks:
            task()

    def shutdown(self) -> None:
        """Stop the thread (safe to call twice)."""
        self._stop = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2.0)

    def _after_fork(self) -> None:
        # The thread does not exist in the child; start a new one on demand.
        self._lock = threading.Lock()
        self._thread = None
        self.open.clear()
        self._retained.clear()


def keep_hooked() -> None:
    """Put back hooks another tool took out of the allocator chain (a watch task)."""
    rehooked = tracker.ensure_hooked()
    if rehooked:
        _log.warning("otel_alloc: another tool removed the allocation hooks from %d "
                     "allocator domain(s) (tracemalloc.stop() after tracemalloc was started "
                     "before otel_alloc?); they are back in place, and what was allocated "
                     "meanwhile was not counted", rehooked)
