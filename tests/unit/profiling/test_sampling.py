"""Sampled allocation sites: estimates, reports, flame graphs, endpoint."""

from __future__ import annotations

import json
import math
import sys
import threading
import types
import urllib.request
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider

import otel_alloc
from otel_alloc import AllocationSpanProcessor
from otel_alloc.profiling import sampling
from otel_alloc.profiling.flamegraph import collapsed, html_page, parse_collapsed
from otel_alloc.profiling.flamegraph import stacks as flame_stacks
from otel_alloc.profiling.profile import Frame, Profile
from otel_alloc.profiling.render import render_report
from otel_alloc.profiling.report_server import ReportServer, parse_address
from otel_alloc.profiling.text_reports import grouped, top_sites
from otel_alloc.tracker import sampler as native_sampler

MEAN = 64 * 1024


def site_big(n: int) -> list[bytearray]:
    return [bytearray(4000) for _ in range(n)]


def site_small(n: int) -> list[bytearray]:
    return [bytearray(1000) for _ in range(n)]


@pytest.fixture
def traced() -> Iterator[tuple[AllocationSpanProcessor, TracerProvider]]:
    otel_alloc.install("live")
    processor = AllocationSpanProcessor(mode="live", sample_bytes=MEAN, metrics=False,
                                        events=False)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    try:
        yield processor, provider
    finally:
        provider.shutdown()
        sampling.configure(0)
        otel_alloc.uninstall()


def _profile_after(traced: tuple[AllocationSpanProcessor, TracerProvider], span: str,
                   n: int) -> Profile:
    """Run site_big(n) under a span named ``span``; the flushed profile."""
    processor, provider = traced
    with provider.get_tracer("t").start_as_current_span(span):
        site_big(n)
    processor.force_flush()
    assert processor.profile is not None
    return processor.profile


def _exact(fn: object, n: int) -> int:
    g = otel_alloc.Group()
    with g:
        fn(n)  # type: ignore[operator]
    return g.stats().alloc_bytes


def test_weights_are_unbiased() -> None:
    for size in (1, 100, MEAN, 10 * MEAN):
        p = -math.expm1(-size / MEAN)
        wb, wc = sampling.weights(size, MEAN)
        assert wb * p == pytest.approx(size)
        assert wc * p == pytest.approx(1.0)


def test_profile_records_allocations_and_frees_in_their_order() -> None:
    """One drained batch holds allocations and frees in the order they were
    made: a free nets its own allocation's weights from that allocation's
    cell, and a free whose allocation is not in the profile changes nothing."""
    prof = Profile(sample_bytes=MEAN, live=True)
    site = ((Frame("f", "app.py", 3),), "GET /", "MainThread (1)")
    other = ((Frame("g", "app.py", 7),), "GET /", "MainThread (1)")
    prof.record([(1, site, 1000.0, 2.0), (2, other, 500.0, 1.0), (1, None, 0.0, 0.0),
                 (3, None, 0.0, 0.0), (3, site, 250.0, 1.0), (1, None, 0.0, 0.0)])
    cells = prof.snapshot()
    assert (cells[site].alloc_bytes, cells[site].alloc_count, cells[site].samples) == (
        1250.0, 3.0, 2)
    assert (cells[site].freed_bytes, cells[site].freed_count) == (1000.0, 2.0)
    assert cells[site].live_bytes == 250.0 and cells[other].live_bytes == 500.0
    # Frames are tuples to hash, and keys built from equal frames are one cell.
    prof.add_sample(4, (Frame("f", "app.py", 3),), "GET /", "MainThread (1)", 10.0, 1.0)
    assert len(prof.snapshot()) == 2 and prof.snapshot()[site].samples == 3


