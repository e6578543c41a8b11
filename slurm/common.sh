#!/usr/bin/env bash
# Shared by the mp3d job scripts (sourced, not run): finds the mp3d binary, sets threads and MPI
# behaviour from the Slurm allocation, logs the setup as one key:value line, and launches mp3d with
# the batch shell forwarding USR1/TERM to the job step. It decides nothing about stages.
#
# Environment it honours (all optional):
#   MP3D_BIN        the mp3d binary (default: `mp3d` on PATH, else <repo>/build/mp3d)
#   MP3D_LAUNCH     srun (default) | mpirun | none (run MP3D_BIN directly, one process)
#   MP3D_SRUN_ARGS  extra srun arguments, e.g. "--cpu-bind=cores"
#   MP3D_MPIRUN_KILL_WAIT  seconds mpirun lets its ranks checkpoint after a TERM (default 20)
#   MP3D_YIELD      1/0: force OMPI_MCA_mpi_yield_when_idle (default: 1 only when oversubscribed)
#   MP3D_THREADS    BLAS/OpenMP threads per rank (default: --cpus-per-task; a value exported
#                   in the submitting shell is deliberately not used, it rarely fits the job)
#   HDF5_USE_FILE_LOCKING  passed through; set to FALSE automatically on NFS/Lustre (see below)

# Subcommands of mp3d; an sbatch script's first argument may name one, else it uses its default.
MP3D_SUBCOMMANDS=" synth preprocess vdt train anchors evaluate infer froc inspect run "

mp3d_log() { echo "slurm: $*" >&2; }

