#!/usr/bin/env bash
# A private single-node Slurm cluster on this machine, for the tests and for trying the job
# scripts without a real cluster (needs root and Debian's munge, slurmctld, slurmd, slurm-client).
#
#   slurm/local-cluster.sh up DIR [CPUS]   start munged, slurmctld, slurmd with state, sockets, logs
#                                          and PID files under DIR; prints "export SLURM_CONF=..."
#   slurm/local-cluster.sh down DIR        cancel the cluster's jobs, stop the daemons by their
#                                          recorded PIDs (never by name), wait until they are gone
#   slurm/local-cluster.sh status DIR      daemons, node state and queue
#
# Or `source` it and call lc_up / lc_down / lc_status (a test does, to stop it in an EXIT trap).
# Everything is private to DIR: its own munge key and socket, its own ports, so it neither uses
# nor disturbs a system Slurm, and two of these clusters can run side by side.

# Default CPUs of the node: more than the machine has, so multi-rank jobs are not kept pending
# (SlurmdParameters=config_overrides lets slurmd accept a node larger than the hardware).
LC_DEFAULT_CPUS=8
# Seconds a requeued job waits before it is eligible again (Slurm's default 120 would make a
# preemption test slow); also the lifetime of job-step credentials, ample on one machine.
LC_CRED_EXPIRE=${LC_CRED_EXPIRE:-10}

lc_log() { echo "local-cluster: $*" >&2; }

# lc_free_port FROM: the first port >= FROM that nothing listens on (tcp, any address).
lc_free_port() {
    local p=$1
    while ss -ltnH "sport = :$p" 2>/dev/null | grep -q . || (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do
        p=$((p + 1))
    done
    echo "$p"
}

# lc_pid_alive PID: the process exists and is not a zombie.
lc_pid_alive() {
    local st
    [ -n "${1:-}" ] && [ -r "/proc/$1/stat" ] || return 1
    st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$st" ] && [ "$st" != Z ]
}

# lc_start DIR NAME CMD...: start CMD in its own session, record its PID in DIR/NAME.pid.
lc_start() {
    local dir=$1 name=$2
    shift 2
    setsid "$@" >"$dir/$name.out" 2>&1 </dev/null &
    echo $! >"$dir/$name.pid"
}

lc_write_conf() {
    local dir=$1 cpus=$2 ctld_port slurmd_port
    ctld_port=$(lc_free_port $((20000 + RANDOM % 20000)))
    slurmd_port=$(lc_free_port $((ctld_port + 1)))
    cat >"$dir/slurm.conf" <<EOF
# Private single-node cluster written by slurm/local-cluster.sh; state lives in $dir.
ClusterName=mp3dlocal
SlurmctldHost=localhost
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire also sets how long a requeued job waits before it may start again (default 120 s).
AuthInfo=socket=$dir/munge/munge.socket,cred_expire=$LC_CRED_EXPIRE
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pidfile
SlurmdPidFile=$dir/slurmd.pidfile
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/jobcomp.txt
MpiDefault=pmix
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
SchedulerType=sched/builtin
# Run the main scheduling loop every 2 s (default 60): a requeued job starts soon after it is eligible.
SchedulerParameters=sched_interval=2
ReturnToService=2
MinJobAge=3600
KillWait=10
InactiveLimit=0
MailProg=/bin/true
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=4096 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
}

# lc_up DIR [CPUS]: bring the cluster up; returns non-zero (daemons stopped again) on failure.
lc_up() {
    local dir=${1:?lc_up DIR [CPUS]} cpus=${2:-$LC_DEFAULT_CPUS}
    local need
    for need in munged slurmctld slurmd scontrol sinfo setpriv; do
        command -v "$need" >/dev/null || { lc_log "missing program '$need' (apt-get install munge slurmctld slurmd slurm-client)"; return 1; }
    done
    [ "$(id -u)" = 0 ] || { lc_log "needs root (slurmd runs jobs as their users)"; return 1; }
    id munge >/dev/null 2>&1 || { lc_log "no 'munge' user (apt-get install munge)"; return 1; }
    mkdir -p "$dir" || return 1
    dir=$(cd "$dir" && pwd)
    chmod 755 "$dir"
    mkdir -p "$dir/munge" "$dir/state" "$dir/spool"
    # A private munge key: 1024 random bytes, readable by the munge user only.
    head -c 1024 /dev/urandom >"$dir/munge/munge.key"
    chown -R munge:munge "$dir/munge"
    chmod 755 "$dir/munge"   # munged wants the socket folder searchable by all
    chmod 400 "$dir/munge/munge.key"
    if ! setpriv --reuid=munge --regid=munge --clear-groups test -x "$dir/munge"; then
        lc_log "the munge user cannot reach $dir/munge: every folder above it must be searchable (chmod o+x)"
        return 1
    fi
    lc_write_conf "$dir" "$cpus"

    lc_start "$dir" munged setpriv --reuid=munge --regid=munge --clear-groups \
        munged -F --socket="$dir/munge/munge.socket" --key-file="$dir/munge/munge.key" \
        --pid-file="$dir/munge/munged.pidfile" --log-file="$dir/munge/munged.log" \
        --seed-file="$dir/munge/munged.seed"
    for _ in $(seq 1 50); do
        [ -S "$dir/munge/munge.socket" ] && break
        lc_pid_alive "$(cat "$dir/munged.pid")" || break
        sleep 0.1
    done
    if [ ! -S "$dir/munge/munge.socket" ]; then
        lc_log "munged did not start:"; cat "$dir/munged.out" "$dir/munge/munged.log" >&2 2>/dev/null
        lc_down "$dir"; return 1
    fi
    lc_start "$dir" slurmctld slurmctld -D -c -f "$dir/slurm.conf"
    lc_start "$dir" slurmd slurmd -D -N localhost -f "$dir/slurm.conf"
    export SLURM_CONF="$dir/slurm.conf"
    local state=""
    for _ in $(seq 1 150); do
        state=$(sinfo -h -o %T 2>/dev/null | head -n 1)
        [ "$state" = idle ] && break
        if ! lc_pid_alive "$(cat "$dir/slurmctld.pid")" || ! lc_pid_alive "$(cat "$dir/slurmd.pid")"; then break; fi
        sleep 0.2
    done
    if [ "$state" != idle ]; then
        lc_log "cluster not ready (node state '${state:-none}'); logs:"
        tail -n 20 "$dir/slurmctld.out" "$dir/slurmctld.log" "$dir/slurmd.out" "$dir/slurmd.log" >&2 2>/dev/null
        lc_down "$dir"; return 1
    fi
    lc_log "up dir:$dir cpus:$cpus pids:munged=$(cat "$dir/munged.pid"),slurmctld=$(cat "$dir/slurmctld.pid"),slurmd=$(cat "$dir/slurmd.pid")"
}

# lc_stop_pid DIR NAME: TERM the recorded PID, wait up to 15 s, then KILL.
lc_stop_pid() {
    local dir=$1 name=$2 pid
    [ -r "$dir/$name.pid" ] || return 0
    pid=$(cat "$dir/$name.pid")
    if lc_pid_alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 1 75); do lc_pid_alive "$pid" || break; sleep 0.2; done
        if lc_pid_alive "$pid"; then lc_log "$name (pid $pid) ignored TERM, killing"; kill -KILL "$pid" 2>/dev/null; fi
    fi
    wait "$pid" 2>/dev/null
    rm -f "$dir/$name.pid"
}

