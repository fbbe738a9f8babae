"""The interactive flame graph in a real headless Chromium (DevTools protocol).

A real profile comes from ``otel-alloc run --profile`` on a script with a hot
site, a recursive function (one function several times on a stack) and a
function and a span named like markup; the page is what ``otel-alloc report
--kind flamegraph`` writes and what ``--serve`` serves. Clicks and hovers are
real mouse events at the frames' coordinates; expected figures are computed
here in Python from the same profile.
"""

from __future__ import annotations

import json
import re
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from otel_alloc.profiling.flamegraph import collapsed, parse_collapsed
from otel_alloc.profiling.profile import Profile
from otel_alloc.units import format_bytes
from tests.integration.test_runner import run_cli, served
from tests.support.browser import MISSING_MESSAGE, Chromium, Page, find_chromium

pytestmark = pytest.mark.skipif(find_chromium() is None, reason=MISSING_MESSAGE)

EVIL = "<img src=x onerror=alert(1)></script>"
EVIL_SPAN = "<img src=x onerror=alert(2)>"

SCRIPT = textwrap.dedent("""
    import sys, time
    from opentelemetry import trace
    tracer = trace.get_tracer("flame")

    def hot_site(n):
        return [bytearray(4000) for _ in range(n)]

    def recurse_down(depth, n):
        if depth:
            return recurse_down(depth - 1, n)
        return hot_site(n)

    def evil(n):
        out = []
        for _ in range(n):
            out.append(bytearray(4000))
        return out

    EVIL = %r
    names = {"co_name": EVIL}
    if sys.version_info >= (3, 11):
        names["co_qualname"] = EVIL
    evil.__code__ = evil.__code__.replace(**names)

    keep = []
    with tracer.start_as_current_span("hot"):
        keep.append(hot_site(6000))
    with tracer.start_as_current_span("recursive"):
        keep.append(recurse_down(3, 4000))
    with tracer.start_as_current_span(%r):
        keep.append(evil(3000))
    print("ready", flush=True)
    if len(sys.argv) > 1:
        time.sleep(float(sys.argv[1]))
""") % (EVIL, EVIL_SPAN)

# Locates a frame by labels on its path from the span down (substrings): the
# first names the span, the last the frame, the others are on the way in
# order (all of them, with exact=true). Returns its node index, or -1.
FIND = """((path, exact) => {
  for (const n of window.flamegraph.nodes) {
    const labels = [];
    for (let up = n; up && up.parent; up = up.parent) labels.unshift(up.label);
    if (!labels.length || (exact && labels.length !== path.length)) continue;
    if (!labels[0].includes(path[0]) || !labels.at(-1).includes(path.at(-1))) continue;
    let i = 0;
    for (const label of labels) if (i < path.length && label.includes(path[i])) i++;
    if (i === path.length) return n.index;
  }
  return -1;
})(%s, %s)"""

ANCESTORS = """((i) => {
  const out = [];
  for (let up = window.flamegraph.nodes[i].parent; up; up = up.parent) out.push(up.index);
  return out;
})(%d)"""

RECT = """(() => {
  const el = document.querySelector('.frame[data-index="%d"]');
  if (!el) return null;
  const r = el.getBoundingClientRect();
  return {x: r.left, y: r.top, w: r.width, h: r.height, cls: el.className,
          text: el.textContent};
})()"""

