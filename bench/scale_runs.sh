#!/bin/bash
# The issue-14 figures of bench/README.md, one after the other (each line's output goes to $OUT/<name>.log).
#   bash bench/scale_runs.sh [OUT]     (from the repository, with the project venv; ~30 min on a 2-core VM)
set -u
cd "$(dirname "$0")"
PY=../.venv/bin/python
OUT=${1:-/tmp/scale}
mkdir -p "$OUT"
run() { local name=$1; shift; echo "== $name: bench_scale.py $*" | tee "$OUT/$name.log"; $PY bench_scale.py --dir /dev/shm "$@" 2>&1 | tail -4 | tee -a "$OUT/$name.log"; }
run sqlite-1m     --nodes 1024 --cores 64 --jobs 1000000 --db sqlite
run pg-1m         --nodes 1024 --cores 64 --jobs 1000000 --db pg
run util-10s      --nodes 1024 --cores 64 --jobs 400000 --duration 10 --db sqlite
run pg-16         --nodes 1024 --cores 64 --jobs 400000 --launchers 16 --db pg
run mpi-4096      --nodes 4096 --cores 64 --jobs 3000 --mpi-mix --db sqlite
run matrix        --matrix --db sqlite --runs 1
# 10,000,000 jobs (built once, ~4 min, 4 GB under /dev/shm; kept in $WS10M for the next run)
WS10M=${WS10M:-/dev/shm/q10m}
$PY bench_query.py --n 10000000 --workspace "$WS10M" --repeat 3 --only summary,ls1000,ready50 2>&1 | tail -1 | tee "$OUT/q10m.log"
$PY bench_service.py --workspace "$WS10M" --repeat 5 2>&1 | tail -1 | tee "$OUT/svc10m.log"
