"""What differs between opentelemetry-sdk versions, and the SDK types the C path knows.

- ``SpanProcessor._on_ending`` (SDK >= 1.40) is called on every processor
  before any ``on_end``: the route by which the ``alloc.*`` attributes reach
  every exporter, in any processor order. Older SDKs need the wrapping form.
- A wrapped processor's ``on_start`` and ``_on_ending`` that do nothing
  (``SimpleSpanProcessor``'s and ``BatchSpanProcessor``'s) are not called:
  a Python call per span and method, for no effect (:func:`forwarded`).
- The C span path reads the fields of the SDK's exact span types
  (``ReadableSpan``, ``Span`` and the ``_Span`` its tracer makes) and of
  ``SpanContext`` directly (their properties are Python functions) and
  adds attributes to the exact ``BoundedAttributes`` under its lock; any other
  type goes through its public properties.
"""

from __future__ import annotations

import dis
import inspect
import logging
import threading
from collections.abc import Callable
from typing import Any

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


_SKIPPED_OPS = frozenset({"RESUME", "NOP", "CACHE"})


def _body(code: Any) -> tuple[tuple[str, object], ...]:
    return tuple((ins.opname, ins.argval) for ins in dis.get_instructions(code)
                 if ins.opname not in _SKIPPED_OPS)


def _nothing_bodies() -> frozenset[tuple[tuple[str, object], ...]]:
    """What a function that does nothing compiles to on this interpreter.

    Taken from functions compiled here rather than written out, because each
    CPython spells it its own way (RETURN_CONST in 3.12-3.13, LOAD_COMMON_CONSTANT
    in 3.15).
    """
    def passes() -> None:
        pass

    def documented() -> None:
        """Only a docstring."""

    def returns() -> None:
        return None

    return frozenset(_body(f.__code__) for f in (passes, documented, returns))


_NOTHING = _nothing_bodies()
_NOT_PLAIN = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR


def does_nothing(method: Callable[..., Any], *args: object, **kwargs: object) -> bool:
    """Whether calling ``method(*args, **kwargs)`` would do nothing and return None.

    True only for a bound method of a plain Python function whose body is
    ``pass`` or a docstring, and which accepts these arguments (a call that
    would raise is still made, so its error is reported).
    """
    func = getattr(method, "__func__", None)
    code = getattr(func, "__code__", None)
    if code is None or not inspect.isfunction(func) or code.co_flags & _NOT_PLAIN:
        return False
    try:
        inspect.signature(method).bind(*args, **kwargs)
    except (TypeError, ValueError):
        return False
    return _body(code) in _NOTHING


def forwarded(processor: SpanProcessor | None) -> tuple[Callable[..., Any] | None, ...]:
    """The wrapped processor's ``on_start``, ``_on_ending`` and ``on_end`` to call.

    None for each one not to call: no processor, an SDK without
    ``_on_ending``, or (``on_start``, ``_on_ending``) a method that does
    nothing. ``on_end`` is always called.
    """
    if processor is None:
        return None, None, None
    on_start: Callable[..., Any] | None = processor.on_start
    on_ending: Callable[..., Any] | None = (getattr(processor, "_on_ending", None)
                                            if SDK_CALLS_ON_ENDING else None)
    if on_start is not None and does_nothing(on_start, None, parent_context=None):
        on_start = None
    if on_ending is not None and does_nothing(on_ending, None):
        on_ending = None
    return on_start, on_ending, processor.on_end
