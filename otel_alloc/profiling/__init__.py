"""Profiling: sampled allocation sites and what is made of them.

Owns turning the native sampler's samples into a profile (``sampling``,
``profile``), text reports (``text_reports``), flame graphs (``flamegraph``),
one entry point for every report kind (``render``), and the optional HTTP
endpoint that serves them (``report_server``).

May import: :mod:`otel_alloc.tracker`, :mod:`otel_alloc.validation` and
:mod:`otel_alloc.units`. Never OpenTelemetry, :mod:`otel_alloc.otel` or
:mod:`otel_alloc.cli`: span names reach a profile through resolvers the span
processor registers.
"""
