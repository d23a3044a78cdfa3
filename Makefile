# The two README commands: `make run` and `make test`.
BUILD ?= build
# Warnings as errors: ON/OFF when given (`make test CAIRN_WERROR=ON`, as CI
# does); when not given the build directory keeps what it had (default OFF),
# so `make run` after a CI-style `make test` does not rebuild everything.
CAIRN_WERROR ?=
DATA ?= ./data
APT_PACKAGES := cmake ninja-build ccache g++ pkg-config librocksdb-dev libflatbuffers-dev \
  flatbuffers-compiler libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler \
  libabsl-dev rapidjson-dev libgtest-dev libgmock-dev libbenchmark-dev libspdlog-dev \
  libcli11-dev python3-grpcio python3-protobuf json-schema-test-suite \
  liblz4-dev libpq-dev libsqlite3-dev libhiredis-dev valgrind postgresql-15 redis-server rocksdb-tools \
  clang-format clang-14 libclang-rt-14-dev libfuzzer-14-dev dpkg-dev file adduser \
  libcurl4-openssl-dev libnats-dev nats-server libboost-dev python3-prometheus-client \
  chromium python3-websocket libssl-dev openssl
# valijson is header-only, but Debian's libvalijson-dev depends on every
# adapter valijson ships (Qt5, POCO with the MariaDB and PostgreSQL client
# libraries, yaml-cpp, jsoncpp, ...: 185 packages) while cairn uses the
# RapidJSON one: the package's headers are unpacked into the build tree
# (apt-get download + dpkg-deb -x), not installed with its dependencies.
VALIJSON_DIR := $(BUILD)/third_party/valijson

.PHONY: deps configure build test run demo install deb bench scoreboard crash-long soak soak-asan soak-tsan configure-asan sanitize fuzz fuzz-unbounded tsan clean

deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	@if [ ! -f $(VALIJSON_DIR)/usr/include/valijson/validator.hpp ]; then \
	  echo "unpacking libvalijson-dev's headers into $(VALIJSON_DIR)"; \
	  mkdir -p $(VALIJSON_DIR)/deb && cd $(VALIJSON_DIR)/deb && \
	  { apt-get download -qq libvalijson-dev 2>/dev/null || \
	    { apt-get update -qq && apt-get download -qq libvalijson-dev; }; } && \
	  dpkg-deb -x libvalijson-dev_*.deb .. && rm -f libvalijson-dev_*.deb; \
	fi

configure: deps
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DCAIRN_VALIJSON_INCLUDE_DIR=$(abspath $(VALIJSON_DIR))/usr/include \
	  -DCMAKE_CXX_COMPILER_LAUNCHER=ccache $(if $(CAIRN_WERROR),-DCAIRN_WERROR=$(CAIRN_WERROR))

build: configure
	cmake --build $(BUILD)

test: build
	ctest --test-dir $(BUILD) --output-on-failure -j2 --timeout 900

# Starts cairnd with its embedded default: ./data, loopback 127.0.0.1:50051.
run: build
	$(BUILD)/server/cairnd --data-dir $(DATA) --listen 127.0.0.1:50051 --http-listen 127.0.0.1:8080

demo: build
	$(BUILD)/engine/cairn_demo $(DATA)-demo

# README "Install": headers, static libraries, the CMake package and .pc
# files and the binaries under PREFIX; `make deb` the Debian packages
# (cairnd as a systemd service; cairn-dev) into $(BUILD)/deb/.
PREFIX ?= /usr/local
install: build
	cmake --install $(BUILD) --prefix $(PREFIX)

