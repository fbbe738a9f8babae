#!/usr/bin/env bash
# Installs everything the tests need and runs them (what CI runs).
#
#   scripts/test.sh            full run: lint, types, whole suite on CPython 3.11,
#                              then two lanes side by side: the unit suite under
#                              ASan+UBSan; the unit suite on 3.10, 3.12, 3.13,
#                              3.14 and 3.15 (a missing one fails the run), the
#                              lowest and newest checked SDK, and the benchmark
#                              suite's service tests (Debian's wrk)
#
# OTEL_ALLOC_SKIP_PYTHONS="3.14 3.15" skips those interpreters (local use
# only; CI never sets it). OTEL_ALLOC_QUICK=1 stops after the main suite.
#   scripts/test.sh -k expr    extra arguments go to the main pytest run
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=${OTEL_ALLOC_VENV:-.venv}
SDK_MIN=1.35.0   # lowest opentelemetry-sdk/api in pyproject.toml's range

# Supported CPython versions besides the main one ($PY, 3.11): each must be
# found, or the run fails. 3.10-3.13 come from pyenv or PATH; 3.13-3.15 from
# Debian's own builds (scripts/debian-cpython.sh) where nothing else has them.
OTHER_PYTHONS=${OTEL_ALLOC_PYTHONS:-"3.10 3.12 3.13 3.14 3.15"}

START_SECONDS=$SECONDS
# A heading, with the minutes and seconds since the start (where CI's time goes).
log() { printf '\n== [%d:%02d] %s\n' $(((SECONDS - START_SECONDS) / 60)) $(((SECONDS - START_SECONDS) % 60)) "$*"; }

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

# The prefix that interpreter $1 is installed under (its headers are there).
prefix_of() { dirname "$(dirname "$(dirname "$1")")"; }

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

log "python environment ($VENV)"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e '.[test,dev,native-test]'
# The native-mode tests need NumPy, pandas, Pillow and lxml: here a missing one
# fails instead of skipping.
export OTEL_ALLOC_REQUIRE_NATIVE_LIBS=1

# Debian's prometheus (the dashboard tests run real PromQL) and chromium (the
# flame graph tests drive the page in a headless browser); gdb, for the fork
# tests to take a hung child's stacks before they kill it; wrk, the load
# generator of the benchmark suite's service.
apt_packages=()
command -v gdb >/dev/null 2>&1 || apt_packages+=(gdb)
command -v wrk >/dev/null 2>&1 || apt_packages+=(wrk)
command -v prometheus >/dev/null 2>&1 || apt_packages+=(prometheus)
command -v chromium >/dev/null 2>&1 || apt_packages+=(chromium)
if [ ${#apt_packages[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        log "installing Debian's ${apt_packages[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_packages[@]}" >/dev/null
        if [[ " ${apt_packages[*]} " == *" prometheus "* ]]; then
            # The tests start their own server on loopback; the packaged service is not used.
            (service prometheus stop || systemctl stop prometheus) >/dev/null 2>&1 || true
        fi
    else
        for pkg in "${apt_packages[@]}"; do
            case $pkg in
                prometheus) echo "prometheus is not installed and this is not root: the Prometheus tests will be skipped" ;;
                chromium) echo "chromium is not installed and this is not root: the flame graph browser tests will be skipped" ;;
            esac
        done
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

# What follows runs in two lanes once everything is installed: the ASan+UBSan
# suite in the background (it builds and runs a copy of the tree of its own),
# the unit suite on every other interpreter and the SDK suites in the
# foreground. Each pytest run gets a temporary directory of its own. The
# installs come first and one at a time: editable installs into one tree
# must not overlap.
lanes=$(mktemp -d)
asan_pid=
# On any way out, the background lane (its own process group, by setsid)
# goes too.
end_lanes() {
    if [ -n "$asan_pid" ]; then kill -- -"$asan_pid" 2>/dev/null || true; fi
    rm -rf "$lanes"
}
trap end_lanes EXIT

