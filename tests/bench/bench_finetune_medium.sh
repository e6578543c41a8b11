#!/usr/bin/env bash
# Lesion-detector fine-tuning on the `medium` synthetic cohort from three starting points, with an
# equal training budget (the same steps, batch, schedule and network; one rank each):
#   scratch   no pre-training
#   imagenet  VDT ImageNet-classification pre-training (classify task on mp3d vdt ImageNet shards)
#   coco      VDT COCO-detection pre-training (detect_coco task on mp3d vdt COCO shards)
# Every 0.5 epoch the run scores the TEST split with the DeepLesion FROC protocol (the run's
# "validation" split is pointed at test.h5: nothing is selected on it, the figures are the
# curve), so metrics.jsonl holds test Sens@0.5/1/2/4 and mFROC over steps and wall time.
# Results: results/bench/finetune_medium.md (+ _table.md, _wall.svg, _steps.svg).
#
#   tests/bench/bench_finetune_medium.sh BUILD_DIR WORK_DIR [STEPS]
#
# Needs ~7 GB in WORK_DIR (medium synth 5 GB, shards 1.2 GB). Takes hours on
# 2 cores: synth + shards ~5 min, pre-training ~10 + ~25 min, each fine-tuning run ~40-60 min
# (two at a time on 2 cores). Not a test.
set -eu
# Users' kernels (issue 15): this machine's environment forces older OpenBLAS kernels
# (OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE) for tests and CI; a benchmark stands for users.
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE
BUILD=${1:?usage: bench_finetune_medium.sh BUILD_DIR WORK_DIR [STEPS]}
W=${2:?usage: bench_finetune_medium.sh BUILD_DIR WORK_DIR [STEPS]}
STEPS=${3:-400}
SRC=$(cd "$(dirname "$0")/../.." && pwd)
B=$BUILD/mp3d
C=$SRC/configs
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
mkdir -p "$W"
cd "$W"

# 1. data: medium cohort, DeepLesion resized to 256 (lesions ~5-37 px), VDT ImageNet 64 px, COCO 128 px
[ -f data/deeplesion/DL_info.csv ] || mpirun -np 2 --oversubscribe "$B" synth --out data --scale medium >synth.log 2>&1
[ -f pp256/train.h5 ] || mpirun -np 2 --oversubscribe "$B" preprocess "$C/demo_preprocess.cfg" --set input.root=data/deeplesion \
    --set output.dir=pp256 --set preprocess.size=256 >pp.log 2>&1
[ -f vdt_imagenet/imagenet_train.h5 ] || mpirun -np 2 --oversubscribe "$B" vdt "$C/demo_vdt_imagenet.cfg" \
    --set input.root=data/imagenet --set output.dir=vdt_imagenet >vdti.log 2>&1
[ -f vdt_coco/coco_train.h5 ] || mpirun -np 2 --oversubscribe "$B" vdt "$C/demo_vdt_coco.cfg" --set input.root=data/coco \
    --set output.dir=vdt_coco >vdtc.log 2>&1
mkdir -p pp256_tv
ln -sf ../pp256/train.h5 pp256_tv/train.h5
ln -sf ../pp256/test.h5 pp256_tv/val.h5

# 2. pre-training (one rank each, side by side)
"$B" train "$C/demo_pretrain.cfg" --set input.root="$W/vdt_imagenet" --set output.dir="$W/pre_imagenet" \
    --set train.epochs=10 --set train.val_every=2 >pre_imagenet.log 2>&1 &
"$B" train "$C/demo_pretrain_coco.cfg" --set input.root="$W/vdt_coco" --set output.dir="$W/pre_coco" \
    --set train.epochs=2.5 >pre_coco.log 2>&1 &
wait

# 3. fine-tuning, equal budget
ft() {
    local name=$1
    shift
    "$B" train "$C/demo_finetune.cfg" --set input.root="$W/pp256_tv" --set train.max_steps="$STEPS" --set train.max_minutes=0 \
        --set train.val_every=0.5 --set train.ckpt_every=100 --set train.ckpt_keep=10 --set eval.bootstrap=0 \
        --set output.dir="$W/ft_$name" "$@" >"ft_$name.log" 2>&1
}
ft scratch &
ft imagenet --set model.init_from="$W/pre_imagenet" &
wait
ft coco --set model.init_from="$W/pre_coco"

/usr/bin/python3 "$SRC/tests/bench/finetune_curves.py" "$SRC/results/bench/finetune_medium" "medium cohort" \
    scratch="$W/ft_scratch" imagenet-VDT="$W/ft_imagenet" coco-VDT="$W/ft_coco"
