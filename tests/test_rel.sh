#!/usr/bin/env bash
# Reliability cases of issue 16, through the real mp3d binary under mpirun (hangs are caught by
# `timeout` here and by the ctest TIMEOUT): test_rel.sh CASE NP REL_TOOL
#   step_fail   one bad sample (an inverted box written into the train shard) on one rank:
#               every rank stops within the timeout, exit 1, the error names shard and sample
#   ckpt_full   output.dir on a 2 MB tmpfs: the checkpoint write fails with ENOSPC on every rank:
#               exit 1 within the timeout, no crash, no .tmp left, the previous checkpoint valid
#   ckpt_kill / shard_trunc   faults injected by tests/fault_preload.c (see the cases)
# REL_KEEP=1 keeps the scratch folder, REL_LIMIT=S changes the hang limit (90 s).
set -u
CASE=${1:?usage: test_rel.sh CASE NP REL_TOOL}
NP=${2:?}
TOOL=${3:?}
BIN=${MP3D_BIN:?MP3D_BIN not set}
T=$(mktemp -d /tmp/mp3d_rel.XXXXXX)
MNT=""
cleanup() { [ -n "$MNT" ] && umount "$MNT" 2>/dev/null; [ -n "$MNT" ] && umount "$MNT" 2>/dev/null; rm -rf "$T"; }
[ -n "${REL_KEEP:-}" ] && echo "keeping $T" || trap cleanup EXIT
fail=0
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fail=$((fail + 1)); }
LIMIT=${REL_LIMIT:-90}   # seconds; a healthy run takes a few

fixture_pp() {   # synthetic DeepLesion cohort -> preprocess shards in $T/pp
    "$BIN" synth --set output.dir="$T/data" --set synth.scale=tiny >"$T/synth.log" 2>&1 || { echo "FAIL synth"; cat "$T/synth.log"; exit 1; }
    "$BIN" preprocess "$MP3D_SOURCE_DIR/configs/demo_preprocess.cfg" --set input.root="$T/data/deeplesion" \
        --set output.dir="$T/pp" >"$T/pp.log" 2>&1 || { echo "FAIL preprocess"; cat "$T/pp.log"; exit 1; }
}
det_cfg() {   # a detector small enough for a few-second run
    cat >"$T/det.cfg" <<CFG
input = { root = "$T/pp"; };
output = { dir = "$1"; };
model = { arch = "resnet3dv1c18"; width = 0.125; norm = "gn"; gn_groups = 4; };
train = { task = "detect"; batch = 6; lr = 0.01; lr_batch = 4; max_steps = $2; ckpt_every = 1; ckpt_keep = 2; val_every = 0.0; };
det = { train_sizes = [64]; test_size = 64; fpn_channels = 16; fc_dim = 32; rpn_pre_nms = 100; rpn_post_nms = 50; roi_samples = 32; };
CFG
}

case "$CASE" in
step_fail)
    fixture_pp
    "$TOOL" set-box "$T/pp/train.h5" 3 60 60 40 40 || exit 1
    det_cfg "$T/out" 3
    timeout -k 5 $LIMIT mpirun -np "$NP" "$BIN" train "$T/det.cfg" >"$T/run.log" 2>&1; rc=$?
    [ $rc -eq 124 ] || [ $rc -eq 137 ] && bad "train hung (killed after $LIMIT s)"
    [ $rc -eq 1 ] && ok "exit 1 at $NP ranks" || bad "exit $rc, want 1"
    grep -q "ERROR .*train.h5: sample 2 (.*) box row 3 is (60, 60, 40, 40)" "$T/run.log" && ok "error names shard, sample and box row" || bad "no error naming the sample"
    grep -q "train: step:0 failed on rank" "$T/run.log" && ok "rank 0 reports the failing rank" || bad "no agreed-failure line"
    ;;
