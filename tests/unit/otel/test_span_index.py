"""SpanIndex: the span path's C table of open spans (span -> group id, group id -> span)."""

from __future__ import annotations

import gc
import random
import weakref
from typing import Any

import pytest

from otel_alloc.otel import _spanpath
from otel_alloc.otel._spanpath import SpanIndex
from tests.unit.otel.span_path_helpers import bare_span_path


class Key:
    """Every Key equals every other and hashes alike: only identity tells them apart."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Key)

    def __hash__(self) -> int:
        return 7


def test_int_index_behaves_as_a_mapping() -> None:
    index = SpanIndex()
    assert not index.by_identity and len(index) == 0
    span = object()
    index[5] = span
    index[2**64 - 1] = "top"
    assert len(index) == 2 and 5 in index and index[5] is span
    assert index.get(5) is span and index.get(6) is None and index.get(6, "d") == "d"
    assert sorted(index.keys()) == [5, 2**64 - 1]
    assert sorted(index.items(), key=lambda kv: kv[0]) == [(5, span), (2**64 - 1, "top")]
    assert sorted(iter(index)) == [5, 2**64 - 1]
    index[5] = "again"  # replaces
    assert len(index) == 2 and index[5] == "again"
    # Keys no entry can have are absent, not errors, except where a key is stored.
    for absent in (-1, 2**64, "5", 5.0, None):
        assert absent not in index and index.get(absent) is None
        assert index.pop(absent, "d") == "d"
    with pytest.raises(TypeError, match="ints from 0 to 2\\*\\*64-1"):
        index["5"] = 1
    with pytest.raises(KeyError):
        index[6]
    with pytest.raises(KeyError):
        index.pop(6)
    with pytest.raises(KeyError):
        del index[6]
    assert index.pop(5) == "again"
    del index[2**64 - 1]
    assert len(index) == 0 and index.items() == []
    index[1] = 1
    index.clear()
    assert len(index) == 0 and 1 not in index


def test_keeps_the_order_entries_were_made_in_as_a_dict_does() -> None:
    """The stale-span reclaim reads the oldest open span first and stops at a young one."""
    rng = random.Random(6)
    index, model = SpanIndex(), {}
    assert index.first() is None
    for step in range(4000):
        key = rng.randrange(2**64) if step % 3 else rng.choice([*model, 1])
        if key in model and step % 2:
            assert index.pop(key) is model.pop(key)
        else:
            model[key] = object()  # a replaced key keeps its place in both
            index[key] = model[key]
        if step % 97 == 0:
            assert index.items() == list(model.items())
            assert index.keys() == list(model) and index.values() == list(model.values())
            assert index.first() is next(iter(model.values()), None)
    assert list(index) == list(model)


def test_identity_index_tells_equal_objects_apart_and_takes_unhashable_ones() -> None:
    index = SpanIndex(by_identity=True)
    a, b = Key(), Key()
    unhashable: list[int] = []
    index[a] = 1
    index[b] = 2
    index[unhashable] = 3
    assert (index[a], index[b], index[unhashable]) == (1, 2, 3)
    assert Key() not in index and [] not in index
    assert index.pop(a) == 1 and b in index and a not in index


def test_matches_a_dict_through_growth_churn_and_shrinking() -> None:
    """Random sets and pops against a dict, over many sizes: deletion closes gaps right.

    Keys are group-id shaped (a generation over the slot bits) and crowd few
    slots, so runs of probes wrap around the table's end; the table grows to
    thousands of entries and shrinks back.
    """
    rng = random.Random(18)
    index, model = SpanIndex(), {}
    keys = [(gen << 20) | slot for gen in range(1, 40) for slot in range(2, 300)]
    for phase_size in (50, 6000, 10, 3000, 0):
        while len(model) != phase_size:
            key = rng.choice(keys)
            if len(model) < phase_size:
                model[key] = object()
                index[key] = model[key]
            elif key in model:
                assert index.pop(key) is model.pop(key)
            elif model:
                victim = rng.choice(list(model))
                assert index.pop(victim) is model.pop(victim)
            assert len(index) == len(model)
        assert dict(index.items()) == model
        for key in rng.sample(keys, 500):
            assert index.get(key) is model.get(key)


def test_entries_hold_their_objects_until_removed() -> None:
    class Span:
        pass

    index = SpanIndex(by_identity=True)
    span = Span()
    gone = weakref.ref(span)
    index[span] = 7
    del span
    gc.collect()
    assert gone() is not None
    assert index.pop(gone()) == 7
    assert gone() is None
    # A cycle through an index is collected.
    holder = Span()
    cyclic = SpanIndex()
    cyclic[1] = holder
    holder.index = cyclic  # type: ignore[attr-defined]
    collected = weakref.ref(holder)
    del holder, cyclic
    gc.collect()
    assert collected() is None


def test_span_path_and_follower_take_only_the_right_kind_of_index() -> None:
    records = _spanpath.SpanRecords(1)
    with pytest.raises(TypeError):
        bare_span_path(records, {}, [])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="by_identity=True"):
        bare_span_path(records, SpanIndex(), [])
    kwargs: dict[str, Any] = dict(groups=SpanIndex(by_identity=True), holders={},
                                  open=SpanIndex(), by_gid=SpanIndex(by_identity=True),
                                  records=records,
                                  next_on_start=None, next_on_ending=None, next_on_end=None,
                                  live=0, overflowed=lambda: -1, failed=lambda *a: None,
                                  wake=lambda: None, live_end=lambda *a: None,
                                  with_figures=lambda *a: None, note_thread=None)
    with pytest.raises(TypeError, match="by_gid=SpanIndex"):
        _spanpath.SpanPath(**kwargs)
    kwargs.update(by_gid=SpanIndex(), open=SpanIndex(by_identity=True))
    with pytest.raises(TypeError, match="open=SpanIndex"):
        _spanpath.SpanPath(**kwargs)
    kwargs.update(open={})
    with pytest.raises(TypeError):
        _spanpath.SpanPath(**kwargs)
