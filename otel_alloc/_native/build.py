"""cffi build script for the native tracker (out-of-line API mode).

Wired into the package build through ``cffi_modules`` in ``setup.py``. The
tracker's C sources are listed here by folder (see the README's
"Architecture" section); the span-path extension is built by ``setup.py``.
"""

from __future__ import annotations

from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
# setuptools wants source paths relative to the project root, where the build runs.
ROOT = "otel_alloc/_native"

TRACKER_SOURCES = [
    f"{ROOT}/{name}"
    for name in (
        "api/capsule.c",
        "core/attribution.c",
        "core/hooks.c",
        "core/track.c",
        "core/install.c",
        "core/fork.c",
        "accounting/groups.c",
        "accounting/threads.c",
        "accounting/events.c",
        "accounting/process_stats.c",
        "support/ptable.c",
        "support/spinlock.c",
        "sampler/sampler.c",
        "sampler/estimate.c",
        "sampler/stacks.c",
        "compat/frames.c",
        "compat/runtime.c",
        "compat/tstate_code.c",
        "compat/tstate_slot.c",
        "native/elf_patch.c",
        "native/native_hooks.c",
    )
]

COMPILE_ARGS = ["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror=implicit-function-declaration",
                "-Wno-unused-parameter",
                "-Wno-missing-field-initializers"]

# Every header of the native tree: a change to one rebuilds the tracker
# (distutils otherwise recompiles only sources newer than their objects).
HEADERS = sorted(f"{ROOT}/{p.relative_to(HERE)}" for p in HERE.rglob("*.h"))

ffibuilder = FFI()
ffibuilder.cdef((HERE / "api" / "binding.h").read_text())
ffibuilder.set_source(
    "otel_alloc.tracker._tracker",
    '#include "api/tracker_api.h"\n',
    sources=TRACKER_SOURCES,
    depends=HEADERS,
    libraries=["m", "dl"],
    include_dirs=[ROOT],
    # PyMemAllocatorEx is hidden by the limited API that cffi selects by default.
    py_limited_api=False,
    define_macros=[("_CFFI_NO_LIMITED_API", None)],
    extra_compile_args=COMPILE_ARGS,
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
