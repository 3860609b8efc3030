#!/usr/bin/env bash
# Build the release build (build-release: optimised, asserts and fault-injection points compiled
# out) and run the benchmark scenarios against it (docs/benchmarks.md).
#
#   scripts/bench.sh [--quick] [SCENARIO ...]
#
# Prints the table, writes bench/results/latest.json and the plots. Exits 0 when every scenario
# ran, whether or not its targets were met.
set -euo pipefail
cd "$(dirname "$0")/.."

build=build-release
opts=(-Dbuildtype=release -Db_ndebug=true -Dfault_injection=false)
if [[ ! -f $build/build.ninja ]]; then
    meson setup "$build" "${opts[@]}" >/dev/null
else
    # An existing directory keeps the options it was set up with: make sure they are these.
    meson configure "$build" "${opts[@]}" >/dev/null
fi
ninja -C "$build" >/dev/null || { ninja -C "$build"; exit 1; }
exec /usr/bin/python3 bench/run.py --build "$build" "$@"
