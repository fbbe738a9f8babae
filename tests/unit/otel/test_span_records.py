"""The ended-span queue (``_spanpath.SpanRecords``): order, many names, a take within a take."""

from __future__ import annotations

from typing import Any, ClassVar

import otel_alloc
from otel_alloc.otel import _spanpath
from tests.unit.otel.test_span_path import _bare_path, _Direct, _tracer


def _names(whole: list[tuple[Any, ...]]) -> list[str]:
    return [str(record[0]) for record in whole]


def test_order_holds_across_partial_takes_wraps_and_drains() -> None:
    """A take leaves the rest in order; a drained queue starts over at the
    ring's beginning, which must not reorder or lose what comes next."""
    otel_alloc.install("counts")
    try:
        records = _spanpath.SpanRecords(5)
        tracer = _tracer(_Direct(_bare_path(records, {}, [])))
        made = 0

        def end_spans(n: int) -> None:
            nonlocal made
            for _ in range(n):
                with tracer.start_as_current_span(f"s{made}"):
                    pass
                made += 1

        end_spans(3)
        assert _names(records.take(2, True)[1]) == ["s0", "s1"]
        end_spans(4)  # past the ring's end: s5 and s6 wrap to its start
        assert len(records) == 5
        assert _names(records.take(3, True)[1]) == ["s2", "s3", "s4"]
        assert _names(records.take(100, True)[1]) == ["s5", "s6"]
        for _ in range(3):  # drained each time, then filled to capacity
            first = made
            end_spans(5)
            assert _names(records.take(100, True)[1]) == [f"s{i}" for i in range(first, made)]
        end_spans(6)
        assert records.dropped == 1
        assert _names(records.take(100, True)[1]) == [f"s{i}" for i in range(made - 6, made - 1)]
        assert len(records) == 0
    finally:
        otel_alloc.uninstall()


def test_a_batch_of_many_names_sums_each_name() -> None:
    """More names in one batch than the sums start with room for (16)."""
    otel_alloc.install("counts")
    try:
        records = _spanpath.SpanRecords(1000)
        tracer = _tracer(_Direct(_bare_path(records, {}, [])))
        names = [f"n{i}" for i in range(40)]
        for _ in range(3):
            for name in names:
                with tracer.start_as_current_span(name):
                    pass
        sums, whole = records.take(1000, True)
        assert [s[0] for s in sums] == names  # first seen first
        for name, total, count, _trace, _span, sizes, _native in sums:
            mine = [r for r in whole if r[0] == name]
            assert len(mine) == 3 and len(sizes) == 3
            assert total == sum(r[4] for r in mine) and count == sum(r[5] for r in mine)
            assert sorted(sizes) == sorted(r[4] for r in mine)
    finally:
        otel_alloc.uninstall()


class _TakesOnHash(str):
    """A span name whose hash takes the queue's remaining records, as a
    finalizer or another thread could while a take makes Python objects."""

    records: ClassVar[Any] = None
    taken: ClassVar[list[Any]] = []

    def __hash__(self) -> int:
        if self.records is not None and len(self.records):
            self.taken.append(self.records.take(100, True))
        return str.__hash__(self)


def test_a_take_that_runs_while_another_is_making_its_objects() -> None:
    """The inner take cannot use the batch the outer one is still reading."""
    otel_alloc.install("counts")
    try:
        records = _spanpath.SpanRecords(10)
        tracer = _tracer(_Direct(_bare_path(records, {}, [])))
        first = _TakesOnHash("first")
        for name in (first, "second", "third", "fourth"):
            with tracer.start_as_current_span(name):
                pass
        _TakesOnHash.records = records
        _TakesOnHash.taken = []
        try:
            sums, whole = records.take(2, True)
        finally:
            _TakesOnHash.records = None
        assert _names(whole) == ["first", "second"]
        assert [s[0] for s in sums] == ["first", "second"]
        assert len(_TakesOnHash.taken) == 1
        inner_sums, inner_whole = _TakesOnHash.taken[0]
        assert _names(inner_whole) == ["third", "fourth"]
        assert [s[0] for s in inner_sums] == ["third", "fourth"]
        assert len(records) == 0
        # The kept batch is free again: the next take uses it.
        with tracer.start_as_current_span("fifth"):
            pass
        assert _names(records.take(10, True)[1]) == ["fifth"]
    finally:
        otel_alloc.uninstall()
