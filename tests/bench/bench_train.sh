#!/usr/bin/env bash
# Trainer benchmark (issue 4): per-step compute, exposed communication (waiting for the gradient
# all-reduce after backward ends) and data time, and weak scaling from 1 to 2 ranks (16 images
# per rank per step), on a VDT ImageNet shard (default: the demo's). Writes results/bench/train.md.
#   bash tests/bench/bench_train.sh [BUILD_DIR] [SHARD_DIR] [STEPS]
set -euo pipefail
# Users' kernels (issue 15): this machine's environment forces older OpenBLAS kernels
# (OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE) for tests and CI; a benchmark stands for users.
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE
here=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$here/build}
shard=${2:-$here/results/demo/vdt_imagenet}
steps=${3:-40}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1 OPENBLAS_NUM_THREADS=1
T=$(mktemp -d /tmp/mp3d_bench_train.XXXXXX)
trap 'rm -rf "$T"' EXIT
cpu_busy() { awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat; }
row() { # NP -> "np img_s compute_ms comm_ms data_ms other_cores"
    local np=$1 b=$((16 * $1))
    local c0 t0 c1 t1
    c0=$(cpu_busy); t0=$(date +%s.%N)
    mpirun -np "$np" "$build/mp3d" train "$here/configs/demo_pretrain.cfg" --set input.root="$shard" \
        --set output.dir="$T/np$np" --set train.batch=$b --set train.lr_batch=$b --set train.max_steps="$steps" \
        --set train.ckpt_every=100000 --set train.val_every=0 >"$T/np$np.log" 2>&1
    c1=$(cpu_busy); t1=$(date +%s.%N)
    python3 - "$T/np$np/metrics.jsonl" "$np" "$c0" "$c1" "$t0" "$t1" <<'PY'
import json, sys
path, np_, c0, c1, t0, t1 = sys.argv[1], int(sys.argv[2]), *map(float, sys.argv[3:7])
rows = [json.loads(l) for l in open(path) if '"compute_s"' in l]
rows = rows[1:] or rows            # the first line is step 1 alone (warm-up: memory plans)
n = sum(r["images"] for r in rows) / (16 * np_)
comp = sum(r["compute_s"] * r["images"] / (16 * np_) for r in rows) / n
comm = sum(r["comm_wait_s"] * r["images"] / (16 * np_) for r in rows) / n
data = sum(r["data_s"] * r["images"] / (16 * np_) for r in rows) / n
step = comp + comm + data
busy_cores = (c1 - c0) / 100.0 / (t1 - t0)   # all processes, USER_HZ = 100
print(f"{np_} {16*np_/step:.1f} {1e3*comp:.1f} {1e3*comm:.1f} {1e3*data:.1f} {busy_cores:.2f}")
PY
}
r1=$(row 1); r2=$(row 2)
read -r _ ips1 c1 m1 d1 b1 <<<"$r1"
read -r _ ips2 c2 m2 d2 b2 <<<"$r2"
eff=$(python3 -c "print(f'{$ips2/(2*$ips1):.2f}')")
exposed=$(python3 -c "print(f'{100*$m2/($c2+$m2+$d2):.1f}')")
out=$here/results/bench/train.md
mkdir -p "$(dirname "$out")"
{
echo "# Trainer benchmark (issue 4)"
echo
echo "Generated $(date -u '+%Y-%m-%d %H:%M UTC') by \`tests/bench/bench_train.sh\` on $(nproc) vCPU ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'))."
echo "Network: ResNet3DV1c-18 width 0.25 (configs/demo_pretrain.cfg), 56x56x3 crops, 16 images per rank per step,"
echo "$steps steps, OPENBLAS_NUM_THREADS=1, ranks oversubscribed only if the machine has fewer cores than ranks."
echo "Step times are per-step means over steps 2..$steps from metrics.jsonl. 'busy cores' = CPU time of ALL processes"
echo "on the machine during the run divided by wall time (2.0 = both cores busy; more than the run's ranks = other load)."
echo
echo "| ranks | images/s | compute ms/step | exposed comm ms/step | data ms/step | busy cores |"
echo "|---|---|---|---|---|---|"
echo "| 1 | $ips1 | $c1 | $m1 | $d1 | $b1 |"
echo "| 2 | $ips2 | $c2 | $m2 | $d2 | $b2 |"
echo
echo "Weak-scaling efficiency 1 -> 2 ranks: **$eff** (images/s at 2 ranks / (2 x images/s at 1 rank))."
echo "Exposed communication at 2 ranks: **$exposed%** of the step (target < 10%)."
echo
echo "Checkpoint write speed beside dd: see ckpt.md (tests/bench/bench_ckpt)."
} >"$out"
cat "$out"
