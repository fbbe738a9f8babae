"""Flame graphs of sampled allocations: collapsed stacks and self-contained SVG.

The collapsed format (``root;caller;callee value`` per line) is what
flamegraph.pl and speedscope read. Values are estimated bytes or counts.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

from otel_alloc.profiling.profile import NO_STACK, Profile

VALUES = ("bytes", "count", "live_bytes", "live_count")


def collapsed(profile: Profile, *, value: str = "bytes", span: str | None = None,
              thread: str | None = None) -> str:
    """Collapsed stacks, outermost frame first, one line per distinct stack."""
    if value not in VALUES:
        raise ValueError(f"value must be one of {', '.join(VALUES)}, not {value!r}")
    totals: dict[str, float] = {}
    for (stack, sp, th), st in profile.snapshot().items():
        if (span is not None and sp != span) or (thread is not None and th != thread):
            continue
        v = {"bytes": st.alloc_bytes, "count": st.alloc_count,
             "live_bytes": st.live_bytes, "live_count": st.live_count}[value]
        if v <= 0:
            continue
        names = [f.label().replace(";", ",") for f in reversed(stack)] or [NO_STACK[0]]
        line = ";".join([f"span {sp}".replace(";", ","), *names])
        totals[line] = totals.get(line, 0.0) + v
    return "".join(f"{k} {round(v)}\n" for k, v in sorted(totals.items()) if round(v) > 0)


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
    name: str
    value: int = 0
    children: dict[str, _Node] = field(default_factory=dict)


def _tree(stacks: dict[tuple[str, ...], int]) -> _Node:
    root = _Node("all")
    for stack, v in stacks.items():
        root.value += v
        node = root
        for name in stack:
            node = node.children.setdefault(name, _Node(name))
            node.value += v
    return root


def svg(collapsed_text: str, *, title: str = "allocations", unit: str = "bytes",
        width: int = 1200) -> str:
    """A self-contained SVG flame graph (hover a box for its value)."""
    root = _tree(parse_collapsed(collapsed_text))
    row_h, font = 17, 11
    rects: list[str] = []
    depth_max = 0

    def walk(node: _Node, x: float, depth: int) -> None:
        nonlocal depth_max
        depth_max = max(depth_max, depth)
        w = width * node.value / root.value if root.value else 0
        if w < 0.5:
            return
        y = depth * row_h
        hue = 20 + (hash(node.name) % 40)
        label = html.escape(node.name)
        tip = html.escape(f"{node.name}: ~{node.value:,} {unit} "
                          f"({100 * node.value / root.value:.1f}%)")
        text = label if w > 40 else ""
        chars = int(w / (font * 0.6))
        if text and len(node.name) > chars:
            text = html.escape(node.name[: max(chars - 2, 0)]) + ".."
        rects.append(
            f'<g><title>{tip}</title><rect x="{x:.1f}" y="{y}" width="{w:.1f}" '
            f'height="{row_h - 1}" fill="hsl({hue},90%,60%)"/>'
            f'<text x="{x + 3:.1f}" y="{y + row_h - 5}">{text}</text></g>')
        cx = x
        for child in sorted(node.children.values(), key=lambda c: c.name):
            walk(child, cx, depth + 1)
            cx += width * child.value / root.value

    if root.value:
        walk(root, 0.0, 1)
    height = (depth_max + 2) * row_h
    head = html.escape(f"{title} — estimated {unit} from sampled allocations")
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'font-family="monospace" font-size="{font}">'
            f'<text x="3" y="{row_h - 4}" font-weight="bold">{head}</text>'
            + "".join(rects) + "</svg>\n")
