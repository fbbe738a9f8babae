"""The environment a test's child interpreter gets."""

from __future__ import annotations

import os


def child_env(*, drop_pythonpath: bool = False, **extra: str) -> dict[str, str]:
    """This process's environment without ``OTEL_*`` settings, plus ``extra``.

    Args:
        drop_pythonpath: Also drop ``PYTHONPATH``, so the child imports the
            installed package as a user's program would.
        **extra: Variables to set in the child.

    Returns:
        A new mapping for ``subprocess``'s ``env``.
    """
    dropped = ("OTEL_", "PYTHONPATH") if drop_pythonpath else ("OTEL_",)
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    env.update(extra)
    return env
