"""Native mode on the libraries users run: NumPy, pandas, Pillow, lxml.

NumPy's and pandas' figures are checked against the arrays' own sizes.
Pillow's and lxml's allocations have no size of their own to compare with:
they are checked against an independent count, an LD_PRELOAD malloc family
(tests/native/malloc_oracle.c) that counts what the library's code asks for
while the same work runs in a fresh interpreter without otel_alloc.

The libraries are optional for a plain test run; CI requires them
(OTEL_ALLOC_REQUIRE_NATIVE_LIBS=1), so there a missing one fails.
"""

from __future__ import annotations

import gc
import importlib
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

import otel_alloc
from otel_alloc.profiling import sampling
from otel_alloc.tracker import sampler as native_sampler

ORACLE_SOURCE = Path(__file__).resolve().parents[2] / "native" / "malloc_oracle.c"


def _library(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError:
        if os.environ.get("OTEL_ALLOC_REQUIRE_NATIVE_LIBS") == "1":
            raise
        pytest.skip(f"{name} is not installed (CI installs it)")


@pytest.fixture
def native_live() -> Iterator[None]:
    otel_alloc.install("live", native=True)
    was = gc.isenabled()
    gc.disable()  # no finalizer runs inside a measured span
    try:
        yield
    finally:
        if was:
            gc.enable()
        otel_alloc.uninstall()


def _native_bytes(work: object) -> tuple[int, object]:
    """Native bytes charged to a group while ``work()`` runs, and its result."""
    with otel_alloc.Group() as group:
        kept = work()  # type: ignore[operator]
    stats = group.stats()
    group.release()
    assert stats is not None
    return stats.native_bytes, kept


N = 4 * 2**20  # elements: 32 MiB of float64, far above NumPy's small-block cache
EVENT_BYTES = 2**20  # single allocations this big are reported as events


@pytest.fixture
def native_events() -> Iterator[None]:
    """Live native mode, each allocation of EVENT_BYTES or more an event."""
    otel_alloc.install("live", native=True, threshold_bytes=EVENT_BYTES)
    was = gc.isenabled()
    gc.disable()
    try:
        otel_alloc.tracker.drain_events()
        yield
    finally:
        if was:
            gc.enable()
        otel_alloc.uninstall()


def _data_domain(np: ModuleType) -> str:
    """Where NumPy's array data comes from: ``malloc`` before 2.5 (seen in
    native mode), ``PyMem_RawMalloc`` from 2.5 (the RAW domain)."""
    major, minor = (int(part) for part in np.__version__.split(".")[:2])
    return "raw" if (major, minor) >= (2, 5) else "native"


def _big_blocks(group_id: int) -> list[tuple[int, str]]:
    """(size, domain) of the pending large-allocation events of a group."""
    names = {0: "raw", 1: "mem", 2: "obj", 3: "native"}
    return [(e.size, names[e.domain]) for e in otel_alloc.tracker.drain_events()
            if e.group == group_id]


@pytest.mark.parametrize("make", ["zeros", "ones", "empty", "arange", "copy", "view"])
def test_numpy_array_data_exactly(native_events: None, make: str) -> None:
    np = _library("numpy")
    route = _data_domain(np)
    source = np.ones(N)
    work = {
        "zeros": lambda: np.zeros(N),
        "ones": lambda: np.ones(N),
        "empty": lambda: np.empty(N),
        "arange": lambda: np.arange(N, dtype=np.int64),
        "copy": lambda: source.copy(),
        "view": lambda: source[::2],
    }[make]
    work()  # first calls pay for NumPy's one-time set-up
    otel_alloc.tracker.drain_events()
    with otel_alloc.Group() as group:
        array = work()
    stats = group.stats()
    blocks = _big_blocks(group.id)
    group.release()
    assert stats is not None
    if make == "view":  # no data of its own
        assert blocks == [] and stats.native_bytes == 0 and array.nbytes == N * 4
        return
    # The data block, charged to the span once, at its exact size, by the
    # route this NumPy takes; and never counted a second time.
    assert blocks == [(N * 8, route)]
    assert stats.native_bytes == (N * 8 if route == "native" else 0)
    assert N * 8 <= stats.alloc_bytes < N * 8 + 64 * 1024
    assert array.nbytes == N * 8


def test_numpy_array_freed_in_live_mode(native_live: None) -> None:
    np = _library("numpy")
    domain = _data_domain(np)
    array = np.ones(N)
    # Reading the figures allocates a little itself (cffi): the same read
    # with nothing in between measures that.
    first = otel_alloc.domain_stats(domain)
    before = otel_alloc.domain_stats(domain)
    del array
    after = otel_alloc.domain_stats(domain)
    reading_freed = before.freed_bytes - first.freed_bytes
    reading_live = before.live_bytes - first.live_bytes
    assert after.freed_bytes - before.freed_bytes - reading_freed == N * 8
    assert after.live_bytes - before.live_bytes - reading_live == -N * 8


def test_pandas_frame(native_events: None) -> None:
    np, pd = _library("numpy"), _library("pandas")
    a, b = np.ones(N), np.arange(N, dtype=np.int64)
    pd.DataFrame({"a": a[:8], "b": b[:8]})  # warm
    otel_alloc.tracker.drain_events()
    with otel_alloc.Group() as group:
        frame = pd.DataFrame({"a": a, "b": b})
    blocks = _big_blocks(group.id)
    stats = group.stats()
    group.release()
    # The frame copies both columns into its own blocks, through NumPy's route.
    data = int(frame.memory_usage(index=False).sum())
    assert data == 2 * N * 8
    assert sum(size for size, _ in blocks) == data
    assert {domain for _, domain in blocks} == {_data_domain(np)}
    assert stats is not None and data <= stats.alloc_bytes < data + 256 * 1024


@pytest.fixture(scope="module")
def oracle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    library = tmp_path_factory.mktemp("oracle") / "malloc_oracle.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-O1", "-o", str(library), str(ORACLE_SOURCE),
                    "-ldl"], check=True)
    return library


