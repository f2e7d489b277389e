#!/usr/bin/env bash
# The "fresh machine" proof for the Debian packages. In a clean Debian bookworm
# root (debootstrap, cached in PKG_ROOT and used read-only through an overlay, so
# every run starts clean):
#   1. apt-get install ./clipagiqa_*.deb   (apt resolves libtorch etc. from the mirror)
#   2. clipagiqa info; the man page; clipagiqa predict on the fixture images
#   3. apt-get install ./clipagiqa-dev_*.deb; build testdata/consumer (its own
#      module, `replace` to this source) with plain `go build`: no CGO_* or
#      PKG_CONFIG_* variables, no network; run it: scores vs. the reference,
#      its NEEDED list, and the CLI's scores
#   4. the build-time messages without cgo and without clipagiqa.pc
# Usage (root): test-package.sh DEB_DIR BUILD_DIR; GO (path of the go binary),
# VERSION and PKG_ROOT from the environment.
set -euo pipefail
deb_dir=$(cd "$1" && pwd) build=$(cd "$2" && pwd)
version=${VERSION:?VERSION not set}
root_cache=${PKG_ROOT:-/var/cache/clipagiqa/bookworm}
go_bin=$(readlink -f "${GO:-$(command -v go)}")
goroot=$("$go_bin" env GOROOT)
gomodcache=$("$go_bin" env GOMODCACHE)
src=$(cd "$(dirname "$0")/.." && pwd)
mirror=http://deb.debian.org/debian
# Bump when the base root's recipe changes; a root older than max_age_days is
# rebuilt too (its package lists go stale).
recipe=1 max_age_days=7
arch=$(dpkg --print-architecture)
rt_deb="$deb_dir/clipagiqa_${version}_${arch}.deb" dev_deb="$deb_dir/clipagiqa-dev_${version}_${arch}.deb"
for f in "$rt_deb" "$dev_deb"; do [ -f "$f" ] || { echo "test-package: $f missing (make deb)" >&2; exit 1; }; done
[ "$(id -u)" = 0 ] || { echo "test-package: needs root (debootstrap, mount, chroot)" >&2; exit 1; }
log="$build/test-package.log"
: >"$log"
say() { echo "test-package: $*" | tee -a "$log"; }

# --- the cached base root ---
mkdir -p "$(dirname "$root_cache")"
exec 9>"$root_cache.lock"
flock 9
marker="$root_cache/.clipagiqa-root"
if [ ! -f "$marker" ] || [ "$(cat "$marker")" != "recipe=$recipe" ] ||
	[ -n "$(find "$marker" -mtime +$max_age_days)" ]; then
	say "creating the bookworm root in $root_cache (debootstrap minbase)"
	rm -rf "$root_cache"
	t0=$SECONDS
	debootstrap --variant=minbase bookworm "$root_cache.new" "$mirror" >"$build/debootstrap.log" 2>&1 ||
		{ tail -20 "$build/debootstrap.log"; rm -rf "$root_cache.new"; exit 1; }
	cat >"$root_cache.new/etc/apt/sources.list" <<SRC
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
SRC
	cp /etc/resolv.conf "$root_cache.new/etc/resolv.conf"
	chroot "$root_cache.new" apt-get update -qq
	chroot "$root_cache.new" apt-get clean
	echo "recipe=$recipe" >"$root_cache.new/.clipagiqa-root"
	mv "$root_cache.new" "$root_cache"
	say "root ready in $((SECONDS - t0)) s"
else
	say "reusing the bookworm root $root_cache"
fi

