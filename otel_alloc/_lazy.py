"""Lazy attributes for a package's ``__init__`` (PEP 562).

A package lists which of its submodules defines each public name; the
submodule is imported the first time one of its names is read, and the name
is then cached in the package's namespace. This keeps ``import otel_alloc``
from loading the OpenTelemetry SDK or the native tracker before they are used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_getattr(package: str, namespace: dict[str, Any],
                 sources: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` resolving ``sources[name]``'s attribute ``name``.

    Args:
        package: The package's ``__name__``.
        namespace: The package's ``globals()``; resolved names are cached there.
        sources: Public name -> the module (absolute name) that defines it.

    Returns:
        The function to bind as the package's ``__getattr__``.
    """
    def __getattr__(name: str) -> Any:
        source = sources.get(name)
        if source is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(source), name)
        namespace[name] = value
        return value

    return __getattr__
