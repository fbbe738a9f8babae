"""Cost as the tracked heap grows: each variant timed after a held heap of K blocks.

The suite times its variants in processes that tracked nothing before the
timing (and ``--same-interpreter`` starts each burst with an empty table),
so a tracer whose per-allocation cost grows with the heap it holds looks
cheaper there than in a service that has run with it since start-up. Live
mode's pointer table holds every live block allocated in a span or group;
tracemalloc's holds every live block.

Here each run, in a fresh interpreter, sets its variant up as the suite
does (``suite_child.Tracing``), then makes K blocks in one span (or the
item's group) and holds them: ``bytes`` objects of 16 to 63 bytes, one
pymalloc block each, spread over its size classes. It collects the
garbage, then times a burst of the item's ops (warmed with a tenth, as the
suite's bursts are). The untraced run holds the same K blocks, so every
variant's ratio is to a process with the same heap. Variants are
alternated from one run to the next; the ratio printed is the median of
the runs' ratios to the untraced run of the same round (min-max beside
it). For the tracker's variants the child also reports how many blocks
the table gained while the held ones were made, and the table's live
blocks and bookkeeping bytes per live block after the burst
(``otel_alloc.memory_usage()``); the table holds live mode's. Usage::

    python benchmarks/bench_heap.py [--items core,request] [--blocks 0,300000,1000000,3000000]
        [--variants untraced,counts,live,estimate,tracemalloc] [--runs 7] [--scale 0.5]

``--scale`` is the fraction of the suite's op count a burst runs. At the
defaults it took seven minutes here.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
from pathlib import Path

from bench_util import alternated

HERE = Path(__file__).resolve().parent
VARIANTS = ("untraced", "counts", "live", "estimate", "tracemalloc")
TRACKED = ("counts", "live", "estimate")


def held_blocks(count: int) -> list[bytes]:
    """``count`` small ``bytes`` objects, one pymalloc block each, of sizes 16 to 63."""
    return [bytes(16 + i % 48) for i in range(count)]


def child(item_name: str, variant: str, blocks: int, scale: float) -> dict[str, object]:
    """One run: set ``variant`` up, hold ``blocks`` blocks made under it, time a burst."""
    sys.path.insert(0, str(HERE))
    import suite_child
    from suite_items import ITEMS

    item = ITEMS[item_name]
    op = item.build()
    count = max(1, round(item.count * scale))
    tracing = suite_child.Tracing(variant, item.spans)
    tracked = variant in TRACKED
    try:
        if tracked:
            import otel_alloc

            before = otel_alloc.memory_usage().live_blocks
        with tracing.span("held"):
            held = held_blocks(blocks)
        in_table = otel_alloc.memory_usage().live_blocks - before if tracked else 0
        gc.collect()
        result = suite_child.burst(op, count, item_name, tracing)
        if tracked:
            usage = otel_alloc.memory_usage()
            result["held_in_table"] = in_table
            result["live_blocks"] = usage.live_blocks
            result["bytes_per_live_block"] = usage.bytes_per_live_block
        del held
    finally:
        tracing.close()
    return result


def _run(item: str, variant: str, blocks: int, scale: float) -> dict[str, object]:
    proc = subprocess.run([sys.executable, __file__, "--child", item, variant, str(blocks),
                           "--scale", str(scale)], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise SystemExit(f"{item}/{variant} with {blocks} held blocks failed "
                         f"(exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def _cell(ratios: list[float]) -> str:
    ratios = sorted(ratios)
    return f"{statistics.median(ratios):.2f}x ({ratios[0]:.2f}-{ratios[-1]:.2f})"


def measure(item: str, variants: list[str], blocks: list[int], runs: int,
            scale: float) -> list[str]:
    """The table's lines for one item: a row per heap size."""
    lines = [f"{item}: median ratio to untraced holding the same blocks (min-max), "
             f"{runs} alternated runs"]
    lines.append("  " + f"{'held blocks':>12s} {'untraced':>9s} " + " ".join(
        f"{v:>18s}" for v in variants if v != "untraced") + "   table (live mode)")
    for size in blocks:
        seconds: dict[str, list[float]] = {v: [] for v in variants}
        table = ""
        for number in range(runs):
            for variant in alternated(variants, number):
                result = _run(item, variant, size, scale)
                seconds[variant].append(float(result["seconds"]))  # type: ignore[arg-type]
                if variant == "live":
                    table = (f"{result['live_blocks']:,} live blocks "
                             f"({result['held_in_table']:,} from the held heap), "
                             f"{float(result['bytes_per_live_block']):.1f} B each")  # type: ignore[arg-type]
        base = seconds["untraced"]
        cells = [_cell([m / b for b, m in zip(base, seconds[v], strict=True)])
                 for v in variants if v != "untraced"]
        lines.append("  " + f"{size:>12,d} {statistics.median(base):8.3f}s "
                     + " ".join(f"{c:>18s}" for c in cells) + f"   {table}")
    return lines


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        sizes = [-1]
    if not sizes or min(sizes) < 0:
        raise SystemExit(f"--blocks: {text!r} is not a comma-separated list of block counts >= 0")
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", default="core,request")
    parser.add_argument("--blocks", default="0,300000,1000000,3000000")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--scale", type=float, default=0.5)
    parser.add_argument("--child", nargs=3, metavar=("ITEM", "VARIANT", "BLOCKS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        item, variant, size = args.child
        print(json.dumps(child(item, variant, int(size), args.scale)))
        return
    sys.path.insert(0, str(HERE))
    from suite_items import ITEMS

    items = args.items.split(",")
    variants = args.variants.split(",")
    unknown = [i for i in items if i not in ITEMS] + [v for v in variants if v not in VARIANTS]
    if unknown or "untraced" not in variants:
        raise SystemExit(f"--items/--variants: {unknown or variants} not accepted; items "
                         f"{', '.join(ITEMS)}, variants {', '.join(VARIANTS)} (untraced "
                         "among them)")
    if args.runs < 1 or not 0 < args.scale <= 10:
        raise SystemExit(f"--runs {args.runs} / --scale {args.scale}: need runs >= 1 and "
                         "0 < scale <= 10")
    blocks = _sizes(args.blocks)
    print(f"python {sys.version.split()[0]}; a burst is {args.scale:g} of the suite's ops, "
          "after the held blocks were made under the variant")
    for item in items:
        for line in measure(item, variants, blocks, args.runs, args.scale):
            print(line, flush=True)


if __name__ == "__main__":
    main()
