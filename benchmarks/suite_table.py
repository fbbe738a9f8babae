"""Ratios, targets and the suite's one table (Markdown), and a parser for it."""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass, field

COLUMNS = ("counts", "live", "native", "estimate", "tracemalloc", "memray")
TITLES = {"counts": "counts", "live": "live", "native": "live+native",
          "estimate": "estimate", "tracemalloc": "tracemalloc", "memray": "memray"}
# Issue 18's targets: time ratios to untraced (lower is better), service
# throughput ratios to OpenTelemetry alone (higher is better).
TIME_TARGETS = {"counts": 1.10, "live": 1.30}
SERVICE_TARGETS = {"counts": 0.90, "live": 0.80}
NATIVE_ADDS = 0.05
# The median's interval from the rounds' order statistics: the narrowest one
# symmetric in rank that holds the true median with at least this chance.
INTERVAL_LEVEL = 0.85
CELL = re.compile(r"^(?P<ratio>\d+\.\d\d)x \((?P<low>\d+\.\d\d)-(?P<high>\d+\.\d\d)\)"
                  r"(?: (?P<added>[+-]\d+\.\d)%)?"
                  r"(?: (?P<target>[<>]=\S+) (?P<verdict>pass|FAIL))?$")


@dataclass
class Series:
    """What one item measured: per variant, one value per round (None: failed)."""

    item: str
    what: str
    baseline: str  # the variant that is 1.00x
    throughput: bool = False  # values are req/s (higher is better), else seconds
    values: dict[str, list[float | None]] = field(default_factory=dict)
    na: dict[str, str] = field(default_factory=dict)  # variant -> why it did not run
    errors: dict[str, list[str]] = field(default_factory=dict)  # variant -> failed runs
    skipped: str | None = None  # the whole item: why
    notes: list[str] = field(default_factory=list)
    # Other per-round figures by name (the service: "cpu_ms", "serving_cpu_ms"),
    # then variant, aligned with ``values`` round by round (None: not measured).
    extras: dict[str, dict[str, list[float | None]]] = field(default_factory=dict)

    def add(self, variant: str, value: float | None) -> None:
        """Record one round's value for ``variant``."""
        self.values.setdefault(variant, []).append(value)

    def add_extra(self, name: str, variant: str, value: float | None) -> None:
        """Record one round's figure ``name`` for ``variant`` (call once per :meth:`add`)."""
        self.extras.setdefault(name, {}).setdefault(variant, []).append(value)

    def extra_ratios(self, name: str, variant: str) -> list[float]:
        """Per-round ratios of figure ``name`` of ``variant`` to the baseline's."""
        figures = self.extras.get(name, {})
        pairs = zip(figures.get(self.baseline, []), figures.get(variant, []), strict=False)
        return [m / b for b, m in pairs if b and m]

    def ratios(self, variant: str, over: str | None = None) -> list[float]:
        """Per-round cost ratios of ``variant`` to ``over`` (default: the baseline).

        For seconds that is variant / baseline; for throughput it is
        variant / baseline as well (a fraction of the baseline's req/s),
        except against another tracked variant (``over`` given), where it is
        turned into a cost (over / variant) so that ``+x %`` always means slower.
        """
        base = self.values.get(over or self.baseline, [])
        mine = self.values.get(variant, [])
        out = []
        for b, m in zip(base, mine, strict=False):  # a round may lack one
            if b and m:
                out.append(b / m if self.throughput and over else m / b)
        return out


def median_interval(values: list[float]) -> tuple[float, float, float] | None:
    """An interval for the median of what ``values`` are drawn from, and its coverage.

    Distribution-free: the number of rounds below the true median is
    Binomial(n, 1/2), so the k-th lowest and k-th highest of n rounds hold it
    with probability 1 - 2 P(B <= k - 1). The largest k whose coverage is at
    least ``INTERVAL_LEVEL`` is taken (7 rounds: the second lowest and second
    highest, 87.5 %); with too few rounds for that level, the lowest and
    highest and their lower coverage (3 rounds: 75 %). None for one round.
    """
    n = len(values)
    if n < 2:
        return None
    ordered = sorted(values)

    def coverage(k: int) -> float:
        return 1.0 - 2.0 * sum(math.comb(n, i) for i in range(k)) / 2.0 ** n

    k = 1
    while k + 1 <= (n + 1) // 2 and coverage(k + 1) >= INTERVAL_LEVEL:
        k += 1
    return ordered[k - 1], ordered[n - k], coverage(k)


