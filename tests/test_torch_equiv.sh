#!/usr/bin/env bash
# An mp3d checkpoint loads into the equivalent PyTorch model by name (strict), and PyTorch
# computes the same logits as `mp3d infer` — for ResNet3DV1c-18 with BatchNorm (trained a few
# steps, so running statistics matter) and ResNet3D-18 with GroupNorm. Needs Debian's
# python3-torch and python3-h5py; skipped (77) without them.
set -u
TOOL=${1:?usage: test_torch_equiv.sh TRAIN_TOOL}
BIN=${MP3D_BIN:?}
PY=/usr/bin/python3
$PY -c "import torch, h5py" 2>/dev/null || { echo "SKIP: python3-torch / python3-h5py not installed"; exit 77; }
T=$(mktemp -d /tmp/mp3d_torch.XXXXXX)
trap 'rm -rf "$T"' EXIT
fail=0
"$TOOL" make-shard "$T/data" 32 12 24 5 3 >/dev/null || exit 1
"$TOOL" make-input "$T/data" 20 114.495 57.63 "$T/in.h5" || exit 1
for spec in "resnet3dv1c18 0.25 bn 4" "resnet3d18 0.125 gn 4"; do
    set -- $spec
    printf 'input = { root = "%s/data"; };\nmodel = { arch = "%s"; width = %s; norm = "%s"; gn_groups = %s; num_classes = 5; };\ntrain = { batch = 8; crop = 20; max_steps = 6; ckpt_every = 6; lr = 0.05; lr_batch = 8; val_every = 0.0; };\n' \
        "$T" "$1" "$2" "$3" "$4" >"$T/$1.cfg"
    mpirun -np 2 "$BIN" train "$T/$1.cfg" --set output.dir="$T/$1" >"$T/$1.log" 2>&1 || { echo "FAIL train $1"; fail=$((fail+1)); continue; }
    "$BIN" infer --checkpoint "$T/$1/ckpt_00000006.h5" --input "$T/in.h5" --output "$T/$1.out.h5" >>"$T/$1.log" 2>&1 || { echo "FAIL infer $1"; fail=$((fail+1)); continue; }
    if $PY "$(dirname "$0")/torch_equiv.py" "$T/$1/ckpt_00000006.h5" "$T/in.h5" "$T/$1.out.h5" "$1" "$2" "$3" "$4" 5; then
        echo "ok   $1 ($3): PyTorch == mp3d infer"
    else
        echo "FAIL $1 ($3)"; fail=$((fail+1))
    fi
done
echo "test_torch_equiv: $fail failed"
[ $fail -eq 0 ]
