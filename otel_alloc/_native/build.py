"""cffi build script for the native tracker (out-of-line API mode).

Wired into the package build through ``cffi_modules`` in ``setup.py``.
"""

from __future__ import annotations

from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent

ffibuilder = FFI()
ffibuilder.cdef((HERE / "oa_api.h").read_text())
ffibuilder.set_source(
    "otel_alloc._tracker",
    '#include "tracker.h"\n',
    # setuptools wants source paths relative to the project root, where the
    # build runs.
    sources=[
        "otel_alloc/_native/hooks.c",
        "otel_alloc/_native/install.c",
        "otel_alloc/_native/groups.c",
        "otel_alloc/_native/threads.c",
        "otel_alloc/_native/events.c",
        "otel_alloc/_native/figures.c",
        "otel_alloc/_native/ptable.c",
        "otel_alloc/_native/sampler.c",
        "otel_alloc/_native/frames.c",
    ],
    libraries=["m"],
    include_dirs=["otel_alloc/_native"],
    # PyMemAllocatorEx is hidden by the limited API that cffi selects by default.
    py_limited_api=False,
    define_macros=[("_CFFI_NO_LIMITED_API", None)],
    extra_compile_args=["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter",
                        "-Wno-missing-field-initializers"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
