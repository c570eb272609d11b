#!/usr/bin/env bash
# Between-shot analysis: a launcher waits in its allocation, a watcher turns each new shot file into a job
# with a deadline, and every analysis must finish before the next shot. bash examples/shots/run.sh [WORKSPACE]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
SHOTS=${SHOTS:-5}
PERIOD=${PERIOD:-2}
DEFAULT_WS=shots-workspace
# shellcheck source=../workspace.sh
source "$here/../workspace.sh"
mkdir -p "$SLUICE_WORKSPACE/shots"
$S app add analyse --command "$PY -S $here/analyse.py {input}" --desc "between-shot analysis"
$S launcher --idle-timeout "$(( PERIOD * 3 ))" --quiet &        # waits for the next shot, however quiet
launcher=$!
$S watch "$SLUICE_WORKSPACE/shots" --app analyse --pattern 'shot_*.dat' --param 'input={path}' \
   --deadline "$(awk "BEGIN { print $PERIOD / 60 }")" --priority 10 --workflow shots &
watcher=$!
$PY "$here/diagnostic.py" "$SLUICE_WORKSPACE/shots" "$SHOTS" "$PERIOD"
for _ in $(seq 1 100); do   # the last analysis
  [ "$($S ls --workflow shots --state JOB_FINISHED | grep -c shot_ || true)" -ge "$SHOTS" ] && break
  sleep 0.1
done
kill -TERM "$watcher"; wait "$watcher" || true
wait "$launcher"
$S ls --workflow shots
$PY - "$SLUICE_WORKSPACE" <<'PYEOF'
import sys
import sluice
ws = sluice.Workspace.open(sys.argv[1])
jobs = sorted(ws.jobs(workflow="shots"), key=lambda j: j.name)
for j in jobs:
    made = j.history[0].timestamp
    done = max(e.timestamp for e in j.history if e.to_state == "JOB_FINISHED")
    print(f"{j.name}: analysed {done - made:.2f} s after it arrived")
late = [j.name for j in jobs if j.state != "JOB_FINISHED" or "deadline" in (j.history[-1].message or "")]
print("every shot analysed before the next" if not late else f"late: {late}")
sys.exit(1 if late else 0)
PYEOF
