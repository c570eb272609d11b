#!/usr/bin/env bash
# Start what the test suite needs, idempotently: PostgreSQL and MariaDB (normally already running on these
# machines), and a 4-node Slurm cluster with MPICH, its headers and Open MPI (scripts/slurm-cluster.sh, which
# installs Slurm, munge and the MPI packages with apt-get when they are missing), and what the
# transfer tests' second host needs (openssh-server, openssh-client, rsync, iproute2).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  echo "test-services: starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
fi
if ! mariadb-admin -h 127.0.0.1 -uroot ping >/dev/null 2>&1; then
  echo "test-services: starting MariaDB"
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
  for _ in $(seq 1 60); do mariadb-admin -h 127.0.0.1 -uroot ping >/dev/null 2>&1 && break; sleep 0.5; done
fi

# the transfer tests' second host (tests/transfers/conftest.py): a network namespace running sshd and rsync
missing=()
for p in openssh-server openssh-client rsync iproute2; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "test-services: installing ${missing[*]}"
  apt=(env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}")
  "${apt[@]}" >/dev/null || { apt-get update -qq && "${apt[@]}" >/dev/null; }
fi

if ! { [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; }; then  # tests/web drives the dashboard in it
  echo "test-services: installing chromium and chromium-driver"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }
fi

bash "$root/scripts/slurm-cluster.sh" start --nodes 4
echo "test-services: PostgreSQL, MariaDB, Slurm (4 nodes) and MPICH are ready"
