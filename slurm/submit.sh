#!/usr/bin/env bash
# Submits a whole pipeline as Slurm jobs, one per stage, following the stages' `after` graph:
# each job waits with --dependency=afterok for the jobs of the stages its stage depends on (its
# `after` list, or the stage listed before it when it has none; a failed job cancels those after
# it: --kill-on-invalid-dep). A stage with `follow` (a watch scoring a training stage's
# checkpoints) runs beside the followed job: --dependency=after:<followed job> (it starts once that
# job has started) and it ends by itself when the followed stage's completion marker appears. The
# job of the last listed stage also waits for every stage no other stage waits for, so it ends the
# pipeline. Each job runs `mp3d run PIPELINE.cfg --only STAGE --set pipeline.groups=false [--set
# ...]` through the sbatch script of its kind (the job's allocation replaces the stage's rank
# count); stage names and dependencies come from `mp3d run PIPELINE.cfg --dry-run`. Prints the
# job ids, one per line in listed order, the last line the final job. Logs go to
# <pipeline.dir>/logs/<job name>-<job id>.out.
#
#   slurm/submit.sh PIPELINE.cfg [--set key=value ...] [--after JOBID] [--print]
#
#   --set key=value  passed to every stage (pipeline.dir=... moves the whole run)
#   --after JOBID    the stages that depend on no other stage also wait for JOBID (afterok)
#   --print          print the sbatch command lines instead of submitting
#
# Environment: MP3D_BIN (the mp3d binary), MP3D_SBATCH_ARGS (extra sbatch options for every job,
# e.g. "--partition=cpu --account=lab"), MP3D_PRETRAIN_SBATCH / MP3D_SHARD_SBATCH /
# MP3D_EVALUATE_SBATCH (options for one kind, e.g. "--nodes=16 --time=48:00:00"), MP3D_LOG_DIR,
# MP3D_SUBMIT_CHECK=0 (skip the check below).
#
# Before submitting anything, every job is tried with `sbatch --test-only` (same options and
# script, without the dependency): a job the cluster can never run (e.g. "Requested node
# configuration is not available": more nodes, CPUs or memory than a node of the partition has)
# would otherwise stay PENDING forever (reason PartitionConfig). Then submit.sh names the stage,
# what its job asks (the script's #SBATCH lines with the overrides applied) and the variable that
# changes it, and exits 2 without submitting any job.
set -u

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$here/common.sh"
MP3D_SLURM_DIR=$here
export MP3D_SLURM_DIR

usage() {
    sed -n '2,29p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# mp3d_script_for COMMAND: the job script for a stage command.
mp3d_script_for() {
    case "$1" in
        train) echo pretrain.sbatch ;;
        evaluate | froc | infer) echo evaluate.sbatch ;;
        *) echo shard.sbatch ;; # synth, preprocess, vdt, anchors: data-sized jobs
    esac
}

cfg=""
after=""
print=0
sets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --set)
            [ $# -ge 2 ] || usage
            sets+=(--set "$2")
            shift 2 ;;
        --set=*) sets+=(--set "${1#--set=}"); shift ;;
        --after)
            [ $# -ge 2 ] || usage
            after=$2
            shift 2 ;;
        --print) print=1; shift ;;
        -h | --help) usage ;;
        -*) echo "submit.sh: unknown option '$1'" >&2; usage ;;
        *)
            [ -z "$cfg" ] || { echo "submit.sh: unexpected argument '$1'" >&2; usage; }
            cfg=$1
            shift ;;
    esac
done
[ -n "$cfg" ] || usage
[ -r "$cfg" ] || { echo "submit.sh: cannot read pipeline config '$cfg'" >&2; exit 2; }
cfg="$(cd "$(dirname "$cfg")" && pwd)/$(basename "$cfg")"

mp3d_find_bin || exit 2
if [ "$print" = 0 ] && ! command -v sbatch >/dev/null; then
    echo "submit.sh: sbatch not found (is this a Slurm login node? SLURM_CONF=${SLURM_CONF:-unset})" >&2
    exit 2
fi

# The plan, from mp3d itself: one process, nothing written, rank counts not applied (each stage
# is its own job).
plan=$("$MP3D_BIN" run "$cfg" --dry-run --set pipeline.groups=false ${sets[@]+"${sets[@]}"} 2>&1)
rc=$?
if [ "$rc" -ne 0 ]; then
    echo "submit.sh: '$MP3D_BIN run $cfg --dry-run' failed with exit $rc:" >&2
    echo "$plan" >&2
    exit 2
