"""Tracer, meter and logger providers from the standard ``OTEL_*`` variables.

Exporters are found by name through the entry points the OpenTelemetry
exporter packages register (``opentelemetry_traces_exporter`` and friends), as
``opentelemetry-instrument`` does; each exporter then reads its own
``OTEL_EXPORTER_OTLP_*`` settings (endpoint, headers, timeout, compression).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from opentelemetry import _logs, metrics, trace
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from otel_alloc.validation import ConfigError

SIGNALS = ("traces", "metrics", "logs")
_ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                  "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT")


def exporter_names(signal: str) -> list[str]:
    """Exporter names chosen for a signal by ``OTEL_<SIGNAL>_EXPORTER``.

    Unset means ``otlp`` when any OTLP endpoint variable is set, else none:
    with nothing configured the runner prints its table instead.
    """
    raw = os.environ.get(f"OTEL_{signal.upper()}_EXPORTER", "").strip()
    if not raw:
        return ["otlp"] if any(os.environ.get(v) for v in _ENDPOINT_VARS) else []
    names = [n.strip() for n in raw.split(",") if n.strip()]
    return [] if names == ["none"] else names


def _entry_point_name(signal: str, name: str) -> str:
    if name != "otlp":
        return name
    protocol = (os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL")
                or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc").strip()
    if protocol == "grpc":
        return "otlp_proto_grpc"
    if protocol == "http/protobuf":
        return "otlp_proto_http"
    raise ConfigError("OTEL_EXPORTER_OTLP_PROTOCOL", protocol, "'grpc' or 'http/protobuf'")


def load_exporter(signal: str, name: str) -> Any:
    """Instantiate the exporter registered under ``name`` for ``signal``."""
    group = f"opentelemetry_{signal}_exporter"
    wanted = _entry_point_name(signal, name)
    found = [ep for ep in entry_points(group=group) if ep.name == wanted]
    if not found:
        available = sorted({ep.name for ep in entry_points(group=group)} | {"otlp", "none"})
        raise ConfigError(f"OTEL_{signal.upper()}_EXPORTER", name,
                          "one of " + ", ".join(available)
                          + " (is the exporter package installed? pip install otel-alloc[otlp])")
    return found[0].load()()


@dataclass
class Providers:
    """The SDK providers the runner set up, and whether any exporter is configured."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    logger_provider: LoggerProvider
    span_exporters: list[SpanProcessor] = field(default_factory=list)
    exporting: bool = False

    def shutdown(self) -> None:
        """Flush and stop all three providers."""
        for provider in (self.tracer_provider, self.meter_provider, self.logger_provider):
            provider.shutdown()


def build_providers() -> Providers:
    """Create providers with exporters from the environment (not yet global)."""
    resource = Resource.create()
    span_exporters: list[SpanProcessor] = [BatchSpanProcessor(load_exporter("traces", n))
                      for n in exporter_names("traces")]
    readers: list[MetricReader] = []
    for n in exporter_names("metrics"):
        exporter = load_exporter("metrics", n)
        # Pull exporters (prometheus) register a reader, push exporters an exporter.
        readers.append(exporter if isinstance(exporter, MetricReader)
                       else PeriodicExportingMetricReader(exporter))
    logger_provider = LoggerProvider(resource=resource)
    log_names = exporter_names("logs")
    for n in log_names:
        logger_provider.add_log_record_processor(BatchLogRecordProcessor(load_exporter("logs", n)))
    return Providers(
        tracer_provider=TracerProvider(resource=resource),
        meter_provider=MeterProvider(resource=resource, metric_readers=readers),
        logger_provider=logger_provider,
        span_exporters=span_exporters,
        exporting=bool(span_exporters or readers or log_names),
    )


def set_global(p: Providers) -> None:
    """Make the providers the global ones, as opentelemetry-instrument does."""
    trace.set_tracer_provider(p.tracer_provider)
    metrics.set_meter_provider(p.meter_provider)
    _logs.set_logger_provider(p.logger_provider)
