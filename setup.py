"""Build hook: the cffi tracker and the C attribution path (metadata is in pyproject.toml)."""

from setuptools import Extension, setup

setup(
    cffi_modules=["otel_alloc/_native/build.py:ffibuilder"],
    ext_modules=[
        Extension(
            "otel_alloc._spanctx",
            sources=[
                "otel_alloc/_native/spanctx.c",
                "otel_alloc/_native/following.c",
                "otel_alloc/_native/spanend.c",
                "otel_alloc/_native/records.c",
                "otel_alloc/_native/spanpath.c",
            ],
            extra_compile_args=["-std=gnu11", "-O2", "-Wall", "-Wextra"],
        ),
    ],
)
