# Thin wrapper over CMake: `make`, `make demo`, `make test`, `make asan`, `make tsan`, `make bench`, `make fuzz`.
BUILD      ?= build
ASAN_BUILD ?= build-asan
TSAN_BUILD ?= build-tsan
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: all build deps demo test asan tsan bench fuzz model format clean compose-test

all: build

deps:
	@tools/install-deps --if-missing

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo

build: $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

demo: deps
	@$(MAKE) --no-print-directory build
	$(BUILD)/verdict demo

test: deps
	@$(MAKE) --no-print-directory build
	cd $(BUILD) && ctest --output-on-failure

asan: deps
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DVERDICT_SANITIZE=ON
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
		ctest --output-on-failure

# the concurrency tests under ThreadSanitizer (tools/tsan says how)
tsan: deps
	TSAN_BUILD=$(abspath $(TSAN_BUILD)) JOBS=$(JOBS) tools/tsan

# throughput, then latency at each of BENCH_RATES (30 s a side): data and JSON into BENCH_OUT, pictures into bench/
# (docs/benchmarks.md shows them), and the regression view against the figures committed in bench/reference.json
BENCH_RATES ?= 500,2000,5000
BENCH_OUT   ?= $(BUILD)/bench
bench: deps
	@tools/install-deps --if-missing --bench
	@$(MAKE) --no-print-directory build
	@mkdir -p $(BENCH_OUT)
	$(BUILD)/verdict bench throughput --json > $(BENCH_OUT)/throughput.out && cat $(BENCH_OUT)/throughput.out
	$(BUILD)/verdict bench latency --rates $(BENCH_RATES) --out $(BENCH_OUT) --json > $(BENCH_OUT)/latency.out && \
		cat $(BENCH_OUT)/latency.out
	tools/bench-plot $(BENCH_OUT) bench
	tools/bench-compare bench/reference.json $(BENCH_OUT)/throughput.out $(BENCH_OUT)/latency.out
	$(BUILD)/verdict bench eval
	$(BUILD)/verdict bench model
	$(BUILD)/verdict bench state

# MODEL_ARGS="--table table.csv" trains on a `verdict features` table of real, labelled history (docs/desk.md)
model: deps
	@$(MAKE) --no-print-directory build
	/usr/bin/python3 tools/train_model.py --verdict $(BUILD)/verdict $(MODEL_ARGS)

# every libFuzzer target for SECONDS each (default 60); TARGETS="decode gbdt" picks some
fuzz: deps
	tools/fuzz $(or $(SECONDS),60) $(TARGETS)

# the container images built and both compose stacks run for real on a private dockerd (root; installs docker.io,
# docker-compose and mmdebstrap with apt-get; tools/compose-test says what it checks). COMPOSE_TEST_ARGS=--fresh
# drops the cached base image and image store first.
compose-test:
	tools/compose-test $(COMPOSE_TEST_ARGS)

format:
	clang-format -i engine/*.c engine/*.h tests/*.c tests/support/*.c tests/support/*.h

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(TSAN_BUILD) build-fuzz
