"""Span throughput with and without AllocationSpanProcessor.

Each span does a little work. Fresh interpreter per measurement, variants
alternated, medians of the runs; prints spans/second and the ratio to the SDK
alone. The timed window ends with ``force_flush``, so the work the processor
leaves to its watch thread (metrics, samples) is counted too.

Variants: the SDK alone; the processor in counts and in live mode with no
MeterProvider configured (the API's no-op instruments, as in the issue's
setup); and, with ``--meter-provider``, the same with an SDK MeterProvider
(in-memory reader) in both the baseline and the traced runs, where every
span's histogram point costs the SDK's own ``Histogram.record``, once with
every span recorded and once with ``span_size_sample_rate=0.1``. Usage::

    python benchmarks/bench_spans.py [--runs 5] [--spans 20000] [--meter-provider]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from bench_util import NullExporter, alternated

BASE = ("sdk", "counts", "live")
WITH_METRICS = ("sdk+mp", "counts+mp", "counts+mp@0.1")


def child(variant: str, spans: int) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    name, _, rate = variant.partition("@")
    mode, _, meter = name.partition("+")
    if meter == "mp":
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
    export = SimpleSpanProcessor(NullExporter())  # type: ignore[arg-type]
    provider = TracerProvider()
    if mode == "sdk":
        provider.add_span_processor(export)
    else:
        from otel_alloc import AllocationSpanProcessor

        provider.add_span_processor(AllocationSpanProcessor(
            export, mode=mode, span_size_sample_rate=float(rate or 1.0)))
    tracer = provider.get_tracer("bench")

    def one() -> int:
        with tracer.start_as_current_span("op") as span:
            span.set_attribute("k", 1)
            data = {str(i): [i] * 4 for i in range(20)}
            return len(data)

    for _ in range(spans // 10):
        one()
    provider.force_flush()
    start = time.perf_counter()
    for _ in range(spans):
        one()
    provider.force_flush()  # what the watch thread still has to do is part of the cost
    print(json.dumps({"seconds": time.perf_counter() - start}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--spans", type=int, default=20000)
    parser.add_argument("--meter-provider", action="store_true",
                        help="also measure with an SDK MeterProvider configured")
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.spans)
        return
    variants = BASE + (WITH_METRICS if args.meter_provider else ())
    times: dict[str, list[float]] = {v: [] for v in variants}
    for run in range(args.runs):
        for v in alternated(variants, run):
            out = subprocess.run([sys.executable, __file__, "--child", v, "--spans",
                                  str(args.spans)], check=True, capture_output=True, text=True)
            times[v].append(json.loads(out.stdout.strip().splitlines()[-1])["seconds"])
    print(f"python {sys.version.split()[0]}, {args.runs} alternated runs of {args.spans} spans")
    for v in variants:
        base = statistics.median(times["sdk+mp" if "+mp" in v else "sdk"])
        med = statistics.median(times[v])
        print(f"  {v:14s} {args.spans / med:10.0f} spans/s   {base / med:5.2f}x of SDK alone")


if __name__ == "__main__":
    main()