def test_known_sites_come_out_on_top(traced: tuple[AllocationSpanProcessor, TracerProvider]
                                     ) -> None:
    processor, provider = traced
    tracer = provider.get_tracer("t")
    exact_big, exact_small = _exact(site_big, 10_000), _exact(site_small, 10_000)
    with tracer.start_as_current_span("work"):
        keep = site_big(10_000)
        site_small(10_000)
    processor.force_flush()
    assert processor.profile is not None
    rows = top_sites(processor.profile, span="work", n=5)
    assert "site_big" in rows[0].key and "site_small" in rows[1].key
    # ~40 MB at a 64 KiB mean is ~600 samples: relative sd ~4%; allow 5 sd.
    assert rows[0].alloc_bytes == pytest.approx(exact_big, rel=0.2)
    assert rows[1].alloc_bytes == pytest.approx(exact_small, rel=0.4)
    live = {r.key: r.live_bytes for r in top_sites(processor.profile, live=True, span="work")}
    big_key = rows[0].key
    assert live[big_key] == pytest.approx(exact_big, rel=0.2)
    assert not any("site_small" in k for k in live)  # all freed: exactly zero estimate
    del keep


def test_reports_render_and_say_estimates(traced: tuple[AllocationSpanProcessor,
                                                        TracerProvider]) -> None:
    processor, provider = traced
    tracer = provider.get_tracer("t")

    def worker() -> None:
        with tracer.start_as_current_span("in-thread"):
            site_small(5000)

    t = threading.Thread(target=worker, name="worker-1")
    t.start()
    t.join()
    with tracer.start_as_current_span("main"):
        keep = site_big(5000)
    processor.force_flush()
    prof = processor.profile
    assert prof is not None
    for kind in ("top", "live", "threads", "churn"):
        text = render_report(prof, kind)
        assert "ESTIMATES" in text
    assert "worker-1" in render_report(prof, "threads")
    by_span = {r.key: r for r in grouped(prof, "span")}
    assert by_span["main"].alloc_bytes > by_span["in-thread"].alloc_bytes > 0
    live_by_span = render_report(prof, "live", key="span", value="count")
    assert "main" in live_by_span
    churn = render_report(prof, "churn")
    assert "net growth" in churn
    del keep


def test_flamegraph_outputs_parse(traced: tuple[AllocationSpanProcessor, TracerProvider]
                                  ) -> None:
    prof = _profile_after(traced, "flame", 5000)
    text = collapsed(prof, value="bytes", span="flame")
    stacks = parse_collapsed(text)
    assert stacks and all(k[0] == "span flame" for k in stacks)
    assert any(any("site_big" in f for f in k) for k in stacks)
    total = sum(stacks.values())
    assert total == pytest.approx(sum(r.alloc_bytes for r in grouped(prof, "span", span="flame")),
                                  rel=0.01)
    counts = parse_collapsed(collapsed(prof, value="count"))
    assert sum(counts.values()) > 0
    page = html_page(flame_stacks(prof, value="bytes", span="flame"), title="t")
    assert page.startswith("<!DOCTYPE html>") and "site_big" in page


def test_profile_round_trips_through_json(traced: tuple[AllocationSpanProcessor,
                                                        TracerProvider], tmp_path: object
                                          ) -> None:
    prof = _profile_after(traced, "j", 2000)
    again = Profile.from_json(json.loads(json.dumps(prof.to_json())))
    assert render_report(again, "top") == render_report(prof, "top")


def test_endpoint_binds_loopback_by_default(traced: tuple[AllocationSpanProcessor,
                                                          TracerProvider]) -> None:
    processor, _ = traced
    _profile_after(traced, "served", 2000)
    assert parse_address("9999") == ("127.0.0.1", 9999)
    assert parse_address("0.0.0.0:8080") == ("0.0.0.0", 8080)
    for bad in ("nope", "1.2.3.4:99999", "host.example:80"):
        with pytest.raises(otel_alloc.ConfigError):
            parse_address(bad)
    server = ReportServer(lambda: processor.profile)
    try:
        assert server.host == "127.0.0.1"
        assert server._server.socket.getsockname()[0] == "127.0.0.1"
        with urllib.request.urlopen(server.url + "/profile.json") as r:
            data = json.load(r)
        assert data["estimated"] is True and data["cells"]
        with urllib.request.urlopen(server.url + "/report?kind=top&span=served") as r:
            assert "site_big" in r.read().decode()
        with urllib.request.urlopen(server.url + "/flamegraph.html") as r:
            assert r.headers["Content-Type"] == "text/html; charset=utf-8"
            assert "site_big" in r.read().decode()
    finally:
        server.close()


