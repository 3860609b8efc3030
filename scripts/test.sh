#!/usr/bin/env bash
# Build and run every test three times: a debug build, an ASan+UBSan build (STYLE R25) and a TSan
# build (the HTTP thread pool shares the store and the key table; DESIGN §2; without the reruns
# of suites in containers and on PostgreSQL, suite "rerun"), then print
# one summary line "N passed, N failed" summed from every test binary's own final line.
set -uo pipefail
cd "$(dirname "$0")/.."

variants=("build" "build-asan" "build-tsan")
declare -A setup_args=(
    [build]=""
    [build-asan]="-Db_sanitize=address,undefined -Db_lundef=false"
    [build-tsan]="-Db_sanitize=thread -Db_lundef=false"
)
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export TSAN_OPTIONS="halt_on_error=1"

# Tests scale their own deadlines with the machine's load (tests/integration/harness.py,
# time_scale()); meson's per-test timeouts scale the same way, so that other work on the machine
# makes the run slower, never red.
timeout_multiplier=$(awk -v n="$(nproc)" '{ m = $1 / n; if (m < 1) m = 1; print int(m + 0.999) * 2 }' /proc/loadavg)

status=0
for v in "${variants[@]}"; do
    if [[ ! -f "$v/build.ninja" ]]; then
        # shellcheck disable=SC2086
        meson setup "$v" ${setup_args[$v]} >/dev/null || exit 1
    fi
    ninja -C "$v" >/dev/null || { ninja -C "$v"; exit 1; }
    echo "== tests in $v" >&2
    # shellcheck disable=SC2086
    # the reruns of suites with another runner or store (suite "rerun", tests/meson.build): in
    # the normal and ASan+UBSan builds; under TSan they would repeat what the others run
    skip=()
    [[ $v != build-tsan ]] || skip=(--no-suite rerun)
    meson test -C "$v" --print-errorlogs --timeout-multiplier "$timeout_multiplier" \
        "${skip[@]}" ${MESON_TEST_ARGS:-} || status=1
done

python3 scripts/test-summary.py "${variants[@]}" || status=1
exit $status
