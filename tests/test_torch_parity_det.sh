#!/usr/bin/env bash
# Training-step parity with PyTorch (issue 14, 1b): the DETECTOR — ResNet3DV1c-18 x 0.125 (GN 4)
# + GTM + FPN (16 channels) + RPN + RoIAlign two-FC box head (fc 32) from PyTorch-written initial
# parameters (model.init_from), the 6 training samples of the synthetic tiny cohort stored at
# 9 x 64 x 64 (preprocess.size = 64 = det.train_sizes: no resize) as one batch, augmentation
# off, SGD momentum 0.9 + Nesterov, wd on conv/linear weights only, linear warm-up + cosine,
# 20 steps on 1 rank. The reference is tests/torch_parity_det.py: the mmdet 2.x two-stage recipe
# written independently in PyTorch float64. Every step's total loss and the final parameters
# must agree to a relative 1e-4, the momentum buffers to 1e-2, and each of the four loss terms
# (metrics.jsonl loss_rpn_cls, loss_rpn_reg, loss_roi_cls, loss_roi_reg) at every step to 1e-3:
# roi_cls falls to 0.04 by step 20 and its float32 rounding alone is 1.1e-4 relative (PyTorch
# float32 vs float64 measures the same 1.1e-4), so the terms get the looser, documented bound.
# At 2 ranks (3 images each) the reference is PyTorch float32 with mp3d's data-parallel recipe.
# The 1- and 2-rank runs use the default convolution engine (dnnl); a third, 1 rank with
# nn.conv_engine = gemm, is held to the same float64 reference.
# Sampling is made deterministic (a DOCUMENTED recipe difference, see torch_parity_det.py): the
# RPN and RoI sample sizes exceed the anchors / candidates (every positive and negative taken),
# rpn_pre_nms / rpn_post_nms exceed the anchors and det.rpn_nms_iou = 1.0 keeps every proposal.
# TORCH_PARITY_PERTURB=momentum|nesterov|wd_exempt|warmup changes the PyTorch side only: the test
# must then fail. Needs python3-torch, torchvision and python3-h5py; skipped (77) without them.
set -u
BIN=${MP3D_BIN:?}
SRC=${MP3D_SOURCE_DIR:?}
PY=/usr/bin/python3
HERE=$(cd "$(dirname "$0")" && pwd)
$PY -c "import torch, torchvision, h5py" 2>/dev/null || { echo "SKIP: python3-torch / torchvision / h5py not installed"; exit 77; }
T=$(mktemp -d /tmp/mp3d_parity_det.XXXXXX)
trap 'rm -rf "$T"' EXIT

S=64 ARCH=resnet3dv1c18 WIDTH=0.125 GN=4 FPN=16 FC=32 WLO=-160.0 WHI=240.0
: "${STEPS:=20}" "${LR:=0.01}" "${MOM:=0.9}" "${NESTEROV:=true}" "${WD:=0.05}" "${WNB:=false}" "${WARM:=5}"
: "${WFACTOR:=0.1}"
"$BIN" synth --out "$T/syn" --scale tiny --set synth.datasets=deeplesion >"$T/synth.log" 2>&1 ||
    { cat "$T/synth.log"; echo "FAIL synth"; exit 1; }
"$BIN" preprocess "$SRC/configs/demo_preprocess.cfg" --set input.root="$T/syn/deeplesion" --set output.dir="$T/pp" \
    --set preprocess.size=$S --set preprocess.splits=train >"$T/pp.log" 2>&1 || { cat "$T/pp.log"; echo "FAIL preprocess"; exit 1; }
