#!/usr/bin/env bash
# Sets up this machine and runs every Weft test: format, lints, unit,
# integration and end-to-end (network namespaces, iptables: run as root).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "scripts/test.sh: run as root; the end-to-end tests create network namespaces and iptables rules" >&2
  exit 1
fi
scripts/setup.sh
# One target directory outside the clone, shared by every checkout and by
# the mesh's uid-1337 proxies (so it must be world-readable: not under /root).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/weft-target}"
cargo fmt --all -- --check
scripts/unused-deps.sh
cargo clippy --workspace --all-targets --quiet -- -D warnings
# At most four tests at once: each end-to-end test runs a whole mesh (a
# dozen processes), and more at once on two cores turn Bookinfo's own
# timeouts (3 s) into flakes.
cargo test --workspace -- --test-threads=4 2>&1 | tee /tmp/weft-test.log
# The release build, as the demo and the benchmarks run it (its proxy a
# static-pie binary, scripts/release.sh): Bookinfo's routing end to end on
# those binaries.
scripts/release.sh -q
if readelf -lW "$CARGO_TARGET_DIR/release/weft-proxy" | grep -q INTERP; then
  echo "scripts/test.sh: the release weft-proxy is not static (it names a loader)" >&2
  exit 1
fi
WEFT_E2E_BIN="$CARGO_TARGET_DIR/release/weft" \
  cargo test -p weft --test mesh_e2e -- bookinfo_routing_end_to_end 2>&1 | tee -a /tmp/weft-test.log
