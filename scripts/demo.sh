#!/usr/bin/env bash
# Runs the main job: an example app traced end to end, printing per-span
# allocations (and exporting over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${OTEL_ALLOC_VENV:-.venv}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e '.[otlp]'
exec "$VENV/bin/python" examples/batch_job.py "$@"
