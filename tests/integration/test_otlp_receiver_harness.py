"""The test OTLP receiver decodes what the real OTLP exporters send, over HTTP and gRPC."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogs
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
    OTLPMetricExporter as GrpcMetrics,
)
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogs
from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
    OTLPMetricExporter as HttpMetrics,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpans
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.support.otlp_receiver import OTLPReceiver, Signal, Transport, attributes

RESOURCE = Resource.create({"service.name": "otlp-harness"})
TIMEOUT = 2.0


def make_exporter(rx: OTLPReceiver, signal: Signal, timeout: float = TIMEOUT, **kw: Any) -> Any:
    classes: dict[str, dict[str, Any]] = {
        "http": {"traces": HttpSpans, "metrics": HttpMetrics, "logs": HttpLogs},
        "grpc": {"traces": GrpcSpans, "metrics": GrpcMetrics, "logs": GrpcLogs},
    }
    if rx.transport == "grpc":
        kw.setdefault("insecure", True)
    return classes[rx.transport][signal](endpoint=rx.url(signal), timeout=timeout, **kw)


@pytest.fixture(params=["http", "grpc"])
def receiver(request: pytest.FixtureRequest) -> Iterator[OTLPReceiver]:
    transport: Transport = request.param
    with OTLPReceiver(transport, slow_seconds=1.0) as rx:
        yield rx


def finished_spans(name: str = "work") -> tuple[ReadableSpan, ...]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer("otel_alloc.test").start_as_current_span(name) as span:
        span.set_attribute("alloc.bytes", 4096)
    provider.shutdown()
    return memory.get_finished_spans()


def test_endpoint_is_ephemeral_localhost(receiver: OTLPReceiver) -> None:
    assert receiver.port > 0
    assert receiver.endpoint == f"http://127.0.0.1:{receiver.port}"


def test_span_arrives_decoded(receiver: OTLPReceiver) -> None:
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(make_exporter(receiver, "traces")))
    with provider.get_tracer("otel_alloc.test").start_as_current_span("GET /items") as span:
        span.set_attribute("alloc.bytes", 4096)
        trace_id = span.get_span_context().trace_id
    provider.shutdown()

    (got,) = receiver.wait_for(receiver.spans)
    assert got.span.name == "GET /items"
    assert attributes(got.span.attributes) == {"alloc.bytes": 4096}
    assert int.from_bytes(got.span.trace_id, "big") == trace_id
    assert got.scope.name == "otel_alloc.test"
    assert attributes(got.resource.attributes)["service.name"] == "otlp-harness"


def test_metrics_arrive_decoded(receiver: OTLPReceiver) -> None:
    reader = PeriodicExportingMetricReader(
        make_exporter(receiver, "metrics"), export_interval_millis=3_600_000
    )
    provider = MeterProvider(metric_readers=[reader], resource=RESOURCE)
    meter = provider.get_meter("otel_alloc")
    meter.create_counter("python.alloc.allocated", unit="By").add(100, {"span.name": "a"})
    meter.create_histogram("python.alloc.span.size", unit="By").record(1234, {"span.name": "a"})
    provider.shutdown()

    metrics = receiver.wait_for(lambda: {m.metric.name: m.metric for m in receiver.metrics()})
    counter = metrics["python.alloc.allocated"]
    assert counter.unit == "By"
    assert counter.sum.is_monotonic
    (point,) = counter.sum.data_points
    assert point.as_int == 100
    assert attributes(point.attributes) == {"span.name": "a"}
    (hist_point,) = metrics["python.alloc.span.size"].histogram.data_points
    assert (hist_point.count, hist_point.sum) == (1, 1234)


def test_log_record_arrives_decoded(receiver: OTLPReceiver) -> None:
    tracer_provider = TracerProvider(resource=RESOURCE)
    provider = LoggerProvider(resource=RESOURCE)
    provider.add_log_record_processor(SimpleLogRecordProcessor(make_exporter(receiver, "logs")))
    logger = provider.get_logger("otel_alloc")
    with tracer_provider.get_tracer("t").start_as_current_span("job") as span:
        logger.emit(
            event_name="alloc.threshold_exceeded", body="big", attributes={"alloc.bytes": 1 << 20}
        )
        span_id = span.get_span_context().span_id
    provider.shutdown()

    (got,) = receiver.wait_for(receiver.log_records)
    assert got.log_record.event_name == "alloc.threshold_exceeded"
    assert got.log_record.body.string_value == "big"
    assert attributes(got.log_record.attributes) == {"alloc.bytes": 1 << 20}
    assert int.from_bytes(got.log_record.span_id, "big") == span_id
    assert got.scope.name == "otel_alloc"


def test_http_gzip_request_is_decoded() -> None:
    with OTLPReceiver("http") as rx:
        exporter = make_exporter(rx, "traces", compression=Compression.Gzip)
        assert exporter.export(finished_spans()) is SpanExportResult.SUCCESS
        (request,) = rx.requests("traces")
        assert request.metadata["content-encoding"] == "gzip"
        assert [s.span.name for s in rx.spans()] == ["work"]


def test_fault_modes_and_recovery(receiver: OTLPReceiver) -> None:
    spans = finished_spans()
    exporter = make_exporter(receiver, "traces", timeout=0.5)
    steady = make_exporter(receiver, "traces", timeout=5.0)

    receiver.set_mode("error_500")
    assert exporter.export(spans) is SpanExportResult.FAILURE
    assert receiver.attempts("traces") >= 1
    assert receiver.spans() == []

    receiver.set_mode("ok")
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    assert len(receiver.spans()) == 1

    receiver.set_mode("slow", slow_seconds=1.0)
    started = time.monotonic()
    assert exporter.export(spans) is SpanExportResult.FAILURE
    assert time.monotonic() - started < 1.0
    # The slow receiver still accepts the request after the client gave up.
    receiver.wait_for(lambda: len(receiver.spans()) == 2, timeout=5)
    receiver.set_mode("ok")

    assert steady.export(spans) is SpanExportResult.SUCCESS
    port = receiver.port
    with receiver.down():
        assert not receiver.running
        assert exporter.export(spans) is SpanExportResult.FAILURE
    assert receiver.port == port
    assert steady.export(spans) is SpanExportResult.SUCCESS
    assert len(receiver.spans()) == 4