WORK = {
    "pillow": ("PIL/_imaging", "import PIL.Image",
               'work = lambda: PIL.Image.new("RGBA", (2048, 2048))'),
    "lxml": ("lxml/etree", "import lxml.etree",
             "xml = b'<r>' + b''.join(b'<i n=\"%d\">t %d</i>' % (i, i) for i in range(20000))"
             " + b'</r>'\nwork = lambda: lxml.etree.fromstring(xml)"),
}

RUN = textwrap.dedent("""
    import ctypes, gc, sys
    {imports}
    {setup}
    gc.disable()
    work()  # one-time set-up of the library
    if sys.argv[1] == "oracle":
        lib = ctypes.CDLL(None)
        assert lib.oracle_target({target!r}.encode()), "library not loaded"
        out = (ctypes.c_uint64 * 2)()
        lib.oracle_start(); kept = work(); lib.oracle_stop(out)
        print(out[0])
    else:
        import otel_alloc
        otel_alloc.install("live", native=True)
        with otel_alloc.Group() as group:
            kept = work()
        print(group.stats().native_bytes)
""")


@pytest.mark.parametrize("name", sorted(WORK))
def test_library_matches_an_independent_malloc_count(oracle: Path, tmp_path: Path,
                                                     name: str) -> None:
    _library({"pillow": "PIL.Image", "lxml": "lxml.etree"}[name])
    target, imports, setup = WORK[name]
    script = tmp_path / f"run_{name}.py"
    script.write_text(RUN.format(imports=imports, setup=setup, target=target))

    def run(how: str, env: dict[str, str]) -> int:
        done = subprocess.run([sys.executable, str(script), how], capture_output=True,
                              text=True, timeout=120, env={**os.environ, **env})
        assert done.returncode == 0, done.stderr
        return int(done.stdout.split()[-1])

    counted = run("oracle", {"LD_PRELOAD": str(oracle)})
    charged = run("tracker", {})
    assert counted > 1_000_000  # the work really allocates natively
    assert charged == counted


