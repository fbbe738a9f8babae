"""The evidence a hung process tree leaves in a failure message (tests/support/hung.py)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import textwrap
import time

from tests.support.hung import end_hung, kill_tree, process_tree, tree_evidence

# A parent that forks a child; both then wait forever, each in its own call.
HANGS = textwrap.dedent("""
    import faulthandler, os, signal, sys, time
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    def parent_waits_here():
        os.waitpid(pid, 0)
    def child_sleeps_here():
        time.sleep(3600)
    pid = os.fork()
    if pid == 0:
        child_sleeps_here()
    print("forked", flush=True)
    parent_waits_here()
""")


def test_a_hung_tree_shows_every_process_and_its_python_stacks() -> None:
    proc = subprocess.Popen([sys.executable, "-c", HANGS], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "forked\n"
        deadline = time.monotonic() + 10
        while len(process_tree(proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        tree = process_tree(proc.pid)
        assert len(tree) == 2 and tree[0] == proc.pid, tree
        evidence, err = end_hung(proc, signal.SIGUSR1)
    finally:
        if proc.returncode is None:  # an assertion failed before end_hung
            kill_tree(proc.pid)
            proc.communicate(timeout=30)
    assert f"pid {tree[1]} (ppid {proc.pid}, state " in evidence
    for pid in tree:
        assert f"pid {pid} (ppid" in evidence
        assert f"--- C stacks of pid {pid}:" in evidence
    if shutil.which("gdb") is not None:
        assert evidence.count("Thread 1 ") >= 2 or evidence.count("#0 ") >= 2, evidence
    # Each process printed its own Python stack to the shared stderr.
    assert "parent_waits_here" in err and "child_sleeps_here" in err, err


def test_a_process_that_is_gone_is_said_to_be() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert tree_evidence(proc.pid).startswith(f"processes:\n  pid {proc.pid}: gone")