CHART = """(() => {
  const r = document.getElementById('chart').getBoundingClientRect();
  return {x: r.left, w: r.width};
})()"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Chromium]:
    chromium = Chromium()
    try:
        yield chromium
    finally:
        chromium.close()


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A real profile, and the flame graphs ``otel-alloc report`` writes of it."""
    tmp = tmp_path_factory.mktemp("flame")
    script = tmp / "flame_sites.py"
    script.write_text(SCRIPT)
    prof = tmp / "prof.json"
    res = run_cli("run", "--mode", "live", "--no-table", "--profile", str(prof), str(script),
                  OTEL_ALLOC_SAMPLE_BYTES="64KiB")
    assert res.returncode == 0, res.stderr
    page = tmp / "flame.html"
    res = run_cli("report", "--file", str(prof), "--kind", "flamegraph", "-o", str(page))
    assert res.returncode == 0, res.stderr
    evil_page = tmp / "evil.html"
    res = run_cli("report", "--file", str(prof), "--kind", "flamegraph", "--span", EVIL_SPAN,
                  "-o", str(evil_page))
    assert res.returncode == 0, res.stderr
    return {"script": script, "profile": prof, "page": page, "evil_page": evil_page}


def python_stacks(made: dict[str, Path]) -> dict[tuple[str, ...], int]:
    return parse_collapsed(collapsed(Profile.load(str(made["profile"])), value="bytes"))


def expected_share(stacks: dict[tuple[str, ...], int], query: str) -> float:
    """Share of the total of the stacks with a frame matching ``query``: each once."""
    q = query.lower()
    total = sum(stacks.values())
    return sum(v for k, v in stacks.items() if any(q in f.lower() for f in k)) / total


def prefix_value(stacks: dict[tuple[str, ...], int], path: tuple[str, ...]) -> int:
    return sum(v for k, v in stacks.items() if k[:len(path)] == path)


def open_page(browser: Chromium, url: str) -> Page:
    page = browser.new_page()
    page.navigate(url)
    assert page.evaluate("document.querySelectorAll('.frame').length") > 2
    return page


def find(page: Page, *path: str, exact: bool = False) -> int:
    index = page.evaluate(FIND % (json.dumps(list(path)), json.dumps(exact)))
    assert index >= 0, f"no frame on path {path}"
    return int(index)


def rect(page: Page, index: int) -> dict[str, Any] | None:
    return page.evaluate(RECT % index)  # type: ignore[no-any-return]


def type_search(page: Page, text: str) -> dict[str, Any]:
    box = page.evaluate("(() => { const r = document.getElementById('search')"
                        ".getBoundingClientRect(); return [r.left + 5, r.top + r.height / 2]; })()")
    page.click(*box)
    page.evaluate("document.getElementById('search').select()")
    page.call("Input.insertText", text=text)
    return page.evaluate(  # type: ignore[no-any-return]
        "(() => { const m = document.getElementById('matched');"
        " return {text: m.textContent, share: Number(m.dataset.share),"
        " hits: [...document.querySelectorAll('.frame.match')].map("
        "   e => window.flamegraph.nodes[Number(e.dataset.index)].label)}; })()")


def assert_quiet(page: Page, url: str) -> None:
    """Only the page itself was requested; no errors, no CSP reports, no dialogs."""
    urls = [e["request"]["url"] for e in page.of("Network.requestWillBeSent")]
    assert urls == [url], urls
    assert not page.of("Runtime.exceptionThrown")
    assert not page.of("Page.javascriptDialogOpening")
    errors = [e["entry"] for e in page.of("Log.entryAdded") if e["entry"]["level"] == "error"]
    assert not errors, errors


