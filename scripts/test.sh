#!/usr/bin/env bash
# Installs everything the tests need and runs them (what CI runs).
#
#   scripts/test.sh            full run: lint, types, whole suite, native suite on
#                              every other installed CPython, lowest supported SDK
#   scripts/test.sh -k expr    extra arguments go to the main pytest run
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=${OTEL_ALLOC_VENV:-.venv}
SDK_MIN=1.35.0   # lowest opentelemetry-sdk/api in pyproject.toml's range

log() { printf '\n== %s\n' "$*"; }

log "python environment ($VENV)"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e '.[test,dev]'

if ! command -v prometheus >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        log "installing Debian's prometheus (the dashboard tests run real PromQL)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null
        # The tests start their own server on loopback; the packaged service is not used.
        (service prometheus stop || systemctl stop prometheus) >/dev/null 2>&1 || true
    else
        echo "prometheus is not installed and this is not root: the Prometheus tests will be skipped"
    fi
fi

log "ruff and mypy"
"$VENV/bin/ruff" check .
"$VENV/bin/mypy"

log "test suite"
"$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"

if [ "${OTEL_ALLOC_QUICK:-0}" = 1 ]; then
    exit 0
fi

log "native suite on the other installed CPython versions"
for v in 3.10 3.12 3.13; do
    exe=""
    # pyenv's shims answer `command -v` even for versions that are not selected,
    # so each candidate is checked by running it.
    for cand in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$v".*/bin/python"$v" \
                "$(command -v "python$v" 2>/dev/null || true)"; do
        if [ -n "$cand" ] && [ -x "$cand" ] && "$cand" -c 'import sys' >/dev/null 2>&1; then
            exe=$cand
            break
        fi
    done
    if [ -z "$exe" ]; then
        echo "python$v not installed: skipped"
        continue
    fi
    venv=".venv-$v"
    [ -x "$venv/bin/python" ] || "$exe" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q -e '.[test]'
    "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/unit
done

log "lowest supported opentelemetry-sdk ($SDK_MIN)"
venv=".venv-sdk-min"
[ -x "$venv/bin/python" ] || "$PY" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q -e . pytest "opentelemetry-sdk==$SDK_MIN" "opentelemetry-api==$SDK_MIN"
"$venv/bin/python" -m pytest -q -p no:cacheprovider tests/unit/test_processor.py
