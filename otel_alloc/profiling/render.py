"""One entry point for every report kind, shared by the CLI and the endpoint."""

from __future__ import annotations

from otel_alloc.profiling import flamegraph
from otel_alloc.profiling import text_reports as reports
from otel_alloc.profiling.profile import Profile

KINDS = ("top", "live", "threads", "churn", "collapsed", "flamegraph")



def render_report(profile: Profile, kind: str = "top", *, span: str | None = None,
                  thread: str | None = None, key: str = "site", value: str = "bytes",
                  n: int | str = 20) -> str:
    """Render ``kind`` for the profile.

    Args:
        profile: The sampled profile.
        kind: ``top`` (allocation sites), ``live`` (live dump grouped by ``key``
            summing ``value``), ``threads``, ``churn``, ``collapsed`` (stacks for
            flamegraph.pl/speedscope) or ``flamegraph`` (a self-contained
            interactive HTML page).
        span: Restrict to one span name (top, collapsed, flamegraph).
        thread: Restrict to one thread (collapsed, flamegraph).
        key: Grouping for live and churn: site, span, thread or stack.
        value: ``bytes`` or ``count``; flame graphs also take ``live_bytes``
            and ``live_count``.
        n: Rows to show.

    Raises:
        ValueError: An unknown kind, key or value.
    """
    rows = int(n)
    if kind == "top":
        return reports.top_sites_report(profile, span=span, n=rows)
    if kind == "live":
        return reports.live_report(profile, key=key, value=value, n=rows)
    if kind == "threads":
        return reports.thread_report(profile)
    if kind == "churn":
        return reports.churn_report(profile, key=key, n=rows)
    if kind == "collapsed":
        return flamegraph.collapsed(profile, value=value, span=span, thread=thread)
    if kind == "flamegraph":
        stacks = flamegraph.stacks(profile, value=value, span=span, thread=thread)
        scope = " ".join(p for p in (f"span {span}" if span else "",
                                     f"thread {thread}" if thread else "") if p) or "process"
        unit = "bytes" if "bytes" in value else "allocations"
        return flamegraph.html_page(stacks, title=f"{value} by stack — {scope}", unit=unit)
    raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")


def content_type(kind: str) -> str:
    """The HTTP content type of a rendered ``kind`` (the flame graph is HTML)."""
    return "text/html; charset=utf-8" if kind == "flamegraph" else "text/plain; charset=utf-8"
