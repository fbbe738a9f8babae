"""A small web service with endpoints of different allocation profiles.

    otel-alloc run --mode live examples/web_service.py --port 8000
    curl localhost:8000/items  # ... then Ctrl-C: the table is printed

    otel-alloc run --mode live examples/web_service.py --demo 300
    # serves on a free port, sends 300 requests to itself, stops, prints the table

    otel-alloc run --mode live --native examples/web_service.py --demo 300
    # also charges what SQLite (a C library) allocates with malloc

Endpoints:
    /health   almost nothing
    /items    totals prices in an in-memory SQLite database (native memory),
              builds and serialises a JSON list (moderate, all freed)
    /report   a large CSV in memory (big, all freed)
    /cache    keeps every response in a module-level dict: leaks
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry import trace

tracer = trace.get_tracer("examples.web_service")
_CACHE: dict[int, bytes] = {}


def health() -> bytes:
    return b"ok"


def items() -> bytes:
    rows = [{"id": i, "name": f"item-{i}", "price": i * 1.5} for i in range(500)]
    with sqlite3.connect(":memory:") as db:  # SQLite's pages come from malloc
        db.execute("create table items (id integer, price real)")
        db.executemany("insert into items values (?, ?)", [(r["id"], r["price"]) for r in rows])
        (total,) = db.execute("select sum(price) from items").fetchone()
    db.close()
    return json.dumps({"total": total, "items": rows}).encode()


def report() -> bytes:
    rng = random.Random(7)
    lines = [",".join(str(rng.random()) for _ in range(10)) for _ in range(5000)]
    return "\n".join(lines).encode()[:1000]


def cache() -> bytes:
    key = len(_CACHE)
    _CACHE[key] = bytes(50_000)  # never evicted
    return str(key).encode()


ROUTES = {"/health": health, "/items": items, "/report": report, "/cache": cache}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        route = ROUTES.get(self.path)
        with tracer.start_as_current_span(f"GET {self.path}" if route else "GET unknown",
                                          kind=trace.SpanKind.SERVER) as span:
            span.set_attribute("http.route", self.path)
            status, body = (200, route()) if route else (404, b"not found")
            span.set_attribute("http.response.status_code", status)
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def demo(server: ThreadingHTTPServer, requests: int) -> None:
    port = server.server_address[1]
    paths = ["/health", "/items", "/items", "/report", "/cache"]
    for i in range(requests):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{paths[i % len(paths)]}") as r:
            r.read()
    server.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--demo", type=int, metavar="N",
                        help="serve on a free port, send N requests to itself, then stop")
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0 if args.demo else args.port), Handler)
    if args.demo:
        threading.Thread(target=demo, args=(server, args.demo), daemon=True).start()
    else:
        print(f"serving on http://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
