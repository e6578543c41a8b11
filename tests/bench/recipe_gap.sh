#!/usr/bin/env bash
# Issue 14's learning gap, measured: VDT pre-training on the synthetic ImageNet layout (`small`:
# 10 classes, 400 train / 100 val, 64 px, training crops 56) with configs/demo_pretrain.cfg at
# lr 0.1 on 2 ranks, under four recipes (val top-1 every 5 epochs from metrics.jsonl):
#   v1  demo_pretrain.cfg as it is, lr 0.1 (random resized crop 0.25..1, warm-up 20 its from lr/3)
#   v2  the issue's PyTorch reference recipe: RandomCrop 56 (train.crop_mode = random), Nesterov,
#       no weight decay on norm/bias, warm-up 1 epoch (12 its) from lr/10
#   v3  v2 with the random resized crop of v1
#   v4  v2 with plain momentum and weight decay on every parameter (only crop + warm-up as v2)
# usage: bash tests/bench/recipe_gap.sh BUILD_DIR WORK_DIR     (about 8-20 min per run on 2 cores)
set -euo pipefail
# Users' kernels (issue 15): this machine's environment forces older OpenBLAS kernels
# (OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE) for tests and CI; a benchmark stands for users.
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE
B=${1:?usage: recipe_gap.sh BUILD_DIR WORK_DIR}/mp3d
E=${2:?usage: recipe_gap.sh BUILD_DIR WORK_DIR}
here=$(cd "$(dirname "$0")/../.." && pwd)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
mkdir -p "$E"
"$B" synth "$here/configs/demo.cfg" --set output.dir="$E/data" --set synth.scale=small --set synth.datasets=imagenet >"$E/synth.log" 2>&1
"$B" vdt "$here/configs/demo_vdt_imagenet.cfg" --set input.root="$E/data/imagenet" --set output.dir="$E/vdt" >"$E/vdt.log" 2>&1
C="$here/configs/demo_pretrain.cfg"
common=(--set input.root="$E/vdt" --set train.lr=0.1 --set train.ckpt_every=1000 --set train.val_every=5.0)
ref=(--set train.crop_mode=random --set train.nesterov=true --set train.wd_norm_bias=false
     --set train.warmup_iters=12 --set train.warmup_factor=0.1)
run() { local name=$1; shift; mpirun -np 2 "$B" train "$C" "${common[@]}" "$@" --set output.dir="$E/$name" >"$E/$name.log" 2>&1; }
run v1
run v2 "${ref[@]}"
run v3 "${ref[@]}" --set train.crop_mode=rrc
run v4 --set train.crop_mode=random --set train.warmup_iters=12 --set train.warmup_factor=0.1
for v in v1 v2 v3 v4; do
    printf '%s' "$v"
    grep '"stage":"val"' "$E/$v/metrics.jsonl" | sed 's/.*"epoch":\([0-9]*\),"top1":\([0-9.]*\).*/ ep\1:\2/' | tr -d '\n'
    echo
done
