#!/usr/bin/env bash
# Runs a command inside the cached Debian trixie root (libtorch 2.x), in this
# clone, with our Go toolchain and module cache bind-mounted at the same paths.
# Mounts live in a private mount namespace and are unmounted on exit, failure
# and interruption included.
#
#   scripts/trixie-run.sh CMD [ARGS...]
#
# Env: TRIXIE_ROOT (default /var/cache/clipagiqa/trixie); GOROOT_HOST (default
# `go env GOROOT`); TRIXIE_BIND: more directories (space-separated) to mount at
# the same paths; TRIXIE_PASS: names of variables passed through (the rest of
# the environment is cleared); TRIXIE_NO_GO=1: skip the Go toolchain and module
# cache (a Python-only run). Go tools inside run offline (GOPROXY=off): the
# module cache is filled here first.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
[ $# -gt 0 ] || { echo "usage: $0 CMD [ARGS...]" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "trixie-run: must run as root (chroot)" >&2; exit 1; }

ROOT_DIR="${TRIXIE_ROOT:-/var/cache/clipagiqa/trixie}"
if [ -z "${TRIXIE_IN_NAMESPACE:-}" ]; then
  mkdir -p "$(dirname "$ROOT_DIR")"
  # Creating the root is exclusive; using it is shared (each user mounts in a
  # mount namespace of its own, so concurrent runs cannot see or undo each
  # other's mounts, and the kernel drops them when the run ends, however it ends).
  exec 9>"$ROOT_DIR.lock"
  flock -s 9
  if ! "$here/trixie-root.sh" --check "$ROOT_DIR"; then
    flock -u 9
    flock -x 9
    "$here/trixie-root.sh" "$ROOT_DIR" >/dev/null
    flock -s 9
  fi
  TRIXIE_IN_NAMESPACE=1 exec unshare --mount --propagation private "$0" "$@"
fi

if [ "${TRIXIE_NO_GO:-}" != 1 ]; then
  GOROOT_HOST="${GOROOT_HOST:-$(go env GOROOT)}"
  GOMODCACHE_HOST="$(go env GOMODCACHE)"
  # Fill the module cache outside, where the proxy is reachable.
  (cd "$repo" && go mod download && go list -deps -test ./... >/dev/null)
else
  GOROOT_HOST=/nonexistent GOMODCACHE_HOST=/nonexistent
fi

mounted=()
cleanup() {
  local i
  for ((i=${#mounted[@]}-1; i>=0; i--)); do
    umount -R "${mounted[$i]}" 2>/dev/null || umount -R -l "${mounted[$i]}" 2>/dev/null || true
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bind() { # bind SRC [ro]: mounts SRC at the same path inside the root
  local src="$1" dst="$ROOT_DIR$1"
  mkdir -p "$dst"
  mount --rbind "$src" "$dst"; mounted+=("$dst")
  mount --make-rslave "$dst"
  if [ "${2:-}" = ro ]; then mount -o remount,bind,ro "$dst"; fi
}
mount -t proc proc "$ROOT_DIR/proc"; mounted+=("$ROOT_DIR/proc")
bind /dev
bind /sys ro
if [ "${TRIXIE_NO_GO:-}" != 1 ]; then
  bind "$GOROOT_HOST" ro
  bind "$GOMODCACHE_HOST"
fi
bind "$repo"
# The host's name must resolve inside as outside: torchrun's c10d rendezvous
# hands its ranks the agent's hostname as MASTER_ADDR.
if [ -f /etc/hosts ]; then
  touch "$ROOT_DIR/etc/hosts"
  mount --bind -o ro /etc/hosts "$ROOT_DIR/etc/hosts"; mounted+=("$ROOT_DIR/etc/hosts")
fi
for d in ${TRIXIE_BIND:-}; do
  [ -d "$d" ] || { echo "trixie-run: TRIXIE_BIND: $d is not a directory" >&2; exit 1; }
  bind "$(cd "$d" && pwd)"
done
pass=()
for v in ${TRIXIE_PASS:-}; do
  if [ -n "${!v+x}" ]; then pass+=("$v=${!v}"); fi
done

chroot "$ROOT_DIR" /usr/bin/env -i \
  HOME=/root TERM="${TERM:-dumb}" LANG=C.UTF-8 \
  PATH="$GOROOT_HOST/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
  GOROOT="$GOROOT_HOST" GOMODCACHE="$GOMODCACHE_HOST" GOCACHE=/var/cache/go-build \
  GOPROXY=off GOTOOLCHAIN=local GOFLAGS="-buildvcs=false ${TRIXIE_GOFLAGS:-}" \
  "${pass[@]}" \
  bash -c 'cd "$1" && shift && exec "$@"' trixie-run "$repo" "$@"
