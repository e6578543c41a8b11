#!/bin/bash
# Runs the nn benchmark (C, then PyTorch if /usr/bin/python3 has torch, then the C layers again
# with OpenBLAS's AVX-512 kernels) and writes results/bench/nn.md (+ the raw JSON lines): per
# layer the gemm engine, sgemm, oneDNN (nn.conv_engine = dnnl), auto's pick and PyTorch; training
# steps of ResNet3D-18 (8,1,3,112,112) and of the demo's ResNet3DV1c-18 width 16 (32,1,3,56,56)
# with each engine (gemm, dnnl, auto) and PyTorch, at 1 and 2 threads (plus ResNet3D-18
# (2,1,9,256,256) with gemm). NN_BENCH_NO_BIG=1 skips that one.
# Usage: tests/bench/run_bench_nn.sh BUILD_DIR   (bench_nn built there: --target bench_nn)
set -euo pipefail
# Users' kernels (issue 15): this machine's environment forces older OpenBLAS kernels
# (OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE) for tests and CI; a benchmark stands for users.
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE
build=${1:?usage: run_bench_nn.sh BUILD_DIR}
src=$(cd "$(dirname "$0")/../.." && pwd)
out=$src/results/bench
mkdir -p "$out"
# mp3d sets OMP_WAIT_POLICY=passive for itself (pipeline/main.c: oneDNN's OpenMP threads must not
# spin against nn/parallel.c's pool); bench_nn is not mp3d, so the same is set here for it.
OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive} "$build/tests/bench_nn" "$out/nn_c.json"
if /usr/bin/python3 -c 'import torch' 2>/dev/null; then
    /usr/bin/python3 "$src/tests/bench/bench_nn_torch.py" "$out/nn_torch.json"
else
    echo "python3-torch not installed: PyTorch columns will read n/a" >&2
    : > "$out/nn_torch.json"
fi
if grep -q avx512f /proc/cpuinfo; then
    OPENBLAS_CORETYPE=SkylakeX NN_BENCH_NO_STEP=1 NN_BENCH_NO_DNNL=1 "$build/tests/bench_nn" "$out/nn_c_avx512.json"
fi
python3 "$src/tests/bench/bench_nn_report.py" "$out/nn_c.json" "$out/nn_torch.json" "$out/nn.md" "$out/nn_c_avx512.json"
cat "$out/nn.md"
