#!/usr/bin/env bash
# Training-step parity with PyTorch (issue 14, 1a): ResNet3DV1c-18 (BatchNorm, width 0.25) from
# PyTorch-written initial parameters (model.init_from), the whole 16-sample training set as one
# batch of (16, 1, 3, 32, 32), augmentation off, SGD momentum 0.9 + Nesterov, weight decay on
# conv/linear weights only (train.wd_norm_bias = false), linear warm-up + cosine, label smoothing
# 0.1, 20 steps on 1 rank and on 2 ranks with sync BatchNorm, nn.conv_engine = "gemm" (and, in builds with oneDNN, on 1 rank
# with nn.conv_engine = "dnnl" and on 2 ranks with "auto", whose ranks must adopt rank 0's engine
# choices). The reference is the same recipe in PyTorch float64; every step's loss,
# the final parameters and BatchNorm buffers must agree to a relative 1e-4, the momentum buffers
# to 1e-2 (tests/torch_parity.py prints the figures beside PyTorch float32 vs float64).
# Why lr 1e-3 and wd 5e-2: at the recipe's lr this 16-sample problem is chaotic — a ReLU whose
# input is within float32 rounding of 0 flips between two float32 codes, and PyTorch float32
# itself leaves its float64 trajectory by 1e-3..1e-1 within 20 steps — so parity is checked
# where the trajectory is well conditioned; wd 5e-2 makes a wrong norm/bias exemption visible.
# TORCH_PARITY_PERTURB=momentum|nesterov|wd_exempt|warmup|smoothing|order changes the PyTorch
# side only: the test must then fail (order: must still pass). Needs python3-torch and
# python3-h5py; skipped (77) without them.
set -u
TOOL=${1:?usage: test_torch_parity.sh TRAIN_TOOL}
BIN=${MP3D_BIN:?}
PY=/usr/bin/python3
HERE=$(cd "$(dirname "$0")" && pwd)
$PY -c "import torch, h5py" 2>/dev/null || { echo "SKIP: python3-torch / python3-h5py not installed"; exit 77; }
T=$(mktemp -d /tmp/mp3d_parity.XXXXXX)
trap 'rm -rf "$T"' EXIT

N=16 S=32 CLASSES=5 ARCH=resnet3dv1c18 WIDTH=0.25 MEAN=114.495 STD=57.63
# The recipe (overridable from the environment when investigating by hand).
: "${STEPS:=20}" "${LR:=0.001}" "${MOM:=0.9}" "${NESTEROV:=true}" "${WD:=0.05}" "${WNB:=false}" "${WARM:=5}"
: "${WFACTOR:=0.1}" "${EPS:=0.1}"
"$TOOL" make-shard "$T/data" $N 4 $S $CLASSES 7 >/dev/null || exit 1
$PY "$HERE/torch_parity.py" init "$T/init.h5" $ARCH $WIDTH bn 4 $CLASSES 3 || exit 1
cat >"$T/parity.cfg" <<EOF
input = { root = "$T/data"; };
output = { dir = "$T/mp3d"; };
model = { arch = "$ARCH"; width = $WIDTH; norm = "bn"; num_classes = $CLASSES; init_from = "$T/init.h5"; };
train = {
  batch = $N; lr = $LR; lr_batch = $N; max_steps = $STEPS; schedule = "cosine";
  warmup_iters = $WARM; warmup_factor = $WFACTOR;
  momentum = $MOM; nesterov = $NESTEROV; weight_decay = $WD; wd_norm_bias = $WNB;
  label_smoothing = $EPS; mean = $MEAN; std = $STD;
  crop = $S; crop_mode = "center"; flip = false; slice_shuffle = false;
  val_every = 0.0; ckpt_every = $STEPS; log_every = 1;
};
EOF
cat >"$T/parity.json" <<EOF
{"data": "$T/data", "init": "$T/init.h5", "arch": "$ARCH", "width": $WIDTH,
 "norm": "bn", "groups": 4, "classes": $CLASSES, "batch": $N, "lr": $LR, "lr_batch": $N, "steps": $STEPS,
 "min_lr": 0.0, "warmup_iters": $WARM, "warmup_factor": $WFACTOR, "momentum": $MOM, "nesterov": $NESTEROV,
 "weight_decay": $WD, "wd_norm_bias": $WNB, "label_smoothing": $EPS, "mean": $MEAN, "std": $STD,
 "tol": 1e-4, "tol_state": 1e-2,
 "mp3d_dirs": [{"dir": "$T/mp3d", "label": "np1"}, {"dir": "$T/mp3d2", "label": "np2_syncbn"}]}
