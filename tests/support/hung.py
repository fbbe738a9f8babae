"""Evidence from a hung process: every thread's stacks, for the failure message.

A hang that shows once in a CI run and not in a thousand local ones can only
be fixed from what the run saw; the tests that wait on processes take these
before they kill them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time


def c_stacks(pid: int) -> str:
    """Every thread's C stack of process ``pid``, by gdb when there is one."""
    gdb = shutil.which("gdb")
    if gdb is None:
        return "(no gdb to take them)"
    # gdb must not inherit the sanitizer run's LD_PRELOAD: under libasan it
    # hangs instead of attaching (seen: killed at the timeout, no stacks).
    env = {k: v for k, v in os.environ.items()
           if k not in ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS", "PYTHONMALLOC")}
    env["DEBUGINFOD_URLS"] = ""  # no network lookups for debug symbols
    try:
        out = subprocess.run([gdb, "-p", str(pid), "-batch", "-ex", "thread apply all bt"],
                             capture_output=True, text=True, timeout=120, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"(gdb failed: {exc})"
    return out.stdout[-20000:] + out.stderr[-2000:]


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants, parents first (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        stat = _stat(int(entry)) if entry.isdigit() else None
        if stat is not None:  # else not a process, or exited meanwhile
            children.setdefault(stat[2], []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop(0)
        tree.append(current)
        todo.extend(sorted(children.get(current, [])))
    return tree


def _stat(pid: int) -> tuple[str, str, int] | None:
    """(name, state, parent pid) of ``pid`` from /proc, None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # The name, in parentheses, may hold spaces: the fields after it are fixed.
    name, rest = stat.split(" (", 1)[1].rsplit(")", 1)
    state, ppid = rest.split()[:2]
    return name, state, int(ppid)


def _describe(pid: int) -> str:
    stat = _stat(pid)
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        stat = None
    if stat is None:
        return f"pid {pid}: gone"
    name, state, ppid = stat
    # A process that outlived a SIGTERM shows why in its signal masks:
    # pending, blocked, ignored, caught (bit n-1 is signal n).
    masks = _status_fields(pid, ("SigPnd", "ShdPnd", "SigBlk", "SigIgn", "SigCgt"))
    return f"pid {pid} (ppid {ppid}, state {state}, {masks}) {name}: {cmdline}"


def _status_fields(pid: int, wanted: tuple[str, ...]) -> str:
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
    except OSError:
        return "no status"
    return " ".join(f"{k} {fields[k].strip()}" for k in wanted if k in fields)


def tree_evidence(pid: int, python_stacks_signal: int | None = None) -> str:
    """What every process under ``pid`` is doing: states, C and Python stacks.

    C stacks come from gdb. Python stacks come from processes that
    registered ``faulthandler`` for ``python_stacks_signal``: they write them
    to their own stderr, which the caller reads after killing them. The
    signal goes out after gdb is done, as it kills a process that did not
    register it.
    """
    pids = process_tree(pid)
    lines = ["processes:"] + ["  " + _describe(p) for p in pids]
    lines += [f"--- C stacks of pid {p}:\n{c_stacks(p)}" for p in pids]
    if python_stacks_signal is not None:
        for p in pids:
            with contextlib.suppress(OSError):
                os.kill(p, python_stacks_signal)
        time.sleep(0.5)  # each writes its stacks from its signal handler
    return "\n".join(lines)


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every descendant, the youngest first."""
    for p in reversed(process_tree(pid)):
        with contextlib.suppress(OSError):
            os.kill(p, signal.SIGKILL)


def end_hung(proc: subprocess.Popen[str],
             python_stacks_signal: int | None = None) -> tuple[str, str]:
    """Take a hung ``proc``'s evidence (tree_evidence), then kill its tree.

    Returns:
        The evidence, and the stderr the processes left (with any Python
        stacks they printed).
    """
    evidence = tree_evidence(proc.pid, python_stacks_signal)
    kill_tree(proc.pid)
    _, err = proc.communicate(timeout=30)
    return evidence, err
