#!/bin/sh
# The pass whose numbers bench/README.md's "Current results" quotes, one line per benchmark. ~25 min here.
cd "$(dirname "$0")"
PY=${PY:-../.venv/bin/python}
set -x
uptime
$PY bench_launcher.py --dir /dev/shm --runs 5
$PY bench_launcher.py --dir /dev/shm --runs 5 --parsl --pytask --rss
$PY bench_launcher.py --dir /dev/shm --db pg
$PY bench_launcher.py --dir /dev/shm --db mariadb
$PY bench_launcher.py
$PY bench_add.py --runs 3
$PY bench_dag.py
$PY bench_query.py --repeat 3 --dir /dev/shm
$PY bench_service.py --repeat 3 --dir /dev/shm
$PY bench_query.py --repeat 3 --dir /dev/shm --db pg
$PY bench_add.py --runs 3 --db pg
$PY bench_dag.py --db pg
uptime
