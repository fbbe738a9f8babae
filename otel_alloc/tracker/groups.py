"""Allocation groups: what the code running inside a group allocates.

The group charged for allocations is the one current in the running
``contextvars.Context``: the tracker's context variable
(``_binding.GROUP_VAR``), which the MEM/OBJ hooks read through
``PyContextVar_Get``. It therefore follows threads, asyncio tasks and
``Context.run`` exactly as other context variables do.

Its value is a group id, or a *binding*: a tuple ``(group id, payload)``
that code above the tracker keeps there (the OpenTelemetry runtime-context
stand-in keeps the current ``Context`` as the payload, so one variable
carries both). The hooks read the id either way; entering a group keeps the
payload.

Python code only ever *sets* the variable, never resets it:
``ContextVar.reset()`` of a first value deletes the variable, and CPython's
delete clears the variable's cache before allocating the new HAMT, so a
hook's read during that allocation would re-fill the cache with the value
being deleted (a reference the context then drops). A set writes the cache
after its allocation, which keeps the hook's view right. The one reset is
the tracker's own (``reset_group_var`` of its C API, used by the
OpenTelemetry runtime-context stand-in), during which the hooks do not read
the variable.
"""

from __future__ import annotations

from contextvars import ContextVar
from types import TracebackType

from otel_alloc.tracker import _binding
from otel_alloc.tracker.errors import TrackerError
from otel_alloc.tracker.stats import Stats

CURRENT_GROUP: ContextVar[int | tuple[int, object]] = _binding.GROUP_VAR
# The groups entered with ``with group:`` in the running context, innermost last.
_SCOPES: ContextVar[tuple[int | tuple[int, object], ...]] = ContextVar("otel_alloc.scopes",
                                                                      default=())
GROUP_NONE = _binding.GROUP_NONE
GROUP_OVERFLOW = _binding.GROUP_OVERFLOW


class Group:
    """An allocation group: what the code running inside it allocates.

    ``with group:`` makes it current in the running context (nestable; the
    innermost group is charged). Figures are read with :meth:`stats`. A
    closed group takes no new allocations, but frees of its blocks are still
    charged to it until it is released; its id is never confused with a later
    group's.

    When the group table is full the group is bound to the shared overflow
    group (``overflowed`` is True) and the drop is counted.
    """

    __slots__ = ("id",)

    def __init__(self) -> None:
        if _binding.mode() == _binding.MODE_NONE:
            raise TrackerError("otel_alloc is not installed; call otel_alloc.install() first")
        self.id: int = _binding.group_new()

    @property
    def overflowed(self) -> bool:
        """True when the group table was full and this is the overflow group."""
        return self.id == _binding.GROUP_OVERFLOW

    def __enter__(self) -> Group:
        enter_group(self.id)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        exit_group()

    def stats(self) -> Stats:
        """Current figures; an all-zero :class:`Stats` once released."""
        return _binding.group_stats(self.id) or Stats()

    def close(self) -> None:
        """Stop charging new allocations to this group."""
        _binding.group_close(self.id)

    def release(self) -> None:
        """Give the slot back; later frees of its blocks are no longer charged."""
        _binding.group_release(self.id)

    def __repr__(self) -> str:
        return f"Group(id={self.id:#x})"


def enter_group(gid: int) -> None:
    """Make group ``gid`` current in the running context (see :class:`Group`)."""
    value = CURRENT_GROUP.get()
    _SCOPES.set((*_SCOPES.get(), value))
    CURRENT_GROUP.set((gid, value[1]) if isinstance(value, tuple) else gid)
    _binding.set_thread_group(gid)


def exit_group() -> None:
    """Undo the innermost :func:`enter_group` of the running context."""
    scopes = _SCOPES.get()
    if not scopes:
        return
    _SCOPES.set(scopes[:-1])
    CURRENT_GROUP.set(scopes[-1])
    _binding.set_thread_group(group_of_value(scopes[-1]))


def group_of_value(value: int | tuple[int, object]) -> int:
    """The group id a value of :data:`CURRENT_GROUP` stands for (an id or a binding)."""
    return value[0] if isinstance(value, tuple) else value


def current_group_id() -> int:
    """Id of the group current in the running context (0: none)."""
    return group_of_value(CURRENT_GROUP.get())


def group_stats(gid: int) -> Stats | None:
    """Figures of group ``gid``; ``None`` when the id is released or unknown."""
    return _binding.group_stats(gid)


def unattributed_stats() -> Stats:
    """Allocations made with no group current (or under a closed group)."""
    return _binding.group_stats(_binding.GROUP_NONE) or Stats()


def overflow_stats() -> Stats:
    """Allocations charged to the overflow group."""
    return _binding.group_stats(_binding.GROUP_OVERFLOW) or Stats()


def new_group_id() -> int:
    """Open a group and return its id (the overflow group's when the table is full)."""
    return _binding.group_new()


def finish_group(gid: int, *, release: bool) -> Stats | None:
    """Close group ``gid``, read it, and release it when asked; ``None`` when stale."""
    return _binding.group_finish(gid, release)


def release_group(gid: int) -> None:
    """Give group ``gid``'s slot back (see :meth:`Group.release`)."""
    _binding.group_release(gid)
