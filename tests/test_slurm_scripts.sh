#!/usr/bin/env bash
# The logic of the job scripts in slurm/ without a cluster: stand-in sbatch, scancel, scontrol
# and stat on PATH record what they are asked, a stand-in mp3d records its arguments and
# environment, and the real mp3d supplies the pipeline plans.
#   submit.sh  one job per stage, afterok on the jobs of its `after` stages, a watch beside its stage, the right script per command, options, logs
#              folder, --after, --print, cancelling on a failed sbatch, rejecting a bad pipeline;
#   pretrain.sbatch  USR1 and TERM forwarded to the step, requeue on exit 75 only inside Slurm and
#              below MP3D_MAX_RESTARTS, threads and MPI yield from the allocation, HDF5 locking
#              off on NFS/Lustre unless set, found from a spool copy through SLURM_SUBMIT_DIR;
#   shard.sbatch --list (array task, all entries, bad index, a failing entry), default commands.
# shellcheck disable=SC2015  # "check && ok || bad": ok never fails
set -u
: "${MP3D_BIN:?MP3D_BIN not set}" # the real mp3d: submit.sh asks it for the plans
SRC=${MP3D_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
S=$SRC/slurm
fail=0
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fail=$((fail + 1)); }
# expect NAME WANT GOT
expect() { if [ "$2" = "$3" ]; then ok "$1"; else bad "$1: got '$3', want '$2'"; fi; }

T=$(mktemp -d /tmp/mp3d_slurm_scripts.XXXXXX)
trap 'rm -rf "$T"' EXIT
mkdir -p "$T/bin" "$T/work"
# The tests' environment sets these for MPI tests; the scripts must decide them here.
unset OMPI_MCA_mpi_yield_when_idle HDF5_USE_FILE_LOCKING OPENBLAS_NUM_THREADS OMP_NUM_THREADS
unset SLURM_JOB_ID SLURM_RESTART_COUNT SLURM_ARRAY_TASK_ID SLURM_CPUS_PER_TASK SLURM_TASKS_PER_NODE SLURM_NTASKS

# ---- stand-ins ----
cat >"$T/bin/sbatch" <<'EOF'
#!/usr/bin/env bash
# records one call per file (one argument per line); prints "<100+n>;cluster" like --parsable.
# --test-only (recorded under $FAKE/testonly): like real sbatch, exit 1 with "allocation failure:
# Requested node configuration is not available" when the job asks more nodes than FAKE_NODES
# (the script's #SBATCH --nodes, overridden by a later --nodes= option), else exit 0 and a
# "to start at" line on stderr
case " $* " in *" --test-only "*)
    mkdir -p "$FAKE/testonly"
    n=$(( $(ls "$FAKE/testonly" | wc -l) + 1 ))
    printf '%s\n' "$@" >"$FAKE/testonly/$n"
    nodes=1
    for a in "$@"; do
        case "$a" in *.sbatch) nodes=$(sed -n 's/^#SBATCH --nodes=\([0-9]*\).*/\1/p' "$a" | tail -n 1) ;; esac
    done
    for a in "$@"; do case "$a" in --nodes=*) nodes=${a#--nodes=} ;; esac; done
    if [ "${nodes:-1}" -gt "${FAKE_NODES:-64}" ]; then
        echo "allocation failure: Requested node configuration is not available" >&2
        exit 1
    fi
    echo "sbatch: Job 9$n to start at 2026-12-04T13:47:34 using $nodes processors on nodes n1 in partition p1" >&2
    exit 0 ;;
esac
n=$(( $(ls "$FAKE/sbatch" 2>/dev/null | wc -l) + 1 ))
mkdir -p "$FAKE/sbatch"
printf '%s\n' "$@" >"$FAKE/sbatch/$n"
[ "$n" = "${FAKE_SBATCH_FAIL_AT:-0}" ] && { echo "sbatch: error: Batch job submission failed" >&2; exit 1; }
echo "$((100 + n));cluster"
EOF
cat >"$T/bin/scancel" <<'EOF'
#!/usr/bin/env bash
echo "$*" >>"$FAKE/scancel"
EOF
cat >"$T/bin/scontrol" <<'EOF'
#!/usr/bin/env bash
# records the call; "requeue" ends the calling batch shell as the controller would (SIGTERM)
echo "$*" >>"$FAKE/scontrol"
case "$1" in
    requeue) [ "${FAKE_REQUEUE_FAIL:-0}" = 1 ] && exit 1; kill -TERM "$PPID"; exit 0 ;;
    show) exit 1 ;;