def test_sampling_off_records_nothing() -> None:
    otel_alloc.install("counts")
    try:
        sampling.configure(0)
        before = native_sampler.sampler_stats()["samples"]
        site_big(5000)
        assert native_sampler.sampler_stats()["samples"] == before
        processor = AllocationSpanProcessor(sample_bytes=0)
        assert processor.profile is None
    finally:
        otel_alloc.uninstall()


def test_bad_sampling_settings() -> None:
    with pytest.raises(otel_alloc.ConfigError, match="max_depth"):
        sampling.configure(4096, max_depth=0)
    with pytest.raises(otel_alloc.ConfigError, match="sample_bytes"):
        sampling.configure("lots")


# -- the stack walker (_native/compat/frames.c): function, file and line of each frame

SITE_BYTES = 300_000


def _plain_site() -> tuple[int, bytearray]:
    return sys._getframe().f_lineno, bytearray(SITE_BYTES)


class _Site:
    def method(self) -> tuple[int, bytearray]:
        return sys._getframe().f_lineno, bytearray(SITE_BYTES)


def _generator_site() -> Iterator[tuple[int, bytearray]]:
    yield sys._getframe().f_lineno, bytearray(SITE_BYTES)


async def _coroutine_site() -> tuple[int, bytearray]:
    return sys._getframe().f_lineno, bytearray(SITE_BYTES)


def _run_coroutine() -> tuple[int, bytearray]:
    coro = _coroutine_site()
    try:
        coro.send(None)
    except StopIteration as stop:
        result: tuple[int, bytearray] = stop.value
        return result
    raise AssertionError("the coroutine did not finish")


def _name(code: types.CodeType) -> str:
    return code.co_qualname if sys.version_info >= (3, 11) else code.co_name


def _sampled_stacks() -> list[list[tuple[str, str, int]]]:
    """Stacks of the pending samples of at least SITE_BYTES, innermost first."""
    stacks = []
    # Bounded: other threads still running here (earlier tests' watch
    # threads) keep adding samples while this drains.
    for _ in range(64):
        batch = native_sampler.drain_samples(4096)
        for s in batch:
            if s.kind == native_sampler.SAMPLE_ALLOC and s.size >= SITE_BYTES:
                frames = [native_sampler.frame_info(f)
                          for f in native_sampler.stack_frames(s.stack)]
                stacks.append([f for f in frames if f is not None])
        if len(batch) < 4096:
            break
    return stacks


@pytest.mark.parametrize("how", ["function", "method", "generator", "coroutine"])
def test_sampled_stack_names_function_file_and_line(how: str) -> None:
    site, code, inner_call = {
        "function": (_plain_site, _plain_site.__code__, None),
        "method": (_Site().method, _Site.method.__code__, None),
        "generator": (lambda: next(_generator_site()), _generator_site.__code__, None),
        "coroutine": (_run_coroutine, _coroutine_site.__code__, _run_coroutine.__code__),
    }[how]
    otel_alloc.install("counts")
    try:
        # The smallest accepted mean (4 KiB) samples the site's 300 KB
        # allocation with probability 1 - exp(-73) (certain), while other
        # threads' small allocations fill the buffer slowly.
        sampling.configure(4096, max_depth=8, capacity=1 << 16)
        _sampled_stacks()  # drop what is pending
        call_line, (line, keep) = sys._getframe().f_lineno, site()
        stacks = _sampled_stacks()
    finally:
        sampling.configure(0)
        otel_alloc.uninstall()
    assert len(keep) == SITE_BYTES
    assert stacks, "the site's allocation was not sampled"
    stack = stacks[-1]
    assert stack[0] == (_name(code), __file__, line)
    if inner_call is not None:  # the coroutine's frame is linked to the frame that sent to it
        assert stack[1][:2] == (_name(inner_call), __file__)
    this = sys._getframe().f_code
    assert (_name(this), __file__, call_line) in stack[1:4]


