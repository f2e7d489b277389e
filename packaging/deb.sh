#!/usr/bin/env bash
# Builds two Debian packages from an install into a staging tree:
#   clipagiqa      the CLI, the two native libraries, the man page
#   clipagiqa-dev  clipagiqa.pc and libtorch's linker names, for building Go programs
# Runtime Depends are read from the ELF files' NEEDED entries and resolved to the
# Debian packages that own those libraries here (dpkg -S).
# Usage: deb.sh BUILD_DIR OUT_DIR; GO and VERSION from the environment.
set -euo pipefail
build=$(cd "$1" && pwd) out=$2
version=${VERSION:?VERSION not set}
here=$(cd "$(dirname "$0")/.." && pwd)
arch=$(dpkg --print-architecture)
work="$build/deb"
rm -rf "$work" && mkdir -p "$work/stage" "$out"

"$here/packaging/install.sh" "$build" /usr "$work/stage" >/dev/null

# Split the staging tree into the two packages.
rt="$work/clipagiqa" dev="$work/clipagiqa-dev"
mkdir -p "$rt/usr/lib/clipagiqa" "$dev/usr/lib/clipagiqa" "$dev/usr/lib/pkgconfig"
cp -a "$work/stage/usr/bin" "$work/stage/usr/share" "$rt/usr/"
cp -a "$work/stage/usr/lib/clipagiqa/"*.so "$rt/usr/lib/clipagiqa/"
cp -a "$work/stage/usr/lib/clipagiqa/torch-link" "$dev/usr/lib/clipagiqa/"
cp -a "$work/stage/usr/lib/pkgconfig/clipagiqa.pc" "$dev/usr/lib/pkgconfig/"
for p in "$rt" "$dev"; do
	name=$(basename "$p")
	install -D -m 0644 "$here/LICENSE" "$p/usr/share/doc/$name/copyright"
done

# Depends: owner packages of the libraries our ELF files need, excluding our own.
needed_packages() {
	local f soname path pkg cand c ver
	for f in "$@"; do
		readelf -d "$f" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'
	done | sort -u | while read -r soname; do
		# ours, and the dynamic loader (libc6, already there through libc.so.6)
		case $soname in libclipagiqa_shim.so | libcgotorch.so | ld-linux*) continue ;; esac
		path=$(LD_LIBRARY_PATH="$rt/usr/lib/clipagiqa" ldd "$@" 2>/dev/null | awk -v s="$soname" '$1 == s && $3 ~ /^\// {print $3; exit}')
		[ -n "$path" ] || { echo "deb: cannot resolve $soname" >&2; return 1; }
		# merged /usr: dpkg may list the file under /lib or /usr/lib
		pkg=""
		for cand in "$path" "$(readlink -f "$path")"; do
			for c in "$cand" "${cand#/usr}" "/usr$cand"; do
				pkg=$(dpkg -S "$c" 2>/dev/null | head -1) && break 2
			done
		done
		[ -n "$pkg" ] || { echo "deb: no Debian package owns $path ($soname)" >&2; return 1; }
		pkg=${pkg%%:*}
		# the upstream part of the version built against (without the Debian revision)
		ver=$(dpkg-query -W -f='${Version}' "$pkg")
		echo "$pkg (>= ${ver%-*})"
	done | sort -u | paste -sd, | sed 's/,/, /g'
}
elfs=("$rt/usr/bin/clipagiqa" "$rt/usr/lib/clipagiqa/"*.so)
depends=$(needed_packages "${elfs[@]}")
case $depends in *libtorch*) ;; *) echo "deb: Depends lacks libtorch: '$depends'" >&2; exit 1 ;; esac

installed_size() { du -sk --exclude=DEBIAN "$1" | cut -f1; }
maintainer="clipagiqa developers <clipagiqa@users.noreply.github.com>"
mkdir -p "$rt/DEBIAN" "$dev/DEBIAN"
cat >"$rt/DEBIAN/control" <<CTRL
Package: clipagiqa
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $(installed_size "$rt")
Depends: $depends
Suggests: clipagiqa-dev
Section: science
Priority: optional
Homepage: https://github.com/clipagiqa/clipagiqa
Description: judge the quality of AI-generated images with CLIP
 CLI and native libraries of clipagiqa: CLIP-AGIQA and CLIP-IQA scoring,
 training and an HTTP server, on libtorch. The libraries in /usr/lib/clipagiqa
 load libtorch themselves, so programs link only them.
CTRL
cat >"$dev/DEBIAN/control" <<CTRL
Package: clipagiqa-dev
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $(installed_size "$dev")
Depends: clipagiqa (= $version), pkg-config, gcc, libc6-dev, libturbojpeg0-dev
Section: libdevel
Priority: optional
Homepage: https://github.com/clipagiqa/clipagiqa
Description: build Go programs that import github.com/clipagiqa/clipagiqa
 clipagiqa.pc for cgo's pkg-config (the torch package uses
 "#cgo pkg-config: clipagiqa") and libtorch's linker names, so
 "go build" works with no environment variables and without libtorch-dev.
 Go itself (the version in go.mod) comes from go.dev.
CTRL
for p in "$rt" "$dev"; do
	name=$(basename "$p")
	dpkg-deb --root-owner-group -Zxz --build "$p" "$out/${name}_${version}_${arch}.deb" >/dev/null
	echo "$out/${name}_${version}_${arch}.deb"
done
