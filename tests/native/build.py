"""Builds the test-only allocation helper (a cffi module) into a directory."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

from cffi import FFI

HERE = Path(__file__).resolve().parent


def build_helper(target_dir: Path) -> ModuleType:
    """Compile ``_oa_test_helper`` into ``target_dir`` and import it."""
    ffi = FFI()
    ffi.cdef((HERE / "helper.h").read_text())
    ffi.set_source(
        "_oa_test_helper",
        "#include <stdint.h>\n#include <stddef.h>\n#include \"helper.h\"\n",
        sources=[str(HERE / "helper.c")],
        include_dirs=[str(HERE), str(HERE.parent.parent / "otel_alloc" / "_native" / "api")],
        py_limited_api=False,
        define_macros=[("_CFFI_NO_LIMITED_API", None)],
    )
    ffi.compile(tmpdir=str(target_dir))
    if str(target_dir) not in sys.path:
        sys.path.insert(0, str(target_dir))
    return importlib.import_module("_oa_test_helper")
