"""A batch job traced with OpenTelemetry, its allocations per step shown at exit.

Run: python examples/batch_job.py
"""

from __future__ import annotations

import json
import random

from opentelemetry.sdk.trace import TracerProvider

from otel_alloc import AllocationSpanProcessor
from otel_alloc.summary import SummarySink

summary = SummarySink()
provider = TracerProvider()
provider.add_span_processor(AllocationSpanProcessor(mode="live", sinks=[summary]))
tracer = provider.get_tracer("batch-job")
_cache: list[bytes] = []  # the "leak": grows on every batch


def load(n: int) -> list[dict[str, object]]:
    with tracer.start_as_current_span("load"):
        rng = random.Random(n)
        return [{"id": i, "value": rng.random(), "tags": ["a", "b"] * 3} for i in range(n)]


def transform(rows: list[dict[str, object]]) -> str:
    with tracer.start_as_current_span("transform"):
        return json.dumps([dict(r, score=float(r["value"]) * 2) for r in rows])  # type: ignore[arg-type]


def remember(blob: str) -> None:
    with tracer.start_as_current_span("remember"):
        _cache.append(blob.encode())  # kept forever: live bytes stay with this span


def main() -> None:
    for batch in range(20):
        with tracer.start_as_current_span("batch"):
            rows = load(2000 + 100 * batch)
            blob = transform(rows)
            remember(blob[:20_000])
    provider.shutdown()
    print(summary.render())


if __name__ == "__main__":
    main()
