"""Run the real ``prometheus`` binary for tests.

``PrometheusServer`` starts Prometheus on 127.0.0.1 with a free port, a
temporary configuration scraping the given targets at a short interval and a
temporary TSDB directory, waits until ``/-/ready`` answers, and offers
``query()`` / ``wait_for_series()`` over the HTTP API. Leaving the context (or
``stop()``) terminates the process, then kills it if it lingers.

Example::

    with PrometheusServer(["127.0.0.1:9464"]) as prom:
        prom.wait_for_series('python_alloc_allocated_bytes_total{span_name="x"}')

The binary is looked up with ``shutil.which("prometheus")``, then
``/usr/bin/prometheus`` (Debian's ``prometheus`` package, installed by ``.ci/run``).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

DEFAULT_BINARY = "/usr/bin/prometheus"
MISSING_MESSAGE = (
    "the prometheus binary was not found on PATH or at /usr/bin/prometheus; "
    "run .ci/run (it installs it) or `apt-get install -y prometheus` as root"
)


class PrometheusNotFoundError(RuntimeError):
    """The ``prometheus`` binary is not installed."""


def prometheus_binary() -> str | None:
    """Path of the prometheus binary, or None if it is not installed."""
    found = shutil.which("prometheus")
    if found:
        return found
    return DEFAULT_BINARY if Path(DEFAULT_BINARY).is_file() else None


def needs_prometheus() -> list[pytest.MarkDecorator]:
    """A test module's ``pytestmark``: marked ``prometheus``, skipped without the binary."""
    return [pytest.mark.prometheus,
            pytest.mark.skipif(prometheus_binary() is None, reason=MISSING_MESSAGE)]


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    """SIGTERM the process, SIGKILL it if still running after ``timeout``; its exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    return proc.returncode


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class PrometheusServer:
    """A throwaway Prometheus scraping ``targets`` ("host:port") every ``scrape_interval``."""

    def __init__(
        self,
        targets: Sequence[str],
        scrape_interval: str = "1s",
        job: str = "test",
        features: Sequence[str] = ("exemplar-storage",),
        startup_timeout: float = 30.0,
    ) -> None:
        self.targets = list(targets)
        self.scrape_interval = scrape_interval
        self.job = job
        self.features = list(features)
        self.startup_timeout = startup_timeout
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path | None:
        return None if self._dir is None else self._dir / "prometheus.log"

    def config_text(self) -> str:
        """The prometheus.yml written for this server (JSON is valid YAML)."""
        config = {
            "global": {
                "scrape_interval": self.scrape_interval,
                "scrape_timeout": self.scrape_interval,
                "evaluation_interval": self.scrape_interval,
            },
            "scrape_configs": [
                {"job_name": self.job, "static_configs": [{"targets": self.targets}]}
            ],
        }
        return json.dumps(config, indent=2)

    def start(self) -> PrometheusServer:
        """Start the process and wait for ``/-/ready``; retries if the port was taken."""
        binary = prometheus_binary()
        if binary is None:
            raise PrometheusNotFoundError(MISSING_MESSAGE)
        self._dir = Path(tempfile.mkdtemp(prefix="otel-alloc-prometheus-"))
        config = self._dir / "prometheus.yml"
        config.write_text(self.config_text())
        for attempt in range(3):
            self.port = free_port()
            args = [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self._dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ]
            args += [f"--enable-feature={feature}" for feature in self.features]
            with open(self._dir / "prometheus.log", "ab") as log:
                self._proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
            try:
                self._wait_ready()
                return self
            except RuntimeError:
                in_use = "address already in use" in self._log_tail()
                self._terminate()
                if not in_use or attempt == 2:
                    self.stop()
                    raise
        raise AssertionError("unreachable")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                raise RuntimeError(f"prometheus exited at startup:\n{self._log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError(
            f"prometheus not ready after {self.startup_timeout}s:\n{self._log_tail()}"
        )

    def _log_tail(self, lines: int = 30) -> str:
        path = self.log_path
        if path is None or not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process(proc)

    def stop(self) -> None:
        """Terminate (then kill) the process and delete the temporary directory."""
        self._terminate()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def api(self, path: str, params: dict[str, str]) -> Any:
        """GET an HTTP API path; its ``data``, or ValueError with Prometheus's error."""
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}")
        if body.get("status") != "success":
            raise ValueError(f"Prometheus API {path} {params}: {body.get('error', body)}")
        return body["data"]

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        """Evaluate an instant query; the ``result`` list of ``/api/v1/query``.

        Scalar and string results are wrapped as ``[{"metric": {}, "value": [t, v]}]``.
        Raises ``ValueError`` if Prometheus rejects the expression.
        """
        params = {"query": promql}
        if at is not None:
            params["time"] = str(at)
        data = self.api("/api/v1/query", params)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def query_exemplars(self, promql: str, start: float, end: float) -> list[dict[str, Any]]:
        """Exemplars of the series selected by ``promql`` between ``start`` and ``end``."""
        data = self.api(
            "/api/v1/query_exemplars", {"query": promql, "start": str(start), "end": str(end)}
        )
        return list(data)

    def targets_health(self) -> list[dict[str, Any]]:
        """Active targets with their health and last scrape error."""
        data = self.api("/api/v1/targets", {"state": "active"})
        return [
            {k: t.get(k) for k in ("scrapeUrl", "health", "lastError")}
            for t in data["activeTargets"]
        ]

    def wait_for_series(self, promql: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Poll ``query(promql)`` until it returns at least one series, and return them."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(promql)
            if result:
                return result
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"no series for {promql!r} after {timeout}s; targets: {self.targets_health()}"
                )
            time.sleep(0.2)
