#!/usr/bin/env bash
# The detector end to end through the real mp3d binary on the synthetic tiny cohort:
#  1. learnability (issue 5): a narrow detector (ResNet3DV1c-18 x 0.125, GN, FPN 32) trained for
#     a fixed 160 steps (deterministic; lr x0.1 after 3/4) on the 6 training key slices reaches Sens@4FP >= 0.9 on
#     those same slices; the training loss falls below 0.3 x its first logged value; validation
#     writes mfroc / sens_4 to the metrics.
#  2. mp3d evaluate at 1 and 2 ranks writes byte-identical detections CSVs; its FROC figures equal
#     those of `mp3d froc` scoring that CSV against DL_info.csv (original frame end to end).
#     On a split with no labels it writes detections and skips scoring, saying so.
#  3. two ranks: the detect task trains with ranks holding identical parameters and validates.
#  4. mp3d anchors: prints a snippet; feeding the snippet back reports the derived IoU as the
#     configured one.
set -u
TOOL=${1:?usage: test_detect_learn.sh TEST_DETECT_BINARY}
BIN=${MP3D_BIN:?MP3D_BIN not set}
SRC=${MP3D_SOURCE_DIR:?MP3D_SOURCE_DIR not set}
T=$(mktemp -d /tmp/mp3d_detect_learn.XXXXXX)
trap 'rm -rf "$T"' EXIT
fail=0
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fail=$((fail + 1)); }
num() { grep -o "\"$2\":[-0-9.e+]*" "$1" | head -1 | cut -d: -f2; }   # first "key":value of a JSON file
ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 >= b + 0) }'; }

t0=$(date +%s)
"$BIN" synth --out "$T/syn" --scale tiny --set synth.datasets=deeplesion >"$T/synth.log" 2>&1 || { echo "FAIL synth"; cat "$T/synth.log"; exit 1; }
"$BIN" preprocess "$SRC/configs/demo_preprocess.cfg" --set input.root="$T/syn/deeplesion" --set output.dir="$T/pp" \
    >"$T/pp.log" 2>&1 || { echo "FAIL preprocess"; tail "$T/pp.log"; exit 1; }

# 1. learnability: memorise the training key slices (no augmentation, soft-tissue window so the
# 50-HU synthetic lesions stand out). Measured with run.seed 1..6: Sens@1FP = Sens@4FP = 1.0 for
# every seed (the recipe window [-1024, 1050] also reaches Sens@4FP = 1.0, with less margin at 1 FP);
# with a constant lr, or 120 steps, 2 of 4 seeds stopped at 0.43-0.86.
cat >"$T/learn.cfg" <<CFG
input = { root = "$T/pp"; };
output = { dir = "$T/learn"; };
model = { arch = "resnet3dv1c18"; width = 0.125; norm = "gn"; gn_groups = 4; };
train = { task = "detect"; batch = 2; max_steps = 160; lr = 0.02; lr_batch = 2; schedule = "step"; steps = [0.75];
          warmup_iters = 20; clip_grad = 35.0; ckpt_every = 1000; val_every = 20.0; };
det = { train_sizes = [128]; test_size = 128; window = [-160.0, 240.0]; flip = false; zflip = false;
        fpn_channels = 32; fc_dim = 128; roi_samples = 128; rpn_pre_nms = 1000; rpn_post_nms = 300; anchor_scale = 4.0; };
CFG
"$BIN" train "$T/learn.cfg" >"$T/learn.log" 2>&1 || bad "train exited $?"
ck="$T/learn/ckpt_00000160.h5"
[ -f "$ck" ] && ok "160 steps trained, checkpoint written" || bad "no final checkpoint"
grep -E "step:(1|10|50|100|120|160) " "$T/learn.log" | sed 's/^.*INFO /  /'
l_first=$(grep -o '"loss":[0-9.e+-]*' "$T/learn/metrics.jsonl" | head -1 | cut -d: -f2)
l_last=$(grep -o '"loss":[0-9.e+-]*' "$T/learn/metrics.jsonl" | tail -1 | cut -d: -f2)
if [ -n "$l_first" ] && [ -n "$l_last" ] && awk -v a="$l_first" -v b="$l_last" 'BEGIN { exit !(b < 0.3 * a) }'; then
    ok "loss falls: first $l_first -> last $l_last (< 0.3 x)"
