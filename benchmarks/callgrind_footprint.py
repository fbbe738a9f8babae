"""Code footprint an op: how much more code the CPU keeps running with the tracker on.

Counts mode adds a few per cent of instructions to a span, but its wall-clock
ratio runs a few points above its instruction ratio: the hooks and the span
path are code the interpreter's own loop did not run, and a first-level
instruction cache (32 KiB, 512 lines of 64 bytes, on the machines here) that
the interpreter already overfills misses more often. Instruction-cache
misses themselves are a poor guide to a change: they move by dozens an op
with code layout alone (an unused function added to one file moves them).
The hot code footprint does not: the 64-byte code lines that run at least
once an op on average (at least `ops` instructions in the timed loop), per
object, taken from callgrind's per-instruction counts (``--dump-instr=yes``).

For each suite span item and variant this runs the timed loop alone (as
``callgrind_ratios.py --loop-only``, main thread) under callgrind with its
cache simulation and prints instructions and first-level instruction-cache
misses an op, and hot lines: the interpreter's (``libpython``, or the
executable when the interpreter is linked into it), the tracker's
(``_tracker``), the span path's (``_spanpath``), the rest, and the lines
added over untraced. Usage::

    python benchmarks/callgrind_footprint.py [--items spans,request]
        [--variants untraced,counts,live] [--ops N] [--seed 1]

``--ops`` defaults to each item's own count, the small run of
``callgrind_ratios.py --items`` (a twentieth of the suite's: ``spans`` 1000,
``request`` 125, ``chaos`` 1), which takes about as long under callgrind
whatever the item. About a minute a variant and item. Needs ``valgrind``.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the suite's modules, when imported from elsewhere

from callgrind_ratios import _names, item_sizes, run_item  # noqa: E402
from suite_items import ITEMS  # noqa: E402

LINE_BYTES = 64
# Name compression in callgrind's format: "ob=(3) /path" names object 3, "ob=(3)"
# reuses it. Only objects matter here; functions (fn, cfn) are numbered apart
# and would clash if read with them.
OBJECT = re.compile(r"^(ob|cob)=\((\d+)\)(?: (.*))?$")


@dataclass
class Footprint:
    """One loop's figures: events per op, hot code lines by object kind."""

    instructions: float
    i1_misses: float
    lines: Counter[str]


def _kind(obj: str, executable: str) -> str:
    name = obj.rsplit("/", 1)[-1]
    if name.startswith("libpython") or obj == executable:
        return "interpreter"
    for ours in ("_tracker", "_spanpath"):
        if name.startswith(ours):
            return ours
    return "other"


def _position(field: str, last: int) -> int:
    """An instruction address: absolute, relative to the last one, or the same."""
    if field == "*":
        return last
    sign = {"+": 1, "-": -1}.get(field[0], 0)
    number = field[1:] if sign else field
    value = int(number, 16) if number.startswith("0x") else int(number)
    return last + sign * value if sign else value


def parse(lines: Iterable[str], ops: int, executable: str) -> Footprint:
    """Hot lines and totals of one thread's ``--dump-instr=yes`` callgrind output."""
    objects: dict[str, str] = {}
    npos, events, totals = 1, ["Ir"], [0]
    obj = "?"
    per_line: dict[str, Counter[int]] = defaultdict(Counter)
    last = 0
    after_call = False
    for raw in lines:
        line = raw.rstrip("\n")
        if line.startswith("positions:"):
            npos = len(line.split()[1:])
        elif line.startswith("events:"):
            events = line.split()[1:]
        elif line.startswith(("summary:", "totals:")):
            totals = [int(x) for x in line.split()[1:]]
        elif named := OBJECT.match(line):
            key, ident, name = named.groups()
            if name:
                objects[ident] = name
            if key == "ob":
                obj = objects.get(ident, "?")
        elif line.startswith("calls="):
            after_call = True  # the next cost line is the call's inclusive cost
        elif line[:1] in "0123456789+-*" and line:
            fields = line.split()
            last = _position(fields[0], last)
            if after_call:
                after_call = False
                continue
            if len(fields) > npos:
                per_line[obj][last // LINE_BYTES] += int(fields[npos])
    event = dict(zip(events, totals + [0] * (len(events) - len(totals)), strict=True))
    hot: Counter[str] = Counter()
    for name, counts in per_line.items():
        hot[_kind(name, executable)] += sum(1 for n in counts.values() if n >= ops)
    return Footprint(event.get("Ir", 0) / ops, event.get("I1mr", 0) / ops, hot)


def measure(item: str, variant: str, ops: int, seed: int) -> Footprint:
    """The timed loop of ``ops`` ops of ``item`` under ``variant``, main thread."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        run_item(item, variant, ops, out, seed, loop_only=True,
                 options=("--dump-instr=yes", "--cache-sim=yes"))
        with open(f"{out}-01") as main_thread:
            return parse(main_thread, ops, str(Path(sys.executable).resolve()))


KINDS = ("interpreter", "_tracker", "_spanpath", "other")


def item_ops(item: str, ops: int) -> int:
    """The ops to run of ``item``: ``ops``, or when 0 the item's own small run.

    At 1000 ops, the old default for every item, ``chaos`` (6 ops in a
    suite round) ran for hours under callgrind.
    """
    return ops or item_sizes(item)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", default="spans")
    parser.add_argument("--variants", default="untraced,counts,live")
    parser.add_argument("--ops", type=int, default=0,
                        help="ops in the timed loop (default: each item's own)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    items = _names(args.items, tuple(n for n, item in ITEMS.items() if item.spans), "--items")
    variants = _names(args.variants, ("untraced", "counts", "live", "native", "estimate"),
                      "--variants")
    if args.ops < 0:
        raise SystemExit(f"--ops: {args.ops} not accepted; accepted: an integer of 1 or more, "
                         "or 0 for each item's own")
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind not installed (apt-get install -y valgrind)")
    if "untraced" not in variants:
        variants.insert(0, "untraced")
    print(f"callgrind footprint, the timed loop alone (main thread), "
          f"PYTHONHASHSEED {args.seed}, Python {sys.version.split()[0]}; hot code lines: "
          f"{LINE_BYTES}-byte lines running at least once an op")
    print(f"  {'item':10} {'variant':9} {'ops':>5} {'instr/op':>10} {'I1 miss/op':>10} "
          + " ".join(f"{k:>11}" for k in KINDS) + f" {'added':>7}")
    for item in items:
        ops = item_ops(item, args.ops)
        base = None
        for variant in variants:
            fp = measure(item, variant, ops, args.seed)
            total = sum(fp.lines[k] for k in KINDS)
            base = total if base is None else base
            print(f"  {item:10} {variant:9} {ops:>5} {fp.instructions:>10,.0f} "
                  f"{fp.i1_misses:>10,.1f} "
                  + " ".join(f"{fp.lines[k]:>11}" for k in KINDS)
                  + f" {total - base:>+7}", flush=True)


if __name__ == "__main__":
    main()
