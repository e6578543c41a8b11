#!/usr/bin/env bash
# mp3d run with rank groups, through the real binary under mpirun:
#  1. --dry-run prints the waves and groups of configs/demo.cfg (2 and 3 ranks; with
#     pipeline.groups=false one group of all ranks); a rank count above the world size is
#     rejected before anything runs, naming the stage; `follow` of a non-train stage is rejected.
#  2. The demo at tiny scale (fast training settings), 2 ranks, once with its rank groups and once
#     with pipeline.groups=false (every stage on all ranks in turn), in the same run folder path
#     (provenance attributes hold paths): the cohort is byte-identical (cmp), the preprocess and
#     VDT shards, the final pre-training and fine-tuning checkpoints and the watch's best.h5 have
#     no differences (h5diff, attributes included), detections.csv, checkpoints.csv and best.json
#     are byte-identical, froc.json is identical apart from its timing field. Both runs train on
#     the same number of ranks (the demo trains on all ranks), so training is bit-identical.
#  3. A watch stage beside its training stage (finetune ranks=1 + watch ranks=1 on 2 ranks, a
#     checkpoint every step, train.ckpt_keep=1 so the trainer prunes while the watch scores):
#     scoring starts before training ends, checkpoints.csv holds the final step, best.json names
#     the best row, best.h5 is that step's checkpoint; a forced re-run resumes (nothing new).
#  4. A failed stage stops a group waiting for it in another group (no hang), with its exit code.
# shellcheck disable=SC2015  # "check && ok || bad": ok never fails
set -u
BIN=${MP3D_BIN:?MP3D_BIN not set}
SRC=${MP3D_SOURCE_DIR:?MP3D_SOURCE_DIR not set}
T=$(mktemp -d /tmp/mp3d_run_groups.XXXXXX)
trap 'rm -rf "$T"' EXIT
fail=0
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fail=$((fail + 1)); }
t0=$SECONDS
# Fast settings: a tiny cohort, 6 training steps with a checkpoint every 2, small images.
SMALL=(--set synth.scale=tiny --set train.batch=4 --set train.val_every=0 --set "det.train_sizes=[128]" --set det.test_size=128
       --set eval.bootstrap=0 --set pipeline.poll_s=0.2)
FAST=("${SMALL[@]}" --set train.max_steps=6 --set train.ckpt_every=2)
DEMO=$SRC/configs/demo.cfg

# ---- 1. plans
mpirun -np 2 "$BIN" run "$DEMO" --dry-run --set pipeline.dir="$T/run" "${FAST[@]}" >"$T/dry2.log" 2>&1 || bad "dry-run -np 2 exited $?"
for want in "wave:1 group:0 ranks:2 world_ranks:0-1 stages:synth" \
            "wave:2 group:1 ranks:1 world_ranks:0-0 stages:preprocess,vdt_coco,anchors" \
            "wave:2 group:2 ranks:1 world_ranks:1-1 stages:vdt_imagenet" \
            "stage:finetune command:train after:preprocess,pretrain,anchors follow:- " \
            "stage:watch command:evaluate after:preprocess,pretrain,anchors follow:finetune ranks:1 "; do
    grep -qF -- "$want" "$T/dry2.log" && ok "dry-run -np 2: '$want'" || bad "dry-run -np 2 lacks '$want'"
done
[ ! -e "$T/run" ] && ok "dry-run wrote nothing" || bad "dry-run created $T/run"
mpirun -np 2 "$BIN" run "$DEMO" --dry-run --set pipeline.groups=false --set pipeline.dir="$T/run" >"$T/dryseq.log" 2>&1
n=$(grep -c "pipeline: wave:" "$T/dryseq.log")
grep -qF "wave:1 group:0 ranks:2 world_ranks:0-1 stages:synth,preprocess,vdt_imagenet,vdt_coco,pretrain,anchors,finetune" "$T/dryseq.log" &&
    ok "pipeline.groups=false: one group of all ranks per wave ($n waves)" || bad "pipeline.groups=false plan: $(grep wave: "$T/dryseq.log")"

cat >"$T/badranks.cfg" <<EOF
pipeline = { dir = "$T/bad"; stages = (
  { name = "synth"; command = "synth"; set = ["output.dir=@dir/data"]; },
  { name = "prep"; command = "preprocess"; config = "$SRC/configs/demo_preprocess.cfg"; ranks = 3;
    set = ["input.root=@dir/data/deeplesion", "output.dir=@dir/prep"]; } ); };
EOF
mpirun -np 2 "$BIN" run "$T/badranks.cfg" >"$T/badranks.log" 2>&1
rc=$?
[ "$rc" = 2 ] && ok "ranks = 3 on 2 ranks: exit 2" || bad "ranks = 3 on 2 ranks: exit $rc"
grep -q "badranks.cfg:3: stage 'prep': ranks = 3, but mp3d run has 2 ranks" "$T/badranks.log" &&
    ok "ranks = 3 on 2 ranks: message names file, line, stage, value" || { bad "bad-ranks message"; cat "$T/badranks.log"; }
