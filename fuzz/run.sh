#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 60), seeded from the examples.
# cargo-fuzz wants nightly features; RUSTC_BOOTSTRAP lets the stable
# toolchain (the only one here) accept them.
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_PER_TARGET="${1:-60}"
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-/var/tmp/weft-fuzz-target}"
mkdir -p corpus/load_config corpus/mesh_spec corpus/proxy_compile
cp ../examples/bookinfo/*.yaml ../examples/bookinfo/routes/*.yaml corpus/load_config/ 2>/dev/null || true
# Istio's validation fixtures beside the clone make good seeds too (copied
# into the untracked corpus, never into the project).
cp ../../shared/conformance/istio/validation/*.yaml corpus/load_config/ 2>/dev/null || true
cp ../examples/bookinfo/mesh.yaml corpus/mesh_spec/
for target in load_config mesh_spec proxy_compile; do
  cargo fuzz run "$target" "corpus/$target" -- -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -timeout=5
done
