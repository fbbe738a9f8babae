"""What AllocationSpanProcessor adds to a span beyond the hooks (issue 18).

A span item of the suite (``--item``, default ``spans``) on two
TracerProviders in one interpreter: one
with the SDK alone (the baseline), one with AllocationSpanProcessor in
counts mode wrapping the same kind of export processor. Their spans take
turns span by span, so a slow spell of the host falls on both alike; each
span is timed. Each processor setting runs in an interpreter of its own:
with several processors in one, each span read up to twice as dear (their
tables and queues crowd each other out of the caches).

The tracker is installed for all of them (the processors install it), and
its runtime-context stand-in serves every provider: a baseline span's
allocations pass the hooks uncounted, a processor's span has its group, its
allocations counted and its span path (group, stand-in, ``alloc.*``
attributes, records). So the difference is the processor's span path and
counting; ``bench_hook_parts.py`` measures the hooks. Prints, per setting,
the median of the per-span differences from the neighbouring baseline span,
and the difference at the quartiles of the two distributions. Usage::

    python benchmarks/bench_span_path.py [--item spans] [--blocks 60000]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
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


def providers(setting: str) -> dict[str, Any]:
    """The SDK alone's TracerProvider and ``setting``'s."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from otel_alloc import AllocationSpanProcessor

    made = {}
    for name in ("sdk", setting):
        settings = SETTINGS[name]
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
    parser.add_argument("--item", choices=[name for name, item in ITEMS.items() if item.spans],
                        default="spans", help="the suite's span item to run (default spans)")
    parser.add_argument("--blocks", type=int, default=60000,
                        help="spans of each provider (default 60000)")
    parser.add_argument("--setting", choices=[name for name in SETTINGS if name != "sdk"],
                        help="run this setting alone, here (the default: each in a child)")
    args = parser.parse_args()
    if args.setting is None:
        print(f"{args.item}, {args.blocks} spans of each provider taking turns, a setting an "
              "interpreter")
        print("  setting          adds a span (median)   at the quartiles    SDK alone")
        for name in SETTINGS:
            if name != "sdk":
                subprocess.run([sys.executable, __file__, "--item", args.item,
                                "--blocks", str(args.blocks), "--setting", name], check=True)
        return
    made = providers(args.setting)
    names = list(made)
    factories = {name: provider.get_tracer("bench").start_as_current_span
                 for name, provider in made.items()}
    op, clock = ITEMS[args.item].build(), time.perf_counter_ns
    ns: dict[str, list[int]] = {name: [] for name in names}
    for number in range(args.blocks):
        for name in names if number % 2 == 0 else names[::-1]:
            span = factories[name]
            start = clock()
            with span(args.item):
                op(span)
            ns[name].append(clock() - start)
    for provider in made.values():
        provider.shutdown()
    warm = args.blocks // 10
    base = ns["sdk"][warm:]
    base_q = statistics.quantiles(base, n=4)
    spans = ns[args.setting][warm:]
    added = statistics.median(b - a for a, b in zip(base, spans, strict=True))
    at_q = [q - b for q, b in zip(statistics.quantiles(spans, n=4), base_q, strict=True)]
    print(f"  {args.setting:15s}  {added:6.0f} ns ({added / statistics.median(base) * 100:4.1f} %)"
          f"       {' / '.join(f'{x:.0f}' for x in at_q)} ns   "
          f"{statistics.median(base) / 1000:.2f} us", flush=True)


if __name__ == "__main__":
    main()
