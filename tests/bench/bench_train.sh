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
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
T=$(mktemp -d /tmp/mp3d_bench_train.XXXXXX)
trap 'rm -rf "$T"' EXIT
# The demo's shard is not in the repository: make it (synth + vdt_imagenet of configs/demo.cfg,
# ~1 min) when the directory has none.
if [ ! -f "$shard/imagenet_train.h5" ]; then
    echo "bench_train: no shard in $shard: making the demo's (mp3d run configs/demo.cfg --only synth,vdt_imagenet)"
    mpirun -np 1 "$build/mp3d" run "$here/configs/demo.cfg" --set pipeline.dir="$T/demo" \
        --only synth,vdt_imagenet >"$T/demo.log" 2>&1 || { tail -20 "$T/demo.log"; exit 1; }
    shard=$T/demo/vdt_imagenet
fi
cpu_busy() { awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat; }
row() { # NP THREADS ENGINE -> "np img_s compute_ms comm_ms data_ms other_cores"
    local np=$1 thr=$2 engine=$3 b=$((16 * $1)) tag="np$1_t$2_$3"
    local c0 t0 c1 t1
    c0=$(cpu_busy); t0=$(date +%s.%N)
    local bind=()   # mpirun binds a rank to one core by default: its threads need the others
    [ "$thr" -gt 1 ] && bind=(--bind-to none)
    OPENBLAS_NUM_THREADS=$thr mpirun -np "$np" "${bind[@]}" -x OPENBLAS_NUM_THREADS "$build/mp3d" train "$here/configs/demo_pretrain.cfg" \
        --set input.root="$shard" --set nn.conv_engine="$engine" \
        --set output.dir="$T/$tag" --set train.batch=$b --set train.lr_batch=$b --set train.max_steps="$steps" \
        --set train.ckpt_every=100000 --set train.val_every=0 >"$T/$tag.log" 2>&1 ||
        { echo "bench_train: run $tag failed:" >&2; tail -20 "$T/$tag.log" >&2; return 1; }
    c1=$(cpu_busy); t1=$(date +%s.%N)
    grep -m1 -o 'blas: core:[A-Za-z0-9_]*' "$T/$tag.log" | sed 's/blas: core://' >"$T/core"
    python3 - "$T/$tag/metrics.jsonl" "$np" "$c0" "$c1" "$t0" "$t1" <<'PY'
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
engines=${ENGINES:-gemm dnnl}
table=""
summary=""
for e in $engines; do
    r1=$(row 1 1 "$e") && r2=$(row 2 1 "$e") && rt=$(row 1 2 "$e") || exit 1
    read -r _ ips1 c1 m1 d1 b1 <<<"$r1"
    read -r _ ips2 c2 m2 d2 b2 <<<"$r2"
    read -r _ ipst ct mt dt bt <<<"$rt"
    eff=$(python3 -c "print(f'{$ips2/(2*$ips1):.2f}')")
    thr=$(python3 -c "print(f'{$ipst/$ips1:.2f}')")
    exposed=$(python3 -c "print(f'{100*$m2/($c2+$m2+$d2):.1f}')")
    table+="| $e | 1 x 1 | $ips1 | $c1 | $m1 | $d1 | $b1 |"$'\n'
    table+="| $e | 2 x 1 | $ips2 | $c2 | $m2 | $d2 | $b2 |"$'\n'
    table+="| $e | 1 x 2 | $ipst | $ct | $mt | $dt | $bt |"$'\n'
    summary+="- **$e**: weak-scaling efficiency 1 -> 2 ranks **$eff** (images/s at 2 ranks / (2 x images/s at 1 rank)); "
    summary+="exposed communication at 2 ranks **$exposed%** of the step (target < 10%); 1 -> 2 threads in one rank **${thr}x**."$'\n'
done
out=$here/results/bench/train.md
mkdir -p "$(dirname "$out")"
{
echo "# Trainer benchmark (issue 4)"
echo
echo "Generated $(date -u '+%Y-%m-%d %H:%M UTC') by \`tests/bench/bench_train.sh\` at revision $(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo unknown) on $(nproc) vCPU ($(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)), OpenBLAS core $(cat "$T/core") (OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset: the kernels a user's CPU gets)."
echo "Network: ResNet3DV1c-18 width 0.25 (configs/demo_pretrain.cfg), 56x56x3 crops, 16 images per rank per step,"
echo "$steps steps per run, ranks x threads per rank as listed (OPENBLAS_NUM_THREADS; nn/parallel follows it), one run per"
echo "convolution engine (\`nn.conv_engine\`). Step times are per-step means over steps 2..$steps from metrics.jsonl."
echo "'busy cores' = CPU time of ALL processes on the machine during the run divided by wall time (2.0 = both cores busy)."
echo
echo "| engine | ranks x threads | images/s | compute ms/step | exposed comm ms/step | data ms/step | busy cores |"
echo "|---|---|---|---|---|---|---|"
printf '%s' "$table"
echo
printf '%s' "$summary"
echo
echo "Checkpoint write speed beside dd: see ckpt.md (tests/bench/bench_ckpt)."
} >"$out"
cat "$out"
