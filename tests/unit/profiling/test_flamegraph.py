"""The interactive flame graph's data, escaping and packaging (no browser here).

The page's behaviour in a real browser is tests/integration/test_flamegraph_browser.py.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import html
import json
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from otel_alloc.profiling import flamegraph
from otel_alloc.profiling.profile import Frame, Profile
from otel_alloc.profiling.render import content_type, render_report
from otel_alloc.profiling.report_server import ReportServer

ROOT = Path(__file__).resolve().parents[3]
STATIC = ROOT / "otel_alloc" / "profiling" / "static"
EVIL = "<img src=x onerror=alert(1)></script><!--"
EVIL_FILE = "</script><script>alert(2)</script>.py"


def _profile() -> Profile:
    """A profile with known figures: a hot site, recursion, and names made of markup."""
    prof = Profile(sample_bytes=1024, live=True)
    main, hot, rec = Frame("main", "app.py", 1), Frame("hot", "app.py", 5), Frame(
        "rec", "app.py", 9)
    evil = Frame(EVIL, EVIL_FILE, 3)
    prof.add_sample(1, (hot, main), "GET /", "MainThread", 3000.0, 3.0)
    prof.add_sample(2, (hot, rec, rec, rec, main), "GET /", "MainThread", 1000.0, 1.0)
    prof.add_sample(3, (main,), "GET /", "MainThread", 500.0, 1.0)
    prof.add_sample(4, (evil, main), EVIL, "worker", 1500.0, 2.0)
    prof.add_sample(5, (), "GET /", "worker", 100.0, 1.0)
    prof.free_sample(1)
    return prof


def _data(page: str) -> dict[str, Any]:
    blocks = re.findall(r'<script type="application/json" id="flame-data">(.*?)</script>',
                        page, re.S)
    assert len(blocks) == 1
    data: dict[str, Any] = json.loads(blocks[0])
    return data


def _walk(node: list[Any]) -> list[list[Any]]:
    out = [node]
    for child in node[2]:
        out += _walk(child)
    return out


def test_stacks_put_the_span_first_and_round() -> None:
    got = flamegraph.stacks(_profile())
    main = ("main", "app.py", 1)
    assert got[(("span GET /", "", 0), main, ("hot", "app.py", 5))] == 3000
    assert got[(("span GET /", "", 0), ("<no Python frame>", "", 0))] == 100
    assert got[(("span " + EVIL, "", 0), main, (EVIL, EVIL_FILE, 3))] == 1500
    assert sum(flamegraph.stacks(_profile(), thread="worker").values()) == 1600
    live = flamegraph.stacks(_profile(), value="live_bytes")
    assert sum(live.values()) == 3100  # the 3000-byte sample was freed
    with pytest.raises(ValueError, match="value must be one of"):
        flamegraph.stacks(_profile(), value="lots")


def test_collapsed_text_is_unchanged_in_format() -> None:
    text = flamegraph.collapsed(_profile(), span="GET /")
    assert text.splitlines() == [
        "span GET /;<no Python frame> 100",
        "span GET /;main (app.py:1) 500",
        "span GET /;main (app.py:1);hot (app.py:5) 3000",
        "span GET /;main (app.py:1);rec (app.py:9);rec (app.py:9);rec (app.py:9);"
        "hot (app.py:5) 1000",
    ]
    assert sum(flamegraph.parse_collapsed(text).values()) == 4600


def test_tree_values_add_up() -> None:
    stacks = flamegraph.stacks(_profile())
    data = flamegraph.flame_data(stacks, unit="bytes")
    assert data["total"] == data["root"][1] == sum(stacks.values()) == 6100
    assert data["frames"][data["root"][0]] == ["all", "", 0]
    frames = [tuple(f) for f in data["frames"]]
    assert len(frames) == len(set(frames))
    spans = {data["frames"][c[0]][0] for c in data["root"][2]}
    assert spans == {"span GET /", "span " + EVIL}
    for node in _walk(data["root"]):
        assert sum(c[1] for c in node[2]) <= node[1]
        labels = [flamegraph._label(tuple(data["frames"][c[0]])) for c in node[2]]
        assert labels == sorted(labels)
    # The recursive stack: rec three times, one under the other, 1000 bytes.
    node = data["root"]
    for name, value in (("span GET /", 4600), ("main", 4500), ("rec", 1000), ("rec", 1000),
                        ("rec", 1000), ("hot", 1000)):
        node = next(c for c in node[2] if data["frames"][c[0]][0] == name)
        assert node[1] == value


def test_script_json_cannot_close_the_script_element() -> None:
    value = {"name": EVIL, "file": EVIL_FILE, "amp": "a & b", "sep": "\u2028x"}
    text = flamegraph.script_json(value)
    assert json.loads(text) == value
    for bad in ("<", ">", "&", "\u2028"):
        assert bad not in text


def test_names_never_reach_markup() -> None:
    page = flamegraph.html_page(flamegraph.stacks(_profile()), title=f"span {EVIL}")
    # Nothing of the names is markup: the only tags are the template's own.
    assert EVIL not in page and EVIL_FILE not in page
    assert "<img" not in page
    assert len(re.findall(r"<script\b", page)) == 2 and len(re.findall(r"</script>", page)) == 2
    assert f"<title>span {html.escape(EVIL)}</title>" in page
    assert f"<h1>span {html.escape(EVIL)}</h1>" in page
    data = _data(page)
    assert [EVIL, EVIL_FILE, 3] in data["frames"]
    assert ["span " + EVIL, "", 0] in data["frames"]


def test_page_is_self_contained() -> None:
    page = render_report(_profile(), "flamegraph")
    assert page.startswith("<!DOCTYPE html>")
    assert "{{" not in page and "}}" not in page
    # Outside the data (names are only data): no URL of any kind, nothing to fetch.
    markup = re.sub(r'(<script type="application/json" id="flame-data">).*?(</script>)',
                    r"\1\2", page, flags=re.S)
    assert "://" not in markup
    assert not re.search(r"\b(src|href|action)\s*=", markup)
    assert not re.search(r"@import|url\(", markup)
    css = (STATIC / "flamegraph.css").read_text()
    js = (STATIC / "flamegraph.js").read_text()
    assert f"<style>{css}</style>" in page and f"<script>{js}</script>" in page
    # The Content-Security-Policy allows exactly the inlined script and style.
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', page)
    assert csp is not None
    policy = dict(p.strip().split(" ", 1) for p in csp.group(1).split(";"))
    assert policy["default-src"] == "'none'" and policy["connect-src"] == "'none'"
    for directive, text in (("script-src", js), ("style-src", css)):
        digest = base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
        assert policy[directive] == f"'sha256-{digest}'"


def test_render_kinds_and_content_types() -> None:
    prof = _profile()
    page = render_report(prof, "flamegraph", value="count", span="GET /")
    data = _data(page)
    assert data["unit"] == "allocations" and data["total"] == 6
    assert "count by stack — span GET /" in page
    assert content_type("flamegraph") == "text/html; charset=utf-8"
    assert content_type("top") == content_type("collapsed") == "text/plain; charset=utf-8"


def test_empty_profile_renders() -> None:
    page = render_report(Profile(sample_bytes=1024, live=False), "flamegraph")
    assert _data(page)["total"] == 0


def test_endpoint_serves_html_and_redirects_the_old_address() -> None:
    prof = _profile()
    server = ReportServer(lambda: prof)
    try:
        with urllib.request.urlopen(server.url + "/flamegraph.html?span=GET+/",
                                    timeout=10) as r:
            assert r.headers["Content-Type"] == "text/html; charset=utf-8"
            assert _data(r.read().decode())["total"] == 4600
        with urllib.request.urlopen(server.url + "/report?kind=flamegraph", timeout=10) as r:
            assert r.headers["Content-Type"] == "text/html; charset=utf-8"

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args: Any, **kwargs: Any) -> None:
                return None

        opener = urllib.request.build_opener(NoRedirect)
        with pytest.raises(urllib.error.HTTPError) as moved:
            opener.open(server.url + "/flamegraph.svg?value=count", timeout=10)
        assert moved.value.code == 301
        assert moved.value.headers["Location"] == "/flamegraph.html?value=count"
    finally:
        server.close()


def test_static_files_ship_in_wheels_and_sdists() -> None:
    if sys.version_info < (3, 11):
        pytest.skip("tomllib is 3.11+")
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["otel_alloc.profiling"]
    manifest = (ROOT / "MANIFEST.in").read_text()
    files = sorted(p.name for p in STATIC.iterdir())
    assert files == ["flamegraph.css", "flamegraph.html", "flamegraph.js"]
    for name in files:
        assert any(fnmatch.fnmatch(f"static/{name}", p) for p in patterns), name
        assert f"*{Path(name).suffix}" in manifest
    assert "recursive-include otel_alloc/profiling/static" in manifest
