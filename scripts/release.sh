#!/usr/bin/env bash
# Builds Weft in release mode: `weft` (control plane, CLI, `weft up`) and
# `weft-proxy` (what sidecars and gateways run) beside it. The proxy is a
# static-pie binary (glibc linked in): an idle sidecar then maps only the
# libc functions it calls, laid out with its own (crates/weft/build.rs),
# not all of libc, libm and the loader — 0.6 MB less resident memory per
# proxy (bench/README.md). cargo can set `crt-static` for one binary only
# through `cargo rustc` (as a flag for every crate it would also reach the
# proc-macros, which cannot be static), hence this script: build release
# binaries with it, not with `cargo build --release`.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/weft-target}"
cargo build --release "$@" -p weft --bin weft
cargo rustc --release "$@" -p weft --bin weft-proxy -- -C target-feature=+crt-static
