"""A real OTLP receiver on 127.0.0.1 for tests.

``OTLPReceiver("http")`` serves HTTP/protobuf (``POST /v1/traces``, ``/v1/metrics``,
``/v1/logs``; gzip/deflate bodies accepted; ``Export*ServiceResponse`` answers) and
``OTLPReceiver("grpc")`` the ``TraceService`` / ``MetricsService`` / ``LogsService``
servicers, both on an ephemeral port (``.endpoint``; ``.url(signal)`` for exporters).
Requests are decoded with ``opentelemetry-proto`` and stored thread-safely;
``spans()``, ``metrics()`` and ``log_records()`` flatten them with their resource
and scope, and ``wait_for()`` polls.

Fault modes, switchable at runtime with ``set_mode()``: ``"ok"``, ``"error_500"``
(HTTP 500 / gRPC ``UNAVAILABLE``, nothing stored) and ``"slow"`` (sleep
``slow_seconds`` before answering). ``stop()`` keeps the port, so ``start()`` (or
leaving ``with rx.down():``) brings the receiver back on the same endpoint::

    with OTLPReceiver("http") as rx:
        exporter = OTLPSpanExporter(endpoint=rx.url("traces"), timeout=2)
        ...
        (got,) = rx.wait_for(rx.spans)
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, NamedTuple, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as logs_pb
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc as logs_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as metrics_pb
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc as metrics_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as trace_pb
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as trace_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

Transport = Literal["http", "grpc"]
Mode = Literal["ok", "error_500", "slow"]
Signal = Literal["traces", "metrics", "logs"]
T = TypeVar("T")

MODES: tuple[Mode, ...] = ("ok", "error_500", "slow")
_MESSAGES: dict[Signal, tuple[type[Message], type[Message]]] = {
    "traces": (trace_pb.ExportTraceServiceRequest, trace_pb.ExportTraceServiceResponse),
    "metrics": (metrics_pb.ExportMetricsServiceRequest, metrics_pb.ExportMetricsServiceResponse),
    "logs": (logs_pb.ExportLogsServiceRequest, logs_pb.ExportLogsServiceResponse),
}
_PATHS: dict[str, Signal] = {f"/v1/{signal}": signal for signal in _MESSAGES}
_LAYOUT: dict[Signal, tuple[str, str, str]] = {
    "traces": ("resource_spans", "scope_spans", "spans"),
    "metrics": ("resource_metrics", "scope_metrics", "metrics"),
    "logs": ("resource_logs", "scope_logs", "log_records"),
}


def any_value(value: AnyValue) -> Any:
    """Convert an OTLP ``AnyValue`` to the matching Python value."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return attributes(value.kvlist_value.values)
    return getattr(value, kind)


def attributes(key_values: Iterable[KeyValue]) -> dict[str, Any]:
    """Convert a repeated OTLP ``KeyValue`` field to a plain dict."""
    return {kv.key: any_value(kv.value) for kv in key_values}


class ReceivedRequest(NamedTuple):
    """One accepted export request, decoded, with its HTTP headers or gRPC metadata."""

    signal: Signal
    message: Any
    metadata: dict[str, str]


class ReceivedSpan(NamedTuple):
    resource: Resource
    scope: InstrumentationScope
    span: Span


class ReceivedMetric(NamedTuple):
    resource: Resource
    scope: InstrumentationScope
    metric: Metric


class ReceivedLogRecord(NamedTuple):
    resource: Resource
    scope: InstrumentationScope
    log_record: LogRecord