else bad "loss did not fall enough: first '$l_first' last '$l_last'"; fi
if grep -q '"mfroc":' "$T/learn/metrics.jsonl" && grep -q '"sens_4":' "$T/learn/metrics.jsonl"; then
    ok "validation metrics: $(grep -o '"mfroc":[0-9.]*,"sens_0.5":[0-9.]*,"sens_1":[0-9.]*,"sens_2":[0-9.]*,"sens_4":[0-9.]*' "$T/learn/metrics.jsonl" | tail -1)"
else bad "no mfroc/sens_4 in the validation metrics"; fi

# 2. evaluate on the training split at 1 and 2 ranks
for np in 1 2; do
    mpirun -np $np "$BIN" evaluate "$SRC/configs/demo_evaluate.cfg" --set eval.checkpoint="$ck" --set input.root="$T/pp" \
        --set eval.split=train --set eval.bootstrap=50 --set output.dir="$T/ev$np" >"$T/ev$np.log" 2>&1 || bad "evaluate -np $np exited $?"
done
grep -E "evaluate: (sens|checkpoint)" "$T/ev1.log" | sed 's/^.*INFO /  /'
if [ -s "$T/ev1/detections.csv" ] && cmp -s "$T/ev1/detections.csv" "$T/ev2/detections.csv"; then
    ok "detections.csv identical at 1 and 2 ranks ($(($(wc -l <"$T/ev1/detections.csv") - 1)) detections)"
else bad "detections differ between 1 and 2 ranks (or are missing)"; fi
ndet=$(($(wc -l <"$T/ev1/detections.csv") - 1))
if command -v h5ls >/dev/null; then
    h5ls "$T/ev1/detections.h5" 2>/dev/null | grep -q "detections *Dataset {$ndet, 6}" && ok "detections.h5 holds ($ndet, 6)" \
        || bad "detections.h5: expected a ($ndet, 6) dataset: $(h5ls "$T/ev1/detections.h5" 2>&1 | head -2)"
fi
s4=$(num "$T/ev1/report/froc.json" 4)
[ -z "$s4" ] && s4=$(grep -o '"4":[0-9.]*' "$T/ev1/report/froc.json" | head -1 | cut -d: -f2)
if [ -n "$s4" ] && ge "$s4" 0.9; then ok "learnability: Sens@4FP on the training key slices = $s4 (>= 0.9)"
else bad "learnability: Sens@4FP = '$s4' (< 0.9)"; fi
for f in report.md report.html froc.svg per_lesion.csv; do
    [ -s "$T/ev1/report/$f" ] || bad "report file $f missing"
done
"$BIN" froc --truth "$T/syn/deeplesion/DL_info.csv" --detections "$T/ev1/detections.csv" --split train --json \
    --set eval.bootstrap=0 >"$T/froc.json" 2>"$T/froc.log" || bad "mp3d froc exited $?"
m_eval=$(num "$T/ev1/report/froc.json" mfroc)
m_froc=$(num "$T/froc.json" mfroc)
if [ -n "$m_eval" ] && [ "$m_eval" = "$m_froc" ]; then ok "mp3d froc on the CSV vs DL_info.csv gives the same mFROC ($m_froc)"
else bad "mFROC differs: evaluate '$m_eval' vs mp3d froc '$m_froc'"; fi
ni_eval=$(num "$T/ev1/report/froc.json" n_lesions)
ni_froc=$(num "$T/froc.json" n_lesions)
[ -n "$ni_eval" ] && [ "$ni_eval" = "$ni_froc" ] && ok "same lesion count ($ni_froc)" || bad "lesion counts differ: '$ni_eval' vs '$ni_froc'"

