"""``span_attributes`` naming the ``alloc.*`` attributes to set.

Each chosen attribute costs the app's OTLP encoder a protobuf message a span
(README, "What the span attributes cost an exporter"), so a team may keep
only those it reads. The choice is parsed and checked against the tracker
mode before anything is installed, and exactly the chosen attributes reach
the exported span in every setup, through ``_on_ending`` and through the
copy older SDKs get, while metrics and events keep every figure.
"""

from __future__ import annotations

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan

import otel_alloc
from otel_alloc.otel import sdk_compat
from otel_alloc.otel.settings import attribute_choice
from otel_alloc.otel.span_records import (
    ATTRIBUTE_MODES,
    LIVE_EXACT,
    LIVE_NONE,
    attribute_mask,
    with_figures,
)
from tests.unit.conftest import NATIVE_GIL, OBJ, Helper, installed
from tests.unit.otel.test_processor import SETUPS, Pipeline


def _alloc_keys(span: ReadableSpan) -> set[str]:
    return {k for k in (span.attributes or {}) if k.startswith("alloc.")}


@pytest.mark.parametrize(("given", "chosen"), [
    (True, True), (False, False), ("on", True), ("OFF", False), ("1", True), ("no", False),
    ("alloc.bytes", {"alloc.bytes"}),
    ("bytes, live_bytes", {"alloc.bytes", "alloc.live_bytes"}),
    (["alloc.count", "peak_bytes", "alloc.count"], {"alloc.count", "alloc.peak_bytes"}),
    (("native_bytes",), {"alloc.native_bytes"}),
    (frozenset({"alloc.live_bytes_estimate"}), {"alloc.live_bytes_estimate"}),
])
def test_choice_is_parsed(monkeypatch: pytest.MonkeyPatch, given: object,
                          chosen: object) -> None:
    monkeypatch.delenv("OTEL_ALLOC_SPAN_ATTRIBUTES", raising=False)
    expected = chosen if isinstance(chosen, bool) else frozenset(chosen)  # type: ignore[arg-type]
    assert attribute_choice(given) == expected  # type: ignore[arg-type]
    if isinstance(given, str):
        monkeypatch.setenv("OTEL_ALLOC_SPAN_ATTRIBUTES", given)
        assert attribute_choice(None) == expected