ckpt_full)
    fixture_pp
    mkdir -p "$T/full"
    if ! mount -t tmpfs -o size=2m tmpfs "$T/full" 2>/dev/null; then echo "skip: cannot mount a tmpfs (needs root)"; exit 77; fi
    MNT="$T/full"
    det_cfg "$T/full/out" 2
    # a checkpoint of this model is ~4.5 MB: the first one fills the 2 MB disk.
    timeout -k 5 $LIMIT mpirun -np "$NP" "$BIN" train "$T/det.cfg" >"$T/run.log" 2>&1; rc=$?
    [ $rc -eq 124 ] || [ $rc -eq 137 ] && bad "train hung (killed after $LIMIT s)"
    [ $rc -eq 1 ] && ok "exit 1 at $NP ranks" || bad "exit $rc, want 1"
    grep -qi "segmentation\|signal 11\|core dumped\|exited on signal" "$T/run.log" && bad "a rank crashed" || ok "no crash"
    ls "$T/full/out" 2>/dev/null | grep -q '\.tmp$' && bad "a .tmp file was left: $(ls "$T/full/out")" || ok "no .tmp left"
    grep -q "ERROR .*ckpt_00000001.h5.tmp" "$T/run.log" && ok "the error names the checkpoint file" || bad "no error naming the checkpoint"
    # a previous checkpoint stays valid: a run with room writes step 1, then the disk is filled
    umount "$T/full"; MNT=""
    mount -t tmpfs -o size=8m tmpfs "$T/full" && MNT="$T/full"
    det_cfg "$T/full/out" 1
    timeout -k 5 $LIMIT mpirun -np "$NP" "$BIN" train "$T/det.cfg" >"$T/run1.log" 2>&1 || bad "first run with room exited $?"
    # (a) 2 MB left: the write fails part-way through the data; (b) nothing left at all
    for left in 2 0; do
        rm -f "$T/full/filler"
        avail=$(df --output=avail -B1 "$T/full" | tail -1)
        fallocate -l $((avail - left * 1048576)) "$T/full/filler" 2>/dev/null || dd if=/dev/zero of="$T/full/filler" bs=64k 2>/dev/null
        det_cfg "$T/full/out" 2
        timeout -k 5 $LIMIT mpirun -np "$NP" "$BIN" train "$T/det.cfg" >"$T/run2.log" 2>&1; rc=$?
        [ $rc -eq 1 ] && ok "disk full ($left MB left) at the second checkpoint: exit 1" || bad "second run ($left MB left) exit $rc, want 1: $(grep -E 'ERROR|signal' "$T/run2.log" | head -3)"
        ls -a "$T/full/out" | grep -q '\.tmp$\|reserve' && bad "a temporary file was left ($left MB left): $(ls -a "$T/full/out")" || ok "no temporary file left ($left MB left)"
        grep -q "ERROR .*ckpt_00000002.h5.tmp" "$T/run2.log" && ok "the error names the checkpoint file" || bad "no error naming ckpt_00000002.h5.tmp"
    done
    rm -f "$T/full/filler"
    det_cfg "$T/full/out" 1
    timeout -k 5 $LIMIT mpirun -np "$NP" "$BIN" train "$T/det.cfg" >"$T/run3.log" 2>&1 || bad "resume exited $?"
    grep -q "already complete at step 1" "$T/run3.log" && ok "the previous checkpoint (step 1) is still valid" || bad "step-1 checkpoint not usable: $(tail -3 "$T/run3.log")"
    ;;
pp_rows)
    "$BIN" synth --set output.dir="$T/data" --set synth.scale=tiny >"$T/synth.log" 2>&1 || { echo "FAIL synth"; exit 1; }
    python3 - "$T/data/deeplesion/DL_info.csv" <<'PY' || exit 1
