"""Keeping the tracker's current group in step with the OpenTelemetry context.

Bytes belong to the span that is current *in the context that is running*.
The native hooks read a context variable of the tracker's (see ``tracker``);
this module keeps it equal to "the group of the span current in the OTel
context" by standing in for OpenTelemetry's runtime context. With
OpenTelemetry's own runtime context (a ContextVar of Contexts), the stand-in
keeps the current ``Context`` in the tracker's variable itself, as a binding
``(group id, Context)``: every ``attach`` (``start_as_current_span``,
``use_span``, ``context.attach``) sets it and every ``detach`` resets it
through the tracker, one ContextVar operation each, as OpenTelemetry's own
would be. Because the binding lives in the running ``contextvars.Context``,
asyncio task switches, thread pools that carry a copied context and
``Context.run`` carry the span and its group together without any
OpenTelemetry call. Any other runtime context is called through, and the
tracker's variable is set beside it.

The stand-in is :class:`otel_alloc.otel._spanpath.ContextFollower`, in C: it runs
several times per span.
"""

from __future__ import annotations

import threading
from contextvars import ContextVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext

from otel_alloc import tracker
from otel_alloc.otel._spanpath import ContextFollower, SpanIndex

# span object -> group id of spans whose groups are open, read by the C
# runtime context on every attach/detach. Keyed by the span object itself
# (its identity): it is what an OTel Context holds, so the lookup needs no
# call into the span. A table in C (SpanIndex), which the span path writes
# without a dict's hashing and resizes; its operations hold the GIL.
_span_groups = SpanIndex(by_identity=True)
_span_holders: dict[object, int] = {}
_hook_lock = threading.Lock()

# The key under which OpenTelemetry keeps the current span in a Context; when
# a future version moves it, the public accessor is called instead.
_SPAN_KEY: str | None = getattr(trace.propagation, "_SPAN_KEY", None)


def span_registry() -> SpanIndex:
    """The live span -> group mapping (the processor's hot path writes it directly).

    One mapping for every processor, on purpose: an allocation is charged to
    one group, so processors that see the same span (two on one provider, or
    two wrapping one export processor) share the group the first opened.
    """
    return _span_groups


def span_holders() -> dict[object, int]:
    """Span -> how many processors beyond the first hold its group (absent: one).

    The last processor to end the span releases the group.
    """
    return _span_holders


def install_context_hook() -> None:
    """Stand in for OpenTelemetry's runtime context once (idempotent, thread-safe).

    OpenTelemetry has no public hook for context changes, so this replaces the
    module-level runtime context object that ``opentelemetry.context.attach``
    and ``detach`` call. When that object is OpenTelemetry's own
    ``ContextVarsRuntimeContext``, the current Context is kept in the
    tracker's variable (its own variable keeps what it held here, read where
    nothing was attached since); any other runtime context is called through.
    """
    with _hook_lock:
        current = otel_context._RUNTIME_CONTEXT
        if isinstance(current, ContextFollower):
            return
        var = getattr(current, "_current_context", None)
        direct = type(current) is ContextVarsRuntimeContext and isinstance(var, ContextVar)
        hook = ContextFollower(
            inner=current,
            context_var=var if direct else None,
            span_key=_SPAN_KEY,
            span_getter=trace.get_current_span,
            groups=_span_groups,
            group_var=tracker.CURRENT_GROUP,
        )
        otel_context._RUNTIME_CONTEXT = hook  # type: ignore[assignment]
        # Follow the span that is already current where the hook goes in.
        hook.follow_current()


def context_hook_installed() -> bool:
    """Whether the runtime-context stand-in is in place."""
    return isinstance(otel_context._RUNTIME_CONTEXT, ContextFollower)

