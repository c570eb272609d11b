#!/usr/bin/env bash
# A hyper-parameter search whose running job spawns its children: bash examples/hyperparam/run.sh [WORKSPACE]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
S=${SLUICE:-sluice}
PY=${PYTHON:-python3}
WS=${1:-hyperparam-workspace}
rm -rf "$WS"
$S init "$WS" >/dev/null
export SLUICE_WORKSPACE
SLUICE_WORKSPACE=$(cd "$WS" && pwd)
$S app add search --command "$PY $here/search.py" --desc "spawns one training per learning rate"
$S app add train --command "$PY $here/train.py {lr}" --desc "one training"
$S app add pick --command "$PY $here/pick.py" --desc "the best learning rate"
$S job --name search --workflow hpo --app search
$S launcher --idle-timeout 2 --quiet
$S ls --summary
cat "$(ls -d "$SLUICE_WORKSPACE"/data/hpo/pick_*)/best.txt"
