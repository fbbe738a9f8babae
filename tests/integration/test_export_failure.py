"""A receiver that is down, slow or failing must not slow the app or grow its memory.

Each test runs the same "request" loop (a span that allocates and waits on a
short simulated I/O) against a healthy receiver for a baseline, then against the
faulty one, with all three signals exporting over OTLP with short intervals and
small exporter timeouts. Requests must not wait on export (latency stays near the
baseline), the SDK's queues stay within their bounds and RSS stays flat; once the
receiver is back, new spans, metrics and events arrive.

Run with ``-s`` to see the measured figures.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from opentelemetry.trace import Tracer

from tests.integration.conftest import Pipeline, latest_by, rss_bytes
from tests.support.otlp_receiver import OTLPReceiver, attributes

KIB = 1 << 10
MIB = 1 << 20
REQUESTS = 300
WARMUP = 30
EXPORT_TIMEOUT = 0.5  # seconds, each exporter
SLOW_SECONDS = 2.0  # > EXPORT_TIMEOUT: every export times out
QUEUE = 256  # max_queue_size of the span and log batch processors
IO_SECONDS = 0.002  # simulated I/O in each request, so exports overlap the loop
# Bounds: no request may wait on export.
P50_MARGIN = 0.020
P99_MARGIN = 0.050
RSS_BOUND = 32 * MIB
RECOVERY_TIMEOUT = 30.0


@dataclass
class Run:
    """Latencies of one loop, and the largest SDK queues seen during it."""

    latencies: list[float] = field(default_factory=list)
    max_span_queue: int = 0
    max_log_queue: int = 0

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies)

    @property
    def p99(self) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]

    def __str__(self) -> str:
        return (f"p50 {self.p50 * 1e3:.2f} ms, p99 {self.p99 * 1e3:.2f} ms, "
                f"max {max(self.latencies) * 1e3:.2f} ms, queues spans<={self.max_span_queue} "
                f"logs<={self.max_log_queue}")


def _queue_len(processor: Any) -> int:
    """Items waiting in an SDK batch processor (0 if its internals differ)."""
    queue = getattr(getattr(processor, "_batch_processor", None), "_queue", None)
    return len(queue) if queue is not None else 0


def request(tracer: Tracer, name: str) -> None:
    """One request: builds a response, allocating ~40 KiB, and waits on I/O."""
    with tracer.start_as_current_span(name):
        rows = [{"id": i, "payload": bytes(64)} for i in range(50)]
        blob = bytearray(32 * KIB)  # over threshold_bytes: one event per request
        time.sleep(IO_SECONDS)
        del rows, blob


def run(pipe: Pipeline, name: str, n: int) -> Run:
    result = Run()
    for _ in range(n):
        start = time.perf_counter()
        request(pipe.tracer, name)
        result.latencies.append(time.perf_counter() - start)
        result.max_span_queue = max(result.max_span_queue, _queue_len(pipe.span_export))
        result.max_log_queue = max(result.max_log_queue, _queue_len(pipe.log_processor))
    return result


def arrived(rx: OTLPReceiver, name: str) -> dict[str, bool]:
    """Which signals carry data of spans called ``name``."""
    return {
        "traces": any(s.span.name == name for s in rx.spans()),
        "metrics": name in latest_by(rx.metrics(), "python.alloc.allocated"),
        "logs": any(attributes(r.log_record.attributes).get("span.name") == name
                    for r in rx.log_records()),
    }


def keep_requesting_until_arrived(pipe: Pipeline, name: str, timeout: float) -> float:
    """Send a request now and then until all signals of ``name`` arrived; seconds taken.

    Spans and events of a request exported while the receiver is not yet reachable
    again (a gRPC channel reconnects with backoff) are lost, so keep sending.
    """
    start = time.monotonic()
    while True:
        request(pipe.tracer, name)
        got = arrived(pipe.rx, name)
        if all(got.values()):
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"after recovery, only {got} arrived within {timeout}s "
                               f"(attempts={pipe.rx.attempts()})")
        time.sleep(0.1)


FAULTS: dict[str, tuple[Callable[[OTLPReceiver], None], Callable[[OTLPReceiver], None]]] = {
    "down": (OTLPReceiver.stop, OTLPReceiver.start),
    "slow": (lambda rx: rx.set_mode("slow", SLOW_SECONDS), lambda rx: rx.set_mode("ok")),
    "error_500": (lambda rx: rx.set_mode("error_500"), lambda rx: rx.set_mode("ok")),
}


@pytest.mark.usefixtures("uninstall_after")
@pytest.mark.parametrize("fault", list(FAULTS))
def test_faulty_receiver_neither_blocks_nor_grows_the_app(
        receiver: OTLPReceiver, fault: str) -> None:
    break_it, mend_it = FAULTS[fault]
    pipe = Pipeline(
        receiver, timeout=EXPORT_TIMEOUT, metric_interval_ms=100, batch_delay_ms=50,
        max_queue_size=QUEUE, mode="live", threshold_bytes="32KiB",
        span_summary_events=True)
    try:
        keep_requesting_until_arrived(pipe, "warmup", RECOVERY_TIMEOUT)
        run(pipe, "warmup", WARMUP)
        baseline = run(pipe, "baseline", REQUESTS)

        break_it(receiver)
        attempts_before = receiver.attempts()
        gc.collect()
        rss_before = rss_bytes()
        faulty = run(pipe, "faulty", REQUESTS)
        more = run(pipe, "faulty", REQUESTS)  # queues full by now: still no growth
        gc.collect()
        rss_after = rss_bytes()
        attempts_during = receiver.attempts() - attempts_before
        stored_while_faulty = arrived(receiver, "faulty")

        mend_it(receiver)
        recovery = keep_requesting_until_arrived(pipe, "recovered", RECOVERY_TIMEOUT)
        open_spans = pipe.processor.open_spans
    finally:
        pipe.shutdown()

    growth = rss_after - rss_before
    print(f"\n[{receiver.transport} {fault}] baseline: {baseline}\n"
          f"[{receiver.transport} {fault}] faulty:   {faulty}\n"
          f"[{receiver.transport} {fault}] faulty+:  {more}\n"
          f"[{receiver.transport} {fault}] RSS {rss_before / MIB:.1f} -> {rss_after / MIB:.1f} MiB "
          f"({growth / KIB:+.0f} KiB over {2 * REQUESTS} requests); "
          f"recovered in {recovery:.2f}s; export requests reaching the receiver while faulty: "
          f"{attempts_during}")

    # The fault really was hit: exporters kept trying and nothing got through
    # (a slow receiver still stores what it answers, after its delay).
    if fault != "down":
        assert attempts_during > 0
    if fault != "slow":
        assert not any(stored_while_faulty.values()), stored_while_faulty
    # No request waits on export.
    for r in (faulty, more):
        assert r.p50 <= baseline.p50 + P50_MARGIN, (str(baseline), str(r))
        assert r.p99 <= baseline.p99 + P99_MARGIN, (str(baseline), str(r))
    # Memory: the SDK queues stay within max_queue_size, nothing piles up.
    for r in (baseline, faulty, more):
        assert r.max_span_queue <= QUEUE and r.max_log_queue <= QUEUE
    assert growth < RSS_BOUND, f"RSS grew by {growth / MIB:.1f} MiB"
    assert open_spans == 0
