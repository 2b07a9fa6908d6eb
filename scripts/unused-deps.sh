#!/usr/bin/env bash
# Fails when a crate declares a dependency its code never names: every
# [dependencies] / [dev-dependencies] entry must appear as `name::` or
# `use name` (dashes as underscores) somewhere in the crate's sources.
# (cargo-machete's check, without installing it; a dependency used only
# through a macro re-export would need an exception here.)
set -euo pipefail
cd "$(dirname "$0")/.."
status=0
for manifest in crates/*/Cargo.toml; do
  crate=$(dirname "$manifest")
  deps=$(awk '/^\[(dev-)?dependencies\]/{on=1; next} /^\[/{on=0} on && /^[a-z]/{split($1, a, "."); print a[1]}' "$manifest")
  for dep in $deps; do
    ident=${dep//-/_}
    if ! grep -rqE "\b${ident}::|use ${ident}\b|extern crate ${ident}\b|${ident}!" "$crate/src" "$crate/tests" 2>/dev/null; then
      echo "unused dependency: $dep in $manifest"
      status=1
    fi
  done
done
exit $status
