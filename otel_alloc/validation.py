"""Validation of settings given as arguments or ``OTEL_ALLOC_*`` variables.

Every setting is checked when the component that uses it starts; a bad value
raises :class:`ConfigError` naming the setting, the value and what is accepted.

A leaf module (it imports only :mod:`otel_alloc.units`): the tracker, the
OpenTelemetry side, profiling and the command line all validate through it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from otel_alloc.units import SIZE_UNITS


class ConfigError(ValueError):
    """A setting has a value that is not accepted."""

    def __init__(self, setting: str, value: object, accepted: str) -> None:
        self.setting = setting
        self.value = value
        self.accepted = accepted
        super().__init__(f"{setting}={value!r} is not valid: expected {accepted}")


def env_value(name: str) -> str | None:
    """The stripped value of an environment variable, or None when unset/empty."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return None
    return raw.strip()


def choice(name: str, value: str | None, env: str, default: str, choices: Iterable[str]) -> str:
    """Resolve a setting that takes one of a fixed set of words."""
    options = tuple(choices)
    setting, raw = (name, value) if value is not None else (env, env_value(env))
    if raw is None:
        return default
    if not isinstance(raw, str) or raw.lower() not in options:
        raise ConfigError(setting, raw, "one of " + ", ".join(repr(c) for c in options))
    return raw.lower()


def integer(name: str, value: int | None, env: str, default: int,
            minimum: int, maximum: int | None = None) -> int:
    """Resolve an integer setting within ``[minimum, maximum]``."""
    accepted = f"an integer >= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
    if value is not None:
        setting, parsed = name, value
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(setting, value, accepted)
    else:
        setting = env
        raw = env_value(env)
        if raw is None:
            return default
        try:
            parsed = int(raw, 10)
        except ValueError:
            raise ConfigError(setting, raw, accepted) from None
    if parsed < minimum or (maximum is not None and parsed > maximum):
        raise ConfigError(setting, parsed, accepted)
    return parsed


# The largest size the native tracker takes (its sizes are 64-bit signed in places).
MAX_SIZE = 2**63 - 1


# The smallest mean of sampled allocation sites (0 turns sampling off). Below
# it the program spends more time sampling and draining than running: at a
# 256-byte mean a request-like workload ran 12x slower, and before draining
# stopped sampling itself, a program never exited.
MIN_SAMPLE_BYTES = 4096


def size(name: str, value: int | str | None, env: str, default: int,
         minimum: int = 0, *, zero: bool = False, maximum: int = MAX_SIZE) -> int:
    """Resolve a byte size: an integer, or a string like ``64MiB`` / ``1.5GB``.

    Sizes from ``minimum`` to ``maximum`` are accepted; with ``zero``, 0
    (off) too.
    """
    accepted = (("0 (off) or " if zero else "")
                + f"a byte size from {minimum} to {maximum} (an integer, or a number with "
                "B, KB, MB, GB, KiB, MiB, GiB)")
    setting, raw = (name, value) if value is not None else (env, env_value(env))
    if raw is None:
        return default
    if isinstance(raw, bool):
        raise ConfigError(setting, raw, accepted)
    if isinstance(raw, int):
        parsed = raw
    elif isinstance(raw, str):
        text = raw.strip().lower().replace(" ", "")
        number = text.rstrip("abcdefghijklmnopqrstuvwxyz")
        unit = text[len(number):]
        if unit not in SIZE_UNITS or not number:
            raise ConfigError(setting, raw, accepted)
        try:
            parsed = int(float(number) * SIZE_UNITS[unit])
        except ValueError:
            raise ConfigError(setting, raw, accepted) from None
    else:
        raise ConfigError(setting, raw, accepted)
    if (parsed < minimum and not (zero and parsed == 0)) or parsed > maximum:
        raise ConfigError(setting, raw, accepted)
    return parsed


def sample_bytes(name: str, value: int | str | None, env: str, default: int) -> int:
    """Resolve the mean bytes between sampled allocations: 0 (off) or at least 4 KiB."""
    return size(name, value, env, default, MIN_SAMPLE_BYTES, zero=True)


def number(name: str, value: float | None, env: str, default: float,
           minimum: float = 0.0, maximum: float | None = None) -> float:
    """Resolve a float setting within ``[minimum, maximum]`` (seconds, ratios)."""
    accepted = f"a number >= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
    setting, raw = (name, value) if value is not None else (env, env_value(env))
    if raw is None:
        return default
    if isinstance(raw, bool):
        raise ConfigError(setting, raw, accepted)
    try:
        parsed = float(raw)
    except (TypeError, ValueError):
        raise ConfigError(setting, raw, accepted) from None
    if parsed != parsed or parsed < minimum or (maximum is not None and parsed > maximum):
        raise ConfigError(setting, raw, accepted)
    return parsed


# The words a boolean setting takes (any case).
TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off")


def flag(name: str, value: bool | None, env: str, default: bool) -> bool:
    """Resolve a boolean setting (``true``/``false``, ``1``/``0``, ``yes``/``no``)."""
    if value is not None:
        if not isinstance(value, bool):
            raise ConfigError(name, value, "True or False")
        return value
    raw = env_value(env)
    if raw is None:
        return default
    lowered = raw.lower()
    if lowered in TRUE_WORDS:
        return True
    if lowered in FALSE_WORDS:
        return False
    raise ConfigError(env, raw, "one of 'true', 'false', '1', '0', 'yes', 'no', 'on', 'off'")
