"""Many span sizes into the SDK's size histogram at once, with the same result.

``Histogram.record`` of the OpenTelemetry SDK costs about as much as the SDK
spends on a whole span (a ``Measurement``, attribute cleaning and hashing,
the exemplar filter, a lock per reader and view), so recording every ended
span's size that way was most of what the processor added to a span.

:class:`SizeRecorder` records the first size of a batch through
``Histogram.record`` (so the SDK creates the aggregation, applies its
enabled check and offers the exemplar, with the span's context, exactly as
before) and adds the rest straight into each matching explicit-bucket
histogram aggregation: bucket counts, sum, min and max, under the
aggregation's own lock. Those are the only fields ``aggregate`` touches for a
measurement no exemplar reservoir is offered, so the exported data points are
identical to recording every size; a collection sees all of the batch or
none of it.

Anything this module cannot vouch for goes through ``Histogram.record`` one
size at a time, as before: a non-SDK or proxy instrument, an SDK whose
internals differ from the ones checked here, an exemplar filter that would
offer the remaining sizes to a reservoir (``always_on``, or a custom one), and,
per view, any aggregation other than the explicit-bucket histogram.
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections.abc import Mapping
from time import time_ns
from typing import Any

from opentelemetry.context import Context, get_current
from opentelemetry.metrics import Histogram

_log = logging.getLogger(__name__)

try:  # the SDK internals the bulk path relies on (checked again per instance)
    from opentelemetry.sdk.metrics._internal import _view_instrument_match as _vim_module
    from opentelemetry.sdk.metrics._internal.aggregation import (
        _ExplicitBucketHistogramAggregation,
    )
    from opentelemetry.sdk.metrics._internal.exemplar import (
        AlwaysOffExemplarFilter,
        TraceBasedExemplarFilter,
    )
    from opentelemetry.sdk.metrics._internal.instrument import _Histogram
    from opentelemetry.sdk.metrics._internal.measurement import Measurement
    from opentelemetry.sdk.metrics._internal.measurement_consumer import (
        SynchronousMeasurementConsumer,
    )
    from opentelemetry.sdk.metrics._internal.metric_reader_storage import MetricReaderStorage

    _hash_attributes = _vim_module._hash_attributes
    _VIM = _vim_module._ViewInstrumentMatch
    SUPPORTED = all((
        hasattr(MetricReaderStorage, "_get_or_init_view_instrument_match"),
        hasattr(_VIM, "_get_or_create_aggregation"),
        hasattr(_ExplicitBucketHistogramAggregation, "_get_empty_bucket_counts"),
    ))
except (ImportError, AttributeError):  # pragma: no cover - other SDK versions
    SUPPORTED = False

# Instance attributes read or written, checked before anything is changed.
_CONSUMER_FIELDS = ("_reader_storages", "_sdk_config")
_VIM_FIELDS = ("_view", "_lock", "_attributes_aggregation", "_reset_on_collect")
_AGG_FIELDS = ("_lock", "_value", "_sum", "_min", "_max", "_boundaries", "_record_min_max")


class SizeRecorder:
    """Records batches of sizes on one histogram, as ``record`` per size would.

    Args:
        histogram: The instrument (any ``Histogram``; only the SDK's own gets
            the bulk path).
    """

    def __init__(self, histogram: Histogram) -> None:
        self._histogram = histogram
        self.bulk_batches = 0  # batches that took the bulk path (tests, diagnostics)

    def record(self, sizes: Mapping[int, int], attributes: Mapping[str, str],
               context: Context | None) -> None:
        """Record every counted size with ``attributes``.

        Args:
            sizes: How many spans had each size (``{size: spans}``). The
                first key's size is recorded once with ``context`` (its
                exemplar's span), every other span with the calling thread's
                context, as a loop of ``Histogram.record`` calls would.
            attributes: The data point's attributes.
            context: The context of the span the first size belongs to.
        """
        if not sizes:
            return
        record = self._histogram.record
        first = next(iter(sizes))
        record(first, attributes, context=context)
        rest = dict(sizes)
        if rest[first] > 1:
            rest[first] -= 1
        else:
            del rest[first]
        if not rest:
            return
        targets = self._bulk_targets(next(iter(rest)), attributes)
        if targets is None:
            for size, spans in rest.items():
                for _ in range(spans):
                    record(size, attributes)
            return
        self.bulk_batches += 1
        total = sum(size * spans for size, spans in rest.items())
        low, high = min(rest), max(rest)
        for target in targets:
            _add(target, rest, total, low, high)

    def _bulk_targets(self, size: int, attributes: Mapping[str, str]) -> list[Any] | None:
        """Each view's aggregation for ``attributes``, or None to record one by one.

        Every view must aggregate into an explicit-bucket histogram: any
        other aggregation (a view may change it) takes the one-by-one path.
        """
        instrument = self._histogram
        if not SUPPORTED or type(instrument) is not _Histogram:
            return None
        is_enabled = getattr(instrument, "_is_enabled", None)
        if is_enabled is not None and not is_enabled():
            return []  # disabled: record() does nothing with any size
        consumer = getattr(instrument, "_measurement_consumer", None)
        if (type(consumer) is not SynchronousMeasurementConsumer
                or not all(hasattr(consumer, f) for f in _CONSUMER_FIELDS)):
            return None
        measurement = Measurement(size, time_ns(), instrument, get_current(), attributes)
        exemplar_filter = consumer._sdk_config.exemplar_filter
        if type(exemplar_filter) not in (AlwaysOffExemplarFilter, TraceBasedExemplarFilter):
            return None  # a custom filter may depend on the value
        if exemplar_filter.should_sample(size, measurement.time_unix_nano,
                                         measurement.attributes, measurement.context):
            return None  # each size would be offered to the exemplar reservoir
        targets: list[Any] = []
        for storage in list(consumer._reader_storages.values()):
            for vim in storage._get_or_init_view_instrument_match(instrument):
                target = _aggregation_of(vim, measurement)
                if target is None:
                    return None
                targets.append(target)
        return targets


def _aggregation_of(vim: Any, measurement: Any) -> Any:
    """The view's aggregation for the measurement's attributes, found as the SDK finds it.

    None when the view does not aggregate into an explicit-bucket histogram.
    """
    if not all(hasattr(vim, f) for f in _VIM_FIELDS):
        return None
    attributes = dict(measurement.attributes) if measurement.attributes else {}
    keys = vim._view._attribute_keys
    if keys is not None:
        attributes = {k: v for k, v in attributes.items() if k in keys}
    key = _hash_attributes(attributes)
    with vim._lock:
        aggregation = vim._get_or_create_aggregation(key, attributes)
    if (type(aggregation) is not _ExplicitBucketHistogramAggregation
            or not all(hasattr(aggregation, f) for f in _AGG_FIELDS)):
        return None
    if vim._reset_on_collect:
        # A collection drops this view's aggregations: find the aggregation
        # again and add while holding the view's lock, as consume_measurement
        # does, so the batch cannot land in one already collected.
        return _Locked(vim, key, attributes)
    return aggregation


class _Locked:
    """A view whose aggregation is looked up and updated under the view's lock."""

    __slots__ = ("attributes", "key", "vim")

    def __init__(self, vim: Any, key: Any, attributes: dict[str, Any]) -> None:
        self.vim = vim
        self.key = key
        self.attributes = attributes


def _add(target: Any, counts: Mapping[int, int], total: int, low: int, high: int) -> None:
    """What ``aggregate`` does for each counted size, done once for them all."""
    if isinstance(target, _Locked):
        with target.vim._lock:
            _add(target.vim._get_or_create_aggregation(target.key, target.attributes),
                 counts, total, low, high)
        return
    with target._lock:
        if target._value is None:
            target._value = target._get_empty_bucket_counts()
        target._sum += total
        if target._record_min_max:
            target._min = min(target._min, low)
            target._max = max(target._max, high)
        value, boundaries = target._value, target._boundaries
        for size, n in counts.items():
            value[bisect_left(boundaries, size)] += n
