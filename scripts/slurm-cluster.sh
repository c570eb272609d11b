#!/usr/bin/env bash
# slurm-cluster.sh - the private Slurm cluster sluice's tests run against: N fake nodes n1..nN on this host.
#
#   scripts/slurm-cluster.sh start [--nodes N] [--cpus C] [--mem MB] [--clean] [--timeout S]
#   scripts/slurm-cluster.sh stop
#   scripts/slurm-cluster.sh status
#
# With no subcommand (nothing, or options first) it starts: `slurm-cluster.sh --nodes 4` is `start --nodes 4`.
# start   installs what is missing (Slurm, munge, MPICH, Open MPI, PMIx) with apt-get, writes
#         /etc/slurm/slurm.conf, starts munged (unless one already answers), slurmctld and one slurmd per node
#         (`slurmd -N nK`, ports 6821..), and waits until every node is usable. Idempotent: run again with the
#         same shape it only checks; with another shape it restarts the daemons it owns. If a healthy cluster
#         of the same shape that this script did not start is already up, it does nothing.
#   --nodes N   fake nodes (default 4); all have this host's hostname, so tell them apart by SLURMD_NODENAME
#   --cpus C    CPUs per node (default: nproc; more than nproc is allowed)
#   --mem MB    RealMemory per node (default 1024)
#   --clean     stop our daemons (cancelling jobs) and forget all Slurm state (job ids, node states) first
#   --timeout S how long to wait for the nodes (default 60)
# stop    cancels the cluster's jobs and stops exactly the daemons this script started (pids recorded, with
#         their start times, in /run/sluice-slurm); anything else is left alone.
# status  prints which recorded daemons are alive, and sinfo.
#
# No systemd, no cgroups, no slurmdbd (so no sacct); `--time` has 1-minute granularity.
set -euo pipefail

PROG=slurm-cluster
CONF=/etc/slurm/slurm.conf
MARK="# written by sluice scripts/slurm-cluster.sh"
RUN=/run/sluice-slurm          # our pid records, the lock, the apt log
SPOOL=/var/spool/sluice-slurm  # slurmctld state, slurmd spool dirs
LOGS=/var/log/sluice-slurm
TMPFS=/tmp/sluice-slurm        # per-node TmpFS: PMIx app dirs must not collide between fake nodes
CTLD_PORT=6817
NODE_PORT0=6821

say() { echo "$PROG: $*"; }
tails() {  # tails FILE...: the last lines of each non-empty FILE, on stderr
  local f
  for f in "$@"; do
    [ -s "$f" ] || continue
    echo "--- last lines of $f:" >&2
    tail -n 5 "$f" >&2
  done
}
die() {  # die MESSAGE [LOG...]: one line, then the tails of the logs that may explain it
  echo "$PROG: error: $1" >&2
  shift
  tails "$@"
  exit 1
}

