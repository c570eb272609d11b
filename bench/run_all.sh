#!/bin/sh
# Every benchmark with the settings bench/README.md reports; JSON lines to stdout. ~30 min on a 2-core VM.
cd "$(dirname "$0")"
PY=${PY:-../.venv/bin/python}
PG=postgresql+psycopg://postgres@127.0.0.1:5432/test
MARIA=mysql+pymysql://root@127.0.0.1:3306/test
uptime
$PY bench_add.py --json
$PY bench_add.py --json --db $PG
$PY bench_add.py --json --db $MARIA
$PY bench_add.py --json --index-costs
$PY bench_dag.py --json
$PY bench_dag.py --json --db $PG
$PY bench_query.py --json
$PY bench_query.py --json --db $PG
$PY bench_launcher.py --json --parsl --pytask --rss
$PY bench_launcher.py --json --dir /dev/shm
$PY bench_launcher.py --json --db $PG
$PY bench_launcher.py --json --db $MARIA
uptime
