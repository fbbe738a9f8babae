"""`otel-alloc run` with child processes: never a hang, whatever the start method."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.integration.test_runner import ROOT, _env
from tests.native.build import build_helper
from tests.support.hung import kill_tree, tree_evidence

# Each way a program makes child processes; `with Pool` ends with
# Pool.terminate(), which SIGTERMs the workers. SIGUSR1 makes every process of
# the program (forked, spawned or the fork server) print its Python stacks, for
# a hang's evidence.
PROGRAM = textwrap.dedent("""
    import concurrent.futures
    import faulthandler
    import multiprocessing as mp
    import os
    import signal
    import sys
    import time

    from opentelemetry import trace

    faulthandler.register(signal.SIGUSR1, all_threads=True)


    def work(n):
        return len(bytearray(n))


    if __name__ == "__main__":
        how = sys.argv[1]
        with trace.get_tracer("t").start_as_current_span("parent"):
            if how in ("fork", "forkserver", "spawn"):
                with mp.get_context(how).Pool(2) as pool:
                    assert pool.map(work, [1000] * 8) == [1000] * 8
            elif how == "executor":
                ctx = mp.get_context("fork")
                with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx) as ex:
                    assert list(ex.map(work, [1000] * 8)) == [1000] * 8
            else:  # a bare fork, terminated by its parent
                pid = os.fork()
                if pid == 0:
                    time.sleep(60)
                    os._exit(0)
                time.sleep(0.2)
                os.kill(pid, signal.SIGTERM)
                _, status = os.waitpid(pid, 0)
                assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM, status
        print("done", how)
""")

# 50 runs in all, each with a timeout: a hang showed in 11 of 80 before.
RUNS = ["fork"] * 15 + ["forkserver"] * 10 + ["spawn"] * 10 + ["executor"] * 10 + ["bare"] * 5


@pytest.mark.slow
def test_runner_never_hangs_on_child_processes(tmp_path: Path) -> None:
    script = tmp_path / "children.py"
    script.write_text(PROGRAM)

    def one(how: str) -> tuple[str, str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "otel_alloc", "run", "--no-table", str(script), how],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=_env())
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            evidence = tree_evidence(proc.pid, signal.SIGUSR1)
            kill_tree(proc.pid)
            out, err = proc.communicate()
            return how, (f"timed out after 60 s\n{evidence}\n--- stderr (Python stacks):\n"
                         f"{err[-20000:]}")
        if proc.returncode != 0 or f"done {how}" not in out:
            return how, f"exit {proc.returncode}: {err[-2000:]}"
        return how, "ok"

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(one, RUNS))
    failures = [f"{how}: {outcome}" for how, outcome in results if outcome != "ok"]
    assert failures == [], "\n\n".join(failures)
    assert len(results) == 50


# A SIGTERM that reaches a forked child before the runner's after-fork step
# gives it the program's handling back. A pool worker that was not yet
# running when Pool.terminate() signalled it caught the signal with the
# runner's handler, and CPython's after-fork step then dropped it: the worker
# lived on and its parent waited forever (1 in 15 runs in CI). The launcher
# makes every fork child signal itself from a C fork handler, inside fork(),
# where that worker met the signal.
EARLY_SIGNAL_LAUNCHER = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, sys.argv[2])
    import _oa_test_helper
    from otel_alloc.cli import main
    assert _oa_test_helper.lib.h_sigterm_in_fork_children() == 0
    sys.exit(main(["run", "--no-table", sys.argv[1]]))
""")

EARLY_SIGNAL_PROGRAM = textwrap.dedent("""
    import os, signal, time
    pid = os.fork()
    if pid == 0:
        time.sleep(30)  # the SIGTERM it got in the fork should have ended it
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    print("child", "signal" if os.WIFSIGNALED(status) else "exit",
          os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))
""")


def test_a_sigterm_that_reaches_a_child_in_the_fork_still_ends_it(tmp_path: Path) -> None:
    build_helper(tmp_path / "helper")
    launcher = tmp_path / "launcher.py"
    launcher.write_text(EARLY_SIGNAL_LAUNCHER)
    program = tmp_path / "program.py"
    program.write_text(EARLY_SIGNAL_PROGRAM)
    started = time.monotonic()
    proc = subprocess.run([sys.executable, str(launcher), str(program), str(tmp_path / "helper")],
                          capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["child", "signal", str(int(signal.SIGTERM))], (
        proc.stdout, proc.stderr)
    assert time.monotonic() - started < 25  # not the child's 30 s sleep
