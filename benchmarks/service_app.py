"""The suite's ASGI service: FastAPI, OpenTelemetry's FastAPI instrumentation, OTLP/HTTP.

``python service_app.py --variant V --port P --otlp http://127.0.0.1:R`` serves
``GET /orders/{customer}`` (the request-like handler of ``request_like.py``,
its response returned as objects for FastAPI to encode) and ``GET /health``
with uvicorn, until SIGINT. Every variant exports spans (BatchSpanProcessor)
and metrics (PeriodicExportingMetricReader, every second) over OTLP/HTTP to
the receiver at ``--otlp``. Variants: ``otel`` (that alone), ``counts``,
``live`` (both ``native=False``), ``native`` (live, ``native=True``) add ``AllocationSpanProcessor``
with metrics on and every span in the size histogram
(``span_size_sample_rate=1``); ``tracemalloc`` and ``memray`` trace the whole
process instead. At exit it prints one JSON line: the spans ended, or
``{"na": ...}`` when the variant cannot run here. SIGUSR1 exports what the
span processors hold and prints ``flushed`` (``_flush_on_signal``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import request_like
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from suite_child import TRACKED, NotApplicable, check_native, with_native


class SpanCount(SpanProcessor):
    """Counts ended spans, for the check that every span is in the histogram."""

    def __init__(self) -> None:
        self.ended = 0

    def on_end(self, span: ReadableSpan) -> None:
        self.ended += 1


def build_app() -> Any:
    """The FastAPI app (not instrumented)."""
    import json as _json

    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/orders/{customer}")
    async def orders(customer: int, limit: int = 20) -> dict[str, Any]:
        response: dict[str, Any] = _json.loads(request_like.handle())
        response["customer"] = customer
        response["lines"] = response["lines"][:limit]
        return response

    return app


def telemetry(variant: str, otlp: str, app: Any, metric_interval_ms: int = 1000,
              span_delay_ms: int = 5000,
              watch_interval_s: float | None = None) -> tuple[Any, Any, SpanCount]:
    """Providers exporting to ``otlp``, the app instrumented; raises NotApplicable.

    Metrics are exported every ``metric_interval_ms`` and at shutdown; spans
    in batches of 512 (the SDK's default), and after ``span_delay_ms``
    whatever is queued. ``watch_interval_s`` replaces the allocation
    processor's watch tick (at most 0.5 s; it publishes the ended spans'
    figures to the meters, drains samples and events): its work is mostly a
    fixed cost a tick, which a service at hundreds of requests a second
    spreads over a hundred or more requests and a run under valgrind,
    a few requests a second, over one or two.
    """
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": "otel-alloc-bench"})
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=f"{otlp}/v1/metrics", timeout=5),
        export_interval_millis=metric_interval_ms)
    meter_provider = MeterProvider(metric_readers=[reader], resource=resource)
    tracer_provider = TracerProvider(resource=resource)
    count = SpanCount()
    tracer_provider.add_span_processor(count)
    if variant in TRACKED:
        from otel_alloc import AllocationSpanProcessor

        mode, native = TRACKED[variant]
        processor = with_native(lambda kw: AllocationSpanProcessor(
            mode=mode, meter_provider=meter_provider, metrics=True,
            span_size_sample_rate=1.0, **kw), native)
        if watch_interval_s is not None:
            # No setting lengthens the tick (it follows leak_grace_seconds,
            # at most 0.5 s): the benchmark sets its watch's interval, read
            # at each wait. A queue of 8,192 ended spans still wakes it.
            processor._watch.interval = watch_interval_s
        tracer_provider.add_span_processor(processor)
        check_native(native)
    tracer_provider.add_span_processor(BatchSpanProcessor(
        OTLPSpanExporter(endpoint=f"{otlp}/v1/traces", timeout=5),
        schedule_delay_millis=span_delay_ms))
    FastAPIInstrumentor.instrument_app(app, tracer_provider=tracer_provider,
                                       meter_provider=meter_provider)
    return tracer_provider, meter_provider, count


def _flush_on_signal(tracer_provider: Any) -> None:
    """On SIGUSR1, export what the span processors hold, then print ``flushed``.

    The suite sends it after each measured burst of load, so that the work
    a burst's spans leave queued (the ``BatchSpanProcessor``'s last partial
    batch, the allocation processor's figures not yet published) is done
    and timed with the burst, not in the idle time after it. Python runs
    the handler on the main thread, between the event loop's polls; no
    request is in flight then.
    """
    def flush(signum: int, frame: object) -> None:
        tracer_provider.force_flush()
        print("flushed", flush=True)

    signal.signal(signal.SIGUSR1, flush)


def serve(variant: str, port: int, otlp: str) -> dict[str, object]:
    """Serve until SIGINT; what to print at exit."""
    import uvicorn

    stack = contextlib.ExitStack()
    path = None
    if variant == "memray":
        try:
            import memray
        except ImportError:
            return {"na": "memray not installed"}
        fd, path = tempfile.mkstemp(suffix=".memray")
        os.close(fd)
        os.unlink(path)
        stack.enter_context(memray.Tracker(path))
    elif variant == "tracemalloc":
        import tracemalloc

        tracemalloc.start(1)
    try:
        app = build_app()
        try:
            tracer_provider, meter_provider, count = telemetry(variant, otlp, app)
        except NotApplicable as exc:
            return {"na": str(exc)}
        _flush_on_signal(tracer_provider)
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                access_log=False, lifespan="off")
        with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises SIGINT after shutdown
            uvicorn.Server(config).run()
        tracer_provider.shutdown()  # ends the processor's watch thread: histogram complete
        meter_provider.shutdown()   # one last export, cumulative
        return {"spans": count.ended}
    finally:
        stack.close()
        if path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def main() -> None:
    """Parse the arguments, serve, print the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--variant", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--otlp", required=True)
    args = parser.parse_args()
    print(json.dumps(serve(args.variant, args.port, args.otlp)), flush=True)


if __name__ == "__main__":
    main()