fi
dir=$(sed -n 's/.*pipeline:[^ ]* dir:\([^ ]*\) stages:.*/\1/p' <<<"$plan" | head -n 1)
names=()
cmds=()
afters=()
follows=()
while read -r name cmd aft fol; do
    names+=("$name")
    cmds+=("$cmd")
    afters+=("$aft")
    follows+=("$fol")
done < <(sed -n 's/.*pipeline: stage:\([^ ]*\) command:\([^ ]*\) after:\([^ ]*\) follow:\([^ ]*\) .*/\1 \2 \3 \4/p' <<<"$plan")
if [ ${#names[@]} -eq 0 ] || [ -z "$dir" ]; then
    echo "submit.sh: no stages in the plan of $cfg:" >&2
    echo "$plan" >&2
    exit 2
fi
# index NAME: position of a stage in the list.
index() {
    local k
    for k in "${!names[@]}"; do
        [ "${names[$k]}" = "$1" ] && { echo "$k"; return 0; }
    done
    echo "submit.sh: the plan names an unknown stage '$1'" >&2
    return 1
}
# Stages nothing else waits for (by `after` or `follow`): the last job waits for them too.
last=$((${#names[@]} - 1))
waited=()
for i in "${!names[@]}"; do
    for d in ${afters[$i]//,/ } ${follows[$i]}; do
        [ "$d" = - ] || waited+=("$d")
    done
done
sinks=()
for i in "${!names[@]}"; do
    [ "$i" = "$last" ] && continue
    case " ${waited[*]:-} " in *" ${names[$i]} "*) ;; *) sinks+=("${names[$i]}") ;; esac
done

# kind_var SCRIPT: the variable holding the options of that job script's kind.
kind_var() {
    case "$1" in
        pretrain.sbatch) echo MP3D_PRETRAIN_SBATCH ;;
        evaluate.sbatch) echo MP3D_EVALUATE_SBATCH ;;
        *) echo MP3D_SHARD_SBATCH ;;
    esac
}
# request SCRIPT OPTION...: the resources a job asks for, "key=value" for nodes, ntasks,
# ntasks-per-node, cpus-per-task, mem, mem-per-cpu, time and partition: the script's #SBATCH
# lines, then the options in order (sbatch lets the command line override the script; the later
# of two options wins).
request() {
    local script=$1 o k v out=""
    shift
    declare -A req=()
    local order=(partition nodes ntasks ntasks-per-node cpus-per-task mem mem-per-cpu time)
    while read -r o; do
        set -- "$o" "$@"
    done < <(sed -n 's/^#SBATCH[[:space:]]\{1,\}\(--[^[:space:]]*\).*/\1/p' "$here/$script" | tac)
    for o in "$@"; do
        case "$o" in
            -N*) k=nodes v=${o#-N} ;;
            -n*) k=ntasks v=${o#-n} ;;
            -c*) k=cpus-per-task v=${o#-c} ;;
            -t*) k=time v=${o#-t} ;;
            -p*) k=partition v=${o#-p} ;;
            --*=*) k=${o%%=*} k=${k#--} v=${o#*=} ;;
            *) continue ;;
        esac
        req[$k]=$v
    done
    for k in "${order[@]}"; do
        [ -n "${req[$k]:-}" ] && out="$out --$k=${req[$k]}"
    done
    echo "${out# }"
}