esac
EOF
cat >"$T/bin/stat" <<'EOF'
#!/usr/bin/env bash
# `stat -f -c %T DIR` reports FAKE_FS; anything else goes to the real stat
if [ "$1" = -f ] && [ -n "${FAKE_FS:-}" ]; then echo "$FAKE_FS"; exit 0; fi
exec /usr/bin/stat "$@"
EOF
cat >"$T/bin/mp3d-fake" <<'EOF'
#!/usr/bin/env bash
# records args and environment; FAKE_MODE: ok | fail3-on-b | trainer (waits for USR1/TERM, exits 75
# unless its checkpoint exists)
{
    echo "args:$*"
    echo "openblas:${OPENBLAS_NUM_THREADS:-unset} omp:${OMP_NUM_THREADS:-unset} yield:${OMPI_MCA_mpi_yield_when_idle:-unset} locking:${HDF5_USE_FILE_LOCKING:-unset}"
} >>"$FAKE/calls"
case "${FAKE_MODE:-ok}" in
    fail3-on-b) case " $* " in *" b.cfg "*) exit 3 ;; esac ;;
    fail1) exit 1 ;;
    trainer)
        [ -e "$FAKE/ckpt" ] && exit 0
        trap 'echo USR1 >"$FAKE/ckpt"; exit 75' USR1
        trap 'echo TERM >"$FAKE/ckpt"; exit 75' TERM
        touch "$FAKE/running"
        for _ in $(seq 1 300); do sleep 0.1; done
        exit 9 ;;
esac
exit 0
EOF
chmod +x "$T/bin/"*
export PATH="$T/bin:$PATH"
export FAKE=$T/fake
reset_fake() { rm -rf "$FAKE"; mkdir -p "$FAKE"; }

# ---- submit.sh ----
cat >"$T/p.cfg" <<'EOF'
pipeline = {
  dir = "run";
  stages = (
    { name = "synth"; command = "synth"; set = ["output.dir=@dir/data"]; },
    { name = "prep"; command = "preprocess"; },
    { name = "pretrain"; command = "train"; },
    { name = "anchors"; command = "anchors"; },
    { name = "evaluate"; command = "evaluate"; },
    { name = "score"; command = "froc"; }
  );
};
EOF
cd "$T/work" || exit 1
reset_fake
out=$(MP3D_SBATCH_ARGS="--partition=p1 --account=lab" MP3D_SHARD_SBATCH="--ntasks=3" MP3D_PRETRAIN_SBATCH="--nodes=2" \
      MP3D_EVALUATE_SBATCH="--cpus-per-task=5" "$S/submit.sh" ../p.cfg --set synth.scale=tiny --set=run.seed=7 2>"$T/err")
rc=$?
expect "submit: exit code" 0 "$rc"
expect "submit: job ids one per line, last the final job" "101 102 103 104 105 106" "${out//$'\n'/ }"
[ -d "$T/work/run/logs" ] && ok "submit: logs folder <pipeline.dir>/logs created" || bad "submit: no $T/work/run/logs"
names=(synth prep pretrain anchors evaluate score)
scripts=(shard shard pretrain shard evaluate evaluate)
kinds=("--ntasks=3" "--ntasks=3" "--nodes=2" "--ntasks=3" "--cpus-per-task=5" "--cpus-per-task=5")
for i in 0 1 2 3 4 5; do
    f=$FAKE/sbatch/$((i + 1))
    want="--parsable
