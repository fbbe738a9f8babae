"""All processor settings in one place, resolved and validated at start."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeAlias

from otel_alloc import tracker
from otel_alloc import validation as config
from otel_alloc.otel.span_records import ATTRIBUTE_MODES, attribute_mask
from otel_alloc.tracker.errors import ModeConflictError

MIB = 1024 * 1024

# span_attributes: True, every alloc.* attribute the mode has; False, none;
# or exactly the attributes named.
AttributeChoice: TypeAlias = bool | frozenset[str]
ATTRIBUTES_ENV = "OTEL_ALLOC_SPAN_ATTRIBUTES"


@dataclass(frozen=True)
class Settings:
    """Validated settings of an :class:`~otel_alloc.AllocationSpanProcessor`.

    Each field is a constructor argument with an ``OTEL_ALLOC_*`` default;
    :meth:`resolve` checks them all and raises
    :class:`~otel_alloc.ConfigError` naming the first bad one.
    """

    stale_span_seconds: float
    max_span_names: int
    span_threshold_bytes: int
    leak_grace_seconds: float
    leak_min_bytes: int
    max_retained_spans: int
    span_summary_events: bool
    span_attributes: AttributeChoice
    metrics: bool
    events: bool
    sample_bytes: int
    span_size_sample_rate: float

    @property
    def attribute_mask(self) -> int:
        """The ``alloc.*`` attributes ``span_attributes`` chose, as the span path's mask."""
        return attribute_mask(self.span_attributes)

    @classmethod
    def resolve(
        cls,
        *,
        stale_span_seconds: float | None = None,
        max_span_names: int | None = None,
        span_threshold_bytes: int | str | None = None,
        leak_grace_seconds: float | None = None,
        leak_min_bytes: int | str | None = None,
        max_retained_spans: int | None = None,
        span_summary_events: bool | None = None,
        span_attributes: bool | str | Iterable[str] | None = None,
        metrics: bool | None = None,
        events: bool | None = None,
        sample_bytes: int | str | None = None,
        span_size_sample_rate: float | None = None,
        tracker_mode: str | None = None,
    ) -> Settings:
        """Resolve every setting from its argument or environment variable.

        ``tracker_mode`` is the processor's ``mode`` argument: the attributes
        ``span_attributes`` names are checked against the mode the tracker
        is installed in, else the one it will be installed in.
        """
        settings = cls(
            stale_span_seconds=config.number(
                "stale_span_seconds", stale_span_seconds, "OTEL_ALLOC_STALE_SPAN_SECONDS", 600.0),
            max_span_names=config.integer(
                "max_span_names", max_span_names, "OTEL_ALLOC_MAX_SPAN_NAMES", 200, 1, 100_000),
            span_threshold_bytes=config.size(
                "span_threshold_bytes", span_threshold_bytes, "OTEL_ALLOC_SPAN_THRESHOLD_BYTES",
                256 * MIB),
            leak_grace_seconds=config.number(
                "leak_grace_seconds", leak_grace_seconds, "OTEL_ALLOC_LEAK_GRACE_SECONDS", 30.0),
            leak_min_bytes=config.size(
                "leak_min_bytes", leak_min_bytes, "OTEL_ALLOC_LEAK_MIN_BYTES", 64 * 1024),
            max_retained_spans=config.integer(
                "max_retained_spans", max_retained_spans, "OTEL_ALLOC_MAX_RETAINED_SPANS",
                1024, 0, 1_000_000),
            span_summary_events=config.flag(
                "span_summary_events", span_summary_events, "OTEL_ALLOC_SPAN_EVENTS", False),
            span_attributes=attribute_choice(span_attributes),
            metrics=config.flag("metrics", metrics, "OTEL_ALLOC_METRICS", True),
            events=config.flag("events", events, "OTEL_ALLOC_EVENTS", True),
            sample_bytes=config.sample_bytes(
                "sample_bytes", sample_bytes, "OTEL_ALLOC_SAMPLE_BYTES", 512 * 1024),
            span_size_sample_rate=config.number(
                "span_size_sample_rate", span_size_sample_rate,
                "OTEL_ALLOC_SPAN_SIZE_SAMPLE_RATE", 1.0, 0.0, 1.0),
        )
        mode = tracker.installed_mode() or tracker.resolve_mode(tracker_mode)
        check_attribute_modes(settings.span_attributes, mode,
                              "span_attributes" if span_attributes is not None else ATTRIBUTES_ENV)
        return settings


