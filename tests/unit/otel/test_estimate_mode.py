"""The span processor in estimate mode: what it reports, and that it says it estimates."""

from __future__ import annotations

import time
from typing import Any

import pytest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import otel_alloc
from otel_alloc import AllocationSpanProcessor, SpanAllocation
from tests.unit.conftest import OBJ, Helper

try:  # renamed in opentelemetry-sdk 1.39; the old name stays an alias
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter as LogExporter
except ImportError:  # pragma: no cover - older SDKs
    from opentelemetry.sdk._logs.export import InMemoryLogExporter as LogExporter

N, SIZE = 4000, 1000  # the "keeps" span keeps N blocks of SIZE bytes


class _Records:
    def __init__(self) -> None:
        self.records: dict[str, SpanAllocation] = {}

    def on_span(self, record: SpanAllocation) -> None:
        self.records[record.name] = record

    def shutdown(self) -> None:
        """Nothing to release."""


def _metric_names(reader: InMemoryMetricReader) -> set[str]:
    data = reader.get_metrics_data()
    assert data is not None
    return {m.name for rm in data.resource_metrics for sm in rm.scope_metrics
            for m in sm.metrics}


def _leak_events(logs: Any) -> list[Any]:
    return [d.log_record for d in logs.get_finished_logs()
            if d.log_record.event_name == "alloc.leak_suspected"]


def test_estimate_mode_reports_estimates_and_says_so(uninstalled: None, helper: Helper) -> None:
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider([reader])
    logs = LogExporter()
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    spans = InMemorySpanExporter()
    sink = _Records()
    processor = AllocationSpanProcessor(
        SimpleSpanProcessor(spans), mode="estimate", meter_provider=meter_provider,
        logger_provider=logger_provider, sinks=[sink], leak_min_bytes="1MiB",
        leak_grace_seconds=0.2, sample_bytes=0, span_summary_events=True)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("test")
    ptrs = helper.ffi.new("uintptr_t[]", N)  # outside the span: its bytes are not the span's
    with tracer.start_as_current_span("keeps"):
        assert helper.module.lib.h_alloc_many(OBJ, SIZE, N, ptrs) == 0
    with tracer.start_as_current_span("frees"):
        helper.free_many(OBJ, helper.alloc_many(OBJ, SIZE, N, keep=True), N)
    try:
        assert otel_alloc.installed_mode() == "estimate"
        provider.force_flush()
        attrs = {s.name: dict(s.attributes or {}) for s in spans.get_finished_spans()}
        keeps, frees = attrs["keeps"], attrs["frees"]
        # About 120 KB is one standard deviation here; 6 of them is far off.
        assert abs(keeps["alloc.live_bytes_estimate"] - N * SIZE) < 800_000, keeps
        assert frees["alloc.live_bytes_estimate"] < 64 * 1024, frees
        for span_attrs in (keeps, frees):
            assert "alloc.live_bytes" not in span_attrs and "alloc.peak_bytes" not in span_attrs
            assert span_attrs["alloc.bytes"] >= N * SIZE  # counts stay exact
            assert span_attrs["alloc.count"] >= N
        record = sink.records["keeps"]
        assert record.live_bytes is None and record.peak_bytes is None
        assert record.live_bytes_estimate == keeps["alloc.live_bytes_estimate"]
        names = _metric_names(reader)
        assert "python.alloc.live.estimate" in names
        assert "python.alloc.live" not in names and "python.alloc.peak" not in names
        deadline = time.monotonic() + 20
        while not _leak_events(logs) and time.monotonic() < deadline:
            time.sleep(0.05)
        (leak,) = _leak_events(logs)
        leak_attrs = dict(leak.attributes or {})
        assert leak_attrs["span.name"] == "keeps"
        assert leak_attrs["alloc.live_bytes_estimate"] >= 1 << 20
        assert "alloc.live_bytes" not in leak_attrs and "alloc.live_blocks" not in leak_attrs
        assert "estimated" in str(leak.body)
    finally:
        helper.free_many(OBJ, ptrs, N)
        provider.shutdown()
        logger_provider.shutdown()
        meter_provider.shutdown()


def test_bad_estimate_bytes_stops_the_processor_first(uninstalled: None) -> None:
    with pytest.raises(otel_alloc.ConfigError) as err:
        AllocationSpanProcessor(mode="estimate", estimate_bytes="1B")
    assert err.value.setting == "estimate_bytes" and err.value.value == "1B"
    assert "64" in err.value.accepted
    assert otel_alloc.installed_mode() is None