--export=ALL
--job-name=mp3d-${names[$i]}
--chdir=$T/work
--output=$T/work/run/logs/%x-%j.out"
    [ "$i" -gt 0 ] && want="$want
--dependency=afterok:$((100 + i))
--kill-on-invalid-dep=yes"
    want="$want
--partition=p1
--account=lab
${kinds[$i]}
$S/${scripts[$i]}.sbatch
run
$T/p.cfg
--only
${names[$i]}
--set
pipeline.groups=false
--set
synth.scale=tiny
--set
run.seed=7"
    if [ "$(cat "$f" 2>/dev/null)" = "$want" ]; then
        ok "submit: stage ${names[$i]} -> ${scripts[$i]}.sbatch ${kinds[$i]}$([ "$i" -gt 0 ] && echo " afterok:$((100 + i))")"
    else
        bad "submit: sbatch call $((i + 1)) for ${names[$i]}:"; diff <(echo "$want") "$f" | sed 's/^/  | /'
    fi
done
grep -q "stage:pretrain command:train script:pretrain.sbatch job:103 after:102 beside:none log:$T/work/run/logs/mp3d-pretrain-103.out" "$T/err" &&
    ok "submit: logs stage, script, job and log path" || { bad "submit: log lines"; sed 's/^/  | /' "$T/err"; }

reset_fake
out=$("$S/submit.sh" ../p.cfg --after 77 --set pipeline.dir="$T/elsewhere" 2>/dev/null)
expect "submit --after: first job waits for 77" "--dependency=afterok:77" "$(grep -- --dependency "$FAKE/sbatch/1")"
expect "submit --set pipeline.dir: logs under the new dir" "--output=$T/elsewhere/logs/%x-%j.out" "$(grep -- --output "$FAKE/sbatch/1")"

# The `after` graph: each job waits for the jobs of its stage's dependencies; a follow stage
# starts beside the followed job (after:), and the last job also waits for the stages nothing
# else waits for (here: side).
cat >"$T/g.cfg" <<'EOF2'
pipeline = {
  dir = "run";
  stages = (
    { name = "synth"; command = "synth"; },
    { name = "a"; command = "preprocess"; after = ["synth"]; ranks = 1; },
    { name = "b"; command = "vdt"; after = ["synth"]; ranks = 1; },
    { name = "side"; command = "vdt"; after = ["synth"]; },
    { name = "tr"; command = "train"; after = ["b", "a"]; set = ["output.dir=@dir/tr"]; },
    { name = "watch"; command = "evaluate"; follow = "tr"; ranks = 1; set = ["output.dir=@dir/watch"]; },
    { name = "ev"; command = "evaluate"; after = ["watch"]; }
  );
};
EOF2
reset_fake
out=$("$S/submit.sh" ../g.cfg --after 77 2>"$T/err")
expect "submit graph: exit code and ids" "0 101 102 103 104 105 106 107" "$? ${out//$'\n'/ }"
want_deps=("--dependency=afterok:77" "--dependency=afterok:101" "--dependency=afterok:101" "--dependency=afterok:101"
           "--dependency=afterok:103:102" "--dependency=afterok:103:102,after:105" "--dependency=afterok:106:104")
gnames=(synth a b side tr watch ev)
for i in 0 1 2 3 4 5 6; do
    expect "submit graph: ${gnames[$i]} ${want_deps[$i]}" "${want_deps[$i]}" "$(grep -- --dependency "$FAKE/sbatch/$((i + 1))")"
done
grep -q "stage:watch command:evaluate script:evaluate.sbatch job:106 after:103:102 beside:105 " "$T/err" &&
    ok "submit graph: the watch job's log line names its dependencies and the job it runs beside" || { bad "submit graph log"; sed 's/^/  | /' "$T/err"; }

