"""What AllocationSpanProcessor adds to a span beyond the hooks (issue 18).

The suite's ``spans`` item on several TracerProviders in one interpreter:
one with the SDK alone (the baseline) and one per processor setting, each
with AllocationSpanProcessor in counts mode wrapping the same kind of export
processor. Their spans take turns span by span, in a rotating order, so a
slow spell of the host falls on all of them alike; each span is timed.

The tracker is installed for all of them (the processors install it), and
its runtime-context stand-in serves every provider: a baseline span's
allocations pass the hooks uncounted, a processor's span has its group, its
allocations counted and its span path (group, stand-in, ``alloc.*``
attributes, records). So the difference is the processor's span path and
counting; ``bench_hook_parts.py`` measures the hooks. Prints, per setting,
the median of the per-span differences from the neighbouring baseline span,
and the difference at the quartiles of the two distributions. Usage::

    python benchmarks/bench_span_path.py [--blocks 60000]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from bench_util import NullExporter
from suite_items import ITEMS

SETTINGS: dict[str, dict[str, Any] | None] = {
    "sdk": None,
    "counts": {},
    "no-attributes": {"span_attributes": False},
    "no-metrics": {"metrics": False},
    "no-sampling": {"sample_bytes": 0},
}


def providers() -> dict[str, Any]:
    """One TracerProvider per setting (the SDK alone for ``sdk``)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from otel_alloc import AllocationSpanProcessor

    made = {}
    for name, settings in SETTINGS.items():
        provider = TracerProvider()
        export = SimpleSpanProcessor(NullExporter())  # type: ignore[arg-type]
        if settings is None:
            provider.add_span_processor(export)
        else:
            provider.add_span_processor(AllocationSpanProcessor(
                export, mode="counts", **{"metrics": True, "span_size_sample_rate": 1.0,
                                          **settings}))
        made[name] = provider
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=60000,
                        help="spans of each setting (default 60000)")
    args = parser.parse_args()
    made = providers()
    names = list(made)
    factories = {name: provider.get_tracer("bench").start_as_current_span
                 for name, provider in made.items()}
    op, clock = ITEMS["spans"].build(), time.perf_counter_ns
    ns: dict[str, list[int]] = {name: [] for name in names}
    for number in range(args.blocks):
        turn = number % len(names)
        order = names[turn:] + names[:turn]
        for name in order if number % 2 == 0 else order[::-1]:
            span = factories[name]
            start = clock()
            with span("spans"):
                op(span)
            ns[name].append(clock() - start)
    for provider in made.values():
        provider.shutdown()
    warm = args.blocks // 10
    base = ns["sdk"][warm:]
    base_q = statistics.quantiles(base, n=4)
    print(f"spans, {args.blocks} spans of each setting taking turns; SDK alone: median "
          f"{statistics.median(base) / 1000:.2f} us a span")
    print("  setting          adds a span (median)   at the quartiles")
    for name in names[1:]:
        spans = ns[name][warm:]
        added = statistics.median(b - a for a, b in zip(base, spans, strict=True))
        at_q = [q - b for q, b in zip(statistics.quantiles(spans, n=4), base_q, strict=True)]
        print(f"  {name:15s}  {added:6.0f} ns ({added / statistics.median(base) * 100:4.1f} %)"
              f"       {' / '.join(f'{x:.0f}' for x in at_q)} ns")


if __name__ == "__main__":
    main()
