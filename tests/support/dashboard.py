"""Read the PromQL queries of the otel_alloc Grafana dashboard.

``dashboard_queries()`` returns every panel target's expression with the
Grafana variables replaced, ready to run against a real Prometheus::

    for title, expr in dashboard_queries(".*"):
        prom.query(expr)
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
COLLECTOR_CONFIG = ROOT / "collector-config"
DASHBOARD = COLLECTOR_CONFIG / "grafana" / "dashboards" / "otel-alloc.json"

RATE_INTERVAL = "1m"
RANGE = "5m"
_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


def load_dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    """The dashboard JSON as a dict."""
    with open(path, encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


def iter_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """All panels, including those nested in rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def iter_targets(dashboard: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(panel, target) for every panel target that has a PromQL ``expr``."""
    for panel in iter_panels(dashboard):
        for target in panel.get("targets", []):
            if target.get("expr"):
                yield panel, target


def substitute(expr: str, span_regex: str) -> str:
    """Replace ``$span_name``, ``$__rate_interval`` and ``$__range`` in ``expr``.

    ``span_regex`` is inserted verbatim, as Grafana inserts the variable's value
    inside ``span_name=~"..."``. Any other variable raises ``KeyError``.
    """
    values = {"span_name": span_regex, "__rate_interval": RATE_INTERVAL, "__range": RANGE}

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise KeyError(f"unknown dashboard variable ${name} in {expr!r}")
        return values[name]

    return _VARIABLE.sub(replace, expr)


def dashboard_queries(span_regex: str, path: Path = DASHBOARD) -> list[tuple[str, str]]:
    """(panel title, expr) for every dashboard query, with variables substituted.

    ``$span_name`` becomes ``span_regex``, ``$__rate_interval`` becomes ``1m`` and
    ``$__range`` becomes ``5m``.
    """
    return [
        (panel.get("title", ""), substitute(target["expr"], span_regex))
        for panel, target in iter_targets(load_dashboard(path))
    ]
