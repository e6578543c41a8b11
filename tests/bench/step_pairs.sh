#!/bin/bash
# Alternated pairs of the ResNet3D-18 training step (8,1,3,112,112): mp3d (`bench_nn --step`, the
# configured default engine) and right after it PyTorch (`bench_nn_torch.py --step`, the same
# network, data shape and SGD), at 1 and 2 threads, ROUNDS times; writes
# results/bench/nn_step_pairs.md. On this VM a step's time moves with the host from one minute to
# the next, so only a pair taken back to back is a fair ratio; the rounds show the spread.
# Usage: tests/bench/step_pairs.sh BUILD_DIR [ROUNDS]   (bench_nn built there)
set -euo pipefail
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE   # users' kernels (issue 15)
build=${1:?usage: step_pairs.sh BUILD_DIR [ROUNDS]}
rounds=${2:-2}
src=$(cd "$(dirname "$0")/../.." && pwd)
out=$src/results/bench/nn_step_pairs.md
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
core=""
rows=""
for r in $(seq 1 "$rounds"); do
    for t in 1 2; do
        load=$(cut -d' ' -f1 /proc/loadavg)
        OMP_WAIT_POLICY=passive "$build/tests/bench_nn" --step 8,3,112,112 --threads "$t" --steps 3 >"$tmp" 2>&1
        core=$(sed -n 's/^openblas core: //p' "$tmp" | head -1)
        read -r c_ms c_mb < <(sed -n 's/.*train step .* \([0-9.]*\) ms\/step  cpu .*peak_rss *\([0-9]*\) MB.*/\1 \2/p' "$tmp" | head -1)
        j=$(/usr/bin/python3 "$src/tests/bench/bench_nn_torch.py" --step resnet3d18 8,1,3,112,112 "$t" 3 | tail -1)
        t_ms=$(python3 -c 'import json,sys; print("%.1f" % json.loads(sys.argv[1])["ms"])' "$j")
        t_mb=$(python3 -c 'import json,sys; print("%.0f" % json.loads(sys.argv[1])["peak_rss_mb"])' "$j")
        ratio=$(python3 -c 'import sys; print("%.2f" % (float(sys.argv[2]) / float(sys.argv[1])))' "$c_ms" "$t_ms")
        rows+="| $r | $t | $c_ms | $t_ms | **${ratio}x** | $c_mb / $t_mb | $load |"$'\n'
        echo "round $r threads $t: mp3d $c_ms ms, PyTorch $t_ms ms, ${ratio}x" >&2
    done
done
{
    echo "# ResNet3D-18 training step, mp3d and PyTorch back to back (issue 15)"
    echo
    echo "Generated $(date -u '+%Y-%m-%d %H:%M UTC') by \`tests/bench/step_pairs.sh\` at $(git -C "$src" rev-parse --short=12 HEAD)"
    echo "on $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs; OpenBLAS core \`$core\` (OPENBLAS_CORETYPE/L2_SIZE unset);"
    echo "mp3d's engine: the configured default (\`bench_nn --step\`). Step (8,1,3,112,112), SGD with momentum,"
    echo "best of 3 timed steps after a warm-up, each figure in its own process. ratio = PyTorch ms / mp3d ms."
    echo
    echo "| round | threads | mp3d ms | PyTorch ms | PyTorch / mp3d | peak MB (mp3d / PyTorch) | load before |"
    echo "|---|---|---|---|---|---|---|"
    printf '%s' "$rows"
} >"$out"
cat "$out"
