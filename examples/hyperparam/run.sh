#!/usr/bin/env bash
# A hyper-parameter search whose running job spawns its children: bash examples/hyperparam/run.sh [WORKSPACE]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
DEFAULT_WS=hyperparam-workspace
# shellcheck source=../workspace.sh
source "$here/../workspace.sh"
$S app add search --command "$PY $here/search.py" --desc "spawns one training per learning rate"
$S app add train --command "$PY $here/train.py {lr}" --desc "one training"
$S app add pick --command "$PY $here/pick.py" --desc "the best learning rate"
$S job --name search --workflow hpo --app search
$S launcher --idle-timeout 2 --quiet
$S ls --summary
cat "$(ls -d "$SLUICE_WORKSPACE"/data/hpo/pick_*)/best.txt"
