#!/usr/bin/env bash
# Issue 14 item 5: lesion-detector fine-tuning on the `medium` synthetic cohort within a wall
# budget on both cores (2 ranks), with the demo's recipe (configs/demo_finetune.cfg: window
# [-160, 240], 64 anchors / 64 RoIs sampled per image, lr 0.02 at batch 4, warm-up 50, x0.1 at 2/3
# and 11/12 of train.epochs) at 256 px and the oneDNN convolution engine. The run's "val" split
# is the TEST split (nothing is selected on it): metrics.jsonl holds test Sens@0.5..8 and mFROC
# once per epoch, against step and wall time. Runs one after another, never side by side.
#
#   tests/bench/bench_medium_tta.sh BUILD_DIR WORK_DIR [RUN ...]
#
# RUN: imagenet (VDT ImageNet classification backbone, pre-trained here: 10 epochs, ~40 s)
#      scratch  (no pre-training)      coco (VDT COCO detection pre-training, 2.5 epochs)
#      slices3  (the imagenet run with 3 input slices instead of 9: the paper's 3D-context ablation)
#      p3d      (the imagenet run with the P3D-63 backbone, pre-trained the same way: MP3D vs MR3D)
#      torch    (the imagenet run trained by PyTorch, tests/bench/lesion_tta_torch.py, from mp3d's
#                own initial state of that run: one step at lr 1e-9 written as a checkpoint)
# Default: imagenet scratch. MEDIUM_MINUTES (default 60) caps each fine-tuning run,
# MEDIUM_EPOCHS (default 14) sets its schedule, MEDIUM_EPOCHS_<run> one run's (to give runs of
# different step cost the same wall budget: slices3 steps are ~2.5x cheaper, p3d ~1.2x dearer). Writes results/bench/PREFIX_{table.md,wall.svg,
# steps.svg,sens4_wall.svg}, PREFIX = MEDIUM_PREFIX (default medium_tta). Needs ~6 GB in WORK_DIR.
# Not a test.
set -eu
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE   # users' kernels (issue 15)
BUILD=${1:?usage: bench_medium_tta.sh BUILD_DIR WORK_DIR [RUN ...]}
W=${2:?usage: bench_medium_tta.sh BUILD_DIR WORK_DIR [RUN ...]}
shift 2
RUNS=${*:-imagenet scratch}
MIN=${MEDIUM_MINUTES:-60}
EPOCHS=${MEDIUM_EPOCHS:-14}
PREFIX=${MEDIUM_PREFIX:-medium_tta}
SRC=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=$(cd "$BUILD" && pwd)
B=$BUILD/mp3d
C=$SRC/configs
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
mkdir -p "$W"
W=$(cd "$W" && pwd)
cd "$W"
echo "cpu: $(lscpu | sed -n 's/^Model name:[[:space:]]*//p') threads/rank: 1 ranks: 2 engine: dnnl"

# 1. data: medium cohort; DeepLesion resized to 256 (lesions ~5-37 px), ImageNet 64 px, COCO 128 px
case " $RUNS " in *" coco "*) sets=deeplesion,imagenet,coco ;; *) sets=deeplesion,imagenet ;; esac
if [ ! -f data/deeplesion/DL_info.csv ] || [ ! -d data/imagenet ]; then
    mpirun -np 2 "$B" synth --out data --scale medium --datasets "$sets" >synth.log 2>&1
fi
[ -f pp256/train.h5 ] || mpirun -np 2 "$B" preprocess "$C/demo_preprocess.cfg" --set input.root=data/deeplesion \
    --set output.dir=pp256 --set preprocess.size=256 >pp.log 2>&1
case " $RUNS " in *" slices3 "*)
    [ -f pp256s3/train.h5 ] || mpirun -np 2 "$B" preprocess "$C/demo_preprocess.cfg" --set input.root=data/deeplesion \
        --set output.dir=pp256s3 --set preprocess.size=256 --set preprocess.num_slices=3 >pp_s3.log 2>&1 ;;
esac
for d in pp256 pp256s3; do
    [ -f "$d/train.h5" ] || continue
    mkdir -p "${d}_tv"
    ln -sf "../$d/train.h5" "${d}_tv/train.h5"
    ln -sf "../$d/test.h5" "${d}_tv/val.h5"
done

