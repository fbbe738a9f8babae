"""Text reports over a sampled :class:`~otel_alloc.profiling.profile.Profile`.

Every figure here is an estimate from sampled allocations; each report's
heading says so and gives the sampling mean.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from otel_alloc.profiling.profile import NO_STACK, Frame, Profile, SiteStats
from otel_alloc.units import format_bytes

KEYS = ("site", "span", "thread", "stack")
VALUES = ("bytes", "count")


def site_of(stack: tuple[Frame, ...]) -> str:
    """The allocation site: the innermost Python frame.

    Before 3.11 code objects have no qualified name, so a comprehension shows
    as ``<listcomp>``; it is then prefixed with its caller's name.
    """
    if not stack:
        return f"{NO_STACK[0]}"
    f = stack[0]
    name = f.function
    if name.startswith("<") and len(stack) > 1 and "." not in name:
        name = f"{stack[1].function}.{name}"
    return f"{f.filename}:{f.line} {name}"


def _key_fn(key: str) -> Callable[[tuple[tuple[Frame, ...], str, str]], str]:
    if key == "site":
        return lambda k: site_of(k[0])
    if key == "span":
        return lambda k: k[1]
    if key == "thread":
        return lambda k: k[2]
    if key == "stack":
        return lambda k: " <- ".join(f.label() for f in k[0]) or NO_STACK[0]
    raise ValueError(f"key must be one of {', '.join(KEYS)}, not {key!r}")


@dataclass
class Row(SiteStats):
    """One line of a grouped report: the summed figures of one key."""

    key: str = ""


def grouped(profile: Profile, key: str = "site", span: str | None = None,
            thread: str | None = None) -> list[Row]:
    """Sum the profile's cells by ``key``, optionally for one span name / thread."""
    fn = _key_fn(key)
    sums: dict[str, SiteStats] = {}
    for k, st in profile.snapshot().items():
        if (span is not None and k[1] != span) or (thread is not None and k[2] != thread):
            continue
        acc = sums.setdefault(fn(k), SiteStats())
        acc.alloc_bytes += st.alloc_bytes
        acc.alloc_count += st.alloc_count
        acc.freed_bytes += st.freed_bytes
        acc.freed_count += st.freed_count
        acc.samples += st.samples
    return [Row(s.alloc_bytes, s.alloc_count, s.freed_bytes, s.freed_count, s.samples, key=k)
            for k, s in sums.items()]


def top_sites(profile: Profile, *, live: bool = False, span: str | None = None,
              n: int = 10) -> list[Row]:
    """Top allocation sites by estimated bytes allocated (or still alive)."""
    rows = grouped(profile, "site", span=span)
    metric: Callable[[Row], float] = (lambda r: r.live_bytes) if live else (
        lambda r: r.alloc_bytes)
    return sorted((r for r in rows if metric(r) > 0), key=metric, reverse=True)[:n]


def _heading(profile: Profile, what: str) -> str:
    # The pid tells apart the reports of a parent and its forked children.
    pid = f", pid {profile.pid}" if profile.pid is not None else ""
    return (f"{what} — ESTIMATES from sampled allocations "
            f"(Poisson sampling, mean {format_bytes(profile.sample_bytes)} between samples{pid})")


def render(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain text table: first column left-aligned, the rest right-aligned."""
    table = [list(headers), *[list(r) for r in rows]]
    widths = [max(len(r[i]) for r in table) for i in range(len(headers))]
    out = []
    for i, row in enumerate(table):
        cells = [row[0].ljust(widths[0])]
        cells += [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        out.append("  ".join(cells).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    if not rows:
        out.append("(no samples)")
    return "\n".join(out)


def _fmt(value: float, as_bytes: bool) -> str:
    return "~" + (format_bytes(value) if as_bytes else f"{value:,.0f}")


def top_sites_report(profile: Profile, *, span: str | None = None, n: int = 10) -> str:
    """Top sites by allocated bytes and, in live mode, by live bytes."""
    scope = f"span {span!r}" if span else "the process"
    parts = [_heading(profile, f"Top allocation sites of {scope}")]
    rows = top_sites(profile, span=span, n=n)
    parts.append(render(["site", "allocated", "allocations", "samples"],
                        [[r.key, _fmt(r.alloc_bytes, True), _fmt(r.alloc_count, False),
                          str(r.samples)] for r in rows]))
    if profile.live:
        live = top_sites(profile, live=True, span=span, n=n)
        parts.append("\nStill alive:")
        parts.append(render(["site", "live", "live blocks"],
                            [[r.key, _fmt(r.live_bytes, True), _fmt(r.live_count, False)]
                             for r in live]))
    return "\n".join(parts)


def live_report(profile: Profile, *, key: str = "site", value: str = "bytes",
                n: int = 30) -> str:
    """Live allocations grouped by ``key`` summing ``value`` (bytes or count)."""
    if value not in VALUES:
        raise ValueError(f"value must be one of {', '.join(VALUES)}, not {value!r}")
    if not profile.live:
        return "live report needs live mode (the profile records no frees)"
    as_bytes = value == "bytes"
    metric: Callable[[Row], float] = (lambda r: r.live_bytes) if as_bytes else (
        lambda r: r.live_count)
    rows = sorted((r for r in grouped(profile, key) if metric(r) > 0), key=metric,
                  reverse=True)[:n]
    head = _heading(profile, f"Live allocations by {key} ({'bytes' if as_bytes else 'blocks'})")
    return head + "\n" + render([key, "live " + value], [[r.key, _fmt(metric(r), as_bytes)]
                                                        for r in rows])


def thread_report(profile: Profile, *, n: int | None = None) -> str:
    """Allocated (and live) estimates per thread, the ``n`` largest (default all)."""
    rows = sorted(grouped(profile, "thread"), key=lambda r: r.alloc_bytes, reverse=True)[:n]
    headers = ["thread", "allocated", "allocations"] + (["live"] if profile.live else [])
    body = [[r.key, _fmt(r.alloc_bytes, True), _fmt(r.alloc_count, False)]
            + ([_fmt(r.live_bytes, True)] if profile.live else []) for r in rows]
    return _heading(profile, "Allocations per thread") + "\n" + render(headers, body)


def churn_report(profile: Profile, *, key: str = "site", n: int = 20) -> str:
    """Allocation and free volume against net growth: volatile allocations.

    A high churn ratio (freed / allocated near 1) marks temporary garbage
    that costs allocator time but not memory; a low one marks growth.
    """
    if not profile.live:
        return "churn report needs live mode (the profile records no frees)"
    rows = sorted(grouped(profile, key), key=lambda r: r.alloc_bytes, reverse=True)[:n]
    body = [[r.key, _fmt(r.alloc_bytes, True), _fmt(r.freed_bytes, True),
             _fmt(r.live_bytes, True),
             f"{(r.freed_bytes / r.alloc_bytes) if r.alloc_bytes else 0:.0%}"] for r in rows]
    return (_heading(profile, f"Churn by {key}") + "\n"
            + render([key, "allocated", "freed", "net growth", "churn"], body))
