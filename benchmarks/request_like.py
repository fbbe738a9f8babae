"""A request-like handler: the dict/list/str churn of one web request.

Parses a JSON body, normalises headers and the query string, looks rows up in
an in-memory "database", builds response objects (dataclasses, then dicts with
formatted strings and links), writes a log line and serialises the response.
Unlike ``workload.py`` (one JSON round trip), most of its allocations are many
small, short-lived objects, the shape that costs live mode the most.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from urllib.parse import parse_qs

_rng = random.Random(7)
CATALOG: dict[str, dict[str, object]] = {
    f"sku-{i}": {"name": f"Product {i}", "price": round(_rng.random() * 100, 2),
                 "category": ("books", "games", "tools", "food")[i % 4], "stock": i % 17}
    for i in range(500)
}
HEADERS = {"Content-Type": "application/json", "Accept": "*/*", "User-Agent": "bench/1.0",
           "X-Request-Id": "4bf92f3577b34da6a3ce929d0e0e4736", "Accept-Encoding": "gzip"}
LAST_LOG = [""]
QUERY = "currency=EUR&expand=lines&expand=totals&page=1&per_page=25"
BODY = json.dumps({
    "customer": {"id": 4711, "email": "ada@example.com", "tier": "gold"},
    "lines": [{"sku": f"sku-{_rng.randrange(500)}", "qty": _rng.randint(1, 5),
               "note": "gift" if i % 7 == 0 else ""} for i in range(30)],
    "coupon": "SPRING",
})


@dataclass
class Line:
    """One validated order line."""

    sku: str
    name: str
    qty: int
    unit_price: float
    category: str

    @property
    def total(self) -> float:
        """Line total."""
        return self.qty * self.unit_price


def _lookup(skus: list[str]) -> dict[str, dict[str, object]]:
    return {sku: dict(CATALOG[sku]) for sku in skus if sku in CATALOG}


def handle(body: str = BODY,
           span: Callable[[str], AbstractContextManager[object]] | None = None) -> str:
    """Handle one request; ``span`` (if given) opens a child span for the lookup."""
    headers = {k.lower(): v.strip() for k, v in HEADERS.items()}
    query = {k: v if len(v) > 1 else v[0] for k, v in parse_qs(QUERY).items()}
    request = json.loads(body)
    skus = [line["sku"] for line in request["lines"]]
    if span is None:
        rows = _lookup(skus)
    else:
        with span("db.lookup"):
            rows = _lookup(skus)
    lines: list[Line] = []
    errors: list[str] = []
    for raw in request["lines"]:
        row = rows.get(raw["sku"])
        if row is None or int(raw["qty"]) > int(str(row["stock"])) + 3:
            errors.append(f"line {raw['sku']}: unavailable (qty {raw['qty']})")
            continue
        lines.append(Line(raw["sku"], str(row["name"]), int(raw["qty"]),
                          float(str(row["price"])), str(row["category"])))
    totals: dict[str, float] = defaultdict(float)
    for line in lines:
        totals[line.category] += line.total
    order_id = f"ord-{request['customer']['id']}-{len(lines)}"
    response = {
        "order": order_id,
        "customer": request["customer"]["id"],
        "currency": query.get("currency", "EUR"),
        "lines": [{**asdict(line), "total": f"{line.total:.2f}",
                   "href": f"/orders/{order_id}/lines/{n}"} for n, line in enumerate(lines)],
        "totals": {k: round(v, 2) for k, v in sorted(totals.items())},
        "errors": errors,
        "request_id": headers["x-request-id"],
    }
    log = " ".join(f"{k}={v}" for k, v in (("order", order_id), ("lines", len(lines)),
                                            ("errors", len(errors)), ("ua", headers["user-agent"])))
    LAST_LOG[0] = log  # a logging handler would format and keep it briefly
    return json.dumps(response)