reset_fake
out=$(FAKE_SBATCH_FAIL_AT=3 "$S/submit.sh" ../p.cfg 2>"$T/err")
rc=$?
expect "submit: failed sbatch -> exit 1" 1 "$rc"
expect "submit: failed sbatch -> ids printed so far" "101 102" "${out//$'\n'/ }"
expect "submit: failed sbatch -> earlier jobs cancelled" "101 102" "$(cat "$FAKE/scancel" 2>/dev/null)"

reset_fake
printf 'pipeline = { dir = "r"; stages = ( { name = "a"; command = "bogus"; } ); };\n' >"$T/bad.cfg"
"$S/submit.sh" "$T/bad.cfg" >/dev/null 2>"$T/err"
rc=$?
expect "submit: bad pipeline -> exit 2" 2 "$rc"
grep -q "unknown command 'bogus'" "$T/err" && ok "submit: bad pipeline -> mp3d's message shown" || bad "submit: message for bad pipeline"
[ ! -e "$FAKE/sbatch" ] && ok "submit: bad pipeline -> nothing submitted" || bad "submit: bad pipeline submitted jobs"
"$S/submit.sh" "$T/nope.cfg" >/dev/null 2>&1
expect "submit: missing config -> exit 2" 2 "$?"
"$S/submit.sh" ../p.cfg --frob >/dev/null 2>&1
expect "submit: unknown option -> exit 2" 2 "$?"

reset_fake
out=$("$S/submit.sh" ../p.cfg --print 2>/dev/null)
expect "submit --print: one sbatch line per stage" 6 "$(grep -c '^sbatch --parsable' <<<"$out")"
[ ! -e "$FAKE/sbatch" ] && ok "submit --print: nothing submitted" || bad "submit --print submitted jobs"

# sbatch --test-only first: a job no node can run is named with what it asks and its override
# variable, and nothing is submitted (it would stay PENDING with reason PartitionConfig)
reset_fake
FAKE_NODES=2 "$S/submit.sh" ../p.cfg >"$T/out" 2>"$T/err"
expect "submit: unsatisfiable job -> exit 2" 2 "$?"
[ ! -e "$FAKE/sbatch" ] && [ ! -s "$T/out" ] && ok "submit: unsatisfiable job -> nothing submitted, no job id printed" ||
    bad "submit: unsatisfiable job submitted $(find "$FAKE/sbatch" -type f 2>/dev/null | wc -l) jobs"
expect "submit: one --test-only call per stage" 6 "$(find "$FAKE/testonly" -type f 2>/dev/null | wc -l)"
grep -q -- "--dependency" "$FAKE/testonly/1" "$FAKE/testonly/3" && bad "submit: --test-only call carries a dependency" ||
    ok "submit: --test-only calls carry no dependency (the jobs do not exist yet)"
grep -qx -- "--only" "$FAKE/testonly/3" && grep -qx "pretrain" "$FAKE/testonly/3" && grep -qx "$S/pretrain.sbatch" "$FAKE/testonly/3" &&
    ok "submit: --test-only call 3 is the pretrain stage's job script and command" || bad "submit: --test-only call 3"
want="submit.sh: the job of stage 'pretrain' (pretrain.sbatch) cannot run on this cluster: sbatch --test-only says: allocation failure: Requested node configuration is not available"
grep -qxF "$want" "$T/err" && ok "submit: names the stage, its script and sbatch's reason" || { bad "submit: unsatisfiable message"; sed 's/^/  | /' "$T/err"; }
grep -qF "it asks --nodes=4 --ntasks-per-node=4 --cpus-per-task=8 --time=24:00:00 (#SBATCH lines of slurm/pretrain.sbatch, then MP3D_SBATCH_ARGS='' and MP3D_PRETRAIN_SBATCH='')" "$T/err" &&
    ok "submit: what the job asks, from pretrain.sbatch's #SBATCH lines" || bad "submit: no request summary for pretrain"