import csv, sys
p = sys.argv[1]
rows = list(csv.reader(open(p, newline='')))
h = rows[0]
c = {n: i for i, n in enumerate(h)}
def put(line, col, val): rows[line - 1][c[col]] = val
put(2, 'Image_size', '64, 64')                          # first train row: a wrong but plausible size
put(5, 'Bounding_boxes', '70, 70, 50, 50')              # inverted box
put(6, 'Slice_range', '40, 20')                         # inverted slice range
put(7, 'Spacing_mm_px_', '0.8, 0.8, 1e30')              # absurd slice interval
put(8, 'Bounding_boxes', '10, 10, 1e30, 1e30')          # huge box
put(9, 'Bounding_boxes', '300, 300, 320, 320')          # entirely outside a 128x128 image
csv.writer(open(p, 'w', newline=''), lineterminator='\n').writerows(rows)
PY
    "$BIN" preprocess "$MP3D_SOURCE_DIR/configs/demo_preprocess.cfg" --set input.root="$T/data/deeplesion" \
        --set output.dir="$T/pp" --set run.max_bad_fraction=0.9 >"$T/run.log" 2>&1; rc=$?
    [ $rc -eq 0 ] && ok "preprocess exit 0 with max_bad_fraction 0.9" || bad "preprocess exit $rc"
    for l in 5 6 7 8 9; do
        grep -q "^preprocess,DL_info.csv,line $l," "$T/pp/quarantine.csv" && ok "CSV line $l quarantined" || bad "CSV line $l not in quarantine.csv"
    done
    grep -q "^preprocess,DL_info.csv,line 2," "$T/pp/quarantine.csv" && bad "line 2 (plausible Image_size) quarantined" || ok "line 2 kept"
    dims=$(h5dump -H -d images "$T/pp/train.h5" 2>/dev/null | grep -o 'SIMPLE { ( [0-9, ]* )' | head -1)
    echo "$dims" | grep -q ", 128, 128 )" && ok "train split stored at 128x128 ($dims)" || bad "train split dims $dims, want 128x128"
    n=$(h5dump -H -d images "$T/pp/train.h5" 2>/dev/null | grep -o 'SIMPLE { ( [0-9]*' | grep -o '[0-9]*$')
    [ "${n:-0}" -ge 2 ] && ok "train split keeps $n key slices" || bad "train split has ${n:-0} key slices"
    h5dump -d boxes -w 0 "$T/pp/train.h5" | awk -F'[:,]' '/^ *\([0-9]+,0\)/ { if ($4+0 <= $2+0 || $5+0 <= $3+0) bad = 1 } END { exit bad }' \
        && ok "no inverted box stored" || bad "an inverted box was stored"
    ;;
vdt_loss)
    "$BIN" synth --set output.dir="$T/data" --set synth.scale=tiny >"$T/synth.log" 2>&1 || { echo "FAIL synth"; exit 1; }
    I="$T/data/imagenet"
    mkdir -p "$T/tr" "$T/zero"
    cp "$I"/LOC_* "$I/ILSVRC2012_img_val.tar" "$T/tr/"
    cp "$I"/LOC_* "$I/ILSVRC2012_img_val.tar" "$T/zero/"
    sz=$(stat -c %s "$I/ILSVRC2012_img_train.tar")
    head -c $((sz / 2)) "$I/ILSVRC2012_img_train.tar" >"$T/tr/ILSVRC2012_img_train.tar"
    : >"$T/zero/ILSVRC2012_img_train.tar"
    vdt() { timeout -k 5 $LIMIT mpirun -np "$NP" "$BIN" vdt "$MP3D_SOURCE_DIR/configs/demo_vdt_imagenet.cfg" --set vdt.splits=train "$@"; }
    vdt --set input.root="$T/tr" --set output.dir="$T/o_tr" >"$T/run.log" 2>&1; rc=$?
    [ $rc -ne 0 ] && [ $rc -ne 124 ] && ok "truncated train tar: exit $rc" || bad "truncated train tar: exit $rc, want non-zero"
    grep -q "lost_inner_tars:2 lost_images_estimated:12" "$T/run.log" && ok "lost images counted (12 of 24)" || bad "lost images not counted: $(grep -E 'lost|skipped' "$T/run.log" | head -3)"
    grep -q "exceeds run.max_bad_fraction" "$T/run.log" && ok "judged against run.max_bad_fraction" || bad "no bad-fraction verdict"
    vdt --set input.root="$T/zero" --set output.dir="$T/o_zero" >"$T/run.log" 2>&1; rc=$?
    [ $rc -ne 0 ] && [ $rc -ne 124 ] && ok "0-byte train tar: exit $rc" || bad "0-byte train tar: exit $rc"
    grep -q "ERROR .*ILSVRC2012_img_train.tar" "$T/run.log" && ok "0-byte train tar: an ERROR line naming it" || bad "0-byte train tar: no ERROR line"
    # COCO: one image's file_name is not in train2017.zip
    cp -r "$T/data/coco" "$T/coco"
    python3 - "$T/coco/annotations_trainval2017.zip" <<'PY' || exit 1
