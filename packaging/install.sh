#!/usr/bin/env bash
# Installs clipagiqa like a C library: `make install PREFIX=... DESTDIR=...`.
#   PREFIX/lib/clipagiqa/         libclipagiqa_shim.so, libcgotorch.so (RUNPATH to libtorch)
#   PREFIX/lib/clipagiqa/torch-link/  libc10.so, libtorch.so, libtorch_cpu.so (linker names only)
#   PREFIX/lib/pkgconfig/clipagiqa.pc
#   PREFIX/bin/clipagiqa          the CLI, linked through that .pc (RUNPATH PREFIX/lib/clipagiqa)
#   PREFIX/share/man/man1/clipagiqa.1.gz
# Usage: install.sh BUILD_DIR PREFIX [DESTDIR]; GO and VERSION from the environment.
set -euo pipefail
build=$1 prefix=$2 destdir=${3:-}
go=${GO:-go}
version=${VERSION:?VERSION not set}
here=$(cd "$(dirname "$0")/.." && pwd)

case $prefix in /*) ;; *) echo "install: PREFIX must be absolute, got '$prefix'" >&2; exit 2 ;; esac
stage="$destdir$prefix"

DESTDIR=$destdir cmake --install "$build" --prefix "$prefix" >/dev/null
test -f "$stage/lib/pkgconfig/clipagiqa.pc" || { echo "install: $stage/lib/pkgconfig/clipagiqa.pc was not written" >&2; exit 1; }

# Link the CLI against the installed .pc so its RUNPATH names PREFIX, not the
# build tree. With DESTDIR, a copy of the .pc points -L into the staging tree.
# Go's build cache does not key on pkg-config's output, so a define carrying
# the .pc's hash keeps a torch package linked for another prefix from being reused.
pc="$build/install-pc/clipagiqa.pc"
mkdir -p "$(dirname "$pc")"
sed -e "s|^libdir=.*|libdir=$stage/lib/clipagiqa|" \
	-e "s|^rpathdir=.*|rpathdir=$prefix/lib/clipagiqa|" \
	-e "s|^torch_linkdir=.*|torch_linkdir=$stage/lib/clipagiqa/torch-link|" \
	"$stage/lib/pkgconfig/clipagiqa.pc" >"$pc"
pc_id=$(sha256sum "$pc" | cut -c1-16)
out="$build/install-bin"
mkdir -p "$out"
(cd "$here" && env CGO_ENABLED=1 PKG_CONFIG_PATH="$(dirname "$pc")" \
	CGO_CFLAGS="$("$go" env CGO_CFLAGS) -DCLIPAGIQA_PC_ID=$pc_id" \
	"$go" build -trimpath -ldflags "-X main.version=$version" -o "$out/clipagiqa" ./cmd/clipagiqa)
readelf -d "$out/clipagiqa" | grep -q "RUNPATH.*\[$prefix/lib/clipagiqa[]:]" ||
	{ echo "install: $out/clipagiqa does not have RUNPATH $prefix/lib/clipagiqa first" >&2; exit 1; }
install -D -m 0755 "$out/clipagiqa" "$stage/bin/clipagiqa"

mkdir -p "$stage/share/man/man1"
LD_LIBRARY_PATH="$stage/lib/clipagiqa" "$here/packaging/manpage.sh" "$out/clipagiqa" "$version" "$prefix" \
	| gzip -9n >"$stage/share/man/man1/clipagiqa.1.gz"
echo "installed clipagiqa $version into ${destdir:+$destdir (DESTDIR) }$prefix"
