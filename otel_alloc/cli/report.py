"""``otel-alloc report``: where the profile comes from (options per kind: profiling.render)."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request

from otel_alloc.profiling.profile import Profile
from otel_alloc.profiling.render import ReportOptions, render
from otel_alloc.profiling.report_server import parse_address


def options_of(ns: argparse.Namespace) -> ReportOptions:
    """The report request the command line makes."""
    return ReportOptions(ns.kind, ns.span, ns.thread, ns.key, ns.value, ns.n)


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


def report(ns: argparse.Namespace) -> int:
    """Run ``otel-alloc report``; returns the exit code."""
    try:
        options = options_of(ns)
        options.check()
        text = render(load(ns), options)
    except (OSError, ValueError, KeyError) as err:
        print(f"otel-alloc report: {err}", file=sys.stderr)
        return 2
    if ns.output:
        with open(ns.output, "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0
