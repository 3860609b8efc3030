#!/usr/bin/env bash
# Fuzzing (STYLE R25, docs/operations.md#fuzzing): build the libFuzzer targets of tests/fuzz/
# (clang, -fsanitize=fuzzer,address,undefined) in build-fuzz/, then for each target replay its
# seed corpus and fuzz it for FUZZ_SECONDS (default 30), printing its executions per second and
# the coverage it reached; then run the daemon's whole HTTP surface under a mutating fuzzer
# (scripts/fuzz-daemon.py, FUZZ_DAEMON_SECONDS, default 30) against the ASan build. Ends with
# "N passed, N failed". Inputs the fuzzers add go to build-fuzz/corpus/<target>/ (kept between
# runs, never into the tree); crashes are saved as build-fuzz/artifacts/<target>-crash-<sha1>.
#
#   scripts/fuzz.sh                      every target, 30 s each
#   scripts/fuzz.sh http apikey          only these
#   FUZZ_SECONDS=600 scripts/fuzz.sh http
set -uo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-30}
daemon_seconds=${FUZZ_DAEMON_SECONDS:-30}
build=build-fuzz
all_targets=(apikey config exit-status output sdk-reply http api-body)
targets=("${@:-${all_targets[@]}}")

if [[ ! -f $build/build.ninja ]]; then
    CC=clang meson setup "$build" -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false \
        >/dev/null || exit 1
fi
ninja -C "$build" "${targets[@]/#/tests/fuzz/fuzz-}" >/dev/null ||
    { ninja -C "$build" "${targets[@]/#/tests/fuzz/fuzz-}"; exit 1; }

# scratch files (data directories, sockets) on tmpfs when there is one: the targets fsync
if [[ -z ${TMPDIR:-} && -w /dev/shm ]]; then
    export TMPDIR=/dev/shm
fi
export ASAN_OPTIONS="abort_on_error=1:detect_leaks=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
mkdir -p "$build/artifacts" "$build/logs"

passed=0 failed=0
summary=()
for t in "${targets[@]}"; do
    exe=$build/tests/fuzz/fuzz-$t
    seeds=tests/fuzz/corpus/$t
    found=$build/corpus/$t
    mkdir -p "$found"
    opts=(-max_len=4096 -timeout=10 -rss_limit_mb=2048 -artifact_prefix="$build/artifacts/$t-")
    case $t in http | api-body) opts+=(-dict=tests/fuzz/http.dict) ;; esac
    log=$build/logs/$t.log
    ok=true
    # the seeds alone first: a regression shows here with the input that found it
    if ! "$exe" "${opts[@]}" -runs=0 "$seeds" >"$log" 2>&1; then
        ok=false
        echo "fuzz-$t: the seed corpus fails:" >&2
        tail -n 30 "$log" >&2
    elif ! "$exe" "${opts[@]}" -max_total_time="$seconds" -print_final_stats=1 "$found" "$seeds" \
        >"$log" 2>&1; then
        ok=false
        echo "fuzz-$t: found a bug (input in $build/artifacts/):" >&2
        grep -E -A 30 "^==[0-9]+==ERROR|runtime error|deadly signal|Test unit written" "$log" \
            | head -n 60 >&2
    fi
    # "#123 DONE cov: 1 ft: 2 corp: ... exec/s: 4" (or the last status line of a failed run)
    last=$(grep -E "^#[0-9]+" "$log" | tail -n 1)
    cov=$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$last")
    ft=$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$last")
    execs=$(sed -nE 's/^#([0-9]+).*/\1/p' <<<"$last")
    rate=$(sed -nE 's/^stat::average_exec_per_sec: *([0-9]+).*/\1/p' "$log")
    status=ok
    $ok || status=FAILED
    line=$(printf "fuzz-%-12s %-6s %8s exec/s %10s runs  cov %5s  ft %6s" "$t" "$status" \
        "${rate:--}" "${execs:--}" "${cov:--}" "${ft:--}")
    echo "$line"
    summary+=("$line")
    if $ok; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
done

if [[ $# -eq 0 && $daemon_seconds -gt 0 ]]; then
    if python3 scripts/fuzz-daemon.py --seconds "$daemon_seconds"; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
    fi
fi
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
