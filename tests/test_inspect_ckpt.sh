#!/usr/bin/env bash
# mp3d inspect on checkpoints and foreign files (issue 16): a valid checkpoint says so and exits 0;
# one whose dataset no longer matches its checksum (one float changed in place, `complete` still 1)
# is reported INVALID naming the dataset and exits 1; a file that is neither HDF5 nor CSV exits 1
# naming it. The checkpoint: configs/demo_pretrain.cfg, 2 steps on the tiny cohort (a few seconds).
# Also: an unreadable ckpt_*.h5 does not count toward train.ckpt_keep (valid ones are not pruned).
set -u
BIN=${MP3D_BIN:?MP3D_BIN not set}
SRC=${MP3D_SOURCE_DIR:?MP3D_SOURCE_DIR not set}
T=$(mktemp -d /tmp/mp3d_inspect_ckpt.XXXXXX)
trap 'rm -rf "$T"' EXIT
fail=0
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fail=$((fail + 1)); }

{ "$BIN" synth --out "$T/data" --scale tiny --set synth.datasets=imagenet &&
  "$BIN" vdt "$SRC/configs/demo_vdt_imagenet.cfg" --set input.root="$T/data/imagenet" --set output.dir="$T/vdt" &&
  "$BIN" train "$SRC/configs/demo_pretrain.cfg" --set input.root="$T/vdt" --set output.dir="$T/pre" \
      --set train.max_steps=2 --set train.ckpt_every=2; } >"$T/make.log" 2>&1 || { bad "making the checkpoint"; tail -n 5 "$T/make.log"; }
C=$T/pre/ckpt_00000002.h5

"$BIN" inspect "$C" >"$T/good.txt" 2>"$T/good.err"
rc=$?
[ "$rc" = 0 ] && grep -q "^complete: yes" "$T/good.txt" && grep -q "^checkpoint: valid" "$T/good.txt" &&
    ok "valid checkpoint: complete, valid, exit 0" || { bad "valid checkpoint: exit $rc"; tail -n 3 "$T/good.txt"; }

cp "$C" "$T/bad.h5"
name=$(/usr/bin/python3 - "$T/bad.h5" <<'PY'
import sys, h5py
with h5py.File(sys.argv[1], "r+") as f:
    g = f["params"]
    k = sorted(g.keys())[0]
    v = g[k][()]
    v.flat[0] += 1.0
    g[k][...] = v
    print(k)
PY
)
"$BIN" inspect "$T/bad.h5" >"$T/bad.txt" 2>"$T/bad.err"
rc=$?
[ "$rc" = 1 ] && grep -q "^checkpoint: INVALID: .*$name" "$T/bad.txt" && grep -q "ERROR inspect: .*bad.h5: invalid checkpoint" "$T/bad.err" &&
    ok "checkpoint with a changed value in params/$name: INVALID naming it, exit 1" ||
    { bad "changed checkpoint: exit $rc"; grep "complete\|checkpoint" "$T/bad.txt"; tail -n 2 "$T/bad.err"; }

printf 'hello, not a checkpoint\n' >"$T/notes.bin"
"$BIN" inspect "$T/notes.bin" >"$T/foreign.txt" 2>"$T/foreign.err"
rc=$?
[ "$rc" = 1 ] && grep -q "notes.bin: not a file mp3d writes" "$T/foreign.err" && ok "non-HDF5, non-CSV file: exit 1 naming it" ||
    { bad "foreign file: exit $rc"; cat "$T/foreign.err" | tail -n 2; }

# train.ckpt_keep counts only checkpoints that open: a garbage ckpt_00000100.h5 beside a run
# resumed from step 2 must not make steps 4 and 6 (keep 2) lose step 4
mkdir -p "$T/keep" && cp "$C" "$T/keep/"
printf 'not hdf5\n' >"$T/keep/ckpt_00000100.h5"
"$BIN" train "$SRC/configs/demo_pretrain.cfg" --set input.root="$T/vdt" --set output.dir="$T/keep" \
    --set train.max_steps=6 --set train.ckpt_every=2 --set train.ckpt_keep=2 >"$T/keep.log" 2>&1 || bad "keep run exited $?"
have=$(cd "$T/keep" && ls ckpt_*.h5 | tr '\n' ' ')
[ "$have" = "ckpt_00000004.h5 ckpt_00000006.h5 ckpt_00000100.h5 " ] && grep -q "ckpt:invalid path:.*ckpt_00000100.h5 not counted toward keep:2" "$T/keep.log" &&
    ok "ckpt_keep 2 with an unreadable ckpt_00000100.h5: steps 4 and 6 kept, 2 pruned, the bad file named and left" ||
    { bad "ckpt_keep with an unreadable file: $have"; grep "ckpt:\|resume" "$T/keep.log" | tail -n 6; }

echo "test_inspect_ckpt: $fail failed"
[ "$fail" -eq 0 ]
