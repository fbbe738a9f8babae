"""Allocation events as OTLP log records with ``event_name`` and trace context."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from opentelemetry._logs import LoggerProvider, LogRecord, SeverityNumber, get_logger_provider
from opentelemetry.util.types import AnyValue

from otel_alloc.otel import contract as names
from otel_alloc.otel.metrics import span_context

_log = logging.getLogger(__name__)


class AllocationEvents:
    """Emits ``alloc.*`` events through a LoggerProvider (given, or the global one).

    Emitting never blocks: with the SDK's batch log processor the record is
    queued, and the queue is bounded by the SDK.
    """

    def __init__(self, logger_provider: LoggerProvider | None,
                 on_emit: Callable[[str, str | None, int, int], None] | None = None) -> None:
        provider = logger_provider or get_logger_provider()
        self._logger = provider.get_logger(names.METER_NAME)
        self._on_emit = on_emit
        self.emitted = 0

    def emit(
        self,
        event_name: str,
        *,
        trace_id: int,
        span_id: int,
        span_name: str | None,
        attributes: Mapping[str, AnyValue],
        body: str,
        timestamp_ns: int | None = None,
        severity: SeverityNumber = SeverityNumber.WARN,
    ) -> None:
        """Emit one event linked to the span with these ids (0, 0: no span)."""
        attrs = dict(attributes)
        if span_name is not None:
            attrs[names.SPAN_NAME] = span_name
        record = LogRecord(
            timestamp=timestamp_ns or time.time_ns(),
            context=span_context(trace_id, span_id) if trace_id else None,
            severity_number=severity,
            severity_text=severity.name,
            body=body,
            attributes=attrs,
            event_name=event_name,
        )
        self._logger.emit(record)
        self.emitted += 1
        if self._on_emit is not None:
            self._on_emit(event_name, span_name, trace_id, span_id)
