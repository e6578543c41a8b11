#!/usr/bin/env bash
# Time-to-accuracy of VDT classification pre-training, mp3d beside PyTorch (issue 14, item 2).
# Same data (the `small` synthetic ImageNet layout through `mp3d vdt`: 10 classes, 400 train / 100
# val, 64-px pseudo-volumes), same initial parameters (PyTorch's default init, loaded by both
# sides), same recipe (configs/demo_pretrain.cfg as logged by the mp3d run: RandomCrop 56, flip,
# slice shuffle, Nesterov lr 0.1 batch 32, no weight decay on norm/bias, 1 warm-up epoch + cosine,
# label smoothing 0.1, 40 epochs), both on the same 2 cores: mp3d as 2 MPI ranks x 1 BLAS thread
# (as the demo runs) and as 1 rank x 2 threads (TTA_ONE_RANK=0 skips it), PyTorch as one process
# with 2 intra-op threads. Validation every 2 epochs.
# Stated recipe difference: mp3d's 2 ranks normalise each half-batch of 16 by its own BatchNorm
# statistics (sync_bn = false, as in the demo); PyTorch's one process, like mp3d's 1-rank run,
# normalises the batch of 32.
# Users' kernels: OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are unset for the runs (issue 15).
# The base mp3d runs set nn.conv_engine=gemm (the default until 2026-12-05, now dnnl);
# TTA_ENGINES="dnnl" adds both mp3d runs again with nn.conv_engine=dnnl.
#
# usage: bash tests/bench/tta_classify.sh BUILD_DIR WORK_DIR [SEEDS]    (about 12 min per seed on
#        2 quiet cores; TTA_REPORT_ONLY=1 re-writes the report from the runs in WORK_DIR)
# writes results/bench/tta_classify.md, tta_classify_table.md, tta_classify_{wall,images}.svg
set -euo pipefail
B=$(cd "${1:?usage: tta_classify.sh BUILD_DIR WORK_DIR [SEEDS]}" && pwd)/mp3d
E=${2:?usage: tta_classify.sh BUILD_DIR WORK_DIR [SEEDS]}
SEEDS=${3:-1}
here=$(cd "$(dirname "$0")/../.." && pwd)
PY=/usr/bin/python3
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE
mkdir -p "$E"
E=$(cd "$E" && pwd)
if [ ! -f "$E/vdt/imagenet_train.h5" ]; then
    "$B" synth "$here/configs/demo.cfg" --set output.dir="$E/data" --set synth.scale=small \
        --set synth.datasets=imagenet >"$E/synth.log" 2>&1
    "$B" vdt "$here/configs/demo_vdt_imagenet.cfg" --set input.root="$E/data/imagenet" \
        --set output.dir="$E/vdt" >"$E/vdt.log" 2>&1