# ------------------------------------------------------------------ our daemons
# A record $RUN/LABEL.pid holds "PID STARTTIME"; the daemon is ours only while /proc/PID has that start time,
# so a recycled pid is never taken for it.
starttime() { sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | awk '$1 != "Z" {print $20}'; }
recorded_pid() {  # recorded_pid LABEL -> prints the pid if that daemon is still alive
  local f="$RUN/$1.pid" pid st
  [ -s "$f" ] || return 1
  read -r pid st < "$f" || return 1
  [[ $pid =~ ^[0-9]+$ ]] && [ -n "$st" ] && [ "$(starttime "$pid")" = "$st" ] || return 1
  echo "$pid"
}
ours() { recorded_pid "$1" >/dev/null; }
our_labels() {  # every label with a record, slurmds first (they stop before the controller)
  local f l
  shopt -s nullglob
  for f in "$RUN"/slurmd-*.pid "$RUN"/slurmctld.pid "$RUN"/munged.pid; do
    l=${f##*/}; echo "${l%.pid}"
  done
}
any_ours() { local l; for l in $(our_labels); do ours "$l" && return 0; done; return 1; }

launch() {  # launch LABEL BINARY ARGS...: start a foreground daemon in its own session and record its pid
  local label=$1 exe pid st i
  exe=$(readlink -f "$(command -v "$2")")  # e.g. slurmctld is an alternatives link to slurmctld-wlm
  shift 2
  ( cd / && exec setsid "$@" </dev/null >"$LOGS/$label.out" 2>&1 9>&- ) &
  pid=$!
  for i in $(seq 1 20); do
    st=$(starttime "$pid")
    [ -n "$st" ] && [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$exe" ] && break
    st=""; sleep 0.1
  done
  [ -n "$st" ] || die "$label did not start" "$LOGS/$label.out"
  echo "$pid $st" > "$RUN/$label.pid"
  sleep 0.3
  ours "$label" || die "$label exited right after starting" "$LOGS/$label.out" "$LOGS/$label.log"
  say "started $label (pid $pid)"
}

stop_ours() {  # stop_ours [--keep-munge]: TERM our daemons, KILL after 10 s, forget their records
  local keep_munge=${1:-} l pid i left
  local -a pids=() labels=()
  if ours slurmctld; then
    local jobs
    jobs=$(squeue -h -o %A 2>/dev/null | sort -u | paste -sd' ' -)
    if [ -n "$jobs" ]; then
      say "cancelling jobs: $jobs"
      # shellcheck disable=SC2086
      scancel $jobs 2>/dev/null || true
      for i in $(seq 1 75); do [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break; sleep 0.2; done
    fi
  fi
  for l in $(our_labels); do
    [ "$l" = munged ] && [ "$keep_munge" = --keep-munge ] && continue
    if pid=$(recorded_pid "$l"); then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid"); labels+=("$l")
    else
      rm -f "$RUN/$l.pid"
    fi
  done
  for i in $(seq 1 100); do
    left=0
    for l in "${labels[@]}"; do ours "$l" && left=1; done
    [ "$left" = 0 ] && break
    sleep 0.1
  done
  local rc=0
  for i in "${!labels[@]}"; do
    l=${labels[$i]}; pid=${pids[$i]}
    if ours "$l"; then
      say "$l (pid $pid) ignored SIGTERM for 10 s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.3
    fi
    if ours "$l"; then
      echo "$PROG: error: could not stop $l (pid $pid)" >&2; rc=1
    else
      rm -f "$RUN/$l.pid"; say "stopped $l (pid $pid)"
    fi
  done
  return $rc
}

# ------------------------------------------------------------------ helpers
wait_until() {  # wait_until SECONDS CMD...: poll CMD every 0.2 s
  local end=$((SECONDS + $1)); shift
  until "$@"; do [ "$SECONDS" -ge "$end" ] && return 1; sleep 0.2; done
}
ctld_up() { scontrol ping 2>/dev/null | grep -q 'is UP'; }
listening() { ss -Htln "sport = :$1" 2>/dev/null | grep -q .; }
munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

# shape_problems N C M: prints nothing if the cluster that answers has exactly nodes n1..nN, each with C CPUs
# and M MB, all usable (idle, mixed, allocated or completing; a trailing * means not responding)
shape_problems() {
  local want got
  want=$(for i in $(seq 1 "$1"); do echo "n$i $2 $3"; done | sort)
  got=$(sinfo -h -N -o '%N %c %m %T' 2>/dev/null | sort -u)
  [ -n "$got" ] || { echo "sinfo lists no nodes"; return; }
  local names
  names=$(awk '{print $1, $2, $3}' <<<"$got" | sort -u)
  [ "$names" = "$want" ] || { echo "nodes are [$(paste -sd, - <<<"$names")], want n1..n$1 with $2 CPUs, $3 MB"; return; }
  awk '$4 !~ /^(idle|mixed|allocated|completing)$/ {printf "%s is %s; ", $1, $4}' <<<"$got"
}

install_packages() {
  local -a want=(slurmctld slurmd slurm-client munge mpich openmpi-bin libpmix-dev libmpich-dev) missing=()
  local p
  for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing ${missing[*]}"
  # no daemon may start from a maintainer script: we start (and record) our own
  local policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod 0755 "$policy"
  fi
  local apt=(env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}")
  local rc=0
  "${apt[@]}" > "$RUN/apt.log" 2>&1 || { say "install failed; apt-get update, then again";
    { apt-get update -qq && "${apt[@]}"; } >> "$RUN/apt.log" 2>&1 || rc=$?; }
  [ -n "$policy" ] && rm -f "$policy"
  if [ "$rc" != 0 ]; then
    echo "$PROG: error: apt-get install ${missing[*]} failed (log $RUN/apt.log)" >&2
    tails "$RUN/apt.log"; exit 1
  fi
}

write_conf() {  # write_conf N C M HOST
  local n=$1 c=$2 m=$3 host=$4
  cat <<EOF
$MARK: nodes=$n cpus=$c mem=$m
ClusterName=sluice
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$SPOOL/ctld
SlurmdSpoolDir=$SPOOL/%n
SlurmctldPidFile=$SPOOL/slurmctld.pid
SlurmdPidFile=$SPOOL/slurmd-%n.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd-%n.log
TmpFS=$TMPFS/%n
# no systemd and no cgroups here
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# no slurmdbd: sacct fails; one line per finished job goes to a text file instead
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$LOGS/jobcomp.log
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# fake nodes: take CPUs and memory from this file, not from the hardware
SlurmdParameters=config_overrides
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
MinJobAge=300
KillWait=5
SlurmdTimeout=60
NodeName=n[1-$n] NodeHostname=$host NodeAddr=127.0.0.1 Port=[$NODE_PORT0-$((NODE_PORT0 + n - 1))] CPUs=$c RealMemory=$m State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
  if munge_ok; then
    ours munged && say "munged is running (ours)" || say "munged is running (not started here: left alone)"
    return 0
  fi
  rm -f "$RUN/munged.pid"
  if [ ! -s /etc/munge/munge.key ]; then
    install -d -o munge -g munge -m 0700 /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    say "created /etc/munge/munge.key"
  fi
  chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 /var/log/munge
  install -d -o munge -g munge -m 0711 /var/lib/munge
  rm -f /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
  launch munged munged setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged --foreground
  wait_until 10 munge_ok || die "munged runs but a munge/unmunge round trip fails" "$LOGS/munged.out"
}

# ------------------------------------------------------------------ start
cmd_start() {
  local nodes=4 cpus mem=1024 timeout=60 clean=0
  cpus=$(nproc)
  while [ $# -gt 0 ]; do
    case "$1" in
      --nodes|--cpus|--mem|--timeout)
        [ $# -ge 2 ] || { echo "$PROG: $1 needs a value" >&2; exit 2; }
        case "$1" in --nodes) nodes=$2 ;; --cpus) cpus=$2 ;; --mem) mem=$2 ;; --timeout) timeout=$2 ;; esac
        shift 2 ;;
      --clean) clean=1; shift ;;
      *) echo "$PROG: unknown start option: $1 (see --help)" >&2; exit 2 ;;
    esac
  done
  local v
  for v in nodes cpus mem timeout; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "$PROG: --$v must be a positive integer, not '${!v}'" >&2; exit 2; }
  done

  install_packages
  local host
  host=$(hostname -s 2>/dev/null || true); [ -n "$host" ] || host=localhost

  # a controller answers that is not ours: use it if it has the shape asked for, never touch it
  if ! ours slurmctld && [ -f "$CONF" ] && ctld_up; then
    [ "$clean" = 1 ] && die "--clean: the Slurm cluster that is up was not started by this script; stop it with what started it"
    local why
    why=$(shape_problems "$nodes" "$cpus" "$mem")
    [ -z "$why" ] && { say "a healthy $nodes-node cluster (not started here) is already up: nothing to do"; return 0; }
    die "a Slurm cluster not started by this script is up and does not fit ($why); stop it first"
  fi

  local conf
  conf=$(write_conf "$nodes" "$cpus" "$mem" "$host")
  local changed=0
  [ -f "$CONF" ] && [ "$(cat "$CONF")" = "$conf" ] || changed=1
  if { [ "$changed" = 1 ] || [ "$clean" = 1 ]; } && any_ours; then
    say "$([ "$clean" = 1 ] && echo "--clean" || echo "new shape"): restarting our daemons"
    stop_ours --keep-munge || die "could not stop our daemons"
  fi
  if [ "$clean" = 1 ]; then
    rm -rf "${SPOOL:?}" "${TMPFS:?}"
    say "--clean: forgot all Slurm state ($SPOOL)"
  fi
  if [ "$changed" = 1 ]; then
    mkdir -p "$(dirname "$CONF")"
    if [ -f "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
      cp -p "$CONF" "$CONF.before-slurm-cluster"
      say "kept the previous $CONF as $CONF.before-slurm-cluster"
    fi
    printf '%s\n' "$conf" > "$CONF.new.$$" && mv -f "$CONF.new.$$" "$CONF"
    say "wrote $CONF ($nodes nodes, $cpus CPUs, $mem MB each)"
  fi
  mkdir -p "$SPOOL/ctld" "$LOGS"
  local i
  for i in $(seq 1 "$nodes"); do mkdir -p "$SPOOL/n$i" "$TMPFS/n$i"; done

  start_munge

  if ! ours slurmctld; then
    ctld_up && die "a slurmctld not started by this script answers on port $CTLD_PORT"
    listening "$CTLD_PORT" && die "port $CTLD_PORT (slurmctld) is taken by another process"
    launch slurmctld slurmctld slurmctld -D
  fi
  wait_until 20 ctld_up || die "slurmctld does not answer 'scontrol ping'" "$LOGS/slurmctld.log"

  for i in $(seq 1 "$nodes"); do
    ours "slurmd-n$i" && continue
    listening $((NODE_PORT0 + i - 1)) && die "port $((NODE_PORT0 + i - 1)) (slurmd n$i) is taken by another process"
    launch "slurmd-n$i" slurmd slurmd -D -N "n$i"
  done

  # nodes left down or drained by an earlier run are resumed once
  local why="" resumed=0 end=$((SECONDS + timeout)) down
  while :; do
    why=$(shape_problems "$nodes" "$cpus" "$mem")
    [ -z "$why" ] && break
    down=$(sinfo -h -N -o '%N %T' 2>/dev/null | awk '$2 ~ /^(down|drain|fail)/ {print $1}' | sort -u | paste -sd, -)
    if [ "$resumed" = 0 ] && [ -n "$down" ]; then
      scontrol update NodeName="$down" State=RESUME 2>/dev/null || true
      resumed=1
    fi
    [ "$SECONDS" -ge "$end" ] && die "nodes not usable after ${timeout} s: $why" "$LOGS/slurmctld.log" "$LOGS"/slurmd-n*.log
    sleep 0.25
  done
  say "ready: $nodes nodes ($(sinfo -h -o '%T %N' | paste -sd' ' -)), partition debug"
}

cmd_stop() {
  [ $# -eq 0 ] || { echo "$PROG: stop takes no options" >&2; exit 2; }
  if ! any_ours; then
    say "no daemon started by this script is running (nothing stopped)"
    shopt -s nullglob; rm -f "$RUN"/*.pid
    return 0
  fi
  stop_ours
}

cmd_status() {
  local l pid
  for l in $(our_labels); do
    if pid=$(recorded_pid "$l"); then say "$l: running (pid $pid)"; else say "$l: not running"; fi
  done
  sinfo 2>&1 || true
}

usage() { awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; }

case "${1:-}" in
  -h|--help|help) usage; exit 0 ;;
  start|stop|status) sub=$1; shift ;;
  ""|--*) sub=start ;;
  *) echo "$PROG: unknown subcommand '$1' (start, stop or status; --help)" >&2; exit 2 ;;
esac
[ "$(id -u)" -eq 0 ] || die "must run as root"
mkdir -p "$RUN" "$LOGS"
# fd 9 holds the lock while we run; launch() closes it for every daemon, or they would hold it for ever
exec 9>"$RUN/lock"
flock -w 180 9 || die "another slurm-cluster.sh has held $RUN/lock for 180 s"
"cmd_$sub" "$@"
