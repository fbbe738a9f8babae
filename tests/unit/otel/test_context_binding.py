"""The runtime-context stand-in keeps OTel's current Context in the group variable.

With OpenTelemetry's own runtime context, each attach sets one binding
(group id, Context) in the tracker's group variable and each detach resets
it (context_follower.c). These tests hold what that must keep: OTel sees
the Context it attached, groups and spans nest either way round, copied
contexts carry both, a detach never leaves the variable unset, and a token
from before the stand-in went in still detaches.
"""

from __future__ import annotations

import asyncio
import contextvars
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import otel_alloc
from otel_alloc import AllocationSpanProcessor, tracker
from otel_alloc.otel.context_follower import context_hook_installed
from tests.unit.conftest import OBJ, RAW, Helper

MISSING = object()


@pytest.fixture
def tracer() -> Iterator[trace.Tracer]:
    otel_alloc.install("counts")
    provider = TracerProvider()
    provider.add_span_processor(AllocationSpanProcessor(SimpleSpanProcessor(
        InMemorySpanExporter()), mode="counts"))
    assert context_hook_installed()
    yield provider.get_tracer("binding")
    provider.shutdown()
    otel_alloc.uninstall()


def test_a_first_attach_in_a_fresh_context_leaves_the_variable_unset(
        tracer: trace.Tracer) -> None:
    def run() -> object:
        assert tracker.CURRENT_GROUP.get(MISSING) is MISSING
        with tracer.start_as_current_span("fresh"):
            assert tracker.current_group_id() != 0
        assert tracker.current_group_id() == 0
        return tracker.CURRENT_GROUP.get(MISSING)

    # The detach deletes the variable from this context, as OpenTelemetry's
    # own reset deletes its variable.
    assert contextvars.Context().run(run) is MISSING


def test_a_reset_that_deletes_the_variable_leaves_no_stale_value(
        tracer: trace.Tracer, helper: Helper) -> None:
    other: contextvars.ContextVar[int] = contextvars.ContextVar("other")

    def run() -> list[object]:
        # Another variable in the context: deleting ours then builds a new
        # HAMT, whose allocations reach the hooks in the middle of the
        # delete. Leaving a group just before voids the hooks' cache, so
        # they resolve again there, which must not read the variable being
        # deleted (the tracker holds its resolution across the reset;
        # without that this test dies of a segmentation fault).
        other.set(1)
        seen = []
        for i in range(200):
            span = tracer.start_span(f"s{i}")
            token = otel_context.attach(trace.set_span_in_context(span))
            span.end()
            with otel_alloc.Group():  # entering and leaving one voids the cache
                pass
            otel_context.detach(token)
            seen.append(tracker.CURRENT_GROUP.get(MISSING))
            helper.alloc_many(OBJ, 64, 4)  # reuse what a stale value would point to
        return seen

    assert all(value is MISSING for value in contextvars.Context().run(run))


def test_otel_sees_the_context_it_attached(tracer: trace.Tracer) -> None:
    key = otel_context.create_key("k")
    before = otel_context.get_current()
    token = otel_context.attach(otel_context.set_value(key, "v"))
    assert otel_context.get_value(key) == "v"
    with tracer.start_as_current_span("s") as span:
        assert trace.get_current_span() is span
        assert otel_context.get_value(key) == "v"
    assert otel_context.get_value(key) == "v"
    otel_context.detach(token)
    assert otel_context.get_current() == before


def test_a_group_inside_a_span_keeps_the_span_current(tracer: trace.Tracer,
                                                      helper: Helper) -> None:
    with tracer.start_as_current_span("outer") as span:
        span_gid = tracker.current_group_id()
        ctx = otel_context.get_current()
        with otel_alloc.Group() as group:
            assert otel_context.get_current() is ctx
            assert trace.get_current_span() is span
            assert helper.alloc_measured(OBJ, 2000, 50, group.id)[:2] == (100_000, 50)
        assert tracker.current_group_id() == span_gid
        assert helper.alloc_measured(OBJ, 3000, 50, span_gid)[:2] == (150_000, 50)


def test_a_span_inside_a_group_hands_the_group_back(tracer: trace.Tracer,
                                                    helper: Helper) -> None:
    with otel_alloc.Group() as group:
        with tracer.start_as_current_span("inner"):
            span_gid = tracker.current_group_id()
            assert span_gid != group.id
            assert helper.alloc_measured(RAW, 2000, 50, span_gid)[:2] == (100_000, 50)
        assert tracker.current_group_id() == group.id
        assert helper.alloc_measured(RAW, 3000, 50, group.id)[:2] == (150_000, 50)
    assert tracker.current_group_id() == 0


def test_a_task_made_inside_a_span_stays_in_it_after_the_detach(tracer: trace.Tracer,
                                                                helper: Helper) -> None:
    seen: list[tuple[int, object, tuple[int, ...]]] = []

    async def work() -> None:
        await asyncio.sleep(0)  # runs after the creator has detached
        gid = tracker.current_group_id()
        seen.append((gid, trace.get_current_span(),
                     helper.alloc_measured(OBJ, 1000, 10, gid)[:2]))

    async def main() -> None:
        span = tracer.start_span("background")
        with trace.use_span(span, end_on_exit=False):
            task = asyncio.create_task(work())
            gid = tracker.current_group_id()
        assert tracker.current_group_id() == 0
        await task
        assert seen == [(gid, span, (10_000, 10))]
        span.end()

    asyncio.run(main())


def test_a_token_from_before_the_stand_in_still_detaches() -> None:
    code = textwrap.dedent("""
        from opentelemetry import context, trace
        from opentelemetry.sdk.trace import TracerProvider
        key = context.create_key("k")
        token = context.attach(context.set_value(key, "before"))
        from otel_alloc import AllocationSpanProcessor
        from otel_alloc.otel.context_follower import context_hook_installed
        provider = TracerProvider()
        provider.add_span_processor(AllocationSpanProcessor(mode="counts"))
        assert context_hook_installed()
        assert context.get_value(key) == "before"
        with provider.get_tracer("t").start_as_current_span("s") as span:
            assert trace.get_current_span() is span
            assert context.get_value(key) == "before"
        assert context.get_value(key) == "before"
        context.detach(token)
        assert context.get_value(key) is None, context.get_current()
        provider.shutdown()
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
    assert "Failed to detach" not in proc.stderr, proc.stderr