def test_sampled_array_data_has_its_python_stack(native_live: None) -> None:
    """Native (NumPy < 2.5) and RAW (2.5+) samples carry the Python stack."""
    np = _library("numpy")

    def make_array() -> object:
        return np.ones(N)

    sampling.configure(64 * 1024, max_depth=8, capacity=1 << 16)
    try:
        native_sampler.drain_samples(1 << 16)  # drop what is pending
        kept = make_array()
        found = []
        for s in native_sampler.drain_samples(1 << 16):
            if s.kind == native_sampler.SAMPLE_ALLOC and s.size == N * 8:
                stack = native_sampler.stack_frames(s.stack)
                frames = [native_sampler.frame_info(f) for f in stack]
                found.append((s.domain, [f[0] for f in frames if f is not None]))
    finally:
        sampling.configure(0)
    assert kept is not None
    assert found, "the 32 MiB array data was not sampled"
    domain, functions = found[0]
    assert domain == {"native": 3, "raw": 0}[_data_domain(np)]
    assert any(name.endswith("make_array") for name in functions), functions


def test_process_stats_say_how_much_of_rss_the_figures_explain(native_live: None) -> None:
    if "vgpreload" in os.environ.get("LD_PRELOAD", ""):
        pytest.skip("under valgrind the heap is valgrind's: RSS does not follow allocations")
    np = _library("numpy")
    before = otel_alloc.process_stats()
    array = np.ones(N)  # written, so resident
    after = otel_alloc.process_stats()
    assert before.rss_anon_bytes is not None and after.rss_anon_bytes is not None
    assert before.native_live_bytes is not None and after.native_live_bytes is not None
    assert before.unexplained_bytes is not None and after.unexplained_bytes is not None
    assert before.python_live_bytes is not None and after.python_live_bytes is not None
    # The array's data is live in the part its route feeds; reading the
    # figures allocates a few hundred bytes itself.
    if _data_domain(np) == "native":
        assert N * 8 <= after.native_live_bytes - before.native_live_bytes < N * 8 + 4096
    else:
        assert N * 8 <= after.python_live_bytes - before.python_live_bytes < N * 8 + 4096
    assert after.rss_anon_bytes - before.rss_anon_bytes >= N * 8 * 0.95
    # The new resident memory is explained: what is unexplained barely moves.
    assert abs(after.unexplained_bytes - before.unexplained_bytes) < 4 * 2**20
    assert after.covered_fraction is not None and 0 < after.covered_fraction <= 1
    assert not after.live_estimated
    assert array.nbytes == N * 8


def test_process_stats_in_estimate_mode_are_estimates() -> None:
    otel_alloc.install("estimate", native=False)
    try:
        before = otel_alloc.process_stats()
        kept = [bytes(2**20) for _ in range(40)]
        after = otel_alloc.process_stats()
    finally:
        otel_alloc.uninstall()
    assert before.live_estimated and after.live_estimated
    assert before.python_live_bytes is not None and after.python_live_bytes is not None
    assert after.native_live_bytes == 0 and after.unexplained_bytes is not None
    # Each 1 MiB block is sampled for sure (p = 1 - exp(-256)) and stands for
    # its own size. Sampled blocks from before that were freed meanwhile take
    # their weights (a few KiB each) out; sampled small ones add theirs.
    grown = after.python_live_bytes - before.python_live_bytes
    assert 40 * 2**20 - 2**16 <= grown <= 40 * 2**20 + 2**20, grown
    assert after.covered_fraction is not None and 0 < after.covered_fraction <= 1
    assert len(kept) == 40


def test_process_stats_in_counts_mode_have_no_live_parts() -> None:
    otel_alloc.install("counts")
    try:
        stats = otel_alloc.process_stats()
    finally:
        otel_alloc.uninstall()
    assert stats.rss_bytes is not None and stats.rss_anon_bytes is not None
    assert 0 < stats.rss_anon_bytes <= stats.rss_bytes
    assert stats.python_live_bytes is None and stats.unexplained_bytes is None
    assert stats.covered_fraction is None and stats.tracker_bytes > 0
    assert not stats.live_estimated


def test_process_stats_start_with_the_fields_of_stats() -> None:
    assert otel_alloc.ProcessStats._fields[:len(otel_alloc.Stats._fields)] == \
        otel_alloc.Stats._fields
