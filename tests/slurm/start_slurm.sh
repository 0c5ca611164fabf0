#!/usr/bin/env bash
# A single-node SLURM on 127.0.0.1 for tests/test_slurm.py (needs root; Debian's packages).
#
#   tests/slurm/start_slurm.sh [STATE_DIR]      # default /tmp/neagari-slurm
#   tests/slurm/stop_slurm.sh  [STATE_DIR]
#
# Installs slurmctld, slurmd, slurm-client and munge with apt-get if they are missing, writes
# slurm.conf and gres.conf into STATE_DIR and links them from /etc/slurm (the executor's job step
# drops SLURM_CONF, so the configuration must be where srun looks by default; files already
# there are moved aside and put back by the stop script), then starts munged, slurmctld and
# slurmd, and waits until the node takes jobs. Process ids go to STATE_DIR/*.pid (munged's to
# STATE_DIR/munge/, a directory its own user can write).
#
# The node is declared with 16 CPUs, 128 GB and one GPU (a GRES on /dev/null: no device), whatever
# the machine has (SlurmdParameters=config_overrides): the workflow's SLURM profile is tested
# with the resources it asks for on a real cluster. Nothing enforces them here (no cgroups).
# Accounting is off: run the executor with --slurm-status-command squeue (MinJobAge=300).
set -euo pipefail

DIR=${1:-/tmp/neagari-slurm}
HOST=$(hostname -s)
NODE_CPUS=${NEAGARI_SLURM_CPUS:-16}
NODE_MEM_MB=${NEAGARI_SLURM_MEM_MB:-128000}
WAIT_S=${NEAGARI_SLURM_WAIT_S:-60}

die() { echo "start_slurm: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root"

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
   || ! command -v munged >/dev/null; then
  echo "start_slurm: installing slurmctld slurmd slurm-client munge" >&2
  export DEBIAN_FRONTEND=noninteractive
  # exit 3: the packages could not be installed (no package mirror reachable): the test skips
  apt-get update -qq || { echo "start_slurm: apt-get update failed" >&2; exit 3; }
  apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null \
    || { echo "start_slurm: apt-get install failed" >&2; exit 3; }
fi

if [ -e "$DIR/slurmctld.pid" ] && kill -0 "$(cat "$DIR/slurmctld.pid")" 2>/dev/null; then
  die "already running (state in $DIR); stop it first: tests/slurm/stop_slurm.sh $DIR"
fi
rm -rf "$DIR/state" "$DIR/spool"  # a fresh cluster each time: no saved jobs or node states
mkdir -p "$DIR/state" "$DIR/spool"
rm -f "$DIR"/*.pid "$DIR"/munge/munged.pid

cat > "$DIR/slurm.conf" <<EOF
# Written by tests/slurm/start_slurm.sh: one node on 127.0.0.1, for tests only.
ClusterName=neagari-test
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=300
DefMemPerCPU=1000
ReturnToService=2
SlurmdParameters=config_overrides
GresTypes=gpu
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$NODE_CPUS RealMemory=$NODE_MEM_MB Gres=gpu:1 State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
cat > "$DIR/gres.conf" <<EOF
NodeName=$HOST Name=gpu File=/dev/null
EOF

mkdir -p /etc/slurm
for f in slurm.conf gres.conf; do
  if [ -e "/etc/slurm/$f" ] && [ "$(readlink "/etc/slurm/$f" || true)" != "$DIR/$f" ]; then
    mv "/etc/slurm/$f" "/etc/slurm/$f.neagari-saved"
  fi
  ln -sfn "$DIR/$f" "/etc/slurm/$f"
done

# munge: its own user, its own run directory
install -d -o munge -g munge -m 0755 /run/munge
install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
if [ ! -s /etc/munge/munge.key ]; then
  if command -v mungekey >/dev/null; then mungekey --create --keyfile=/etc/munge/munge.key
  else dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; fi
  chown munge:munge /etc/munge/munge.key
  chmod 0400 /etc/munge/munge.key
fi
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  install -d -o munge -g munge -m 0700 "$DIR/munge"
  runuser -u munge -- /usr/sbin/munged --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log"
  for _ in $(seq 50); do [ -s "$DIR/munge/munged.pid" ] && break; sleep 0.1; done
  [ -s "$DIR/munge/munged.pid" ] || die "munged did not start ($DIR/munge/munged.log)"
fi

/usr/sbin/slurmctld
for _ in $(seq 100); do scontrol ping >/dev/null 2>&1 && break; sleep 0.1; done
scontrol ping >/dev/null 2>&1 || die "slurmctld does not answer ($DIR/slurmctld.log)"
/usr/sbin/slurmd

# ready when the node is idle
for _ in $(seq $((WAIT_S * 2))); do
  state=$(sinfo -h -N -o '%T' 2>/dev/null | head -1 || true)
  [ "$state" = idle ] && { echo "start_slurm: node $HOST idle (state in $DIR)" >&2; exit 0; }
  sleep 0.5
done
die "node not idle after ${WAIT_S}s (state '${state:-?}'; see $DIR/slurmd.log, $DIR/slurmctld.log)"
