"""Headless Chromium driven through the DevTools protocol, for page tests.

``Chromium`` starts Debian's ``chromium`` headless with a throw-away profile
and ``--remote-debugging-port=0``, reads the port Chromium chose from the
``DevToolsActivePort`` file in the profile folder, and talks to the browser
over one websocket (``websocket-client``). ``new_page()`` opens a tab and
returns a :class:`Page` whose ``call`` sends a command to that tab and waits
for its answer; every event that arrives meanwhile is kept in ``Page.events``
(network requests, console messages, exceptions, dialogs).

Every wait has a deadline: a command that gets no answer raises
``TimeoutError`` instead of hanging. Leaving the context (or ``close()``)
terminates Chromium's process group, kills it if it lingers, and waits.

Example::

    with Chromium() as browser:
        page = browser.new_page()
        page.navigate("file:///tmp/flame.html")
        assert page.evaluate("document.title") == "..."
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import websocket

MISSING_MESSAGE = (
    "chromium was not found on PATH; scripts/test.sh installs it as root "
    "(or run `apt-get install -y chromium`)"
)
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--disable-default-apps", "--no-first-run",
    "--no-default-browser-check", "--metrics-recording-only", "--mute-audio",
    "--window-size=1280,900", "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
)


def find_chromium() -> str | None:
    """Path of the chromium binary, or ``None``."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


class CDPError(RuntimeError):
    """A DevTools command answered with an error."""


class Page:
    """One tab, attached to with a flat session on the browser's websocket."""

    def __init__(self, browser: Chromium, session: str, target: str) -> None:
        self._browser = browser
        self.session = session
        self.target = target
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, timeout: float = 30.0, **params: Any) -> dict[str, Any]:
        """Send ``method`` to this tab and return its result."""
        return self._browser.call(method, params, session=self.session, timeout=timeout)

    def wait_event(self, method: str, timeout: float = 30.0) -> dict[str, Any]:
        """The first event ``method`` not yet waited for (waits for it if needed)."""
        deadline = time.monotonic() + timeout
        while True:
            for i, ev in enumerate(self.events):
                if ev["method"] == method and not ev.get("_seen"):
                    self.events[i]["_seen"] = True
                    return ev
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {method} event within {timeout} s")
            self._browser.pump(min(1.0, max(deadline - time.monotonic(), 0.01)))

    def navigate(self, url: str, timeout: float = 30.0) -> None:
        """Load ``url`` and wait for its load event."""
        for ev in self.events:  # an earlier page's load event does not count
            ev["_seen"] = True
        self.call("Page.navigate", url=url)
        self.wait_event("Page.loadEventFired", timeout=timeout)

    def evaluate(self, expression: str, timeout: float = 30.0) -> Any:
        """Value of a JavaScript expression in the page (JSON-serialisable)."""
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                        awaitPromise=True, timeout=timeout)
        if "exceptionDetails" in res:
            raise CDPError(f"{expression!r} threw: {res['exceptionDetails']}")
        return res["result"].get("value")

    def mouse(self, kind: str, x: float, y: float, **extra: Any) -> None:
        """One real mouse event at page coordinates (``mouseMoved``, ``mousePressed``...)."""
        self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, **extra)

    def click(self, x: float, y: float) -> None:
        """A left click at page coordinates, as a user makes it."""
        self.mouse("mouseMoved", x, y)
        self.mouse("mousePressed", x, y, button="left", clickCount=1)
        self.mouse("mouseReleased", x, y, button="left", clickCount=1)

    def of(self, method: str) -> list[dict[str, Any]]:
        """Params of every event ``method`` received so far."""
        self._browser.pump(0.05)
        return [ev["params"] for ev in self.events if ev["method"] == method]


class Chromium:
    """A headless Chromium with its DevTools websocket."""

    def __init__(self, binary: str | None = None, start_timeout: float = 30.0) -> None:
        exe = binary or find_chromium()
        if exe is None:
            raise FileNotFoundError(MISSING_MESSAGE)
        self._dir = tempfile.mkdtemp(prefix="otel-alloc-chromium-")
        self._log = open(Path(self._dir) / "chromium.log", "wb")  # noqa: SIM115
        self._next_id = 0
        self._pages: dict[str, Page] = {}
        self._ws: websocket.WebSocket | None = None
        self.proc = subprocess.Popen(
            [exe, *FLAGS, f"--user-data-dir={self._dir}/profile", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True)
        try:
            self._ws = websocket.create_connection(
                self._endpoint(start_timeout), timeout=start_timeout, suppress_origin=True)
        except BaseException:
            self.close()
            raise

    def _endpoint(self, timeout: float) -> str:
        port_file = Path(self._dir) / "profile" / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.proc.returncode}: "
                                   + self.log()[-2000:])
            lines = port_file.read_text().split() if port_file.exists() else []
            if len(lines) >= 2:
                return f"ws://127.0.0.1:{lines[0]}{lines[1]}"
            time.sleep(0.05)
        raise TimeoutError(f"chromium wrote no DevToolsActivePort within {timeout} s: "
                           + self.log()[-2000:])

    def log(self) -> str:
        """What Chromium printed so far."""
        self._log.flush()
        return (Path(self._dir) / "chromium.log").read_text(errors="replace")

    def _dispatch(self, message: dict[str, Any]) -> None:
        page = self._pages.get(message.get("sessionId", ""))
        if page is not None and "method" in message:
            page.events.append(message)

    def pump(self, timeout: float) -> None:
        """Read the events that arrive within ``timeout`` seconds."""
        assert self._ws is not None
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self._ws.settimeout(left)
            try:
                raw = self._ws.recv()
            except websocket.WebSocketTimeoutException:
                return
            self._dispatch(json.loads(raw))

    def call(self, method: str, params: dict[str, Any] | None = None, *,
             session: str | None = None, timeout: float = 30.0) -> dict[str, Any]:
        """Send one command and wait (at most ``timeout`` s) for its answer."""
        assert self._ws is not None
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            msg["sessionId"] = session
        self._ws.send(json.dumps(msg))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{method}: no answer within {timeout} s")
            self._ws.settimeout(left)
            try:
                answer = json.loads(self._ws.recv())
            except websocket.WebSocketTimeoutException:
                raise TimeoutError(f"{method}: no answer within {timeout} s") from None
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise CDPError(f"{method}: {answer['error']}")
                result: dict[str, Any] = answer.get("result", {})
                return result
            self._dispatch(answer)

    def new_page(self) -> Page:
        """A new tab with the Page, Runtime, Network and Log domains on."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget",
                            {"targetId": target, "flatten": True})["sessionId"]
        page = self._pages[session] = Page(self, session, target)
        for domain in ("Page", "Runtime", "Network", "Log"):
            page.call(f"{domain}.enable")
        return page

    def close(self) -> None:
        """Close the websocket, end Chromium's process group and wait for it."""
        if self._ws is not None:
            with contextlib.suppress(OSError):
                self._ws.close()
            self._ws = None
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            except ProcessLookupError:
                pass
        # Whatever Chromium left of its group (renderers, zygote): killed, and
        # waited for (a little) until they are gone.
        deadline = time.monotonic() + 5
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
            while time.monotonic() < deadline:
                time.sleep(0.05)
                os.killpg(self.proc.pid, 0)
        except (ProcessLookupError, PermissionError):
            pass
        self._log.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
