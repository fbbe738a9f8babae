"""Evaluate the dashboard's targets against a real Prometheus, the way Grafana does.

``evaluate(prom, span_regex, start, end)`` runs every panel target with the
``span_name`` variable set to ``span_regex``: range targets with
``/api/v1/query_range`` (one step a second), instant targets with
``/api/v1/query`` at ``end``. ``keyed()`` names each answer by its panel
title (and quantile, for the two targets of the per-span size panel).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.support.dashboard import dashboard_queries, iter_targets, load_dashboard
from tests.support.prometheus import PrometheusServer


@dataclass
class Series:
    labels: dict[str, str]
    values: list[float]  # one value (instant) or one per step (range)

    @property
    def last(self) -> float:
        return self.values[-1]


@dataclass
class Answer:
    """What Prometheus answered for one dashboard target."""

    title: str
    ref: str
    expr: str
    instant: bool
    series: list[Series] = field(default_factory=list)

    @property
    def key(self) -> str:
        quantile = re.match(r"histogram_quantile\(([\d.]+)", self.expr)
        return f"{self.title} p{float(quantile.group(1)) * 100:g}" if quantile else self.title

    @property
    def grouping(self) -> set[str]:
        """Labels of the outer ``sum by (...)``; empty for an ungrouped aggregation."""
        match = re.search(r"\bby \(([^)]*)\)", self.expr)
        return {s.strip() for s in match.group(1).split(",")} - {"le"} if match else set()

    def by(self, label: str) -> dict[str, Series]:
        out = {s.labels[label]: s for s in self.series}
        assert len(out) == len(self.series), f"{self.key}: duplicate {label} in {self.series}"
        return out


def evaluate(prom: PrometheusServer, span_regex: str, start: float, end: float) -> list[Answer]:
    """Run every dashboard target with ``$span_name`` = ``span_regex``, as Grafana would."""
    queries = dashboard_queries(span_regex)
    targets = list(iter_targets(load_dashboard()))
    assert len(queries) == len(targets) >= 8
    answers = []
    for (title, expr), (panel, target) in zip(queries, targets, strict=True):
        assert title == panel["title"]
        instant = bool(target.get("instant")) and not target.get("range")
        if instant:
            data = prom.api("/api/v1/query", {"query": expr, "time": f"{end:.3f}"})
            assert data["resultType"] == "vector", (title, data)
            series = [Series(r["metric"], [float(r["value"][1])]) for r in data["result"]]
        else:
            data = prom.api("/api/v1/query_range", {
                "query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": "1"})
            assert data["resultType"] == "matrix", (title, data)
            series = [Series(r["metric"], [float(v) for _, v in r["values"]])
                      for r in data["result"]]
        answers.append(Answer(title, target["refId"], expr, instant, series))
    return answers


def keyed(answers: list[Answer]) -> dict[str, Answer]:
    out = {a.key: a for a in answers}
    assert len(out) == len(answers), [a.key for a in answers]
    return out


def poll(what: str, check: Callable[[], bool], prom: PrometheusServer, timeout: float,
         tick: Callable[[], None] | None = None,
         log_tail: Callable[[], str] | None = None) -> None:
    """Poll ``check`` until it holds; ``tick`` runs between attempts.

    On timeout the error shows the scrape targets' health and, when given,
    ``log_tail()`` (the traced service's output).
    """
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out waiting for {what}; targets: {prom.targets_health()}"
                + (f"\nweb service output:\n{log_tail()}" if log_tail is not None else ""))
        if tick is not None:
            tick()
        time.sleep(0.2)


def values_by_span(prom: PrometheusServer, promql: str) -> dict[str, float]:
    """The instant value of each series of ``promql``, by its ``span_name`` label."""
    return {s["metric"]["span_name"]: float(s["value"][1]) for s in prom.query(promql)}


def wait_for_scrape_after(prom: PrometheusServer, end: float, timeout: float) -> None:
    """Wait until a scrape that started after ``end`` is in.

    Samples are stamped with their scrape's start: once a later scrape is in,
    every sample up to ``end`` is, and all queries over the range see the same
    data.
    """
    poll("a scrape after the end of the range", lambda: any(
        float(s["value"][1]) > end for s in prom.query("timestamp(up)")), prom, timeout)
