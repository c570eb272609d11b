#!/usr/bin/env bash
# The HEP chain on the embedded SQLite default: bash examples/hep/run.sh [WORKSPACE]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
DEFAULT_WS=hep-workspace
# shellcheck source=../workspace.sh
source "$here/../workspace.sh"
results="$SLUICE_WORKSPACE/results"   # stands for the cluster the merged events go back to
mkdir -p "$results"
$S app add grid --command "$PY $here/grid.py {bins}" --desc "integration grid"
$S app add gen --command "$PY $here/gen.py {seed} {n}" --desc "event generator"
$S app add unw --command "$PY $here/unweight.py" --desc "unweighting"
$S app add merge --command "$PY $here/merge.py" --desc "merge"
sed "s#\${RESULTS}#$results#" "$here/campaign.yaml" > "$SLUICE_WORKSPACE/campaign.yaml"
$S submit "$SLUICE_WORKSPACE/campaign.yaml"
$S submit "$SLUICE_WORKSPACE/campaign.yaml"   # again: nothing is added twice
$S launcher --idle-timeout 2 --quiet
$S ls --summary
cat "$results/merged.txt"
