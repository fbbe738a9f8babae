"""otel_alloc's benchmark suite (issue 18): every item, every variant, one table.

Usage::

    python benchmarks/suite.py [--quick] [--rounds N] [--only NAME[,NAME]] [--json FILE]
        [--interleave B [--same-interpreter]] [--clock cpu]

Items (``--list`` prints them): ``core`` and ``spans`` (the workloads of
``bench_core.py`` and ``bench_spans.py``), ``request`` (a request-like
handler), pyperformance's ``json_loads``, ``deltablue``, ``go``, ``raytrace``
and ``chaos``, ``numpy`` (a NumPy job step) and ``service`` (FastAPI with
OpenTelemetry's instrumentation and OTLP/HTTP export under ``wrk``).

Variants: untraced (the baseline; for span items the same OTel SDK spans with
no tracker, for the service OpenTelemetry alone), otel_alloc ``counts``,
``live``, ``live+native`` (``native=True``; "n/a" where this build does not
take it), ``estimate`` (live bytes estimated from a sample; no target of its
own: compare it with ``live``'s), ``tracemalloc`` (``start(1)``) and
``memray`` (``Tracker``).

Every measurement runs in a fresh interpreter. A round runs each item's
variants side by side, in alternating order from round to round; each cell is
the median over rounds of that round's ratio to the baseline, with the lowest
and highest round in brackets, and issue 18's target with pass or FAIL.
With ``--interleave B`` a round of an in-process item starts one fresh
interpreter per variant, sets each up and warms it, then times the item in
B bursts per variant, handed to the variants in turn (in alternating order
from burst to burst); a variant's round is the sum of its bursts. Every
variant is then timed across the same stretch of the host's time, so a
neighbour's load that comes and goes over seconds falls on all of them
alike, where one run after another puts it on whichever ran then. The
service's round then starts a server per variant, all at once, and loads
them in turn the same way: up to B bursts of ``wrk`` of at least a second
each, about as many seconds in all as a plain run's one. With
``--interleave B --same-interpreter`` a round of an in-process item runs in
one fresh interpreter that holds every variant: each is set up before each of
its bursts and undone after it (the tracker uninstalled, the other tracers
stopped, OpenTelemetry's runtime context put back), so all of them share the
interpreter's heap and code layout as well as the stretch of time; memray,
which leaves the interpreter changed for tracemalloc, runs in a second
interpreter beside the baseline alone.
In-process items report time ratios (lower is better), the service its
requests per second as a fraction of OpenTelemetry alone (higher is better).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import select
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from bench_util import alternated, missing_modules  # noqa: E402
from suite_child import VARIANTS  # noqa: E402
from suite_items import ITEMS  # noqa: E402
from suite_table import Series, render  # noqa: E402

SERVICE = "service"
SERVICE_VARIANTS = ("otel", "counts", "live", "native", "estimate", "tracemalloc", "memray")
SERVICE_WHAT = ("FastAPI + FastAPIInstrumentor + OTLP/HTTP spans and metrics (1 s) to a "
                "local receiver, uvicorn, wrk -t1 -c8")
NAMES = (*ITEMS, SERVICE)


@dataclass
class Plan:
    """What to run: rounds, sizes, items, clock."""

    rounds: int
    scale: float
    service_seconds: float
    items: list[str]
    clock: str  # "wall" or "cpu" (in-process items)
    bursts: int = 0  # in-process items: 0 one run per variant, else --interleave's bursts
    same_interpreter: bool = False  # with bursts: every variant of a round in one interpreter


CHILD_TIMEOUT_S = 900.0


def _suite_json(*args: str) -> dict[str, object]:
    """Run ``suite.py ARGS`` in a fresh interpreter: its last JSON line, or an error."""
    try:
        proc = subprocess.run([sys.executable, str(HERE / "suite.py"), *args],
                              capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"error": f"no answer in {CHILD_TIMEOUT_S:g} s"}
    if proc.returncode != 0:
        return {"error": f"exit {proc.returncode}: " + proc.stderr.strip()[-2000:]}
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def _child(item: str, variant: str, scale: float) -> dict[str, object]:
    return _suite_json("--child", item, variant, "--scale", str(scale))


def _answer(proc: subprocess.Popen[str], errors: IO[bytes]) -> dict[str, object]:
    """The next JSON line of a ``--serve`` child, or an error (it exited, or is stuck)."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], CHILD_TIMEOUT_S)
    line = proc.stdout.readline() if ready else ""
    if line.strip():
        return dict(json.loads(line))
    proc.kill()
    proc.wait()
    errors.seek(0)
    why = errors.read().decode(errors="replace").strip()[-2000:]
    state = f"exit {proc.returncode}" if ready else f"no answer in {CHILD_TIMEOUT_S:g} s"
    return {"error": f"{state}: {why}"}


