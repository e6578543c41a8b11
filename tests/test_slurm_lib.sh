#!/usr/bin/env bash
# Helpers for the Slurm tests (sourced): read job fields with scontrol (no slurmdbd here, so no
# sacct), wait for jobs to end, check they completed with exit 0:0, and preempt a running job
# the way Slurm does before a time limit and check that it requeued, resumed and completed.
# Every check prints "ok   ..." or "FAIL ..." and counts failures in $fail.

fail=${fail:-0}

ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fail=$((fail + 1)); }

# slurm_field JOB KEY: the value of KEY in `scontrol show job -o JOB` (first record).
slurm_field() {
    scontrol show job -o "$1" 2>/dev/null | head -n 1 | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n 1
}

# slurm_terminal STATE: true for states a job does not leave by itself.
slurm_terminal() {
    case "$1" in
        COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | BOOT_FAIL | DEADLINE | PREEMPTED) return 0 ;;
        *) return 1 ;;
    esac
}

# slurm_wait_jobs TIMEOUT_S JOB...: wait until every job (every task of an array) has ended.
slurm_wait_jobs() {
    local timeout=$1 t0 j st busy
    shift
    t0=$SECONDS
    while :; do
        busy=0
        for j in "$@"; do
            while read -r st; do
                slurm_terminal "$st" || busy=1
            done < <(scontrol show job -o "$j" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2)
        done
        [ "$busy" = 0 ] && return 0
        if [ $((SECONDS - t0)) -ge "$timeout" ]; then
            echo "timeout after ${timeout}s waiting for jobs $*:"
            for j in "$@"; do scontrol show job -o "$j" 2>&1 | sed 's/^/  | /'; done
            return 1
        fi
        sleep 0.5
    done
}

# slurm_check_completed WHAT JOB [LOG]: every record of JOB is COMPLETED with ExitCode=0:0.
slurm_check_completed() {
    local what=$1 job=$2 log=${3:-} rec nrec=0 good=0
    while read -r rec; do
        nrec=$((nrec + 1))
        case "$rec" in
            *" JobState=COMPLETED "*" ExitCode=0:0 "*) good=$((good + 1)) ;;
        esac
    done < <(scontrol show job -o "$job" 2>/dev/null)
    if [ "$nrec" -gt 0 ] && [ "$good" = "$nrec" ]; then
        ok "$what: job $job COMPLETED ExitCode=0:0 ($nrec record(s))"
        return 0
    fi
    bad "$what: job $job: $good of $nrec records COMPLETED with ExitCode=0:0"
    scontrol show job "$job" 2>&1 | sed 's/^/  | /'
    [ -n "$log" ] && [ -r "$log" ] && tail -n 30 "$log" | sed 's/^/  log| /'
    return 1
}

# slurm_preempt_and_check JOB READY_CMD TIMEOUT_S [LOG]: waits until JOB is RUNNING and
# READY_CMD (eval'd; e.g. "a checkpoint exists") succeeds, sends USR1 to its batch shell exactly
# as `#SBATCH --signal=B:USR1@300` does before the time limit, then checks that the job was
# requeued once (Restarts=1), ran again and COMPLETED with ExitCode=0:0.
slurm_preempt_and_check() {
    local job=$1 ready=$2 timeout=$3 log=${4:-} t0 st
    t0=$SECONDS
    while :; do
        st=$(slurm_field "$job" JobState)
        if [ "$st" = RUNNING ] && eval "$ready"; then break; fi
        if slurm_terminal "$st" || [ $((SECONDS - t0)) -ge "$timeout" ]; then
            bad "preempt: job $job never became ready (state ${st:-unknown}, ${timeout}s)"
            [ -n "$log" ] && [ -r "$log" ] && tail -n 30 "$log" | sed 's/^/  log| /'
            return 1
        fi
        sleep 0.3
    done
    if ! scancel --signal=USR1 --batch "$job"; then
        bad "preempt: scancel --signal=USR1 --batch $job failed"
        return 1
    fi
    ok "preempt: sent USR1 to the batch shell of job $job after $((SECONDS - t0))s"
    slurm_wait_restarted "$job" 1 "$timeout" || return 1
    slurm_wait_jobs "$timeout" "$job" || { bad "preempt: job $job did not finish after its requeue"; return 1; }
    local restarts
    restarts=$(slurm_field "$job" Restarts)
    if [ "$restarts" = 1 ]; then ok "preempt: job $job requeued once (Restarts=1)"; else bad "preempt: job $job Restarts=$restarts, want 1"; fi
    slurm_check_completed "preempt: resumed job" "$job" "$log"
}

# slurm_wait_restarted JOB N TIMEOUT_S: wait until scontrol reports Restarts >= N.
slurm_wait_restarted() {
    local job=$1 n=$2 timeout=$3 t0 r
    t0=$SECONDS
    while :; do
        r=$(slurm_field "$job" Restarts)
        [ -n "$r" ] && [ "$r" -ge "$n" ] && return 0
        if [ $((SECONDS - t0)) -ge "$timeout" ] || slurm_terminal "$(slurm_field "$job" JobState)"; then
            bad "job $job not requeued (Restarts=${r:-?}, state $(slurm_field "$job" JobState))"
            return 1
        fi
        sleep 0.3
    done
}