def _target(series: Series, variant: str) -> tuple[list[float], float, bool] | None:
    """The per-round figures a verdict reads, its line and whether lower is better."""
    if variant == "native":
        return [r - 1.0 for r in series.ratios("native", over="live")], NATIVE_ADDS, True
    if series.throughput and variant in SERVICE_TARGETS:
        return series.ratios(variant), SERVICE_TARGETS[variant], False
    if not series.throughput and variant in TIME_TARGETS:
        return series.ratios(variant), TIME_TARGETS[variant], True
    return None


def _meets(figures: list[float], line: float, lower_is_better: bool) -> bool:
    """Whether the median of ``figures`` is on the passing side of ``line`` (or on it)."""
    med = statistics.median(figures)
    return med <= line if lower_is_better else med >= line


def unsettled(series: Series, variant: str) -> str | None:
    """``variant``'s verdict when the rounds cannot settle it, as text (else None).

    A verdict is unsettled when the median's interval (:func:`median_interval`)
    reaches across the target's line: more rounds could turn it either way.
    """
    if series.skipped or variant in series.na:
        return None
    target = _target(series, variant)
    if target is None:
        return None
    figures, line, lower_is_better = target
    interval = median_interval(figures)
    if interval is None or not interval[0] <= line <= interval[1]:
        return None
    low, high, cover = interval
    if variant == "native":
        span = f"adds {low * 100:+.1f}% to {high * 100:+.1f}%, line {line * 100:.0f}%"
    else:
        span = f"{low:.2f}x-{high:.2f}x, line {line:.2f}x"
    side = "pass" if _meets(figures, line, lower_is_better) else "FAIL"
    return f"{series.item} {TITLES[variant]} ({side}): {span}, {cover * 100:.1f}% interval"


def _spread(values: list[float]) -> str:
    return (f"{statistics.median(values):.2f}x "
            f"({min(values):.2f}-{max(values):.2f})")


def cell(series: Series, variant: str) -> tuple[str, bool | None]:
    """The table cell of ``variant`` and whether it meets its target (None: no target)."""
    if variant in series.na:
        return f"n/a ({series.na[variant]})", None
    values = series.ratios(variant)
    if not values:
        return ("error (see notes)", False) if variant in series.errors else ("n/a (no run)", None)
    text = _spread(values)
    ok: bool | None = None
    target = _target(series, variant)
    if target is not None and target[0]:
        figures, line, lower_is_better = target
        ok = _meets(figures, line, lower_is_better)
        if variant == "native":
            text += f" {statistics.median(figures) * 100:+.1f}% <={line * 100:.0f}%"
        else:
            text += f" {'<=' if lower_is_better else '>='}{line:.2f}"
    if ok is not None:
        text += " pass" if ok else " FAIL"
    return text, ok


def baseline_text(series: Series) -> str:
    """The ``1.00x =`` cell: which runs are the baseline, and their median."""
    values = [v for v in series.values.get(series.baseline, []) if v]
    if not values:
        return series.baseline
    med = statistics.median(values)
    if series.throughput:
        return f"OTel only, {med:,.0f} req/s"
    label = "untraced" if series.item == "core" else "SDK spans, no tracker"
    return f"{label}, {med:.2f} s"


