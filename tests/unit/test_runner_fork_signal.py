"""`otel-alloc run`: a forked child gets the program's SIGTERM handling back, always."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tests.support.child_env import child_env
from tests.unit.conftest import Helper

ROOT = Path(__file__).resolve().parents[2]


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


def test_a_sigterm_that_reaches_a_child_in_the_fork_still_ends_it(tmp_path: Path,
                                                                  helper: Helper) -> None:
    helper_dir = os.path.dirname(str(helper.module.__file__))
    launcher = tmp_path / "launcher.py"
    launcher.write_text(EARLY_SIGNAL_LAUNCHER)
    program = tmp_path / "program.py"
    program.write_text(EARLY_SIGNAL_PROGRAM)
    env = child_env()
    started = time.monotonic()
    proc = subprocess.run([sys.executable, str(launcher), str(program), helper_dir],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["child", "signal", str(int(signal.SIGTERM))], (
        proc.stdout, proc.stderr)
    assert time.monotonic() - started < 25  # not the child's 30 s sleep
