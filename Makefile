# clipagiqa build. `make test` works on a fresh Debian machine: it installs what
# is missing, builds the native libraries and runs every test.
#
#   make demo      train + evaluate CLIP-AGIQA on the embedded default
#   make test      go vet + all tests
#   make build     bin/clipagiqa
#   make bench     side-by-side benchmark against a PyTorch reference
#
# LIBTORCH=/path/to/libtorch (a dir with share/cmake/Torch, e.g. the one inside a
# PyTorch install: python -c 'import torch;print(torch.utils.cmake_prefix_path)'/../..)
# builds against another libtorch, CUDA included. Torch_DIR works as well.

SHELL      := /bin/bash
GO         ?= go
BUILD      ?= build
LIBTORCH   ?=
Torch_DIR  ?=
GOTORCH_MOD := github.com/wangkuiyi/gotorch
ROOT       := $(abspath .)
BUILD_ABS  := $(abspath $(BUILD))
SUDO       := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PKGS   := libtorch-dev cmake libturbojpeg0-dev python3-torch python3-pil python3-numpy python3-scipy
DEBIAN_PY  := /usr/bin/python3

CMAKE_ARGS := -DCMAKE_BUILD_TYPE=Release
ifneq ($(LIBTORCH),)
CMAKE_ARGS += -DCMAKE_PREFIX_PATH=$(abspath $(LIBTORCH))
endif
ifneq ($(Torch_DIR),)
CMAKE_ARGS += -DTorch_DIR=$(abspath $(Torch_DIR))
endif

# Library paths for cgo, with rpath so binaries run without LD_LIBRARY_PATH.
TORCH_LIB   = $(shell cat $(BUILD_ABS)/torch_lib_dir.txt 2>/dev/null)
CGO_LIBS    = -L$(BUILD_ABS)/lib -Wl,-rpath,$(BUILD_ABS)/lib -L$(TORCH_LIB) -Wl,-rpath,$(TORCH_LIB)
GO_ENV      = CGO_ENABLED=1 CGO_LDFLAGS="$(CGO_LIBS)"
NATIVE_LIBS = $(BUILD)/lib/libclipagiqa_shim.so $(BUILD)/lib/libcgotorch.so

.PHONY: all deps native build test vet demo bench bench-quick bench-serve fixtures clean print-env

all: build

deps:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	else echo "deps: all present"; fi
	@command -v $(GO) >/dev/null || { echo "Go toolchain not found"; exit 1; }

$(BUILD)/CMakeCache.txt: CMakeLists.txt go.mod
	@$(GO) mod download $(GOTORCH_MOD)
	cmake -S . -B $(BUILD) $(CMAKE_ARGS) -DGOTORCH_DIR="$$($(GO) list -m -f '{{.Dir}}' $(GOTORCH_MOD))" >/dev/null

native: $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $$(nproc) -- --no-print-directory

build: native
	$(GO_ENV) $(GO) build -o bin/clipagiqa ./cmd/clipagiqa

vet: native
	$(GO_ENV) $(GO) vet ./...

test: deps native
	$(GO_ENV) $(GO) vet ./...
	$(GO_ENV) $(GO) test -timeout 40m ./...

demo: deps build
	bin/clipagiqa demo --out demo-out

bench: deps build bench-refs
	bin/clipagiqa bench --out bench/results

bench-quick: deps build
	bin/clipagiqa bench --quick --out bench/results

bench-serve: deps build
	bin/clipagiqa bench-serve --out bench/results

# Prints the environment the Go tools need, for `eval $(make -s print-env)`.
print-env:
	@echo "export CGO_ENABLED=1 CGO_LDFLAGS='$(CGO_LIBS)'"

clean:
	rm -rf $(BUILD) bin

# ---- issue 11: libtorch 2.x leg, extra bench references, GPU check --------
# test-libtorch2  builds and runs the whole `go test ./...` against Debian
#                 trixie's libtorch 2.x in a cached chroot (root only; see scripts/).
# bench-refs      onnxruntime-node + the trixie root for `make bench`'s extra columns.
# gpu-bundle      packs test binary + CLI + CMake sources + fixture into $(GPU_BUNDLE) (≤ 60 MB).
# gpu-check       runs that bundle's scripts/gpu-check.sh: on a CUDA machine with PyTorch
#                 (copy the bundle there, `make gpu-check` or scripts/gpu-check.sh inside it);
#                 `make gpu-check DEVICE=cpu` dry-runs it here against the Debian libtorch.
.PHONY: test-libtorch2 bench-refs gpu-bundle gpu-check
GPU_BUNDLE ?= $(BUILD)/gpu-bundle
DEVICE     ?= cuda

test-libtorch2:
	scripts/test-libtorch2.sh

bench-refs:
	scripts/bench-refs.sh

gpu-bundle: native
	BUILD=$(BUILD) scripts/gpu-bundle.sh $(GPU_BUNDLE)

gpu-check: gpu-bundle
	DEVICE=$(DEVICE) PYTHON=$(if $(filter cpu,$(DEVICE)),$(DEBIAN_PY),python3) OUT=$(abspath $(GPU_BUNDLE))/report \
	  $(GPU_BUNDLE)/scripts/gpu-check.sh