def cpu_note(series: Series) -> str | None:
    """The service's CPU time a request, by variant, as a note (None: not measured).

    Medians of rounds: the baseline's milliseconds, then each variant's ratio
    to it (a cost: higher is slower), for all the server's threads and, in
    brackets, the serving thread alone.
    """
    every = series.extras.get("cpu_ms", {})
    base = [v for v in every.get(series.baseline, []) if v]
    serving = [v for v in series.extras.get("serving_cpu_ms", {}).get(series.baseline, []) if v]
    if not base or not serving:
        return None
    parts = [f"{series.baseline} {statistics.median(base):.3f} ms "
             f"(serving thread {statistics.median(serving):.3f} ms)"]
    for variant in COLUMNS:
        all_threads = series.extra_ratios("cpu_ms", variant)
        alone = series.extra_ratios("serving_cpu_ms", variant)
        if all_threads and alone:
            parts.append(f"{TITLES[variant]} {statistics.median(all_threads):.2f}x "
                         f"({statistics.median(alone):.2f}x)")
    return ("server CPU time a request, all threads (serving thread), medians of rounds: "
            + ", ".join(parts))


def render(results: list[Series], header: list[str],
           options: str = "") -> tuple[str, int, int]:
    """The table with its header and notes; also the numbers of passes and failures.

    ``options``: the run's own options (``--interleave 10``, say), repeated in
    the command that runs the unsettled items again.
    """
    lines = list(header)
    titles = ["item", "1.00x ="] + [TITLES[c] for c in COLUMNS]
    lines.append("| " + " | ".join(titles) + " |")
    lines.append("|" + "---|" * len(titles))
    passed = failed = 0
    notes: list[str] = []
    for series in results:
        if series.skipped:
            cells = [f"skipped: {series.skipped}"] * (len(COLUMNS) + 1)
        else:
            cells = [baseline_text(series)]
            for column in COLUMNS:
                text, ok = cell(series, column)
                cells.append(text)
                passed += ok is True
                failed += ok is False
        lines.append("| " + " | ".join([series.item, *cells]) + " |")
        cpu = cpu_note(series)
        notes += [f"{series.item}: {cpu}"] if cpu else []
        notes += [f"{series.item}: {note}" for note in series.notes]
        notes += [f"{series.item} {v}: {len(errs)} of {len(series.values.get(v, []))} runs "
                  f"failed, last: {errs[-1]}" for v, errs in series.errors.items()]
    lines.append("")
    lines.append(f"targets: {passed} pass, {failed} FAIL")
    open_items: dict[str, list[str]] = {}  # item -> its unsettled verdicts, in order
    for series in results:
        for column in COLUMNS:
            if verdict := unsettled(series, column):
                open_items.setdefault(series.item, []).append(verdict)
    open_verdicts = [verdict for verdicts in open_items.values() for verdict in verdicts]
    lines.append("verdicts the rounds cannot settle (the median's interval from the rounds' "
                 "order statistics reaches across the target): "
                 + ("; ".join(open_verdicts) if open_verdicts else "none"))
    if open_items:
        rounds = max((len(v) for s in results for v in s.values.values()), default=0)
        lines.append(f"more rounds for them: python benchmarks/suite.py --only "
                     f"{','.join(open_items)} --rounds {max(21, 3 * rounds)}"
                     + (f" {options}" if options else ""))
    lines += [f"- {note}" for note in notes]
    return "\n".join(lines), passed, failed


def parse(text: str) -> list[dict[str, str]]:
    """The table's rows (cells by column title); raises ValueError if malformed."""
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    if not rows:
        raise ValueError("no table")
    titles = [c.strip() for c in rows[0].strip("|").split("|")]
    if titles != ["item", "1.00x ="] + [TITLES[c] for c in COLUMNS]:
        raise ValueError(f"unexpected columns {titles}")
    parsed = []
    for row in rows[1:]:
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        if len(cells) != len(titles):
            raise ValueError(f"row has {len(cells)} cells: {row}")
        entry = dict(zip(titles, cells, strict=True))
        for title in titles[2:]:
            value = entry[title]
            if not (CELL.match(value) or value.startswith(("n/a", "skipped:", "error"))):
                raise ValueError(f"bad cell {value!r} in {row}")
        parsed.append(entry)
    return parsed
