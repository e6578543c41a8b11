#!/usr/bin/env bash
# mp3d run re-runs a training stage whose config changed from scratch: the earlier run's output.dir
# (written under another signature) is moved to <output.dir>.stale-<signature> instead of being
# resumed; an unchanged re-run skips the stage; --set output.dir on mp3d run is refused. configs/demo.cfg at tiny scale, synth + vdt_imagenet
# + pretrain only, 2 epochs.
set -u
BIN=${MP3D_BIN:?MP3D_BIN not set}
SRC=${MP3D_SOURCE_DIR:?MP3D_SOURCE_DIR not set}
T=$(mktemp -d /tmp/mp3d_run_stale.XXXXXX)
trap 'rm -rf "$T"' EXIT
fail=0
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fail=$((fail + 1)); }
run() { mpirun -np 2 --oversubscribe "$BIN" run "$SRC/configs/demo.cfg" --set synth.scale=tiny --set pipeline.dir="$T/run" \
    --only synth,vdt_imagenet,pretrain --set train.epochs=2 --set train.batch=8 "$@"; }

# --set output.dir on mp3d run would reach every stage: refused (usage error), nothing written
mpirun -np 2 --oversubscribe "$BIN" run "$SRC/configs/demo.cfg" --set pipeline.dir="$T/od" --set output.dir="$T/one" >"$T/0.log" 2>&1
rc=$?
[ "$rc" -eq 2 ] && grep -q "set --set pipeline.dir=DIR instead" "$T/0.log" && [ ! -e "$T/one" ] && [ ! -e "$T/od/synth" ] \
    && ok "--set output.dir on mp3d run: refused (exit 2) with the pipeline.dir advice, nothing written" \
    || bad "--set output.dir on mp3d run: exit $rc, $(grep -E 'ERROR' "$T/0.log" | head -2)"
run >"$T/1.log" 2>&1 || bad "first run exited $?"
ls "$T/run/pretrain"/ckpt_*.h5 >/dev/null 2>&1 && ok "first run trained (checkpoints in pretrain/)" || bad "first run: no checkpoints"
run --set train.lr=0.02 >"$T/2.log" 2>&1 || bad "second run (train.lr changed) exited $?"
if grep -q "stage:pretrain output.dir .* was written with other settings .* moved to $T/run/pretrain.stale-" "$T/2.log" \
    && ls "$T/run"/pretrain.stale-*/ckpt_*.h5 >/dev/null 2>&1; then
    ok "changed train.lr: the old pretrain folder moved aside with its checkpoints"
else bad "changed train.lr: old outputs not moved aside: $(grep -E 'WARN|ERROR' "$T/2.log" | head -3)"; fi
grep -q "ckpt:none dir:$T/run/pretrain (fresh start)" "$T/2.log" && ! grep -q "resume: WARN" "$T/2.log" \
    && ok "the changed stage trained afresh (no resume of the old run)" || bad "the changed stage resumed or did not start fresh"
grep -q "stage:synth .*action:skip" "$T/2.log" && grep -q "stage:vdt_imagenet .*action:skip" "$T/2.log" \
    && ok "unchanged stages before it skipped" || bad "unchanged stages were re-run"
run --set train.lr=0.02 >"$T/3.log" 2>&1 || bad "third run exited $?"
grep -q "stage:pretrain .*action:skip .*complete, same config and inputs" "$T/3.log" && [ "$(ls -d "$T/run"/pretrain.stale-* | wc -l)" -eq 1 ] \
    && ok "same settings again: pretrain skipped, nothing moved" || bad "third run: $(grep 'stage:pretrain' "$T/3.log" | head -2)"

[ "$fail" -eq 0 ] && echo "test_run_stale: passed" || echo "test_run_stale: FAILED ($fail)"
[ "$fail" -eq 0 ]
