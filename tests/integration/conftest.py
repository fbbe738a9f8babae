"""Shared pieces of the OTLP integration tests: receivers, exporters, full pipelines.

A :class:`Pipeline` is what a service sets up: a TracerProvider whose
``AllocationSpanProcessor`` wraps a ``BatchSpanProcessor`` with a real OTLP span
exporter, a MeterProvider with a periodic OTLP metric reader and a LoggerProvider
with a batch OTLP log processor, all three pointed at one :class:`OTLPReceiver`.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogs
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
    OTLPMetricExporter as GrpcMetrics,
)
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpans
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogs
from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
    OTLPMetricExporter as HttpMetrics,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpans
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Tracer

import otel_alloc
from otel_alloc import AllocationSpanProcessor
from tests.support.otlp_receiver import (
    OTLPReceiver,
    ReceivedMetric,
    ReceivedSpan,
    Signal,
    Transport,
    attributes,
)

TRANSPORTS: tuple[Transport, ...] = ("http", "grpc")
RESOURCE = Resource.create({"service.name": "otel-alloc-integration"})

_EXPORTERS: dict[str, dict[str, Any]] = {
    "http": {"traces": HttpSpans, "metrics": HttpMetrics, "logs": HttpLogs},
    "grpc": {"traces": GrpcSpans, "metrics": GrpcMetrics, "logs": GrpcLogs},
}


def make_exporter(rx: OTLPReceiver, signal: Signal, timeout: float) -> Any:
    """A real OTLP exporter (http/protobuf or gRPC, as ``rx``) for ``signal``."""
    kw: dict[str, Any] = {"endpoint": rx.url(signal), "timeout": timeout}
    if rx.transport == "grpc":
        kw["insecure"] = True
    return _EXPORTERS[rx.transport][signal](**kw)


@pytest.fixture(params=TRANSPORTS)
def receiver(request: pytest.FixtureRequest) -> Iterator[OTLPReceiver]:
    """A running receiver, once per transport."""
    with OTLPReceiver(request.param) as rx:
        yield rx


@pytest.fixture
def uninstall_after() -> Iterator[None]:
    """The tracker is process-global: leave it uninstalled whatever happens."""
    try:
        yield
    finally:
        otel_alloc.uninstall()


class Pipeline:
    """All three signals of one app exporting over OTLP to ``rx``."""

    def __init__(
        self,
        rx: OTLPReceiver,
        *,
        timeout: float = 2.0,
        metric_interval_ms: int = 200,
        batch_delay_ms: int = 100,
        max_queue_size: int = 2048,
        **processor_kwargs: Any,
    ) -> None:
        self.rx = rx
        self.metric_reader = PeriodicExportingMetricReader(
            make_exporter(rx, "metrics", timeout),
            export_interval_millis=metric_interval_ms,
            export_timeout_millis=timeout * 1000,
        )
        self.meter_provider = MeterProvider(resource=RESOURCE,
                                            metric_readers=[self.metric_reader])
        self.log_processor = BatchLogRecordProcessor(
            make_exporter(rx, "logs", timeout), schedule_delay_millis=batch_delay_ms,
            max_queue_size=max_queue_size, max_export_batch_size=min(512, max_queue_size),
            export_timeout_millis=int(timeout * 1000))
        self.logger_provider = LoggerProvider(resource=RESOURCE)
        self.logger_provider.add_log_record_processor(self.log_processor)
        self.span_export = BatchSpanProcessor(
            make_exporter(rx, "traces", timeout), schedule_delay_millis=batch_delay_ms,
            max_queue_size=max_queue_size, max_export_batch_size=min(512, max_queue_size),
            export_timeout_millis=int(timeout * 1000))
        self.processor = AllocationSpanProcessor(
            self.span_export, meter_provider=self.meter_provider,
            logger_provider=self.logger_provider, **processor_kwargs)
        self.tracer_provider = TracerProvider(resource=RESOURCE)
        self.tracer_provider.add_span_processor(self.processor)
        self.tracer: Tracer = self.tracer_provider.get_tracer("otel_alloc.integration")

    def flush(self, timeout_millis: int = 10_000) -> None:
        """Push out spans, then the events their ends emitted, then metrics."""
        self.tracer_provider.force_flush(timeout_millis)
        self.logger_provider.force_flush(timeout_millis)
        self.meter_provider.force_flush(timeout_millis)

    def shutdown(self) -> None:
        """Shut down all three providers (each at most once)."""
        for provider in (self.tracer_provider, self.logger_provider, self.meter_provider):
            provider.shutdown()


# -- reading what the receiver decoded -------------------------------------------


def points(metric: Metric) -> list[Any]:
    """The data points of a metric, whatever its kind."""
    kind = metric.WhichOneof("data")
    return list(getattr(metric, kind).data_points) if kind else []


def all_points(metrics: Iterable[ReceivedMetric], name: str) -> list[Any]:
    """Data points of metric ``name`` from every export, oldest first."""
    return [p for m in metrics if m.metric.name == name for p in points(m.metric)]


def value(point: Any) -> float:
    """A number point's value, or a histogram point's sum."""
    if hasattr(point, "bucket_counts"):
        return float(point.sum)
    return float(getattr(point, point.WhichOneof("value")))


def latest_by(metrics: Iterable[ReceivedMetric], name: str,
              *keys: str) -> dict[Any, Any]:
    """The latest exported point of cumulative metric ``name``, by attribute values.

    Keyed by the value of the single attribute ``keys[0]`` (default
    ``span.name``), or by the tuple of values for several keys.
    """
    keys = keys or ("span.name",)
    latest: dict[Any, Any] = {}
    for point in all_points(metrics, name):
        attrs = attributes(point.attributes)
        values = tuple(attrs.get(k) for k in keys)
        latest[values[0] if len(keys) == 1 else values] = point
    return latest


def exemplars_for(metrics: Iterable[ReceivedMetric], name: str, span_name: str) -> list[Any]:
    """Exemplars of every exported point of ``name`` whose ``span.name`` is ``span_name``."""
    return [e for p in all_points(metrics, name)
            if attributes(p.attributes).get("span.name") == span_name
            for e in p.exemplars]


def span_ids(spans: Iterable[ReceivedSpan], name: str) -> set[tuple[bytes, bytes]]:
    """(trace_id, span_id) of the received spans called ``name``."""
    return {(s.span.trace_id, s.span.span_id) for s in spans if s.span.name == name}


def rss_bytes() -> int:
    """Resident set size of this process, from /proc/self/statm."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def progress_cells(stderr: str, item: str) -> list[tuple[str, str]]:
    """The suite's ``round 1/1 ITEM: variant value, ...`` progress line, as (variant, shown).

    Checks on the way that every cell shows ``n/a`` or a value above 0.
    """
    line = re.search(rf"^round 1/1 {re.escape(item)}: (.*)$", stderr, re.M)
    assert line is not None, stderr
    cells = [tuple(cell.split(" ", 1)) for cell in line.group(1).split(", ")]
    for variant, shown in cells:
        assert shown == "n/a" or float(shown) > 0, (variant, shown)
    return cells  # type: ignore[return-value]


def suite_module(name: str) -> ModuleType:
    """A module of ``benchmarks/`` (the suite's), with that folder on sys.path for the import."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(BENCHMARKS))
