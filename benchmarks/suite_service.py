"""The suite's service item: ``service_app.py`` under ``wrk`` load, OTLP to a local receiver.

The receiver (a thread of the suite's process) accepts OTLP/HTTP posts,
answers an empty ``Export*ServiceResponse`` and keeps only the last metrics
request, decoded after the server has stopped to check that the size
histogram holds every span the server ended.

Beside requests per second, each run reports the server's CPU time a
request over the measured ``wrk`` run and the flush after it
(``Server.load``), all its threads together and the serving thread alone
(from ``/proc/<pid>/task/*/schedstat``, nanoseconds). The server is
GIL-bound: its threads together use about one CPU whatever the variant, so
throughput follows CPU time a request, and the split shows what runs off
the serving thread (above all the ``BatchSpanProcessor``'s worker encoding
spans for OTLP) that the serving thread still waits for.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from bench_util import alternated, missing_modules

HERE = Path(__file__).resolve().parent
APP = HERE / "service_app.py"
PATH = "/orders/4711?limit=20"
CONNECTIONS = 8
SERVICE_MODULES = ("fastapi", "uvicorn", "opentelemetry.instrumentation.fastapi",
                   "opentelemetry.exporter.otlp.proto.http")


def missing() -> str | None:
    """What the service item lacks here (None: it can run)."""
    if shutil.which("wrk") is None:
        return "wrk not installed (apt-get install -y wrk)"
    return missing_modules(SERVICE_MODULES)


class Receiver:
    """A minimal OTLP/HTTP receiver on 127.0.0.1 that discards what it gets."""

    def __init__(self) -> None:
        self.posts: dict[str, int] = {}
        self.last_metrics = b""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.posts[self.path] = receiver.posts.get(self.path, 0) + 1
                if self.path == "/v1/metrics":
                    receiver.last_metrics = body
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def reset(self) -> None:
        """Forget what was received."""
        self.posts = {}
        self.last_metrics = b""

    def histogram_count(self, name: str = "python.alloc.span.size") -> int | None:
        """Points in histogram ``name`` in the last metrics export (None: absent)."""
        from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
            ExportMetricsServiceRequest,
        )

        request = ExportMetricsServiceRequest.FromString(self.last_metrics)
        total = None
        for resource in request.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        points = metric.histogram.data_points
                        total = (total or 0) + sum(p.count for p in points)
        return total

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(proc: subprocess.Popen[str], port: int, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            time.sleep(0.1)
    return False


def thread_cpu_ns(pid: int) -> dict[int, int]:
    """CPU time so far of each thread of process ``pid``, in ns, by thread id.

    From each thread's ``schedstat`` (time on a CPU, in ns); where the kernel
    has none, from ``stat``'s user and system clock ticks. Empty when
    ``/proc`` cannot be read. A thread that exits between two readings takes
    its time with it; the server's threads live as long as it does.
    """
    tick_ns = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    times: dict[int, int] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return times
    for tid in tids:
        task = f"/proc/{pid}/task/{tid}"
        try:
            with open(f"{task}/schedstat") as f:
                times[int(tid)] = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            try:
                with open(f"{task}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                times[int(tid)] = (int(fields[11]) + int(fields[12])) * tick_ns
            except (OSError, ValueError, IndexError):
                continue  # exited meanwhile
    return times


def wrk_counts(out: str) -> tuple[float, int]:
    """Requests per second and requests completed, from ``wrk``'s report."""
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    done = re.search(r"^\s*(\d+) requests in ", out, re.M)
    if rate is None or done is None:
        raise RuntimeError(f"no Requests/sec or request count in wrk's output:\n{out}")
    return float(rate.group(1)), int(done.group(1))


