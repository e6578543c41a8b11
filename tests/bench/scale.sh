#!/bin/bash
# Time-to-train on a cluster, on paper from costs measured here (issue 15 item 5): ONE command
# that measures every input on this machine, then writes results/scale.md (+ scale.json) with
# tests/bench/scale_model.py. Inputs, each with the load average before and after it:
#   1. ResNet3D-18 (full width, 1000 classes) training step at (8,1,3,224,224), 1 and 2 threads
#      (bench_nn --step): VDT ImageNet pre-training;
#   2. the MP3D detector (P3D-63 + GTM + FPN + RPN + RoI head, configs/finetune_deeplesion_mp3d.cfg)
#      training step at (1,1,9,512,512), 1 and 2 threads (bench_detector --train-only);
#   3. the gradient all-reduce of both models' parameter counts at 2 ranks, over shared memory
#      (Open MPI's default) and over TCP (OMPI_MCA_btl=tcp,self: eth0/loopback here), one
#      MPI_Allreduce and gradsync's 1/25/100 MB buckets, plain and behind an emulated backward
#      (bench_allreduce);
#   4. sharding rates of one rank: `mp3d preprocess` on a subset of a 512x512 synthetic DeepLesion
#      (`mp3d synth --scale medium`) and `mp3d vdt` on ImageNet-size JPEGs (synth small re-encoded
#      at 500x375 by tests/bench/scale_imagenet.py), wall and CPU (/usr/bin/time).
# The synthetic cohorts are generated once into SCALE_DATA (default /tmp/mp3d_scale_data) and
# reused by later runs (the medium DeepLesion takes ~6 min to write on this machine).
# Usage: tests/bench/scale.sh BUILD_DIR   (needs bench_nn, bench_detector, bench_allreduce, mp3d:
#        cmake --build BUILD_DIR --target bench_nn bench_detector bench_allreduce mp3d)
# Env: SCALE_DATA, PP_KEYS (key slices preprocessed, default 120), DET_ITERS (timed detector steps
#      per thread count after 1 warm-up, default 2: with 1, a P3D-63 step once measured 16.5 s against
#      12.1), NN_STEPS (2), AR_REPS (2), OUT_DIR (results).
set -euo pipefail
# Users' kernels (issue 15): this machine's environment forces older OpenBLAS kernels
# (OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE) for tests and CI; a benchmark stands for users.
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
build=${1:?usage: scale.sh BUILD_DIR}
build=$(cd "$build" && pwd)
src=$(cd "$(dirname "$0")/../.." && pwd)
out=${OUT_DIR:-$src/results}
data=${SCALE_DATA:-/tmp/mp3d_scale_data}
work=$(mktemp -d)
[ -n "${SCALE_KEEP:-}" ] || trap 'rm -rf "$work"' EXIT   # SCALE_KEEP=1 keeps the raw logs
mkdir -p "$out" "$data"
for exe in tests/bench_nn tests/bench_detector tests/bench_allreduce mp3d; do
    [ -x "$build/$exe" ] || { echo "scale.sh: $build/$exe missing (cmake --build $build --target ${exe##*/})" >&2; exit 1; }
done
cd "$src"
meta=$work/meta.txt
load() { cut -d' ' -f1-3 /proc/loadavg; }
# step NAME COMMAND...: runs COMMAND with its output in $work/NAME.log, records wall seconds and the
# load average before/after in meta.txt
step() {
    local name=$1; shift
    local l0 t0 rc=0
    l0=$(load); t0=$(date +%s.%N)
    echo "== $name: $*" | tee -a "$work/commands.txt"
    "$@" > "$work/$name.log" 2>&1 || rc=$?
    echo "$name load_before=$l0 load_after=$(load) wall_s=$(echo "$(date +%s.%N) - $t0" | bc) rc=$rc" >> "$meta"
    tail -3 "$work/$name.log"
    [ $rc -eq 0 ] || { echo "scale.sh: $name failed (rc $rc); its log:" >&2; cat "$work/$name.log" >&2; exit 1; }
}
t_start=$(date +%s)
{
    echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
    rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
    if git status --porcelain 2>/dev/null | grep -qv '^??'; then rev="$rev (working tree has uncommitted changes)"; fi
    echo "revision=$rev"
    echo "cpu_model=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)"
    echo "cores=$(getconf _NPROCESSORS_ONLN)"
    echo "mem_gb=$(awk '/MemTotal/ {printf "%.0f", $2 / 1048576}' /proc/meminfo)"
    echo "mpi=$(mpirun --version 2>&1 | head -1)"
    echo "eth0=$(ip -o -4 addr show eth0 2>/dev/null | awk '{print $4}' | head -1)"
} > "$meta"

