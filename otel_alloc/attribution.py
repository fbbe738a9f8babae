"""Keeping the tracker's current group in step with the OpenTelemetry context.

Bytes belong to the span that is current *in the context that is running*.
The native hooks read a context variable of ours (see ``tracker``); this
module keeps that variable equal to "the group of the span current in the OTel
context" by wrapping OpenTelemetry's runtime context: every ``attach`` and
``detach`` (``start_as_current_span``, ``use_span``, ``context.attach``)
updates our variable in the same ``contextvars.Context``. Because both
variables live in the same context, asyncio task switches, thread pools that
carry a copied context and ``Context.run`` keep them in step without any
OpenTelemetry call.
"""

from __future__ import annotations

import logging
import threading
from contextvars import Token
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context.context import Context, _RuntimeContext

from otel_alloc import tracker

_log = logging.getLogger(__name__)

# span_id -> group id of spans whose groups are open. Plain dict operations
# are atomic under the GIL, so readers on other threads need no lock.
_span_groups: dict[int, int] = {}
_hook_lock = threading.Lock()


def register_span(span_id: int, gid: int) -> None:
    """Make allocations under the span with ``span_id`` go to group ``gid``."""
    _span_groups[span_id] = gid


def unregister_span(span_id: int) -> None:
    """Forget the span's group (its span has ended)."""
    _span_groups.pop(span_id, None)


# The key under which OpenTelemetry keeps the current span in a Context. Read
# directly on this path (it runs on every attach and detach); when a future
# version moves it, the public accessor is used instead.
_SPAN_KEY: str | None = getattr(trace.propagation, "_SPAN_KEY", None)


def group_of_context(ctx: Context) -> int:
    """Group id of the span current in ``ctx`` (0 when it has none)."""
    if _SPAN_KEY is not None:
        span: Any = ctx.get(_SPAN_KEY)
        if span is None:
            return 0
        try:
            return _span_groups.get(span.get_span_context().span_id, 0)
        except AttributeError:
            return 0
    return _span_groups.get(trace.get_current_span(ctx).get_span_context().span_id, 0)


class _AttributingRuntimeContext(_RuntimeContext):
    """Runtime context that also moves the tracker's group along.

    Delegates to the runtime context it wraps; after each change of the
    current OTel context it sets the tracker's group for the running context.
    """

    def __init__(self, inner: _RuntimeContext) -> None:
        self.inner = inner
        # These run on every attach/detach of every span: bound once here.
        self._inner_attach = inner.attach
        self._inner_detach = inner.detach
        self._inner_get = inner.get_current
        self.get_current = inner.get_current  # type: ignore[method-assign]

    def attach(self, context: Context) -> Token[Context]:
        token = self._inner_attach(context)
        try:
            _follow(group_of_context(context))
        except Exception:  # attribution must never break the app's tracing
            _log.debug("otel_alloc: could not follow attach", exc_info=True)
        return token

    def get_current(self) -> Context:
        return self._inner_get()

    def detach(self, token: Any) -> None:
        self._inner_detach(token)
        try:
            _follow(group_of_context(self._inner_get()))
        except Exception:
            _log.debug("otel_alloc: could not follow detach", exc_info=True)


_group_var = tracker.CURRENT_GROUP
_set_thread_group = tracker.set_thread_group_fast


def _follow(gid: int) -> None:
    """Make ``gid`` the running context's group (skipped when it already is)."""
    if gid != _group_var.get():
        _group_var.set(gid)
        _set_thread_group(gid)


def install_context_hook() -> None:
    """Wrap OpenTelemetry's runtime context once (idempotent, thread-safe).

    OpenTelemetry has no public hook for context changes, so this replaces the
    module-level runtime context object that ``opentelemetry.context.attach``
    and ``detach`` call, delegating everything to the original.
    """
    with _hook_lock:
        current = otel_context._RUNTIME_CONTEXT
        if isinstance(current, _AttributingRuntimeContext):
            return
        otel_context._RUNTIME_CONTEXT = _AttributingRuntimeContext(current)
        # Follow the span that is already current where the hook goes in.
        _follow(group_of_context(current.get_current()))


def context_hook_installed() -> bool:
    """Whether the runtime-context wrapper is in place."""
    return isinstance(otel_context._RUNTIME_CONTEXT, _AttributingRuntimeContext)
