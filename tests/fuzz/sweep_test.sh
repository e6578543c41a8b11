#!/bin/sh
# A crashed harness (ASan abort, libFuzzer's crash exit) cannot run its atexit cleanup and leaves
# its scratch folder behind; the next harness that makes one removes the folders of processes that
# no longer exist (tests/fuzz/fuzz_common.h). This plants such a folder for a PID above pid_max
# (never alive) and one for this shell (alive), replays a corpus that writes scratch files, and
# checks that the first is gone and the second kept.
# Usage: sweep_test.sh REPLAY_BINARY CORPUS_DIR
set -eu
replay=$1
corpus=$2
base=/dev/shm
[ -w /dev/shm ] || base=/tmp
dead=$base/mp3d-fuzz-$(( $(cat /proc/sys/kernel/pid_max) + 1 ))
live=$base/mp3d-fuzz-$$
mkdir -p "$dead" "$live"
echo x > "$dead/input.h5"
echo x > "$live/input.h5"
rc=0
if ! "$replay" "$corpus" > "$live/replay.log" 2>&1; then
    tail -5 "$live/replay.log"
    echo "FAIL: $replay $corpus exited non-zero"
    rc=1
fi
[ ! -e "$dead" ] || { echo "FAIL: $dead (a PID that cannot exist) was left behind"; rc=1; }
[ -e "$live/input.h5" ] || { echo "FAIL: $live (a live PID) was removed"; rc=1; }
rm -rf "$live" "$dead"
[ "$rc" = 0 ] && echo "ok: the scratch folder of a dead PID removed, a live PID's kept"
exit "$rc"
