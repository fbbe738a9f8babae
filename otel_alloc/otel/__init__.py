"""The OpenTelemetry side: everything that speaks OpenTelemetry.

Owns the span processor (``processor``) and its per-span path in C
(``_spanpath``, built from ``otel_alloc/_native/spans``), the runtime-context
follower that keeps the tracker's current group in step with the current span
(``context_follower``), span records and their attributes (``span_records``),
the processor's settings (``settings``), OTLP metrics (``metrics``) and events
(``events``), the watch thread (``watch``), the ``opentelemetry-instrument``
entry point (``instrumentor``), providers built from ``OTEL_*`` variables
(``providers``), and the contract names dashboards rely on (``contract``).

May import: OpenTelemetry, :mod:`otel_alloc.tracker`,
:mod:`otel_alloc.profiling`, :mod:`otel_alloc.validation` and
:mod:`otel_alloc.units`. Never :mod:`otel_alloc.cli`.

Importing this package imports nothing else: the OpenTelemetry SDK loads
with the first of its modules that is used.
"""
