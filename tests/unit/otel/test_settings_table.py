"""Every setting in the README's table is what the README says it is.

Each row's argument is a processor argument and its variable is the one read,
each checked by giving a bad value both ways; every ``install()`` setting is a
processor argument too.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

import otel_alloc
from otel_alloc import AllocationSpanProcessor, tracker
from otel_alloc.otel.settings import PROCESSOR_ARGUMENTS, Settings

README = Path(__file__).resolve().parents[3] / "README.md"
# Rows that belong to other components (tested with them).
ELSEWHERE = {"OTEL_ALLOC_ENABLED", "OTEL_ALLOC_PROFILE_FILE", "OTEL_ALLOC_REPORT_ADDRESS"}
BAD = "x"  # no setting accepts it, as an argument or a variable


def _rows() -> list[tuple[str | None, str]]:
    """(argument or None, variable) of each row of the Configuration table."""
    text = README.read_text()
    table = text[text.index("| argument | variable |"):]
    rows = []
    for line in table.splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        variable = cells[1].strip("`")
        if variable in ELSEWHERE:
            continue
        arg = re.fullmatch(r"`(\w+)`", cells[0])
        rows.append((arg.group(1) if arg else None, variable))
    return rows


ROWS = _rows()


def _refused(**kwargs: object) -> otel_alloc.ConfigError:
    with pytest.raises(otel_alloc.ConfigError) as err:
        processor = AllocationSpanProcessor(**kwargs)  # type: ignore[arg-type]
        processor.shutdown()
    return err.value


def test_table_lists_every_processor_setting() -> None:
    listed = {arg for arg, _ in ROWS if arg is not None}
    params = inspect.signature(AllocationSpanProcessor.__init__).parameters
    settings = ({n for n in params if n in PROCESSOR_ARGUMENTS}
                - {"span_processor", "meter_provider", "logger_provider", "sinks"})
    assert listed == settings | set(Settings.__dataclass_fields__)


def test_every_install_setting_is_a_processor_argument() -> None:
    install = set(inspect.signature(tracker.install).parameters)
    processor = set(inspect.signature(AllocationSpanProcessor.__init__).parameters)
    assert install == {"mode", "max_groups", "threshold_bytes", "event_capacity", "native",
                       "estimate_bytes"}
    assert install <= processor
    assert set(PROCESSOR_ARGUMENTS) <= processor


@pytest.mark.parametrize(("arg", "variable"), [r for r in ROWS if r[0] is not None],
                         ids=[r[1] for r in ROWS if r[0] is not None])
def test_argument_is_validated(uninstalled: None, arg: str, variable: str) -> None:
    err = _refused(**{arg: BAD})
    assert err.setting == arg and err.value == BAD and err.accepted


@pytest.mark.parametrize(("arg", "variable"), ROWS, ids=[r[1] for r in ROWS])
def test_variable_is_read_and_validated(uninstalled: None, monkeypatch: pytest.MonkeyPatch,
                                        arg: str | None, variable: str) -> None:
    monkeypatch.setenv(variable, BAD)
    err = _refused()
    assert err.setting == variable and err.value == BAD and err.accepted


def test_event_capacity_reaches_the_tracker(uninstalled: None) -> None:
    processor = AllocationSpanProcessor(event_capacity=4, threshold_bytes=1000, metrics=False,
                                        events=False, sample_bytes=0)
    try:
        processor._watch.shutdown()  # nobody drains: the buffer fills
        before = tracker.counters().events_dropped
        keep = [bytearray(5000) for _ in range(20)]
        assert tracker.counters().events_dropped - before >= 20 - 4
        del keep
    finally:
        processor.shutdown()


def test_event_capacity_checked_when_installed_already(uninstalled: None) -> None:
    otel_alloc.install("counts")
    err = _refused(event_capacity=0)
    assert err.setting == "event_capacity"
