"""Run the traced example web service as a subprocess, exporting Prometheus metrics.

``TracedWebService`` starts ``python -m otel_alloc run --mode live
examples/web_service.py --port PORT`` with the OpenTelemetry SDK's Prometheus
exporter serving ``/metrics`` on a second loopback port, waits until both ports
answer, and stops the service with SIGTERM (then SIGKILL if it lingers)::

    with TracedWebService({"OTEL_ALLOC_LEAK_GRACE_SECONDS": "2"}) as app:
        app.get("/report")
        PrometheusServer([app.metrics_target])  # "127.0.0.1:PORT"

The readiness check does not send HTTP requests to the service (every request
opens a span): it only connects to the service port, and fetches ``/metrics``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from tests.support.prometheus import free_port, stop_process

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "web_service.py"


class TracedWebService:
    """``examples/web_service.py`` under ``otel-alloc run``, metrics at ``metrics_url``."""

    def __init__(self, env: Mapping[str, str] | None = None, mode: str = "live",
                 startup_timeout: float = 30.0) -> None:
        self.extra_env = dict(env or {})
        self.mode = mode
        self.startup_timeout = startup_timeout
        self.port = 0
        self.metrics_port = 0
        self.returncode: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_target(self) -> str:
        """``host:port`` of the metrics endpoint, as a Prometheus scrape target."""
        return f"127.0.0.1:{self.metrics_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.metrics_target}/metrics"

    def environment(self) -> dict[str, str]:
        """The child's environment: ours without OTEL_*, plus the exporter settings."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("OTEL_", "PYTHONPATH"))}
        env.update({
            "OTEL_SERVICE_NAME": "otel-alloc-web-service",
            "OTEL_METRICS_EXPORTER": "prometheus",
            "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
            "OTEL_EXPORTER_PROMETHEUS_PORT": str(self.metrics_port),
            "OTEL_TRACES_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
        })
        env.update(self.extra_env)
        return env

    def start(self) -> TracedWebService:
        """Start the service and wait for both ports; retries if a port was taken."""
        fd, log = tempfile.mkstemp(prefix="otel-alloc-web-service-", suffix=".log")
        os.close(fd)
        self._log = Path(log)
        for attempt in range(3):
            self.port, self.metrics_port = free_port(), free_port()
            if self.port == self.metrics_port:
                continue
            args = [sys.executable, "-m", "otel_alloc", "run", "--mode", self.mode,
                    str(SCRIPT), "--port", str(self.port)]
            with open(self._log, "ab") as out:
                self._proc = subprocess.Popen(args, cwd=ROOT, env=self.environment(),
                                              stdout=out, stderr=subprocess.STDOUT)
            try:
                self._wait_ready()
                return self
            except RuntimeError:
                in_use = "address already in use" in self.log_tail().lower()
                self.stop()
                if not in_use or attempt == 2:
                    raise
        raise RuntimeError("could not find two free ports")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        port_ok = metrics_ok = False
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                raise RuntimeError(f"the web service exited at startup:\n{self.log_tail()}")
            if not port_ok:
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    port_ok = True
                except OSError:
                    pass
            if not metrics_ok:
                try:
                    with urllib.request.urlopen(self.metrics_url, timeout=2) as resp:
                        metrics_ok = resp.status == 200
                except (urllib.error.URLError, OSError):
                    pass
            if port_ok and metrics_ok:
                return
            time.sleep(0.1)
        raise RuntimeError(f"the web service was not ready after {self.startup_timeout}s "
                           f"(http port: {port_ok}, metrics: {metrics_ok}):\n{self.log_tail()}")

    def get(self, path: str, timeout: float = 30.0) -> bytes:
        """GET ``path`` from the service; raises unless it answers 200."""
        with urllib.request.urlopen(f"{self.url}{path}", timeout=timeout) as resp:
            if resp.status != 200:
                raise AssertionError(f"GET {path}: HTTP {resp.status}")
            body: bytes = resp.read()
            return body

    def metrics_text(self) -> str:
        """The current ``/metrics`` page."""
        with urllib.request.urlopen(self.metrics_url, timeout=10) as resp:
            return str(resp.read().decode())

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the service's stdout and stderr."""
        if self._log is None or not self._log.exists():
            return ""
        return "\n".join(self._log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code (idempotent)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            self.returncode = stop_process(proc, timeout)
        return self.returncode

    def close(self) -> None:
        """Stop the service and delete its log."""
        self.stop()
        if self._log is not None:
            self._log.unlink(missing_ok=True)
            self._log = None

    def __enter__(self) -> TracedWebService:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()
