"""Optional HTTP endpoint serving the live profile, bound to loopback by default."""

from __future__ import annotations

import ipaddress
import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlparse

from otel_alloc import validation as config
from otel_alloc.profiling.profile import Profile
from otel_alloc.profiling.render import CLI_FLAGS, ReportOptions, content_type, render
from otel_alloc.profiling.scope import UnsampledHTTPServer

LOOPBACK = "127.0.0.1"


def parse_address(value: str | None, setting: str = "OTEL_ALLOC_REPORT_ADDRESS") -> tuple[str, int]:
    """``[host:]port`` -> (host, port); the host defaults to loopback.

    Args:
        value: The address, or ``None`` to read the ``setting`` variable.
        setting: The setting ``value`` came from, as error messages name it.
    """
    raw = value if value is not None else config.env_value(setting)
    accepted = "[host:]port with port 0-65535 (host defaults to 127.0.0.1)"
    if raw is None:
        raise config.ConfigError(setting, raw, accepted)
    host, _, port = raw.rpartition(":")
    host = host.strip("[]") or LOOPBACK
    try:
        number = int(port)
        if not 0 <= number <= 65535:
            raise ValueError
        if host != "localhost":
            ipaddress.ip_address(host)
    except ValueError:
        raise config.ConfigError(setting, raw, accepted) from None
    return host, number


def _options(query: dict[str, str], kind: str | None) -> ReportOptions:
    """A report request from the endpoint's query string (``kind`` fixed by the path).

    Raises:
        ConfigError: An unknown parameter, or ``n`` that is not a number.
    """
    known = set(CLI_FLAGS) - ({"kind"} if kind is not None else set())
    for name, given in query.items():
        if name not in known:
            raise config.ConfigError(name, given, "one of " + ", ".join(sorted(known)))
    n = query.get("n")
    if n is not None and not n.isdigit():
        raise config.ConfigError("n", n, "a number of rows >= 1")
    return ReportOptions(kind or query.get("kind", "top"), query.get("span"),
                         query.get("thread"), query.get("key"), query.get("value"),
                         int(n) if n is not None else None)


class ReportServer:
    """Serves ``/profile.json``, ``/report``, ``/collapsed.txt`` and ``/flamegraph.html``.

    ``/flamegraph.html`` is the interactive flame graph (``text/html``);
    ``/flamegraph.svg``, its old address, redirects there.

    Binds to 127.0.0.1 unless another host is given explicitly.
    """

    def __init__(self, profile: Callable[[], Profile | None], host: str = LOOPBACK,
                 port: int = 0) -> None:
        get_profile = profile

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlparse(self.path)
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                prof = get_profile()
                if prof is None:
                    self._send(404, "text/plain", b"sampling is off (sample_bytes=0)\n")
                    return
                try:
                    if url.path == "/flamegraph.svg":
                        target = "/flamegraph.html" + (f"?{url.query}" if url.query else "")
                        self._send(301, "text/plain", f"moved to {target}\n".encode(),
                                   location=target)
                    elif url.path == "/profile.json":
                        body = json.dumps(prof.to_json()).encode()
                        self._send(200, "application/json", body)
                    elif url.path in ("/report", "/collapsed.txt", "/flamegraph.html"):
                        fixed = {"/collapsed.txt": "collapsed",
                                 "/flamegraph.html": "flamegraph"}.get(url.path)
                        options = _options(query, fixed)
                        options.check({o: o for o in CLI_FLAGS})
                        self._send(200, content_type(options.kind),
                                   render(prof, options).encode())
                    else:
                        self._send(404, "text/plain",
                                   b"try /profile.json, /report?kind=top|live|threads|churn, "
                                   b"/collapsed.txt, /flamegraph.html\n")
                except (ValueError, KeyError) as err:  # ConfigError is a ValueError
                    self._send(400, "text/plain; charset=utf-8", f"{err}\n".encode())

            def _send(self, status: int, ctype: str, body: bytes,
                      location: str | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                if location is not None:
                    self.send_header("Location", location)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = UnsampledHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        bound = self._server.server_address
        self.host: str = str(bound[0])
        self.port: int = int(bound[1])
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="otel-alloc-report", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """Base URL of the endpoint."""
        return f"http://{self.host}:{self.port}"

    def close(self) -> None:
        """Stop serving (safe to call twice)."""
        self._server.shutdown()
        self._server.server_close()
