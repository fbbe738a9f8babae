"""collector-config/ is self-consistent: collector pipelines, ports, scrape config, dashboard."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CollectorRegistry, generate_latest

from tests.support.dashboard import (
    COLLECTOR_CONFIG,
    dashboard_queries,
    iter_panels,
    iter_targets,
    load_dashboard,
)

KINDS = ("receivers", "processors", "exporters")
UNFILTERED = {"python_alloc_peak_bytes", "python_alloc_events_dropped_total"}
SPAN_FILTER = 'span_name=~"$span_name"'
SELECTOR = re.compile(r"\b(python_alloc_\w+)\s*(\{[^}]*\})?")


def load(relative: str) -> Any:
    return yaml.safe_load((COLLECTOR_CONFIG / relative).read_text())


def port_of(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def collector() -> dict[str, Any]:
    return load("otel-collector.yaml")  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load("docker-compose.yaml")["services"]  # type: ignore[no-any-return]


def published(service: dict[str, Any]) -> dict[int, int]:
    """Container port -> host port of a compose service."""
    ports = {}
    for entry in service.get("ports", []):
        host, container = str(entry).rsplit(":", 2)[-2:]
        ports[int(container)] = int(host)
    return ports


def readme_ports() -> set[int]:
    text = (COLLECTOR_CONFIG / "README.md").read_text()
    return {int(m) for m in re.findall(r"^\|\s*(\d+)\s*\|", text, flags=re.MULTILINE)}


def collector_ports(collector: dict[str, Any]) -> set[int]:
    protocols = collector["receivers"]["otlp"]["protocols"]
    return {
        port_of(protocols["grpc"]["endpoint"]),
        port_of(protocols["http"]["endpoint"]),
        port_of(collector["exporters"]["prometheus"]["endpoint"]),
    }


def test_pipeline_components_are_defined(collector: dict[str, Any]) -> None:
    for name, pipeline in collector["service"]["pipelines"].items():
        for kind in KINDS:
            for component in pipeline.get(kind, []):
                assert component in (collector.get(kind) or {}), f"{name}: {kind} {component}"


def test_every_defined_component_is_used(collector: dict[str, Any]) -> None:
    pipelines = collector["service"]["pipelines"].values()
    for kind in KINDS:
        used = {c for pipeline in pipelines for c in pipeline.get(kind, [])}
        assert set(collector.get(kind) or {}) == used, kind


def test_pipelines_and_exporter_settings(collector: dict[str, Any]) -> None:
    pipelines = collector["service"]["pipelines"]
    assert set(pipelines) == {"traces", "metrics", "logs"}
    for pipeline in pipelines.values():
        assert pipeline["receivers"] == ["otlp"]
        assert pipeline["processors"] == ["memory_limiter", "batch"]
    assert pipelines["traces"]["exporters"] == ["otlp/tempo", "debug"]
    assert pipelines["metrics"]["exporters"] == ["prometheus", "debug"]
    assert pipelines["logs"]["exporters"] == ["debug"]
    limiter = collector["processors"]["memory_limiter"]
    assert {"check_interval", "limit_mib", "spike_limit_mib"} <= set(limiter)
    prometheus = collector["exporters"]["prometheus"]
    assert prometheus["enable_open_metrics"] is True
    assert prometheus["resource_to_telemetry_conversion"]["enabled"] is True
    assert collector["exporters"]["otlp/tempo"]["tls"]["insecure"] is True


def test_ports_match_readme_and_compose(collector: dict[str, Any], compose: dict[str, Any]) -> None:
    ports = collector_ports(collector)
    assert ports == {4317, 4318, 8889}
    assert ports <= readme_ports()
    assert published(compose["otel-collector"]) == {p: p for p in ports}
    all_published = {host for svc in compose.values() for host in published(svc).values()}
    assert all_published == readme_ports() == {4317, 4318, 8889, 9090, 3200, 3000}


def test_compose_mounts_and_flags(compose: dict[str, Any]) -> None:
    for service in compose.values():
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            assert (COLLECTOR_CONFIG / source).exists(), volume
    collector_svc = compose["otel-collector"]
    assert "opentelemetry-collector-contrib" in collector_svc["image"]
    config_path = collector_svc["command"][0].split("=", 1)[1]
    assert f"./otel-collector.yaml:{config_path}:ro" in collector_svc["volumes"]
    prom = compose["prometheus"]
    assert "--enable-feature=exemplar-storage" in prom["command"]
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prom["volumes"]
    grafana_env = compose["grafana"]["environment"]
    assert grafana_env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert grafana_env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Admin"


def test_prometheus_scrapes_collector_exporter(
    collector: dict[str, Any], compose: dict[str, Any]
) -> None:
    exporter_port = port_of(collector["exporters"]["prometheus"]["endpoint"])
    jobs = {job["job_name"]: job for job in load("prometheus.yml")["scrape_configs"]}
    targets = [t for cfg in jobs["otel-collector"]["static_configs"] for t in cfg["targets"]]
    assert targets == [f"otel-collector:{exporter_port}"]
    assert "otel-collector" in compose


def test_tempo_wiring(collector: dict[str, Any], compose: dict[str, Any]) -> None:
    host, port = collector["exporters"]["otlp/tempo"]["endpoint"].rsplit(":", 1)
    assert host in compose
    tempo = load("tempo.yaml")
    tempo_grpc = tempo["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]
    assert port_of(tempo_grpc["endpoint"]) == int(port)
    assert tempo["server"]["http_listen_port"] in published(compose["tempo"])


def datasources() -> dict[str, dict[str, Any]]:
    provisioned = load("grafana/provisioning/datasources/datasources.yaml")["datasources"]
    return {ds["uid"]: ds for ds in provisioned}


def test_datasource_references_exist(compose: dict[str, Any]) -> None:
    sources = datasources()
    assert {ds["type"] for ds in sources.values()} == {"prometheus", "tempo"}
    for ds in sources.values():
        url = urlsplit(ds["url"])
        assert url.hostname in compose, ds["name"]
        assert url.port in published(compose[url.hostname]), ds["name"]
    prometheus = next(ds for ds in sources.values() if ds["type"] == "prometheus")
    destinations = prometheus["jsonData"]["exemplarTraceIdDestinations"]
    assert destinations
    assert all(sources[d["datasourceUid"]]["type"] == "tempo" for d in destinations)
    assert {d["name"] for d in destinations} == {"trace_id"}

    dashboard = load_dashboard()
    used = [v["datasource"]["uid"] for v in dashboard["templating"]["list"]]
    for panel in iter_panels(dashboard):
        used.append(panel["datasource"]["uid"])
        used += [t["datasource"]["uid"] for t in panel.get("targets", [])]
    assert set(used) <= set(sources)


def test_dashboard_provider_matches_compose_mount(compose: dict[str, Any]) -> None:
    (provider,) = load("grafana/provisioning/dashboards/dashboards.yaml")["providers"]
    volumes = compose["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in volumes
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in volumes


def test_span_name_variable() -> None:
    (variable,) = load_dashboard()["templating"]["list"]
    assert variable["name"] == "span_name"
    assert variable["definition"] == "label_values(python_alloc_allocated_bytes_total, span_name)"
    assert variable["query"]["query"] == variable["definition"]
    assert variable["multi"] is True and variable["includeAll"] is True
    assert variable["allValue"] == ".*"


def test_allocation_selectors_filter_on_span_name() -> None:
    targets = list(iter_targets(load_dashboard()))
    assert targets
    for panel, target in targets:
        for metric, labels in SELECTOR.findall(target["expr"]):
            if metric not in UNFILTERED:
                assert SPAN_FILTER in labels, f"{panel['title']}: {target['expr']}"


def test_exemplars_on_counter_and_histogram_timeseries() -> None:
    for panel, target in iter_targets(load_dashboard()):
        if panel["type"] != "timeseries":
            continue
        metrics = {m for m, _ in SELECTOR.findall(target["expr"])}
        from_counter = any(m.endswith(("_total", "_bucket")) for m in metrics)
        assert target.get("exemplar", False) is from_counter, panel["title"]


def exported_names() -> set[str]:
    """Prometheus names opentelemetry-exporter-prometheus gives the contract instruments."""
    registry = CollectorRegistry()
    reader = PrometheusMetricReader(registry=registry)
    provider = MeterProvider(metric_readers=[reader])
    meter = provider.get_meter("otel_alloc")
    span = {"span.name": "GET /items"}
    meter.create_counter("python.alloc.allocated", unit="By").add(1, span)
    meter.create_counter("python.alloc.allocations", unit="{allocation}").add(1, span)
    meter.create_counter("python.alloc.native.allocated", unit="By").add(1, span)
    meter.create_histogram("python.alloc.span.size", unit="By").record(1, span)
    meter.create_up_down_counter("python.alloc.live", unit="By").add(1, span)
    meter.create_up_down_counter("python.alloc.live.estimate", unit="By").add(1, span)
    meter.create_gauge("python.alloc.peak", unit="By").set(1)
    meter.create_counter("python.alloc.events").add(1, {"event.name": "e", **span})
    meter.create_counter("python.alloc.events.dropped").add(1)
    text = generate_latest(registry).decode()
    provider.shutdown()
    return set(re.findall(r"^(python_alloc_\w+)", text, flags=re.MULTILINE))


def test_dashboard_metric_names_are_what_the_exporter_produces() -> None:
    exported = exported_names()
    used = {m for _, t in iter_targets(load_dashboard()) for m, _ in SELECTOR.findall(t["expr"])}
    assert used <= exported, used - exported
    assert used >= {
        "python_alloc_allocated_bytes_total",
        "python_alloc_allocations_total",
        "python_alloc_span_size_bytes_bucket",
        "python_alloc_live_bytes",
        "python_alloc_live_estimate_bytes",
        "python_alloc_peak_bytes",
        "python_alloc_events_total",
        "python_alloc_events_dropped_total",
        "python_alloc_native_allocated_bytes_total",
    }


def test_dashboard_queries_substitutes_variables() -> None:
    queries = dashboard_queries("GET /items|POST /orders")
    assert len(queries) == len(list(iter_targets(load_dashboard())))
    for title, expr in queries:
        assert title and "$" not in expr, expr
    exprs = dict(queries)
    assert exprs["Allocated bytes/s by span"] == (
        "sum by (span_name) (rate(python_alloc_allocated_bytes_total"
        '{span_name=~"GET /items|POST /orders"}[1m]))'
    )
    assert "[5m]" in exprs["Allocation events by name"]
    assert Path(COLLECTOR_CONFIG / "grafana/dashboards/otel-alloc.json").is_file()
