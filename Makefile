# clipagiqa build. `make test` works on a fresh Debian machine: it installs what
# is missing, builds the native libraries and runs every test.
#
#   make demo      train + evaluate CLIP-AGIQA on the embedded default
#   make test      go vet + all tests
#   make build     bin/clipagiqa
#   make bench     side-by-side benchmark against a PyTorch reference
#   make bench-ipiqa  its IP-IQA part alone (RN50 at 512, ~15 minutes on 2 cores)
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
APT_PKGS   := libtorch-dev libgloo-dev cmake pkg-config libturbojpeg0-dev python3-torch python3-pil python3-numpy python3-scipy
DEBIAN_PY  := /usr/bin/python3

CMAKE_ARGS := -DCMAKE_BUILD_TYPE=Release
ifneq ($(LIBTORCH),)
CMAKE_ARGS += -DCMAKE_PREFIX_PATH=$(abspath $(LIBTORCH))
endif
ifneq ($(Torch_DIR),)
CMAKE_ARGS += -DTorch_DIR=$(abspath $(Torch_DIR))
endif

# Go finds the native libraries through pkg-config (torch/cgo.go); inside this
# repo that is build/pkgconfig/clipagiqa.pc, which links build/lib with an rpath.
# Binaries link only our two libraries; those carry libtorch's location.
PC_DIR      = $(BUILD_ABS)/pkgconfig
# Go's build cache does not key on pkg-config's output: a define carrying the
# build folder's path keeps packages linked against another .pc from being reused.
PC_ID       = $(shell printf %s '$(PC_DIR)' | sha256sum | cut -c1-16)
GO_ENV      = CGO_ENABLED=1 PKG_CONFIG_PATH="$(PC_DIR)$${PKG_CONFIG_PATH:+:$$PKG_CONFIG_PATH}" CGO_CFLAGS="-O2 -g -DCLIPAGIQA_PC_ID=$(PC_ID)"
NATIVE_LIBS = $(BUILD)/lib/libclipagiqa_shim.so $(BUILD)/lib/libcgotorch.so
VERSION    := $(shell cat VERSION)
GO_LDFLAGS  = -X main.version=$(VERSION)

.PHONY: all deps native build test vet demo demo-clip bench bench-quick bench-ipiqa bench-dist bench-serve fixtures clean print-env install deb test-package

all: build

deps:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	else echo "deps: all present"; fi
	@command -v $(GO) >/dev/null || { echo "Go toolchain not found"; exit 1; }

$(BUILD)/CMakeCache.txt: CMakeLists.txt go.mod VERSION clipagiqa.pc.in
	@$(GO) mod download $(GOTORCH_MOD)
	@cmake -S . -B $(BUILD) $(CMAKE_ARGS) -DGOTORCH_DIR="$$($(GO) list -m -f '{{.Dir}}' $(GOTORCH_MOD))" >$(BUILD)/configure.log 2>&1 \
	  || { cat $(BUILD)/configure.log; rm -f $@; echo "native: CMake configure failed (log: $(BUILD)/configure.log)"; exit 1; }

# A build/ copied from another checkout has a cache naming that checkout: CMake
# would rebuild there (or fail) while make exits 0, so reconfigure from scratch.
native:
	@mkdir -p $(BUILD)
	@if [ -f $(BUILD)/CMakeCache.txt ] && ! grep -qxF "CMAKE_CACHEFILE_DIR:INTERNAL=$(BUILD_ABS)" $(BUILD)/CMakeCache.txt; then \
	  echo "native: $(BUILD)/CMakeCache.txt belongs to another directory; reconfiguring"; \
	  rm -rf $(BUILD)/CMakeCache.txt $(BUILD)/CMakeFiles $(BUILD)/Makefile $(BUILD)/cmake_install.cmake; fi
	@$(MAKE) --no-print-directory $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $$(nproc) -- --no-print-directory
	@test -f $(PC_DIR)/clipagiqa.pc || { echo "native: $(PC_DIR)/clipagiqa.pc missing after the build"; exit 1; }

build: native
	$(GO_ENV) $(GO) build -ldflags "$(GO_LDFLAGS)" -o bin/clipagiqa ./cmd/clipagiqa

vet: native
	$(GO_ENV) $(GO) vet ./...

test: deps native
	$(GO_ENV) $(GO) vet ./...
	$(GO_ENV) $(GO) test -timeout 40m ./...

demo: deps build
	bin/clipagiqa demo --out demo-out

