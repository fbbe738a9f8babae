"""Building blocks for the span-path tests: a tracer around one processor, a bare SpanPath."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from opentelemetry import trace
from opentelemetry.context.context import Context
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider

from otel_alloc.otel import _spanpath


def tracer_for(processor: SpanProcessor) -> trace.Tracer:
    """A tracer of a new provider whose only processor is ``processor``."""
    provider = TracerProvider()
    provider.add_span_processor(processor)
    return provider.get_tracer("test")


class DirectProcessor(SpanProcessor):
    """Hands spans to a bare SpanPath (no processor around it)."""

    def __init__(self, path: Any) -> None:
        self.path = path

    def on_start(self, span: Any, parent_context: Context | None = None) -> None:
        self.path.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        self.path.on_end(span)


def bare_span_path(records: Any, groups: _spanpath.SpanIndex | None, failures: list[str],
                   live: int = 0, wake: Callable[[], object] = lambda: None) -> Any:
    """A SpanPath with no processor around it; failures are appended to ``failures``.

    ``groups`` is the span -> group registry it writes (None: a new one).
    """
    if groups is None:
        groups = _spanpath.SpanIndex(by_identity=True)
    return _spanpath.SpanPath(
        groups=groups, holders={}, open=_spanpath.SpanIndex(), by_gid=_spanpath.SpanIndex(),
        records=records, next_on_start=None, next_on_ending=None, next_on_end=None, live=live,
        overflowed=lambda: -1, failed=lambda where, error: failures.append(where), wake=wake,
        live_end=lambda *args: None, with_figures=lambda s, f, live: s, note_thread=None)