def test_click_zooms_and_reset_restores(browser: Chromium, made: dict[str, Path]) -> None:
    url = made["page"].as_uri()
    page = open_page(browser, url)
    chart = page.evaluate(CHART)
    hot = find(page, "span hot", "flame_sites.py", "hot_site (")
    before = rect(page, hot)
    assert before is not None and before["w"] < chart["w"] * 0.9
    page.click(before["x"] + min(before["w"] / 2, 20), before["y"] + before["h"] / 2)
    after = rect(page, hot)
    assert after is not None
    assert after["w"] == pytest.approx(chart["w"], abs=1)
    assert after["x"] == pytest.approx(chart["x"], abs=1)
    assert after["y"] == pytest.approx(before["y"], abs=0.5)  # stays at its depth
    # Its ancestors (up to "all") stay shown, full width and dimmed; frames
    # outside it go.
    ancestors = page.evaluate(ANCESTORS % hot)
    assert len(ancestors) > 2
    assert page.evaluate("document.querySelectorAll('.frame.ancestor').length") == len(ancestors)
    for ancestor in ancestors:
        r = rect(page, ancestor)
        assert r is not None and "ancestor" in r["cls"]
        assert r["w"] == pytest.approx(chart["w"], abs=1)
    assert rect(page, find(page, "span recursive")) is None
    assert page.evaluate("document.getElementById('reset').disabled") is False
    box = page.evaluate("(() => { const r = document.getElementById('reset')"
                        ".getBoundingClientRect(); return [r.left + 5, r.top + 5]; })()")
    page.click(*box)
    again = rect(page, hot)
    assert again is not None and again["w"] == pytest.approx(before["w"], abs=0.5)
    assert rect(page, find(page, "span recursive")) is not None
    assert page.evaluate("document.getElementById('reset').disabled") is True
    assert_quiet(page, url)


def test_search_shows_the_share_python_computes(browser: Chromium,
                                                 made: dict[str, Path]) -> None:
    url = made["page"].as_uri()
    page = open_page(browser, url)
    stacks = python_stacks(made)
    total = sum(stacks.values())
    for query in ("hot_site", "recurse_down", "HOT_SITE", "flame_sites.py", "no-such-frame"):
        shown = type_search(page, query)
        share = expected_share(stacks, query)
        if share == 0:
            assert shown["text"] == "no match" and not shown["hits"]
            continue
        assert shown["share"] == pytest.approx(share, rel=1e-12)
        assert shown["text"] == f"matched {100 * share:.1f}% of {format_bytes(total)}"
        assert shown["hits"] and all(query.lower() in h.lower() for h in shown["hits"])
    # recurse_down is four times on each of its stacks: adding up every
    # highlighted frame would count those samples four times.
    recursive = expected_share(stacks, "recurse_down")
    naive = sum(v * sum("recurse_down" in f for f in k) for k, v in stacks.items()) / total
    assert naive > 3 * recursive > 0
    # Clearing the search clears the highlights.
    page.evaluate("(() => { const s = document.getElementById('search'); s.value = '';"
                  " s.dispatchEvent(new Event('input')); })()")
    assert page.evaluate("document.querySelectorAll('.frame.match').length") == 0
    assert page.evaluate("document.getElementById('matched').textContent") == ""
    assert_quiet(page, url)


def test_hover_shows_function_place_value_and_share(browser: Chromium,
                                                     made: dict[str, Path]) -> None:
    url = made["page"].as_uri()
    page = open_page(browser, url)
    stacks = python_stacks(made)
    total = sum(stacks.values())
    stack = next(k for k in stacks if k[0] == "span hot" and "hot_site (" in ";".join(k))
    path = stack[:next(i for i, f in enumerate(stack) if f.startswith("hot_site (")) + 1]
    function, place = re.fullmatch(r"(.*) \((.*)\)", path[-1]).groups()  # type: ignore[union-attr]
    value = prefix_value(stacks, path)
    r = rect(page, find(page, *path, exact=True))
    assert r is not None
    page.mouse("mouseMoved", r["x"] + min(r["w"] / 2, 20), r["y"] + r["h"] / 2)
    details = page.evaluate("document.getElementById('details').textContent")
    assert details == (f"{function} \u2014 {place} \u2014 {format_bytes(value)} "
                       f"({100 * value / total:.1f}% of the total)")
    assert place == f"{made['script']}:{place.rsplit(':', 1)[1]}"
    page.mouse("mouseMoved", 2, 2)  # off the chart: the details go
    assert page.evaluate("document.getElementById('details').textContent") == ""
    # The page's byte formatting is Python's, ties included.
    for n in (0, 1023, 1024, 1280, 1792, 1_048_576 * 2.25, 5 * 1024**3, 1_234_567_891_234):
        assert page.evaluate(f"window.flamegraph.formatValue({n})") == format_bytes(n)
    assert_quiet(page, url)


