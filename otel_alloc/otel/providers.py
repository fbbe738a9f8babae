"""Tracer, meter and logger providers from the standard ``OTEL_*`` variables.

Exporters are found by name through the entry points the OpenTelemetry
exporter packages register (``opentelemetry_traces_exporter`` and friends), as
``opentelemetry-instrument`` does; each exporter then reads its own
``OTEL_EXPORTER_OTLP_*`` settings (endpoint, headers, timeout, compression).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
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

_log = logging.getLogger(__name__)
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


# Entry point -> the pip package that registers it, for exporters people use.
EXPORTER_PACKAGES = {
    "otlp_proto_grpc": "opentelemetry-exporter-otlp-proto-grpc",
    "otlp_proto_http": "opentelemetry-exporter-otlp-proto-http",
    "prometheus": "opentelemetry-exporter-prometheus",
    "zipkin": "opentelemetry-exporter-zipkin",
}


class MissingExporterError(ConfigError):
    """The exporter a signal is set up to use comes from a package that is not installed.

    Attributes:
        package: The pip package to install.
    """

    def __init__(self, signal: str, name: str, package: str, cause: str | None) -> None:
        variable = f"OTEL_{signal.upper()}_EXPORTER"
        chosen_by = (f"{variable}={os.environ[variable].strip()!r}"
                     if os.environ.get(variable, "").strip()
                     else "an OTEL_EXPORTER_OTLP_*ENDPOINT variable (which selects otlp)")
        super().__init__(variable, name, f"the package {package} installed")
        self.package = package
        detail = f" ({cause})" if cause else ""
        self.args = (f"the {name!r} exporter for {signal}, chosen by {chosen_by}, needs the "
                     f"package {package}, which is not installed{detail}: "
                     f"pip install {package}",)

    def __str__(self) -> str:
        return str(self.args[0])


def load_exporter(signal: str, name: str) -> Any:
    """Instantiate the exporter registered under ``name`` for ``signal``.

    Raises:
        MissingExporterError: Its package is not installed, or fails to import.
        ConfigError: No package registers an exporter of that name.

    """
    group = f"opentelemetry_{signal}_exporter"
    wanted = _entry_point_name(signal, name)
    package = EXPORTER_PACKAGES.get(wanted)
    found = [ep for ep in entry_points(group=group) if ep.name == wanted]
    if not found:
        if package is not None:
            raise MissingExporterError(signal, name, package, None)
        available = sorted({ep.name for ep in entry_points(group=group)} | {"otlp", "none"})
        raise ConfigError(f"OTEL_{signal.upper()}_EXPORTER", name,
                          "one of " + ", ".join(available)
                          + " (or install the package that provides it)")
    try:
        exporter_class = found[0].load()
    except ImportError as err:
        # Registered but not importable: a partial install, or a dependency
        # (grpcio, protobuf) missing.
        dist = getattr(found[0], "dist", None)
        raise MissingExporterError(signal, name, package or str(getattr(dist, "name", wanted)),
                                   f"{type(err).__name__}: {err}") from None
    return exporter_class()


@dataclass
class Providers:
    """The SDK providers the runner set up, and whether any exporter is configured."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    logger_provider: LoggerProvider
    span_exporters: list[SpanProcessor] = field(default_factory=list)
    exporting: bool = False

    def shutdown(self, budget_seconds: float = 5.0) -> bool:
        """Flush and stop all three providers, waiting at most ``budget_seconds``.

        A collector that is down, slow or never answers makes the SDK's
        exporters retry for tens of seconds. The shutdown runs on a daemon
        thread; past the budget what is still queued is dropped, and counted
        in a message on stderr.

        Returns:
            Whether everything was shut down within the budget.
        """
        def shut_all() -> None:
            for provider in (self.tracer_provider, self.meter_provider, self.logger_provider):
                try:
                    provider.shutdown()
                except Exception:
                    _log.exception("otel_alloc: shutting down %s failed",
                                   type(provider).__name__)

        worker = threading.Thread(target=shut_all, name="otel-alloc-shutdown", daemon=True)
        worker.start()
        worker.join(budget_seconds)
        if not worker.is_alive():
            return True
        pending = self._pending()
        print(f"otel-alloc: telemetry not delivered within the {budget_seconds:g} s shutdown "
              f"budget (collector down, slow or refusing): dropped {pending}",
              file=sys.stderr, flush=True)
        return False

    def _pending(self) -> str:
        """What the batch processors still hold (read from SDK internals, best effort)."""
        counts = {"spans": 0, "log records": 0}
        holders = [("spans", sp) for sp in self.span_exporters]
        logs_multi = getattr(self.logger_provider, "_multi_log_record_processor", None)
        holders += [("log records", lp)
                    for lp in getattr(logs_multi, "_log_record_processors", ())]
        for kind, processor in holders:
            queue = getattr(getattr(processor, "_batch_processor", None), "_queue", None)
            if queue is not None:
                counts[kind] += len(queue)
        return ", ".join(f"{n} {kind}" for kind, n in counts.items()) + " still queued"


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