class OTLPReceiver:
    """OTLP receiver (HTTP/protobuf or gRPC) on ``host`` and an ephemeral port."""

    def __init__(
        self,
        transport: Transport = "http",
        host: str = "127.0.0.1",
        port: int = 0,
        slow_seconds: float = 2.0,
    ) -> None:
        if transport not in ("http", "grpc"):
            raise ValueError(f"transport must be 'http' or 'grpc', not {transport!r}")
        self.transport: Transport = transport
        self.host, self.port = host, port
        self.mode: Mode = "ok"
        self.slow_seconds = slow_seconds
        self._lock = threading.Lock()
        self._requests: list[ReceivedRequest] = []
        self._attempts: dict[Signal, int] = dict.fromkeys(_MESSAGES, 0)
        self._stopping = threading.Event()
        self._http: ThreadingHTTPServer | None = None
        self._grpc: grpc.Server | None = None

    @property
    def endpoint(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:PORT`` (valid once started)."""
        return f"http://{self.host}:{self.port}"

    def url(self, signal: Signal) -> str:
        """Endpoint to give an exporter for ``signal`` (full path for HTTP)."""
        return f"{self.endpoint}/v1/{signal}" if self.transport == "http" else self.endpoint

    @property
    def running(self) -> bool:
        return self._http is not None or self._grpc is not None

    def start(self) -> OTLPReceiver:
        """Start listening; reuses the previous port after a ``stop()``."""
        if self.running:
            return self
        self._stopping.clear()
        if self.transport == "http":
            self._http = ThreadingHTTPServer((self.host, self.port), _make_handler(self))
            self._http.daemon_threads = True
            self.port = self._http.server_address[1]
            threading.Thread(target=self._http.serve_forever, args=(0.05,), daemon=True).start()
            return self
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        trace_grpc.add_TraceServiceServicer_to_server(_TraceServicer(self), server)
        metrics_grpc.add_MetricsServiceServicer_to_server(_MetricsServicer(self), server)
        logs_grpc.add_LogsServiceServicer_to_server(_LogsServicer(self), server)
        try:
            self.port = server.add_insecure_port(f"{self.host}:{self.port}")
        except RuntimeError as exc:
            raise OSError(f"gRPC receiver could not bind {self.host}:{self.port}") from exc
        server.start()
        self._grpc = server
        return self

    def stop(self) -> None:
        """Stop listening (connections are refused); the port is kept for ``start()``."""
        self._stopping.set()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._grpc is not None:
            self._grpc.stop(grace=None).wait(timeout=5)
            self._grpc = None

    @contextmanager
    def down(self) -> Iterator[OTLPReceiver]:
        """Context in which the receiver is stopped; it restarts on the same port on exit."""
        self.stop()
        try:
            yield self
        finally:
            self.start()

    def __enter__(self) -> OTLPReceiver:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def set_mode(self, mode: Mode, slow_seconds: float | None = None) -> None:
        """Switch to ``"ok"``, ``"error_500"`` or ``"slow"`` (optionally with a new delay)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        with self._lock:
            self.mode = mode
            if slow_seconds is not None:
                self.slow_seconds = slow_seconds

    def _admit(self, signal: Signal) -> bool:
        """Count one request and apply the fault mode; True if it is to be accepted."""
        with self._lock:
            self._attempts[signal] += 1
            mode, delay = self.mode, self.slow_seconds
        if mode == "slow" and self._stopping.wait(delay):
            return False
        return mode != "error_500" and not self._stopping.is_set()

    def _record(self, signal: Signal, message: Message, metadata: dict[str, str]) -> None:
        with self._lock:
            self._requests.append(ReceivedRequest(signal, message, metadata))

    def attempts(self, signal: Signal | None = None) -> int:
        """Requests received, including rejected ones."""
        with self._lock:
            return sum(self._attempts.values()) if signal is None else self._attempts[signal]

    def requests(self, signal: Signal | None = None) -> list[ReceivedRequest]:
        """Accepted requests, oldest first."""
        with self._lock:
            return [r for r in self._requests if signal is None or r.signal == signal]

    def clear(self) -> None:
        """Forget stored requests and attempt counts."""
        with self._lock:
            self._requests.clear()
            self._attempts = dict.fromkeys(_MESSAGES, 0)

    def _flatten(self, signal: Signal) -> Iterator[tuple[Resource, InstrumentationScope, Any]]:
        outer, inner, leaf = _LAYOUT[signal]
        for req in self.requests(signal):
            for res in getattr(req.message, outer):
                for scoped in getattr(res, inner):
                    for item in getattr(scoped, leaf):
                        yield res.resource, scoped.scope, item

    def spans(self) -> list[ReceivedSpan]:
        return [ReceivedSpan(*row) for row in self._flatten("traces")]

    def metrics(self) -> list[ReceivedMetric]:
        return [ReceivedMetric(*row) for row in self._flatten("metrics")]

    def log_records(self) -> list[ReceivedLogRecord]:
        return [ReceivedLogRecord(*row) for row in self._flatten("logs")]

    def wait_for(
        self, predicate: Callable[[], T], timeout: float = 5.0, interval: float = 0.02
    ) -> T:
        """Poll ``predicate`` until it returns a truthy value, and return that value.

        Raises ``TimeoutError`` if it is still falsy after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while not (result := predicate()):
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"condition not met within {timeout}s on {self.transport} receiver "
                    f"{self.endpoint}: attempts={self.attempts()}, accepted={len(self.requests())}"
                )
            time.sleep(interval)
        return result


def _decompress(body: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding in ("gzip", "deflate"):
        return gzip.decompress(body) if encoding == "gzip" else zlib.decompress(body)
    raise ValueError(f"unsupported Content-Encoding {encoding!r}")


def _make_handler(receiver: OTLPReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.0: one request per connection, so a stopped receiver really is down.
        protocol_version = "HTTP/1.0"

        def log_message(self, format: str, *args: Any) -> None:
            """Keep test output quiet."""

        def _reply(self, status: int, body: bytes, ctype: str = "text/plain") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            signal = _PATHS.get(self.path.split("?", 1)[0])
            if signal is None:
                self._reply(404, b"unknown OTLP path")
                return
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if not receiver._admit(signal):
                if receiver._stopping.is_set():  # went down while slow: drop the connection
                    self.close_connection = True
                else:
                    self._reply(500, b"injected failure (error_500 mode)")
                return
            request_cls, response_cls = _MESSAGES[signal]
            try:
                encoding = self.headers.get("Content-Encoding", "")
                message = request_cls.FromString(_decompress(raw, encoding))
            except (DecodeError, ValueError, OSError, zlib.error) as exc:
                self._reply(400, f"cannot decode request: {exc}".encode())
                return
            receiver._record(signal, message, {k.lower(): v for k, v in self.headers.items()})
            self._reply(200, response_cls().SerializeToString(), "application/x-protobuf")

    return Handler


class _Servicer:
    signal: Signal

    def __init__(self, receiver: OTLPReceiver) -> None:
        self._receiver = receiver

    def Export(self, request: Message, context: grpc.ServicerContext) -> Message:
        if not self._receiver._admit(self.signal):
            context.abort(grpc.StatusCode.UNAVAILABLE, "injected failure (error_500 mode)")
        metadata = {m.key: str(m.value) for m in context.invocation_metadata()}
        self._receiver._record(self.signal, request, metadata)
        return _MESSAGES[self.signal][1]()


class _TraceServicer(_Servicer, trace_grpc.TraceServiceServicer):
    signal = "traces"


class _MetricsServicer(_Servicer, metrics_grpc.MetricsServiceServicer):
    signal = "metrics"


class _LogsServicer(_Servicer, logs_grpc.LogsServiceServicer):
    signal = "logs"
