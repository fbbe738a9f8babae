"""Every PromQL query of the Grafana dashboard, run against real data in a real Prometheus.

The traced example web service (``otel-alloc run --mode live
examples/web_service.py``) exports its metrics with the SDK's Prometheus
exporter; a throwaway Prometheus scrapes it every second while requests of very
different allocation sizes go through it. Then each dashboard target is
evaluated the way Grafana does it (range targets with ``/api/v1/query_range``,
instant targets with ``/api/v1/query``), with the ``span_name`` variable set to
All (``.*``) and to each single span name, and the answers are checked per span.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator

import pytest

from tests.support.dashboard import iter_targets, load_dashboard, substitute
from tests.support.dashboard_eval import (
    Answer,
    Series,
    evaluate,
    keyed,
    poll,
    values_by_span,
    wait_for_scrape_after,
)
from tests.support.prometheus import PrometheusServer, needs_prometheus
from tests.support.traced_app import TracedWebService

pytestmark = needs_prometheus()

MIB = 1 << 20
REPORT, ITEMS, HEALTH, CACHE = "GET /report", "GET /items", "GET /health", "GET /cache"
# Requests per span name: /report allocates ~11 MiB (all freed), /items ~1 MiB,
# /health ~1 KiB, /cache keeps 50 KB each (a leak).
REQUESTS = {REPORT: 30, ITEMS: 60, HEALTH: 60, CACHE: 30}
SPANS = tuple(REQUESTS)
ROUNDS = 3  # the first sends one request of each kind; each round is scraped before the next
LEAK_GRACE = 2.0
APP_ENV = {
    # Every /report span (~11 MiB) passes this; /items spans (~1 MiB) do not.
    "OTEL_ALLOC_SPAN_THRESHOLD_BYTES": "4MiB",
    # /cache spans are watched for LEAK_GRACE seconds (live bytes > 0 meanwhile),
    # then reported as alloc.leak_suspected.
    "OTEL_ALLOC_LEAK_GRACE_SECONDS": str(LEAK_GRACE),
    "OTEL_ALLOC_LEAK_MIN_BYTES": "10KB",
    # /items totals its prices in SQLite: native bytes (the Native panel).
    "OTEL_ALLOC_NATIVE": "true",
}
THRESHOLD, LEAK = "alloc.threshold_exceeded", "alloc.leak_suspected"
TIMEOUT = 30.0

# Panel titles of the dashboard (a renamed panel fails here, not in a KeyError).
ALLOCATED = "Allocated bytes/s by span"
ALLOCATIONS = "Allocations/s by span"
PER_SPAN = "Bytes per span (p50 / p99)"
LIVE = "Live bytes by span"
ESTIMATED = "Live bytes by span (estimated)"
PEAK = "Process peak"
EVENTS = "Allocation events by name"
DROPPED = "Dropped events"
NATIVE = "Native bytes/s by span"
RATE_KEYS = (ALLOCATED, ALLOCATIONS, f"{PER_SPAN} p50", f"{PER_SPAN} p99")


# -- driving the service -----------------------------------------------------------


def schedule() -> list[list[str]]:
    """Rounds of request paths: one of each first, the rest spread and interleaved."""
    rounds: list[list[str]] = [[span.split(" ", 1)[1] for span in SPANS]]
    for r in range(ROUNDS - 1):
        planned: list[tuple[float, str]] = []
        for span, total in REQUESTS.items():
            share = (total - 1) // (ROUNDS - 1) + (r < (total - 1) % (ROUNDS - 1))
            planned += [((i + 0.5) / share, span.split(" ", 1)[1]) for i in range(share)]
        rounds.append([path for _, path in sorted(planned)])
    return rounds


@pytest.fixture
def app() -> Iterator[TracedWebService]:
    service = TracedWebService(APP_ENV)
    try:
        yield service.start()
    finally:
        service.close()


def drive_traffic(app: TracedWebService, prom: PrometheusServer) -> tuple[dict[str, int], float]:
    """Send the scheduled requests; each round is in Prometheus before the next starts.

    Returns the requests sent per span name (a few extra /cache ones if the
    machine was too slow for a scrape to see a watched /cache span), and the
    time by which the first round's series were in Prometheus.
    """
    sent = dict.fromkeys(SPANS, 0)
    last_cache = 0.0

    def send(paths: list[str]) -> None:
        nonlocal last_cache
        for path in paths:
            app.get(path)
            sent[f"GET {path}"] += 1
            if path == "/cache":
                last_cache = time.monotonic()

    def scraped_all() -> bool:
        return values_by_span(prom, "python_alloc_span_size_bytes_count") == {
            span: float(n) for span, n in sent.items()}

    def keep_a_cache_span_watched() -> None:
        if time.monotonic() - last_cache > LEAK_GRACE / 2:
            send(["/cache"])

    def wait(what: str, check: Callable[[], bool],
             tick: Callable[[], None] | None = None) -> None:
        poll(what, check, prom, TIMEOUT, tick=tick, log_tail=app.log_tail)

    rounds = schedule()
    send(rounds[0])
    wait(f"round 0 in Prometheus (sent {sent})", scraped_all)
    # Baselines, so that rate() and increase() see the later increments; and
    # one scrape while a /cache span is watched (its live bytes are > 0).
    wait("the first threshold event", lambda: bool(prom.query(
        f'python_alloc_events_total{{event_name="{THRESHOLD}",span_name="{REPORT}"}}')))
    wait("live bytes of GET /cache", lambda: bool(prom.query(
        f'python_alloc_live_bytes{{span_name="{CACHE}"}} > 0')), tick=keep_a_cache_span_watched)
    baseline = time.time()
    for number, paths in enumerate(rounds[1:], 1):
        send(paths)
        wait(f"round {number} in Prometheus (sent {sent})", scraped_all)
    # Every /cache span still holds its 50 KB when its grace period ends.
    wait(f"{sent[CACHE]} leak events", lambda: values_by_span(
        prom, f'python_alloc_events_total{{event_name="{LEAK}"}}').get(CACHE) == sent[CACHE])
    return sent, baseline


def event_counters(prom: PrometheusServer, at: float) -> dict[tuple[str, str], float]:
    """The raw python_alloc_events_total values: (event name, span name) -> count."""
    return {(s["metric"]["event_name"], s["metric"]["span_name"]): float(s["value"][1])
            for s in prom.query("python_alloc_events_total", at=at)}


# -- the test ------------------------------------------------------------------------


def test_every_dashboard_query_on_real_traffic(app: TracedWebService) -> None:
    with PrometheusServer([app.metrics_target], scrape_interval="1s") as prom:
        prom.wait_for_series("python_alloc_peak_bytes", timeout=TIMEOUT)
        start = time.time() - 1
        sent, baseline = drive_traffic(app, prom)
        end = time.time()
        wait_for_scrape_after(prom, end, TIMEOUT)
        everything = keyed(evaluate(prom, ".*", start, end))
        single = {span: keyed(evaluate(prom, span, start, end)) for span in SPANS}
        counters = event_counters(prom, end)
        check_events_over_a_short_range(prom, end, int((end - baseline) * 1000))
    print(f"requests sent: {sent}; took {end - start - 1:.1f}s")
    show(".*", everything)
    for span, answers in single.items():
        show(span, {EVENTS: answers[EVENTS]})
    assert app.stop() == -signal.SIGTERM, app.log_tail()  # stopped cleanly, passed through

    assert sent[REPORT] == REQUESTS[REPORT] and sent[CACHE] >= REQUESTS[CACHE]
    assert counters[(THRESHOLD, REPORT)] == sent[REPORT]  # every /report span passes 4 MiB
    assert counters[(LEAK, CACHE)] == sent[CACHE]
    check_all_spans(everything, counters)
    for span, answers in single.items():
        check_single_span(span, answers, everything, counters)


def show(span_regex: str, answers: dict[str, Answer]) -> None:
    """Print what the dashboard shows (visible with ``pytest -s``, or -rP)."""
    for key, answer in answers.items():
        for s in answer.series or [Series({}, [float("nan")])]:
            label = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            print(f"span_name=~{span_regex!r:14} {key:32} {label:40} "
                  f"last={s.last:.6g} max={max(s.values):.6g}")


def check_all_spans(answers: dict[str, Answer],
                    counters: dict[tuple[str, str], float]) -> None:
    assert set(answers) == {ALLOCATED, ALLOCATIONS, f"{PER_SPAN} p50", f"{PER_SPAN} p99",
                            LIVE, ESTIMATED, PEAK, EVENTS, DROPPED, NATIVE}
    # Live mode exports exact live bytes, not an estimate: that panel stays empty
    # (test_dashboard_estimate.py fills it).
    assert answers[ESTIMATED].series == [], answers[ESTIMATED].series
    for key, answer in answers.items():
        assert answer.series or key == ESTIMATED, f"{key}: no result for .*: {answer.expr}"
        if "span_name" in answer.grouping:
            for s in answer.series:
                assert set(s.labels) == answer.grouping, (key, s.labels)

    # Rates and quantiles at the end of the range: every span, ordered by size.
    for key in RATE_KEYS:
        last = {span: s.last for span, s in answers[key].by("span_name").items()}
        assert set(last) == set(SPANS), (key, last)
        assert last[REPORT] > last[ITEMS] > last[HEALTH] > 0, (key, last)
        assert last[CACHE] > 0, (key, last)
    report_p50 = answers[f"{PER_SPAN} p50"].by("span_name")[REPORT].last
    assert 4 * MIB < report_p50 <= 16 * MIB  # ~11 MiB falls in the (4 MiB, 16 MiB] bucket

    # Live bytes: the leaking /cache spans while they are watched.
    live = {span: max(s.values) for span, s in answers[LIVE].by("span_name").items()}
    assert set(live) <= set(SPANS), live
    assert live.get(CACHE, 0) >= 50_000, live

    (peak,) = answers[PEAK].series
    assert peak.labels == {} and peak.last > MIB  # /report holds > 1 MiB at once

    # Every event series appeared within the range: the panel shows exact counts.
    events = {name: s.last for name, s in answers[EVENTS].by("event_name").items()}
    expected: dict[str, float] = {}
    for (name, _span), count in counters.items():
        expected[name] = expected.get(name, 0.0) + count
    assert events == expected, (events, counters)
    assert events[THRESHOLD] > 0 and events[LEAK] > 0, events

    (dropped,) = answers[DROPPED].series
    assert dropped.labels == {} and dropped.last == 0

    # Native bytes: a part of each span's allocated bytes; SQLite's pages in /items.
    native = {span: s.last for span, s in answers[NATIVE].by("span_name").items()}
    allocated = {span: s.last for span, s in answers[ALLOCATED].by("span_name").items()}
    assert set(native) == set(SPANS), native
    # ~20 KiB of ~1.3 MiB a request.
    assert native[ITEMS] > 0.005 * allocated[ITEMS], (native, allocated)
    assert native[ITEMS] > native[HEALTH], native
    for span in SPANS:
        assert native[span] <= allocated[span], (span, native, allocated)


def check_single_span(span: str, answers: dict[str, Answer], everything: dict[str, Answer],
                      counters: dict[tuple[str, str], float]) -> None:
    for key, answer in answers.items():
        if "span_name" in answer.grouping:
            # Only this span, and exactly what the All view shows for it.
            for s in answer.series:
                assert s.labels == {"span_name": span}, (span, key, s.labels)
            expected = everything[key].by("span_name").get(span)
            assert [s.values for s in answer.series] == ([expected.values] if expected else []), (
                span, key)
        elif not answer.grouping:
            # Not filtered by span: the same as the All view.
            assert answer.series == everything[key].series, (span, key)
    for key in RATE_KEYS:
        assert answers[key].series, f"{key}: no result for span_name={span!r}"
    if span == CACHE:
        assert answers[LIVE].series, "no live bytes for GET /cache alone"

    # Events are grouped by event name: only this span's counters may be in them.
    events = {name: s.last for name, s in answers[EVENTS].by("event_name").items()}
    assert events == {e: n for (e, sp), n in counters.items() if sp == span}, (span, events)
    if span == REPORT:
        assert events[THRESHOLD] > 0, events
    else:
        assert THRESHOLD not in events, (span, events)  # only /report spans pass 4 MiB
    if span == CACHE:
        assert events[LEAK] > 0, events
    if span == HEALTH:
        assert events == {}, events


def check_events_over_a_short_range(prom: PrometheusServer, end: float, range_ms: int) -> None:
    """With a range shorter than the series' lives, older series count their increase().

    Over the range (``end`` - ``range_ms``, ``end``] series that already had a
    sample at its start contribute increase(), the others their whole value.
    """
    ((_panel, target),) = [(p, t) for p, t in iter_targets(load_dashboard())
                          if p["title"] == EVENTS]
    window = f"{range_ms}ms"
    expr = substitute(target["expr"].replace("$__range", window), ".*")
    got = {s["metric"]["event_name"]: float(s["value"][1]) for s in prom.query(expr, at=end)}
    expected: dict[str, float] = {}
    older = {(s["metric"]["event_name"], s["metric"]["span_name"]) for s in prom.query(
        f"python_alloc_events_total offset {window}", at=end)}
    assert (THRESHOLD, REPORT) in older  # in Prometheus since the first round
    for fn, keep in (("increase", True), ("max_over_time", False)):
        for s in prom.query(f"{fn}(python_alloc_events_total[{window}])", at=end):
            key = (s["metric"]["event_name"], s["metric"]["span_name"])
            if (key in older) == keep:
                expected[key[0]] = expected.get(key[0], 0.0) + float(s["value"][1])
    assert got == pytest.approx(expected), (window, got, expected)


def test_schedule_sends_every_request_once() -> None:
    rounds = schedule()
    assert len(rounds) == ROUNDS
    assert sorted(rounds[0]) == sorted(span.split(" ", 1)[1] for span in SPANS)
    sent = [f"GET {path}" for paths in rounds for path in paths]
    assert {span: sent.count(span) for span in SPANS} == REQUESTS