def attribute_choice(value: bool | str | Iterable[str] | None) -> AttributeChoice:
    """Resolve ``span_attributes``: a flag, or the ``alloc.*`` attributes to set.

    The argument (else ``OTEL_ALLOC_SPAN_ATTRIBUTES``, else True) is a bool,
    a word a flag takes (``true``, ``off``, ...), or attribute names given as
    an iterable or one comma-separated string, each with or without its
    ``alloc.`` prefix: ``"alloc.bytes,live_bytes"``.

    Raises:
        ConfigError: A name is no ``alloc.*`` span attribute, or none is given.

    """
    setting, raw = (("span_attributes", value) if value is not None
                    else (ATTRIBUTES_ENV, config.env_value(ATTRIBUTES_ENV)))
    if raw is None:
        return True
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        word = raw.strip().lower()
        if word in config.TRUE_WORDS or word in config.FALSE_WORDS:
            return word in config.TRUE_WORDS
        items: Sequence[object] = raw.split(",")
    elif isinstance(raw, Iterable):
        items = list(raw)
    else:
        items = [raw]
    accepted = ("True, False, or alloc.* span attribute names (a list or one comma-separated "
                "string) of " + ", ".join(ATTRIBUTE_MODES))
    chosen = set()
    for item in items:
        name = item.strip() if isinstance(item, str) else item
        if isinstance(name, str) and not name.startswith("alloc."):
            name = "alloc." + name
        if not isinstance(name, str) or name not in ATTRIBUTE_MODES:
            raise config.ConfigError(setting, item, accepted)
        chosen.add(name)
    if not chosen:
        raise config.ConfigError(setting, raw, accepted)
    return frozenset(chosen)


def check_attribute_modes(choice: AttributeChoice, mode: str, setting: str) -> None:
    """Refuse a chosen ``alloc.*`` attribute that tracker mode ``mode`` never sets.

    Raises:
        ConfigError: ``choice`` names an attribute of another mode
            (``alloc.live_bytes`` in counts mode, say).

    """
    if isinstance(choice, bool):
        return
    for name in sorted(choice):
        if mode not in ATTRIBUTE_MODES[name]:
            settable = ", ".join(n for n, modes in ATTRIBUTE_MODES.items() if mode in modes)
            raise config.ConfigError(setting, name, f"in {mode} mode one of {settable}")


# The processor's own arguments besides the Settings fields.
PROCESSOR_ARGUMENTS = ("span_processor", "mode", "max_groups", "threshold_bytes",
                       "event_capacity", "native", "estimate_bytes", "meter_provider",
                       "logger_provider", "sinks")


def check_keywords(keywords: Iterable[str]) -> None:
    """Refuse a keyword that is no setting, listing the valid ones."""
    unknown = sorted(set(keywords) - set(Settings.__dataclass_fields__))
    if unknown:
        raise config.ConfigError(
            "AllocationSpanProcessor keyword", unknown[0],
            "one of " + ", ".join(sorted([*Settings.__dataclass_fields__,
                                          *PROCESSOR_ARGUMENTS])))


def install_tracker(mode: str | None, max_groups: int | None, threshold_bytes: int | str | None,
                    event_capacity: int | None, native: bool | None = None,
                    estimate_bytes: int | str | None = None) -> str:
    """Install the tracker with the processor's settings, or check the installed one.

    Returns:
        The installed mode.

    Raises:
        ConfigError: A setting has a bad value.
        ModeConflictError: The tracker is installed in another mode than ``mode``.

    """
    installed = tracker.installed_mode()
    if installed is None:
        return tracker.install(mode, max_groups=max_groups, threshold_bytes=threshold_bytes,
                               event_capacity=event_capacity, native=native,
                               estimate_bytes=estimate_bytes)
    # Installed already: table and buffer sizes and the estimate's mean are
    # fixed, but a bad value is still an error, as it would be on a fresh
    # install.
    tracker.check_install_settings(max_groups=max_groups, event_capacity=event_capacity)
    tracker.check_estimate_bytes(estimate_bytes)
    # Installed already: install() turns native mode on when asked (argument
    # or variable) and otherwise leaves the tracker as it is.
    tracker.install(installed, native=native)
    if mode is not None:
        wanted = tracker.resolve_mode(mode)
        if wanted != installed:
            raise ModeConflictError(installed, wanted)
    if threshold_bytes is not None:
        tracker.set_threshold(threshold_bytes)
    return installed