grep -qF 'e.g. MP3D_PRETRAIN_SBATCH="--nodes=1' "$T/err" && ok "submit: names MP3D_PRETRAIN_SBATCH as the override" || bad "submit: no override named"
expect "submit: only the pretrain job does not fit 2 nodes" 1 "$(grep -c "cannot run on this cluster" "$T/err")"
grep -q "nothing submitted" "$T/err" && ok "submit: says nothing was submitted" || bad "submit: no 'nothing submitted'"
# the override named in the message makes it fit; overrides are shown in the summary
reset_fake
out=$(FAKE_NODES=2 MP3D_PRETRAIN_SBATCH="--nodes=2 --time=1:00:00" "$S/submit.sh" ../p.cfg 2>"$T/err")
expect "submit: with MP3D_PRETRAIN_SBATCH --nodes=2 -> exit and ids" "0 101 102 103 104 105 106" "$? ${out//$'\n'/ }"
reset_fake
FAKE_NODES=0 MP3D_SBATCH_ARGS="-N 1 --time=5" MP3D_SHARD_SBATCH="--nodes=1 --ntasks=2 --mem=1G" "$S/submit.sh" ../p.cfg >/dev/null 2>"$T/err"
grep -qF "it asks --nodes=1 --ntasks=2 --cpus-per-task=1 --mem=1G --time=5 (#SBATCH lines of slurm/shard.sbatch, then MP3D_SBATCH_ARGS='-N 1 --time=5' and MP3D_SHARD_SBATCH='--nodes=1 --ntasks=2 --mem=1G')" "$T/err" &&
    ok "submit: the request summary applies MP3D_SBATCH_ARGS then the kind's options" || { bad "submit: override summary"; grep "it asks" "$T/err" | sed 's/^/  | /'; }
reset_fake
MP3D_SUBMIT_CHECK=0 FAKE_NODES=0 "$S/submit.sh" ../p.cfg >/dev/null 2>&1
expect "submit: MP3D_SUBMIT_CHECK=0 skips the check" "0 6" "$? $(find "$FAKE/sbatch" -type f | wc -l)"

# ---- pretrain.sbatch: forwarding and requeue (MP3D_LAUNCH=none: the step is mp3d itself) ----
export MP3D_BIN=$T/bin/mp3d-fake MP3D_LAUNCH=none
# run_pretrain SIGNAL ENV...: starts pretrain.sbatch, sends SIGNAL to it once the trainer runs
# (none: no signal), waits; sets rc.
run_pretrain() {
    local sig=$1 pid
    shift
    env "$@" FAKE_MODE=trainer bash "$S/pretrain.sbatch" "$T/pre.cfg" --set train.lr=0.5 >"$T/out" 2>&1 &
    pid=$!
    if [ "$sig" != none ]; then
        for _ in $(seq 1 100); do [ -e "$FAKE/running" ] && break; sleep 0.05; done
        kill -s "$sig" "$pid"
    fi
    wait "$pid"
    rc=$?
}
reset_fake
run_pretrain USR1 SLURM_JOB_ID=42 SLURM_CPUS_PER_TASK=3 SLURM_TASKS_PER_NODE=1 FAKE_FS=ext2/ext3
expect "pretrain USR1: batch shell ended by the requeue (SIGTERM)" 143 "$rc"
expect "pretrain USR1: trainer got USR1 and checkpointed" USR1 "$(cat "$FAKE/ckpt" 2>/dev/null)"
expect "pretrain USR1: scontrol requeue 42" "requeue 42" "$(cat "$FAKE/scontrol" 2>/dev/null)"
expect "pretrain: train subcommand prepended" "args:train $T/pre.cfg --set train.lr=0.5" "$(sed -n 1p "$FAKE/calls")"
# 1 task × 3 CPUs: oversubscribed only on a machine with fewer than 3 cores.
y="unset"
[ "$(getconf _NPROCESSORS_ONLN)" -lt 3 ] && y=1
expect "pretrain: threads from --cpus-per-task=3, yield:$y on $(getconf _NPROCESSORS_ONLN) cores, locking untouched" \
    "openblas:3 omp:3 yield:$y locking:unset" "$(sed -n 2p "$FAKE/calls")"
