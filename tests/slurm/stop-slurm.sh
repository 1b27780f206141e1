#!/usr/bin/env bash
# Stop the one-node test cluster of tests/slurm/start-slurm.sh: cancel root's jobs, then
# stop the daemons it started, by their pid files only (nothing is killed by name).
#   SLURM_CI_DIR     the same state dir as start-slurm.sh (default /tmp/slurm-ci)
#   SLURM_CI_PURGE=1 also delete that dir (job state, logs). The Debian packages,
#                    /etc/slurm/*.conf and the MariaDB data stay; start-slurm.sh reuses them.
set -uo pipefail
BASE=${SLURM_CI_DIR:-/tmp/slurm-ci}
RUN=$BASE/run

stop_pidfile() {  # stop_pidfile NAME PIDFILE
  local name=$1 f=$2 pid
  [ -s "$f" ] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    echo "[stop-slurm] stopping $name ($pid)"
    kill -TERM "$pid"
    for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -0 "$pid" 2>/dev/null && { echo "[stop-slurm] $name did not exit, SIGKILL"; kill -KILL "$pid"; }
  fi
  rm -f "$f"
}

# cancel leftover jobs so slurmd does not leave job processes behind
command -v scancel >/dev/null && scancel --user=root 2>/dev/null || true
stop_pidfile slurmd    "$RUN/slurmd.pid"
stop_pidfile slurmctld "$RUN/slurmctld.pid"
stop_pidfile slurmdbd  "$RUN/slurmdbd.pid"
stop_pidfile mariadbd  /run/mysqld/mariadb.pid
stop_pidfile munged    /run/munge/munged.pid
if [ "${SLURM_CI_PURGE:-0}" = 1 ]; then rm -rf "$BASE"; echo "[stop-slurm] removed $BASE"; fi
echo "[stop-slurm] done"
