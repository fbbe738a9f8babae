"""Flame graphs of sampled allocations: collapsed stacks and an interactive HTML page.

The collapsed format (``root;caller;callee value`` per line) is what
flamegraph.pl and speedscope read. The HTML flame graph is one self-contained
file: the page template, its CSS and its JavaScript ship in ``static/`` and
are inlined when it is rendered, with the tree embedded as JSON; it fetches
nothing. Values are estimated bytes or counts.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from otel_alloc.profiling.profile import NO_STACK, Profile

VALUES = ("bytes", "count", "live_bytes", "live_count")

# (function, file, line); the file is empty for the span root and NO_STACK.
FrameKey = tuple[str, str, int]
Stacks = dict[tuple[FrameKey, ...], int]


def _label(frame: FrameKey) -> str:
    function, filename, line = frame
    return f"{function} ({filename}:{line})" if filename else function


def stacks(profile: Profile, *, value: str = "bytes", span: str | None = None,
           thread: str | None = None) -> Stacks:
    """Estimated values per distinct stack, outermost frame (the span) first.

    Args:
        profile: The sampled profile.
        value: ``bytes``, ``count``, ``live_bytes`` or ``live_count``.
        span: Only this span name.
        thread: Only this thread.

    Returns:
        Stack (``span <name>`` root, then frames outermost first) -> rounded
        value; stacks that round to zero are left out.

    Raises:
        ValueError: An unknown ``value``.
    """
    if value not in VALUES:
        raise ValueError(f"value must be one of {', '.join(VALUES)}, not {value!r}")
    totals: dict[tuple[FrameKey, ...], float] = {}
    for (stack, sp, th), st in profile.snapshot().items():
        if (span is not None and sp != span) or (thread is not None and th != thread):
            continue
        v = {"bytes": st.alloc_bytes, "count": st.alloc_count,
             "live_bytes": st.live_bytes, "live_count": st.live_count}[value]
        if v <= 0:
            continue
        frames: list[FrameKey] = [(f.function, f.filename, f.line) for f in reversed(stack)]
        key = ((f"span {sp}", "", 0), *(frames or [(NO_STACK[0], "", 0)]))
        totals[key] = totals.get(key, 0.0) + v
    return {k: round(v) for k, v in totals.items() if round(v) > 0}


def collapsed(profile: Profile, *, value: str = "bytes", span: str | None = None,
              thread: str | None = None) -> str:
    """Collapsed stacks, outermost frame first, one line per distinct stack."""
    lines: dict[str, int] = {}
    for stack, v in stacks(profile, value=value, span=span, thread=thread).items():
        line = ";".join(_label(f).replace(";", ",") for f in stack)
        lines[line] = lines.get(line, 0) + v
    return "".join(f"{k} {v}\n" for k, v in sorted(lines.items()))


def parse_collapsed(text: str) -> dict[tuple[str, ...], int]:
    """Parse collapsed stacks back (the format's own grammar)."""
    out: dict[tuple[str, ...], int] = {}
    for raw in text.splitlines():
        if not raw.strip():
            continue
        stack, _, num = raw.rpartition(" ")
        if not stack:
            raise ValueError(f"bad collapsed line: {raw!r}")
        key = tuple(stack.split(";"))
        out[key] = out.get(key, 0) + int(num)
    return out


@dataclass
class _Node:
    frame: FrameKey
    value: int = 0
    children: dict[FrameKey, _Node] = field(default_factory=dict)


def flame_data(tree_stacks: Stacks, *, unit: str = "bytes") -> dict[str, Any]:
    """The JSON document the HTML flame graph draws.

    Args:
        tree_stacks: Values per stack, as :func:`stacks` returns them.
        unit: ``bytes`` or ``allocations``.

    Returns:
        ``{"unit", "total", "frames", "root"}``: ``frames`` lists each distinct
        ``[function, file, line]`` once; a node is ``[frame index, value,
        [children]]``, children sorted by label; the root is the frame
        ``all`` and its children are the span frames.
    """
    root = _Node(("all", "", 0))
    for stack, v in tree_stacks.items():
        root.value += v
        node = root
        for frame in stack:
            node = node.children.setdefault(frame, _Node(frame))
            node.value += v
    index: dict[FrameKey, int] = {}

    def encode(node: _Node) -> list[Any]:
        kids = sorted(node.children.values(), key=lambda c: _label(c.frame))
        return [index.setdefault(node.frame, len(index)), node.value,
                [encode(c) for c in kids]]

    encoded = encode(root)
    return {"unit": unit, "total": root.value,
            "frames": [list(f) for f in index], "root": encoded}


def script_json(data: object) -> str:
    r"""JSON that is safe inside a ``<script>`` element.

    ``<``, ``>`` and ``&`` are written as ``\u003c`` and the like, so no string
    in the data can close the element (``</script>``) or open a comment; the
    text is still JSON and parses to the same values.
    """
    text = json.dumps(data, ensure_ascii=True, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _static(name: str) -> str:
    return (resources.files("otel_alloc.profiling") / "static" / name).read_text(
        encoding="utf-8")


def _sha256(text: str) -> str:
    digest = base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode()
    return f"'sha256-{digest}'"


def html_page(tree_stacks: Stacks, *, title: str = "allocations",
              unit: str = "bytes") -> str:
    """A self-contained interactive HTML flame graph.

    Click a frame to zoom to it, reset, search (highlights the frames whose
    label contains the text and shows the share of the total they account
    for), hover for details. CSS and JavaScript are inlined and a
    Content-Security-Policy allows only them: the page fetches nothing.

    Args:
        tree_stacks: Values per stack, as :func:`stacks` returns them.
        title: Heading of the page (escaped).
        unit: ``bytes`` or ``allocations``.
    """
    css, js = _static("flamegraph.css"), _static("flamegraph.js")
    for name, text, tag in (("flamegraph.css", css, "</style"),
                            ("flamegraph.js", js, "</script")):
        if tag in text.lower():
            raise ValueError(f"static/{name} must not contain {tag}")
    fields = {
        "title": html.escape(title),
        "unit": html.escape(unit),
        "style_hash": _sha256(css),
        "script_hash": _sha256(js),
        "css": css,
        "js": js,
        "data": script_json(flame_data(tree_stacks, unit=unit)),
    }
    # One pass: substituted text is never scanned for placeholders again.
    return re.sub(r"\{\{(\w+)\}\}", lambda m: fields[m.group(1)],
                  _static("flamegraph.html"))
