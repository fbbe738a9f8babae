"""The embedded default: a per-span-name allocation table printed at exit."""

from __future__ import annotations

import math
import random
import threading
from dataclasses import dataclass, field

from otel_alloc.otel.span_records import SpanAllocation
from otel_alloc.tracker.stats import ProcessStats
from otel_alloc.units import format_bytes

RESERVOIR = 10_000


@dataclass
class _NameStats:
    spans: int = 0
    bytes: int = 0
    count: int = 0
    live_bytes: int | None = None
    samples: list[int] = field(default_factory=list)


def _quantile(sorted_values: list[int], q: float) -> int:
    """Nearest-rank quantile of sorted values."""
    if not sorted_values:
        return 0
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass(frozen=True)
class SummaryRow:
    """One line of the table."""

    name: str
    spans: int
    bytes: int
    count: int
    p50_bytes: int
    p99_bytes: int
    live_bytes: int | None
    quantiles_exact: bool


class SummarySink:
    """Aggregates span records per span name for the exit table.

    Quantiles are exact up to 10,000 spans per name, then estimated from a
    uniform reservoir sample (the table marks them with ``~``).
    """

    def __init__(self, max_names: int = 1000) -> None:
        self._names: dict[str, _NameStats] = {}
        self._max_names = max_names
        self._lock = threading.Lock()
        self._rng = random.Random(0)
        self._estimated = False  # live bytes are estimate mode's estimates

    def on_span(self, record: SpanAllocation) -> None:
        """Add one ended span."""
        with self._lock:
            name = record.name
            if name not in self._names and len(self._names) >= self._max_names:
                name = "(other span names)"
            st = self._names.setdefault(name, _NameStats())
            st.spans += 1
            st.bytes += record.bytes
            st.count += record.count
            live = record.live_or_estimate
            if live is not None:
                st.live_bytes = (st.live_bytes or 0) + live
                self._estimated = record.live_bytes is None
            if len(st.samples) < RESERVOIR:
                st.samples.append(record.bytes)
            else:
                slot = self._rng.randrange(st.spans)
                if slot < RESERVOIR:
                    st.samples[slot] = record.bytes

    def shutdown(self) -> None:
        """Nothing to release."""

    def rows(self) -> list[SummaryRow]:
        """Rows, largest total bytes first."""
        with self._lock:
            items = [(n, st, sorted(st.samples)) for n, st in self._names.items()]
        rows = [
            SummaryRow(n, st.spans, st.bytes, st.count, _quantile(s, 0.5), _quantile(s, 0.99),
                       st.live_bytes, st.spans <= RESERVOIR)
            for n, st, s in items
        ]
        return sorted(rows, key=lambda r: r.bytes, reverse=True)

    def render(self, live_at_end: dict[str, int] | None = None) -> str:
        """The table as text; ``live_at_end`` overrides live bytes per name."""
        rows = self.rows()
        show_live = live_at_end is not None or any(r.live_bytes is not None for r in rows)
        live_title = "live at span end" + (" (estimated)" if self._estimated else "")
        header = ["span name", "spans", "bytes", "allocations", "p50 bytes/span",
                  "p99 bytes/span"] + ([live_title] if show_live else [])
        lines = [header]
        for r in rows:
            mark = "" if r.quantiles_exact else "~"
            line = [r.name, str(r.spans), format_bytes(r.bytes), f"{r.count:,}",
                    mark + format_bytes(r.p50_bytes), mark + format_bytes(r.p99_bytes)]
            if show_live:
                live = (live_at_end or {}).get(r.name, r.live_bytes)
                line.append("-" if live is None else format_bytes(live))
            lines.append(line)
        widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
        out = []
        for i, row in enumerate(lines):
            rest = zip(row[1:], widths[1:], strict=True)
            cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in rest]
            out.append("  ".join(cells))
            if i == 0:
                out.append("  ".join("-" * w for w in widths))
        if not rows:
            out.append("(no spans ended)")
        return "\n".join(out)


def memory_lines(stats: ProcessStats, native: bool) -> list[str]:
    """What the process's resident memory is and how much the figures explain.

    One line for RSS, one for what the live figures account for (live mode,
    or estimated in estimate mode: counts mode keeps no live figures);
    ``native`` tells whether native mode was on.
    """
    if stats.rss_bytes is None or stats.rss_anon_bytes is None:
        return ["memory: resident size unknown (no /proc/self/statm)"]
    lines = [f"memory: RSS {format_bytes(stats.rss_bytes)}, of which "
             f"{format_bytes(stats.rss_anon_bytes)} not file-backed (heaps, arenas, stacks)"]
    if stats.python_live_bytes is None or stats.native_live_bytes is None or \
            stats.unexplained_bytes is None:
        lines.append(f"  this mode keeps no live figures; otel_alloc itself uses "
                     f"{format_bytes(stats.tracker_bytes)} (--mode live says what is covered)")
        return lines
    share = stats.covered_fraction or 0.0
    # Estimates say so on every figure they feed.
    about = "about " if stats.live_estimated else ""
    lines.append(
        f"  explained {about}{share:.0%}"
        + (" (estimated from a sample of the blocks)" if stats.live_estimated else "")
        + f": Python objects {about}{format_bytes(stats.python_live_bytes)}, "
        f"native {about}{format_bytes(stats.native_live_bytes)}, otel_alloc itself "
        f"{format_bytes(stats.tracker_bytes)}; unexplained {about}"
        f"{format_bytes(stats.unexplained_bytes)} (allocated before install, allocator "
        f"overhead, stacks, mmap" + ("" if native else ", native code: --native")
        + ")")
    return lines
