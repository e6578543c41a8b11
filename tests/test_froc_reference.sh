#!/usr/bin/env bash
# Cross-check of the C scorer against an independent Python reference (test_froc_reference.py)
# on a generated cohort with score ties, both IoU conventions and both integer-FP rules.
# Usage: test_froc_reference.sh BENCH_BINARY [n_images] [dets_per_image]
set -eu
BENCH=$1
T=$(mktemp -d /tmp/mp3d_froc_ref.XXXXXX)
trap 'rm -rf "$T"' EXIT
command -v python3 >/dev/null || { echo "python3 missing"; exit 1; }
"$BENCH" "$T" "${2:-700}" "${3:-6}" 50
python3 "$(dirname "$0")/test_froc_reference.py" "$T" --require-separation
