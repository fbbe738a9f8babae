"""Byte sizes: the units settings accept and the way reports print sizes.

A leaf module: it imports nothing from the package, and every part of it
may import it.
"""

from __future__ import annotations

# Units a size setting may carry (``64MiB``, ``1.5GB``), lower-cased.
SIZE_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3,
              "kib": 1024, "mib": 1024**2, "gib": 1024**3}


def format_bytes(n: float) -> str:
    """Human-readable byte size (binary units)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"