fi
runs=()
TIMEFORMAT="%R %U %S"   # wall, user and system CPU seconds of the run and its children (cpu.txt)
for seed in $SEEDS; do
    if [ "${TTA_REPORT_ONLY:-0}" = 1 ]; then   # re-write the report from the runs already in WORK
        runs+=("mp3d-seed$seed=$E/mp3d_$seed" "pytorch-seed$seed=$E/torch_$seed")
        [ -d "$E/mp3d1_$seed" ] && runs+=("mp3d-1rank-seed$seed=$E/mp3d1_$seed")
        for eng in ${TTA_ENGINES:-}; do
            runs+=("mp3d-$eng-seed$seed=$E/mp3d_${eng}_$seed" "mp3d-$eng-1rank-seed$seed=$E/mp3d1_${eng}_$seed")
        done
        continue
    fi
    $PY "$here/tests/bench/tta_classify.py" init "$E/init_$seed.h5" 0.25 10 "$seed"
    rm -rf "$E/mp3d_$seed" && mkdir -p "$E/mp3d_$seed"
    { time mpirun -np 2 "$B" train "$here/configs/demo_pretrain.cfg" --set input.root="$E/vdt" \
        --set output.dir="$E/mp3d_$seed" --set model.init_from="$E/init_$seed.h5" --set nn.conv_engine=gemm \
        --set run.seed="$seed" --set train.val_every=2.0 --set train.ckpt_every=100000 \
        >"$E/mp3d_$seed.log" 2>&1 ; } 2>"$E/mp3d_$seed/cpu.txt"
    mkdir -p "$E/torch_$seed"
    $PY "$here/tests/bench/tta_classify.py" config "$E/mp3d_$seed.log" "$E/vdt" "$E/init_$seed.h5" \
        "$E/torch_$seed/metrics.jsonl" 2 "$seed" >"$E/torch_$seed.json"
    { time $PY "$here/tests/bench/tta_classify.py" train "$E/torch_$seed.json" >"$E/torch_$seed.log" 2>&1 ; } 2>"$E/torch_$seed/cpu.txt"
    runs+=("mp3d-seed$seed=$E/mp3d_$seed" "pytorch-seed$seed=$E/torch_$seed")
    if [ "${TTA_ONE_RANK:-1}" = 1 ]; then   # mp3d as one process with 2 threads: BatchNorm over 32, as PyTorch
        rm -rf "$E/mp3d1_$seed" && mkdir -p "$E/mp3d1_$seed"
        { time OPENBLAS_NUM_THREADS=2 "$B" train "$here/configs/demo_pretrain.cfg" --set input.root="$E/vdt" \
            --set output.dir="$E/mp3d1_$seed" --set model.init_from="$E/init_$seed.h5" --set train.threads=2 \
            --set nn.conv_engine=gemm --set run.seed="$seed" --set train.val_every=2.0 --set train.ckpt_every=100000 \
            >"$E/mp3d1_$seed.log" 2>&1 ; } 2>"$E/mp3d1_$seed/cpu.txt"
        runs+=("mp3d-1rank-seed$seed=$E/mp3d1_$seed")
    fi
    for eng in ${TTA_ENGINES:-}; do   # the same two mp3d runs with another nn.conv_engine (e.g. dnnl)
        rm -rf "$E/mp3d_${eng}_$seed" "$E/mp3d1_${eng}_$seed" && mkdir -p "$E/mp3d_${eng}_$seed" "$E/mp3d1_${eng}_$seed"
        { time mpirun -np 2 "$B" train "$here/configs/demo_pretrain.cfg" --set input.root="$E/vdt" \
            --set output.dir="$E/mp3d_${eng}_$seed" --set model.init_from="$E/init_$seed.h5" --set nn.conv_engine="$eng" \
            --set run.seed="$seed" --set train.val_every=2.0 --set train.ckpt_every=100000 \
            >"$E/mp3d_${eng}_$seed.log" 2>&1 ; } 2>"$E/mp3d_${eng}_$seed/cpu.txt"
        { time OPENBLAS_NUM_THREADS=2 "$B" train "$here/configs/demo_pretrain.cfg" --set input.root="$E/vdt" \
            --set output.dir="$E/mp3d1_${eng}_$seed" --set model.init_from="$E/init_$seed.h5" --set train.threads=2 \
            --set nn.conv_engine="$eng" --set run.seed="$seed" --set train.val_every=2.0 --set train.ckpt_every=100000 \
            >"$E/mp3d1_${eng}_$seed.log" 2>&1 ; } 2>"$E/mp3d1_${eng}_$seed/cpu.txt"
        runs+=("mp3d-$eng-seed$seed=$E/mp3d_${eng}_$seed" "mp3d-$eng-1rank-seed$seed=$E/mp3d1_${eng}_$seed")
    done
done
[ "${TTA_REPORT_ONLY:-0}" = 1 ] || cut -d' ' -f1-3 /proc/loadavg >"$E/loadavg.txt"   # at the end of the runs
out="$here/results/bench/tta_classify"
$PY "$here/tests/bench/tta_classify.py" report "$out" "VDT pre-training, 2 cores" "${runs[@]}" >/dev/null
{
    echo "# Time-to-accuracy: VDT classification pre-training, mp3d vs PyTorch"
    echo
    echo "Command: \`bash tests/bench/tta_classify.sh build WORK \"$SEEDS\"\` ($(date -u +%Y-%m-%d))."
    echo "Machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, load average (1, 5, 15 min) at the end of the runs: $(cat "$E/loadavg.txt" 2>/dev/null || echo not recorded)."
    echo "mp3d: $(grep -m1 'INFO blas:' "$E/mp3d_${SEEDS%% *}.log" | sed 's/.*INFO blas: //'), 2 ranks; convolution engine gemm (vol2col + sgemm, set explicitly)${TTA_ENGINES:+, and the runs named mp3d-<engine> with nn.conv_engine=<engine> ($TTA_ENGINES)};"
    echo "PyTorch: $($PY -c 'import torch; print(torch.__version__, "threads 2,", torch.backends.mkldnn.is_available() and "oneDNN" or "")')."
    echo "CPU seconds: user + system of each whole run (all its processes), from bash's \`time\`; the CPU seconds to a level are"
    echo "estimated as the wall time to that level times the run's CPU/wall ratio (labelled est.)."
    echo "Wall times carry whatever else ran on the machine (see the load average); the images-seen curve does not."
    echo "Same data, init and recipe (taken from the mp3d run's logged config); see the script's header for the one stated difference."
    echo
    cat "${out}_table.md"
    echo
    echo "![wall](tta_classify_wall.svg) ![images](tta_classify_images.svg)"
} >"$out.md"
cat "$out.md"
