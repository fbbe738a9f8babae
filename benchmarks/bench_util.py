"""Pieces the benchmark scripts share (imported from the benchmarks folder)."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def missing_modules(modules: Sequence[str], hint: str = "pip install -e '.[bench]'") -> str | None:
    """Why an item cannot run here (the first module not installed), or None."""
    for module in modules:
        try:
            if importlib.util.find_spec(module) is None:
                raise ImportError(module)
        except ImportError:
            return f"{module} not installed ({hint})"
    return None


def alternated(items: Sequence[T], number: int) -> list[T]:
    """``items`` in order for an even round (or burst) ``number``, reversed for an odd one.

    Alternating the order cancels what running first or last does to a
    variant (a warmer cache, a neighbour's load that builds up).
    """
    return list(items) if number % 2 == 0 else list(reversed(items))


class NullExporter:
    """A span exporter that drops every span: the export cost stays out of the figures."""

    def export(self, spans: Sequence[object]) -> object:
        from opentelemetry.sdk.trace.export import SpanExportResult

        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
