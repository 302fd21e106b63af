#!/usr/bin/env bash
# local-slurm.sh - idempotently install, configure and start a REAL single-node SLURM
# cluster (Debian 12 packages, Slurm 22.05.x) on localhost, for hpc-agent's SLURM tests and
# benchmarks (profile `local` in slurm_templates/). Must run as root. No systemd needed.
#
# What the tests rely on (keep these when editing):
#   * partition `debug` (default, no time limit) and `small` (MaxTime=5 min) on the same node,
#     with EnforcePartLimits=ALL: a job asking for more than 5 min in `small` is REFUSED by
#     sbatch (as on most university clusters), not left pending;
#   * no GRES on the node: `--gres=gpu:1` / `--gpus-per-node=1` are refused ("Invalid generic
#     resource (gres) specification");
#   * fast scheduling (no batch delay, a pass every 2 s), AuthInfo=cred_expire=5 (requeued jobs
#     restart in ~6 s instead of 2 min), MaxArraySize=10001, a time-based FirstJobId;
#   * accounting through slurmdbd + a private MariaDB, so `sacct` reports CANCELLED/FAILED/...,
#     with AccountingStorageEnforce=associations,limits,qos (a bad --account/--qos is refused)
#     and an account `limited` where root may have at most 20 jobs queued (MaxSubmitJobs).
#
#   local-slurm.sh [start]   install if missing, write config, start daemons, wait for node idle
#   local-slurm.sh stop      cancel jobs, stop ONLY the daemons this script started (by PID)
#   local-slurm.sh status    show recorded daemons and sinfo
#   local-slurm.sh restart   stop + start (fresh state)
#
# Environment knobs (defaults in brackets):
#   SLURM_LOCAL_DIR         state/spool/log/db folder              [/tmp/slurm-local]
#   SLURM_LOCAL_ACCOUNTING  1 = slurmdbd + private MariaDB so that `sacct` works (submitit
#                           needs it to see CANCELLED/FAILED/TIMEOUT states); 0 = none [1]
#   SLURM_LOCAL_CPUS        CPUs advertised for the node (oversubscribes the real cores via
#                           SlurmdParameters=config_overrides)     [max(8, 4*nproc)]
#   SLURM_LOCAL_PARTITION   default partition name                 [debug]
#   SLURM_LOCAL_KEEP_STATE  1 = do not wipe job state / DB on a fresh start [0]
# Config goes to /etc/slurm/slurm.conf (+ slurmdbd.conf) so that sbatch/squeue/sacct and
# submitit work without SLURM_CONF.
set -euo pipefail