def test_unset_means_every_attribute(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_ALLOC_SPAN_ATTRIBUTES", raising=False)
    assert attribute_choice(None) is True
    assert attribute_mask(True) == (1 << len(ATTRIBUTE_MODES)) - 1 == 0b1111111
    assert attribute_mask(False) == 0
    assert attribute_mask(frozenset({"alloc.bytes", "alloc.peak_bytes"})) == 0b10001


@pytest.mark.parametrize(("given", "bad"), [
    ("alloc.bytes,alloc.bites", "alloc.bites"), (["bytes", 3], 3), (7, 7),
    (["count", ["bytes"]], ["bytes"]),
    ("", ""), ([], []), ("bytes,", ""),
])
def test_bad_choice_names_the_setting_and_the_value(
        uninstalled: None, monkeypatch: pytest.MonkeyPatch, given: object, bad: object) -> None:
    monkeypatch.delenv("OTEL_ALLOC_SPAN_ATTRIBUTES", raising=False)
    with pytest.raises(otel_alloc.ConfigError) as err:
        otel_alloc.AllocationSpanProcessor(span_attributes=given)
    assert err.value.setting == "span_attributes" and err.value.value == bad
    assert "alloc.live_bytes_estimate" in err.value.accepted
    assert otel_alloc.installed_mode() is None
    if isinstance(given, str) and given:
        monkeypatch.setenv("OTEL_ALLOC_SPAN_ATTRIBUTES", given)
        with pytest.raises(otel_alloc.ConfigError) as env_err:
            otel_alloc.AllocationSpanProcessor()
        assert env_err.value.setting == "OTEL_ALLOC_SPAN_ATTRIBUTES"
        assert env_err.value.value == bad


@pytest.mark.parametrize(("mode", "name"), [
    ("counts", "alloc.live_bytes"), ("counts", "alloc.live_bytes_estimate"),
    ("estimate", "alloc.peak_bytes"), ("live", "alloc.live_bytes_estimate"),
])
def test_attribute_the_mode_never_sets_is_refused_before_install(
        uninstalled: None, monkeypatch: pytest.MonkeyPatch, mode: str, name: str) -> None:
    monkeypatch.setenv("OTEL_ALLOC_MODE", mode)
    with pytest.raises(otel_alloc.ConfigError) as err:
        otel_alloc.AllocationSpanProcessor(span_attributes=["alloc.bytes", name])
    assert err.value.setting == "span_attributes" and err.value.value == name
    assert f"in {mode} mode" in err.value.accepted and "alloc.bytes" in err.value.accepted
    assert otel_alloc.installed_mode() is None
    # Through the variable, the error names the variable.
    monkeypatch.setenv("OTEL_ALLOC_SPAN_ATTRIBUTES", name)
    with pytest.raises(otel_alloc.ConfigError) as env_err:
        otel_alloc.AllocationSpanProcessor()
    assert env_err.value.setting == "OTEL_ALLOC_SPAN_ATTRIBUTES" and env_err.value.value == name
    assert otel_alloc.installed_mode() is None
    monkeypatch.delenv("OTEL_ALLOC_SPAN_ATTRIBUTES")
    # Installed already in that mode (the variable unset): the same answer.
    monkeypatch.delenv("OTEL_ALLOC_MODE")
    otel_alloc.install(mode)
    with pytest.raises(otel_alloc.ConfigError):
        otel_alloc.AllocationSpanProcessor(span_attributes=name)


CHOICES = [("counts", ["alloc.count"]), ("live", ["alloc.bytes", "alloc.live_bytes"]),
           ("live", ["peak_bytes", "inclusive_bytes"]),
           ("estimate", ["alloc.live_bytes_estimate"])]


@pytest.mark.parametrize("form", SETUPS)
@pytest.mark.parametrize(("mode", "names"), CHOICES, ids=["-".join(c[1]) for c in CHOICES])
def test_exactly_the_chosen_attributes_are_exported(
        helper: Helper, form: str, mode: str, names: list[str]) -> None:
    if form != "wrap" and not sdk_compat.SDK_CALLS_ON_ENDING:
        pytest.skip("beside the exporter, attributes need an SDK that calls _on_ending")
    wanted = {n if n.startswith("alloc.") else "alloc." + n for n in names}
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    with installed(mode):
        pipe = Pipeline(mode, "simple", form, span_attributes=names, meter_provider=meters)
        try:
            with pipe.tracer.start_as_current_span("work", attributes={"app": 1}):
                keep = helper.alloc_many(OBJ, 1000, 100, keep=True)
            pipe.provider.force_flush()
            (span,) = pipe.exporter.get_finished_spans()
            assert _alloc_keys(span) == wanted
            assert span.attributes is not None and span.attributes["app"] == 1
            if "alloc.count" in wanted:
                assert 100 <= span.attributes["alloc.count"] < 100 + 200
            if "alloc.live_bytes" in wanted:
                assert 100_000 <= span.attributes["alloc.live_bytes"] < 100_000 + 16_384
            meters.force_flush()
            data = reader.get_metrics_data()
            allocated = [p.value for rm in data.resource_metrics for sm in rm.scope_metrics
                         for m in sm.metrics if m.name == "python.alloc.allocated"
                         for p in m.data.data_points if p.attributes.get("span.name") == "work"]
            # Two allocation processors each record the span's bytes.
            processors = 2 if form == "two-processors" else 1
            assert len(allocated) == 1
            assert 100_000 * processors <= allocated[0] < (100_000 + 16_384) * processors
            del keep
        finally:
            pipe.provider.shutdown()
            meters.shutdown()


def _one_span(helper: Helper, mode: str, native: bool, choice: object,
              domain: int, size: int, n: int) -> ReadableSpan:
    """The exported span of one "work" span making n allocations of size bytes."""
    with installed(mode, native=native):
        pipe = Pipeline(mode, "simple", "wrap", span_attributes=choice)
        try:
            with pipe.tracer.start_as_current_span("work"):
                helper.alloc_many(domain, size, n)
            pipe.provider.force_flush()
            (span,) = pipe.exporter.get_finished_spans()
            return span
        finally:
            pipe.provider.shutdown()


def test_native_bytes_alone_in_native_mode(helper: Helper) -> None:
    span = _one_span(helper, "live", True, "native_bytes", NATIVE_GIL, 4096, 50)
    assert _alloc_keys(span) == {"alloc.native_bytes"}
    assert span.attributes is not None
    assert span.attributes["alloc.native_bytes"] >= 50 * 4096


def test_native_bytes_chosen_without_native_mode_sets_nothing(helper: Helper) -> None:
    """Native memory may be turned on later (by another processor): not an error."""
    span = _one_span(helper, "counts", False, ["bytes", "native_bytes"], OBJ, 100, 10)
    assert _alloc_keys(span) == {"alloc.bytes"}


def test_copy_for_older_sdks_keeps_the_chosen_attributes() -> None:
    """The route of SDKs without _on_ending: with_figures copies the span."""
    span = ReadableSpan(name="s", attributes={"app": 1})
    figures = (100, 3, 250, 40, 90, False, False, 7)
    copy = with_figures(span, figures, LIVE_EXACT,
                        attribute_mask(frozenset({"alloc.inclusive_bytes", "alloc.peak_bytes"})))
    assert dict(copy.attributes or {}) == {"app": 1, "alloc.inclusive_bytes": 250,
                                           "alloc.peak_bytes": 90}
    every = with_figures(span, figures, LIVE_NONE)
    assert dict(every.attributes or {}) == {"app": 1, "alloc.bytes": 100, "alloc.count": 3,
                                            "alloc.inclusive_bytes": 250,
                                            "alloc.native_bytes": 7}
    assert dict(span.attributes or {}) == {"app": 1}