deb: build
	cd $(BUILD) && cpack -G DEB -B $(abspath $(BUILD))/deb
	@ls $(BUILD)/deb/*.deb

bench: build
	for b in $(BUILD)/bench/*_bench; do $$b --benchmark_repetitions=5 --benchmark_report_aggregates_only=true; done

# cairn against db_bench, PostgreSQL, SQLite and Redis (bench/run --help).
scoreboard:
	bench/run $(if $(QUICK),--quick)

# R1's long mode: 1,000 SIGKILL cycles of cairnd under gRPC ingest (ctest
# runs 50). SEED=n picks another sequence of batches and kill times.
crash-long: build
	$(BUILD)/tests/crash/crash_harness --cycles 1000 $(if $(SEED),--seed $(SEED))

# L1: a real cairnd under 2,000 events/s, 8 subscribers, a snapshot a second
# and retention purging, for MINUTES (10; 60 for the long mode).
MINUTES ?= 10
soak: build
	$(BUILD)/tests/soak/soak --minutes $(MINUTES)

# Sanitizer and fuzz build (clang-14, ASan + LSan + UBSan, libFuzzer), of
# the engine, the formats and their tests only: `make sanitize` runs their
# unit tests and fuzzes each target for FUZZ_SECONDS; CI runs it after `make
# test`. Under ASan the tests run about 20 times slower, so the model test
# runs MODEL_SEEDS seeds (in all) and the two longest tests, which `make test`
# runs in full and whose code paths the crash-point, disk-full and session
# tests cover, are left out unless SANITIZE_ALL=1 (15 more minutes). `make
# fuzz` fuzzes longer (FUZZ_SECONDS=600 by default). No ccache: it does not
# hash the UBSan ignore list.
ASAN_BUILD ?= build-asan
FUZZ_SECONDS ?= 60
MODEL_SEEDS ?= 200
SANITIZE_SKIP := $(if $(SANITIZE_ALL),,-E '^(PowerLossTest[.]DurableAcknowledgementsSurvive|OrderTest[.]StateAndHistoryAreIndependentOfArrivalOrder)$$')
configure-asan: deps
	CC=clang-14 CXX=clang++-14 cmake -S . -B $(ASAN_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DCAIRN_VALIJSON_INCLUDE_DIR=$(abspath $(VALIJSON_DIR))/usr/include \
	  -DCAIRN_SANITIZE=address -DCAIRN_FUZZ=ON -DCAIRN_ENGINE_ONLY=ON -DCAIRN_WERROR=ON \
	  -DCAIRN_FUZZ_SECONDS=$(FUZZ_SECONDS)
	cmake --build $(ASAN_BUILD)

sanitize: configure-asan
	CAIRN_MODEL_SEEDS=$(MODEL_SEEDS) ctest --test-dir $(ASAN_BUILD) --output-on-failure -j2 \
	  --timeout 1800 $(SANITIZE_SKIP)

fuzz: FUZZ_SECONDS = 600
fuzz: configure-asan
	ctest --test-dir $(ASAN_BUILD) --output-on-failure -j2 -R '^fuzz[.]'

# F1's proof that the fuzzers can fail: the decode, JSON and merge-patch
# targets built without the nesting bound (CAIRN_FUZZ_UNBOUNDED_NESTING,
# build-fuzz-unbounded/) must each report a stack overflow.
fuzz-unbounded: deps
	CC=clang-14 CXX=clang++-14 cmake -S . -B build-fuzz-unbounded -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DCAIRN_VALIJSON_INCLUDE_DIR=$(abspath $(VALIJSON_DIR))/usr/include \
	  -DCAIRN_SANITIZE=address -DCAIRN_FUZZ=ON -DCAIRN_ENGINE_ONLY=ON -DCAIRN_FUZZ_UNBOUNDED_NESTING=ON \
	  -DCAIRN_FUZZ_SECONDS=$(FUZZ_SECONDS)
	cmake --build build-fuzz-unbounded --target fuzz_seeds fuzz_decode fuzz_json fuzz_merge_patch
	ctest --test-dir build-fuzz-unbounded --output-on-failure -j2 -R '^fuzz[.](seeds|unbounded[.].*)$$'

# The same tests under ThreadSanitizer (CAIRN_SANITIZE=thread, build-tsan/;
# abseil's Mutex annotated by tests/sanitizers/tsan_absl_mutex.cc).
TSAN_BUILD ?= build-tsan
tsan: deps
	CC=clang-14 CXX=clang++-14 cmake -S . -B $(TSAN_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DCAIRN_VALIJSON_INCLUDE_DIR=$(abspath $(VALIJSON_DIR))/usr/include \
	  -DCAIRN_SANITIZE=thread -DCAIRN_ENGINE_ONLY=ON -DCAIRN_WERROR=ON
	cmake --build $(TSAN_BUILD)
	TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:suppressions=$(abspath tests/sanitizers/tsan-suppressions.txt) \
	  CAIRN_MODEL_SEEDS=$(MODEL_SEEDS) \
	  ctest --test-dir $(TSAN_BUILD) --output-on-failure -j2 --timeout 1800 $(SANITIZE_SKIP)

# L1 under ASan + LSan + UBSan: the soak (an ordinary build) against a
# sanitized cairnd (build-soak-asan/), for MINUTES; it checks no request
# failed and cairnd stopped with exit 0, i.e. 0 reports. (No TSan soak:
# README "Sanitizers" says why.)
soak-asan: deps build
	CC=clang-14 CXX=clang++-14 cmake -S . -B build-soak-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DCAIRN_VALIJSON_INCLUDE_DIR=$(abspath $(VALIJSON_DIR))/usr/include \
	  -DCAIRN_SANITIZE=address -DCAIRN_WERROR=ON
	cmake --build build-soak-asan --target cairnd
	$(BUILD)/tests/soak/soak --sanitized --minutes $(MINUTES) --cairnd build-soak-asan/server/cairnd

# L1 under TSan: the in-process soak (tests/soak/engine_soak.cc) on the
# embedded store, built with TSan (build-soak-tsan/), for MINUTES; a report
# ends it with exit 66. (A TSan cairnd cannot be soaked: README says why.)
soak-tsan: deps
	CC=clang-14 CXX=clang++-14 cmake -S . -B build-soak-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DCAIRN_VALIJSON_INCLUDE_DIR=$(abspath $(VALIJSON_DIR))/usr/include \
	  -DCAIRN_SANITIZE=thread -DCAIRN_WERROR=ON
	cmake --build build-soak-tsan --target engine_soak
	TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:suppressions=$(abspath tests/sanitizers/tsan-suppressions.txt) \
	  build-soak-tsan/tests/soak/engine_soak --minutes $(MINUTES)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(TSAN_BUILD) build-soak-asan build-soak-tsan build-fuzz-unbounded