# ---- 1-2. per-sample training cost
# SCALE_QUICK=1: tiny shapes, to try the script and the model (the figures mean nothing)
nn_shape=8,3,224,224 det_size=512
if [ -n "${SCALE_QUICK:-}" ]; then nn_shape=2,3,64,64 det_size=128; echo "quick=1 (tiny shapes: not a measurement)" >> "$meta"; fi
# the convolution engine users get: nn.conv_engine's default (bench_nn itself reads no config file,
# and the library's own default is the gemm reference); bench_detector reads the config
engine=$(sed -n 's/.*{"nn.conv_engine", CFG_STRING, "\\"\([a-z]*\)\\"".*/\1/p' io/config_schema.c)
[ -n "$engine" ] || { echo "scale.sh: cannot read nn.conv_engine's default from io/config_schema.c" >&2; exit 1; }
echo "conv_engine=$engine" >> "$meta"
step nn env OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive NN_BENCH_ENGINES="$engine" nice -n 19 "$build/tests/bench_nn" "$work/nn.json" \
    --step $nn_shape --threads 1,2 --steps "${NN_STEPS:-2}"
: > "$work/det.json"
for t in 1 2; do
    step "det_t$t" nice -n 19 "$build/tests/bench_detector" configs/finetune_deeplesion_mp3d.cfg --name p3d63_det \
        --size $det_size --batch 1 --iters "${DET_ITERS:-2}" --warmup 1 --threads $t --train-only --json "$work/det.json"
done
det_params=$(sed -n 's/.*model params:\([0-9]*\).*/\1/p' "$work/det_t1.log" | head -1)
nn_params=$(sed -n 's/.*"params":\([0-9]*\).*/\1/p' "$work/nn.json" | head -1)
echo "det_params=$det_params nn_params=$nn_params" >> "$meta"

# ---- 3. all-reduce at 2 ranks, shared memory then TCP
: > "$work/allreduce.json"
ar_args=(--model "resnet3d18:$nn_params" --model "p3d63_det:$det_params" --bucket-mb 1 --bucket-mb 25 --bucket-mb 100
         --reps "${AR_REPS:-2}" --overlap-ms 500 --json "$work/allreduce.json")
step ar_shm env OPENBLAS_NUM_THREADS=1 OMPI_MCA_mpi_yield_when_idle=1 nice -n 19 mpirun -np 2 \
    "$build/tests/bench_allreduce" --label shm "${ar_args[@]}"
step ar_tcp env OPENBLAS_NUM_THREADS=1 OMPI_MCA_mpi_yield_when_idle=1 OMPI_MCA_btl=tcp,self nice -n 19 mpirun -np 2 \
    "$build/tests/bench_allreduce" --label tcp "${ar_args[@]}"

# ---- 4. sharding rates of one rank
dl=$data/deeplesion_medium
if [ ! -f "$dl/deeplesion/DL_info.csv" ] || ! ls "$dl"/deeplesion/Images_png_*.zip > /dev/null 2>&1; then
    step synth_dl nice -n 19 "$build/mp3d" synth --scale medium --set synth.datasets=deeplesion --out "$dl"
fi
# A subset of the key slices (every k-th row of DL_info.csv, so all splits occur) over the same zips.
mkdir -p "$work/dl"
ln -s "$dl"/deeplesion/Images_png_*.zip "$work/dl/"
rows=$(($(wc -l < "$dl/deeplesion/DL_info.csv") - 1))
every=$(( rows / ${PP_KEYS:-120} > 1 ? rows / ${PP_KEYS:-120} : 1 ))
awk -v k="$every" 'NR == 1 || (NR - 2) % k == 0' "$dl/deeplesion/DL_info.csv" > "$work/dl/DL_info.csv"
python3 - "$dl/deeplesion" >> "$meta" <<'EOF'
import glob, sys, zipfile
n = b = 0
for z in glob.glob(sys.argv[1] + "/Images_png_*.zip"):
    for i in zipfile.ZipFile(z).infolist():
        if i.filename.endswith(".png"):
            n += 1; b += i.file_size
print(f"dl_pngs={n} dl_png_mean_bytes={b / max(n, 1):.0f}")
EOF
step preprocess nice -n 19 /usr/bin/time -f "time wall:%e user:%U sys:%S maxrss_kb:%M" "$build/mp3d" preprocess \
    configs/preprocess_deeplesion.cfg --set "input.root=$work/dl" --set "output.dir=$work/pp"
rm -rf "$work/pp"
inr=$data/imagenet_realsize
if [ ! -f "$inr/ILSVRC2012_img_train.tar" ]; then
    step synth_in nice -n 19 "$build/mp3d" synth --scale small --set synth.datasets=imagenet --out "$data/imagenet_small"
    step realsize nice -n 19 /usr/bin/python3 tests/bench/scale_imagenet.py "$data/imagenet_small/imagenet" "$inr"
    grep '^imagenet_realsize' "$work/realsize.log" > "$data/imagenet_realsize.txt"
fi
sed 's/^imagenet_realsize //; s/:/=/g; s/ /\n/g' "$data/imagenet_realsize.txt" | sed 's/^/in_/' >> "$meta"
step vdt nice -n 19 /usr/bin/time -f "time wall:%e user:%U sys:%S maxrss_kb:%M" "$build/mp3d" vdt configs/vdt_imagenet.cfg \
    --set "input.root=$inr" --set "output.dir=$work/vdt" --set 'vdt.splits="train"'
rm -rf "$work/vdt"
echo "total_s=$(( $(date +%s) - t_start ))" >> "$meta"

# ---- the model
python3 tests/bench/scale_model.py "$work" "$out/scale.md" "$out/scale.json"
echo "wrote $out/scale.md and $out/scale.json ($(( $(date +%s) - t_start )) s)"