# 2. pre-training (2 ranks, dnnl)
init() {
    case "$1" in
        scratch) echo "" ;;
        imagenet | slices3 | p3d)
            local arch=resnet3dv1c18 out=$W/pre_imagenet
            if [ "$1" = p3d ]; then arch=p3d63 out=$W/pre_imagenet_p3d; fi
            [ -f vdt_imagenet/imagenet_train.h5 ] || mpirun -np 2 "$B" vdt "$C/demo_vdt_imagenet.cfg" \
                --set input.root=data/imagenet --set output.dir=vdt_imagenet >vdti.log 2>&1
            [ -d "$out" ] || mpirun -np 2 "$B" train "$C/demo_pretrain.cfg" --set input.root="$W/vdt_imagenet" \
                --set output.dir="$out" --set model.arch=$arch --set train.epochs=10 --set train.val_every=2 \
                --set nn.conv_engine=dnnl >"$(basename "$out").log" 2>&1
            echo "$out" ;;
        coco)
            [ -d data/coco ] || mpirun -np 2 "$B" synth --out data --scale medium --datasets coco >synth_coco.log 2>&1
            [ -f vdt_coco/coco_train.h5 ] || mpirun -np 2 "$B" vdt "$C/demo_vdt_coco.cfg" \
                --set input.root=data/coco --set output.dir=vdt_coco >vdtc.log 2>&1
            [ -d pre_coco ] || mpirun -np 2 "$B" train "$C/demo_pretrain_coco.cfg" --set input.root="$W/vdt_coco" \
                --set output.dir="$W/pre_coco" --set train.epochs=2.5 --set nn.conv_engine=dnnl >pre_coco.log 2>&1
            echo "$W/pre_coco" ;;
        *) echo "bench_medium_tta.sh: unknown run '$1' (imagenet | scratch | coco | slices3 | p3d)" >&2; return 1 ;;
    esac
}

# 3. fine-tuning, one run at a time on both cores
args=()
for r in $RUNS; do
    if [ "$r" = torch ]; then
        from=$(init imagenet)
        rm -rf ft_torch ft_torch_init
        mpirun -np 2 "$B" train "$C/demo_finetune.cfg" --set input.root="$W/pp256_tv" --set output.dir="$W/ft_torch_init" \
            --set model.init_from="$from" --set "det.train_sizes=[256]" --set det.test_size=256 --set train.lr=1e-9 \
            --set train.max_steps=1 --set train.ckpt_every=1 --set train.val_every=0 >ft_torch_init.log 2>&1
        OMP_NUM_THREADS=${MEDIUM_TORCH_THREADS:-2} /usr/bin/python3 "$SRC/tests/bench/lesion_tta_torch.py" train \
            "$W/ft_torch_init/ckpt_00000001.h5" "$W/pp256_tv" "$W/data/deeplesion/DL_info.csv" "$W/ft_torch" \
            --mp3d "$B" --threads "${MEDIUM_TORCH_THREADS:-2}" --epochs "$EPOCHS" --minutes "$MIN" >ft_torch.log 2>&1
        args+=("pytorch=$W/ft_torch")
        continue
    fi
    from=$(init "$r")
    data=pp256_tv arch=resnet3dv1c18
    [ "$r" = slices3 ] && data=pp256s3_tv
    [ "$r" = p3d ] && arch=p3d63
    ep_var=MEDIUM_EPOCHS_$r
    ep=${!ep_var:-$EPOCHS}
    ve=$(awk -v a="$ep" -v b="$EPOCHS" 'BEGIN { print (a > b ? a / b : 1) }')   # ~8 test points a run
    rm -rf "ft_$r"
    mpirun -np 2 "$B" train "$C/demo_finetune.cfg" --set input.root="$W/$data" --set output.dir="$W/ft_$r" \
        --set model.arch=$arch --set model.init_from="$from" --set "det.train_sizes=[256]" --set det.test_size=256 \
        --set train.epochs="$ep" --set train.max_minutes="$MIN" --set train.val_every="$ve" \
        --set train.ckpt_every=500 --set train.ckpt_keep=3 --set eval.bootstrap=0 --set nn.conv_engine=dnnl \
        >"ft_$r.log" 2>&1
    args+=("$r=$W/ft_$r")
done
title="medium cohort, mp3d 2 ranks, dnnl"
case " $RUNS " in *" torch "*) title="$title; PyTorch 2 threads" ;; esac
CURVES_SENS4=1 /usr/bin/python3 "$SRC/tests/bench/finetune_curves.py" "$SRC/results/bench/$PREFIX" "$title" "${args[@]}"
