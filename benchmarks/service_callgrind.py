"""The suite's service request by request under callgrind: which thread pays what.

The suite's ``service`` item measures requests per second under ``wrk``; this
counts the instructions one request costs, split between the thread that
serves it and the others (above all the ``BatchSpanProcessor``'s worker,
which encodes every ended span for OTLP/HTTP). It builds the same app as
``service_app.py`` (FastAPI, OpenTelemetry's instrumentation, OTLP/HTTP to a
local receiver, a MeterProvider, the allocation processor with every span in
the size histogram) and drives it in-process through ASGI, without sockets
for the requests, so a run is deterministic. For each variant it runs
``--small`` and ``--large`` requests under ``valgrind --tool=callgrind
--separate-threads=yes`` (``PYTHONHASHSEED=0``) and takes the difference, so
start-up, imports and the final flush cancel out. Usage::

    python benchmarks/service_callgrind.py
        [--variants otel,counts,live,native,estimate,counts-noattr,live-noattr,
                    counts-few,live-few]
        [--small 100 --large 400] [--cache-sim]

``--cache-sim`` runs callgrind with its cache model and prints, per request,
the serving thread's first-level code and data misses and KCachegrind's
cycle estimate (Ir + 10 per first-level miss + 100 per last-level miss):
deterministic, like the instruction count, but charging the code and data
the tracker pushes out of the caches, which the instruction count does not.

``native`` is live mode with ``native=True`` (the C extensions' mallocs
tracked too). ``-noattr`` runs the variant with
``OTEL_ALLOC_SPAN_ATTRIBUTES=false``: the processor does everything else,
but ended spans carry no ``alloc.*`` attributes for the exporter to encode.
``-few`` keeps the attributes a team may choose to read
(``OTEL_ALLOC_SPAN_ATTRIBUTES``: ``alloc.bytes`` in counts mode, and
``alloc.live_bytes`` beside it in live mode) instead of all of the mode's.
Needs ``valgrind``; takes about half a minute per variant.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the suite's modules, when imported from elsewhere

from callgrind_ratios import thread_events  # noqa: E402

VARIANTS = ("otel", "counts", "live", "native", "estimate", "counts-noattr", "live-noattr",
            "counts-few", "live-few")
# OTEL_ALLOC_SPAN_ATTRIBUTES of the variants with a suffix.
SPAN_ATTRIBUTES = {"noattr": "false", "few": "alloc.bytes,alloc.live_bytes"}
FEW_IN_COUNTS = "alloc.bytes"
WARM_UP = 50
NO_TIMER_MS = 3_600_000
SCOPE = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
         "scheme": "http", "path": "/orders/4711", "raw_path": b"/orders/4711",
         "query_string": b"limit=20", "root_path": "", "headers": [(b"host", b"127.0.0.1")],
         "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000)}


def child(variant: str, requests: int) -> None:
    """One measured run (inside valgrind): warm up, then ``requests`` requests."""
    import service_app
    from suite_service import Receiver

    receiver = Receiver()
    app = service_app.build_app()
    # No timer drives an export: metrics go at shutdown only, spans when 512
    # are queued (as under load, where the queue fills before the SDK's 5 s
    # delay) and at shutdown. An export a second is a cost by the second,
    # and under valgrind, a few requests a second, the timers put hundreds
    # of thousands of instructions on each request, a different number in
    # each run, instead of a few thousand.
    # The allocation processor's watch tick likewise. Its work is mostly a
    # cost a tick (the meters' calls per span name, the sample drain), which
    # a service spreads over a hundred or more requests: under valgrind a
    # tick came every one or two requests (about 600,000 instructions a tick
    # on the watch thread in live mode), or almost never when valgrind's
    # scheduler left the thread waiting (2 ticks in one 400-request live-mode
    # run, 215 in the next with --fair-sched=yes). The spans' figures are
    # published at shutdown.
    tracer_provider, meter_provider, count = service_app.telemetry(
        variant.split("-")[0], receiver.endpoint, app, metric_interval_ms=NO_TIMER_MS,
        span_delay_ms=NO_TIMER_MS, watch_interval_s=NO_TIMER_MS / 1000)

    async def one() -> None:
        sent: list[dict[str, object]] = []

        async def receive() -> dict[str, object]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, object]) -> None:
            sent.append(message)

        await app(dict(SCOPE), receive, send)
        if sent[0].get("status") != 200:
            raise RuntimeError(f"the service answered {sent[0]}")

    async def serve(n: int) -> None:
        for _ in range(n):
            await one()

    loop = asyncio.new_event_loop()
    loop.run_until_complete(serve(WARM_UP))
    loop.run_until_complete(serve(requests))
    tracer_provider.shutdown()
    meter_provider.shutdown()
    receiver.close()
    if count.ended != 3 * (WARM_UP + requests):
        raise RuntimeError(f"{count.ended} spans ended for {WARM_UP + requests} requests")


# Events of a --cache-sim run: instructions, first-level misses (code, data
# read, data write) and last-level misses (the same three).
CACHE_EVENTS = ("Ir", "I1mr", "D1mr", "D1mw", "ILmr", "DLmr", "DLmw")


def cycle_estimate(events: dict[str, int]) -> int:
    """KCachegrind's cycle estimate: Ir + 10 per first-level miss + 100 per last-level one."""
    return (events["Ir"] + 10 * (events["I1mr"] + events["D1mr"] + events["D1mw"])
            + 100 * (events["ILmr"] + events["DLmr"] + events["DLmw"]))