# mp3d_find_bin: sets MP3D_BIN to an absolute, executable path or fails naming what it tried.
mp3d_find_bin() {
    local here tried
    here=${MP3D_SLURM_DIR:-}
    if [ -z "${MP3D_BIN:-}" ]; then
        if command -v mp3d >/dev/null 2>&1; then
            MP3D_BIN=$(command -v mp3d)
        elif [ -n "$here" ] && [ -x "$here/../build/mp3d" ]; then
            MP3D_BIN="$here/../build/mp3d"
        fi
    fi
    tried=${MP3D_BIN:-"mp3d on PATH and ${here:-<repo>}/../build/mp3d"}
    if [ -z "${MP3D_BIN:-}" ] || [ ! -x "$MP3D_BIN" ]; then
        mp3d_log "error: no mp3d binary (tried $tried); build it (bash pipeline/setup.sh) or set MP3D_BIN"
        return 1
    fi
    case "$MP3D_BIN" in
        /*) ;;
        *) MP3D_BIN="$(cd "$(dirname "$MP3D_BIN")" && pwd)/$(basename "$MP3D_BIN")" ;;
    esac
    export MP3D_BIN
}

# mp3d_tasks_on_first_node: tasks on the batch node, from SLURM_TASKS_PER_NODE ("4(x2),3" -> 4).
mp3d_tasks_on_first_node() {
    local t=${SLURM_TASKS_PER_NODE:-${SLURM_NTASKS:-1}}
    t=${t%%,*}
    t=${t%%(*}
    case "$t" in
        '' | *[!0-9]*) t=1 ;;
    esac
    echo "$t"
}

# mp3d_fs_type DIR: file system type of DIR (nfs, lustre, ext2/ext3, xfs, tmpfs, ...).
mp3d_fs_type() { stat -f -c %T "$1" 2>/dev/null || echo unknown; }

# mp3d_setup_env: threads, MPI and HDF5 settings for this allocation; one log line.
mp3d_setup_env() {
    local cpt tasks cores fs
    cpt=${SLURM_CPUS_PER_TASK:-1}
    # One BLAS thread per allocated CPU of the task: ranks × threads then matches the allocation.
    export OPENBLAS_NUM_THREADS=${MP3D_THREADS:-$cpt}
    export OMP_NUM_THREADS=${MP3D_THREADS:-$cpt}
    # Open MPI busy-polls while waiting; when a node runs more ranks × threads than it has cores
    # (as the one-machine test cluster does) that polling steals the cores the work needs
    # (collective HDF5 writes measured 5x slower). Yield instead when oversubscribed.
    tasks=$(mp3d_tasks_on_first_node)
    cores=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)
    if [ -n "${MP3D_YIELD:-}" ]; then
        export OMPI_MCA_mpi_yield_when_idle=$MP3D_YIELD
    elif [ $((tasks * cpt)) -gt "$cores" ]; then
        export OMPI_MCA_mpi_yield_when_idle=${OMPI_MCA_mpi_yield_when_idle:-1}
    fi
    # HDF5 1.10 locks files with flock(); Lustre mounted without -o flock and many NFS setups
    # refuse it ("unable to lock file, errno = 38"). Set HDF5_USE_FILE_LOCKING=FALSE there
    # (safe: mp3d never has two jobs write one file). An explicit setting always wins.
    fs=$(mp3d_fs_type "$PWD")
    if [ -z "${HDF5_USE_FILE_LOCKING:-}" ]; then
        case "$fs" in
            nfs* | lustre | gpfs | beegfs | ceph*) export HDF5_USE_FILE_LOCKING=FALSE ;;
        esac
    fi
    mp3d_log "job:${SLURM_JOB_ID:-none} name:${SLURM_JOB_NAME:-none} restart:${SLURM_RESTART_COUNT:-0}" \
        "nodes:${SLURM_JOB_NUM_NODES:-1} ntasks:${SLURM_NTASKS:-1} tasks_node0:$tasks cpus_per_task:$cpt" \
        "node_cores:$cores openblas_threads:$OPENBLAS_NUM_THREADS yield:${OMPI_MCA_mpi_yield_when_idle:-0}" \
        "fs:$fs hdf5_locking:${HDF5_USE_FILE_LOCKING:-default} launch:${MP3D_LAUNCH:-srun} bin:$MP3D_BIN cwd:$PWD"
}

# mp3d_args DEFAULT_SUBCOMMAND ARGS...: prints nothing, sets MP3D_ARGV to the mp3d arguments
# (the first argument is kept when it names a subcommand, else DEFAULT_SUBCOMMAND is prepended).
mp3d_args() {
    local def=$1
    shift
    if [ $# -eq 0 ]; then
        mp3d_log "error: no arguments; usage: sbatch SCRIPT [SUBCOMMAND] CONFIG [--set key=value ...]"
        return 2
    fi
    # shellcheck disable=SC2034  # MP3D_ARGV is read by the sbatch script that sourced this file
    case "$MP3D_SUBCOMMANDS" in
        *" $1 "*) MP3D_ARGV=("$@") ;;
        *) MP3D_ARGV=("$def" "$@") ;;
    esac
}

# mp3d_launch ARGS...: the mp3d command for this allocation, run in the background of the batch
# shell with USR1 and TERM forwarded to it; returns its exit code.
#
# `#SBATCH --signal=B:USR1@300` signals only the batch shell (B:), which is what lets this script
# see the warning at all; a shell waiting on a foreground command would run its trap only after
# the command ends, so the step runs in the background and `wait` is interrupted by the trap.
mp3d_launch() {
    local launch=${MP3D_LAUNCH:-srun} pid rc last
    local -a cmd
    case "$launch" in
        srun)
            # No --kill-on-bad-exit by default: after a preemption checkpoint every rank exits 75
            # at about the same time, and killing the slower ones would turn srun's exit code
            # into a signal's (137) and lose the requeue. Add it via MP3D_SRUN_ARGS if wanted.
            # shellcheck disable=SC2206  # MP3D_SRUN_ARGS is a list of words by design
            cmd=(srun --mpi=pmix ${MP3D_SRUN_ARGS:-} "$MP3D_BIN" "$@") ;;
        mpirun)
            # mpirun exits 1 when it gets a SIGTERM itself (scancel and the time limit signal
            # every process of the step), even though the ranks checkpointed and exited 75; the
            # ranks' agreed code is read back from MP3D_EXIT_FILE below (issue 16).
            # mpirun also SIGKILLs its ranks odls_base_sigkill_timeout seconds (default 1) after
            # it forwards a TERM: less than a training step plus a checkpoint. MP3D_MPIRUN_KILL_WAIT
            # (default 20 s, under Slurm's default KillWait of 30 s) gives the ranks time to
            # checkpoint; mpirun itself then returns after about twice that.
            MP3D_EXIT_FILE=$(mktemp "${TMPDIR:-/tmp}/mp3d_exit.XXXXXX")
            export MP3D_EXIT_FILE
            cmd=(mpirun --mca odls_base_sigkill_timeout "${MP3D_MPIRUN_KILL_WAIT:-20}" -x MP3D_EXIT_FILE "$MP3D_BIN" "$@") ;;
        none) cmd=("$MP3D_BIN" "$@") ;;
        *)
            mp3d_log "error: MP3D_LAUNCH=$launch (must be srun, mpirun or none)"
            return 2 ;;
    esac
    mp3d_log "launch: ${cmd[*]}"
    "${cmd[@]}" &
    pid=$!
    MP3D_STEP_PID=$pid
    trap 'mp3d_forward USR1' USR1
    trap 'mp3d_forward TERM' TERM
    rc=0
    # `wait` returns 128+N when a trapped signal interrupts it; the step is still running then.
    while kill -0 "$pid" 2>/dev/null; do
        wait "$pid"
        rc=$?
    done
    wait "$pid" 2>/dev/null
    last=$?
    [ "$last" != 127 ] && rc=$last
    if [ "$launch" = mpirun ]; then
        local ranks_rc
        ranks_rc=$(cat "$MP3D_EXIT_FILE" 2>/dev/null)
        rm -f "$MP3D_EXIT_FILE"
        unset MP3D_EXIT_FILE
        if [ "$rc" != 0 ] && [ "$ranks_rc" = 75 ]; then
            mp3d_log "mpirun exited $rc; the ranks exited 75 (checkpoint written): using 75"
            rc=75
        fi
    fi
    trap - USR1 TERM
    MP3D_STEP_PID=
    return "$rc"
}

# mp3d_forward SIG: the batch shell's trap; passes SIG on to the running step (srun forwards
# it to every task; the trainer answers USR1/TERM with a checkpoint and exit code 75).
mp3d_forward() {
    mp3d_log "signal:$1 forwarded_to:${MP3D_STEP_PID:-none}"
    [ -n "${MP3D_STEP_PID:-}" ] && kill -s "$1" "$MP3D_STEP_PID" 2>/dev/null
    return 0
}
