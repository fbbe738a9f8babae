"""The live pointer table (ptable.c) against a reference map, in C.

tests/native/ptable_check.c drives the table with random puts and pops of
pymalloc-like, malloc-like (any even address) and arbitrary even keys, replaced and
missing keys, huge sizes kept in the side list, growth, deleted slots and the
rebuilds that drop them, shrinking and clear, and compares every answer with a
plain chained hash map, on a table with the nursery in front of its slots
(live mode's) and one without (estimate mode's). It also checks that growing
keeps within 32 bytes per live block (the nursery's fixed pages aside).

The table compares a group's control bytes sixteen at a time with SSE2 and
eight at a time in a 64-bit word elsewhere; both are built and checked here.
The word version's smaller groups fill up far more often, so it also drives
the deleted-slot paths hard.
"""

from __future__ import annotations

import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SUPPORT = ROOT / "otel_alloc" / "_native" / "support"
CHECK = ROOT / "tests" / "native" / "ptable_check.c"


def _compiler() -> str | None:
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(cc) or shutil.which("cc")


@pytest.fixture(scope="module", params=["sse2", "portable"])
def checker(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = _compiler()
    if cc is None:
        pytest.skip("no C compiler")
    exe = tmp_path_factory.mktemp("ptable") / f"ptable_check_{request.param}"
    variant = ["-DOA_PTABLE_PORTABLE"] if request.param == "portable" else []
    subprocess.run(
        [
            cc,
            *variant,
            "-std=gnu11",
            "-O2",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-I",
            str(SUPPORT),
            "-o",
            str(exe),
            str(CHECK),
            str(SUPPORT / "ptable.c"),
        ],
        check=True,
    )
    return exe


@pytest.mark.parametrize("nursery", [1, 0], ids=["nursery", "no-nursery"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_ptable_matches_reference(checker: Path, seed: int, nursery: int) -> None:
    r = subprocess.run([str(checker), str(seed), "30", str(nursery)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ok ")
