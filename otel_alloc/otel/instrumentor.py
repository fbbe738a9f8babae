"""OpenTelemetry instrumentor: ``opentelemetry-instrument`` + one variable.

Registered under the ``opentelemetry_instrumentor`` entry point, so an app
started with ``opentelemetry-instrument`` loads it. It does nothing unless
``OTEL_ALLOC_ENABLED=true``; then it adds allocation tracking to the global
TracerProvider the distro configured, wrapping its export processors so the
exported spans carry the ``alloc.*`` attributes.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)
from opentelemetry.sdk.trace import SynchronousMultiSpanProcessor, TracerProvider

from otel_alloc import validation as config
from otel_alloc.tracker.errors import FREE_THREADED_MESSAGE, free_threaded_build

if TYPE_CHECKING:
    from otel_alloc.otel.processor import AllocationSpanProcessor

_log = logging.getLogger(__name__)
ENABLE_VAR = "OTEL_ALLOC_ENABLED"


class AllocationInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Adds AllocationSpanProcessor to the global SDK TracerProvider."""

    processor: AllocationSpanProcessor | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        """No instrumented library: nothing to check."""
        return []

    def _instrument(self, **kwargs: Any) -> None:
        if not config.flag("enabled", None, ENABLE_VAR, False):
            return
        if free_threaded_build():
            # The app keeps running, untracked: loading the extensions would
            # turn the GIL back on for the whole process.
            _log.warning("otel_alloc: allocation tracking not added: %s", FREE_THREADED_MESSAGE)
            return
        # Imported here: opentelemetry-instrument loads this module in every
        # app that has otel_alloc installed, tracking enabled or not, and the
        # processor loads the native extensions.
        from otel_alloc.otel.processor import AllocationSpanProcessor
        provider = kwargs.get("tracer_provider") or trace.get_tracer_provider()
        if not isinstance(provider, TracerProvider):
            _log.warning("otel_alloc: the global TracerProvider is not the SDK's; "
                         "allocation tracking not added")
            return
        # There is no public way to wrap processors already added, so the
        # export processors in the provider's multi-processor are taken out
        # and put back behind ours (they still see every span, enriched).
        active = getattr(provider, "_active_span_processor", None)
        existing = tuple(getattr(active, "_span_processors", ()))
        if isinstance(active, SynchronousMultiSpanProcessor) and existing:
            inner = SynchronousMultiSpanProcessor()  # type: ignore[no-untyped-call]
            for sp in existing:
                inner.add_span_processor(sp)
            processor = AllocationSpanProcessor(inner)
            with active._lock:
                active._span_processors = (processor,)
        else:
            processor = AllocationSpanProcessor()
            provider.add_span_processor(processor)
        type(self).processor = processor

    def _uninstrument(self, **kwargs: Any) -> None:
        processor = type(self).processor
        if processor is not None:
            processor.shutdown()
            type(self).processor = None