# no labels: the test split's key slices without lesion rows
mkdir -p "$T/nolab"
"$TOOL" make-unlabelled "$T/pp" "$T/nolab" test >"$T/nolab.log" 2>&1 || { bad "make-unlabelled failed"; cat "$T/nolab.log"; }
mpirun -np 2 "$BIN" evaluate "$SRC/configs/demo_evaluate.cfg" --set eval.checkpoint="$ck" --set input.root="$T/nolab" \
    --set eval.split=test --set output.dir="$T/evn" >"$T/evn.log" 2>&1 || bad "evaluate on the unlabelled split exited $?"
if grep -q "no labels: detections written, scoring skipped" "$T/evn.log" && [ -s "$T/evn/detections.csv" ] && [ ! -e "$T/evn/report" ]; then
    ok "unlabelled split: $(($(wc -l <"$T/evn/detections.csv") - 1)) detections written, scoring skipped"
else bad "unlabelled split: expected detections and the 'no labels' message, no report"; fi

# 3. two ranks, a few steps: identical parameters on both ranks, validation gathered
mpirun -np 2 "$BIN" train "$T/learn.cfg" --set output.dir="$T/two" --set train.max_steps=6 --set train.check_every=3 \
    --set train.val_every=1.0 >"$T/two.log" 2>&1 || bad "2-rank train exited $?"
n_id=$(grep -c "check:identical" "$T/two.log")
n_val=$(grep -c '"mfroc":' "$T/two/metrics.jsonl" 2>/dev/null)
[ "$n_id" -ge 2 ] && [ "${n_val:-0}" -ge 2 ] && ok "2 ranks: $n_id identical-parameter checks, $n_val validations" \
    || bad "2 ranks: identical checks $n_id, validations '${n_val}'"

# 4. anchors
"$BIN" anchors "$T/learn.cfg" --set output.dir="$T/anch" >"$T/anch.out" 2>"$T/anch.log" || bad "mp3d anchors exited $?"
snip=$(grep '^det = ' "$T/anch.out")
derived=$(grep -o 'derived [0-9.]*' "$T/anch.out" | head -1 | cut -d' ' -f2)
echo "  $snip (derived IoU $derived)"
scale=$(echo "$snip" | sed -n 's/.*anchor_scale = \([0-9.]*\);.*/\1/p')
ratios=$(echo "$snip" | sed -n 's/.*anchor_ratios = \(\[[^]]*\]\);.*/\1/p' | tr -d ' ')
if [ -n "$scale" ] && [ -n "$ratios" ] && [ -f "$T/anch/anchors.cfg" ]; then
    "$BIN" anchors "$T/learn.cfg" --set det.anchor_scale="$scale" --set "det.anchor_ratios=$ratios" >"$T/anch2.out" 2>"$T/anch2.log"
    conf2=$(grep -o 'configured [0-9.]*' "$T/anch2.out" | head -1 | cut -d' ' -f2)
    [ -n "$conf2" ] && [ "$conf2" = "$derived" ] && ok "anchors: the snippet fed back reports IoU $conf2 as configured" \
        || bad "anchors: snippet fed back gives '$conf2', derived was '$derived'"
    ge "$derived" "$(grep -o 'configured [0-9.]*' "$T/anch.out" | head -1 | cut -d' ' -f2)" && ok "anchors: derived IoU >= configured" || bad "anchors: derived IoU below configured"
else bad "anchors: no snippet / anchors.cfg"; cat "$T/anch.log"; fi

echo "time: $(($(date +%s) - t0)) s"
[ $fail -eq 0 ] && echo "test_detect_learn: passed" || echo "test_detect_learn: FAILED ($fail)"
exit $((fail > 0))
