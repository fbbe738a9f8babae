#!/usr/bin/env bash
# Runs the main job: the example web service traced end to end under the
# otel-alloc runner. It serves on a free local port, sends itself 300 requests,
# stops, and prints allocations per span. With OTEL_EXPORTER_OTLP_ENDPOINT set
# the data goes to that collector instead (add --table to still see the table).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${OTEL_ALLOC_VENV:-.venv}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e '.[otlp]'
exec "$VENV/bin/otel-alloc" run --mode live "$@" examples/web_service.py --demo 300
