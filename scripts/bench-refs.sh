#!/usr/bin/env bash
# Prepares the bench's extra references where this machine allows them:
# onnxruntime-node (npm, CPU build; --ignore-scripts skips its CUDA download)
# into the bench cache, and, as root, the Debian trixie root with PyTorch 2.x.
# Missing tools are reported, not fatal: the bench then leaves the columns out.
#
#   scripts/bench-refs.sh [CACHE_DIR]   default: ${XDG_CACHE_HOME:-$HOME/.cache}/clipagiqa-bench
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${1:-${XDG_CACHE_HOME:-$HOME/.cache}/clipagiqa-bench}"
ORT_VERSION="${ORT_VERSION:-1.30.0}"

ort="$cache/onnxruntime"
if [ -f "$ort/node_modules/onnxruntime-node/package.json" ]; then
  echo "bench-refs: onnxruntime-node present in $ort"
elif command -v npm >/dev/null; then
  mkdir -p "$ort"
  [ -f "$ort/package.json" ] || echo '{"name": "clipagiqa-onnx-reference", "private": true}' >"$ort/package.json"
  echo "bench-refs: npm install --ignore-scripts onnxruntime-node@$ORT_VERSION into $ort"
  (cd "$ort" && npm install --ignore-scripts --no-audit --no-fund "onnxruntime-node@$ORT_VERSION" >/dev/null) ||
    echo "bench-refs: npm install failed: no ONNX Runtime column" >&2
else
  echo "bench-refs: no npm: no ONNX Runtime column" >&2
fi

if [ "$(id -u)" = 0 ]; then
  "$here/trixie-root.sh" >/dev/null || echo "bench-refs: no trixie root: no PyTorch 2 columns" >&2
else
  echo "bench-refs: not root: no PyTorch 2 columns (the trixie root needs chroot)" >&2
fi
exit 0