[ ! -e "$T/bad" ] && ok "ranks = 3 on 2 ranks: nothing ran" || bad "ranks = 3 on 2 ranks: $T/bad was created"
"$BIN" run "$T/badranks.cfg" --dry-run --set pipeline.groups=false >/dev/null 2>&1 &&
    ok "pipeline.groups=false ignores the rank counts" || bad "pipeline.groups=false still rejects ranks = 3"
sed 's/ranks = 3;/follow = "synth";/' "$T/badranks.cfg" >"$T/badfollow.cfg"
"$BIN" run "$T/badfollow.cfg" --dry-run >"$T/badfollow.log" 2>&1
rc=$?
[ "$rc" = 2 ] && grep -q "stage 'prep': follow = 'synth': a follow stage has command \"evaluate\" and follows a \"train\" stage" \
    "$T/badfollow.log" && ok "follow of a non-train stage by a non-evaluate stage: exit 2 with the rule" ||
    { bad "bad follow: exit $rc"; cat "$T/badfollow.log"; }

# ---- 2. the demo both ways, in the same folder path
t_g=$SECONDS
mpirun -np 2 "$BIN" run "$DEMO" --set pipeline.dir="$T/run" "${FAST[@]}" >"$T/groups.log" 2>&1 || bad "groups run exited $?"
t_g=$((SECONDS - t_g))
grep -q "pipeline: wave:2 groups:2 exit:0" "$T/groups.log" && ok "groups run: wave 2 ran 2 groups side by side (${t_g}s)" ||
    bad "groups run: no 'wave:2 groups:2 exit:0'"
grep -q "world_rank:1 group_rank:0 group_size:1 stages:vdt_imagenet" "$T/groups.log" &&
    ok "groups run: world rank 1 ran vdt_imagenet as rank 0 of its group" || bad "groups run: no group line for world rank 1"
grep -q "INFO vdt: dataset:imagenet split:train samples:" "$T/groups.log" &&
    ok "groups run: the stage's own rank-0 lines appear from the group of world rank 1" || bad "groups run: vdt_imagenet's log lines missing"
mv "$T/run" "$T/groups"
t_s=$SECONDS
mpirun -np 2 "$BIN" run "$DEMO" --set pipeline.dir="$T/run" --set pipeline.groups=false "${FAST[@]}" >"$T/seq.log" 2>&1 ||
    bad "groups=false run exited $?"
t_s=$((SECONDS - t_s))
grep -q "pipeline: wave:2 groups:2" "$T/seq.log" && bad "groups=false run used groups" || ok "groups=false run: every stage on all ranks (${t_s}s)"
for f in data/deeplesion/DL_info.csv data/deeplesion/Images_png_01.zip data/imagenet/ILSVRC2012_img_train.tar \
         evaluate/detections.csv watch/checkpoints.csv watch/best.json; do
    if [ -s "$T/run/$f" ] && cmp -s "$T/groups/$f" "$T/run/$f"; then ok "byte-identical: $f"; else bad "differs or missing: $f"; fi
done
nh=0
for f in preprocess/train.h5 preprocess/val.h5 preprocess/test.h5 vdt_imagenet/imagenet_train.h5 vdt_imagenet/imagenet_val.h5 \
         vdt_coco/coco_train.h5 vdt_coco/coco_val.h5 pretrain/ckpt_00000006.h5 finetune/ckpt_00000006.h5 watch/best.h5; do
    if [ -s "$T/run/$f" ] && h5diff "$T/groups/$f" "$T/run/$f" >"$T/h5diff.out" 2>&1; then nh=$((nh + 1))
    else bad "h5diff: $f differs"; head -n 5 "$T/h5diff.out" | sed 's/^/  | /'; fi
done
[ "$nh" = 10 ] && ok "h5diff: shards, final checkpoints and best.h5 have no differences (attributes included)"
h5diff "$T/run/finetune/ckpt_00000002.h5" "$T/run/finetune/ckpt_00000006.h5" /params /params >/dev/null 2>&1 &&
    bad "h5diff finds no difference between fine-tuning steps 2 and 6: the comparison proves nothing"
strip() { sed 's/"seconds":[0-9.e+-]*//' "$1"; }
if [ -s "$T/run/evaluate/report/froc.json" ] && [ "$(strip "$T/groups/evaluate/report/froc.json")" = "$(strip "$T/run/evaluate/report/froc.json")" ]; then
    ok "froc.json identical apart from its timing ($(grep -o '"mfroc":[0-9.]*' "$T/run/evaluate/report/froc.json" | head -1))"
else bad "froc.json differs"; fi
for f in report.md report.html; do [ -s "$T/groups/evaluate/report/$f" ] || bad "groups run: no evaluate/report/$f"; done
grep -q "checkpoint:$T/run/watch/best.h5" "$T/seq.log" && ok "final evaluation scored watch/best.h5" || bad "final evaluation did not use best.h5"

