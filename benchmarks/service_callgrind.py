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
        [--small 100 --large 400]

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

from callgrind_ratios import _totals  # noqa: E402

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
    tracer_provider, meter_provider, count = service_app.telemetry(
        variant.split("-")[0], receiver.endpoint, app, metric_interval_ms=NO_TIMER_MS,
        span_delay_ms=NO_TIMER_MS)

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


def _thread_totals(out: Path) -> tuple[int, int]:
    """(serving thread, all other threads) instructions of a separate-threads run."""
    main, every = _totals(out)
    return main, every - main


def instructions(variant: str, requests: int) -> tuple[int, int]:
    """(serving thread, other threads) instructions of one child run."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    mode, _, suffix = variant.partition("-")
    if suffix:
        env["OTEL_ALLOC_SPAN_ATTRIBUTES"] = (FEW_IN_COUNTS if (mode, suffix) == ("counts", "few")
                                             else SPAN_ATTRIBUTES[suffix])
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        proc = subprocess.run(
            ["valgrind", "--tool=callgrind", "--separate-threads=yes",
             f"--callgrind-out-file={out}", sys.executable, __file__, "--child", variant,
             "--requests", str(requests)],
            capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise SystemExit(f"callgrind run of {variant} failed (exit {proc.returncode}):\n"
                             f"{proc.stderr[-2000:]}")
        return _thread_totals(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--large", type=int, default=400)
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