log "installing the other supported CPythons (${OTHER_PYTHONS}) and SDKs"
unset OTEL_ALLOC_REQUIRE_NATIVE_LIBS  # NumPy and friends have no wheels for every version
missing=()
ready=()   # "version exe" of each interpreter whose unit suite runs
for v in $OTHER_PYTHONS; do
    if [[ " ${OTEL_ALLOC_SKIP_PYTHONS:-} " == *" $v "* ]]; then
        echo "python$v: skipped (OTEL_ALLOC_SKIP_PYTHONS)"
        continue
    fi
    exe=$(find_python "$v") || { echo "python$v: not found" >&2; missing+=("$v"); continue; }
    prefix=$(prefix_of "$exe")
    venv=".venv-$v"
    [ -x "$venv/bin/python" ] || make_venv "$exe" "$venv"
    echo "python$v: $exe"
    # Debian's builds keep pyconfig.h apart from the other headers; the tests
    # compile a native helper too.
    CFLAGS="-I$prefix/usr/include ${CFLAGS:-}" "$venv/bin/python" -m pip install -q -e '.[test]'
    # The native-memory libraries wherever wheels exist, so both of NumPy's
    # routes are tested: 1.x on 3.10 and 2.4 on 3.11 allocate array data with
    # malloc (native mode), 2.5 on 3.12+ with PyMem_RawMalloc (RAW).
    libs=(numpy pandas pillow lxml)
    [ "$v" = 3.10 ] && libs=('numpy<2' 'pandas<2.3' pillow lxml)
    "$venv/bin/python" -m pip install -q --only-binary=:all: "${libs[@]}" \
        || "$venv/bin/python" -m pip install -q --only-binary=:all: "${libs[0]}" \
        || echo "python$v: no NumPy wheel; its native-library tests are skipped"
    ready+=("$v $exe")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "FAILED: no interpreter for python ${missing[*]} (set OTEL_ALLOC_SKIP_PYTHONS to opt out locally)" >&2
    exit 1
fi

# The span processor against the lowest supported SDK (no _on_ending: the
# wrapping form only) and the first that calls _on_ending (every setup), and
# the size histogram's batch path, which reads SDK internals: exact against
# one record per size, or the one-by-one fallback, on each.
SDKS=("$SDK_MIN:0.56b0" "1.40.0:0.61b0")
for sdk in "${SDKS[@]}"; do
    version=${sdk%%:*}
    venv=".venv-sdk-$version"
    [ -x "$venv/bin/python" ] || "$PY" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q -e . pytest "opentelemetry-sdk==$version" \
        "opentelemetry-api==$version" "opentelemetry-instrumentation==${sdk##*:}"
done

# The benchmark suite's service (FastAPI and uvicorn under wrk, exporting over
# OTLP/HTTP to a local receiver): its tests skipped in the main suite, which
# runs without the benchmark extra; they run after the unit suites with it.
# Into the main venv, held to what is installed there (nothing the other
# tests ran with changes), before the ASan lane starts using that venv.
log "the benchmark extra, for the service's tests"
"$VENV/bin/python" -m pip freeze --exclude-editable >"$lanes/installed.txt"
"$VENV/bin/python" - >"$lanes/bench.txt" <<'PYEOF'
import tomllib
with open("pyproject.toml", "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["optional-dependencies"]["bench"]))
PYEOF
"$VENV/bin/python" -m pip install -q -c "$lanes/installed.txt" -r "$lanes/bench.txt"

log "native suite under AddressSanitizer + UndefinedBehaviorSanitizer (in the background)"
PYTHON="$(cd "$VENV" && pwd)/bin/python" setsid bash tests/native/run_sanitizers.sh asan \
    --basetemp="$lanes/asan-tmp" >"$lanes/asan.log" 2>&1 &
asan_pid=$!

for entry in "${ready[@]}"; do
    v=${entry%% *}
    exe=${entry#* }
    prefix=$(prefix_of "$exe")
    log "unit suite on python$v ($exe)"
    CFLAGS="-I$prefix/usr/include ${CFLAGS:-}" ".venv-$v/bin/python" -m pytest -q \
        -p no:cacheprovider --basetemp="$lanes/tmp-$v" tests/unit \
        || { echo "FAILED: unit suite on python$v" >&2; exit 1; }
done

for sdk in "${SDKS[@]}"; do
    version=${sdk%%:*}
    log "opentelemetry-sdk $version"
    ".venv-sdk-$version/bin/python" -m pytest -q -p no:cacheprovider \
        --basetemp="$lanes/tmp-sdk-$version" tests/unit/otel/test_processor.py \
        tests/unit/otel/test_setups.py tests/unit/otel/test_histogram_bulk.py \
        tests/unit/otel/test_span_attribute_choice.py \
        || { echo "FAILED: opentelemetry-sdk $version" >&2; exit 1; }
done

log "the benchmark suite's service (FastAPI under wrk)"
# Here a missing piece (wrk, a package) fails the tests instead of skipping them.
OTEL_ALLOC_REQUIRE_SERVICE=1 "$VENV/bin/python" -m pytest -q -p no:cacheprovider \
    --basetemp="$lanes/tmp-service" tests/integration/test_bench_interleave.py -k service \
    || { echo "FAILED: the service's tests" >&2; exit 1; }

asan_rc=0
wait "$asan_pid" || asan_rc=$?
asan_pid=
log "native suite under AddressSanitizer + UndefinedBehaviorSanitizer (its log)"
cat "$lanes/asan.log"
if [ "$asan_rc" -ne 0 ]; then
    echo "FAILED: the ASan+UBSan suite, exit $asan_rc" >&2
    exit "$asan_rc"
fi
