"""Span throughput with and without AllocationSpanProcessor.

Each span does a little work. Fresh interpreter per measurement, variants
alternated, medians of the runs; prints spans/second and the ratio. Usage::

    python benchmarks/bench_spans.py [--runs 5] [--spans 20000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence

VARIANTS = ("sdk", "counts", "live")


class _NullExporter:
    def export(self, spans: Sequence[object]) -> object:
        from opentelemetry.sdk.trace.export import SpanExportResult

        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def child(variant: str, spans: int) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    export = SimpleSpanProcessor(_NullExporter())  # type: ignore[arg-type]
    provider = TracerProvider()
    if variant == "sdk":
        provider.add_span_processor(export)
    else:
        from otel_alloc import AllocationSpanProcessor

        provider.add_span_processor(AllocationSpanProcessor(export, mode=variant))
    tracer = provider.get_tracer("bench")

    def one() -> int:
        with tracer.start_as_current_span("op") as span:
            span.set_attribute("k", 1)
            data = {str(i): [i] * 4 for i in range(20)}
            return len(data)

    for _ in range(spans // 10):
        one()
    start = time.perf_counter()
    for _ in range(spans):
        one()
    print(json.dumps({"seconds": time.perf_counter() - start}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--spans", type=int, default=20000)
    parser.add_argument("--child", choices=VARIANTS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.spans)
        return
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for run in range(args.runs):
        for v in VARIANTS if run % 2 == 0 else reversed(VARIANTS):
            out = subprocess.run([sys.executable, __file__, "--child", v, "--spans",
                                  str(args.spans)], check=True, capture_output=True, text=True)
            times[v].append(json.loads(out.stdout.strip().splitlines()[-1])["seconds"])
    base = statistics.median(times["sdk"])
    print(f"python {sys.version.split()[0]}, {args.runs} alternated runs of {args.spans} spans")
    for v in VARIANTS:
        med = statistics.median(times[v])
        print(f"  {v:7s} {args.spans / med:10.0f} spans/s   {base / med:5.2f}x of SDK alone")


if __name__ == "__main__":
    main()