rm -f "$FAKE/running" "$FAKE/calls" "$FAKE/scontrol"
run_pretrain none SLURM_JOB_ID=42 SLURM_RESTART_COUNT=1 SLURM_TASKS_PER_NODE="4096(x2),3" FAKE_FS=nfs
expect "pretrain resumed run: exit 0" 0 "$rc"
[ ! -e "$FAKE/scontrol" ] && ok "pretrain resumed run: no requeue" || bad "pretrain resumed run called scontrol: $(cat "$FAKE/scontrol")"
expect "pretrain: 4096 tasks/node oversubscribed -> yield; NFS -> locking FALSE" \
    "openblas:1 omp:1 yield:1 locking:FALSE" "$(sed -n 2p "$FAKE/calls")"
grep -q "slurm: job:42 .*restart:1 .*tasks_node0:4096 cpus_per_task:1 .*yield:1 fs:nfs hdf5_locking:FALSE" "$T/out" &&
    ok "pretrain: allocation logged as key:value" || { bad "pretrain: allocation line"; sed 's/^/  | /' "$T/out"; }

reset_fake
run_pretrain TERM SLURM_JOB_ID=43 FAKE_FS=lustre HDF5_USE_FILE_LOCKING=TRUE MP3D_YIELD=0 SLURM_TASKS_PER_NODE=4096 \
    SLURM_CPUS_PER_TASK=4 OPENBLAS_NUM_THREADS=7 MP3D_THREADS=2
expect "pretrain TERM (time limit): forwarded, checkpoint" TERM "$(cat "$FAKE/ckpt" 2>/dev/null)"
expect "pretrain TERM: requeued" "requeue 43" "$(cat "$FAKE/scontrol" 2>/dev/null)"
expect "pretrain: HDF5_USE_FILE_LOCKING, MP3D_YIELD, MP3D_THREADS win; a stray OPENBLAS_NUM_THREADS does not" \
    "openblas:2 omp:2 yield:0 locking:TRUE" "$(sed -n 2p "$FAKE/calls")"

reset_fake
FAKE_MODE=ok SLURM_JOB_ID=47 SLURM_TASKS_PER_NODE="1(x4)" SLURM_CPUS_PER_TASK=1 bash "$S/pretrain.sbatch" "$T/pre.cfg" >/dev/null 2>&1
expect "pretrain: 1 task × 1 CPU per node -> no yield" "0 openblas:1 omp:1 yield:unset locking:unset" "$? $(sed -n 2p "$FAKE/calls")"
reset_fake
run_pretrain USR1 SLURM_JOB_ID=44 SLURM_RESTART_COUNT=5 MP3D_MAX_RESTARTS=5
expect "pretrain at MP3D_MAX_RESTARTS: exit 75" 75 "$rc"
[ ! -e "$FAKE/scontrol" ] && ok "pretrain at MP3D_MAX_RESTARTS: no requeue" || bad "pretrain requeued past the limit"
reset_fake
run_pretrain USR1
expect "pretrain outside Slurm: exit 75, nothing to requeue" "75 none" "$rc $(cat "$FAKE/scontrol" 2>/dev/null || echo none)"
reset_fake
run_pretrain USR1 SLURM_JOB_ID=45 FAKE_REQUEUE_FAIL=1
expect "pretrain: requeue refused -> exit 75" 75 "$rc"
reset_fake
FAKE_MODE=fail1 SLURM_JOB_ID=46 bash "$S/pretrain.sbatch" "$T/pre.cfg" >/dev/null 2>&1
expect "pretrain: trainer failure -> its exit code, no requeue" "1 none" "$? $(cat "$FAKE/scontrol" 2>/dev/null || echo none)"
MP3D_BIN=$T/nope bash "$S/pretrain.sbatch" "$T/pre.cfg" >/dev/null 2>"$T/err"
expect "pretrain: missing binary -> exit 2" 2 "$?"
grep -q "set MP3D_BIN" "$T/err" && ok "pretrain: missing binary message" || bad "pretrain: missing binary message: $(cat "$T/err")"