# demo-clip remakes testdata/demo/tiny_clip_rn_i2p.pt: Image2Prompt pre-training
# of the IP-IQA fixture's random tiny ResNet CLIP on synthetic images (seed 7001,
# disjoint from the demo's seed-1 set) captioned with their quality and distortion,
# in stages of a few epochs each (as the shipped file was made, on 2 threads; about 4 minutes
# on an idle 2-core machine).
DEMO_PRE = build/demo-pretrain
demo-clip: deps build
	bin/clipagiqa demo --pairs-out $(DEMO_PRE)/data --seed 7001 --bases 144
	bin/clipagiqa pretrain --clip testdata/ipiqa-ref/tiny_clip_rn_fp16.pt --pairs $(DEMO_PRE)/data/pairs.csv --out $(DEMO_PRE)/stage1 --epochs 2 --lr 1e-3 --seed 1 --half
	bin/clipagiqa pretrain --clip $(DEMO_PRE)/stage1/clip.pt --pairs $(DEMO_PRE)/data/pairs.csv --out $(DEMO_PRE)/stage2 --epochs 3 --lr 5e-4 --seed 2 --half
	bin/clipagiqa pretrain --clip $(DEMO_PRE)/stage2/clip.pt --pairs $(DEMO_PRE)/data/pairs.csv --out $(DEMO_PRE)/stage3 --epochs 3 --lr 5e-4 --seed 3 --half
	mkdir -p testdata/demo && cp $(DEMO_PRE)/stage3/clip.pt testdata/demo/tiny_clip_rn_i2p.pt

bench: deps build bench-refs
	bin/clipagiqa bench --out bench/results

bench-quick: deps build
	bin/clipagiqa bench --quick --out bench/results

# IP-IQA alone: full-size RN50 at 512 vs bench/ipiqa_reference.py (bench/results/ipiqa.md).
bench-ipiqa: deps build
	bin/clipagiqa bench --only ipiqa --out bench/results

# Data-parallel benchmark: 2 ranks x 1 thread vs 1 rank x 2 threads (bench/results/dist.md).
bench-dist: deps build
	bash bench/dist.sh

bench-serve: deps build
	bin/clipagiqa bench-serve --out bench/results

# Prints the environment the Go tools need, for `eval $(make -s print-env)`.
# (After `make install` nothing is needed: clipagiqa.pc is on pkg-config's path.)
print-env:
	@echo "export CGO_ENABLED=1 PKG_CONFIG_PATH='$(PC_DIR)' CGO_CFLAGS='-O2 -g -DCLIPAGIQA_PC_ID=$(PC_ID)'"

# Install like a C library; then any Go module builds with plain `go build`.
#   make install [PREFIX=/usr/local] [DESTDIR=/staging]
PREFIX  ?= /usr/local
DESTDIR ?=
install: native
	GO=$(GO) VERSION=$(VERSION) packaging/install.sh $(BUILD) $(PREFIX) $(DESTDIR)

# Debian packages bin/clipagiqa_$(VERSION)_<arch>.deb and clipagiqa-dev_… (packaging/deb.sh).
deb: native
	GO=$(GO) VERSION=$(VERSION) packaging/deb.sh $(BUILD) bin

# The "fresh machine" proof: a clean Debian bookworm root (cached in PKG_ROOT),
# the .debs installed there by apt, the CLI run and a separate Go module built
# with pkg-config only (packaging/test-package.sh). Needs root.
PKG_ROOT ?= /var/cache/clipagiqa/bookworm
test-package: deb
	@command -v debootstrap >/dev/null || { echo "installing debootstrap"; $(SUDO) apt-get install -y -qq debootstrap >/dev/null; }
	$(SUDO) env GO=$$(command -v $(GO)) VERSION=$(VERSION) PKG_ROOT=$(PKG_ROOT) packaging/test-package.sh bin $(BUILD)

clean:
	rm -rf $(BUILD) bin

# --- browser test (helper srv): the server's page in headless Chromium -----
# Installs chromium (Debian) and playwright-core (npm, pinned by the lock file)
# when missing; the screenshot lands in $(BUILD)/browser/page.png.
BROWSER_DIR := serve/testdata/browser
.PHONY: test-browser
test-browser: deps native
	@command -v chromium >/dev/null || { echo "installing: chromium"; $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; }
	@command -v npm >/dev/null || { echo "installing: nodejs npm"; $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq nodejs npm >/dev/null; }
	@[ -d $(BROWSER_DIR)/node_modules/playwright-core ] || (cd $(BROWSER_DIR) && npm ci --no-audit --no-fund)
	CLIPAGIQA_BROWSER=1 CLIPAGIQA_BROWSER_OUT=$(BUILD_ABS)/browser $(GO_ENV) $(GO) test -count=1 -run 'TestBrowserPage' -v ./serve/

# The serving targets of issue 12 (ViT-B/16 random weights, 640×480 JPEGs, 1/4/16 clients),
# with the ratios against the offline fused encoder measured in the same run (~10 min).
.PHONY: bench-serve-full
bench-serve-full: deps build
	bin/clipagiqa bench-serve --clip vitb16 --checkpoint random --model vitb16-random --duration 60s --out bench/results

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
