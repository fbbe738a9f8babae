"""`otel-alloc run` with child processes: never a hang, whatever the start method."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.integration.test_runner import ROOT, _env
from tests.support.hung import end_hung

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
            evidence, err = end_hung(proc, signal.SIGUSR1)
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

