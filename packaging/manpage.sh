#!/usr/bin/env bash
# Writes a man page for the CLI from its own --help texts (so it cannot drift).
# Usage: manpage.sh PATH/TO/clipagiqa VERSION PREFIX > clipagiqa.1
set -euo pipefail
cli=$1 version=$2 prefix=$3

# roff-escape: backslashes, and lines starting with . or '
esc() { sed -e 's/\\/\\e/g' -e "s/^\([.']\)/\\\\\&\1/"; }

commands=$("$cli" --help | awk '/^COMMANDS:/{on=1; next} on && /^[^ ]/{on=0} on && NF {sub(/,$/, "", $1); print $1}' | grep -vx help)
[ -n "$commands" ] || { echo "manpage: no commands found in '$cli --help'" >&2; exit 1; }

cat <<ROFF
.TH CLIPAGIQA 1 "" "clipagiqa $version" "User Commands"
.SH NAME
clipagiqa \- judge the quality of AI-generated images with CLIP (CLIP-AGIQA, CLIP-IQA)
.SH SYNOPSIS
.B clipagiqa
.I command
.RI [ options ]
.I arguments
.SH DESCRIPTION
The text below is the program's own \fB\-\-help\fR output.
.PP
.nf
ROFF
"$cli" --help | esc
echo ".fi"
for c in $commands; do
	echo ".SH COMMAND: $c"
	echo ".nf"
	"$cli" "$c" --help | esc
	echo ".fi"
done
cat <<ROFF
.SH FILES
.TP
.I $prefix/lib/clipagiqa/
the native libraries (libclipagiqa_shim.so, libcgotorch.so); they load libtorch.
.TP
.I $prefix/lib/clipagiqa/torch-link/
linker names of libtorch's libraries, for building Go programs without libtorch-dev.
.TP
.I $prefix/lib/pkgconfig/clipagiqa.pc
pkg-config file for Go programs that import github.com/clipagiqa/clipagiqa (package clipagiqa-dev).
ROFF
