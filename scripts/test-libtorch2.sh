#!/usr/bin/env bash
# The libtorch 2.x leg: builds our native libraries against Debian trixie's
# libtorch (build-libtorch2/, kept between runs) and runs go vet and the whole
# `go test ./...` there, test cache off so every run really runs.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
TRIXIE_GOFLAGS="-count=1" exec "$here/trixie-run.sh" bash -c '
  set -euo pipefail
  echo "libtorch in root: $(dpkg-query -W -f="\${Version}" libtorch-dev), python3-torch $(python3 -c "import torch; print(torch.__version__)")"
  make test BUILD=build-libtorch2
'
