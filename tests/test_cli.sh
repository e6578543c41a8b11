#!/usr/bin/env bash
# The mp3d command line: help, version, usage errors, config errors and an unwritable output
# folder, each with its exit code and message; the same at 2 ranks (message printed once); the
# commit --version names is the source tree's.
set -u
BIN=${MP3D_BIN:?MP3D_BIN not set}
T=$(mktemp -d /tmp/mp3d_cli.XXXXXX)
trap 'rm -rf "$T"' EXIT
fail=0
check() { # check NAME WANT_RC GOT_RC FILE NEEDLE
    if [ "$3" != "$2" ]; then echo "FAIL $1: exit $3, want $2"; sed 's/^/  | /' "$4"; fail=$((fail+1)); return; fi
    if [ -n "$5" ] && ! grep -qF -- "$5" "$4"; then echo "FAIL $1: output lacks '$5'"; sed 's/^/  | /' "$4"; fail=$((fail+1)); return; fi
    echo "ok   $1"
}
"$BIN" --version >"$T/o" 2>&1; check version 0 $? "$T/o" "mp3d 0."
# the commit it names is the source tree's HEAD now (written at build time, not at cmake's first
# run); "-dirty" is not compared: the demo and its tests rewrite tracked results while tests run
SRC=$(cd "$(dirname "$0")/.." && pwd)
want=$(git -C "$SRC" rev-parse --short=12 HEAD 2>/dev/null) || want=unknown
check version-commit 0 0 "$T/o" "(git $want"
"$BIN" --help >"$T/o" 2>&1; check help 0 $? "$T/o" "subcommands:"
"$BIN" froc --help >"$T/o" 2>&1; check sub-help 0 $? "$T/o" "--detections"
"$BIN" >"$T/o" 2>&1; check no-args 2 $? "$T/o" "usage: mp3d"
"$BIN" bogus >"$T/o" 2>&1; check unknown-sub 2 $? "$T/o" "unknown subcommand 'bogus'"
"$BIN" synth --frobnicate >"$T/o" 2>&1; check unknown-opt 2 $? "$T/o" "unknown option '--frobnicate'"
"$BIN" train >"$T/o" 2>&1; check missing-config 2 $? "$T/o" "missing CONFIG"
"$BIN" synth --set train.lr >"$T/o" 2>&1; check set-no-eq 2 $? "$T/o" "expected key=value"
printf 'train = {\n  lr = -0.5;\n};\n' >"$T/bad.cfg"
"$BIN" train "$T/bad.cfg" >"$T/o" 2>&1; check range 2 $? "$T/o" "bad.cfg:2: train.lr = -0.5 (must be a number in [1e-09, 100])"
printf 'output = { dir = "%s/out"; };\ntrain = { lr = 0.1;\n' "$T" >"$T/syn.cfg"
"$BIN" train "$T/syn.cfg" >"$T/o" 2>&1; check syntax 2 $? "$T/o" "syntax error"
"$BIN" synth --out "$T" --scale enormous >"$T/o" 2>&1; check choice 2 $? "$T/o" "synth.scale = \"enormous\" (must be one of tiny|small|medium)"
"$BIN" synth --set output.dirr=/x >"$T/o" 2>&1; check unknown-key 2 $? "$T/o" "did you mean 'output.dir'"
printf 'input = { root = "%s"; };\noutput = { dir = "%s/det"; };\ntrain = { task = "detect"; sync_bn = true; };\n' "$T" "$T" >"$T/det.cfg"
"$BIN" train "$T/det.cfg" >"$T/o" 2>&1
check sync-bn-detect 2 $? "$T/o" 'train.sync_bn = true is supported for train.task = "classify" only (here "detect")'
: >"$T/afile"
"$BIN" synth --out "$T/afile/sub" --scale tiny >"$T/o" 2>&1; check unwritable 1 $? "$T/o" "$T/afile/sub"
if command -v mpirun >/dev/null; then
    mpirun -np 2 "$BIN" train "$T/bad.cfg" >"$T/o" 2>&1; rc=$?
    check mpi-range 2 $rc "$T/o" "train.lr = -0.5"
    n=$(grep -c "train.lr = -0.5" "$T/o")
    if [ "$n" != 1 ]; then echo "FAIL mpi-range: message printed $n times, want once"; fail=$((fail+1)); fi
fi
echo "test_cli: $fail failed"
[ $fail -eq 0 ]
