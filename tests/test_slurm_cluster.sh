#!/usr/bin/env bash
# A real single-node Slurm cluster (munge + slurmctld + slurmd, private state in a temp folder,
# stopped by recorded PIDs also when a check fails) running the job scripts in slurm/:
#   1. slurm/submit.sh runs the demo pipeline (configs/demo.cfg, or $MP3D_SLURM_PIPELINE) at tiny
#      scale with fast training settings, one job per stage following the `after` graph: every job
#      COMPLETED with ExitCode 0:0, each started after the jobs of the stages it depends on ended,
#      the watch job ran beside the fine-tuning job and scored its checkpoints, every stage's
#      marker, the shards, and the final evaluation's report (report.md, froc.json).
#   2. slurm/pretrain.sbatch with a stand-in trainer (2 tasks): USR1 to the batch shell, as
#      --signal=B:USR1@300 sends it, must reach both tasks through srun; they "checkpoint" and
#      exit 75, the script requeues the job, the second run resumes and completes.
#   3. slurm/shard.sbatch --list as a job array: task N runs line N of the list.
#   4. With the trainer (argument 1: tests' train_tool, which writes a small classification
#      shard): `mp3d train` through slurm/pretrain.sbatch on 2 ranks, preempted with USR1 after
#      its step-12 checkpoint, requeued, resumed; its final parameters, buffers and momentum
#      are bit-identical (h5diff) to those of an uninterrupted job.
#   5. The same trainer with rank 1 SIGKILLed mid-checkpoint (argument 2: tests' fault_preload
#      library, LD_PRELOAD): the job ends by itself (not at its time limit), step 6 stays valid.
# Needs root and Debian's munge slurmctld slurmd slurm-client; installs them when missing only
# with CI=true or MP3D_SLURM_INSTALL=1, otherwise skips (exit 77). MP3D_KEEP=1 keeps the folder.
# shellcheck disable=SC2015  # "check && ok || bad": ok never fails
set -u
fail=0
BIN=${MP3D_BIN:?MP3D_BIN not set}
SRC=${MP3D_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
PIPE=${MP3D_SLURM_PIPELINE:-$SRC/configs/demo.cfg}
TIMEOUT=${MP3D_SLURM_TIMEOUT:-240} # seconds for all jobs of one part
TOOL=${1:-} # tests/train_tool (make-shard); without it part 4 fails as not run
PRELOAD=${2:-} # tests/fault_preload library; without it part 5 fails as not run
t_start=$SECONDS

if [ "$(id -u)" != 0 ]; then
    echo "SKIP: the Slurm cluster test needs root (slurmd runs jobs as their users)"
    exit 77
fi
missing=()
for p in munged:munge slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client; do
    command -v "${p%%:*}" >/dev/null || missing+=("${p##*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "${CI:-}" = true ] || [ "${MP3D_SLURM_INSTALL:-0}" = 1 ]; then
        echo "installing ${missing[*]}"
        apt-get update -q >/dev/null &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null ||
            { echo "FAIL: apt-get install ${missing[*]}"; exit 1; }
    else
        echo "SKIP: missing packages ${missing[*]} (apt-get install them, or set MP3D_SLURM_INSTALL=1)"
        exit 77
    fi
fi

# shellcheck source-path=SCRIPTDIR source=../slurm/local-cluster.sh
. "$SRC/slurm/local-cluster.sh"
# shellcheck source-path=SCRIPTDIR source=test_slurm_lib.sh
. "$SRC/tests/test_slurm_lib.sh"

T=$(mktemp -d /tmp/mp3d_slurm.XXXXXX)
chmod 755 "$T" # munged, running as user munge, must reach its socket below it
CL=$T/cluster
cleanup() {
    trap - EXIT INT TERM
    lc_down "$CL"
    if [ "${MP3D_KEEP:-0}" = 1 ]; then echo "kept $T"; else rm -rf "$T"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

lc_up "$CL" || { echo "FAIL: cluster did not come up"; exit 1; }
export SLURM_CONF=$CL/slurm.conf
ok "cluster up in $((SECONDS - t_start))s ($(sinfo -h -o '%N %c CPUs %T'))"
cd "$T" || exit 1

# ---- 2 (submitted first, it waits longest): preemption plumbing with a stand-in trainer.
mkdir -p "$T/fake" "$T/logs"
cat >"$T/fake/trainer.sh" <<'EOF'
#!/usr/bin/env bash
# Stand-in for `mp3d train`: a run that finds its checkpoint completes; otherwise it waits for
# USR1, writes a checkpoint and exits 75 like the trainer does.
r=${SLURM_PROCID:-0}
echo "rank:$r restart:${SLURM_RESTART_COUNT:-0} openblas:${OPENBLAS_NUM_THREADS:-unset} args:$*" >>"$FAKE_STATE/calls.$r"
if [ -e "$FAKE_STATE/ckpt.$r" ]; then echo "rank $r: resumed from ckpt.$r"; exit 0; fi
trap 'echo "rank $r: USR1, writing checkpoint"; echo step >"$FAKE_STATE/ckpt.$r"; exit 75' USR1
touch "$FAKE_STATE/running.$r"
while :; do sleep 0.1; done
EOF
chmod +x "$T/fake/trainer.sh"
pre_job=$(FAKE_STATE=$T/fake MP3D_BIN=$T/fake/trainer.sh sbatch --parsable --nodes=1 --ntasks-per-node=2 \
    --cpus-per-task=1 --time=10 --output="$T/logs/%x-%j.out" "$SRC/slurm/pretrain.sbatch" "$T/fake/pretrain.cfg" --set train.lr=0.1)
pre_job=${pre_job%%;*}
[ -n "$pre_job" ] || { bad "sbatch pretrain.sbatch"; exit 1; }
# A job chained after it (as submit.sh chains stages) must wait through the requeue.
dep_job=$(sbatch --parsable --dependency="afterok:$pre_job" --kill-on-invalid-dep=yes --ntasks=1 --time=5 \
    --output="$T/logs/after-%j.out" --wrap "echo after-pretrain")
dep_job=${dep_job%%;*}

# ---- 4: the real trainer, preempted, against an uninterrupted job.
if [ -n "$TOOL" ]; then
    "$TOOL" make-shard "$T/tdata" 96 32 24 4 7 >/dev/null || { bad "train_tool make-shard"; exit 1; }
    cat >"$T/train.cfg" <<EOF
input = { root = "$T/tdata"; };
model = { arch = "resnet3dv1c18"; width = 0.5; norm = "gn"; gn_groups = 4; num_classes = 4; };
train = { batch = 32; crop = 24; max_steps = 60; ckpt_every = 6; ckpt_keep = 20; lr = 0.05; lr_batch = 32; };
EOF
    tr_args=(--parsable --nodes=1 --ntasks-per-node=2 --cpus-per-task=1 --time=20)
    ref_job=$(sbatch "${tr_args[@]}" --job-name=mp3d-ref --output="$T/logs/%x-%j.out" "$SRC/slurm/pretrain.sbatch" \
        "$T/train.cfg" --set output.dir="$T/train_ref")
    ref_job=${ref_job%%;*}
    tr_job=$(sbatch "${tr_args[@]}" --job-name=mp3d-train --output="$T/logs/%x-%j.out" "$SRC/slurm/pretrain.sbatch" \
        "$T/train.cfg" --set output.dir="$T/train_pre")
    tr_job=${tr_job%%;*}
fi

# ---- 5: a rank killed in the middle of a checkpoint (LD_PRELOAD=tests' fault_preload, argument
# 2): under srun the other rank must not wait in a collective until the time limit.
if [ -n "$TOOL" ] && [ -n "$PRELOAD" ]; then
    kill_job=$(LD_PRELOAD=$PRELOAD MP3D_FAULT="kill:ckpt_00000012.h5.tmp:1:3" sbatch "${tr_args[@]}" --time=10 \
        --job-name=mp3d-kill --output="$T/logs/%x-%j.out" "$SRC/slurm/pretrain.sbatch" "$T/train.cfg" \
        --set output.dir="$T/train_kill")
    kill_job=${kill_job%%;*}
fi

# ---- 3: a job array over a list of datasets, with a stand-in mp3d recording its arguments.
cat >"$T/fake/mp3d.sh" <<'EOF'
#!/usr/bin/env bash
echo "$* procid:${SLURM_PROCID:-0}" >"$FAKE_STATE/array.${SLURM_ARRAY_TASK_ID:-none}.${SLURM_PROCID:-0}"
EOF
chmod +x "$T/fake/mp3d.sh"
printf '# datasets\npreprocess a.cfg\n\nvdt b.cfg --set vdt.crop=32  # inline comment\nvdt c.cfg\n' >"$T/fake/datasets.list"
arr_job=$(FAKE_STATE=$T/fake MP3D_BIN=$T/fake/mp3d.sh sbatch --parsable --array=0-2 --ntasks=1 --time=5 \
    --output="$T/logs/%x-%A_%a.out" "$SRC/slurm/shard.sbatch" --list "$T/fake/datasets.list" --set log.level=info)
arr_job=${arr_job%%;*}

# ---- 1: the pipeline as jobs following its `after` graph.
# Exactly as README.md's "Trying the scripts without a cluster" writes it (tests/test_readme.sh
# checks that this file holds the README's lines): the full demo recipe at tiny scale.
export MP3D_SBATCH_ARGS="--nodes=1 --ntasks=2 --ntasks-per-node=2 --cpus-per-task=1"
README_SETS=(--set synth.scale=tiny)
RUN=$T/run
t_pipe=$SECONDS
if ! "$SRC/slurm/submit.sh" "$PIPE" --set synth.scale=tiny --set pipeline.dir="$RUN" >"$T/jobs.txt" 2>"$T/submit.err"; then
    bad "submit.sh $PIPE"
    sed 's/^/  | /' "$T/submit.err"
    exit 1
fi
mapfile -t jobs <"$T/jobs.txt"
stages=()
afters=()
follows=()
while read -r s a f; do
    stages+=("$s")
    afters+=("$a")
    follows+=("$f")
done < <("$BIN" run "$PIPE" --dry-run --set pipeline.groups=false "${README_SETS[@]}" --set pipeline.dir="$RUN" 2>&1 |
         sed -n 's/.*pipeline: stage:\([^ ]*\) command:[^ ]* after:\([^ ]*\) follow:\([^ ]*\) .*/\1 \2 \3/p')
if [ ${#jobs[@]} = ${#stages[@]} ] && [ ${#jobs[@]} -gt 0 ]; then
    ok "submit.sh printed ${#jobs[@]} job ids for stages ${stages[*]}"
else
    bad "submit.sh printed ${#jobs[@]} job ids for ${#stages[@]} stages"; sed 's/^/  | /' "$T/submit.err"
fi

# The real trainer first: it must still be running when its signal comes.
if [ -n "$TOOL" ]; then
    trlog=$T/logs/mp3d-train-$tr_job.out
    # shellcheck disable=SC2016  # evaluated later, by slurm_preempt_and_check
    slurm_preempt_and_check "$tr_job" '[ -e "$T/train_pre/ckpt_00000012.h5" ]' "$TIMEOUT" "$trlog"
    slurm_wait_jobs "$TIMEOUT" "$ref_job" || bad "uninterrupted training job $ref_job did not finish"
    slurm_check_completed "uninterrupted training" "$ref_job" "$T/logs/mp3d-ref-$ref_job.out"
    grep -q "train: stopped by signal at step" "$trlog" && ok "trainer: stopped by the forwarded USR1, checkpoint written" ||
        bad "trainer log lacks 'stopped by signal'"
    resumed=$(grep -o "resume: step:[0-9]*" "$trlog" | head -n 1)
    [ -n "$resumed" ] && ok "trainer: requeued run $resumed" || bad "trainer: requeued run did not resume"
    final=ckpt_00000060.h5
    same=1
    for g in /params /buffers /optim/momentum; do
        h5ls "$T/train_ref/$final$g" >/dev/null 2>&1 || continue
        if ! h5diff "$T/train_ref/$final" "$T/train_pre/$final" "$g" "$g" >"$T/h5diff.out" 2>&1; then
            same=0; bad "preempted+resumed $g differs from the uninterrupted run"; head -n 20 "$T/h5diff.out" | sed 's/^/  | /'
        fi
    done
    [ "$same" = 1 ] && ok "preempted+resumed final parameters, buffers, momentum bit-identical to the uninterrupted job (h5diff)"
    # The comparison can fail: two different steps of the same run differ.
    if h5diff "$T/train_ref/$final" "$T/train_ref/ckpt_00000054.h5" /params /params >/dev/null 2>&1; then
        bad "h5diff finds no difference between steps 54 and 60: the comparison proves nothing"
    fi
else
    bad "part 4 (real trainer preemption) not run: pass tests/train_tool as argument 1"
fi
if [ -n "${kill_job:-}" ]; then
    klog=$T/logs/mp3d-kill-$kill_job.out
    if slurm_wait_jobs 150 "$kill_job"; then
        st=$(slurm_field "$kill_job" JobState) rt=$(slurm_field "$kill_job" RunTime)
        [ "$st" != COMPLETED ] && ok "killed rank: job $kill_job ended $st after $rt (time limit 10 min)" ||
            bad "killed rank: job $kill_job COMPLETED"
        grep -q "fault_preload: rank 1 killed at write 3" "$klog" && ok "killed rank: rank 1 died mid-checkpoint" ||
            { bad "killed rank: the fault did not fire"; tail -n 20 "$klog" | sed 's/^/  | /'; }
        [ -s "$T/train_kill/ckpt_00000006.h5" ] && "$BIN" inspect "$T/train_kill/ckpt_00000006.h5" >/dev/null 2>&1 &&
            ok "killed rank: the previous checkpoint (step 6) is valid" || bad "killed rank: no valid step-6 checkpoint"
    else
        bad "killed rank: job $kill_job still running 150 s later (a rank waits forever)"
        scancel "$kill_job"
    fi
elif [ -z "$PRELOAD" ]; then
    bad "part 5 (killed rank) not run: pass tests/fault_preload as argument 2"
fi

# shellcheck disable=SC2016  # evaluated later, by slurm_preempt_and_check
slurm_preempt_and_check "$pre_job" '[ -e "$T/fake/running.0" ] && [ -e "$T/fake/running.1" ]' "$TIMEOUT" \
    "$T/logs/mp3d-pretrain-$pre_job.out"
for r in 0 1; do
    if [ "$(cut -d' ' -f2-3 "$T/fake/calls.$r" 2>/dev/null | tr '\n' ' ')" = "restart:0 openblas:1 restart:1 openblas:1 " ]; then
        ok "preempt: rank $r ran twice (restart 0 then 1) with OPENBLAS_NUM_THREADS=1 from --cpus-per-task"
    else
        bad "preempt: rank $r calls:"; sed 's/^/  | /' "$T/fake/calls.$r" 2>/dev/null
    fi
    [ -s "$T/fake/ckpt.$r" ] && ok "preempt: rank $r wrote its checkpoint on USR1" || bad "preempt: rank $r wrote no checkpoint"
done
prelog=$T/logs/mp3d-pretrain-$pre_job.out
slurm_wait_jobs "$TIMEOUT" "$dep_job" || bad "job $dep_job (afterok:$pre_job) did not finish"
slurm_check_completed "afterok:$pre_job job" "$dep_job" "$T/logs/after-$dep_job.out"
dep_start=$(slurm_field "$dep_job" StartTime) pre_end=$(slurm_field "$pre_job" EndTime)
[[ ! "$dep_start" < "$pre_end" ]] && ok "job $dep_job (afterok) started $dep_start, after the requeued job ended $pre_end" ||
    bad "job $dep_job (afterok) started $dep_start before the requeued job ended $pre_end"
for want in "signal:USR1 forwarded_to:" "preempted: checkpoint written, requeueing job:$pre_job" \
            "rank 1: resumed from ckpt.1" "exit:0 job:$pre_job restart:1"; do
    grep -qF -- "$want" "$prelog" && ok "preempt log: '$want'" || { bad "preempt log lacks '$want'"; sed 's/^/  | /' "$prelog"; }
done

slurm_wait_jobs "$TIMEOUT" "$arr_job" || bad "array job $arr_job did not finish"
slurm_check_completed "array" "$arr_job"
want_args=("preprocess a.cfg --set log.level=info procid:0" "vdt b.cfg --set vdt.crop=32 --set log.level=info procid:0"
           "vdt c.cfg --set log.level=info procid:0")
for i in 0 1 2; do
    got=$(cat "$T/fake/array.$i.0" 2>/dev/null)
    [ "$got" = "${want_args[$i]}" ] && ok "array task $i ran '$got'" || bad "array task $i ran '$got', want '${want_args[$i]}'"
done

if slurm_wait_jobs "$TIMEOUT" "${jobs[@]}"; then
    ok "pipeline: ${#jobs[@]} jobs ended in $((SECONDS - t_pipe))s"
else
    bad "pipeline jobs did not end within ${TIMEOUT}s"
fi
# job_of STAGE: the job id of a stage.
job_of() {
    local k
    for k in "${!stages[@]}"; do [ "${stages[$k]}" = "$1" ] && echo "${jobs[$k]:-}"; done
}
for i in "${!jobs[@]}"; do
    j=${jobs[$i]} s=${stages[$i]:-?}
    log=$RUN/logs/mp3d-$s-$j.out
    slurm_check_completed "stage $s" "$j" "$log"
    [ "$(slurm_field "$j" JobName)" = "mp3d-$s" ] || bad "stage $s: job $j is named $(slurm_field "$j" JobName)"
    start=$(slurm_field "$j" StartTime)
    if [[ ! "$start" =~ ^20[0-9][0-9]- ]]; then
        bad "stage $s: job $j never started (StartTime=$start)"
    fi
    for d in ${afters[$i]//,/ }; do
        [ "$d" = - ] && continue
        dj=$(job_of "$d") dend=$(slurm_field "$(job_of "$d")" EndTime)
        if [[ "$start" < "$dend" ]]; then
            bad "stage $s: job $j started $start before job $dj of '$d' it depends on ended ($dend)"
        else
            ok "stage $s: job $j started $start, after job $dj of '$d' ended ($dend)"
        fi
    done
    if [ "${follows[$i]}" != - ]; then
        fj=$(job_of "${follows[$i]}")
        fstart=$(slurm_field "$fj" StartTime) fend=$(slurm_field "$fj" EndTime)
        if [[ ! "$start" < "$fstart" ]] && [[ "$start" < "$fend" ]]; then
            ok "stage $s: job $j started $start beside job $fj of '${follows[$i]}' ($fstart .. $fend)"
        else
            bad "stage $s: job $j started $start, not while job $fj of '${follows[$i]}' ran ($fstart .. $fend)"
        fi
    fi
    grep -q "pipeline: stage:$s exit:0" "$log" 2>/dev/null && ok "stage $s: log $log says exit:0" ||
        bad "stage $s: log $log lacks 'pipeline: stage:$s exit:0'"
    grep -q "slurm: job:$j .*ntasks:2 " "$log" 2>/dev/null || bad "stage $s: log lacks the allocation line with ntasks:2"
    [ -s "$RUN/.mp3d/$s.done" ] && ok "stage $s: completion marker" || bad "stage $s: no $RUN/.mp3d/$s.done"
done
# The stage outputs themselves (those of the demo's stages that are in the pipeline).
in_stages() { local x; for x in "${stages[@]}"; do [ "$x" = "$1" ] && return 0; done; return 1; }
for want in data/deeplesion/DL_info.csv preprocess vdt_imagenet vdt_coco pretrain finetune anchors/anchors.cfg \
            watch/checkpoints.csv watch/best.h5 evaluate/report/report.md evaluate/report/froc.json; do
    case "$want" in
        */*) in_stages "${want%%/*}" || [ "${want%%/*}" = data ] || continue
             [ -s "$RUN/$want" ] && ok "output $want" || bad "no output $RUN/$want" ;;
        *)
            in_stages "$want" || continue
            n=$(find "$RUN/$want" -name '*.h5' -size +0 2>/dev/null | wc -l)
            [ "$n" -gt 0 ] && ok "output $want: $n HDF5 file(s)" || bad "output $want: no .h5 files in $RUN/$want" ;;
    esac
done
if in_stages watch; then
    n=$(($(wc -l <"$RUN/watch/checkpoints.csv" 2>/dev/null || echo 1) - 1))
    [ "$n" -ge 1 ] && ok "watch: $n checkpoint(s) scored on the val split" || bad "watch: no checkpoint scored"
    grep -q "mfroc" "$RUN/evaluate/report/froc.json" 2>/dev/null && ok "report: froc.json holds mfroc" || bad "report: froc.json lacks mfroc"
fi

echo "test_slurm_cluster: wall ${SECONDS}s (pipeline $((SECONDS - t_pipe))s); $fail failed"
[ "$fail" -eq 0 ]
