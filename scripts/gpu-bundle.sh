#!/usr/bin/env bash
# Packs what `make gpu-check` needs on a machine with CUDA and PyTorch but no
# Go into one folder (≤ 60 MB): the prepared Go test binary (internal/devicecheck)
# and CLI, linked only against our two native libraries and found through
# $ORIGIN; the CMake sources of those libraries (rebuilt there against its
# libtorch); the reference fixture; the scripts. Run from the repository root
# after `make native` (the Makefile's gpu-bundle target does both).
#
#   scripts/gpu-bundle.sh [OUT_DIR]     default: build/gpu-bundle
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
out="${1:-build/gpu-bundle}"
limit_mb="${GPU_BUNDLE_MAX_MB:-60}"
build="${BUILD:-build}"

rm -rf "$out"
mkdir -p "$out"/{bin,lib,src/cpp,src/cmake,src/gotorch/cgotorch,fixtures/clip-agiqa-ref,scripts,bench,testdata/gen}

# Binaries: our libraries first on the runpath, relative to the binary.
eval "$(make -s print-env BUILD="$build")"
export CGO_LDFLAGS="-Wl,-rpath,\$ORIGIN/../build/lib:\$ORIGIN/../lib ${CGO_LDFLAGS:-}"
go test -c -trimpath -ldflags='-s -w' -o "$out/bin/devicecheck.test" ./internal/devicecheck
go build -trimpath -ldflags='-s -w' -o "$out/bin/clipagiqa" ./cmd/clipagiqa

# Item 2 of issue 11: no libtorch soname among the binaries' NEEDED entries, so
# they run against whatever libtorch the rebuilt libraries use.
for b in "$out"/bin/*; do
  needed="$(readelf -d "$b" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')"
  echo "gpu-bundle: $(basename "$b") NEEDED: $needed"
  if grep -Eq '(^| )lib(torch|c10)[^ ]*' <<<"$needed"; then
    echo "gpu-bundle: $(basename "$b") links libtorch directly; it would not run against another libtorch" >&2
    exit 1
  fi
done

# libjpeg-turbo for imageprep (the GPU machine may lack it).
tj="$(ldd "$out/bin/clipagiqa" | awk '/libturbojpeg/ {print $3}')"
[ -n "$tj" ] && cp -L "$tj" "$out/lib/"

# Native sources: ours and gotorch's cgotorch (from the module cache).
cp CMakeLists.txt VERSION clipagiqa.pc.in "$out/src/"
cp cmake/*.cmake "$out/src/cmake/"
cp cpp/*.cc cpp/*.h "$out/src/cpp/"
gotorch="$(go list -m -f '{{.Dir}}' github.com/wangkuiyi/gotorch)"
cp "$gotorch"/cgotorch/*.cc "$gotorch"/cgotorch/*.h "$out/src/gotorch/cgotorch/"
chmod -R u+w "$out/src"

# Fixture: the files the device checks read.
fx=testdata/clip-agiqa-ref
cp "$fx"/{README.md,expected.json,preprocessed.npy,tiny_clip_vit_fp16.pt} "$out/fixtures/clip-agiqa-ref/"
cp -r "$fx"/prompt_learner "$fx"/regression "$out/fixtures/clip-agiqa-ref/"

cp scripts/gpu-check.sh "$out/scripts/"
printf '# In the bundle: make gpu-check [DEVICE=cuda|cpu]\nDEVICE ?= cuda\ngpu-check:\n\tDEVICE=$(DEVICE) scripts/gpu-check.sh\n' >"$out/Makefile"
cp bench/reference.py bench/gpu_reference.py "$out/bench/"
cp testdata/gen/make_clip.py "$out/testdata/gen/"
{
  echo "clipagiqa gpu bundle"
  echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (+ local changes)')"
  echo "built: $(date -u '+%Y-%m-%d %H:%M UTC') on $(uname -m), $(go version)"
  echo "run: scripts/gpu-check.sh   (DEVICE=cuda by default; PYTHON=python3)"
} >"$out/MANIFEST"

size_kb="$(du -sk "$out" | cut -f1)"
echo "gpu-bundle: $out, $((size_kb / 1024)) MB"
if [ "$size_kb" -gt $((limit_mb * 1024)) ]; then
  echo "gpu-bundle: $out is over $limit_mb MB" >&2
  exit 1
fi
