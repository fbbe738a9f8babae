"""Sampled allocation sites: the profile that reports and flame graphs read.

The native sampler picks allocations by Poisson sampling over bytes (mean
``sample_bytes``): an allocation of ``s`` bytes is sampled with probability
``p = 1 - exp(-s / mean)`` and stands for ``s / p`` bytes and ``1 / p``
allocations, which makes every sum here an unbiased *estimate*. Reports say
so; the exact per-span totals are the span attributes and metrics.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

NO_STACK = ("<no Python frame>", "", 0)
FORMAT_VERSION = 1


class Frame(NamedTuple):
    """One Python frame: function (qualified name), file and line.

    (A named tuple: every sampled allocation looks its cell up by a stack of
    frames, and a tuple hashes in C where a frozen dataclass calls Python.)
    """

    function: str
    filename: str
    line: int

    def label(self) -> str:
        """``function (file:line)``, as flame graphs show it."""
        return f"{self.function} ({self.filename}:{self.line})"


@dataclass
class SiteStats:
    """Estimated figures of one (stack, span name, thread) cell."""

    alloc_bytes: float = 0.0
    alloc_count: float = 0.0
    freed_bytes: float = 0.0
    freed_count: float = 0.0
    samples: int = 0

    @property
    def live_bytes(self) -> float:
        """Estimated bytes allocated here and not freed yet (live mode)."""
        return settle(self.alloc_bytes - self.freed_bytes)

    @property
    def live_count(self) -> float:
        """Estimated blocks allocated here and not freed yet (live mode)."""
        return settle(self.alloc_count - self.freed_count)


def settle(value: float) -> float:
    """Zero for float residue: allocations and frees are summed in different orders."""
    return value if abs(value) >= 0.5 else 0.0


Key = tuple[tuple[Frame, ...], str, str]  # (stack innermost first, span name, thread)


class _Live(NamedTuple):
    key: Key
    weight_bytes: float
    weight_count: float


# What Profile.record takes: (sample id, key, weight bytes, weight count) for
# a sampled allocation, (sample id, None, 0.0, 0.0) for the free of one.
Entry = tuple[int, Key | None, float, float]


@dataclass
class Profile:
    """Sampled allocation sites by stack, span name and thread.

    Attributes:
        sample_bytes: Mean bytes between samples (the estimates' scale).
        live: Whether frees of sampled blocks are seen (live mode).
        cells: Figures per (stack, span name, thread).
        pid: The process sampled (a forked child starts a profile of its
            own), ``None`` for files written before it was recorded.
    """

    sample_bytes: int
    live: bool
    cells: dict[Key, SiteStats] = field(default_factory=dict)
    _live_samples: dict[int, _Live] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    max_live_samples: int = 1_000_000
    pid: int | None = field(default_factory=os.getpid)

    def add_sample(self, sample_id: int, stack: tuple[Frame, ...], span: str, thread: str,
                   weight_bytes: float, weight_count: float) -> None:
        """Add one sampled allocation."""
        self.record([(sample_id, (stack, span, thread), weight_bytes, weight_count)])

    def free_sample(self, sample_id: int) -> None:
        """A sampled block was freed (live mode)."""
        self.record([(sample_id, None, 0.0, 0.0)])

    def record(self, entries: Iterable[Entry]) -> None:
        """Add sampled allocations and frees, in their order, under one lock.

        Args:
            entries: ``(sample id, (stack, span, thread), weight bytes,
                weight count)`` for an allocation; ``(sample id, None, 0.0,
                0.0)`` for the free of a sampled block (counted in live mode
                only, against the cell its allocation went to).
        """
        cells = self.cells
        live = self._live_samples
        with self._lock:
            for sample_id, key, weight_bytes, weight_count in entries:
                if key is None:
                    entry = live.pop(sample_id, None)
                    if entry is not None:
                        freed = cells[entry.key]
                        freed.freed_bytes += entry.weight_bytes
                        freed.freed_count += entry.weight_count
                    continue
                cell = cells.get(key)
                if cell is None:
                    cell = cells[key] = SiteStats()
                cell.alloc_bytes += weight_bytes
                cell.alloc_count += weight_count
                cell.samples += 1
                if self.live and len(live) < self.max_live_samples:
                    live[sample_id] = _Live(key, weight_bytes, weight_count)

    def snapshot(self) -> dict[Key, SiteStats]:
        """A copy of the cells, safe to read while sampling goes on."""
        with self._lock:
            return {k: SiteStats(v.alloc_bytes, v.alloc_count, v.freed_bytes, v.freed_count,
                                 v.samples) for k, v in self.cells.items()}

    # -- files ------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dump (what ``otel-alloc report`` reads)."""
        frames: dict[Frame, int] = {}
        rows = []
        for (stack, span, thread), st in self.snapshot().items():
            ids = [frames.setdefault(f, len(frames)) for f in stack]
            rows.append([ids, span, thread, st.alloc_bytes, st.alloc_count, st.freed_bytes,
                         st.freed_count, st.samples])
        return {
            "format": "otel_alloc.profile", "version": FORMAT_VERSION,
            "estimated": True, "sample_bytes": self.sample_bytes, "live": self.live,
            "pid": self.pid,
            "frames": [[f.function, f.filename, f.line] for f in frames],
            "cells": rows,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Profile:
        """Rebuild a profile from :meth:`to_json` output."""
        if data.get("format") != "otel_alloc.profile":
            raise ValueError("not an otel_alloc profile (missing format marker)")
        frames = [Frame(str(f[0]), str(f[1]), int(f[2])) for f in data["frames"]]
        pid = data.get("pid")
        prof = cls(sample_bytes=int(data["sample_bytes"]), live=bool(data["live"]),
                   pid=int(pid) if pid is not None else None)
        for ids, span, thread, ab, ac, fb, fc, n in data["cells"]:
            prof.cells[(tuple(frames[i] for i in ids), span, thread)] = SiteStats(
                float(ab), float(ac), float(fb), float(fc), int(n))
        return prof

    def dump(self, path: str) -> None:
        """Write the profile as JSON."""
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(self.to_json(), fh)

    @classmethod
    def load(cls, path: str) -> Profile:
        """Read a profile written by :meth:`dump`."""
        with open(path, encoding="utf-8") as fh:
            return cls.from_json(json.load(fh))