import json, sys, zipfile
p = sys.argv[1]
with zipfile.ZipFile(p) as z: files = {n: z.read(n) for n in z.namelist()}
n = 'annotations/instances_train2017.json'
j = json.loads(files[n])
ims = sorted(j['images'], key=lambda x: x['id'])
ims[2]['file_name'] = 'missing.jpg'
j['images'] = ims
files[n] = json.dumps(j).encode()
with zipfile.ZipFile(p, 'w') as z:
    for k, v in files.items(): z.writestr(k, v)
PY
    timeout -k 5 $LIMIT mpirun -np "$NP" "$BIN" vdt "$MP3D_SOURCE_DIR/configs/demo_vdt_coco.cfg" --set vdt.splits=train \
        --set input.root="$T/coco" --set output.dir="$T/o_coco" --set run.max_bad_fraction=0.2 >"$T/run.log" 2>&1; rc=$?
    [ $rc -eq 0 ] && ok "COCO with one missing file: exit 0" || bad "COCO with one missing file: exit $rc"
    grep -q "missing.jpg,image listed in the annotations but missing" "$T/o_coco/quarantine.csv" 2>/dev/null && ok "only that image quarantined" || bad "missing.jpg not quarantined"
    grep -q "split:train samples:11 " "$T/run.log" && ok "the other 11 images stored" || bad "not 11 samples: $(grep samples: "$T/run.log")"
    ;;
froc_input)
    fixture_pp
    TRUTH="$T/data/deeplesion/DL_info.csv"
    froc() { timeout -k 5 $LIMIT mpirun -np "$NP" "$BIN" froc --truth "$TRUTH" --detections "$1" --out "$T/f_$2" --set eval.split=train; }
    : >"$T/empty.csv"
    head -c 4096 /dev/urandom >"$T/binary.csv"
    printf 'a;b;c\n1;2;3\nhello\n' >"$T/other.csv"
    for k in empty binary other; do
        froc "$T/$k.csv" "$k" >"$T/run.log" 2>&1; rc=$?
        [ $rc -ne 0 ] && [ $rc -ne 124 ] && ok "froc on a $k file: exit $rc" || bad "froc on a $k file: exit $rc, want an error"
        grep -q "ERROR froc: .*$k.csv" "$T/run.log" && ok "froc on a $k file: ERROR naming it" || bad "froc on a $k file: no ERROR line"
    done
    name=$(awk -F, 'NR == 2 { print $1 }' "$TRUTH")
    printf '\xef\xbb\xbfFile_name,x1,y1,x2,y2,score\n%s,10,10,30,30,0.5\n' "$name" >"$T/bom.csv"
    froc "$T/bom.csv" bom >"$T/run.log" 2>&1 && ok "a UTF-8 BOM before the header is accepted" || bad "BOM file: exit $?: $(grep -E 'ERROR|skipped' "$T/run.log" | head -2)"
    grep -q "skipped" "$T/run.log" && bad "BOM file: a line was skipped" || ok "BOM file: no line skipped"
    printf 'File_name,x1,y1,x2,y2,score\n' >"$T/header.csv"
    froc "$T/header.csv" header >"$T/run.log" 2>&1 && ok "a header alone (no detections) still scores" || bad "header-only file: exit $?"
    ;;
