#!/usr/bin/env bash
# Creates (or reuses) a Debian trixie root with libtorch 2.x and the tools our
# tests need, cached outside the clone. Rebuilt when missing or when the package
# list (or this script's recipe version) changed: the stamp holds their hash.
#
#   scripts/trixie-root.sh [--check] [DIR]     DIR defaults to $TRIXIE_ROOT or /var/cache/clipagiqa/trixie
#
# --check only answers whether DIR is ready (exit 0) or missing/stale (exit 1).
#
# Needs root (debootstrap, chroot). Prints the root's path on success.
set -euo pipefail

check_only=
if [ "${1:-}" = --check ]; then check_only=1; shift; fi
ROOT_DIR="${1:-${TRIXIE_ROOT:-/var/cache/clipagiqa/trixie}}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
RECIPE=2
# libopenblas0-pthread: the BLAS the host uses (minbase would leave the slow
# reference BLAS); python3-setuptools + python3-dev: torch.compile's C++ builds.
PKGS=(libtorch-dev libgloo-dev python3-torch cmake g++ make pkg-config libturbojpeg0-dev
      python3-pil python3-numpy python3-scipy libopenblas0-pthread
      python3-setuptools python3-dev ca-certificates)
STAMP_WANT="$(printf '%s\n' "recipe=$RECIPE" "mirror=$MIRROR" "${PKGS[@]}" | sha256sum | cut -d' ' -f1)"
STAMP="$ROOT_DIR/.clipagiqa-stamp"

log() { echo "trixie-root: $*" >&2; }

if [ -n "$check_only" ]; then
  [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$STAMP_WANT" ]
  exit
fi

if [ "$(id -u)" != 0 ]; then
  log "must run as root (debootstrap and chroot need it)"; exit 1
fi
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$STAMP_WANT" ]; then
  log "reusing $ROOT_DIR"
  echo "$ROOT_DIR"; exit 0
fi

if ! command -v debootstrap >/dev/null; then
  log "installing debootstrap"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

# Build next to the final place and rename at the end, so an interrupted run
# never leaves a half-made root that looks valid.
TMP_DIR="$ROOT_DIR.building"
mounted=()
cleanup() {
  for ((i=${#mounted[@]}-1; i>=0; i--)); do umount -l "${mounted[$i]}" 2>/dev/null || true; done
}
trap cleanup EXIT
for d in "$TMP_DIR" ; do
  if mountpoint -q "$d/proc" 2>/dev/null; then umount -l "$d/proc"; fi
done
rm -rf "$TMP_DIR"
mkdir -p "$(dirname "$ROOT_DIR")"
t0=$SECONDS
log "debootstrap trixie into $TMP_DIR"
debootstrap --variant=minbase trixie "$TMP_DIR" "$MIRROR" >"$TMP_DIR.log" 2>&1 || {
  tail -20 "$TMP_DIR.log" >&2; log "debootstrap failed (full log: $TMP_DIR.log)"; exit 1; }
log "debootstrap done in $((SECONDS-t0)) s"

cp /etc/resolv.conf "$TMP_DIR/etc/resolv.conf"
mount -t proc proc "$TMP_DIR/proc"; mounted+=("$TMP_DIR/proc")
t0=$SECONDS
log "installing ${PKGS[*]}"
chroot "$TMP_DIR" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
  bash -c "apt-get update -qq && apt-get install -y -qq --no-install-recommends ${PKGS[*]} >/dev/null && apt-get clean" \
  >>"$TMP_DIR.log" 2>&1 || { tail -20 "$TMP_DIR.log" >&2; log "package install failed (full log: $TMP_DIR.log)"; exit 1; }
log "packages done in $((SECONDS-t0)) s"
cleanup; mounted=()

echo "$STAMP_WANT" >"$TMP_DIR/.clipagiqa-stamp"
rm -rf "$ROOT_DIR"
mv "$TMP_DIR" "$ROOT_DIR"
rm -f "$TMP_DIR.log"
log "ready: $ROOT_DIR"
echo "$ROOT_DIR"
