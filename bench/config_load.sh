#!/usr/bin/env bash
# How long `weft validate` takes to load and validate 10,000 resources
# (VirtualServices and DestinationRules with subsets, in one multi-document
# file), best of three runs. A benchmark, never a timed test.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/weft-target}"
scripts/release.sh -q
WEFT="$CARGO_TARGET_DIR/release/weft"
FILE=$(mktemp /tmp/weft-10k.XXXXXX.yaml)
trap 'rm -f "$FILE"' EXIT
python3 - "$FILE" <<'PY'
import sys
with open(sys.argv[1], "w") as f:
    for i in range(5000):
        f.write(f"""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: svc-{i}, namespace: ns-{i % 50}}}
spec:
  hosts: [svc-{i}]
  http:
  - match:
    - headers: {{end-user: {{exact: jason}}}}
      uri: {{regex: "/api/v[0-9]+/items"}}
    route:
    - destination: {{host: svc-{i}, subset: v2}}
  - route:
    - destination: {{host: svc-{i}, subset: v1}}
      weight: 80
    - destination: {{host: svc-{i}, subset: v2}}
      weight: 20
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: svc-{i}, namespace: ns-{i % 50}}}
spec:
  host: svc-{i}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
""")
PY
best=""
for _ in 1 2 3; do
  start=$(date +%s.%N)
  "$WEFT" validate -f "$FILE" > /dev/null
  end=$(date +%s.%N)
  t=$(awk -v a="$start" -v b="$end" 'BEGIN{print b - a}')
  best=$(awk -v t="$t" -v b="$best" 'BEGIN{print (b == "" || t < b) ? t : b}')
done
count=$(grep -c '^kind:' "$FILE")
printf 'loaded and validated %d resources (%s bytes) in %.3f s (best of 3, including process start)\n' "$count" "$(stat -c %s "$FILE")" "$best"
