# A thin front for meson + ninja. `make run` starts the daemon with its demo; `make test` runs
# every test in a normal, an ASan+UBSan and a TSan build; `make bench` (QUICK=1: under two
# minutes) runs the benchmarks against a release build (docs/benchmarks.md); `make fuzz` replays
# and runs every fuzz target for FUZZ_SECONDS (default 30) each (docs/operations.md#fuzzing);
# `make deb` builds the Debian package into build-deb/ (docs/operations.md#installing-it).
BUILD ?= build

.PHONY: all deps build run test lint bench fuzz deb clean

all: build

deps:
	@scripts/install-deps.sh

build: deps
	@test -f $(BUILD)/build.ninja || meson setup $(BUILD) >/dev/null
	@ninja -C $(BUILD)

run: build
	@scripts/run-demo.sh $(BUILD)

test: deps
	@scripts/test.sh

lint:
	@scripts/install-deps.sh --lint
	@scripts/lint.sh

bench:
	@scripts/install-deps.sh --bench
	@scripts/bench.sh $(if $(filter-out 0,$(QUICK)),--quick)

fuzz:
	@scripts/install-deps.sh --fuzz
	@scripts/fuzz.sh

deb:
	@scripts/install-deps.sh --deb
	@scripts/build-deb.sh build-deb

clean:
	rm -rf build build-asan build-tsan build-release build-fuzz build-deb
