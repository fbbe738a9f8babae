#!/usr/bin/env bash
# Memory-error checks of the native code (otel_alloc/_native/*.c): the core
# suite (tests/unit) under AddressSanitizer + UndefinedBehaviorSanitizer,
# under ThreadSanitizer, and under valgrind memcheck.
#
# Usage:
#   tests/native/run_sanitizers.sh [asan|tsan|valgrind|all] [extra pytest args...]
#
# Environment:
#   PYTHON          interpreter with cffi and pytest (default: .venv/bin/python)
#   KEEP_WORKDIR=1  keep the temporary directory (builds and logs) afterwards
#
# The checks never touch the editable install: the working tree is copied to a
# temporary directory and the extension is built there, once instrumented for
# ASan and once plain for valgrind; the suite runs from each copy (pytest puts
# the copy first on sys.path, ahead of the editable-install finder). At the end
# the script checks that the repository's own build is not instrumented and
# rebuilds it with `pip install -e .` if it is.
#
# ASan: the python binary is not instrumented, so libasan is preloaded; leak
# detection is off (CPython keeps a lot alive at exit on purpose), and an
# allocation no address space can hold returns NULL as libc's does, instead of
# stopping the run (the failed-realloc tests ask for one). Runs twice:
# with pymalloc, and with PYTHONMALLOC=malloc so that Python's own blocks also
# get ASan redzones (the hooks then wrap the malloc-backed allocators).
# GCC 12's libasan locks nothing of its own allocator around fork(): a test
# that forks while another thread allocates keeps that thread out of malloc
# at the fork itself under a sanitizer (tests/unit/conftest.py,
# other_allocator), or the child can hang on the sanitizer's lock.
#
# TSan: both extensions built with -fsanitize=thread (counters.h then keeps
# its C atomics instead of the x86-64 add to memory, which TSan cannot see);
# the python binary is not instrumented, so libtsan is preloaded and sees
# CPython's GIL only as the pthread mutex and condition variable it is made
# of, which is the synchronisation the hooks rely on. Every report fails
# the run.
#
# valgrind: PYTHONMALLOC=malloc so pymalloc's arena tricks do not confuse
# memcheck; tests/native/valgrind.supp hides CPython 3.11's own false
# positives (see that file). --fair-sched keeps the spinlock/thread tests from
# crawling under valgrind's serialised threads. Forked children log to their
# own file (%p); every log must report 0 errors.
set -euo pipefail

MODE="${1:-all}"
if [[ $# -gt 0 ]]; then shift; fi
case "$MODE" in
    asan|tsan|valgrind|all) ;;
    *) echo "usage: $0 [asan|tsan|valgrind|all] [pytest args...]" >&2; exit 2 ;;
esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
SUPP="$ROOT/tests/native/valgrind.supp"
PYTEST_ARGS=(-m pytest tests/unit -q -p no:cacheprovider "$@")