infer_io)
    TT=${4:?infer_io needs TRAIN_TOOL}
    "$TT" make-shard "$T/data" 16 8 16 2 3 >/dev/null || { echo "FAIL make-shard"; exit 1; }
    cat >"$T/c.cfg" <<CFG
input = { root = "$T/data"; };
output = { dir = "$T/out"; };
model = { arch = "resnet3dv1c18"; width = 0.125; norm = "gn"; gn_groups = 4; num_classes = 2; };
train = { batch = 8; crop = 12; max_steps = 1; ckpt_every = 1; val_every = 0.0; };
CFG
    "$BIN" train "$T/c.cfg" >"$T/train.log" 2>&1 || { echo "FAIL train"; tail -5 "$T/train.log"; exit 1; }
    "$TT" make-input "$T/data" 12 114.495 57.63 "$T/x.h5" || { echo "FAIL make-input"; exit 1; }
    sum=$(md5sum <"$T/x.h5")
    timeout -k 5 $LIMIT mpirun -np "$NP" "$BIN" infer --checkpoint "$T/out/ckpt_00000001.h5" --input "$T/x.h5" --output "$T/x.h5" >"$T/run.log" 2>&1; rc=$?
    [ $rc -ne 0 ] && [ $rc -ne 124 ] && ok "--input x --output x refused (exit $rc)" || bad "--input x --output x: exit $rc"
    [ "$(md5sum <"$T/x.h5")" = "$sum" ] && ok "the input file is intact" || bad "the input file was modified"
    grep -q "ERROR infer: --output .* is the same file as --input" "$T/run.log" && ok "the error says why" || bad "no error line"
    ln -s "$T/x.h5" "$T/alias.h5"
    timeout -k 5 $LIMIT mpirun -np "$NP" "$BIN" infer --checkpoint "$T/out/ckpt_00000001.h5" --input "$T/x.h5" --output "$T/alias.h5" >"$T/run.log" 2>&1 \
        && bad "--output through a symlink to the input accepted" || ok "--output through a symlink to the input refused"
    timeout -k 5 $LIMIT mpirun -np "$NP" "$BIN" infer --checkpoint "$T/out/ckpt_00000001.h5" --input "$T/x.h5" --output "$T/y.h5" >"$T/run.log" 2>&1 \
        && ok "a distinct output works" || bad "a distinct output failed: $(tail -3 "$T/run.log")"
    "$TOOL" set-f32 "$T/x.h5" input 500 nan || exit 1
    timeout -k 5 $LIMIT mpirun -np "$NP" "$BIN" infer --checkpoint "$T/out/ckpt_00000001.h5" --input "$T/x.h5" --output "$T/z.h5" >"$T/run.log" 2>&1; rc=$?
    [ $rc -ne 0 ] && grep -q "sample 1 holds a non-finite value" "$T/run.log" && ok "NaN input: error naming sample 1" || bad "NaN input: exit $rc, $(grep ERROR "$T/run.log" | head -2)"
    ;;
