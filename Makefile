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
  libcli11-dev libvalijson-dev python3-grpcio python3-protobuf

.PHONY: deps configure build test run demo bench clean

deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

configure: deps
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DCMAKE_CXX_COMPILER_LAUNCHER=ccache $(if $(CAIRN_WERROR),-DCAIRN_WERROR=$(CAIRN_WERROR))

build: configure
	cmake --build $(BUILD)

test: build
	ctest --test-dir $(BUILD) --output-on-failure -j2 --timeout 900

# Starts cairnd with its embedded default: ./data, loopback 127.0.0.1:50051.
run: build
	$(BUILD)/server/cairnd --data-dir $(DATA) --listen 127.0.0.1:50051

demo: build
	$(BUILD)/engine/cairn_demo $(DATA)-demo

bench: build
	for b in $(BUILD)/bench/*_bench; do $$b --benchmark_repetitions=5 --benchmark_report_aggregates_only=true; done

clean:
	rm -rf $(BUILD)