def measure(variant: str, requests: int, cache_sim: bool = False) -> tuple[dict[str, int],
                                                                            dict[str, int]]:
    """(serving thread, other threads) event totals of one child run."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    mode, _, suffix = variant.partition("-")
    if suffix:
        env["OTEL_ALLOC_SPAN_ATTRIBUTES"] = (FEW_IN_COUNTS if (mode, suffix) == ("counts", "few")
                                             else SPAN_ATTRIBUTES[suffix])
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        proc = subprocess.run(
            ["valgrind", "--tool=callgrind", "--separate-threads=yes",
             f"--cache-sim={'yes' if cache_sim else 'no'}",
             f"--callgrind-out-file={out}", sys.executable, __file__, "--child", variant,
             "--requests", str(requests)],
            capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise SystemExit(f"callgrind run of {variant} failed (exit {proc.returncode}):\n"
                             f"{proc.stderr[-2000:]}")
        main, every = thread_events(out)
        return main, {name: every[name] - main[name] for name in main}


def instructions(variant: str, requests: int) -> tuple[int, int]:
    """(serving thread, other threads) instructions of one child run."""
    serving, other = measure(variant, requests)
    return serving["Ir"], other["Ir"]


def cache_table(variants: list[str], small: int, large: int) -> None:
    """Print, per request, each variant's serving-thread misses and cycle estimates."""
    n = large - small
    print(f"callgrind --cache-sim=yes, a request ({large} minus {small} requests): "
          "the serving thread's instructions, first-level code and data misses, and "
          "cycle estimate (Ir + 10 per first-level miss + 100 per last-level miss); "
          "read the serving thread's: the other threads' count rises under the cache "
          "model for every variant, OpenTelemetry alone's too")
    print(f"  {'variant':14} {'Ir':>11} {'I1 misses':>10} {'D1 misses':>10} {'estimate':>11} "
          f"{'/ otel':>8} {'others':>11} {'all / otel':>10}")
    base: tuple[float, float] | None = None
    for v in variants:
        (sb, ob), (sf, of) = measure(v, large, True), measure(v, small, True)
        serving = {name: (sb[name] - sf[name]) / n for name in CACHE_EVENTS}
        serving_est = (cycle_estimate(sb) - cycle_estimate(sf)) / n
        other_est = (cycle_estimate(ob) - cycle_estimate(of)) / n
        if base is None:
            base = (serving_est, serving_est + other_est)
        print(f"  {v:14} {serving['Ir']:>11,.0f} {serving['I1mr']:>10,.0f} "
              f"{serving['D1mr'] + serving['D1mw']:>10,.0f} {serving_est:>11,.0f} "
              f"{serving_est / base[0]:>7.4f}x {other_est:>11,.0f} "
              f"{(serving_est + other_est) / base[1]:>9.4f}x", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--large", type=int, default=400)
    parser.add_argument("--cache-sim", action="store_true",
                        help="with callgrind's cache model: misses and cycle estimates")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--requests", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.requests)
        return
    variants = [v for v in args.variants.split(",") if v]
    bad = [v for v in variants if v not in VARIANTS]
    if bad or not variants:
        raise SystemExit(f"--variants: {','.join(bad) or repr(args.variants)} not accepted; "
                         f"accepted: {', '.join(VARIANTS)}")
    if not 0 < args.small < args.large:
        raise SystemExit(f"--small/--large: need 0 < small < large, got {args.small}/{args.large}")
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind not installed (apt-get install -y valgrind)")
    if "otel" not in variants:
        variants.insert(0, "otel")
    if args.cache_sim:
        cache_table(variants, args.small, args.large)
        return
    n = args.large - args.small
    print(f"callgrind instructions a request, {args.large} minus {args.small} requests, "
          f"PYTHONHASHSEED=0, Python {sys.version.split()[0]}")
    print(f"  {'variant':14} {'serving':>11} {'other':>11} {'total':>11}  total / otel")
    per_request = {}
    for v in variants:
        big, few = instructions(v, args.large), instructions(v, args.small)
        per_request[v] = ((big[0] - few[0]) / n, (big[1] - few[1]) / n)
        serving, other = per_request[v]
        base = sum(per_request["otel"])
        print(f"  {v:14} {serving:>11,.0f} {other:>11,.0f} {serving + other:>11,.0f}  "
              f"{(serving + other) / base:.4f}x", flush=True)


if __name__ == "__main__":
    main()