def test_markup_in_names_stays_text(browser: Chromium, made: dict[str, Path]) -> None:
    url = made["evil_page"].as_uri()
    page = open_page(browser, url)
    evil = page.evaluate(  # the widest first
        f"window.flamegraph.nodes.filter(n => n.fn === {json.dumps(EVIL)})"
        ".sort((a, b) => b.value - a.value).map(n => [n.index, n.label])")
    assert evil and all(label.startswith(EVIL + " (") for _, label in evil)
    r = rect(page, evil[0][0])
    assert r is not None and r["text"].startswith(EVIL)
    page.mouse("mouseMoved", r["x"] + 5, r["y"] + r["h"] / 2)
    assert page.evaluate("document.getElementById('details').textContent").startswith(EVIL)
    assert type_search(page, "onerror")["hits"]
    assert page.evaluate("document.querySelectorAll('img').length") == 0
    assert page.evaluate("document.scripts.length") == 2  # the data and the page's own
    heading = f"bytes by stack — span {EVIL_SPAN}"
    assert page.evaluate("document.title") == heading
    assert page.evaluate("document.querySelector('h1').textContent") == heading
    assert_quiet(page, url)


def test_served_by_the_report_endpoint(browser: Chromium, made: dict[str, Path]) -> None:
    with served(made["script"], "60", run_args=("--no-table",)) as base:
        deadline = time.monotonic() + 20
        while True:
            with urllib.request.urlopen(base + "/collapsed.txt", timeout=10) as res:
                if "hot_site" in res.read().decode() or time.monotonic() > deadline:
                    break
            time.sleep(0.3)
        url = base + "/flamegraph.html"
        with urllib.request.urlopen(url, timeout=10) as res:
            assert res.status == 200
            assert res.headers["Content-Type"] == "text/html; charset=utf-8"
            assert res.read().decode().startswith("<!DOCTYPE html>")
        with urllib.request.urlopen(base + "/flamegraph.svg?value=count", timeout=10) as res:
            assert res.url == base + "/flamegraph.html?value=count"  # the old address redirects
            assert res.headers["Content-Type"] == "text/html; charset=utf-8"
        page = open_page(browser, url)
        responses = page.of("Network.responseReceived")
        assert [r["response"]["mimeType"] for r in responses] == ["text/html"]
        # The share shown, against the per-stack share of the data the page holds.
        data = json.loads(page.evaluate("document.getElementById('flame-data').textContent"))
        stacks = tree_stacks(data)
        shown = type_search(page, "hot_site")
        share = expected_share(stacks, "hot_site")
        assert share > 0 and shown["share"] == pytest.approx(share, rel=1e-12)
        assert shown["text"] == f"matched {100 * share:.1f}% of {format_bytes(data['total'])}"
        r = rect(page, find(page, "span hot"))
        assert r is not None
        page.click(r["x"] + 5, r["y"] + r["h"] / 2)
        r = rect(page, find(page, "span hot"))
        assert r is not None and r["w"] == pytest.approx(page.evaluate(CHART)["w"], abs=1)
        assert_quiet(page, url)


def tree_stacks(data: dict[str, Any]) -> dict[tuple[str, ...], int]:
    """Stacks back from the page's tree: each node's own value ends a stack there."""
    frames = data["frames"]
    out: dict[tuple[str, ...], int] = {}

    def walk(node: list[Any], path: tuple[str, ...]) -> None:
        fn, file, line = frames[node[0]]
        here = (*path, f"{fn} ({file}:{line})" if file else fn)
        own = node[1] - sum(c[1] for c in node[2])
        if own:
            out[here[1:]] = own  # without the "all" root, as collapsed stacks are
        for child in node[2]:
            walk(child, here)

    walk(data["root"], ())
    return out
