"""The dashboard in estimate mode, against a real Prometheus scraping the traced service.

``otel-alloc run --mode estimate examples/web_service.py`` exports
``python.alloc.live.estimate`` instead of ``python.alloc.live`` and no peak:
the "Live bytes by span (estimated)" panel shows the leaking ``GET /cache``
spans while they are watched, and the exact "Live bytes by span" and
"Process peak" panels stay empty (they say "live mode only"). The leak event
is raised on the estimate. ``test_dashboard_prometheus.py`` covers the same
dashboard in live mode, where the estimated panel stays empty.
"""

from __future__ import annotations

import time

from tests.support.dashboard import load_dashboard
from tests.support.dashboard_eval import (
    evaluate,
    keyed,
    poll,
    values_by_span,
    wait_for_scrape_after,
)
from tests.support.prometheus import PrometheusServer, needs_prometheus
from tests.support.traced_app import TracedWebService

pytestmark = needs_prometheus()

CACHE, ITEMS = "GET /cache", "GET /items"
LEAK = "alloc.leak_suspected"
LEAK_GRACE = 2.0
KEPT = 50_000  # /cache keeps bytes(50_000) in a module-level dict
ENV = {
    "OTEL_ALLOC_LEAK_GRACE_SECONDS": str(LEAK_GRACE),
    "OTEL_ALLOC_LEAK_MIN_BYTES": "10KB",
    # A 1 KiB mean: the 50 KB block /cache keeps is sampled with probability
    # 1 - exp(-50033 / 1024), 1 - 6e-22, standing for its own size (its weight
    # is size / probability). The span's estimate is that plus the weights of
    # other sampled blocks it still holds, never less.
    "OTEL_ALLOC_ESTIMATE_BYTES": "1KiB",
}
TIMEOUT = 30.0
ESTIMATED = "Live bytes by span (estimated)"
LIVE, PEAK, EVENTS = "Live bytes by span", "Process peak", "Allocation events by name"
ALLOCATED = "Allocated bytes/s by span"


def test_estimate_mode_fills_the_estimated_live_panel() -> None:
    panels = {p["title"]: p for p in load_dashboard()["panels"]}
    assert panels[LIVE]["fieldConfig"]["defaults"]["noValue"] == "live mode only"
    assert panels[PEAK]["fieldConfig"]["defaults"]["noValue"] == "live mode only"
    assert panels[ESTIMATED]["fieldConfig"]["defaults"]["noValue"] == "estimate mode only"

    with TracedWebService(ENV, mode="estimate") as app, \
            PrometheusServer([app.metrics_target], scrape_interval="1s") as prom:
        start = time.time() - 1
        sent = {CACHE: 0, ITEMS: 0}
        last_cache = 0.0

        def send(path: str) -> None:
            nonlocal last_cache
            app.get(path)
            sent[f"GET {path}"] += 1
            if path == "/cache":
                last_cache = time.monotonic()

        def keep_a_cache_span_watched() -> None:
            if time.monotonic() - last_cache > LEAK_GRACE / 2:
                send("/cache")

        send("/items")
        send("/cache")
        poll("the estimate of GET /cache in Prometheus", lambda: bool(prom.query(
            f'python_alloc_live_estimate_bytes{{span_name="{CACHE}"}} > 0')), prom, TIMEOUT,
            tick=keep_a_cache_span_watched, log_tail=app.log_tail)
        # Every /cache span still holds its 50 KB (estimated) when its grace ends.
        poll(f"{sent[CACHE]} leak events", lambda: values_by_span(
            prom, f'python_alloc_events_total{{event_name="{LEAK}"}}').get(CACHE) == sent[CACHE],
            prom, TIMEOUT, log_tail=app.log_tail)
        end = time.time()
        wait_for_scrape_after(prom, end, TIMEOUT)
        everything = keyed(evaluate(prom, ".*", start, end))
        only_cache = keyed(evaluate(prom, CACHE, start, end))
        only_items = keyed(evaluate(prom, ITEMS, start, end))
        leaks = values_by_span(prom, f'python_alloc_events_total{{event_name="{LEAK}"}}')
    print(f"requests sent: {sent}; leak events: {leaks}")

    # The estimate of GET /cache: at least the 50 KB its watched spans keep,
    # and far from a runaway weight. The first GET /items may be watched too:
    # it keeps what its first call caches (the sqlite3 module's, say).
    estimated = everything[ESTIMATED].by("span_name")
    assert CACHE in estimated and set(estimated) <= {CACHE, ITEMS}, estimated
    watched_most = max(estimated[CACHE].values)
    assert KEPT <= watched_most <= sent[CACHE] * 4 * KEPT, (watched_most, sent)
    assert [s.labels for s in only_cache[ESTIMATED].series] == [{"span_name": CACHE}]
    assert only_cache[ESTIMATED].series[0].values == estimated[CACHE].values
    assert [s.labels for s in only_items[ESTIMATED].series] in ([], [{"span_name": ITEMS}])

    # No exact figures in estimate mode: those panels show "live mode only".
    assert everything[LIVE].series == [] and everything[PEAK].series == []

    # The leak events were raised on the estimate, one per /cache span.
    assert leaks[CACHE] == sent[CACHE] and set(leaks) <= {CACHE, ITEMS}, (leaks, sent)
    events = {name: s.last for name, s in everything[EVENTS].by("event_name").items()}
    assert events == {LEAK: sum(leaks.values())}, (events, leaks)
    assert set(everything[ALLOCATED].by("span_name")) == {CACHE, ITEMS}