B=${SLURM_LOCAL_DIR:-/tmp/slurm-local}
ACCT=${SLURM_LOCAL_ACCOUNTING:-1}
PART=${SLURM_LOCAL_PARTITION:-debug}
CLUSTER=localcluster
LIMITED_MAX_SUBMIT=20              # MaxSubmitJobs of root in account `limited`
NPROC=$(nproc)
CPUS=${SLURM_LOCAL_CPUS:-$(( NPROC * 4 > 8 ? NPROC * 4 : 8 ))}
H=$(hostname -s)
MEM_MB=$(awk '/^MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
CONF=/etc/slurm/slurm.conf
DBDCONF=/etc/slurm/slurmdbd.conf
PIDS=$B/pids                      # "<comm> <pid>" per line: daemons started by THIS script
MYSOCK=$B/mysql/mysqld.sock        # private MariaDB socket (no TCP, no clash with a system MariaDB)
SELF=$(readlink -f "$0")

log() { echo "[local-slurm] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root"

wait_for() {  # wait_for <seconds> <description> <command...>
    local t=$1 what=$2; shift 2
    local end=$(( $(date +%s) + t ))
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$end" ] || { log "timed out after ${t}s waiting for $what"; return 1; }
        sleep 0.2
    done
}

record() { echo "$1 $2" >> "$PIDS"; }

alive() {  # alive <comm> <pid>: process exists AND has the expected name (guards PID reuse)
    [ -n "${2:-}" ] && kill -0 "$2" 2>/dev/null && [ "$(ps -p "$2" -o comm= 2>/dev/null)" = "$1" ]
}

# ------------------------------------------------------------------ install
install_pkgs() {
    local pkgs=(slurmctld slurmd slurm-client munge) missing=() p
    [ "$ACCT" = 1 ] && pkgs+=(slurmdbd mariadb-server)
    for p in "${pkgs[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing: ${missing[*]}"
    local t0=$SECONDS own_policy=0
    # never let the packages start their own services (we start ours by hand)
    if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; own_policy=1; fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" > "${TMPDIR:-/tmp}/local-slurm-apt.log" 2>&1 \
        || { tail -20 "${TMPDIR:-/tmp}/local-slurm-apt.log"; [ $own_policy = 1 ] && rm -f /usr/sbin/policy-rc.d; die "apt-get install failed"; }
    [ $own_policy = 1 ] && rm -f /usr/sbin/policy-rc.d
    log "installed in $(( SECONDS - t0 ))s: $(slurmctld -V)"
}

# ------------------------------------------------------------------ config
write_config() {  # writes to $1 (slurm.conf) and $2 (slurmdbd.conf)
    local acct_lines="AccountingStorageType=accounting_storage/none"
    # enforce associations, limits and QOS as real sites do: a bad --account/--qos is refused
    [ "$ACCT" = 1 ] && acct_lines="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
AccountingStorageEnforce=associations,limits,qos"
    cat > "$1" <<EOF
# generated by local-slurm.sh - single-node test cluster
ClusterName=$CLUSTER
SlurmctldHost=$H(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# requeued jobs wait cred_expire+1 s before they may start again (default 120; minimum 5)
AuthInfo=cred_expire=5
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$B/ctld
SlurmdSpoolDir=$B/d
SlurmctldPidFile=$B/run/slurmctld.pid
SlurmdPidFile=$B/run/slurmd.pid
SlurmctldLogFile=$B/log/slurmctld.log
SlurmdLogFile=$B/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups needed
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
# let the node advertise more CPUs than it has (more concurrent trivial test tasks)
SlurmdParameters=config_overrides
KillWait=5
# fast scheduling for tests: no 3 s batch delay, full queue pass every 2 s (requeued jobs)
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,bf_interval=1,sched_min_interval=0,sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
$acct_lines
MaxArraySize=10001
MaxJobCount=100000
# refuse at submission a job that exceeds its partition's limits (time, nodes), like most sites do
EnforcePartLimits=ALL
# fresh state restarts job ids at 1; a time-based FirstJobId keeps ids unique across restarts, so
# stale submitit folders (<folder>/<jobid>_*_result.pkl) or old sacct rows are never mistaken for new jobs
# (1000 ids per second of wall time; MaxJobId default 67043328)
FirstJobId=$(( $(date +%s) % 67000 * 1000 + 1000 ))
NodeName=$H NodeAddr=127.0.0.1 CPUs=$CPUS Boards=1 SocketsPerBoard=1 CoresPerSocket=$CPUS ThreadsPerCore=1 RealMemory=$MEM_MB State=UNKNOWN
PartitionName=$PART Nodes=ALL Default=YES MaxTime=INFINITE State=UP
# a second partition with a short time limit (tests: "time limit above the partition's maximum")
PartitionName=small Nodes=ALL Default=NO MaxTime=5 State=UP
EOF
    cat > "$2" <<EOF
# generated by local-slurm.sh
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
PidFile=$B/run/slurmdbd.pid
LogFile=$B/log/slurmdbd.log
DebugLevel=info
EOF
}

# ------------------------------------------------------------------ daemons
start_munge() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then log "munged already running (not ours, reusing)"; return; fi
    install -d -o munge -g munge -m 0755 /run/munge
    if [ ! -s /etc/munge/munge.key ]; then runuser -u munge -- /usr/sbin/mungekey --create; fi
    chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key
    rm -f /run/munge/munged.pid
    runuser -u munge -- /usr/sbin/munged --force          # forks; writes /run/munge/munged.pid
    wait_for 10 "munged pid file" test -s /run/munge/munged.pid
    record munged "$(cat /run/munge/munged.pid)"
    wait_for 10 munged sh -c 'munge -n | unmunge'
}

start_mariadb() {
    if [ ! -d "$B/mysql/mysql" ]; then
        install -d -o mysql -g mysql "$B/mysql"
        mariadb-install-db --user=mysql --datadir="$B/mysql" --skip-test-db \
            --auth-root-authentication-method=socket > "$B/log/mariadb-install.log" 2>&1 \
            || { tail "$B/log/mariadb-install.log"; die "mariadb-install-db failed"; }
    fi
    # pid/log must be writable by user mysql, so they live in the datadir
    setsid /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$B/mysql" --socket="$MYSOCK" \
        --pid-file="$B/mysql/mysqld.pid" --log-error="$B/mysql/mysqld.err" --skip-networking \
        --innodb-buffer-pool-size=64M < /dev/null > /dev/null 2>&1 &
    record mariadbd $!
    wait_for 60 mariadb mariadb --socket="$MYSOCK" -uroot -e 'select 1' \
        || { tail "$B/mysql/mysqld.err"; die "mariadbd did not start"; }
}

start_slurmdbd() {
    # slurmdbd has no socket option; libmariadb honours MYSQL_UNIX_PORT for host=localhost
    MYSQL_UNIX_PORT="$MYSOCK" /usr/sbin/slurmdbd         # forks; writes PidFile
    wait_for 10 "slurmdbd pid file" test -s "$B/run/slurmdbd.pid"
    record slurmdbd "$(cat "$B/run/slurmdbd.pid")"
    wait_for 60 slurmdbd sacctmgr -n list cluster || { tail "$B/log/slurmdbd.log"; die "slurmdbd did not start"; }
    sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER" || sacctmgr -i add cluster "$CLUSTER" >/dev/null
    # a second account with a per-user submit limit (tests: MaxSubmitJobs); root's default stays `root`
    sacctmgr -n -P list account format=account | grep -qx limited \
        || sacctmgr -i add account limited Cluster="$CLUSTER" Description=tests Organization=tests >/dev/null
    sacctmgr -n -P list assoc account=limited user=root format=user | grep -qx root \
        || sacctmgr -i add user root Account=limited Cluster="$CLUSTER" MaxSubmitJobs=$LIMITED_MAX_SUBMIT >/dev/null
}

start_slurm() {
    /usr/sbin/slurmctld                                     # forks; writes SlurmctldPidFile
    wait_for 10 "slurmctld pid file" test -s "$B/run/slurmctld.pid"
    record slurmctld "$(cat "$B/run/slurmctld.pid")"
    wait_for 30 slurmctld scontrol ping || { tail "$B/log/slurmctld.log"; die "slurmctld did not start"; }
    /usr/sbin/slurmd -N "$H"
    wait_for 10 "slurmd pid file" test -s "$B/run/slurmd.pid"
    record slurmd "$(cat "$B/run/slurmd.pid")"
}

same_conf() { cmp -s <(grep -v '^FirstJobId=' "$1") <(grep -v '^FirstJobId=' "$2" 2>/dev/null); }

node_ready() {  # the node answers and takes jobs: idle, or busy with jobs already (mixed/allocated)
    local states
    states=$(sinfo -h -N -n "$H" -o %T 2>/dev/null | sort -u | tr '\n' ' ')
    [ -n "$states" ] || return 1
    for st in $states; do
        case "${st%[*~#!%$@^-]}" in idle|mixed|allocated|completing) ;; *) return 1 ;; esac
    done
}

