#!/bin/sh
# The second pass whose numbers bench/README.md quotes (the Parsl/pytask/MariaDB numbers come from run_all.sh).
cd "$(dirname "$0")"
PY=${PY:-../.venv/bin/python}
PG=postgresql+psycopg://postgres@127.0.0.1:5432/test
uptime
$PY bench_add.py --json
$PY bench_add.py --json --db $PG
$PY bench_launcher.py --json --rss
$PY bench_launcher.py --json --dir /dev/shm
$PY bench_query.py --json
$PY bench_query.py --json --db $PG
uptime
