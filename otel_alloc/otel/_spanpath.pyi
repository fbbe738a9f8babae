from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import Any

from opentelemetry.context import Context

class ContextFollower:
    def __init__(
        self,
        inner: object,
        context_var: ContextVar[Context] | None,
        span_key: str | None,
        span_getter: Callable[[Context], object],
        groups: dict[object, int],
        group_var: ContextVar[int | tuple[int, object]],
    ) -> None: ...
    @property
    def inner(self) -> object: ...
    @property
    def errors(self) -> int: ...
    def attach(self, context: Context) -> Token[Context]: ...
    def detach(self, token: Any) -> None: ...
    def get_current(self) -> Context: ...
    def follow_current(self) -> None: ...

def group_new() -> int: ...
def configure(
    readable_span_type: type,
    bounded_attributes_type: type,
    span_type: type = ...,
    span_context_type: type = ...,
    sdk_span_type: type = ...,
) -> None: ...

class SpanRecords:
    def __init__(self, capacity: int, recent: int = ...) -> None: ...
    def __len__(self) -> int: ...
    @property
    def dropped(self) -> int: ...
    @property
    def capacity(self) -> int: ...
    @property
    def wake_at(self) -> int: ...
    @property
    def recent(self) -> int: ...
    def take(
        self, max_records: int, full: bool = ..., threshold: int = ..., rate: float = ...
    ) -> tuple[
        list[tuple[str, int, int, int, int, dict[int, int], int]],
        list[tuple[str, int, int, int, int, int, int, int, int, int, int, int | None]],
    ]: ...
    def lookup(self, group_id: int) -> tuple[str, int, int] | None: ...
    def clear(self) -> None: ...

class SpanPath:
    def __init__(
        self,
        groups: dict[Any, int],
        holders: dict[Any, int],
        open: dict[int, Any],
        by_gid: dict[int, Any],
        records: SpanRecords,
        next_on_start: Callable[..., Any] | None,
        next_on_ending: Callable[..., Any] | None,
        next_on_end: Callable[..., Any] | None,
        live: int,
        overflowed: Callable[[], int],
        failed: Callable[[str, BaseException | None], None],
        wake: Callable[[], None],
        live_end: Callable[[Any, Any, int, Any], None],
        with_figures: Callable[[Any, Any, bool], Any],
        note_thread: Callable[[], None] | None,
        keep_from: int = ...,
        attributes: bool = ...,
    ) -> None: ...
    shutdown: bool
    overflow_open: int
    @property
    def attributes_dropped(self) -> int: ...
    @property
    def attributes_unwritable(self) -> int: ...
    def on_start(self, span: Any, parent_context: Any = None) -> None: ...
    def on_ending(self, span: Any) -> None: ...
    def on_end(self, span: Any) -> None: ...