def _two_sites() -> tuple[int, int, bytearray, bytearray]:
    first = sys._getframe().f_lineno, bytearray(SITE_BYTES)
    second = sys._getframe().f_lineno, bytearray(SITE_BYTES)
    return first[0], second[0], first[1], second[1]


def test_sites_seen_before_keep_their_own_lines() -> None:
    """The stack walker maps (code object, instruction offset) to a frame
    once and reuses it (stacks.c's site index): two sites in one function,
    each sampled three times, must keep naming their own lines."""
    otel_alloc.install("counts")
    try:
        sampling.configure(4096, max_depth=8, capacity=1 << 16)
        _sampled_stacks()
        calls = [_two_sites() for _ in range(3)]
        stacks = _sampled_stacks()
    finally:
        sampling.configure(0)
        otel_alloc.uninstall()
    first_line, second_line = calls[0][0], calls[0][1]
    assert first_line != second_line
    inner = [stack[0] for stack in stacks if stack and stack[0][0] == _name(_two_sites.__code__)]
    assert inner.count((_name(_two_sites.__code__), __file__, first_line)) == 3
    assert inner.count((_name(_two_sites.__code__), __file__, second_line)) == 3
    assert len(inner) == 6


def test_stacks_and_frames_resolve_alike_one_at_a_time_and_together() -> None:
    """The drain resolves a batch's new stacks and frames in one call each
    (stacks_frames, frames_info): the same frames, in the same order, as one
    call per stack and per frame, and nothing for ids that name none."""
    otel_alloc.install("counts")
    try:
        sampling.configure(4096, max_depth=8, capacity=1 << 16)
        _sampled_stacks()
        _two_sites()
        stack_ids = []
        for _ in range(64):
            batch = native_sampler.drain_samples(4096)
            stack_ids += [s.stack for s in batch if s.kind == native_sampler.SAMPLE_ALLOC]
            if len(batch) < 4096:
                break
    finally:
        sampling.configure(0)
        otel_alloc.uninstall()
    ids = [*sorted(set(stack_ids)), native_sampler.STACK_NONE, 2**32 - 1]
    assert len(ids) >= 4
    together = native_sampler.stacks_frames(ids)
    assert together == [native_sampler.stack_frames(i) for i in ids]
    assert together[-1] == [] and together[-2] == []
    assert any(len(frames) >= 2 for frames in together)
    frame_ids = [*sorted({f for frames in together for f in frames}), 2**32 - 1]
    infos = native_sampler.frames_info(frame_ids)
    assert infos == [native_sampler.frame_info(f) for f in frame_ids]
    assert infos[-1] is None and all(info is not None for info in infos[:-1])
    assert (_name(_two_sites.__code__), __file__) in {info[:2] for info in infos if info}
    assert native_sampler.stacks_frames([]) == [] and native_sampler.frames_info([]) == []


def test_reconfiguring_redraws_every_threads_countdown() -> None:
    """A countdown drawn for a huge mean must not outlive a switch to a small one."""
    otel_alloc.install("counts")
    try:
        sampling.configure(1 << 40)  # one sample per TiB: this thread's countdown is huge
        keep = [bytearray(1024) for _ in range(16)]  # draw it
        # The smallest accepted mean samples the 300 KB site for certain
        # (1 - exp(-73)), but only with a countdown drawn for that mean.
        sampling.configure(4096, max_depth=8, capacity=1 << 16)
        _sampled_stacks()
        _, site = _plain_site()
        stacks = _sampled_stacks()
    finally:
        sampling.configure(0)
        otel_alloc.uninstall()
    assert len(keep) == 16 and len(site) == SITE_BYTES
    assert stacks, "the site was not sampled: a countdown from the old mean survived"