# lc_down DIR: cancel jobs, wait for their step daemons to leave, stop the three daemons.
lc_down() {
    local dir=${1:?lc_down DIR}
    [ -d "$dir" ] || return 0
    dir=$(cd "$dir" && pwd)
    if [ -r "$dir/slurmctld.pid" ] && lc_pid_alive "$(cat "$dir/slurmctld.pid")"; then
        local jobs
        jobs=$(SLURM_CONF="$dir/slurm.conf" squeue -h -o %i 2>/dev/null)
        if [ -n "$jobs" ]; then
            # shellcheck disable=SC2086  # one job id per word
            SLURM_CONF="$dir/slurm.conf" scancel $jobs 2>/dev/null
            for _ in $(seq 1 100); do
                [ -z "$(SLURM_CONF="$dir/slurm.conf" squeue -h -o %i 2>/dev/null)" ] && break
                sleep 0.2
            done
        fi
    fi
    # slurmstepd daemons outlive slurmd; each holds a socket in our spool until it exits.
    for _ in $(seq 1 100); do
        compgen -G "$dir/spool/localhost_*" >/dev/null || break
        sleep 0.2
    done
    compgen -G "$dir/spool/localhost_*" >/dev/null && lc_log "step sockets left in $dir/spool: $(ls "$dir/spool")"
    lc_stop_pid "$dir" slurmd
    lc_stop_pid "$dir" slurmctld
    lc_stop_pid "$dir" munged
    lc_log "down dir:$dir"
}

lc_status() {
    local dir=${1:?lc_status DIR} name
    for name in munged slurmctld slurmd; do
        if [ -r "$dir/$name.pid" ] && lc_pid_alive "$(cat "$dir/$name.pid")"; then
            echo "$name: running pid $(cat "$dir/$name.pid")"
        else
            echo "$name: stopped"
        fi
    done
    SLURM_CONF="$dir/slurm.conf" sinfo 2>&1
    SLURM_CONF="$dir/slurm.conf" squeue 2>&1
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    case "${1:-}" in
        up)
            lc_up "${2:?usage: $0 up DIR [CPUS]}" "${3:-}" || exit 1
            echo "export SLURM_CONF=$(cd "$2" && pwd)/slurm.conf"
            ;;
        down) lc_down "${2:?usage: $0 down DIR}" ;;
        status) lc_status "${2:?usage: $0 status DIR}" ;;
        *)
            echo "usage: $0 up DIR [CPUS] | down DIR | status DIR" >&2
            exit 2
            ;;
    esac
fi
