#!/usr/bin/env bash
# 1,000 ensemble members on the embedded SQLite default: bash examples/ensemble/run.sh [WORKSPACE]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
DEFAULT_WS=ensemble-workspace
# shellcheck source=../workspace.sh
source "$here/../workspace.sh"
$S app add myapp --command "$PY -S $here/myapp.py --args {x}" --desc "one ensemble member"
$S submit "$here/campaign.yaml"
$S launcher --idle-timeout 2 --quiet
$S ls --summary
