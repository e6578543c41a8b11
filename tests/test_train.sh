#!/usr/bin/env bash
# Trainer exactness and robustness, through the real mp3d binary under mpirun:
#  1. same seed, same ranks: bit-identical loss trajectory and final checkpoint
#  2. 1 rank vs 2 ranks at the same global batch (GroupNorm): equal to float tolerance
#  3. SIGKILL mid-run + restart: final checkpoint bit-identical to the uninterrupted run;
#     resumed on 1 rank instead of 2: equal to tolerance
#  4. SIGTERM to the ranks: a valid checkpoint, exit code 75, the restart finishes
#  5. truncated newest checkpoint: detected, the previous one used, same final result
set -u
TOOL=${1:?usage: test_train.sh TRAIN_TOOL}
BIN=${MP3D_BIN:?MP3D_BIN not set}
T=$(mktemp -d /tmp/mp3d_train.XXXXXX)
trap 'rm -rf "$T"' EXIT
# Open MPI's shared-memory segments in this scratch folder, not /dev/shm: the ranks SIGKILLed in
# part 3 cannot remove theirs, and /dev/shm kept 8 MB per killed run until the next reboot
export OMPI_MCA_btl_vader_backing_directory="$T"
fail=0
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fail=$((fail + 1)); }
run() { # run NP OUT [extra --set ...]  -> exit code
    local np=$1 out=$2; shift 2
    mpirun -np "$np" "$BIN" train "$T/t.cfg" --set output.dir="$out" "$@" >"$out.log" 2>&1
}
losses() { grep -o '"step":[0-9]*,"epoch":[0-9]*,"loss":[0-9.e+-]*' "$1/metrics.jsonl"; }

"$TOOL" make-shard "$T/data" 96 32 24 4 7 || { echo "FAIL make-shard"; exit 1; }
cat >"$T/t.cfg" <<CFG
input = { root = "$T/data"; };
model = { arch = "resnet3dv1c18"; width = 0.125; norm = "gn"; gn_groups = 4; num_classes = 4; };
train = { batch = 8; crop = 20; max_steps = 60; ckpt_every = 6; ckpt_keep = 20; lr = 0.05; lr_batch = 8;
          check_every = 6; val_every = 2.0; bucket_mb = 0.2; };
CFG
final=ckpt_00000060.h5

# 1. determinism
run 2 "$T/a" || bad "run a exited $?"
run 2 "$T/b" || bad "run b exited $?"
if [ -f "$T/a/$final" ] && [ -f "$T/b/$final" ]; then
    if diff <(losses "$T/a") <(losses "$T/b") >/dev/null && [ "$(losses "$T/a" | wc -l)" -ge 6 ]; then ok "identical loss trajectory ($(losses "$T/a" | wc -l) points)"; else bad "loss trajectories differ"; fi
    "$TOOL" compare "$T/a/$final" "$T/b/$final" 0 && ok "bit-identical final parameters" || bad "reruns differ"
else bad "final checkpoints missing"; fi
grep -q "check:identical step:60" "$T/a.log" && ok "ranks hold identical parameters" || bad "no identical-parameter check in log"
grep -q "buckets\|comm_wait_ms" "$T/a.log" && ok "communication time logged" || bad "no comm timing"

# 2. one rank with the same global batch
run 1 "$T/c" || bad "run c exited $?"
"$TOOL" compare "$T/a/$final" "$T/c/$final" 2e-4 && ok "1 rank == 2 ranks within 2e-4" || bad "1 vs 2 ranks differ"

# 2b. BatchNorm: synchronised statistics make 2 ranks equal 1 rank; per-rank statistics do not
run 2 "$T/bn2" --set model.norm=bn --set train.sync_bn=true --set train.max_steps=12 || bad "sync-bn 2 ranks exited $?"
run 1 "$T/bn1" --set model.norm=bn --set train.sync_bn=true --set train.max_steps=12 || bad "sync-bn 1 rank exited $?"
run 2 "$T/bn2p" --set model.norm=bn --set train.max_steps=12 || bad "per-rank bn exited $?"
"$TOOL" compare "$T/bn1/ckpt_00000012.h5" "$T/bn2/ckpt_00000012.h5" 2e-4 && ok "sync BatchNorm: 1 rank == 2 ranks within 2e-4" || bad "sync BN 1 vs 2 ranks differ"
"$TOOL" compare "$T/bn1/ckpt_00000012.h5" "$T/bn2p/ckpt_00000012.h5" 2e-4 >/dev/null && bad "per-rank BN matched 1 rank: the sync-BN check proves nothing" || ok "per-rank BatchNorm differs from 1 rank (as it should)"

