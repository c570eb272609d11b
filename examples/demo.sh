#!/usr/bin/env bash
# A real campaign on the embedded SQLite default: 24 Monte Carlo jobs, then a merge job that waits for all
# of them and gets their outputs staged into its directory. Run through `make demo`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
S=${SLUICE:-sluice}
WS=${1:-demo-workspace}
N=${DEMO_JOBS:-24}

rm -rf "$WS"
$S init "$WS"
export SLUICE_WORKSPACE
SLUICE_WORKSPACE=$(cd "$WS" && pwd)
$S app add throw --command "/bin/sh $here/pi/throw.sh {seed} {darts}" --desc "throw darts at a square"
$S app add merge --command "/bin/sh $here/pi/merge.sh" --desc "estimate pi from every throw"

{
  echo "workflow: pi"
  echo "jobs:"
  echo "  - {name: 'throw{seed}', app: throw, sweep: {seed: {range: [1, $((N + 1))]}}, params: {darts: 200000},"
  echo "     wall_time_min: 5}"
  echo "  - {name: merge, app: merge, after: 'throw*', stage_in: [{parents: 'hits_*.txt'}]}"
} > "$SLUICE_WORKSPACE/pi.yaml"
$S submit "$SLUICE_WORKSPACE/pi.yaml"
echo "== before the launcher"
$S ls --summary
echo "== the launcher runs every job on this machine's cores"
$S launcher
echo "== after"
$S ls --summary
$S ls --state JOB_FINISHED --limit 5
echo "== the merge job's output"
cat "$SLUICE_WORKSPACE"/data/pi/merge_*/merge.out
echo "== its history"
$S history pi/merge
