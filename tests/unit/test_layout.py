"""The package's layout holds: light import, one-way imports, sizes, one safe C boundary."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import otel_alloc

PACKAGE = Path(otel_alloc.__file__).resolve().parent
NATIVE = PACKAGE / "_native"

# What each subpackage may import from otel_alloc (besides itself and the
# leaf modules validation, units and _lazy), and whether it may import
# OpenTelemetry.
ALLOWED = {
    "tracker": (set(), False),
    "profiling": ({"tracker"}, False),
    "otel": ({"tracker", "profiling"}, True),
    "cli": ({"tracker", "profiling", "otel"}, True),
}
LEAVES = {"otel_alloc.validation", "otel_alloc.units", "otel_alloc._lazy"}


def _run(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_import_loads_neither_opentelemetry_nor_the_tracker() -> None:
    out = _run("""
        import sys
        import otel_alloc
        def loaded(prefix):
            return sorted(m for m in sys.modules if m == prefix or m.startswith(prefix + "."))
        print(len(loaded("opentelemetry")), bool(loaded("otel_alloc.tracker._tracker")))
        otel_alloc.install("counts")
        print(len(loaded("opentelemetry")), bool(loaded("otel_alloc.tracker._tracker")))
        otel_alloc.AllocationSpanProcessor
        print(len(loaded("opentelemetry")) > 0)
    """)
    assert out.split() == ["0", "False", "0", "True", "True"]


def test_public_api_is_unchanged() -> None:
    assert sorted(otel_alloc.__all__) == sorted([
        "AllocEvent", "AllocationSpanProcessor", "ConfigError", "Counters", "Group",
        "MemoryUsage", "ProcessStats", "SpanAllocation", "Stats", "ThreadStats", "TrackerError",
        "__version__",
        "counters", "current_thread_stats", "disable", "domain_stats", "enable", "hook_status",
        "install", "installed_mode", "is_enabled", "memory_usage", "process_stats",
        "reset_peaks", "thread_stats", "uninstall",
    ])
    for name in otel_alloc.__all__:
        assert getattr(otel_alloc, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        otel_alloc.nothing_here  # noqa: B018


@pytest.mark.parametrize("subpackage", sorted(ALLOWED))
def test_imports_point_one_way(subpackage: str) -> None:
    allowed, may_use_otel = ALLOWED[subpackage]
    own = f"otel_alloc.{subpackage}"
    for path in sorted((PACKAGE / subpackage).glob("*.py")):
        for name in _imports(path):
            where = f"{path.relative_to(PACKAGE)} imports {name}"
            if name.startswith("opentelemetry"):
                assert may_use_otel, where
            if not name.startswith("otel_alloc.") or name.startswith(own):
                continue
            if any(name == leaf or name.startswith(leaf + ".") for leaf in LEAVES):
                continue
            assert name.split(".")[1] in allowed, where


def test_leaf_modules_import_no_other_part() -> None:
    for leaf in ("validation.py", "units.py", "_lazy.py"):
        others = {n for n in _imports(PACKAGE / leaf) if n.startswith("otel_alloc")}
        assert others <= {"otel_alloc.units", "otel_alloc.units.SIZE_UNITS"}, (leaf, others)


def test_module_and_c_file_sizes() -> None:
    long_py = [(p.relative_to(PACKAGE), n) for p in PACKAGE.rglob("*.py")
               if (n := len(p.read_text().splitlines())) > 400]
    long_c = [(p.relative_to(NATIVE), n) for p in NATIVE.rglob("*.[ch]")
              if (n := len(p.read_text().splitlines())) > 500]
    assert long_py == [] and long_c == []


def test_cpython_internals_only_in_compat() -> None:
    for path in NATIVE.rglob("*.[ch]"):
        text = path.read_text()
        if path.parent.name == "compat":
            continue
        for marker in ("Py_BUILD_CORE", "internal/pycore", "_PyInterpreterFrame",
                       "->context_ver", "_PyThreadState_UncheckedGet"):
            assert marker not in text, f"{path.relative_to(NATIVE)} uses {marker}"


def test_extensions_meet_through_a_named_capsule() -> None:
    from otel_alloc.otel import _spanpath
    from otel_alloc.tracker import _tracker

    capsule = _tracker._C_API
    assert type(capsule).__name__ == "PyCapsule"
    assert "otel_alloc.tracker._tracker._C_API" in repr(capsule)
    assert not hasattr(_spanpath, "bind")
    # Nothing in the span path takes an address: its functions take spans,
    # types and ints that are group ids, checked in C.
    assert sorted(n for n in dir(_spanpath) if not n.startswith("_")) == [
        "ContextFollower", "SpanIndex", "SpanPath", "SpanRecords", "configure", "group_new"]


_FUZZ = """
import inspect
import itertools

from otel_alloc.otel import _spanpath
from otel_alloc.tracker import _binding

# Arguments a careless or hostile caller might pass to a private function.
odd = (None, -1, 0, 1, 2**64 - 1, 2**63, -(2**63), "x", b"\\0", 1.5, (), object())
calls = 0


def call(fn, *args):
    global calls
    calls += 1
    try:
        fn(*args)
    except Exception:
        pass


_binding.install(_binding.MODE_LIVE, 64, 0, 16)  # live mode: every table exists
for name, fn in sorted(vars(_binding).items()):
    if name.startswith("_") or name in ("install", "uninstall") or not inspect.isfunction(fn):
        continue
    n = len(inspect.signature(fn).parameters)
    for args in itertools.product(odd, repeat=min(n, 2)):
        call(fn, *args, *([0] * max(0, n - 2)))
for fn in (_spanpath.group_new, _spanpath.configure, _spanpath.SpanRecords,
           _spanpath.SpanPath, _spanpath.ContextFollower):
    for args in itertools.product(odd, repeat=2):
        call(fn, *args)
records = _spanpath.SpanRecords(4)
for arg in odd:
    call(records.lookup, arg)
    call(records.take, arg)
_binding.uninstall()
print(calls)
"""


def test_private_native_functions_cannot_crash_the_process() -> None:
    """Every private function of both extensions, called with odd arguments."""
    assert int(_run(_FUZZ)) > 500
