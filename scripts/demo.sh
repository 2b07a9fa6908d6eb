#!/usr/bin/env bash
# Sets up this machine, builds Weft and runs the Bookinfo demo mesh, with a
# Prometheus scraping it, in the foreground (as root). Ctrl-C removes everything it created.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/weft-target}"
scripts/release.sh
exec "$CARGO_TARGET_DIR/release/weft" up examples/bookinfo --with prometheus "$@"