# 3. SIGKILL mid-run and restart
mpirun -np 2 "$BIN" train "$T/t.cfg" --set output.dir="$T/k" >"$T/k1.log" 2>&1 &
mpipid=$!
for _ in $(seq 1 600); do [ -f "$T/k/ckpt_00000012.h5" ] && break; sleep 0.02; done
kill -9 $(pgrep -P $mpipid) 2>/dev/null; kill -9 $mpipid 2>/dev/null; wait $mpipid 2>/dev/null
rm -f "$T"/k/*.tmp
last=$(ls "$T/k" | grep -c '^ckpt_.*\.h5$')
if [ -f "$T/k/$final" ]; then bad "run finished before it was killed: the test proves nothing (make it slower)"; fi
run 2 "$T/k" || bad "restart after SIGKILL exited $?"
step=$(grep -o 'resume: step:[0-9]*' "$T/k.log" | head -1)
[ -n "$step" ] && ok "restart $step (after $last checkpoints)" || bad "restart did not resume"
"$TOOL" compare "$T/a/$final" "$T/k/$final" 0 && ok "killed+resumed == uninterrupted (bit-identical)" || bad "killed+resumed differs"
# resume the killed run's checkpoint on 1 rank
mkdir -p "$T/k1r"; cp "$T/k/ckpt_00000012.h5" "$T/k1r/"
run 1 "$T/k1r" || bad "1-rank resume exited $?"
grep -q "resume: step:12 .*written by 2 ranks, now 1" "$T/k1r.log" && ok "resumed a 2-rank checkpoint on 1 rank" || bad "no cross-rank resume line"
"$TOOL" compare "$T/a/$final" "$T/k1r/$final" 2e-4 && ok "2->1 rank resume within 2e-4" || bad "2->1 rank resume differs"

# 4. SIGTERM (what Slurm sends before preemption) to every rank
mpirun -np 2 "$BIN" train "$T/t.cfg" --set output.dir="$T/s" >"$T/s1.log" 2>&1 &
mpipid=$!
for _ in $(seq 1 600); do [ -f "$T/s/ckpt_00000006.h5" ] && break; sleep 0.02; done
kill -TERM $(pgrep -P $mpipid) 2>/dev/null
wait $mpipid; rc=$?
[ $rc -eq 75 ] && ok "SIGTERM -> exit 75" || bad "SIGTERM exit code $rc, want 75"
grep -q "stopped by signal" "$T/s1.log" && ok "stop logged" || bad "no stop line"
n=$(ls "$T/s" | grep -c '^ckpt_.*\.h5$')
run 2 "$T/s" || bad "restart after SIGTERM exited $?"
grep -q "resume: step:" "$T/s.log" && ok "restart after SIGTERM resumed ($n checkpoints before)" || bad "no resume after SIGTERM"
"$TOOL" compare "$T/a/$final" "$T/s/$final" 0 && ok "SIGTERM+resume == uninterrupted" || bad "SIGTERM+resume differs"

# 5. truncated newest checkpoint
mkdir -p "$T/tr"; cp "$T/a/ckpt_00000054.h5" "$T/a/ckpt_00000060.h5" "$T/tr/"
sz=$(stat -c %s "$T/tr/$final"); truncate -s $((sz / 2)) "$T/tr/$final"
run 2 "$T/tr" || bad "run after truncation exited $?"
grep -q "resume: step:54" "$T/tr.log" && ok "truncated newest skipped, resumed from 54" || bad "truncation not handled"
grep -qi "ckpt_00000060.h5" "$T/tr.log" && ok "truncated file named in the log" || bad "truncated file not named"
"$TOOL" compare "$T/a/$final" "$T/tr/$final" 0 && ok "recomputed final == original" || bad "recomputed final differs"

# 6. mp3d infer: the network rebuilt from the checkpoint's stored config gives the logged val top-1
"$TOOL" make-input "$T/data" 20 114.495 57.63 "$T/in.h5" || bad "make-input"
mpirun -np 2 "$BIN" infer --checkpoint "$T/a/$final" --input "$T/in.h5" --output "$T/out.h5" >"$T/inf.log" 2>&1 || bad "infer exited $?"
want=$(grep -o 'val: step:60 epoch:[0-9]* top1:[0-9.]*' "$T/a.log" | grep -o 'top1:[0-9.]*' | cut -d: -f2)
got=$("$TOOL" top1 "$T/out.h5" "$T/data" | grep -o 'infer_top1:[0-9.]*' | cut -d: -f2)
[ -n "$want" ] && [ "$want" = "$got" ] && ok "infer top-1 $got == trainer's val top-1 $want" || bad "infer top-1 '$got' vs val '$want'"

# 7. train.batch larger than the training set (the demo recipe on a tiny cohort): an error naming
#    both numbers; with train.batch_fit = true one batch of all 96 samples, lr scaled with it
run 2 "$T/big" --set train.batch=200 --set train.max_steps=2; rc=$?
[ "$rc" = 2 ] && grep -q "train.batch = 200 is larger than the 96 training samples" "$T/big.log" &&
    ok "train.batch 200 > 96 samples: exit 2 naming both" || bad "train.batch 200 > 96 samples: exit $rc"
run 2 "$T/fit" --set train.batch=200 --set train.batch_fit=true --set train.max_steps=2 --set train.ckpt_every=2 ||
    bad "train.batch_fit run exited $?"
grep -q "batch_fit = true: batch 96 (lr scaled with it)" "$T/fit.log" && grep -q "batch:96 .*lr:0.6\b" "$T/fit.log" &&
    [ -f "$T/fit/ckpt_00000002.h5" ] && ok "train.batch_fit: batch 96, lr 0.05*96/8 = 0.6, 2 steps written" ||
    { bad "train.batch_fit: no batch-96 run"; grep "train:" "$T/fit.log" | head -n 3; }

echo "test_train: $fail failed"
[ $fail -eq 0 ]
