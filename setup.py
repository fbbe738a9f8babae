"""Build hook: compiles the native tracker with cffi (metadata is in pyproject.toml)."""

from setuptools import setup

setup(cffi_modules=["otel_alloc/_native/build.py:ffibuilder"])
