"""Pieces the benchmark scripts share (imported from the benchmarks folder)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
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


def build_probe(folder: Path, name: str, target: Path,
                extra_compile_args: Sequence[str] = ("-O2",)) -> ModuleType:
    """Compile a benchmark's native probe with cffi into ``target`` and import it.

    ``folder`` holds ``<stem>.h`` (the functions Python calls, without
    includes: cffi reads it as it is) and ``<stem>.c``, named after the
    folder; the module is ``name``.
    """
    from cffi import FFI

    stem = folder.name
    ffi = FFI()
    ffi.cdef((folder / f"{stem}.h").read_text())
    ffi.set_source(name, f'#include <stdint.h>\n#include "{stem}.h"',
                   sources=[str(folder / f"{stem}.c")], include_dirs=[str(folder)],
                   extra_compile_args=list(extra_compile_args))
    ffi.compile(tmpdir=str(target))
    sys.path.insert(0, str(target))
    return importlib.import_module(name)