def wrk(port: int, seconds: float) -> tuple[float, int]:
    """Requests per second that ``wrk`` got from the server over ``seconds``, and how many."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{max(1, round(seconds))}s",
         f"http://127.0.0.1:{port}{PATH}"],
        check=True, capture_output=True, text=True, timeout=seconds + 60).stdout
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                        out)
    if "Non-2xx" in out or (sockets and any(int(n) for n in sockets.groups())):
        failed = [line.strip() for line in out.splitlines()
                  if "Non-2xx" in line or "Socket" in line]
        raise RuntimeError("wrk saw failed requests: " + "; ".join(failed))
    return wrk_counts(out)


# What a server that fails to start, serve, flush or stop raises: recorded
# as that variant's error for the round, and the suite goes on.
FAILURES = (RuntimeError, OSError, subprocess.SubprocessError)


class Server:
    """One ``service_app.py`` process in ``variant``, exporting to ``receiver``.

    ``start`` returns None once it answers, else the result to record (n/a
    or an error). Its CPU time and ``wrk``'s requests add up over
    ``load``'s runs; ``stop`` ends it and returns the JSON-ready result.
    """

    def __init__(self, variant: str, receiver: Receiver) -> None:
        self.variant, self.receiver = variant, receiver
        self.port = _free_port()
        self.requests, self.seconds = 0, 0.0
        self.cpu_ns: dict[int, int] = {}
        self.proc = subprocess.Popen(
            [sys.executable, str(APP), "--variant", variant, "--port", str(self.port),
             "--otlp", receiver.endpoint], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)

    def start(self) -> dict[str, object] | None:
        """Wait until the server answers, then warm it up with a second of load."""
        if not _wait_ready(self.proc, self.port):
            out, err = self.proc.communicate(timeout=60)
            lines = out.strip().splitlines()
            if lines and "na" in json.loads(lines[-1]):
                return dict(json.loads(lines[-1]))
            raise RuntimeError(f"service {self.variant} did not start:\n{err[-3000:]}")
        wrk(self.port, 1)
        self.flush()
        return None

    def flush(self, timeout: float = 60.0) -> float:
        """Have the server export what its span processors hold; the seconds it took.

        SIGUSR1 (``service_app._flush_on_signal``), then its ``flushed`` line.
        """
        assert self.proc.stdout is not None
        start = time.monotonic()
        self.proc.send_signal(signal.SIGUSR1)
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if line.strip() != "flushed":
            raise RuntimeError(f"service {self.variant} did not flush within {timeout:g} s "
                               f"(got {line.strip()!r})")
        return time.monotonic() - start

    def load(self, seconds: float) -> None:
        """One measured ``wrk`` run of ``seconds`` and the flush after it, added to the totals.

        The flush counts as part of the run, in CPU time and in seconds, so
        that the run carries the export work of its own requests: left to
        the exporters' timers, a run's last partial batch would be exported
        after it (in an interleaved round, while another server is loaded).
        """
        before = thread_cpu_ns(self.proc.pid)
        rps, requests = wrk(self.port, seconds)
        flushed = self.flush()
        after = thread_cpu_ns(self.proc.pid)
        self.requests += requests
        self.seconds += (requests / rps if rps else 0.0) + flushed
        for tid, ns in after.items():
            self.cpu_ns[tid] = self.cpu_ns.get(tid, 0) + ns - before.get(tid, 0)

    def stop(self) -> dict[str, object]:
        """Stop the server (SIGINT); the totals, its exit line and what the receiver got."""
        try:
            self.proc.send_signal(signal.SIGINT)
            out, err = self.proc.communicate(timeout=60)
        finally:
            self.kill()
        if self.proc.returncode != 0:
            raise RuntimeError(f"service {self.variant} exited {self.proc.returncode}:\n"
                               f"{err[-3000:]}")
        rps = self.requests / self.seconds if self.seconds else 0.0
        result: dict[str, object] = {"rps": rps, **json.loads(out.strip().splitlines()[-1])}
        if self.requests and self.proc.pid in self.cpu_ns:
            result["cpu_ms"] = sum(self.cpu_ns.values()) / 1e6 / self.requests
            result["serving_cpu_ms"] = self.cpu_ns[self.proc.pid] / 1e6 / self.requests
        result["posts"] = dict(self.receiver.posts)
        if self.receiver.last_metrics:
            result["histogram"] = self.receiver.histogram_count()
        return result

    def kill(self) -> None:
        """End the process if it still runs (a failed start or stop)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


def measure(variant: str, seconds: float, receiver: Receiver) -> dict[str, object]:
    """Start the server in ``variant``, load it, stop it; the JSON-ready result.

    A failure is the result ``{"error": ...}``, as in ``measure_interleaved``.
    """
    receiver.reset()
    server = Server(variant, receiver)
    try:
        if (early := server.start()) is not None:
            return early
        server.load(seconds)
        return server.stop()
    except FAILURES as exc:
        return {"error": str(exc)}
    finally:
        server.kill()


def burst_plan(seconds: float, bursts: int) -> tuple[int, int]:
    """Bursts a variant gets and whole seconds each (``wrk`` takes whole seconds).

    As many as asked while each keeps at least a second, and at least two,
    so the load adds up to about ``seconds``.
    """
    count = max(2, min(bursts, int(seconds)))
    return count, max(1, round(seconds / count))


def measure_interleaved(variants: list[str], seconds: float,
                        bursts: int) -> dict[str, dict[str, object]]:
    """One round: a server per variant, all up at once, loaded in turn.

    Each gets ``burst_plan(seconds, bursts)`` bursts of load, handed out in
    alternating order, so a change in the host's speed falls on every
    variant alike. Each server exports to a receiver of its own (the
    histogram check reads it). A variant that cannot start or fails is
    recorded as n/a or its error; the others go on.
    """
    count, each = burst_plan(seconds, bursts)
    results: dict[str, dict[str, object]] = {}
    servers: dict[str, Server] = {}
    receivers = {v: Receiver() for v in variants}
    try:
        for v in variants:
            servers[v] = Server(v, receivers[v])
        for v, server in servers.items():
            try:
                if (early := server.start()) is not None:
                    results[v] = early
            except FAILURES as exc:
                results[v] = {"error": str(exc)}
        for number in range(count):
            for v in alternated(variants, number):
                if v in results:
                    continue
                try:
                    servers[v].load(each)
                except FAILURES as exc:
                    results[v] = {"error": str(exc)}
        for v, server in servers.items():
            if v not in results:
                try:
                    results[v] = server.stop()
                except FAILURES as exc:
                    results[v] = {"error": str(exc)}
    finally:
        for server in servers.values():
            server.kill()
        for receiver in receivers.values():
            receiver.close()
    return {v: results[v] for v in variants}
