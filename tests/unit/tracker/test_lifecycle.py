"""Install, uninstall, enable/disable, bad settings, and coexistence with tracemalloc."""

from __future__ import annotations

import logging
import tracemalloc
from collections.abc import Iterator

import pytest

import otel_alloc
from otel_alloc import tracker
from otel_alloc.tracker import _binding
from tests.unit.conftest import MEM, OBJ, RAW, Helper, charged


@pytest.fixture
def clean() -> Iterator[None]:
    yield
    if tracemalloc.is_tracing():
        tracemalloc.stop()
    otel_alloc.uninstall()


def _counted(helper: Helper, n: int = 10, size: int = 700) -> int:
    """Bytes charged for n RAW allocations of size bytes (exact)."""
    return charged(lambda real: helper.alloc_many(RAW, size, n if real else 0)).alloc_bytes


def test_install_returns_mode_and_is_idempotent(clean: None) -> None:
    assert otel_alloc.install("counts") == "counts"
    assert otel_alloc.install("counts") == "counts"
    assert otel_alloc.installed_mode() == "counts"


def test_install_other_mode_is_a_clear_error(clean: None) -> None:
    otel_alloc.install("counts")
    with pytest.raises(otel_alloc.TrackerError, match=r"installed in mode 'counts'.*'live'"):
        otel_alloc.install("live")


