"""One entry point for every report kind, shared by the CLI and the endpoint.

Which options each kind takes is decided here once, so ``otel-alloc report``
and the ``--serve`` endpoint's ``/report`` refuse the same things with the
same message.
"""

from __future__ import annotations

from dataclasses import dataclass

from otel_alloc import validation as config
from otel_alloc.profiling import flamegraph, scope
from otel_alloc.profiling import text_reports as reports
from otel_alloc.profiling.profile import Profile

KINDS = ("top", "live", "threads", "churn", "collapsed", "flamegraph")
FLAME_VALUES = ("bytes", "count", "live_bytes", "live_count")
# The options each kind takes; any other option given is refused, naming both.
# span and thread restrict every kind; tables take n; live and churn group by
# key; live and the stack kinds sum value.
APPLIES: dict[str, tuple[str, ...]] = {
    "top": ("span", "thread", "n"),
    "live": ("span", "thread", "key", "value", "n"),
    "threads": ("span", "thread", "n"),
    "churn": ("span", "thread", "key", "n"),
    "collapsed": ("span", "thread", "value"),
    "flamegraph": ("span", "thread", "value"),
}
VALUES = {"live": reports.VALUES, "collapsed": FLAME_VALUES, "flamegraph": FLAME_VALUES}
OPTIONS = ("span", "thread", "key", "value", "n")
# How the command line spells each option (the endpoint takes the bare names).
CLI_FLAGS = {"kind": "--kind", "span": "--span", "thread": "--thread", "key": "--key",
             "value": "--value", "n": "-n"}


@dataclass(frozen=True)
class ReportOptions:
    """A report request: the kind and the options given (``None``: not given).

    Attributes:
        kind: One of :data:`KINDS`.
        span: Only this span name.
        thread: Only this thread, by name or as ``name (id)``.
        key: Grouping of live and churn: site, span, thread or stack.
        value: What live and the stack kinds sum.
        n: Rows of the tables.
    """

    kind: str = "top"
    span: str | None = None
    thread: str | None = None
    key: str | None = None
    value: str | None = None
    n: int | None = None

    def check(self, flags: dict[str, str] | None = None) -> None:
        """Refuse options the kind does not take, and values it does not accept.

        Args:
            flags: How to name each option in messages (default: the
                command line's flags).

        Raises:
            ConfigError: Naming the option, the kind and what the kind takes.
        """
        names = flags or CLI_FLAGS
        kind = f"{names['kind']} {self.kind}"
        if self.kind not in KINDS:
            raise config.ConfigError(names["kind"], self.kind, "one of " + ", ".join(KINDS))
        takes = APPLIES[self.kind]
        for option in OPTIONS:
            given = getattr(self, option)
            if given is not None and option not in takes:
                raise config.ConfigError(
                    names[option], given, f"no {names[option]} with {kind} (it takes "
                    + ", ".join(names[o] for o in takes) + ")")
        if self.value is not None and self.value not in VALUES[self.kind]:
            raise config.ConfigError(names["value"], self.value,
                                     f"one of {', '.join(VALUES[self.kind])} with {kind}")
        if self.key is not None and self.key not in reports.KEYS:
            raise config.ConfigError(names["key"], self.key, "one of " + ", ".join(reports.KEYS))
        if self.n is not None and self.n < 1:
            raise config.ConfigError(names["n"], self.n, "a number of rows >= 1")


def render(profile: Profile, options: ReportOptions) -> str:
    """The report ``options`` ask for (checked first with :meth:`ReportOptions.check`)."""
    prof = scope.restrict(profile, span=options.span, thread=options.thread)
    n = options.n if options.n is not None else 20
    value = options.value or "bytes"
    key = options.key or "site"
    kind = options.kind
    if kind == "top":
        return reports.top_sites_report(prof, span=options.span, n=n)
    if kind == "live":
        return reports.live_report(prof, key=key, value=value, n=n)
    if kind == "threads":
        return reports.thread_report(prof, n=n)
    if kind == "churn":
        return reports.churn_report(prof, key=key, n=n)
    if kind == "collapsed":
        return flamegraph.collapsed(prof, value=value, span=options.span)
    stacks = flamegraph.stacks(prof, value=value, span=options.span)
    where = " ".join(p for p in (f"span {options.span}" if options.span else "",
                                 f"thread {options.thread}" if options.thread else "") if p)
    unit = "bytes" if "bytes" in value else "allocations"
    return flamegraph.html_page(stacks, title=f"{value} by stack — {where or 'process'}",
                                unit=unit)


def render_report(profile: Profile, kind: str = "top", *, span: str | None = None,
                  thread: str | None = None, key: str | None = None, value: str | None = None,
                  n: int | None = None) -> str:
    """Check and render one report (the options as :class:`ReportOptions` names them).

    Raises:
        ConfigError: An option the kind does not take, or a bad value.
    """
    options = ReportOptions(kind, span, thread, key, value, n)
    options.check({o: o for o in CLI_FLAGS})
    return render(profile, options)


def content_type(kind: str) -> str:
    """The HTTP content type of a rendered ``kind`` (the flame graph is HTML)."""
    return "text/html; charset=utf-8" if kind == "flamegraph" else "text/plain; charset=utf-8"
