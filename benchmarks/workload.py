"""A request-like workload: JSON decode/encode, dicts and lists, byte buffers."""

from __future__ import annotations

import json
import random

_rng = random.Random(42)
PAYLOAD = json.dumps(
    {
        "user": {"id": 12345, "name": "ada", "tags": ["a", "b", "c"] * 5},
        "items": [
            {"sku": f"sku-{i}", "qty": _rng.randint(1, 9), "price": _rng.random() * 100,
             "attrs": {"color": "red", "size": i % 5}}
            for i in range(40)
        ],
        "meta": {"trace": "x" * 64, "flags": list(range(20))},
    }
)


def handle_request(payload: str = PAYLOAD) -> int:
    """One "request": parse, transform, build a response, serialise it."""
    data = json.loads(payload)
    items = data["items"]
    totals: dict[str, float] = {}
    for item in items:
        key = f"{item['attrs']['color']}-{item['attrs']['size']}"
        totals[key] = totals.get(key, 0.0) + item["qty"] * item["price"]
    enriched = [dict(item, total=item["qty"] * item["price"]) for item in items]
    enriched.sort(key=lambda it: it["total"], reverse=True)
    body = json.dumps({"user": data["user"]["id"], "totals": totals, "top": enriched[:10]})
    buf = bytearray()
    for chunk in (body.encode(), b"\r\n", bytes(256)):
        buf += chunk
    return len(bytes(buf)) + len(str(totals))


def run(requests: int) -> int:
    """Handle ``requests`` requests; returns a checksum so nothing is optimised out."""
    total = 0
    for _ in range(requests):
        total += handle_request()
    return total
