"""The Prometheus test harness starts the real binary, scrapes a target and answers queries."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter, start_http_server

from tests.support import prometheus as prom_support
from tests.support.prometheus import (
    MISSING_MESSAGE,
    PrometheusNotFoundError,
    PrometheusServer,
    free_port,
    prometheus_binary,
)

needs_binary = pytest.mark.skipif(prometheus_binary() is None, reason=MISSING_MESSAGE)


@pytest.fixture
def counter_target() -> Iterator[tuple[str, Counter]]:
    registry = CollectorRegistry()
    counter = Counter(
        "harness_requests", "Requests seen by the harness", ["route"], registry=registry
    )
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        yield f"127.0.0.1:{port}", counter
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.mark.prometheus
@needs_binary
def test_scrapes_and_queries_counter(counter_target: tuple[str, Counter]) -> None:
    target, counter = counter_target
    counter.labels(route="/items").inc(3)
    with PrometheusServer([target], job="harness") as prom:
        (series,) = prom.wait_for_series('harness_requests_total{route="/items"}', timeout=30)
        assert series["metric"]["job"] == "harness"
        assert series["metric"]["instance"] == target
        assert float(series["value"][1]) == 3.0

        counter.labels(route="/items").inc(2)
        prom.wait_for_series('harness_requests_total{route="/items"} == 5', timeout=30)
        assert prom.query("vector(1) + 1")[0]["value"][1] == "2"
        assert prom.query("scalar(vector(7))")[0]["value"][1] == "7"
        with pytest.raises(ValueError, match="parse error"):
            prom.query("sum(")
        health = prom.targets_health()
        assert [t["health"] for t in health] == ["up"]
    assert prom._proc is None


def test_missing_binary_error_tells_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    monkeypatch.setattr(prom_support, "DEFAULT_BINARY", "/nonexistent/prometheus")
    assert prometheus_binary() is None
    with pytest.raises(PrometheusNotFoundError, match=r"\.ci/run.*apt-get install -y prometheus"):
        PrometheusServer(["127.0.0.1:1"]).start()