ckpt_kill)
    # a rank SIGKILLed in the middle of writing a checkpoint (tests/fault_preload.c kills the
    # last rank at its 3rd write to ckpt_00000003.h5.tmp): the job ends within the timeout,
    # the previous checkpoint stays valid, the restart drops the stale .tmp, resumes from step 2
    # and ends bit-identical to an uninterrupted run.
    PRE=${4:?ckpt_kill needs FAULT_PRELOAD}
    TT=${5:?ckpt_kill needs TRAIN_TOOL}
    fixture_pp
    det_cfg "$T/a" 4
    timeout -k 5 $LIMIT mpirun -np "$NP" "$BIN" train "$T/det.cfg" >"$T/a.log" 2>&1 || { echo "FAIL reference run: exit $?"; tail -5 "$T/a.log"; exit 1; }
    det_cfg "$T/k" 4
    t0=$(date +%s)
    LD_PRELOAD=$PRE MP3D_FAULT="kill:ckpt_00000003.h5.tmp:$((NP - 1)):3" \
        timeout -k 5 $LIMIT mpirun -np "$NP" -x LD_PRELOAD -x MP3D_FAULT "$BIN" train "$T/det.cfg" >"$T/run.log" 2>&1; rc=$?
    # mpirun itself exits 137 (128 + SIGKILL) for a killed rank: a hang shows as the time taken
    el=$(( $(date +%s) - t0 ))
    [ $rc -eq 124 ] || [ $el -ge $LIMIT ] && bad "the job hung after a rank was killed (stopped by timeout after $el s)" || ok "the job ended $el s after the start"
    grep -q "fault_preload: rank $((NP - 1)) killed at write 3 to .*ckpt_00000003.h5.tmp" "$T/run.log" && ok "rank $((NP - 1)) killed mid-checkpoint" || bad "the fault did not fire: $(tail -3 "$T/run.log")"
    [ $rc -ne 0 ] && ok "the job ended, exit $rc (not 0)" || bad "exit 0 after a rank was killed"
    [ -f "$T/k/ckpt_00000003.h5" ] && bad "a checkpoint of step 3 was committed by a dead rank's job" || ok "no ckpt_00000003.h5 committed"
    "$BIN" inspect "$T/k/ckpt_00000002.h5" >"$T/inspect.log" 2>&1 && ok "the previous checkpoint (step 2) is valid" || bad "step 2 checkpoint: $(tail -2 "$T/inspect.log")"
    timeout -k 5 $LIMIT mpirun -np "$NP" "$BIN" train "$T/det.cfg" >"$T/re.log" 2>&1 || bad "restart exited $?: $(grep ERROR "$T/re.log" | head -2)"
    grep -q "resume: step:2 " "$T/re.log" && ok "restart resumes from step 2" || bad "restart: $(grep -E 'resume|ckpt:' "$T/re.log" | head -3)"
    ls "$T/k" | grep -q '\.tmp$' && bad "a .tmp is left after the restart: $(ls "$T/k")" || ok "no .tmp left after the restart"
    "$TT" compare "$T/a/ckpt_00000004.h5" "$T/k/ckpt_00000004.h5" 0 >/dev/null && ok "killed + resumed == uninterrupted (bit-identical)" || bad "killed + resumed differs from the uninterrupted run"
    ;;
shard_trunc)
    # the train shard cut to half its size while training reads it (tests/fault_preload.c
    # truncates it at rank 0's 40th read of train.h5 after start-up): every rank stops within the
    # timeout, exit 1, an ERROR naming the shard; checkpoints written before stay valid.
    PRE=${4:?shard_trunc needs FAULT_PRELOAD}
    fixture_pp
    det_cfg "$T/out" 100000
    half=$(( $(stat -c %s "$T/pp/train.h5") / 2 ))
    LD_PRELOAD=$PRE MP3D_FAULT="truncate:train.h5:0:40:$half" \
        timeout -k 5 $LIMIT mpirun -np "$NP" -x LD_PRELOAD -x MP3D_FAULT "$BIN" train "$T/det.cfg" >"$T/run.log" 2>&1; rc=$?
    [ $rc -eq 124 ] || [ $rc -eq 137 ] && bad "train hung on a truncated shard (killed after $LIMIT s)"
    grep -q "fault_preload: rank 0 truncated .*train.h5" "$T/run.log" && ok "train.h5 truncated to $half bytes during the run" || bad "the fault did not fire"
    [ $rc -eq 1 ] && ok "exit 1 at $NP ranks" || bad "exit $rc, want 1"
    grep -q "ERROR .*train.h5" "$T/run.log" && ok "an ERROR names the shard: $(grep -m1 'ERROR .*train.h5' "$T/run.log" | cut -c1-160)" || bad "no ERROR naming train.h5: $(grep ERROR "$T/run.log" | head -2)"
    grep -qi "segmentation\|signal 11\|core dumped\|exited on signal" "$T/run.log" && bad "a rank crashed" || ok "no crash"
    for c in "$T"/out/ckpt_*.h5; do [ -f "$c" ] || continue; "$BIN" inspect "$c" >/dev/null 2>&1 || bad "$(basename "$c") written before the fault is not valid"; done
    ;;