EOF
# the gemm engine (the reference path) set explicitly: the default is dnnl since 2026-12-05
"$BIN" train "$T/parity.cfg" --set nn.conv_engine=gemm >"$T/mp3d.log" 2>&1 || { cat "$T/mp3d.log"; echo "FAIL: mp3d train"; exit 1; }
# 2 ranks with synchronised BatchNorm compute the same step as 1 rank (8 samples each, loss scaled
# by the local share, gradients all-reduced): the same PyTorch run is their reference too.
mpirun -np 2 "$BIN" train "$T/parity.cfg" --set output.dir="$T/mp3d2" --set train.sync_bn=true --set nn.conv_engine=gemm >"$T/mp3d2.log" 2>&1 ||
    { cat "$T/mp3d2.log"; echo "FAIL: mp3d train on 2 ranks"; exit 1; }
# oneDNN engines (issue 15 item 3): the same reference, when the build has oneDNN
if grep -q "onednn:built" "$T/mp3d.log"; then
    "$BIN" train "$T/parity.cfg" --set output.dir="$T/mp3d_dnnl" --set nn.conv_engine=dnnl >"$T/dnnl.log" 2>&1 ||
        { cat "$T/dnnl.log"; echo "FAIL: mp3d train, engine dnnl"; exit 1; }
    mpirun -np 2 "$BIN" train "$T/parity.cfg" --set output.dir="$T/mp3d_auto2" --set train.sync_bn=true \
        --set nn.conv_engine=auto >"$T/auto2.log" 2>&1 || { cat "$T/auto2.log"; echo "FAIL: mp3d train on 2 ranks, engine auto"; exit 1; }
    grep -q "conv: engine:dnnl onednn:built omp_wait_policy:${OMP_WAIT_POLICY:-passive}" "$T/dnnl.log" ||
        { grep "conv: engine" "$T/dnnl.log"; echo "FAIL: engine dnnl / OMP_WAIT_POLICY not set"; exit 1; }
    n_auto=$(grep -c "engine auto .* -> " "$T/auto2.log")
    grep "ranks adopt rank 0" "$T/auto2.log" || { echo "FAIL: no engine agreement logged on 2 ranks"; exit 1; }
    echo "engine auto on 2 ranks: $n_auto decisions logged; $(grep -c -- '-> dnnl' "$T/auto2.log") dnnl"
    [ "$n_auto" -ge 2 ] || { echo "FAIL: engine auto logged no decisions"; exit 1; }
    sed -i 's|"label": "np2_syncbn"}\]|"label": "np2_syncbn"}, {"dir": "'"$T"'/mp3d_dnnl", "label": "np1_dnnl"}, {"dir": "'"$T"'/mp3d_auto2", "label": "np2_syncbn_auto"}]|' "$T/parity.json"
    grep -q np2_syncbn_auto "$T/parity.json" || { echo "FAIL: parity.json not extended"; exit 1; }
fi
grep -E "init_from: file|nesterov" "$T/mp3d.log"
$PY "$HERE/torch_parity.py" run "$T/parity.json" ${TORCH_PARITY_PERTURB:+--perturb $TORCH_PARITY_PERTURB}
