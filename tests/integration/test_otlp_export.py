"""End to end over OTLP: what a real receiver decodes from the documented setup.

The app wraps a ``BatchSpanProcessor`` with ``AllocationSpanProcessor`` and exports
all three signals with the real OTLP exporters (http/protobuf and gRPC) to
:class:`~tests.support.otlp_receiver.OTLPReceiver`. Spans allocate known amounts;
the tests check the decoded span attributes, metrics (names, units, kinds,
``span.name`` points, exemplars) and events (log records with ``event_name`` and
the trace context of the span they refer to).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality

import otel_alloc
from tests.integration.conftest import (
    TRANSPORTS,
    Pipeline,
    all_points,
    exemplars_for,
    latest_by,
    points,
    span_ids,
    value,
)
from tests.support.otlp_receiver import (
    OTLPReceiver,
    ReceivedLogRecord,
    ReceivedMetric,
    ReceivedSpan,
    attributes,
)

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30
# Work the tracing SDK does while a span is current is charged to it too.
SLACK = 64 * KIB
ALLOC_KEYS = {"alloc.bytes", "alloc.count", "alloc.inclusive_bytes", "alloc.live_bytes",
              "alloc.peak_bytes"}
# Expected self bytes per span (lower bound; the span machinery adds < SLACK).
SIZES = {
    "small": 10_000,
    "big": 2 * MIB,
    "single5m": 5 * MIB,
    "over8m": 9 * MIB,
    "leaky": 1 * MIB,
    "parent": 100_000,
    "child": 300_000,
    "holder": 1 * MIB,
}
NAMES = tuple(SIZES)
# Spans that do more than their allocation: "parent" pays for starting and
# ending its child, "holder" polls the receiver while it is open.
EXTRA = {"parent": 256 * KIB, "holder": 1 << 40}

# What the "leaky" span keeps alive past its end.
LEAKED: list[bytearray] = []


@dataclass
class Exported:
    """Everything the receiver decoded for one run of the scenario."""

    transport: str
    all_spans: list[ReceivedSpan]
    metrics: list[ReceivedMetric]
    logs: list[ReceivedLogRecord]

    @property
    def spans(self) -> dict[str, ReceivedSpan]:
        return {s.span.name: s for s in self.all_spans}

    def attrs(self, name: str) -> dict[str, Any]:
        return attributes(self.spans[name].span.attributes)

    def events(self, event_name: str) -> list[tuple[ReceivedLogRecord, dict[str, Any]]]:
        return [(r, attributes(r.log_record.attributes)) for r in self.logs
                if r.log_record.event_name == event_name]


def _drive(pipe: Pipeline) -> None:
    tracer, rx = pipe.tracer, pipe.rx
    with tracer.start_as_current_span("small"):
        data = bytearray(10_000)
        del data
    with tracer.start_as_current_span("big"):
        data = bytearray(2 * MIB)
        del data
    with tracer.start_as_current_span("single5m"):  # one allocation over threshold_bytes
        data = bytearray(5 * MIB)
        del data
    with tracer.start_as_current_span("over8m"):  # 9 MiB in 1 MiB pieces: only the span total
        for _ in range(9):
            data = bytearray(MIB)
            del data
    with tracer.start_as_current_span("leaky"):
        LEAKED.append(bytearray(MIB))
    with tracer.start_as_current_span("parent"):
        data = bytearray(100_000)
        del data
        with tracer.start_as_current_span("child"):
            data = bytearray(300_000)
            del data
    with tracer.start_as_current_span("holder"):
        # Live bytes of an open span are observed by python.alloc.live: wait for
        # a periodic export to see them while the span still holds its block.
        keep = bytearray(MIB)
        rx.wait_for(lambda: _live(rx.metrics(), "holder") >= MIB, timeout=20)
        del keep


def _live(metrics: list[ReceivedMetric], span_name: str) -> float:
    point = latest_by(metrics, "python.alloc.live").get(span_name)
    return 0.0 if point is None else value(point)


def _complete(rx: OTLPReceiver) -> bool:
    """All spans, events and final metric points have arrived."""
    if not set(NAMES) <= {s.span.name for s in rx.spans()}:
        return False
    logs = [(r.log_record.event_name, attributes(r.log_record.attributes).get("span.name"))
            for r in rx.log_records()]
    # The single-allocation event is left to its own test: it was emitted
    # before the leak event, which comes last (after the grace period).
    wanted = {("alloc.leak_suspected", "leaky"), ("alloc.threshold_exceeded", "over8m"),
              *(("alloc.span_summary", n) for n in NAMES)}
    if not wanted <= set(logs):
        return False
    metrics = rx.metrics()
    counted = latest_by(metrics, "python.alloc.events", "event.name", "span.name")
    return (("alloc.leak_suspected", "leaky") in counted
            and set(NAMES) <= set(latest_by(metrics, "python.alloc.allocated")))


@pytest.fixture(scope="module", params=TRANSPORTS)
def exported(request: pytest.FixtureRequest) -> Iterator[Exported]:
    """Run the scenario once per transport; the tracker is uninstalled before the tests."""
    LEAKED.clear()
    try:
        with OTLPReceiver(request.param) as rx:
            pipe = Pipeline(
                rx, timeout=2.0, metric_interval_ms=200, batch_delay_ms=100,
                mode="live", threshold_bytes="4MiB", span_threshold_bytes="8MiB",
                leak_grace_seconds=0.3, leak_min_bytes="512KiB", span_summary_events=True)
            try:
                _drive(pipe)
                rx.wait_for(lambda: _complete(rx), timeout=30)
                pipe.flush()
            finally:
                pipe.shutdown()
            result = Exported(request.param, rx.spans(), rx.metrics(), rx.log_records())
    finally:
        otel_alloc.uninstall()
        LEAKED.clear()
    yield result


# -- spans ---------------------------------------------------------------------------


def test_spans_carry_alloc_attributes(exported: Exported) -> None:
    names = [s.span.name for s in exported.all_spans]
    assert sorted(names) == sorted(NAMES)
    for name, size in SIZES.items():
        attrs = exported.attrs(name)
        assert set(attrs) >= ALLOC_KEYS, (name, attrs)
        assert all(isinstance(attrs[k], int) for k in ALLOC_KEYS)
        assert size <= attrs["alloc.bytes"] < size + EXTRA.get(name, SLACK), (name, attrs)
        assert 1 <= attrs["alloc.count"] < (100 if name not in EXTRA else 1 << 40), name
        assert attrs["alloc.peak_bytes"] <= attrs["alloc.bytes"]
        if name != "parent":
            assert attrs["alloc.inclusive_bytes"] == attrs["alloc.bytes"], (name, attrs)
        if name != "leaky":  # everything else freed its data inside the span
            assert 0 <= attrs["alloc.live_bytes"] < SLACK, (name, attrs)
    big, small = exported.attrs("big"), exported.attrs("small")
    assert big["alloc.bytes"] > small["alloc.bytes"]
    assert big["alloc.peak_bytes"] >= 2 * MIB
    assert exported.attrs("single5m")["alloc.peak_bytes"] >= 5 * MIB
    # 1 MiB pieces freed one by one: the peak is one piece, not the total.
    assert MIB <= exported.attrs("over8m")["alloc.peak_bytes"] < MIB + SLACK
    leaky = exported.attrs("leaky")
    assert MIB <= leaky["alloc.live_bytes"] <= leaky["alloc.bytes"]
    assert leaky["alloc.live_bytes"] < MIB + SLACK


def test_inclusive_bytes_add_the_child(exported: Exported) -> None:
    parent, child = exported.attrs("parent"), exported.attrs("child")
    assert parent["alloc.inclusive_bytes"] == parent["alloc.bytes"] + child["alloc.bytes"]
    spans = exported.spans
    assert spans["child"].span.parent_span_id == spans["parent"].span.span_id


# -- metrics -------------------------------------------------------------------------


def _metric(exported: Exported, name: str) -> ReceivedMetric:
    found = [m for m in exported.metrics if m.metric.name == name]
    assert found, f"{name} not exported; got {sorted({m.metric.name for m in exported.metrics})}"
    return found[-1]


def test_metric_names_units_and_kinds(exported: Exported) -> None:
    cumulative = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
    expected = {
        "python.alloc.allocated": ("By", "sum", True),
        "python.alloc.allocations": ("{allocation}", "sum", True),
        "python.alloc.span.size": ("By", "histogram", None),
        "python.alloc.live": ("By", "sum", False),
        "python.alloc.peak": ("By", "gauge", None),
        "python.alloc.events": ("{event}", "sum", True),
        "python.alloc.events.dropped": ("{event}", "sum", True),
    }
    for name, (unit, kind, monotonic) in expected.items():
        received = _metric(exported, name)
        metric = received.metric
        assert received.scope.name == "otel_alloc", name
        assert metric.unit == unit, (name, metric.unit)
        assert metric.WhichOneof("data") == kind, (name, metric.WhichOneof("data"))
        if kind == "sum":
            assert metric.sum.is_monotonic is monotonic, name
            assert metric.sum.aggregation_temporality == cumulative, name
    bounds = list(points(_metric(exported, "python.alloc.span.size").metric)[0].explicit_bounds)
    assert bounds[0] == 256
    assert bounds[-1] >= GIB
    assert bounds == sorted(set(bounds))


def test_metric_points_by_span_name(exported: Exported) -> None:
    allocated = latest_by(exported.metrics, "python.alloc.allocated")
    allocations = latest_by(exported.metrics, "python.alloc.allocations")
    sizes = latest_by(exported.metrics, "python.alloc.span.size")
    assert set(allocated) == set(allocations) == set(sizes) == set(NAMES)
    for name in NAMES:
        attrs = exported.attrs(name)
        assert value(allocated[name]) == attrs["alloc.bytes"], name
        assert value(allocations[name]) == attrs["alloc.count"], name
        hist = sizes[name]
        assert hist.count == 1 and hist.sum == attrs["alloc.bytes"], name
        bucket = bisect.bisect_left(list(hist.explicit_bounds), attrs["alloc.bytes"])
        assert hist.bucket_counts[bucket] == 1, (name, list(hist.bucket_counts))
    assert value(allocated["big"]) > value(allocated["small"])
    for name in ("python.alloc.allocated", "python.alloc.allocations", "python.alloc.span.size"):
        for point in all_points(exported.metrics, name):
            assert set(attributes(point.attributes)) == {"span.name"}, name


def test_live_and_peak_gauges(exported: Exported) -> None:
    live = latest_by(exported.metrics, "python.alloc.live")
    # Every observation carries a span name; the open "holder" span held 1 MiB.
    assert None not in live
    holder = max(value(p) for p in all_points(exported.metrics, "python.alloc.live")
                 if attributes(p.attributes) == {"span.name": "holder"})
    assert MIB <= holder < MIB + SLACK
    (peak,) = points(_metric(exported, "python.alloc.peak").metric)
    assert value(peak) >= 5 * MIB


def test_event_counters(exported: Exported) -> None:
    counted = {k: value(p) for k, p in
               latest_by(exported.metrics, "python.alloc.events", "event.name",
                         "span.name").items()}
    assert counted[("alloc.threshold_exceeded", "single5m")] == 1
    assert counted[("alloc.threshold_exceeded", "over8m")] == 1
    assert counted[("alloc.leak_suspected", "leaky")] == 1
    for name in NAMES:
        assert counted[("alloc.span_summary", name)] == 1, name
    assert not [k for k in counted if k[0] == "alloc.leak_suspected" and k[1] != "leaky"]
    (dropped,) = points(_metric(exported, "python.alloc.events.dropped").metric)
    assert value(dropped) == 0


def test_exemplars_point_at_exported_spans(exported: Exported) -> None:
    for metric in ("python.alloc.allocated", "python.alloc.allocations",
                   "python.alloc.span.size"):
        for name in NAMES:
            exemplars = exemplars_for(exported.metrics, metric, name)
            assert exemplars, (metric, name)
            ids = span_ids(exported.all_spans, name)
            for exemplar in exemplars:
                assert (exemplar.trace_id, exemplar.span_id) in ids, (metric, name)
    for exemplar in exemplars_for(exported.metrics, "python.alloc.allocated", "big"):
        assert exemplar.as_int == exported.attrs("big")["alloc.bytes"]
    leak = [e for p in all_points(exported.metrics, "python.alloc.events")
            if attributes(p.attributes) == {"event.name": "alloc.leak_suspected",
                                            "span.name": "leaky"}
            for e in p.exemplars]
    assert leak
    assert {(e.trace_id, e.span_id) for e in leak} <= span_ids(exported.all_spans, "leaky")


# -- events --------------------------------------------------------------------------


def _assert_linked(exported: Exported, record: ReceivedLogRecord, span_name: str) -> None:
    span = exported.spans[span_name].span
    log = record.log_record
    assert (log.trace_id, log.span_id) == (span.trace_id, span.span_id), span_name
    assert attributes(log.attributes)["span.name"] == span_name


def test_single_allocation_threshold_event(exported: Exported) -> None:
    every = [a for _, a in exported.events("alloc.threshold_exceeded")
             if a.get("alloc.kind") == "allocation"]
    allocation = [(r, a) for r, a in exported.events("alloc.threshold_exceeded")
                  if a.get("alloc.kind") == "allocation" and a.get("span.name") in NAMES]
    assert len(allocation) == 1, f"linked: {allocation}; all allocation events: {every}"
    record, attrs = allocation[0]
    _assert_linked(exported, record, "single5m")
    assert 5 * MIB <= attrs["alloc.size"] < 5 * MIB + 1024
    assert attrs["alloc.domain"] in ("raw", "mem", "obj")


def test_span_threshold_event(exported: Exported) -> None:
    per_span = [(r, a) for r, a in exported.events("alloc.threshold_exceeded")
                if a.get("alloc.kind") == "span"]
    assert len(per_span) == 1, per_span
    record, attrs = per_span[0]
    _assert_linked(exported, record, "over8m")
    assert attrs["alloc.bytes"] == exported.attrs("over8m")["alloc.bytes"]
    assert attrs["alloc.threshold_bytes"] == 8 * MIB


def test_leak_suspected_event(exported: Exported) -> None:
    leaks = exported.events("alloc.leak_suspected")
    assert [a["span.name"] for _, a in leaks] == ["leaky"]
    record, attrs = leaks[0]
    _assert_linked(exported, record, "leaky")
    span_live = exported.attrs("leaky")["alloc.live_bytes"]
    assert MIB <= attrs["alloc.live_bytes"] < MIB + SLACK
    assert abs(attrs["alloc.live_bytes"] - span_live) < SLACK
    assert attrs["alloc.grace_seconds"] == pytest.approx(0.3)


def test_span_summary_events(exported: Exported) -> None:
    summaries = exported.events("alloc.span_summary")
    assert sorted(a["span.name"] for _, a in summaries) == sorted(NAMES)
    for record, attrs in summaries:
        name = attrs["span.name"]
        _assert_linked(exported, record, name)
        expected = {k: v for k, v in exported.attrs(name).items() if k.startswith("alloc.")}
        assert {k: v for k, v in attrs.items() if k != "span.name"} == expected, name


def test_every_event_is_linked_to_its_span(exported: Exported) -> None:
    linked = 0
    for record in exported.logs:
        log = record.log_record
        assert log.event_name.startswith("alloc."), log.event_name
        name = attributes(log.attributes).get("span.name")
        if name in NAMES:
            _assert_linked(exported, record, name)
            linked += 1
    assert linked == len(NAMES) + 3  # summaries, two thresholds, one leak


# -- cardinality cap and dropped events -------------------------------------------------


@pytest.mark.usefixtures("uninstall_after")
def test_span_name_cap_overflows_to_other(receiver: OTLPReceiver) -> None:
    pipe = Pipeline(receiver, mode="counts", max_span_names=3)
    try:
        for i in range(6):
            with pipe.tracer.start_as_current_span(f"route-{i}"):
                data = bytearray((i + 1) * 100_000)
                del data
        pipe.flush()

        def arrived() -> dict[Any, Any] | None:
            sizes = latest_by(receiver.metrics(), "python.alloc.span.size")
            other = sizes.get("_other")
            return sizes if other is not None and other.count == 3 else None

        sizes = receiver.wait_for(arrived, timeout=20)
        spans = receiver.wait_for(lambda: len(receiver.spans()) == 6 and receiver.spans())
    finally:
        pipe.shutdown()
    by_name = {s.span.name: attributes(s.span.attributes)["alloc.bytes"] for s in spans}
    assert set(by_name) == {f"route-{i}" for i in range(6)}  # spans keep their names
    assert set(sizes) == {"route-0", "route-1", "route-2", "_other"}
    allocated = latest_by(receiver.metrics(), "python.alloc.allocated")
    assert set(allocated) == set(sizes)
    assert value(allocated["_other"]) == sum(by_name[f"route-{i}"] for i in (3, 4, 5))
    for i in range(3):
        assert value(allocated[f"route-{i}"]) == by_name[f"route-{i}"]


@pytest.mark.usefixtures("uninstall_after")
def test_dropped_events_are_counted_on_the_wire(receiver: OTLPReceiver) -> None:
    otel_alloc.install("live", event_capacity=2)
    pipe = Pipeline(receiver, threshold_bytes="64KiB")
    bursts = 500
    try:
        with pipe.tracer.start_as_current_span("burst"):
            for _ in range(bursts):  # far faster than the watch thread drains 2 slots
                data = bytearray(64 * KIB)
                del data
        native_dropped = otel_alloc.counters().events_dropped
        assert native_dropped > 0
        pipe.flush()

        def dropped() -> float:
            found = latest_by(receiver.metrics(), "python.alloc.events.dropped", "span.name")
            return value(found[None]) if None in found else 0.0

        on_wire = receiver.wait_for(dropped, timeout=20)
        pipe.flush()
        emitted = latest_by(receiver.metrics(), "python.alloc.events", "event.name", "span.name")
    finally:
        pipe.shutdown()
    assert 0 < on_wire <= otel_alloc.counters().events_dropped
    # Every allocation over the threshold was either reported or counted as dropped.
    reported = value(emitted[("alloc.threshold_exceeded", "burst")])
    assert reported >= 1
    assert reported + value(dropped_final(receiver)) >= bursts
    events = [r for r in receiver.log_records()
              if r.log_record.event_name == "alloc.threshold_exceeded"
              and attributes(r.log_record.attributes).get("span.name") == "burst"]
    assert len(events) == reported
    burst_ids = span_ids(receiver.spans(), "burst")
    assert {(r.log_record.trace_id, r.log_record.span_id) for r in events} <= burst_ids


def dropped_final(rx: OTLPReceiver) -> Any:
    """The last exported point of python.alloc.events.dropped."""
    return all_points(rx.metrics(), "python.alloc.events.dropped")[-1]


# -- estimate mode ---------------------------------------------------------------------


@pytest.mark.usefixtures("uninstall_after")
def test_estimate_mode_on_the_wire(receiver: OTLPReceiver) -> None:
    """Estimate mode's figures arrive under their own names, never live mode's."""
    pipe = Pipeline(receiver, mode="estimate", metric_interval_ms=200, leak_grace_seconds=0.3,
                    leak_min_bytes="1MiB")
    kept: list[bytearray] = []
    try:
        with pipe.tracer.start_as_current_span("keeps"):
            kept.extend(bytearray(900) for _ in range(8_000))  # about 7.3 MB kept
        with pipe.tracer.start_as_current_span("holder"):
            keep = [bytearray(900) for _ in range(4_000)]
            receiver.wait_for(lambda: "holder" in latest_by(
                receiver.metrics(), "python.alloc.live.estimate"), timeout=20)
            del keep
        pipe.flush()

        def leak() -> list[tuple[ReceivedLogRecord, dict[str, Any]]]:
            return [(r, attributes(r.log_record.attributes)) for r in receiver.log_records()
                    if r.log_record.event_name == "alloc.leak_suspected"]

        (record, leak_attrs), = receiver.wait_for(leak, timeout=20)
        spans = receiver.wait_for(lambda: len(receiver.spans()) == 2 and receiver.spans())
    finally:
        pipe.shutdown()
    attrs = {s.span.name: attributes(s.span.attributes) for s in spans}
    truth = 8_000 * (900 + 57)  # bytearray(900): its object and its buffer
    # About 90 KB is one standard deviation of this estimate at the 4 KiB mean.
    assert abs(attrs["keeps"]["alloc.live_bytes_estimate"] - truth) < 800_000, attrs["keeps"]
    for span_attrs in attrs.values():
        assert "alloc.live_bytes" not in span_attrs and "alloc.peak_bytes" not in span_attrs
    names = {m.metric.name for m in receiver.metrics()}
    assert "python.alloc.live.estimate" in names
    assert not names & {"python.alloc.live", "python.alloc.peak"}
    assert leak_attrs["span.name"] == "keeps" and "alloc.live_blocks" not in leak_attrs
    assert leak_attrs["alloc.live_bytes_estimate"] >= 1 << 20
    assert "estimated" in record.log_record.body.string_value


def test_chosen_span_attributes_on_the_wire(receiver: OTLPReceiver) -> None:
    """``span_attributes`` naming two: the decoded span carries exactly those,
    while the metrics and the summary event still carry every figure."""
    pipe = Pipeline(receiver, mode="live", span_attributes="alloc.bytes,live_bytes",
                    span_summary_events=True)
    kept: list[bytearray] = []
    try:
        with pipe.tracer.start_as_current_span("chosen"):
            kept.append(bytearray(300_000))
        pipe.flush()
        (span,) = receiver.wait_for(lambda: receiver.spans(), timeout=20)
        summary = receiver.wait_for(lambda: [
            attributes(r.log_record.attributes) for r in receiver.log_records()
            if r.log_record.event_name == "alloc.span_summary"], timeout=20)
        allocated = receiver.wait_for(lambda: latest_by(
            receiver.metrics(), "python.alloc.allocated").get("chosen"), timeout=20)
    finally:
        pipe.shutdown()
        otel_alloc.uninstall()
    attrs = attributes(span.span.attributes)
    assert {k for k in attrs if k.startswith("alloc.")} == {"alloc.bytes", "alloc.live_bytes"}
    assert 300_000 <= attrs["alloc.live_bytes"] <= attrs["alloc.bytes"] < 300_000 + SLACK
    assert set(summary[0]) >= ALLOC_KEYS
    assert value(allocated) == attrs["alloc.bytes"]