if [ "$print" = 0 ] && [ "${MP3D_SUBMIT_CHECK:-1}" != 0 ]; then
    unfit=0
    hinted=""
    for i in "${!names[@]}"; do
        script=$(mp3d_script_for "${cmds[$i]}")
        kv=$(kind_var "$script")
        # shellcheck disable=SC2206  # option strings are lists of words by design
        opts=(${MP3D_SBATCH_ARGS:-} ${!kv:-})
        if ! said=$(sbatch --test-only --export=ALL --job-name="mp3d-${names[$i]}" --chdir="$PWD" --output=/dev/null \
                     ${opts[@]+"${opts[@]}"} "$here/$script" run "$cfg" --only "${names[$i]}" --set pipeline.groups=false \
                     ${sets[@]+"${sets[@]}"} 2>&1); then
            unfit=1
            echo "submit.sh: the job of stage '${names[$i]}' ($script) cannot run on this cluster:" \
                 "sbatch --test-only says: $(tr '\n' ' ' <<<"$said" | sed 's/ *$//')" >&2
            echo "submit.sh:   it asks $(request "$script" ${opts[@]+"${opts[@]}"}) (#SBATCH lines of slurm/$script," \
                 "then MP3D_SBATCH_ARGS='${MP3D_SBATCH_ARGS:-}' and $kv='${!kv:-}')" >&2
            case " $hinted " in *" $kv "*) continue ;; esac
            hinted="$hinted $kv"
            echo "submit.sh:   override it to fit a node of the partition (sinfo -N -o '%N %P %c %m %l' lists them), e.g." \
                 "$kv=\"--nodes=1 --ntasks=2 --ntasks-per-node=2 --cpus-per-task=1 --time=1:00:00\" (this kind of job)" \
                 "or MP3D_SBATCH_ARGS=\"...\" (every job)" >&2
        fi
    done
    if [ "$unfit" = 1 ]; then
        echo "submit.sh: nothing submitted" >&2
        exit 2
    fi
fi

logdir=${MP3D_LOG_DIR:-$dir/logs}
if [ "$print" = 0 ]; then
    mkdir -p "$logdir" || exit 1
    logdir=$(cd "$logdir" && pwd)
fi

submitted=()
ids=()
for i in "${!names[@]}"; do
    script=$(mp3d_script_for "${cmds[$i]}")
    case "$script" in
        pretrain.sbatch) kind=${MP3D_PRETRAIN_SBATCH:-} ;;
        evaluate.sbatch) kind=${MP3D_EVALUATE_SBATCH:-} ;;
        *) kind=${MP3D_SHARD_SBATCH:-} ;;
    esac
    deps=()
    for d in ${afters[$i]//,/ }; do
        [ "$d" = - ] && continue
        k=$(index "$d") || exit 2
        deps+=("${ids[$k]}")
    done
    if [ "$i" = "$last" ]; then
        for d in ${sinks[@]+"${sinks[@]}"}; do
            k=$(index "$d") || exit 2
            case " ${deps[*]:-} " in *" ${ids[$k]} "*) ;; *) deps+=("${ids[$k]}") ;; esac
        done
    fi
    beside=""
    if [ "${follows[$i]}" != - ]; then
        k=$(index "${follows[$i]}") || exit 2
        beside=${ids[$k]}
    fi
    [ ${#deps[@]} -eq 0 ] && [ -z "$beside" ] && [ -n "$after" ] && deps=("$after")
    dep=""
    if [ ${#deps[@]} -gt 0 ]; then
        dep="afterok:$(IFS=:; echo "${deps[*]}")"
    fi
    if [ -n "$beside" ]; then
        dep="${dep:+$dep,}after:$beside"
    fi
    args=(--parsable --export=ALL --job-name="mp3d-${names[$i]}" --chdir="$PWD" --output="$logdir/%x-%j.out")
    [ -n "$dep" ] && args+=(--dependency="$dep" --kill-on-invalid-dep=yes)
    # shellcheck disable=SC2206  # option strings are lists of words by design
    args+=(${MP3D_SBATCH_ARGS:-} $kind)
    job=(sbatch "${args[@]}" "$here/$script" run "$cfg" --only "${names[$i]}" --set pipeline.groups=false ${sets[@]+"${sets[@]}"})
    if [ "$print" = 1 ]; then
        echo "${job[*]}"
        ids+=("<job $i>")
        continue
    fi
    if ! out=$("${job[@]}"); then
        echo "submit.sh: sbatch failed for stage '${names[$i]}': ${job[*]}" >&2
        if [ ${#submitted[@]} -gt 0 ]; then
            echo "submit.sh: cancelling the jobs already submitted: ${submitted[*]}" >&2
            scancel "${submitted[@]}"
        fi
        exit 1
    fi
    id=${out%%;*} # --parsable prints "id" or "id;cluster"
    submitted+=("$id")
    ids+=("$id")
    mp3d_log "stage:${names[$i]} command:${cmds[$i]} script:$script job:$id after:$(IFS=:; echo "${deps[*]:-none}")" \
        "beside:${beside:-none} log:$logdir/mp3d-${names[$i]}-$id.out"
    echo "$id"
done
