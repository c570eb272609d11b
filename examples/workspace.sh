# Sourced by each example's run.sh: a fresh workspace at $1 (default $DEFAULT_WS), with
#   S  = the sluice command ($SLUICE, default `sluice`)     PY = the Python for the apps ($PYTHON, default python3)
#   SLUICE_WORKSPACE exported, so every `sluice` below works on it.
S=${SLUICE:-sluice}
PY=${PYTHON:-python3}
WS=${1:-$DEFAULT_WS}
rm -rf "$WS"
$S init "$WS" >/dev/null
export SLUICE_WORKSPACE
SLUICE_WORKSPACE=$(cd "$WS" && pwd)
