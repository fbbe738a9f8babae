"""Free-threaded builds: nothing turns the GIL back on; one clear error, one warning.

No free-threaded CPython can be installed on these machines (Debian does not
package one), so the refusal is exercised by making ``sysconfig`` report
``Py_GIL_DISABLED`` in a child interpreter: the same check a real
free-threaded build answers.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

# Makes this interpreter look free-threaded to otel_alloc's check.
_PRETEND_FREE_THREADED = """
import sysconfig
_real = sysconfig.get_config_var
sysconfig.get_config_var = lambda name: 1 if name == "Py_GIL_DISABLED" else _real(name)
"""


def _run(code: str, env_extra: dict[str, str] | None = None) -> str:
    import os

    env = dict(os.environ, **(env_extra or {}))
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout + proc.stderr


def test_every_module_and_the_entry_point_import_without_turning_the_gil_on() -> None:
    out = _run("""
        import importlib, pkgutil, sys, sysconfig
        from importlib.metadata import entry_points
        import otel_alloc
        from otel_alloc.tracker.errors import TrackerError
        free_threaded = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
        names = [m.name for m in pkgutil.walk_packages(otel_alloc.__path__, "otel_alloc.")]
        imported = refused = 0
        for name in names:
            if name.endswith("__main__"):
                continue
            try:
                importlib.import_module(name)
                imported += 1
            except TrackerError:
                assert free_threaded, name
                refused += 1
        (ep,) = [e for e in entry_points(group="opentelemetry_instrumentor")
                 if e.name == "otel_alloc"]
        ep.load()
        gil = sys._is_gil_enabled() if hasattr(sys, "_is_gil_enabled") else True
        print(imported, refused, gil == (not free_threaded))
    """)
    imported, refused, gil_as_built = out.split()
    assert int(imported) + int(refused) >= 30
    assert gil_as_built == "True"


def test_free_threaded_build_refuses_before_loading_native_code() -> None:
    out = _run(_PRETEND_FREE_THREADED + """
import sys
import otel_alloc
try:
    otel_alloc.install("counts")
except otel_alloc.TrackerError as err:
    print("install:", err)
try:
    otel_alloc.AllocationSpanProcessor()
except otel_alloc.TrackerError as err:
    print("processor:", err)
print("native loaded:", any(m.startswith(("otel_alloc.tracker._tracker",
                                          "otel_alloc.otel._spanpath")) for m in sys.modules))
""")
    assert "install: otel_alloc does not support free-threaded CPython builds" in out
    assert "processor: otel_alloc does not support free-threaded" in out
    assert "native loaded: False" in out


def test_instrumentor_on_free_threaded_build_warns_once_and_app_runs() -> None:
    out = _run(_PRETEND_FREE_THREADED + """
import logging, sys
logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(levelname)s %(message)s")
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from otel_alloc.otel.instrumentor import AllocationInstrumentor
trace.set_tracer_provider(TracerProvider())
AllocationInstrumentor().instrument()
with trace.get_tracer("app").start_as_current_span("work"):
    data = [str(i) for i in range(1000)]
print("app ran:", len(data))
print("native loaded:", any(m.startswith(("otel_alloc.tracker._tracker",
                                          "otel_alloc.otel._spanpath")) for m in sys.modules))
""", {"OTEL_ALLOC_ENABLED": "true"})
    warnings = [line for line in out.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1 and "free-threaded" in warnings[0], out
    assert "app ran: 1000" in out
    assert "native loaded: False" in out