# sbatch runs a copy from the spool folder: common.sh is found through SLURM_SUBMIT_DIR.
reset_fake
mkdir -p "$T/spool"
cp "$S/pretrain.sbatch" "$T/spool/slurm_script"
SLURM_SUBMIT_DIR=$SRC bash "$T/spool/slurm_script" x.cfg >/dev/null 2>&1
expect "pretrain from a spool copy: finds slurm/ via SLURM_SUBMIT_DIR" "0 args:train x.cfg" "$? $(sed -n 1p "$FAKE/calls")"
reset_fake
(cd "$T" && SLURM_SUBMIT_DIR=$T bash "$T/spool/slurm_script" x.cfg >/dev/null 2>"$T/err")
expect "pretrain from a spool copy without slurm/: exit 2" 2 "$?"

# ---- shard.sbatch and evaluate.sbatch ----
printf '# datasets\npreprocess a.cfg\n\n  vdt b.cfg --set vdt.crop=32  # comment\nvdt c.cfg\n' >"$T/list"
reset_fake
SLURM_ARRAY_TASK_ID=1 bash "$S/shard.sbatch" --list "$T/list" --set x=y >/dev/null 2>&1
expect "shard --list, array task 1: exit 0" 0 "$?"
expect "shard --list, array task 1: runs line 1 only, extra args appended" \
    "args:vdt b.cfg --set vdt.crop=32 --set x=y" "$(grep '^args:' "$FAKE/calls")"
reset_fake
bash "$S/shard.sbatch" --list "$T/list" >/dev/null 2>&1
expect "shard --list without array: every entry in order" "args:preprocess a.cfg|args:vdt b.cfg --set vdt.crop=32|args:vdt c.cfg" \
    "$(grep '^args:' "$FAKE/calls" | paste -sd'|')"
reset_fake
SLURM_ARRAY_TASK_ID=3 bash "$S/shard.sbatch" --list "$T/list" >/dev/null 2>"$T/err"
expect "shard --list, task 3 of 3 entries: exit 2" 2 "$?"
grep -q -- "--array=0-2" "$T/err" && ok "shard --list: bad index message names --array=0-2" || bad "shard bad index message: $(cat "$T/err")"
[ ! -e "$FAKE/calls" ] && ok "shard --list, bad index: nothing run" || bad "shard --list bad index ran something"
reset_fake
FAKE_MODE=fail3-on-b bash "$S/shard.sbatch" --list "$T/list" >/dev/null 2>&1
expect "shard --list: failing entry stops the job with its code" "3 2" "$? $(grep -c '^args:' "$FAKE/calls")"
reset_fake
bash "$S/shard.sbatch" c.cfg >/dev/null 2>&1
bash "$S/shard.sbatch" vdt c.cfg >/dev/null 2>&1
bash "$S/evaluate.sbatch" e.cfg --set eval.split=val >/dev/null 2>&1
bash "$S/evaluate.sbatch" froc --truth t.csv >/dev/null 2>&1
expect "default subcommands: shard=preprocess, evaluate=evaluate; named ones kept" \
    "args:preprocess c.cfg|args:vdt c.cfg|args:evaluate e.cfg --set eval.split=val|args:froc --truth t.csv" \
    "$(grep '^args:' "$FAKE/calls" | paste -sd'|')"
bash "$S/evaluate.sbatch" >/dev/null 2>&1
expect "evaluate without arguments: exit 2" 2 "$?"
MP3D_LAUNCH=bogus bash "$S/evaluate.sbatch" e.cfg >/dev/null 2>&1
expect "MP3D_LAUNCH=bogus: exit 2" 2 "$?"

echo "test_slurm_scripts: $fail failed"
[ "$fail" -eq 0 ]
