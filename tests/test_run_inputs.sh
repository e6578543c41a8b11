#!/usr/bin/env bash
# mp3d run, issue 16's small items: (1) a stage name that is not a plain file name ('../../x') is a
# config error naming file, line and name, and nothing is written outside pipeline.dir; (2) an
# external input rewritten in place (same size, same second, other nanoseconds) re-runs the stage
# instead of keeping its stale shards; (3) a config value a stage rejects is logged as an ERROR
# naming the config. A tiny DeepLesion cohort, a few seconds.
set -u
BIN=${MP3D_BIN:?MP3D_BIN not set}
SRC=${MP3D_SOURCE_DIR:?MP3D_SOURCE_DIR not set}
T=$(mktemp -d /tmp/mp3d_run_inputs.XXXXXX)
trap 'rm -rf "$T"' EXIT
fail=0
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fail=$((fail + 1)); }

# 1. stage names
mkdir -p "$T/a/b"
cat >"$T/a/b/evil.cfg" <<CFG
pipeline = { dir = "$T/a/b/run";
  stages = ( { name = "../../x"; command = "synth"; set = ["output.dir=@dir/data", "synth.scale=tiny", "synth.datasets=imagenet"]; } ); };
CFG
"$BIN" run "$T/a/b/evil.cfg" >"$T/evil.log" 2>&1
rc=$?
[ "$rc" = 2 ] && grep -q "evil.cfg:2: stage name '../../x' must be letters, digits" "$T/evil.log" &&
    ok "stage name '../../x': exit 2 naming file, line and name" || { bad "stage name '../../x': exit $rc"; tail -n 3 "$T/evil.log"; }
left=$(find "$T" -name "x.*" | head -n 3)
[ -z "$left" ] && ok "no marker written outside pipeline.dir" || bad "files written: $left"

# 2. an input changed in place
"$BIN" synth --set output.dir="$T/data" --set synth.scale=tiny --set synth.datasets=deeplesion >"$T/synth.log" 2>&1 ||
    { bad "synth"; tail -n 3 "$T/synth.log"; }
cat >"$T/p.cfg" <<CFG
pipeline = { dir = "$T/run";
  stages = ( { name = "prep"; command = "preprocess"; config = "$SRC/configs/demo_preprocess.cfg";
               set = ["input.root=$T/data/deeplesion", "output.dir=@dir/prep"]; } ); };
CFG
"$BIN" run "$T/p.cfg" >"$T/run1.log" 2>&1 || bad "first run exited $?"
"$BIN" run "$T/p.cfg" --dry-run >"$T/dry1.log" 2>&1
grep -q "stage:prep .*action:skip" "$T/dry1.log" && ok "unchanged input: the stage is skipped" ||
    { bad "unchanged input not skipped"; grep "stage:prep" "$T/dry1.log"; }
f=$T/data/deeplesion/DL_info.csv
sec=$(stat -c %Y "$f")
size=$(stat -c %s "$f")
# the same bytes count, one digit of the last line changed, and the same mtime second
/usr/bin/python3 - "$f" <<'PY'
import sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
i = len(b) - 2
while not chr(b[i]).isdigit(): i -= 1
b[i] = ord("1") if b[i] != ord("1") else ord("2")
open(p, "wb").write(bytes(b))
PY
touch -d "@$sec.123456789" "$f"
[ "$(stat -c %s "$f")" = "$size" ] && [ "$(stat -c %Y "$f")" = "$sec" ] && ok "DL_info.csv rewritten: same size, same mtime second" ||
    bad "the rewrite changed size or second"
"$BIN" run "$T/p.cfg" --dry-run >"$T/dry2.log" 2>&1
grep -q "stage:prep .*action:would-run" "$T/dry2.log" && ok "input changed in place: the stage re-runs" ||
    { bad "input changed in place: $(grep -o 'stage:prep .*' "$T/dry2.log")"; }

# 3. a config value a stage rejects (semantic, beyond the schema's range) is an ERROR naming the
#    config file, key and value (was logged at INFO), exit 2
mpirun -np 2 "$BIN" preprocess "$SRC/configs/demo_preprocess.cfg" --set input.root="$T/data/deeplesion" --set output.dir="$T/pp4" \
    --set preprocess.num_slices=4 >"$T/sem.log" 2>&1
rc=$?
[ "$rc" = 2 ] && grep -q "^\[rank 0\] ERROR .*configs/demo_preprocess.cfg: preprocess.num_slices = 4 (must be odd" "$T/sem.log" &&
    [ "$(grep -c "num_slices = 4" "$T/sem.log")" = 1 ] && ok "preprocess.num_slices = 4: one ERROR line naming the config, exit 2" ||
    { bad "semantic config error: exit $rc"; grep "num_slices" "$T/sem.log"; }

echo "test_run_inputs: $fail failed"
[ "$fail" -eq 0 ]