def _stop(proc: subprocess.Popen[str]) -> None:
    """End a ``--serve`` child: stdin closed, then a minute to exit."""
    if proc.stdin is not None and not proc.stdin.closed:
        proc.stdin.close()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _interleaved(item: str, variants: list[str], plan: Plan) -> dict[str, dict[str, object]]:
    """One round of ``item``: a ``--serve`` child per variant, ``plan.bursts`` bursts each.

    Each burst is a ``plan.bursts``-th of the item's ops (at least one); the
    variants take their bursts in turn, in alternating order. A variant's
    result sums its bursts' times.
    """
    burst = max(1, ITEMS[item].ops(plan.scale) // plan.bursts)
    results: dict[str, dict[str, object]] = {}
    sums = {v: {"seconds": 0.0, "cpu_seconds": 0.0} for v in variants}
    ops = dict.fromkeys(variants, 0)  # whole ops, as a plain run reports them
    with contextlib.ExitStack() as stack:
        children: dict[str, tuple[subprocess.Popen[str], IO[bytes]]] = {}
        for v in variants:
            errors = stack.enter_context(tempfile.TemporaryFile())
            proc = subprocess.Popen(
                [sys.executable, str(HERE / "suite.py"), "--serve", item, v, "--scale",
                 str(plan.scale)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=errors, text=True)
            stack.callback(_stop, proc)
            children[v] = (proc, errors)
        for v, (proc, errors) in children.items():
            first = _answer(proc, errors)
            if "ready" not in first:
                results[v] = first
        for number in range(plan.bursts):
            for v in alternated(variants, number):
                if v in results:
                    continue  # n/a, or failed
                proc, errors = children[v]
                assert proc.stdin is not None
                proc.stdin.write(f"{burst}\n")
                proc.stdin.flush()
                answer = _answer(proc, errors)
                if "seconds" not in answer:
                    results[v] = answer
                    continue
                for key in sums[v]:
                    sums[v][key] += float(answer[key])  # type: ignore[arg-type]
                ops[v] += int(answer["ops"])  # type: ignore[call-overload]
    return {v: results.get(v) or {**sums[v], "ops": ops[v]} for v in variants}


# What a variant leaves in the interpreter after it is undone, where it changes
# another's cost: memray's Tracker (its profile function) leaves CPython 3.11's
# code objects with line tables built, after which tracemalloc's line lookups
# took half their time (core: 381 ms -> 222 ms a burst with tracemalloc
# before and after a memray burst). Such a variant gets a same-interpreter
# round of its own, with the baseline.
KEEPS_TRACES = ("memray",)


def _switch_child(item: str, variants: list[str], plan: Plan) -> dict[str, dict[str, object]]:
    """Run one same-interpreter round (``--switch``); every variant's error if it fails."""
    answer = _suite_json("--switch", item, ",".join(variants), "--interleave", str(plan.bursts),
                         "--scale", str(plan.scale))
    if "error" in answer:
        return {v: dict(answer) for v in variants}
    return {v: dict(answer[v]) for v in variants}  # type: ignore[call-overload]


def _switched(item: str, variants: list[str], plan: Plan) -> dict[str, dict[str, object]]:
    """One round of ``item`` in one fresh interpreter holding every variant (``--switch``).

    A variant of ``KEEPS_TRACES`` runs in a second interpreter beside the
    baseline alone; its times are put on the first interpreter's scale
    (times the ratio of the two baselines), so its ratio is the one it
    measured against its own baseline.
    """
    apart = [v for v in variants if v in KEEPS_TRACES]
    results = _switch_child(item, [v for v in variants if v not in apart], plan)
    if not apart:
        return results
    base = "untraced"
    own = _switch_child(item, [v for v in variants if v in apart or v == base], plan)
    for variant in apart:
        result = own[variant]
        for key in ("seconds", "cpu_seconds"):
            if key not in result:
                break
            main_base, own_base = results[base].get(key), own[base].get(key)
            if not (isinstance(main_base, float) and isinstance(own_base, float) and own_base):
                result = {"error": f"no baseline {key} to scale {variant}'s by"}
                break
            result[key] = float(result[key]) * main_base / own_base  # type: ignore[arg-type]
        results[variant] = result
    return {v: results[v] for v in variants}


def _record(series: Series, variant: str, result: dict[str, object], key: str) -> str:
    if "na" in result:
        series.na[variant] = str(result["na"])
        return "n/a"
    if "error" in result:
        lines = str(result["error"]).strip().splitlines() or ["?"]
        series.errors.setdefault(variant, []).append(lines[-1].replace("|", "/"))
        series.add(variant, None)
        return "error"
    value = float(result[key])  # type: ignore[arg-type]
    series.add(variant, value)
    return f"{value:.3g}"


def _variants(series: Series, names: tuple[str, ...], round_no: int,
              no_memray: str | None) -> list[str]:
    order = alternated(names, round_no)
    if no_memray:
        series.na.setdefault("memray", no_memray)
    return [v for v in order if v not in series.na]


def _service_checks(series: Series, variant: str, result: dict[str, object]) -> None:
    if "rps" not in result:
        return
    posts = result.get("posts") or {}
    assert isinstance(posts, dict)
    if not posts.get("/v1/metrics"):
        series.notes.append(f"{variant}: no metrics export reached the receiver")
    if variant in ("counts", "live", "native", "estimate") and "spans" in result:
        hist, spans = result.get("histogram"), result["spans"]
        if hist != spans:
            series.notes.append(f"{variant}: size histogram has {hist} points for "
                                f"{spans} spans ended")


def collect(plan: Plan) -> list[Series]:
    """Run every round; progress goes to stderr."""
    no_memray = missing_modules(("memray",))
    no_memray = "not installed" if no_memray else None
    results: dict[str, Series] = {}
    for name in plan.items:
        if name == SERVICE:
            import suite_service

            results[name] = Series(name, SERVICE_WHAT, "otel", throughput=True,
                                   skipped=suite_service.missing())
        else:
            item = ITEMS[name]
            results[name] = Series(name, item.what, "untraced", skipped=missing_modules(item.needs))
    receiver = None
    key = "cpu_seconds" if plan.clock == "cpu" else "seconds"
    try:
        for round_no in range(plan.rounds):
            for name in plan.items:
                series = results[name]
                if series.skipped:
                    continue
                shown = []
                if name == SERVICE:
                    import suite_service

                    order = _variants(series, SERVICE_VARIANTS, round_no, no_memray)
                    if plan.bursts:
                        service_results = suite_service.measure_interleaved(
                            order, plan.service_seconds, plan.bursts)
                    else:
                        receiver = receiver or suite_service.Receiver()
                        service_results = {
                            v: suite_service.measure(v, plan.service_seconds, receiver)
                            for v in order}
                    for variant, result in service_results.items():
                        shown.append(f"{variant} {_record(series, variant, result, 'rps')}")
                        if "na" not in result:
                            for figure in ("cpu_ms", "serving_cpu_ms"):
                                value = result.get(figure)
                                series.add_extra(figure, variant, float(value) if isinstance(
                                    value, (int, float)) and value > 0 else None)
                        _service_checks(series, variant, result)
                elif plan.bursts:
                    order = _variants(series, VARIANTS, round_no, no_memray)
                    run = _switched if plan.same_interpreter else _interleaved
                    for variant, result in run(name, order, plan).items():
                        shown.append(f"{variant} {_record(series, variant, result, key)}")
                else:
                    for variant in _variants(series, VARIANTS, round_no, no_memray):
                        result = _child(name, variant, plan.scale)
                        shown.append(f"{variant} {_record(series, variant, result, key)}")
                print(f"round {round_no + 1}/{plan.rounds} {name}: " + ", ".join(shown),
                      file=sys.stderr, flush=True)
    finally:
        if receiver is not None:
            receiver.close()
    return [results[name] for name in plan.items]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _service_load(plan: Plan) -> str:
    if not plan.bursts:
        return f"{plan.service_seconds:g} s of wrk per run"
    from suite_service import burst_plan

    count, each = burst_plan(plan.service_seconds, plan.bursts)
    return f"all servers up at once, {count} bursts of {each} s of wrk each, in turn"


def header(plan: Plan, minutes: float, load: tuple[float, float]) -> list[str]:
    """The lines above the table: when, where, how."""
    return [
        f"otel_alloc benchmark suite, {datetime.date.today().isoformat()}: "
        f"CPython {platform.python_version()}, {os.cpu_count()} CPUs ({_cpu_model()}), "
        f"load average {load[0]:.2f} at the start, {load[1]:.2f} at the end, {minutes:.1f} min",
        f"{plan.rounds} rounds, " + (
            f"one fresh interpreter per round holding every variant, switched on for each of "
            f"its {plan.bursts} bursts and off after it, in turn (alternating order); a round "
            f"sums a variant's bursts" if plan.same_interpreter else
            f"a fresh interpreter per variant and round, {plan.bursts} bursts each, handed "
            f"out in turn (alternating order); a round sums a variant's bursts"
            if plan.bursts else "fresh interpreter per run, variants alternated within each "
            "round") + "; cell = median of per-round ratios (min-max over rounds), target, "
        "verdict",
        f"in-process items: {plan.clock} time / baseline (lower is better), scale {plan.scale}; "
        f"service: req/s / OTel-only req/s (higher is better), {_service_load(plan)}; "
        f"live+native: ratio, then what native adds over live",
        "",
    ]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="3 rounds, half-size items, 3 s of load (about 5 minutes)")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny items, 1 s of load: checks the suite runs, measures nothing")
    parser.add_argument("--rounds", type=int, help="rounds (default 7, --quick 3, --smoke 1)")
    parser.add_argument("--only", help="comma-separated items (default: all)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="in-process items: wall clock (default) or process CPU time")
    parser.add_argument("--interleave", type=int, default=0, metavar="B",
                        help="in-process items: time each variant in B bursts, handed to "
                             "the variants in turn (2 or more; default: one run each)")
    parser.add_argument("--same-interpreter", action="store_true",
                        help="with --interleave, in-process items: one interpreter per round "
                             "holds every variant, each set up before and undone after each "
                             "of its bursts")
    parser.add_argument("--json", type=Path, help="also write the raw values here")
    parser.add_argument("--list", action="store_true", help="list the items and exit")
    parser.add_argument("--child", nargs=2, metavar=("ITEM", "VARIANT"), help=argparse.SUPPRESS)
    parser.add_argument("--serve", nargs=2, metavar=("ITEM", "VARIANT"), help=argparse.SUPPRESS)
    parser.add_argument("--switch", nargs=2, metavar=("ITEM", "VARIANTS"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--scale", type=float, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the suite (or, with --child, one measurement); 0 even when targets fail."""
    args = _parse(argv)
    if args.child:
        import suite_child

        suite_child.main(args.child[0], args.child[1], args.scale or 1.0)
        return 0
    if args.serve:
        import suite_child

        suite_child.main_serve(args.serve[0], args.serve[1], args.scale or 1.0)
        return 0
    if args.switch:
        import suite_child

        suite_child.main_switched(args.switch[0], args.switch[1].split(","),
                                  args.scale or 1.0, args.interleave or 1)
        return 0
    if args.list:
        for item in ITEMS.values():
            print(f"{item.name:11s} {item.what}")
        print(f"{SERVICE:11s} {SERVICE_WHAT}")
        return 0
    items = args.only.split(",") if args.only else list(NAMES)
    unknown = [name for name in items if name not in NAMES]
    if unknown:
        print(f"unknown item {unknown[0]!r}; items: {', '.join(NAMES)}", file=sys.stderr)
        return 2
    if args.interleave < 0 or args.interleave == 1:
        print(f"--interleave: {args.interleave} not accepted; accepted: an integer of 2 or "
              "more (bursts per variant), or 0 for one run per variant", file=sys.stderr)
        return 2
    if args.same_interpreter and not args.interleave:
        print("--same-interpreter: given without --interleave; accepted only with "
              "--interleave B (B bursts per variant in each round's one interpreter)",
              file=sys.stderr)
        return 2
    scale, seconds, rounds = (0.02, 1.0, 1) if args.smoke else (
        (0.5, 3.0, 3) if args.quick else (1.0, 5.0, 7))
    plan = Plan(args.rounds or rounds, args.scale or scale, seconds, items, args.clock,
                args.interleave, args.same_interpreter)
    start, load = time.monotonic(), os.getloadavg()[0]
    results = collect(plan)
    minutes = (time.monotonic() - start) / 60
    again = " ".join(([f"--interleave {plan.bursts}"] if plan.bursts else [])
                     + (["--same-interpreter"] if plan.same_interpreter else [])
                     + (["--clock cpu"] if plan.clock == "cpu" else []))
    text, _, _ = render(results, header(plan, minutes, (load, os.getloadavg()[0])), again)
    print(text)
    if args.json:
        args.json.write_text(json.dumps({"plan": asdict(plan),
                                         "results": [asdict(s) for s in results]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