# ---- 3. a watch beside its training stage
cat >"$T/watch.cfg" <<EOF
pipeline = { dir = "$T/w"; stages = (
  { name = "finetune"; command = "train"; config = "$SRC/configs/demo_finetune.cfg"; after = []; ranks = 1;
    set = ["input.root=$T/groups/preprocess", "output.dir=@dir/finetune", "model.init_from=$T/groups/pretrain",
           "train.max_steps=12", "train.ckpt_every=1", "train.ckpt_keep=1"]; },
  { name = "watch"; command = "evaluate"; config = "$SRC/configs/demo_evaluate.cfg"; follow = "finetune"; ranks = 1;
    set = ["input.root=$T/groups/preprocess", "output.dir=@dir/watch", "eval.overlays=0"]; } ); };
EOF
mpirun -np 2 "$BIN" run "$T/watch.cfg" "${SMALL[@]}" >"$T/watch.log" 2>&1 || bad "watch run exited $?"
first=$(grep -n "watch: scoring" "$T/watch.log" | head -1 | cut -d: -f1)
tend=$(grep -n "pipeline: stage:finetune exit:0" "$T/watch.log" | head -1 | cut -d: -f1)
if [ -n "$first" ] && [ -n "$tend" ] && [ "$first" -lt "$tend" ]; then ok "watch: scoring began while finetune trained (log line $first < $tend)"
else bad "watch: no scoring before finetune ended (first scoring line '${first}', finetune end '${tend}')"; fi
csv=$T/w/watch/checkpoints.csv
rows=$(($(wc -l <"$csv" 2>/dev/null || echo 1) - 1))
passed=$(grep -c "before it could be scored: passed over" "$T/watch.log")
if tail -n 1 "$csv" 2>/dev/null | grep -q "^12,$T/w/finetune/ckpt_00000012.h5,"; then
    ok "checkpoints.csv: $rows checkpoints scored ($passed pruned before scoring), the last one step 12"
else bad "checkpoints.csv lacks step 12"; cat "$csv"; fi
[ "$(awk -F, 'NR > 1 && NF != 7' "$csv" | wc -l)" = 0 ] && [ "$(head -1 "$csv")" = "step,file,mfroc,sens_0.5,sens_1,sens_2,sens_4" ] &&
    ok "checkpoints.csv: header and 7 fields per row" || bad "checkpoints.csv format"
# best = the first row with the highest mfroc
want=$(awk -F, 'NR > 1 && (best == "" || $3 > m) { m = $3; best = $1 } END { print best }' "$csv")
got=$(grep -o '"step":[0-9]*' "$T/w/watch/best.json" | cut -d: -f2)
step_in=$("$BIN" inspect "$T/w/watch/best.h5" 2>/dev/null | sed -n 's/^ *@step = //p')
[ -n "$want" ] && [ "$got" = "$want" ] && [ "$step_in" = "$want" ] &&
    ok "best.json and best.h5 (@step) name step $want, the best val mFROC" || bad "best: csv says '$want', best.json '$got', best.h5 @step '$step_in'"
ls "$T"/w/watch/.scoring_* >/dev/null 2>&1 && bad "watch left .scoring_* copies behind" || ok "watch: no scoring copies left behind"
mpirun -np 2 "$BIN" run "$T/watch.cfg" "${SMALL[@]}" --only watch --force >"$T/watch2.log" 2>&1 || bad "forced watch re-run exited $?"
grep -q "watch: stage:watch follows:finetune scored:$rows new:0 " "$T/watch2.log" && ok "forced watch re-run resumed: scored:$rows new:0" ||
    { bad "forced watch re-run did not resume"; grep "watch:" "$T/watch2.log" | tail -3; }

# ---- 4. a failure in one group stops the group waiting for it in another
cat >"$T/fail.cfg" <<EOF
pipeline = { dir = "$T/f"; stages = (
  { name = "broken"; command = "preprocess"; config = "$SRC/configs/demo_preprocess.cfg"; after = []; ranks = 1;
    set = ["input.root=$T/nonexistent", "output.dir=@dir/broken"]; },
  { name = "gen"; command = "synth"; after = []; ranks = 1; set = ["output.dir=@dir/data", "synth.datasets=imagenet"]; },
  { name = "next"; command = "synth"; after = ["broken", "gen"]; ranks = 1; set = ["output.dir=@dir/next"]; } ); };
EOF
timeout 120 mpirun -np 2 "$BIN" run "$T/fail.cfg" --set synth.scale=tiny --set pipeline.poll_s=0.2 >"$T/fail.log" 2>&1
rc=$?
grep -q "wave:1 group:1 ranks:1 world_ranks:1-1 stages:gen,next" "$T/fail.log" || bad "failure test: 'next' not scheduled after 'gen' in the other group"
if [ "$rc" = 1 ] && grep -q "stage:next not started: stage 'broken' of this wave failed" "$T/fail.log" && [ -s "$T/f/.mp3d/broken.failed" ] &&
   [ ! -e "$T/f/next" ]; then
    ok "a failed stage (marker $(cat "$T/f/.mp3d/broken.failed")) stopped the group waiting for it: exit 1, 'next' not run"
else bad "failure test: exit $rc (124 = hung)"; grep -E "pipeline|ERROR" "$T/fail.log" | tail -5; fi

echo "test_run_groups: $((SECONDS - t0)) s; $fail failed"
[ "$fail" -eq 0 ]
