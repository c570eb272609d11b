"""A running job that spawns its own children: one training per learning rate, then a job that picks the best.

It runs inside a launcher, so sluice.current_job() and spawn_child() know where it is ($SLUICE_JOB_ID)."""
import sys

import sluice

me = sluice.current_job()
rates = [float(r) for r in sys.argv[1:]] or [0.1, 0.03, 0.01, 0.003, 0.001]
kids = [sluice.spawn_child(f"train-{lr:g}", "train", params={"lr": lr}) for lr in rates]
ws = sluice.Workspace.open()
ws.add_job("pick", app="pick", workflow=me.workflow, parents=kids, stage_in=[{"parents": "score.txt"}])
print(f"spawned {len(kids)} trainings and a pick")
