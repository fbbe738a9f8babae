"""The tracker's error, and the one check made before any native code loads."""

from __future__ import annotations

import sysconfig

FREE_THREADED_MESSAGE = (
    "otel_alloc does not support free-threaded CPython builds (Py_GIL_DISABLED): its "
    "MEM/OBJ accounting relies on the GIL, and loading its extensions would turn the "
    "GIL back on; use a GIL build of CPython to track allocations")


class TrackerError(RuntimeError):
    """The tracker cannot do what was asked (install conflict, unsupported build)."""


class ModeConflictError(TrackerError):
    """The tracker is installed in one mode and another was asked for.

    Attributes:
        installed: The mode installed.
        wanted: The mode asked for.
    """

    def __init__(self, installed: str, wanted: str) -> None:
        self.installed = installed
        self.wanted = wanted
        hint = _conflict_hint or ("call otel_alloc.uninstall() first, or ask for mode "
                                  "{installed!r}")
        super().__init__(
            f"mode conflict: otel_alloc is installed in mode {installed!r} and mode "
            f"{wanted!r} was asked for; " + hint.format(installed=installed, wanted=wanted))


# How to resolve a mode conflict, set by whoever installed the tracker for the
# program (the runner: "pass --mode"); {installed} and {wanted} are filled in.
_conflict_hint: str | None = None


def set_conflict_hint(template: str | None) -> None:
    """Say how to resolve a mode conflict (``{installed}``/``{wanted}`` filled in)."""
    global _conflict_hint
    _conflict_hint = template


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