term)
    fixture_pp
    det_cfg "$T/out" 100000
    # 1. scancel-like: TERM to mpirun and to its ranks, the job launched by mp3d_launch
    (
        # shellcheck source=../slurm/common.sh
        source "$MP3D_SOURCE_DIR/slurm/common.sh"
        MP3D_LAUNCH=mpirun   # outside Slurm mpirun starts one rank per core (2 here)
        # the ranks get 10 s (not the default 20) to finish the step and checkpoint: mpirun then
        # returns after about 20 s; its own default of 1 s loses the checkpoint of a slow step
        # (an ASan build on a loaded machine: 6 s steps)
        MP3D_MPIRUN_KILL_WAIT=10
        mp3d_launch train "$T/det.cfg"
        echo "launch_rc:$?"
    ) >"$T/run.log" 2>&1 &
    sh_pid=$!
    for _ in $(seq 1 600); do grep -q "step:1 " "$T/run.log" && break; sleep 0.1; done
    mpi=$(pgrep -P $sh_pid -x mpirun)
    [ -n "$mpi" ] || bad "mpirun not found"
    ranks=$(pgrep -P "$mpi" -d ' ')
    kill -TERM $mpi $ranks 2>/dev/null
    for _ in $(seq 1 $((LIMIT * 10))); do kill -0 $sh_pid 2>/dev/null || break; sleep 0.1; done
    kill -0 $sh_pid 2>/dev/null && { bad "launch still running after $LIMIT s"; kill -KILL $sh_pid $mpi $ranks 2>/dev/null; }
    wait $sh_pid 2>/dev/null
    grep -q "launch_rc:75" "$T/run.log" && ok "TERM to mpirun and ranks: mp3d_launch returns 75" || bad "mp3d_launch returned $(grep -o 'launch_rc:[0-9]*' "$T/run.log")"
    grep -q "stopped by signal" "$T/run.log" && ok "the ranks checkpointed" || bad "no checkpoint on TERM"
    # 2. TERM during start-up (before the trainer's loop), to the ranks
    rm -rf "$T/out"
    mpirun -np "$NP" "$BIN" train "$T/det.cfg" >"$T/run2.log" 2>&1 &
    mpi=$!
    ranks=""
    for _ in $(seq 1 100); do ranks=$(pgrep -P $mpi -d ' '); [ -n "$ranks" ] && break; sleep 0.02; done
    # as soon as every rank has reached main() and installed its handler (SigCgt holds SIGTERM,
    # bit 15): before main no program can catch a signal (an ASan build takes ~1 s to get there)
    caught() { local m; m=$(awk '/^SigCgt/ { print $2 }' "/proc/$1/status" 2>/dev/null); [ -n "$m" ] && (( (0x$m >> 14) & 1 )); }
    for _ in $(seq 1 500); do
        all=1; for r in $ranks; do caught "$r" || all=0; done
        [ $all = 1 ] && break; sleep 0.01
    done
    kill -TERM $ranks 2>/dev/null
    for _ in $(seq 1 $((LIMIT * 10))); do kill -0 $mpi 2>/dev/null || break; sleep 0.1; done
    kill -0 $mpi 2>/dev/null && { bad "train still running after TERM"; kill -KILL $mpi $ranks 2>/dev/null; }
    wait $mpi; rc=$?
    [ $rc -eq 75 ] && ok "TERM as soon as the handler is installed: exit 75" || bad "TERM at start-up: exit $rc, want 75: $(grep -E 'signal|exit' "$T/run2.log" | head -3)"
    ls "$T/out" 2>/dev/null | grep -q '^ckpt_.*\.h5$' && ok "TERM at start-up: a checkpoint" || bad "TERM at start-up: no checkpoint"
    ;;
*) echo "unknown case $CASE"; exit 2 ;;
esac
if [ $fail -ne 0 ]; then echo "--- log"; tail -30 "$T/run.log"; fi
exit $fail
