"""``otel-alloc report``: which options each kind takes, where the profile comes from."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request

from otel_alloc import validation as config
from otel_alloc.profiling import scope
from otel_alloc.profiling import text_reports as reports
from otel_alloc.profiling.profile import Profile
from otel_alloc.profiling.render import render_report
from otel_alloc.profiling.report_server import parse_address

FLAME_VALUES = ("bytes", "count", "live_bytes", "live_count")
# The options each kind takes; any other option given is refused, naming both.
# --span and --thread restrict every kind; tables take -n; live and churn group
# by --key; live and the stack kinds sum --value.
APPLIES: dict[str, tuple[str, ...]] = {
    "top": ("span", "thread", "n"),
    "live": ("span", "thread", "key", "value", "n"),
    "threads": ("span", "thread", "n"),
    "churn": ("span", "thread", "key", "n"),
    "collapsed": ("span", "thread", "value"),
    "flamegraph": ("span", "thread", "value"),
}
VALUES = {"live": reports.VALUES, "collapsed": FLAME_VALUES, "flamegraph": FLAME_VALUES}
_FLAGS = {"span": "--span", "thread": "--thread", "key": "--key", "value": "--value", "n": "-n"}


def check_options(ns: argparse.Namespace) -> None:
    """Refuse options the kind does not take, and values it does not accept.

    Raises:
        ConfigError: Naming the option, the kind and what the kind takes.
    """
    takes = APPLIES[ns.kind]
    for option, flag in _FLAGS.items():
        if getattr(ns, option) is not None and option not in takes:
            raise config.ConfigError(
                flag, getattr(ns, option),
                f"no {flag} with --kind {ns.kind} (it takes "
                + ", ".join(_FLAGS[o] for o in takes) + ")")
    if ns.value is not None and ns.value not in VALUES[ns.kind]:
        raise config.ConfigError("--value", ns.value, f"one of {', '.join(VALUES[ns.kind])} "
                                                      f"with --kind {ns.kind}")
    if ns.n is not None and ns.n < 1:
        raise config.ConfigError("-n", ns.n, "a number of rows >= 1")


def profile_url(url: str) -> str:
    """The endpoint's base URL: ``http://…`` as given, or ``[host:]port`` as ``--serve`` takes."""
    if "://" in url:
        return url.rstrip("/")
    host, port = parse_address(url, "--url")
    return f"http://{host}:{port}"


def load(ns: argparse.Namespace) -> Profile:
    """The profile from ``--file`` or ``--url``."""
    if ns.file:
        return Profile.load(ns.file)
    with urllib.request.urlopen(profile_url(ns.url) + "/profile.json", timeout=30) as r:
        return Profile.from_json(json.load(r))


def render(profile: Profile, ns: argparse.Namespace) -> str:
    """The report ``ns`` asks for (options checked by :func:`check_options`)."""
    prof = scope.restrict(profile, span=ns.span, thread=ns.thread)
    n = ns.n if ns.n is not None else 20
    value = ns.value or "bytes"
    key = ns.key or "site"
    if ns.kind == "top":
        return reports.top_sites_report(prof, span=ns.span, n=n)
    if ns.kind == "live":
        return reports.live_report(prof, key=key, value=value, n=n)
    if ns.kind == "threads":
        return reports.thread_report(prof, n=n)
    if ns.kind == "churn":
        return reports.churn_report(prof, key=key, n=n)
    return render_report(prof, ns.kind, span=ns.span, value=value)


def report(ns: argparse.Namespace) -> int:
    """Run ``otel-alloc report``; returns the exit code."""
    try:
        check_options(ns)
        text = render(load(ns), ns)
    except (OSError, ValueError, KeyError) as err:
        print(f"otel-alloc report: {err}", file=sys.stderr)
        return 2
    if ns.output:
        with open(ns.output, "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0
