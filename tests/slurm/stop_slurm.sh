#!/usr/bin/env bash
# Stops what tests/slurm/start_slurm.sh started, by the process ids it recorded (slurmd,
# slurmctld, munged: SIGTERM, then SIGKILL after 10 s), and puts back any /etc/slurm files it
# moved aside. Jobs still in the queue are cancelled first.
#
#   tests/slurm/stop_slurm.sh [STATE_DIR]       # default /tmp/neagari-slurm
set -uo pipefail

DIR=${1:-/tmp/neagari-slurm}

if [ -s "$DIR/slurmctld.pid" ] && kill -0 "$(cat "$DIR/slurmctld.pid")" 2>/dev/null; then
  ids=$(squeue -h -o '%i' 2>/dev/null || true)
  [ -n "$ids" ] && scancel $ids 2>/dev/null
fi

for pidfile in "$DIR/slurmd.pid" "$DIR/slurmctld.pid" "$DIR/munge/munged.pid"; do
  [ -s "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  fi
  rm -f "$pidfile"
done

for f in slurm.conf gres.conf; do
  if [ "$(readlink "/etc/slurm/$f" 2>/dev/null || true)" = "$DIR/$f" ]; then
    rm -f "/etc/slurm/$f"
    [ -e "/etc/slurm/$f.neagari-saved" ] && mv "/etc/slurm/$f.neagari-saved" "/etc/slurm/$f"
  fi
done
exit 0
