#!/usr/bin/env bash
# Runs every libFuzzer harness of tests/fuzz for MINUTES minutes each, JOBS at a time (default 2),
# under nice -n 19; builds build-fuzz/ with clang-14 (-DMP3D_FUZZ=ON: ASan + UBSan + libFuzzer)
# first. New interesting inputs are merged (-merge=1, minimising) into tests/fuzz/corpus/<name>/;
# crash/leak/timeout/oom inputs are copied to tests/fuzz/crashes/<name>/ (add them to the corpus
# once fixed; inputs that crash inside a third-party library go to tests/fuzz/known/, which ctest
# does not replay). A crash ends that harness's run early (its row shows the seconds it ran);
# FUZZ_TIMEOUT (seconds per input, default 20): at nice 19 on a loaded machine an input that
# takes milliseconds alone can exceed 20 s of wall time and end the run as a false "timeout".
# FUZZ_FORK=1 runs libFuzzer with -fork=1 -ignore_crashes=1 to go on past crashes
# (FUZZ_FORK="h5 ..." only for the harnesses named: h5's known crashes are inside libhdf5). Executions and coverage per harness (libFuzzer's last "#N ... cov: ft:" line) go
# to results/fuzz.md.
#   bash tests/fuzz/run.sh MINUTES [harness ...]
set -euo pipefail
MINUTES=${1:?usage: run.sh MINUTES [harness ...]}
shift
SRC=$(cd "$(dirname "$0")/../.." && pwd)
ALL="dlinfo dets coco config png jpeg archive h5 pth"
HARNESSES=${*:-$ALL}
JOBS=${FUZZ_JOBS:-2}
BUILD=${FUZZ_BUILD:-$SRC/build-fuzz}
OUT=${FUZZ_RESULTS:-$SRC/results/fuzz.md}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 HDF5_USE_FILE_LOCKING=FALSE OPENBLAS_NUM_THREADS=1
# Leaks inside libconfig and Open MPI are suppressed (tests/fuzz/lsan.supp says why); ours are findings.
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$SRC/tests/fuzz/lsan.supp:print_suppressions=0}
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

command -v clang-14 >/dev/null || { echo "run.sh: clang-14 missing (apt-get install -y clang-14 libfuzzer-14-dev)"; exit 2; }
cmake -S "$SRC" -B "$BUILD" -DCMAKE_C_COMPILER=clang-14 -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMP3D_FUZZ=ON \
      -DMP3D_ARCH_FLAGS="" >/dev/null
nice -n 19 cmake --build "$BUILD" -j2 --target fuzz_all

WORK=$BUILD/fuzz-work
mkdir -p "$WORK"
run_one() {
  local h=$1 corpus=$SRC/tests/fuzz/corpus/$1 new=$WORK/$1-new art=$WORK/$1-artifacts/
  rm -rf "$art"   # findings of an earlier run are not this run's
  mkdir -p "$corpus" "$new" "$art"
  local extra=()
  [ -f "$SRC/tests/fuzz/$h.dict" ] && extra+=(-dict="$SRC/tests/fuzz/$h.dict")
  local fork=${FUZZ_FORK:-}
  [ "$fork" = 1 ] || [[ " $fork " == *" $h "* ]] || fork=
  [ -n "$fork" ] && extra+=(-fork=1 -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1)
  # -max_len: big enough for a tiny PNG/zip/HDF5 file; -rss_limit_mb: an input that makes a
  # parser allocate gigabytes is a finding (oom-*), not a machine in swap.
  nice -n 19 "$BUILD/tests/fuzz/fuzz_$h" "$new" "$corpus" "${extra[@]}" -max_total_time=$((MINUTES * 60)) \
      -max_len=${FUZZ_MAX_LEN:-65536} -rss_limit_mb=2048 -timeout=${FUZZ_TIMEOUT:-20} -print_final_stats=1 \
      -artifact_prefix="$art" -close_fd_mask=3 >"$WORK/$h.log" 2>&1 || true
  # minimise: keep the committed corpus plus what adds coverage
  nice -n 19 "$BUILD/tests/fuzz/fuzz_$h" -merge=1 "$corpus" "$new" -max_len=${FUZZ_MAX_LEN:-65536} \
      -rss_limit_mb=2048 -timeout=20 -close_fd_mask=3 >"$WORK/$h.merge.log" 2>&1 || true
  rm -rf "$new"
  if compgen -G "$art*" >/dev/null; then
    mkdir -p "$SRC/tests/fuzz/crashes/$h"
    cp "$art"* "$SRC/tests/fuzz/crashes/$h/"
  fi
}

running=0
for h in $HARNESSES; do
  run_one "$h" &
  running=$((running + 1))
  if [ $running -ge "$JOBS" ]; then wait -n; running=$((running - 1)); fi
done
wait

{
  echo "# Fuzzing results"
  echo
  echo "tests/fuzz/run.sh $MINUTES ($(date -u +%Y-%m-%dT%H:%MZ), $(git -C "$SRC" rev-parse --short=12 HEAD), $JOBS at a time, nice 19, clang-14 libFuzzer + ASan + UBSan)."
  echo
  echo "| harness | seconds | executions | exec/s | cov | ft | corpus files | findings |"
  echo "|---|---|---|---|---|---|---|---|"
  for h in $HARNESSES; do
    log=$WORK/$h.log
    last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
    # fork mode (-fork=1) prints no final stats: "#N: cov: .. exec/s E .. time: Ts" lines instead
    execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' ||
            echo "$last" | grep -oE '^#[0-9]+' | tr -d '#' || echo 0)
    eps=$(grep -oE 'stat::average_exec_per_sec: *[0-9]+' "$log" | grep -oE '[0-9]+$' ||
          echo "$last" | grep -oE 'exec/s:? [0-9]+' | grep -oE '[0-9]+$' || echo 0)
    secs=$(echo "$last" | grep -oE 'time: [0-9]+s' | grep -oE '[0-9]+' ||
           echo $(( ${execs:-0} > 0 && ${eps:-0} > 0 ? execs / eps : 0 )))
    crashes=$(echo "$last" | grep -oE 'oom/timeout/crash: [0-9/]+' || true)
    cov=$(echo "$last" | grep -oE 'cov: [0-9]+' | grep -oE '[0-9]+' || echo "?")
    ft=$(echo "$last" | grep -oE 'ft: [0-9]+' | grep -oE '[0-9]+' || echo "?")
    files=$(find "$SRC/tests/fuzz/corpus/$h" -type f | wc -l)
    finds=$(ls "$WORK/$h-artifacts/" 2>/dev/null | tr '\n' ' ')
    echo "| $h | $secs | $execs | $eps | $cov | $ft | $files | ${finds:-none}${crashes:+ ($crashes, fork mode)} |"
  done
} >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
cat "$OUT"
