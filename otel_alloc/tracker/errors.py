"""The tracker's error, and the one check made before any native code loads."""

from __future__ import annotations

import sysconfig

FREE_THREADED_MESSAGE = (
    "otel_alloc does not support free-threaded CPython builds (Py_GIL_DISABLED): its "
    "MEM/OBJ accounting relies on the GIL, and loading its extensions would turn the "
    "GIL back on; use a GIL build of CPython to track allocations")


class TrackerError(RuntimeError):
    """The tracker cannot do what was asked (install conflict, unsupported build)."""


def free_threaded_build() -> bool:
    """Whether this interpreter is a free-threaded (no-GIL) build."""
    return bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


def require_gil_build() -> None:
    """Raise :class:`TrackerError` on a free-threaded build, before anything native loads.

    An extension module without a ``Py_mod_gil`` slot turns the GIL back on
    when it is imported into a free-threaded interpreter, for the whole
    process; refusing first leaves the app's interpreter as it was.
    """
    if free_threaded_build():
        raise TrackerError(FREE_THREADED_MESSAGE)