all_running() {
    [ -s "$PIDS" ] || return 1
    local name pid
    while read -r name pid; do alive "$name" "$pid" || return 1; done < "$PIDS"
    scontrol ping >/dev/null 2>&1
}

do_stop() {
    [ -s "$PIDS" ] || { log "no daemons recorded in $PIDS"; return 0; }
    # cancel everything still queued/running so the slurmstepd's exit on their own
    if alive slurmctld "$(awk '$1=="slurmctld"{print $2}' "$PIDS")"; then
        timeout 10 scancel --quiet --user=root 2>/dev/null || true
        sleep 1
    fi
    local name pid left
    tac "$PIDS" | while read -r name pid; do
        if alive "$name" "$pid"; then log "stopping $name (pid $pid)"; kill "$pid"; fi
    done
    for _ in $(seq 100); do
        left=0
        while read -r name pid; do alive "$name" "$pid" && left=1; done < "$PIDS"
        [ $left = 0 ] && break
        sleep 0.2
    done
    while read -r name pid; do
        if alive "$name" "$pid"; then log "$name (pid $pid) ignored SIGTERM, sending SIGKILL"; kill -9 "$pid"; fi
    done < "$PIDS"
    rm -f "$PIDS"
}

do_start() {
    local t0=$SECONDS
    install_pkgs
    mkdir -p "$B"
    local new_conf new_dbd
    new_conf=$(mktemp) new_dbd=$(mktemp)
    write_config "$new_conf" "$new_dbd"
    if all_running; then
        if same_conf "$new_conf" "$CONF" && { [ "$ACCT" = 0 ] || cmp -s "$new_dbd" "$DBDCONF"; }; then
            rm -f "$new_conf" "$new_dbd"
            log "already running with the same config"
            wait_for 60 "node $H ready" node_ready || die "node not ready: $(sinfo -h -N -o '%N %T %E')"
            print_info; return 0
        fi
        log "config changed: restarting"
    fi
    do_stop
    if scontrol ping 2>/dev/null | grep -q UP; then die "a slurmctld NOT started by this script answers on this machine; stop it first"; fi
    if [ "${SLURM_LOCAL_KEEP_STATE:-0}" != 1 ]; then rm -rf "$B/ctld" "$B/d" "$B/mysql" "$B/log" "$B/run"; fi
    mkdir -p "$B/ctld" "$B/d" "$B/log" "$B/run"
    install -d -m 0755 /etc/slurm
    mv "$new_conf" "$CONF"; chmod 0644 "$CONF"
    if [ "$ACCT" = 1 ]; then mv "$new_dbd" "$DBDCONF"; chmod 0600 "$DBDCONF"; else rm -f "$new_dbd"; fi
    : > "$PIDS"
    start_munge
    if [ "$ACCT" = 1 ]; then start_mariadb; start_slurmdbd; fi
    start_slurm
    wait_for 60 "node $H ready" node_ready || die "node not ready: $(sinfo -h -N -o '%N %T %E'); see $B/log"
    log "cluster up in $(( SECONDS - t0 ))s"
    print_info
}

print_info() {
    sinfo
    log "daemons started by this script (stop ONLY these, by PID): $(tr '\n' ' ' < "$PIDS")"
    log "logs: $B/log  config: $CONF"
    log "to stop:  bash $SELF stop    (or: kill $(awk '{print $2}' "$PIDS" | tac | tr '\n' ' '))"
}

do_status() {
    if [ -s "$PIDS" ]; then
        while read -r name pid; do
            if alive "$name" "$pid"; then echo "$name $pid running"; else echo "$name $pid DEAD"; fi
        done < "$PIDS"
    else echo "no daemons recorded in $PIDS"; fi
    sinfo 2>&1 || true
}

case "${1:-start}" in
    start) do_start ;;
    stop) do_stop ;;
    restart) do_stop; do_start ;;
    status) do_status ;;
    *) die "usage: $0 [start|stop|status|restart]" ;;
esac
