#!/usr/bin/env bash
# Start what the test suite needs, idempotently: PostgreSQL and MariaDB (normally already running on these
# machines), a 4-node Slurm cluster with MPICH and Open MPI (../shared/ci/start-slurm.sh), MPICH headers.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
shared=${SLUICE_SHARED:-$root/../shared}

if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  echo "test-services: starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
fi
if ! mariadb-admin -h 127.0.0.1 -uroot ping >/dev/null 2>&1; then
  echo "test-services: starting MariaDB"
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
  for _ in $(seq 1 60); do mariadb-admin -h 127.0.0.1 -uroot ping >/dev/null 2>&1 && break; sleep 0.5; done
fi

bash "$shared/ci/start-slurm.sh" --nodes 4

if ! command -v mpicc.mpich >/dev/null || [ ! -e /usr/include/x86_64-linux-gnu/mpich/mpi.h ] && ! ls /usr/include/*/mpich/mpi.h >/dev/null 2>&1; then
  echo "test-services: installing MPICH headers (libmpich-dev)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libmpich-dev >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libmpich-dev >/dev/null; }
fi
echo "test-services: PostgreSQL, MariaDB, Slurm (4 nodes) and MPICH are ready"
