#!/usr/bin/env bash
# Installs what scripts/test.sh's other lanes run on: for each supported
# CPython besides the main one, a venv (.venv-X.Y) with the package, its test
# extra and, where wheels exist, the native-memory libraries; for each SDK
# the SDK lanes check, a venv (.venv-sdk-V) with that opentelemetry-sdk.
# test.sh runs it in the background while its main suite runs: it touches
# neither the main venv nor anything the main suite reads.
#
#   scripts/install_lanes.sh READY
#
# Writes "X.Y interpreter" to READY for each interpreter whose unit suite
# runs, one at a time (editable installs into one tree must not overlap),
# and fails when a supported interpreter cannot be found. From test.sh's
# environment: PYTHON, OTEL_ALLOC_PYTHONS (the interpreters),
# OTEL_ALLOC_SKIP_PYTHONS (local use only), OTEL_ALLOC_SDKS ("sdk:instrumentation"
# pairs).
set -euo pipefail
cd "$(dirname "$0")/.."

READY=${1:?usage: install_lanes.sh READY}
PY=${PYTHON:-python3}
OTHER_PYTHONS=${OTEL_ALLOC_PYTHONS:?}
SDKS=${OTEL_ALLOC_SDKS:?}
: >"$READY"

# Path of a working python$1, installing Debian's build of 3.13+ if needed.
find_python() {
    local v=$1 cand
    # pyenv's shims answer `command -v` even for versions that are not
    # selected, so each candidate is checked by running it.
    for cand in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$v".*/bin/python"$v" \
                "$(command -v "python$v" 2>/dev/null || true)"; do
        if [ -n "$cand" ] && [ -x "$cand" ] && "$cand" -c 'import sys' >/dev/null 2>&1; then
            echo "$cand"
            return 0
        fi
    done
    case $v in
        3.13|3.14|3.15) bash scripts/debian-cpython.sh "$v" ;;
        *) return 1 ;;
    esac
}

# A venv with pip for interpreter $1 at $2 (Debian's builds come without
# ensurepip: pip is installed from its wheel).
make_venv() {
    local exe=$1 venv=$2
    if "$exe" -c 'import ensurepip' >/dev/null 2>&1; then
        "$exe" -m venv "$venv"
    else
        "$exe" -m venv --without-pip "$venv"
        local wheels
        wheels=$(mktemp -d)
        "$PY" -m pip download -q --no-deps -d "$wheels" pip
        "$venv/bin/python" "$(ls "$wheels"/pip-*.whl)/pip" install -q "$(ls "$wheels"/pip-*.whl)"
        rm -rf "$wheels"
    fi
    "$venv/bin/python" -m pip install -q --upgrade pip
}

missing=()
for v in $OTHER_PYTHONS; do
    if [[ " ${OTEL_ALLOC_SKIP_PYTHONS:-} " == *" $v "* ]]; then
        echo "python$v: skipped (OTEL_ALLOC_SKIP_PYTHONS)"
        continue
    fi
    exe=$(find_python "$v") || { echo "python$v: not found" >&2; missing+=("$v"); continue; }
    prefix=$(dirname "$(dirname "$(dirname "$exe")")")
    venv=".venv-$v"
    [ -x "$venv/bin/python" ] || make_venv "$exe" "$venv"
    echo "python$v: $exe"
    # Debian's builds keep pyconfig.h apart from the other headers.
    CFLAGS="-I$prefix/usr/include ${CFLAGS:-}" "$venv/bin/python" -m pip install -q -e '.[test]'
    # The native-memory libraries wherever wheels exist, so both of NumPy's
    # routes are tested: 1.x on 3.10 and 2.4 on 3.11 allocate array data with
    # malloc (native mode), 2.5 on 3.12+ with PyMem_RawMalloc (RAW).
    libs=(numpy pandas pillow lxml)
    [ "$v" = 3.10 ] && libs=('numpy<2' 'pandas<2.3' pillow lxml)
    "$venv/bin/python" -m pip install -q --only-binary=:all: "${libs[@]}" \
        || "$venv/bin/python" -m pip install -q --only-binary=:all: "${libs[0]}" \
        || echo "python$v: no NumPy wheel; its native-library tests are skipped"
    echo "$v $exe" >>"$READY"
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "FAILED: no interpreter for python ${missing[*]} (set OTEL_ALLOC_SKIP_PYTHONS to opt out locally)" >&2
    exit 1
fi

for sdk in $SDKS; do
    version=${sdk%%:*}
    venv=".venv-sdk-$version"
    [ -x "$venv/bin/python" ] || "$PY" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q -e . pytest "opentelemetry-sdk==$version" \
        "opentelemetry-api==$version" "opentelemetry-instrumentation==${sdk##*:}"
done
echo "installed: $(wc -l <"$READY") interpreters, SDKs $SDKS"
