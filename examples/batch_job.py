"""A batch job with one span per step.

    otel-alloc run --mode live examples/batch_job.py

The tracing setup comes from the runner (or from your own SDK setup); run
plainly, the job just runs.
"""

from __future__ import annotations

import json
import random
import sys

from opentelemetry import trace

tracer = trace.get_tracer("examples.batch_job")
_cache: list[bytes] = []  # grows on every batch: the "remember" step leaks


def load(n: int) -> list[dict[str, object]]:
    with tracer.start_as_current_span("load"):
        rng = random.Random(n)
        return [{"id": i, "value": rng.random(), "tags": ["a", "b"] * 3} for i in range(n)]


def transform(rows: list[dict[str, object]]) -> str:
    with tracer.start_as_current_span("transform"):
        return json.dumps([dict(r, score=float(r["value"]) * 2) for r in rows])  # type: ignore[arg-type]


def remember(blob: str) -> None:
    with tracer.start_as_current_span("remember"):
        _cache.append(blob.encode())


def main(batches: int = 20) -> None:
    for batch in range(batches):
        with tracer.start_as_current_span("batch"):
            rows = load(2000 + 100 * batch)
            remember(transform(rows)[:20_000])


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