@pytest.mark.parametrize(
    ("kwargs", "setting"),
    [
        ({"mode": "fast"}, "mode"),
        ({"mode": "counts", "max_groups": 0}, "max_groups"),
        ({"mode": "counts", "max_groups": "10"}, "max_groups"),
        ({"mode": "counts", "threshold_bytes": "lots"}, "threshold_bytes"),
        ({"mode": "counts", "threshold_bytes": -1}, "threshold_bytes"),
        ({"mode": "counts", "event_capacity": 0}, "event_capacity"),
    ],
)
def test_bad_arguments_name_the_setting(clean: None, kwargs: dict[str, object],
                                        setting: str) -> None:
    with pytest.raises(otel_alloc.ConfigError) as err:
        otel_alloc.install(**kwargs)  # type: ignore[arg-type]
    assert err.value.setting == setting
    assert setting in str(err.value)
    assert "expected" in str(err.value)
    assert otel_alloc.installed_mode() is None


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("OTEL_ALLOC_MODE", "everything"),
        ("OTEL_ALLOC_MAX_GROUPS", "many"),
        ("OTEL_ALLOC_THRESHOLD_BYTES", "12parsecs"),
        ("OTEL_ALLOC_EVENT_BUFFER", "-3"),
    ],
)
def test_bad_environment_names_the_variable(clean: None, monkeypatch: pytest.MonkeyPatch,
                                            var: str, value: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(otel_alloc.ConfigError, match=var) as err:
        otel_alloc.install()
    assert value in str(err.value)


def test_environment_defaults(clean: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_ALLOC_MODE", "live")
    monkeypatch.setenv("OTEL_ALLOC_MAX_GROUPS", "3")
    monkeypatch.setenv("OTEL_ALLOC_THRESHOLD_BYTES", "1MiB")
    assert otel_alloc.install() == "live"
    assert otel_alloc.counters().groups_capacity == 3


def test_free_threaded_build_is_refused(clean: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_binding, "free_threaded_build", lambda: True)
    with pytest.raises(otel_alloc.TrackerError, match="free-threaded"):
        otel_alloc.install("counts")


def test_group_before_install_is_an_error(clean: None) -> None:
    with pytest.raises(otel_alloc.TrackerError, match="not installed"):
        otel_alloc.Group()
    with pytest.raises(otel_alloc.TrackerError, match="not installed"):
        otel_alloc.enable()


def test_uninstall_restores_allocators(clean: None, helper: Helper) -> None:
    otel_alloc.install("live")
    assert all(s["on_top"] for s in otel_alloc.hook_status().values())
    otel_alloc.uninstall()
    assert not any(s["in_chain"] for s in otel_alloc.hook_status().values())
    # Allocation keeps working, and uninstall twice is harmless.
    helper.alloc_many(OBJ, 100, 100)
    otel_alloc.uninstall()


def test_enable_disable(clean: None, helper: Helper) -> None:
    otel_alloc.install("live")
    assert _counted(helper) == 7000
    otel_alloc.disable()
    assert not otel_alloc.is_enabled()
    assert _counted(helper) == 0
    otel_alloc.enable()
    assert _counted(helper) == 7000


def test_frees_accounted_while_disabled(clean: None, helper: Helper) -> None:
    otel_alloc.install("live")
    g = otel_alloc.Group()
    with g:
        ptrs = helper.alloc_many(RAW, 1000, 20, keep=True)
    live = g.stats().live_bytes
    otel_alloc.disable()
    helper.free_many(RAW, ptrs, 20)
    assert live - g.stats().live_bytes == 20_000
    otel_alloc.enable()


# Which parts of a domain's allocator install changed (helper.c): bits for
# ctx, malloc, calloc, realloc and free.
CTX, MALLOC, CALLOC, REALLOC, FREE = 1, 2, 4, 8, 16


@pytest.mark.parametrize("mode", ["counts", "live", "estimate"])
def test_allocator_install_puts_in_passes_ctx_and_counts_mode_frees(
        clean: None, helper: Helper, mode: str) -> None:
    """Every mode's allocator carries the wrapped allocator's ctx (our hooks
    ignore theirs, so any ctx a RAW caller pairs with any function is a right
    pair); counts mode's carries its free too, so a free never enters the
    tracker; live and estimate modes hook frees."""
    lib = helper.module.lib
    lib.h_allocators_snapshot()
    otel_alloc.install(mode)
    try:
        wrapped = MALLOC | CALLOC | REALLOC | (0 if mode == "counts" else FREE)
        assert [lib.h_allocator_changes(d) for d in (RAW, MEM, OBJ)] == [wrapped] * 3
        assert _counted(helper) == 7000
    finally:
        otel_alloc.uninstall()
    assert [lib.h_allocator_changes(d) for d in (RAW, MEM, OBJ)] == [0, 0, 0]


def test_reinstall_other_mode_after_uninstall(clean: None, helper: Helper) -> None:
    otel_alloc.install("counts")
    otel_alloc.uninstall()
    otel_alloc.install("live")
    assert _counted(helper) == 7000
    assert otel_alloc.Group().stats().peak_bytes == 0


# --- tracemalloc, in both orders -------------------------------------------


def test_tracemalloc_started_before_install(clean: None, helper: Helper) -> None:
    tracemalloc.start(1)
    otel_alloc.install("live")
    assert _counted(helper) == 7000
    before = tracemalloc.get_traced_memory()[0]
    ptrs = helper.alloc_many(OBJ, 4000, 10, keep=True)
    assert tracemalloc.get_traced_memory()[0] - before >= 40_000  # tracemalloc still sees it
    helper.free_many(OBJ, ptrs, 10)
    # tracemalloc.stop() restores what it saved before us, removing our hooks
    # from the chain: nothing may crash, and status must say so (the
    # processor's watch puts them back: see the tests below).
    tracemalloc.stop()
    assert not any(s["in_chain"] for s in otel_alloc.hook_status().values())
    helper.alloc_many(OBJ, 100, 100)
    otel_alloc.uninstall()
    otel_alloc.install("counts")
    assert _counted(helper) == 7000


def test_tracemalloc_started_after_install_stopped_first(clean: None, helper: Helper) -> None:
    otel_alloc.install("counts")
    tracemalloc.start(1)
    # tracemalloc, now outermost, allocates its own trace entries through the
    # RAW allocator it saved (our hook): those bytes are real and counted too.
    assert 7000 <= _counted(helper) < 7000 + 4096
    status = otel_alloc.hook_status()
    assert all(s["in_chain"] and not s["on_top"] for s in status.values())
    tracemalloc.stop()
    assert all(s["on_top"] for s in otel_alloc.hook_status().values())
    assert _counted(helper) == 7000
    otel_alloc.uninstall()
    assert not any(s["in_chain"] for s in otel_alloc.hook_status().values())


def test_tracemalloc_started_after_install_we_stop_first(clean: None, helper: Helper) -> None:
    otel_alloc.install("live")
    tracemalloc.start(1)
    otel_alloc.uninstall()
    # tracemalloc wrapped us: we stay in its chain as a pass-through.
    status = otel_alloc.hook_status()
    assert all(s["in_chain"] and not s["on_top"] for s in status.values())
    before = tracemalloc.get_traced_memory()[0]
    ptrs = helper.alloc_many(OBJ, 4000, 10, keep=True)
    assert tracemalloc.get_traced_memory()[0] - before >= 40_000
    helper.free_many(OBJ, ptrs, 10)
    # Reinstalling reuses the hook in the chain instead of wrapping again.
    otel_alloc.install("counts")
    assert 7000 <= _counted(helper) < 7000 + 4096
    tracemalloc.stop()  # restores our (active) hooks
    assert _counted(helper) == 7000
    otel_alloc.uninstall()
    assert not any(s["in_chain"] for s in otel_alloc.hook_status().values())


def _counts_exactly_in(second: str, domain: int, helper: Helper) -> None:
    """The tracker, installed in mode ``second``, counts ``domain`` exactly."""
    kept: list[object] = []
    held = charged(lambda real: kept.append(
        helper.alloc_many(domain, 48, 100 if real else 0, keep=True)))
    # 100 blocks of 48 bytes, and the handle array grown by 100 pointers.
    assert (held.alloc_bytes, held.alloc_count) == (4800 + 800, 100)
    churned = charged(lambda real: helper.alloc_many(domain, 48, 100 if real else 0))
    assert (churned.alloc_bytes, churned.alloc_count) == (4800, 100)
    if second == "live":
        assert (held.live_bytes, held.live_count) == (5600, 100)
        assert (churned.live_bytes, churned.freed_bytes, churned.freed_count) == (0, 4800, 100)
    for ptrs in kept:
        helper.free_many(domain, ptrs, len(ptrs))  # type: ignore[arg-type]


@pytest.mark.parametrize("domain", [OBJ, MEM], ids=["obj", "mem"])
@pytest.mark.parametrize(("first", "second"), [("live", "counts"), ("estimate", "live"),
                                               ("live", "estimate"), ("estimate", "counts")])
def test_hooks_kept_in_chain_count_right_in_the_other_mode(
        clean: None, helper: Helper, first: str, second: str, domain: int) -> None:
    """The MEM/OBJ hooks come in one copy per mode, and install puts in its
    mode's; a hook kept in tracemalloc's chain from an install in the other
    mode is reused and must count exactly in the new mode too."""
    otel_alloc.install(first)
    tracemalloc.start(1)
    otel_alloc.uninstall()
    otel_alloc.install(second)  # reuses the first mode's hooks
    assert all(s["in_chain"] and not s["on_top"] for s in otel_alloc.hook_status().values())
    # tracemalloc restores what it wrapped, the first mode's hooks: on top
    # again, and no longer adding its own trace entries to the counts.
    tracemalloc.stop()
    assert all(s["on_top"] for s in otel_alloc.hook_status().values())
    _counts_exactly_in(second, domain, helper)
    otel_alloc.uninstall()
    assert not any(s["in_chain"] for s in otel_alloc.hook_status().values())


@pytest.mark.parametrize("domain", [OBJ, MEM], ids=["obj", "mem"])
@pytest.mark.parametrize("second", ["live", "estimate"])
def test_kept_counts_hooks_refuse_a_mode_that_sees_frees(
        clean: None, helper: Helper, second: str, domain: int) -> None:
    """Counts mode's allocator passes frees straight to the one it wraps. Kept
    in tracemalloc's chain, it cannot serve a mode that must see them: that
    install is refused, changing nothing; once tracemalloc gives our hooks
    the top place back, the same install puts in its own mode's copy."""
    otel_alloc.install("counts")
    tracemalloc.start(1)
    otel_alloc.uninstall()
    with pytest.raises(otel_alloc.TrackerError, match="pass frees by"):
        otel_alloc.install(second)
    assert otel_alloc.installed_mode() is None
    otel_alloc.install("counts")  # counts mode may reuse it
    assert 7000 <= _counted(helper) < 7000 + 4096
    otel_alloc.uninstall()
    tracemalloc.stop()  # our counts hooks on top again, still in the chain
    assert all(s["on_top"] for s in otel_alloc.hook_status().values())
    otel_alloc.install(second)
    _counts_exactly_in(second, domain, helper)
    otel_alloc.uninstall()
    assert not any(s["in_chain"] for s in otel_alloc.hook_status().values())


def test_tracemalloc_started_before_and_stopped_while_installed_is_healed(
        clean: None, helper: Helper, caplog: pytest.LogCaptureFixture) -> None:
    """README: tracemalloc.stop() restores what tracemalloc saved, which takes
    our hooks out when tracemalloc was started first; the span processor's
    watch thread puts them back at its next tick and says so."""
    from opentelemetry.sdk.trace import TracerProvider

    tracemalloc.start(1)
    otel_alloc.install("counts")
    processor = otel_alloc.AllocationSpanProcessor()
    provider = TracerProvider()
    provider.add_span_processor(processor)
    try:
        tracemalloc.stop()
        assert not any(s["in_chain"] for s in otel_alloc.hook_status().values())
        with caplog.at_level(logging.WARNING, logger="otel_alloc"):
            processor.force_flush()  # runs the watch thread's tasks now
        assert all(s["on_top"] for s in otel_alloc.hook_status().values())
        assert otel_alloc.counters().rehooks == 3
        assert any("removed the allocation hooks" in r.getMessage() for r in caplog.records)
        assert _counted(helper) == 7000
    finally:
        provider.shutdown()


def test_plain_tracker_heals_on_request(clean: None, helper: Helper) -> None:
    """Without a span processor nothing watches: hook_status() shows the gap
    and ensure_hooked() closes it."""
    tracemalloc.start(1)
    otel_alloc.install("live")
    tracemalloc.stop()
    assert not any(s["in_chain"] for s in otel_alloc.hook_status().values())
    assert tracker.ensure_hooked() == 3
    assert tracker.ensure_hooked() == 0
    assert _counted(helper) == 7000


def test_uninstall_turns_sampling_off(clean: None) -> None:
    """Sampling configured under one install does not outlive it (it kept marking
    groups as noted under later installs, and a span-records test failed)."""
    from otel_alloc.profiling import sampling
    from otel_alloc.tracker import sampler

    otel_alloc.install("counts")
    sampling.configure(512 * 1024)
    assert sampler.sampler_mean() == 512 * 1024
    otel_alloc.uninstall()
    otel_alloc.install("counts")
    assert sampler.sampler_mean() == 0
