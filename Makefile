# splitinfer - one entry point: make, make deps, make test, make bench-engine.
#
# Layout of build/:
#   build/gen/       protobuf-c code generated from Debian's onnx.proto
#   build/obj/       objects of lib/ and cmd/ (release flags)
#   build/asan/      the same built with AddressSanitizer + UBSan, for tests
#   build/splitinfer the binary
#   build/tests/     unit test programs (cmocka), one per tests/test_*.c

CC      ?= cc
CSTD    := -std=c11 -D_GNU_SOURCE
WARN    := -Wall -Wextra -Werror
OPT     ?= -O2 -g
DEFS    := -DH2O_USE_LIBUV=0
INCS    := -Ilib -Ibuild/gen
CFLAGS  := $(CSTD) $(WARN) $(OPT) $(DEFS) $(INCS) -fopenmp
LDLIBS  := -ldnnl -lpng16 -lprotobuf-c -ljansson -lh2o-evloop -lssl -lcrypto -lcurl -lz \
	-lpthread -lm -fopenmp
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

ONNX_PROTO := /usr/include/onnx/onnx.proto
# Our own messages (proto/*.proto) are generated next to onnx's.
PROTOS := $(sort $(wildcard proto/*.proto))
GEN_SRC := build/gen/onnx.pb-c.c $(PROTOS:proto/%.proto=build/gen/%.pb-c.c)
GEN_OBJ := $(GEN_SRC:build/gen/%.c=gen/%.o)
LIB_SRC := $(sort $(wildcard lib/*.c))
CMD_SRC := $(sort $(wildcard cmd/*.c))
TEST_SRC := $(sort $(wildcard tests/test_*.c))

LIB_OBJ := $(LIB_SRC:%.c=build/obj/%.o) $(GEN_OBJ:%=build/obj/%)
CMD_OBJ := $(CMD_SRC:%.c=build/obj/%.o)
ASAN_LIB_OBJ := $(LIB_SRC:%.c=build/asan/%.o) $(GEN_OBJ:%=build/asan/%)
ASAN_CMD_OBJ := $(CMD_SRC:%.c=build/asan/%.o)
TEST_BIN := $(TEST_SRC:tests/%.c=build/tests/%)
ASAN_TEST_BIN := $(TEST_SRC:tests/%.c=build/asan/tests/%)

# Build and test dependencies. The reference peers (PyTorch, PIL) are Debian's.
DEB_PKGS := build-essential pkg-config libdnnl-dev libpng-dev libprotobuf-c-dev \
	protobuf-c-compiler libonnx-dev libjansson-dev libcmocka-dev \
	libh2o-evloop-dev libssl-dev libcurl4-openssl-dev zlib1g-dev curl \
	python3-torch python3-torchvision python3-numpy python3-pil hey
# Benchmarks also need Node.js for the ONNX Runtime peer (npm onnxruntime-node).
BENCH_PKGS := nodejs npm

.PHONY: all deps deps-bench demo test test-unit bench-engine bench-plans bench-wino images test-containers clean format
all: build/splitinfer

# Installs the Debian packages of a list, only those missing (apt-get update
# is slow; skip it when nothing is missing).
define apt_install
	@missing=$$(for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing:" $$missing; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi
endef

deps:
	$(call apt_install,$(DEB_PKGS))
# A machine may already have Node.js from elsewhere (NodeSource's nodejs
# conflicts with Debian's npm): only a missing npm means installing Debian's.
deps-bench: deps
	@command -v npm >/dev/null 2>&1 || { apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(BENCH_PKGS); }

# Generated sources are kept (make would delete them as intermediates).
.SECONDARY: $(GEN_SRC)

build/gen/onnx.pb-c.c: $(ONNX_PROTO)
	@mkdir -p build/gen
	cp $(ONNX_PROTO) build/gen/onnx.proto
	cd build/gen && protoc-c --c_out=. onnx.proto
build/gen/%.pb-c.c: proto/%.proto
	@mkdir -p build/gen
	protoc-c --proto_path=proto --c_out=build/gen $<

build/obj/gen/%.o: build/gen/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CSTD) $(OPT) $(INCS) -w -c $< -o $@
build/asan/gen/%.o: build/gen/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CSTD) $(OPT) $(INCS) $(SANFLAGS) -w -c $< -o $@

build/obj/%.o: %.c | $(GEN_SRC)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@
build/asan/%.o: %.c | $(GEN_SRC)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(SANFLAGS) -MMD -MP -c $< -o $@

build/splitinfer: $(CMD_OBJ) $(LIB_OBJ)
	$(CC) $^ -o $@ $(LDLIBS)
build/asan/splitinfer: $(ASAN_CMD_OBJ) $(ASAN_LIB_OBJ)
	$(CC) $(SANFLAGS) $^ -o $@ $(LDLIBS)

# The binary of a stage image: the stage's subcommands only, linked without
# the HTTP client, so libcurl and its dependencies stay out of the image.
LEAN_OBJ := build/obj/cmd/lean/main.o $(addprefix build/obj/cmd/,stage.o serve.o cli.o model.o preprocess.o) \
	$(filter-out build/obj/lib/httpc.o build/obj/lib/gateway.o,$(LIB_OBJ))
build/splitinfer-stage: $(LEAN_OBJ)
	$(CC) $^ -o $@ $(filter-out -lcurl,$(LDLIBS))

build/tests/%: build/obj/tests/%.o $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $^ -o $@ $(LDLIBS) -lcmocka
build/asan/tests/%: build/asan/tests/%.o $(ASAN_LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(SANFLAGS) $^ -o $@ $(LDLIBS) -lcmocka

# Every test: unit tests (plain and under ASan/UBSan), then the end-to-end
# scripts tests/t_*.sh. tests/run.sh prints the closing "N passed, N failed".
test: deps
	$(MAKE) build/splitinfer build/asan/splitinfer $(TEST_BIN) $(ASAN_TEST_BIN)
	tests/run.sh

test-unit: $(TEST_BIN) $(ASAN_TEST_BIN)
	tests/run.sh --unit

bench-engine: deps-bench
	$(MAKE) build/splitinfer
	bench/engine.sh

# Winograd against oneDNN's direct 3x3 convolution, per ResNet50 shape.
build/wino_bench: bench/wino_bench.c lib/wino.c lib/err.c lib/wino.h
	$(CC) $(CSTD) -O2 -g -fopenmp -Ilib bench/wino_bench.c lib/wino.c lib/err.c -ldnnl -lm -o $@
bench-wino: build/wino_bench
	OMP_NUM_THREADS=1 build/wino_bench && OMP_NUM_THREADS=2 build/wino_bench

bench-plans: deps
	$(MAKE) build/splitinfer
	bench/plans.sh

# The main job: classify photos with ResNet50 (see README) and with the
# trained MobileNetV2 of ../shared/models when it is there.
demo: deps
	$(MAKE) build/splitinfer
	bench/demo.sh

# Container images (podman) of every function of a plan, and the tests that
# run them, render the Kubernetes manifests and validate them offline.
images: deps
	$(MAKE) build/splitinfer
	k8s/images.sh $(PLAN)
test-containers: deps
	$(MAKE) build/splitinfer
	tests/containers.sh

format:
	clang-format -i lib/*.c lib/*.h cmd/*.c tests/*.c

clean:
	rm -rf build

-include $(shell find build/obj build/asan -name '*.d' -type f 2>/dev/null)
