#!/bin/bash
# Regenerates tests/test_nn_golden.h: test_nn_net --dump writes each case's parameters and input,
# PyTorch (Debian python3-torch, float64) computes the reference loss, outputs and gradients.
# Usage: tests/bench/nn_golden_regen.sh BUILD_DIR   (test_nn_net built there)
set -euo pipefail
build=${1:?usage: nn_golden_regen.sh BUILD_DIR}
src=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$build/tests/test_nn_net" --dump "$tmp"
{
    echo "#pragma once"
    echo "// test_nn_golden: PyTorch reference losses, logits and gradient probes for test_nn_net (generated)."
    for t in r18_bn v1c_gn p3d_bn p3d_gn_gtm r18_bn_bb p3d_gn; do
        (cd "$src/tests/bench" && /usr/bin/python3 nn_torch_golden.py "$tmp/$t" "$t")
    done
} > "$tmp/golden.h"
mv "$tmp/golden.h" "$src/tests/test_nn_golden.h"
echo "wrote $src/tests/test_nn_golden.h"
