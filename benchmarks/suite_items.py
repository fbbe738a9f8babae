"""The in-process items of the benchmark suite: what one operation does, how many.

Each item builds ``(op, count)`` for a scale (1.0 for the full suite): ``op``
is called ``count`` times, each call inside its own span (or, for ``core``,
inside one tracker group for the whole run, as ``bench_core.py`` does). An
op gets a span factory so it can open child spans of its own.

The pyperformance items run the ``pyperformance`` package's own benchmark
code (``data-files/benchmarks/bm_*/run_benchmark.py``, imported as modules,
their ``__main__`` block not run): copyright the Python Software Foundation
and the pyperformance authors, MIT licence.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

SpanFactory = Callable[[str], AbstractContextManager[object]]
Op = Callable[[SpanFactory], object]


@dataclass(frozen=True)
class Item:
    """One in-process item of the suite."""

    name: str
    what: str
    count: int  # ops at scale 1.0
    build: Callable[[], Op]
    spans: bool = True  # each op in an SDK span; False: one group (bench_core style)
    needs: tuple[str, ...] = ()  # importable modules the item needs

    def ops(self, scale: float) -> int:
        """Number of ops at ``scale`` (at least 1)."""
        return max(1, round(self.count * scale))


def _pyperformance(name: str) -> ModuleType:
    import pyperformance

    path = (Path(pyperformance.__file__).parent / "data-files" / "benchmarks"
            / f"bm_{name}" / "run_benchmark.py")
    spec = importlib.util.spec_from_file_location(f"bm_{name}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"pyperformance has no benchmark {name!r} at {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Capture:
    """Stands in for ``pyperf.Runner`` to take the function a ``main`` would time."""

    def __init__(self) -> None:
        self.metadata: dict[str, object] = {}
        self.call: tuple[Callable[..., object], tuple[Any, ...]] | None = None

    def bench_func(self, name: str, func: Callable[..., object], *args: Any,
                   **kwargs: Any) -> None:
        self.call = (func, args)


def _core() -> Op:
    import workload

    return lambda span: workload.handle_request()


def _spans() -> Op:
    # bench_spans.py's span body: a small dict per span.
    return lambda span: {str(i): [i] * 4 for i in range(20)}


def _request() -> Op:
    import request_like

    return lambda span: request_like.handle(request_like.BODY, span)


def _json_loads() -> Op:
    bm = _pyperformance("json_loads")
    objs = (json.dumps(bm.DICT), json.dumps(bm.TUPLE), json.dumps(bm.DICT_GROUP))
    return lambda span: bm.bench_json_loads(objs)


def _deltablue() -> Op:
    bm = _pyperformance("deltablue")
    return lambda span: bm.delta_blue(100)  # n as in pyperformance


def _go() -> Op:
    bm = _pyperformance("go")
    return lambda span: bm.versus_cpu()


def _raytrace() -> Op:
    bm = _pyperformance("raytrace")
    return lambda span: bm.bench_raytrace(1, 50, 50, None)  # a 50x50 frame per op


def _chaos() -> Op:
    bm = _pyperformance("chaos")
    capture = _Capture()
    bm.main(capture, argparse.Namespace(
        thickness=bm.DEFAULT_THICKNESS, width=bm.DEFAULT_WIDTH, height=bm.DEFAULT_HEIGHT,
        iterations=bm.DEFAULT_ITERATIONS, filename=None, rng_seed=bm.DEFAULT_RNG_SEED))
    assert capture.call is not None
    func, args = capture.call
    return lambda span: func(*args)


def _numpy() -> Op:
    import numpy_job

    seed = iter(range(1 << 30))
    return lambda span: numpy_job.step(next(seed) % 64)


PYPERF = ("pyperformance", "pyperf")
ITEMS: dict[str, Item] = {item.name: item for item in (
    Item("core", "bench_core.py's request workload (JSON round trip, dicts, bytes), "
         "one tracker group, no SDK", 6000, _core, spans=False),
    Item("spans", "bench_spans.py's span loop: a span around a 20-key dict", 20000, _spans),
    Item("request", "request-like handler: JSON body, headers, query, lookup in a child "
         "span, dataclasses, response dicts, json.dumps", 2500, _request),
    Item("json_loads", "pyperformance json_loads, one span per 60 loads", 1500, _json_loads,
         needs=PYPERF),
    Item("deltablue", "pyperformance deltablue (n=100), one span each", 200, _deltablue,
         needs=PYPERF),
    Item("go", "pyperformance go (one UCT move), one span each", 5, _go, needs=PYPERF),
    Item("raytrace", "pyperformance raytrace, a 50x50 frame per span", 10, _raytrace,
         needs=PYPERF),
    Item("chaos", "pyperformance chaos (256x256, 5000 iterations), one span each", 6,
         _chaos, needs=PYPERF),
    Item("numpy", "NumPy job step: 256x256 arrays, temporaries, reductions, masks, "
         "64 small arrays", 390, _numpy, needs=("numpy",)),
)}
