"""What differs between opentelemetry-sdk versions, and the SDK types the C path knows.

- ``SpanProcessor._on_ending`` (SDK >= 1.40) is called on every processor
  before any ``on_end``: the route by which the ``alloc.*`` attributes reach
  every exporter, in any processor order. Older SDKs need the wrapping form.
- The C span path reads the fields of the SDK's exact span types
  (``ReadableSpan``, ``Span`` and the ``_Span`` its tracer makes) and of
  ``SpanContext`` directly (their properties are Python functions) and
  adds attributes to the exact ``BoundedAttributes`` under its lock; any other
  type goes through its public properties.
"""

from __future__ import annotations

import logging
import threading

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk import trace as trace_sdk
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import SpanContext

from otel_alloc.otel import _spanpath

_log = logging.getLogger("otel_alloc.otel.processor")

SDK_CALLS_ON_ENDING = hasattr(SpanProcessor, "_on_ending")

# The tracer makes ``_Span`` (a Span subclass with the same fields); the C
# path's exact-type checks need it named, or every span takes the properties.
_spanpath.configure(ReadableSpan, BoundedAttributes, Span, SpanContext,
                    getattr(trace_sdk, "_Span", Span))

_route_warning = threading.Lock()
_route_warned = False


def warn_no_attribute_route() -> None:
    """Say once that this SDK cannot carry the attributes to a processor beside ours."""
    global _route_warned
    with _route_warning:
        if _route_warned:
            return
        _route_warned = True
    from opentelemetry.sdk.version import __version__ as sdk_version

    _log.warning(
        "otel_alloc: opentelemetry-sdk %s does not call SpanProcessor._on_ending, so the "
        "alloc.* span attributes cannot reach the spans an export processor registered "
        "beside AllocationSpanProcessor receives. Wrap the export processor instead: "
        "provider.add_span_processor(AllocationSpanProcessor(BatchSpanProcessor(exporter))), "
        "or upgrade to opentelemetry-sdk >= 1.40. Metrics and events are not affected.",
        sdk_version)
