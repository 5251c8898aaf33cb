#!/usr/bin/env bash
# A real single-node Slurm cluster in one scratch directory, for tests and for trying the sbatch
# scripts in slurm/ on one machine. Runs as root, without systemd, on loopback.
#
#   scripts/slurm-cluster.sh start DIR    install the packages if missing, write the config under
#                                         DIR, start munged, slurmctld and slurmd, wait for `idle`,
#                                         print the variables client commands need
#   scripts/slurm-cluster.sh status DIR   print the node state and the queue
#   scripts/slurm-cluster.sh stop DIR     cancel jobs, stop the daemons by their pid files
#                                         (TERM, then KILL); safe to run any number of times
#
# After `start`, client commands (sbatch, srun, squeue, sinfo, scontrol) need SLURM_CONF; TMPDIR
# keeps PMIx's files in the scratch directory:   source DIR/env.sh
#
# Sizes, overridable from the environment:
#   SLURM_NODE_CPUS   CPUs the node claims (default: 4 x the machine's, at least 16). More than
#                     the machine has, so several 2-task jobs of an array run at once.
#   SLURM_NODE_MEM_MB memory the node claims (default: the machine's).
set -euo pipefail

usage() { sed -n '2,17p' "$0" >&2; exit 2; }
[ $# -eq 2 ] || usage
action=$1
dir=$2

log() { printf 'slurm-cluster: %s\n' "$*" >&2; }

# Packages (Debian 12: slurm-wlm 22.05, munge 0.5, PMIx 4). Their install scripts cannot start
# services in a container ("policy-rc.d denied"); that does not matter, the daemons are started
# below. A lock keeps two callers from running apt at the same time.
install_packages() {
  local packages=(slurmctld slurmd slurm-client munge libpmix-dev openmpi-bin)
  local missing=() p
  for p in "${packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  log "installing ${missing[*]}"
  (
    flock -w 600 9
    $sudo apt-get update -qq -o DPkg::Lock::Timeout=300 >/dev/null
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq -o DPkg::Lock::Timeout=300 \
      "${missing[@]}" >/dev/null 2>&1
  ) 9>/tmp/shardsage-slurm-install.lock
}

# Two unused TCP ports on loopback, so several clusters (and other users' services) can coexist.
free_ports() {
  python3 - <<'EOF'
import socket
socks = []
for _ in range(2):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

write_config() {
  local host=$1 ctld_port=$2 slurmd_port=$3 cpus=$4 mem_mb=$5
  mkdir -p "$dir"/{munge,state,spool,log,run,tmp}
  chmod 0700 "$dir/munge"
  # munge refuses a key that others can read.
  if [ ! -s "$dir/munge/munge.key" ]; then
    dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
    chmod 0400 "$dir/munge/munge.key"
  fi
  cat >"$dir/slurm.conf" <<EOF
# Written by scripts/slurm-cluster.sh: one node on loopback, everything under $dir.
ClusterName=shardsage
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# cred_expire also sets how long a requeued job waits before it may start again (default 120 s).
AuthInfo=socket=$dir/munge/munge.socket,cred_expire=10
CredType=cred/munge
StateSaveLocation=$dir/state
# A fixed path: a %n in it was not expanded.
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
TmpFS=$dir/tmp
# No cgroups and no systemd: works in any container.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=pmix
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# Without it slurmctld rejects jobs: "MailProg is invalid".
MailProg=/bin/true
# Let the node line claim more CPUs than the machine has.
SlurmdParameters=config_overrides
ReturnToService=2
SchedulerType=sched/backfill
# Seconds between SIGTERM and SIGKILL when a job is cancelled or runs out of time: enough for
# shardsage to finish its step and write a checkpoint.
KillWait=30
# Keep finished jobs visible to "scontrol show job" (there is no accounting database).
MinJobAge=600
JobRequeue=1
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  cat >"$dir/env.sh" <<EOF
export SLURM_CONF=$dir/slurm.conf
export TMPDIR=$dir/tmp
EOF
}

pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# Stop the process in pid file $1: TERM, up to 10 s, then KILL.
stop_pidfile() {
  local pidfile=$1 pid _
  [ -s "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "pid $pid ($pidfile) ignored TERM; sending KILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$pidfile"
}

start() {
  install_packages
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if pid_alive "$dir/run/slurmctld.pid" && pid_alive "$dir/run/slurmd.pid"; then
    log "already running in $dir"
    cat "$dir/env.sh"
    return 0
  fi
  stop_all 2>/dev/null || true

  local host cpus mem_mb ctld_port slurmd_port
  host=$(hostname -s)
  cpus=${SLURM_NODE_CPUS:-$(($(nproc) * 4 > 16 ? $(nproc) * 4 : 16))}
  mem_mb=${SLURM_NODE_MEM_MB:-$(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo)}
  read -r ctld_port slurmd_port < <(free_ports)
  write_config "$host" "$ctld_port" "$slurmd_port" "$cpus" "$mem_mb"

  munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
    --pid-file="$dir/run/munged.pid" --log-file="$dir/log/munged.log" \
    --seed-file="$dir/munge/munge.seed"
  export SLURM_CONF=$dir/slurm.conf TMPDIR=$dir/tmp
  slurmctld -f "$SLURM_CONF"
  slurmd -f "$SLURM_CONF" -N "$host"

  # The node reports in within about a second; 60 s covers a slow, busy machine.
  local state="" _
  for _ in $(seq 600); do
    state=$(sinfo -h -N -o %T 2>/dev/null | head -n 1) || true
    [ "$state" = idle ] && break
    sleep 0.1
  done
  if [ "$state" != idle ]; then
    log "node not idle after 60 s (state '${state}'); logs in $dir/log"
    tail -n 20 "$dir/log/slurmctld.log" "$dir/log/slurmd.log" >&2 || true
    stop_all
    exit 1
  fi
  log "cluster up in $dir: node $host, $cpus CPUs, $mem_mb MB, ports $ctld_port/$slurmd_port"
  cat "$dir/env.sh"
}

stop_all() {
  [ -d "$dir" ] || return 0
  dir=$(cd "$dir" && pwd)
  if [ -f "$dir/slurm.conf" ] && pid_alive "$dir/run/slurmctld.pid"; then
    # Cancel what is still queued or running so no job step outlives the daemons.
    export SLURM_CONF=$dir/slurm.conf
    scancel --quiet --full --user="$(id -un)" 2>/dev/null || true
    local _
    for _ in $(seq 100); do
      [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break
      sleep 0.1
    done
  fi
  stop_pidfile "$dir/run/slurmd.pid"
  stop_pidfile "$dir/run/slurmctld.pid"
  stop_pidfile "$dir/run/munged.pid"
}

status() {
  dir=$(cd "$dir" && pwd)
  local name
  for name in munged slurmctld slurmd; do
    if pid_alive "$dir/run/$name.pid"; then
      echo "$name: running (pid $(cat "$dir/run/$name.pid"))"
    else
      echo "$name: stopped"
    fi
  done
  if pid_alive "$dir/run/slurmctld.pid"; then
    export SLURM_CONF=$dir/slurm.conf
    sinfo -N -o '%N %T %C %m'
    squeue -o '%i %j %T %M %R'
  else
    return 3
  fi
}

case $action in
  start) start ;;
  stop) stop_all ;;
  status) status ;;
  *) usage ;;
esac