WORK="$(mktemp -d "${TMPDIR:-/tmp}/oa_sanitizers.XXXXXX")"
cleanup() {
    if [[ "${KEEP_WORKDIR:-0}" == 1 ]]; then
        echo "work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

log() { printf '\n=== %s\n' "$*"; }

# Copy the working tree (sources and tests as they are now, uncommitted
# changes included) without the venv, VCS data or any build products.
copy_tree() {
    local dest="$1"
    mkdir -p "$dest"
    tar -C "$ROOT" \
        --exclude=./.venv --exclude=./.git --exclude=./build --exclude=./dist \
        --exclude='*.so' --exclude='*.o' --exclude='__pycache__' \
        --exclude='*.egg-info' --exclude='.pytest_cache' \
        -cf - . | tar -C "$dest" -xf -
}

# Build both extensions (otel_alloc.tracker._tracker, cffi;
# otel_alloc.otel._spanpath, the C span path) in place in a copy, with extra CFLAGS/LDFLAGS (distutils
# appends the modules' own extra_compile_args after CFLAGS).
build_ext() {
    local dest="$1" cflags="$2" ldflags="$3"
    (
        cd "$dest"
        CFLAGS="$cflags" LDFLAGS="$ldflags" "$PY" setup.py -q build_ext --inplace \
            >"$dest/build.log" 2>&1
    ) || { cat "$dest/build.log" >&2; echo "build failed in $dest" >&2; exit 1; }
    if grep -E 'warning:' "$dest/build.log" >&2; then
        echo "compiler warnings in $dest (see above)" >&2
        exit 1
    fi
    ls "$dest"/otel_alloc/tracker/_tracker*.so "$dest"/otel_alloc/otel/_spanpath*.so >/dev/null
}

# Which extension module a run in this copy imports: must be the copy's.
check_import() {
    local dest="$1"
    shift
    local where
    local mod
    for mod in tracker._tracker otel._spanpath; do
        where="$(cd "$dest" && env "$@" "$PY" -c "import otel_alloc.$mod as t; print(t.__file__)")"
        if [[ "$where" != "$dest"/* ]]; then
            echo "expected the build in $dest, imported $where" >&2
            exit 1
        fi
    done
}

# Fail unless both extensions in DEST export SYMBOL, the mark of a build
# instrumented by sanitizer NAME.
check_instrumented() {
    local dest="$1" symbol="$2" name="$3" so syms
    for so in "$dest"/otel_alloc/tracker/_tracker*.so "$dest"/otel_alloc/otel/_spanpath*.so; do
        # Captured first: with pipefail, grep -q closing the pipe early would
        # fail nm with SIGPIPE.
        syms="$(nm -D "$so")"
        if ! grep -q "$symbol" <<<"$syms"; then
            echo "$name build of $so is not instrumented" >&2
            exit 1
        fi
    done
}

# What the sanitizer SANITIZER wrote to the report files given (a forked
# child writes its own), less the one line allowed: its warning for an
# allocation it returned NULL for (allocator_may_return_null).
sanitizer_reports() {
    local sanitizer="$1"
    shift
    cat "$@" 2>/dev/null \
        | grep -v "^==[0-9]*==WARNING: $sanitizer failed to allocate 0x[0-9a-f]* bytes\$" \
        || true
}

run_asan() {
    local dest="$WORK/asan"
    log "ASan+UBSan build in $dest"
    copy_tree "$dest"
    build_ext "$dest" \
        "-g -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer" \
        "-fsanitize=address,undefined"
    check_instrumented "$dest" __asan_report ASan
    local libasan
    libasan="$(gcc -print-file-name=libasan.so)"
    local env_common=(
        "LD_PRELOAD=$libasan"
        "ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:allocator_may_return_null=1:log_path=$WORK/asan-log"
        "UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:log_path=$WORK/ubsan-log"
    )
    check_import "$dest" "${env_common[@]}"
    local alloc rc=0
    for alloc in pymalloc malloc; do
        log "ASan+UBSan: pytest ${PYTEST_ARGS[*]:2} (PYTHONMALLOC=$alloc)"
        (cd "$dest" && env "${env_common[@]}" "PYTHONMALLOC=$alloc" "$PY" "${PYTEST_ARGS[@]}") || rc=$?
        # Reports go to files: pytest would capture stderr.
        local reports
        reports="$(sanitizer_reports AddressSanitizer "$WORK"/asan-log.* "$WORK"/ubsan-log.*)"
        if [[ -n "$reports" ]]; then
            printf '%s\n' "$reports" >&2
            echo "ASan/UBSan reported errors (PYTHONMALLOC=$alloc)" >&2
            exit 1
        fi
        if [[ $rc -ne 0 ]]; then
            echo "pytest failed under ASan (PYTHONMALLOC=$alloc), exit $rc" >&2
            exit "$rc"
        fi
        echo "ASan+UBSan (PYTHONMALLOC=$alloc): no reports"
    done
}

run_tsan() {
    local dest="$WORK/tsan"
    log "TSan build in $dest"
    copy_tree "$dest"
    build_ext "$dest" "-g -O1 -fsanitize=thread -fno-omit-frame-pointer" "-fsanitize=thread"
    check_instrumented "$dest" __tsan_func_entry TSan
    local env_tsan=(
        "LD_PRELOAD=$(gcc -print-file-name=libtsan.so)"
        "TSAN_OPTIONS=halt_on_error=0:die_after_fork=0:allocator_may_return_null=1:log_path=$WORK/tsan-log"
    )
    check_import "$dest" "${env_tsan[@]}"
    log "TSan: pytest ${PYTEST_ARGS[*]:2}"
    local rc=0
    (cd "$dest" && env "${env_tsan[@]}" "$PY" "${PYTEST_ARGS[@]}") || rc=$?
    local reports
    reports="$(sanitizer_reports ThreadSanitizer "$WORK"/tsan-log.*)"
    if [[ -n "$reports" ]]; then
        printf '%s\n' "$reports" >&2
        echo "TSan reported $(grep -c 'ThreadSanitizer' <<<"$reports") lines naming ThreadSanitizer" >&2
        exit 1
    fi
    if [[ $rc -ne 0 ]]; then
        echo "pytest failed under TSan, exit $rc" >&2
        exit "$rc"
    fi
    echo "TSan: no reports"
}

run_valgrind() {
    local dest="$WORK/plain"
    log "plain build for valgrind in $dest"
    copy_tree "$dest"
    build_ext "$dest" "-g" ""
    check_import "$dest"
    mkdir -p "$WORK/valgrind"
    log "valgrind memcheck: pytest ${PYTEST_ARGS[*]:2} (PYTHONMALLOC=malloc)"
    local rc=0
    (
        cd "$dest" && PYTHONMALLOC=malloc valgrind --tool=memcheck \
            --suppressions="$SUPP" --fair-sched=yes --leak-check=no \
            --num-callers=40 --error-exitcode=99 \
            --log-file="$WORK/valgrind/memcheck.%p.log" \
            "$PY" "${PYTEST_ARGS[@]}"
    ) || rc=$?
    local f errors total=0
    for f in "$WORK"/valgrind/memcheck.*.log; do
        errors="$(sed -n 's/.*ERROR SUMMARY: \([0-9]*\) errors.*/\1/p' "$f" | tail -n 1)"
        if [[ -z "$errors" ]]; then
            # A forked child that left through os._exit() before valgrind
            # wrote a summary; its errors, if any, are still in the file.
            errors="$(grep -cE '^==[0-9]+== (Invalid|Conditional|Use of|Mismatched|Source and)' "$f" || true)"
        fi
        echo "$(basename "$f"): $errors errors; $(grep -o 'suppressed: [0-9]* from [0-9]*' "$f" | tail -n 1)"
        total=$((total + errors))
    done
    if [[ $total -ne 0 ]]; then
        for f in "$WORK"/valgrind/memcheck.*.log; do
            grep -q 'ERROR SUMMARY: 0 errors' "$f" || cat "$f" >&2
        done
        echo "valgrind reported $total errors" >&2
        exit 1
    fi
    if [[ $rc -ne 0 ]]; then
        echo "pytest failed under valgrind, exit $rc" >&2
        exit "$rc"
    fi
    echo "valgrind memcheck: 0 errors"
}

# The repository's own extension (the editable install) must be a normal
# build: rebuild it if some earlier run left it instrumented.
check_repo_build() {
    local so
    so="$(ls "$ROOT"/otel_alloc/tracker/_tracker*.so 2>/dev/null | head -n 1 || true)"
    if [[ -z "$so" ]] || grep -q '__asan\|__ubsan\|__tsan' <<<"$(nm -D "$so")"; then
        log "restoring the normal editable build"
        (cd "$ROOT" && env -u CFLAGS -u LDFLAGS "$PY" -m pip install -e . -q)
    fi
    log "repository build is not instrumented: ${so:-$(ls "$ROOT"/otel_alloc/tracker/_tracker*.so)}"
}

if [[ "$MODE" == asan || "$MODE" == all ]]; then run_asan; fi
if [[ "$MODE" == tsan || "$MODE" == all ]]; then run_tsan; fi
if [[ "$MODE" == valgrind || "$MODE" == all ]]; then run_valgrind; fi
check_repo_build
log "all checks passed"