# TORCH_PARITY_DET_MODE=parity (default): 1 rank vs PyTorch float64, 2 ranks vs PyTorch float32 (data-parallel
# recipe: rank shares of the trainer's epoch permutation, each normalised on its own).
# TORCH_PARITY_DET_MODE=perturb: 1 rank, and every perturbation of PyTorch's recipe (momentum 0.85,
# weight decay on norm/bias too, no warm-up; nesterov by hand) must FAIL the comparison.
MODE=${TORCH_PARITY_DET_MODE:-parity}
DIRS2=""
[ "$MODE" = parity ] && DIRS2=", {\"dir\": \"$T/mp3d2\", \"label\": \"np2\", \"ranks\": 2}, {\"dir\": \"$T/mp3d_gemm\", \"label\": \"np1_gemm\", \"ranks\": 1}"
N=$($PY -c "import h5py; print(h5py.File('$T/pp/train.h5')['images'].shape[0])")
cat >"$T/parity.json" <<EOF
{"data": "$T/pp", "init": "$T/init.h5", "arch": "$ARCH", "width": $WIDTH, "gn_groups": $GN, "depth": 9,
 "size": $S, "window": [$WLO, $WHI], "fpn": $FPN, "fc": $FC, "ratios": [0.5, 1.0, 2.0], "anchor_scale": 2.0,
 "rpn_post_nms": 65536, "batch": $N, "lr": $LR, "lr_batch": $N, "steps": $STEPS, "min_lr": 0.0,
 "warmup_iters": $WARM, "warmup_factor": $WFACTOR, "momentum": $MOM, "nesterov": $NESTEROV,
 "weight_decay": $WD, "wd_norm_bias": $WNB, "seed": 1, "tol": 1e-4, "tol_terms": 1e-3, "tol_state": 1e-2,
 "mp3d_dirs": [{"dir": "$T/mp3d", "label": "np1", "ranks": 1}$DIRS2]}
EOF
$PY "$HERE/torch_parity_det.py" init "$T/init.h5" "$T/parity.json" 5 || exit 1
cat >"$T/parity.cfg" <<EOF
input = { root = "$T/pp"; };
output = { dir = "$T/mp3d"; };
model = { arch = "$ARCH"; width = $WIDTH; norm = "gn"; gn_groups = $GN; num_classes = 1; init_from = "$T/init.h5"; };
train = {
  task = "detect"; batch = $N; lr = $LR; lr_batch = $N; max_steps = $STEPS; schedule = "cosine";
  warmup_iters = $WARM; warmup_factor = $WFACTOR; clip_grad = 0.0;
  momentum = $MOM; nesterov = $NESTEROV; weight_decay = $WD; wd_norm_bias = $WNB;
  val_every = 0.0; ckpt_every = $STEPS; log_every = 1;
};
det = { train_sizes = [$S]; test_size = $S; window = [$WLO, $WHI]; flip = false; zflip = false;
        fpn_channels = $FPN; fc_dim = $FC; anchor_ratios = [0.5, 1.0, 2.0]; anchor_scale = 2.0;
        rpn_samples = 65536; roi_samples = 65536; rpn_pre_nms = 65536; rpn_post_nms = 65536; rpn_nms_iou = 1.0; };
EOF
t0=$(date +%s.%N); "$BIN" train "$T/parity.cfg" >"$T/mp3d.log" 2>&1 || { cat "$T/mp3d.log"; echo "FAIL: mp3d train"; exit 1; }
echo "mp3d train: $(awk -v a="$t0" -v b="$(date +%s.%N)" "BEGIN{printf \"%.1f\", b - a}") s"; grep -E "init_from: file" "$T/mp3d.log" | sed 's/^.*INFO //'
grep -qE "init_from: file:.* absent:0 shape_mismatch:0 unused_in_file:0" "$T/mp3d.log" ||
    { echo "FAIL: init_from did not load every tensor by name"; exit 1; }
if [ "$MODE" = perturb ]; then
    exec $PY "$HERE/torch_parity_det.py" perturbations "$T/parity.json" momentum,wd_exempt,warmup
fi
mpirun -np 2 "$BIN" train "$T/parity.cfg" --set output.dir="$T/mp3d2" >"$T/mp3d2.log" 2>&1 ||
    { cat "$T/mp3d2.log"; echo "FAIL: mp3d train on 2 ranks"; exit 1; }
# the reference engine too (the runs above use the default, dnnl): 1 rank with nn.conv_engine = gemm
"$BIN" train "$T/parity.cfg" --set output.dir="$T/mp3d_gemm" --set nn.conv_engine=gemm >"$T/mp3d_gemm.log" 2>&1 ||
    { cat "$T/mp3d_gemm.log"; echo "FAIL: mp3d train with the gemm engine"; exit 1; }
grep -q 'conv_engine="gemm"' "$T/mp3d_gemm.log" || { echo "FAIL: the gemm run did not report nn.conv_engine = gemm"; exit 1; }
$PY "$HERE/torch_parity_det.py" run "$T/parity.json" ${TORCH_PARITY_PERTURB:+--perturb $TORCH_PARITY_PERTURB}
