"""What otel_alloc's allocator hooks cost a span on the wall clock (issue 18).

A span item of the suite (``--item``, default ``spans``) in one
interpreter, the tracker installed once:
short bursts (``--burst`` spans) take turns with different allocators in
place, put there by swapping the saved allocator sets
(``hook_probe/hook_probe.c``), not by installing and uninstalling, which
would leave the caches cold for the burst after it:

- ``none``: CPython's own allocators (the baseline, 1.00x);
- ``guard``: the least a hook can do (a thread-local guard, the call of the
  allocator it wraps, the bytes added to one thread-local counter);
- ``tracker``: otel_alloc's counts-mode hooks.

Without ``--processor`` no span has a group, so the tracker's hooks only
pass allocations through (their check of the attribution cache included).
With it, the provider's spans go through AllocationSpanProcessor in counts
mode in every burst, and the ``tracker`` bursts count into the spans' groups
(the others count nothing: the span path's own cost is in all three, and
is measured apart by ``bench_span_path.py``). Prints each variant's median
ratio of its burst to the ``none`` burst of the same round. Usage::

    python benchmarks/bench_hook_parts.py [--item spans] [--rounds 3000] [--burst 20] [--processor]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_util import NullExporter, alternated, build_probe
from suite_items import ITEMS

HERE = Path(__file__).resolve().parent / "hook_probe"
SLOT_OF = {"none": 0, "guard": 1, "tracker": 2}
SPAN_ITEMS = [name for name, item in ITEMS.items() if item.spans]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--item", choices=SPAN_ITEMS, default="spans",
                        help="the suite's span item to run (default spans)")
    parser.add_argument("--rounds", type=int, default=3000)
    parser.add_argument("--burst", type=int, default=20, help="spans a burst (default 20)")
    parser.add_argument("--processor", action="store_true",
                        help="spans through AllocationSpanProcessor (counts mode) in every burst")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="oa-hook-probe-") as target:
        probe = build_probe(HERE, "_oa_hook_probe", Path(target)).lib
        # Saved before anything is wrapped: CPython's allocators, then the guard's.
        probe.oa_probe_save(SLOT_OF["none"])
        probe.oa_probe_install_guard()
        probe.oa_probe_save(SLOT_OF["guard"])
        probe.oa_probe_restore(SLOT_OF["none"])
        measure(probe, args.item, args.rounds, args.burst, args.processor)


def measure(lib: Any, item: str, rounds: int, burst: int, processor: bool) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    import otel_alloc

    provider = TracerProvider()
    export = SimpleSpanProcessor(NullExporter())  # type: ignore[arg-type]
    if processor:
        provider.add_span_processor(otel_alloc.AllocationSpanProcessor(
            export, mode="counts", metrics=True, span_size_sample_rate=1.0))
    else:
        provider.add_span_processor(export)
    if otel_alloc.installed_mode() is None:
        otel_alloc.install("counts", native=False)
    lib.oa_probe_save(SLOT_OF["tracker"])
    lib.oa_probe_restore(SLOT_OF["none"])
    op, clock = ITEMS[item].build(), time.perf_counter_ns
    span = provider.get_tracer("bench").start_as_current_span

    def timed() -> int:
        start = clock()
        for _ in range(burst):
            with span(item):
                op(span)
        return clock() - start

    variants = list(SLOT_OF)
    ns: dict[str, list[int]] = {v: [] for v in variants}
    timed()
    dropped = 0
    for number in range(rounds):
        rehooks = otel_alloc.counters().rehooks
        times = {}
        for variant in alternated(variants, number):
            lib.oa_probe_restore(SLOT_OF[variant])
            times[variant] = timed()
            lib.oa_probe_restore(SLOT_OF["none"])
        if otel_alloc.counters().rehooks == rehooks:
            for variant, elapsed in times.items():
                ns[variant].append(elapsed)
            continue
        # The processor's watch put the hooks back in a burst that ran
        # without them, over whatever was in place (the guard's, maybe):
        # the round is dropped, and the tracker's set saved again over
        # CPython's allocators alone.
        dropped += 1
        otel_alloc.tracker.ensure_hooked()
        lib.oa_probe_save(SLOT_OF["tracker"])
        lib.oa_probe_restore(SLOT_OF["none"])
    lib.oa_probe_restore(SLOT_OF["tracker"])
    provider.shutdown()
    print(f"{item}, {rounds} rounds of {burst}-span bursts, "
          f"{'with' if processor else 'without'} AllocationSpanProcessor; none: "
          f"{statistics.median(ns['none']) / burst / 1000:.2f} us a span; "
          f"rounds dropped (hooks put back by the watch): {dropped}")
    for variant in variants[1:]:
        ratios = sorted(b / a for a, b in zip(ns["none"], ns[variant], strict=True))
        print(f"  {variant:8s} {statistics.median(ratios):.4f}x  "
              f"(quartiles {ratios[len(ratios) // 4]:.3f}-{ratios[3 * len(ratios) // 4]:.3f})")


if __name__ == "__main__":
    main()
