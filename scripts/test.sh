#!/usr/bin/env bash
# Installs everything the tests need and runs them (what CI runs).
#
#   scripts/test.sh            full run: lint, types, whole suite on CPython 3.11
#                              (meanwhile, scripts/install_lanes.sh installs the
#                              other lanes' venvs), then two lanes side by side:
#                              the unit suite under ASan+UBSan; the unit suite on
#                              3.10, 3.12, 3.13, 3.14 and 3.15 (a missing one
#                              fails the run), the lowest and newest checked SDK,
#                              and the benchmark suite's service tests (Debian's wrk)
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
export OTEL_ALLOC_PYTHONS=${OTEL_ALLOC_PYTHONS:-"3.10 3.12 3.13 3.14 3.15"}
# The span processor against the lowest supported SDK (no _on_ending: the
# wrapping form only) and the first that calls _on_ending (every setup), and
# the size histogram's batch path, which reads SDK internals: exact against
# one record per size, or the one-by-one fallback, on each. Each is
# "sdk:instrumentation".
export OTEL_ALLOC_SDKS="$SDK_MIN:0.56b0 1.40.0:0.61b0"

START_SECONDS=$SECONDS
# A heading, with the minutes and seconds since the start (where CI's time goes).
log() { printf '\n== [%d:%02d] %s\n' $(((SECONDS - START_SECONDS) / 60)) $(((SECONDS - START_SECONDS) % 60)) "$*"; }

# The prefix that interpreter $1 is installed under (its headers are there).
prefix_of() { dirname "$(dirname "$(dirname "$1")")"; }

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

# What follows runs in lanes. While the main suite runs (on one CPU), the
# other lanes' venvs are installed in the background (scripts/install_lanes.sh:
# downloads and builds, none of it in the main venv). Then the ASan+UBSan
# suite runs in the background (it builds and runs a copy of the tree of its
# own) beside the unit suite on every other interpreter and the SDK suites in
# the foreground. Each pytest run gets a temporary directory of its own.
lanes=$(mktemp -d)
install_pid=
asan_pid=
# On any way out, the background lanes (each its own process group, by
# setsid) go too.
end_lanes() {
    local pid
    for pid in "$install_pid" "$asan_pid"; do
        if [ -n "$pid" ]; then kill -- -"$pid" 2>/dev/null || true; fi
    done
    rm -rf "$lanes"
}
trap end_lanes EXIT
# Wait for the background lane whose pid variable is named $1, print its log
# $2 under the heading $3, and fail the run if it failed ($4 says what). The
# variable is cleared first: end_lanes must not kill a reaped pid's group.
join_lane() {
    local pid=${!1} rc=0
    wait "$pid" || rc=$?
    printf -v "$1" ''
    log "$3"
    cat "$2"
    if [ "$rc" -ne 0 ]; then
        echo "FAILED: $4, exit $rc" >&2
        exit "$rc"
    fi
}

if [ "${OTEL_ALLOC_QUICK:-0}" != 1 ]; then
    log "installing the other supported CPythons (${OTEL_ALLOC_PYTHONS}) and SDKs (in the background)"
    # NumPy and friends have no wheels for every version: there, their tests skip.
    env -u OTEL_ALLOC_REQUIRE_NATIVE_LIBS setsid bash scripts/install_lanes.sh "$lanes/ready" \
        >"$lanes/install.log" 2>&1 &
    install_pid=$!
fi

log "test suite"
"$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"

if [ "${OTEL_ALLOC_QUICK:-0}" = 1 ]; then
    exit 0
fi

join_lane install_pid "$lanes/install.log" "the other CPythons and SDKs, installed (its log)" \
    "installing the other lanes"
unset OTEL_ALLOC_REQUIRE_NATIVE_LIBS

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

mapfile -t ready <"$lanes/ready"   # "X.Y interpreter" lines
for entry in "${ready[@]}"; do
    v=${entry%% *}
    exe=${entry#* }
    prefix=$(prefix_of "$exe")
    log "unit suite on python$v ($exe)"
    CFLAGS="-I$prefix/usr/include ${CFLAGS:-}" ".venv-$v/bin/python" -m pytest -q \
        -p no:cacheprovider --basetemp="$lanes/tmp-$v" tests/unit \
        || { echo "FAILED: unit suite on python$v" >&2; exit 1; }
done

for sdk in $OTEL_ALLOC_SDKS; do
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

join_lane asan_pid "$lanes/asan.log" \
    "native suite under AddressSanitizer + UndefinedBehaviorSanitizer (its log)" \
    "the ASan+UBSan suite"