# --- a throwaway overlay on top of it ---
work=$(mktemp -d /var/tmp/clipagiqa-test-package.XXXXXX)
root="$work/root"
mounts=()
cleanup() {
	local i
	for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
		umount "${mounts[i]}" 2>/dev/null || umount -l "${mounts[i]}" 2>/dev/null || true
	done
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mnt() { # mnt TARGET MOUNT-ARGS...
	local target=$1
	shift
	mkdir -p "$target"
	mount "$@" "$target"
	mounts+=("$target")
}
mkdir -p "$work/upper" "$work/ovl"
mnt "$root" -t overlay overlay -o "lowerdir=$root_cache,upperdir=$work/upper,workdir=$work/ovl"
mnt "$root/proc" -t proc proc
mnt "$root/dev" --bind /dev
mnt "$root/dev/pts" --bind /dev/pts
# persistent caches (outside the root): apt downloads and Go's build cache
mkdir -p "$root_cache-apt" "$root_cache-gocache"
mnt "$root/var/cache/apt/archives" --bind "$root_cache-apt"
mnt "$root/gocache" --bind "$root_cache-gocache"
# the source (read-only), the Go toolchain and the module cache
mnt "$root/src" --bind "$src"
mount -o remount,bind,ro "$root/src"
mnt "$root$goroot" --bind "$goroot"
mount -o remount,bind,ro "$root$goroot"
mnt "$root/gomod" --bind "$gomodcache"
mount -o remount,bind,ro "$root/gomod"
mkdir -p "$root/debs"
cp "$rt_deb" "$dev_deb" "$root/debs/"
cp /etc/resolv.conf "$root/etc/resolv.conf"

# A clean environment inside: nothing of ours leaks in.
in_root() {
	chroot "$root" /usr/bin/env -i HOME=/root PATH="$goroot/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
		LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive GOMODCACHE=/gomod GOCACHE=/gocache GOPROXY=off \
		GOTOOLCHAIN=local GOFLAGS=-buildvcs=false "$@"
}
apt_install() {
	in_root apt-get install -y -q --no-install-recommends "$@" >>"$log" 2>&1 && return 0
	say "apt-get install failed; refreshing the package lists and retrying"
	in_root apt-get update -qq >>"$log" 2>&1
	in_root apt-get install -y -q --no-install-recommends "$@" >>"$log" 2>&1
}

t0=$SECONDS
say "1. apt-get install ./$(basename "$rt_deb")"
apt_install "/debs/$(basename "$rt_deb")"
in_root dpkg -s libtorch-dev >/dev/null 2>&1 && { say "FAIL: libtorch-dev got installed with the runtime package"; exit 1; }
say "   installed in $((SECONDS - t0)) s: $(in_root dpkg-query -W -f='${Package} ${Version}\n' clipagiqa libtorch1.13 libturbojpeg0 | paste -sd, | sed 's/,/, /g')"

say "2. clipagiqa info / man page / predict on the fixture images"
info=$(in_root clipagiqa info)
echo "$info" | tee -a "$log"
grep -q "ok=true" <<<"$info" || { say "FAIL: clipagiqa info does not report a matching shim"; exit 1; }
in_root test -s /usr/share/man/man1/clipagiqa.1.gz || { say "FAIL: no man page"; exit 1; }
fix=/src/testdata/clip-agiqa-ref
imgs=$(cd "$src/testdata/clip-agiqa-ref" && ls img_*.png | sed "s|^|$fix/|" | paste -sd' ')
# shellcheck disable=SC2086
in_root clipagiqa predict --clip $fix/tiny_clip_vit.pt --checkpoint $fix $imgs >"$root/tmp/predict.json"
say "   predict: $(grep -c '"score"' "$root/tmp/predict.json") images scored"

say "3. apt-get install ./$(basename "$dev_deb"); go build testdata/consumer with pkg-config only"
t1=$SECONDS
apt_install "/debs/$(basename "$dev_deb")"
in_root pkg-config --libs clipagiqa | tee -a "$log"
in_root sh -c "cd /src/testdata/consumer && go build -o /tmp/consumer ." >>"$log" 2>&1 ||
	{ tail -30 "$log"; say "FAIL: go build of the consumer module"; exit 1; }
say "   built in $((SECONDS - t1)) s; NEEDED: $(in_root sh -c 'readelf -d /tmp/consumer 2>/dev/null | sed -n "s/.*(NEEDED).*\[\(.*\)\]/\1/p" | paste -sd" "')"
# shellcheck disable=SC2086
in_root /tmp/consumer -clip $fix/tiny_clip_vit.pt -checkpoint $fix -expected $fix/expected.json \
	-cli-json /tmp/predict.json $imgs | tee "$build/test-package-consumer.json" >>"$log" ||
	{ cat "$build/test-package-consumer.json"; say "FAIL: consumer checks"; exit 1; }
say "   consumer: $(tr -d '\n ' <"$build/test-package-consumer.json" | grep -o '"max_abs_err":[^,]*\|"cli_max_abs_err":[^,]*\|"shim_path":"[^"]*"' | paste -sd' ')"

say "4. build-time messages"
out=$(in_root sh -c "cd /src/testdata/consumer && CGO_ENABLED=0 go build -o /dev/null . 2>&1" || true)
grep -q clipagiqa_needs_cgo <<<"$out" || { echo "$out"; say "FAIL: CGO_ENABLED=0 does not name what to install"; exit 1; }
say "   CGO_ENABLED=0: $(echo "$out" | grep -o 'undefined: clipagiqa_needs_cgo[A-Za-z_0-9]*' | head -1)"
# (a new CGO_CFLAGS makes go rerun pkg-config: its cache does not key on the .pc)
out=$(in_root sh -c "cd /src/testdata/consumer && PKG_CONFIG_LIBDIR=/nonexistent CGO_CFLAGS=\"-O2 -g -DCLIPAGIQA_NO_PC\" go build -o /dev/null . 2>&1" || true)
grep -q "clipagiqa.pc" <<<"$out" || { echo "$out"; say "FAIL: a missing clipagiqa.pc is not named"; exit 1; }
say "   without clipagiqa.pc: $(echo "$out" | grep -m1 -o "Package clipagiqa was not found[^.]*")"

say "PASS in $((SECONDS - t0)) s (log: $log)"
