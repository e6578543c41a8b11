#!/usr/bin/env bash
# Cross-check of the C COCO evaluation against an independent numpy implementation of
# pycocotools' COCOeval (test_cocoeval_reference.py) on random cases: ~50 images, 5 categories,
# crowd regions, score ties, duplicate gts, the max_dets cut, both IoU width conventions.
# Usage: test_cocoeval_reference.sh TEST_COCOEVAL_BINARY. Exit 77 when numpy is missing.
set -eu
BIN=$1
PY="$(dirname "$0")/test_cocoeval_reference.py"
# Debian's python3-numpy (pipeline/test.sh) is for /usr/bin/python3; PATH may name another python
PYBIN=
for p in /usr/bin/python3 python3; do
  if command -v "$p" >/dev/null && "$p" -c 'import numpy' 2>/dev/null; then PYBIN=$p; break; fi
done
[ -n "$PYBIN" ] || { echo "SKIP: no python3 with numpy (apt-get install python3-numpy)"; exit 77; }
T=$(mktemp -d /tmp/mp3d_cocoeval_ref.XXXXXX)
trap 'rm -rf "$T"' EXIT
# seed plus1 max_dets
for c in "1 0 100" "2 0 100" "3 1 100" "4 0 20" "5 0 5"; do
  set -- $c
  D="$T/s$1_p$2_m$3"
  mkdir -p "$D"
  "$BIN" --dump "$D" "$1" "$2" "$3"
  "$PYBIN" "$PY" "$D"
done
