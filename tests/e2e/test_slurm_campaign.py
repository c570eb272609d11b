"""End to end on real Slurm: the service alone drives campaigns through a 4-node cluster (no mocks).

The service runs as `sluice service` in a subprocess; it submits launcher batch jobs with sbatch; launchers
inside the allocations discover their nodes and end time from Slurm and run the jobs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sluice.api import Workspace
from sluice.states import S

pytestmark = [pytest.mark.slurm]

TOML = """
[service]
scheduler = "slurm"
period = 1

[queues.debug]
max_queued = 2
max_running = 2
min_nodes = 1
max_nodes = 2
min_wall_min = {wall}
max_wall_min = {wall}
"""


def slurm_ws(tmp_path: Path, wall: int) -> Workspace:
    ws = Workspace.create(tmp_path / "ws", scheduler="slurm")
    (ws.path / "sluice.toml").write_text(TOML.format(wall=wall))
    return Workspace.open(ws.path)


def start_service(ws: Workspace) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SLUICE_WORKSPACE": str(ws.path)}
    log = open(ws.path / "logs" / "service-test.log", "ab")
    return subprocess.Popen([sys.executable, "-m", "sluice", "service", "--period", "1", "--idle-timeout", "3",
                             "--verbose"], env=env, stdout=log, stderr=log)


class Poller(threading.Thread):
    """Records the most of our batch jobs ever waiting in Slurm's queue at once."""

    def __init__(self, ws: Workspace) -> None:
        super().__init__(daemon=True)
        self.ws = ws
        self.max_pending = 0
        self.stop = False

    def run(self) -> None:
        while not self.stop:
            ids = [str(b["native_id"]) for b in self.ws.batch_jobs() if b["native_id"]]
            if ids:
                out = subprocess.run(["squeue", "-h", "-t", "PENDING", "-o", "%i", "-j", ",".join(ids)],
                                     capture_output=True, text=True).stdout.split()
                self.max_pending = max(self.max_pending, len(out))
            time.sleep(0.3)


def wait_for(pred: object, timeout: float, what: str) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if pred():  # type: ignore[operator]
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def finished(ws: Workspace) -> bool:
    return not set(ws.summary()) - {S.JOB_FINISHED}


def test_service_drives_a_300_job_three_stage_campaign_within_max_queued_even_after_kill_9(
        slurm_cluster: None, tmp_path: Path) -> None:
    ws = slurm_ws(tmp_path, wall=3)
    ws.add_app("grid", "/bin/sh -c 'echo grid > grid.txt'")
    ws.add_app("gen", "/bin/sh -c 'echo {i} > gen.txt; echo $SLURMD_NODENAME > node.txt'")
    ws.add_app("post", "/bin/sh -c 'echo post {i} > post.txt'")
    ws.add_app("merge", "/bin/sh -c 'ls > merged.txt'")
    grid = ws.add_job("grid", app="grid", workflow="c3")
    gens = ws.add_jobs([{"name": f"gen{i}", "app": "gen", "params": {"i": i}, "workflow": "c3",
                         "parents": [grid.id]} for i in range(150)])
    posts = ws.add_jobs([{"name": f"post{i}", "app": "post", "params": {"i": i}, "workflow": "c3",
                          "parents": [g]} for i, g in enumerate(gens)])
    ws.add_job("merge", app="merge", workflow="c3", parents=posts)
    assert ws.count() == 302
    poller = Poller(ws)
    poller.start()
    svc = start_service(ws)
    try:
        wait_for(lambda: ws.summary().get(S.JOB_FINISHED, 0) >= 20, 120, "the campaign to get going")
        submitted_before = len(ws.batch_jobs())
        svc.send_signal(signal.SIGKILL)
        svc.wait()
        svc = start_service(ws)  # a new service takes over: the lock died with the old one
        wait_for(lambda: finished(ws), 240, f"the campaign to finish: {ws.summary()}")
    finally:
        svc.send_signal(signal.SIGTERM)
        svc.wait(30)
        poller.stop = True
        poller.join()
    assert ws.summary() == {"JOB_FINISHED": 302}
    assert poller.max_pending <= 2, f"{poller.max_pending} batch jobs were waiting at once"
    batch = ws.batch_jobs()
    assert all(b["state"] != "submit_failed" for b in batch)
    assert submitted_before >= 1 and len(batch) <= submitted_before + 40
    nodes = {(j.path / "node.txt").read_text().strip() for j in ws.jobs(name="gen*")}
    assert nodes <= {"n1", "n2", "n3", "n4"} and nodes


@pytest.mark.slow
def test_a_job_cut_by_the_end_of_its_allocation_is_retried_in_a_later_one(
        slurm_cluster: None, tmp_path: Path) -> None:
    ws = slurm_ws(tmp_path, wall=1)
    # the first attempt outlives the 1-minute allocation; the retry finishes at once
    ws.add_app("long", "/bin/sh -c 'if [ -e tried ]; then echo second > done.txt; else touch tried; sleep 600; fi'")
    job = ws.add_job("long", app="long", max_retries=2)
    svc = start_service(ws)
    try:
        wait_for(lambda: ws.job(job.id).state == S.JOB_FINISHED, 200, "the retried job to finish")
    finally:
        svc.send_signal(signal.SIGTERM)
        svc.wait(30)
    hist = [(e.from_state, e.to_state) for e in ws.history(job.id)]
    assert (S.RUNNING, S.RUN_TIMEOUT) in hist and (S.RUN_TIMEOUT, S.RESTART_READY) in hist
    assert (job.path / "done.txt").read_text().strip() == "second"
    assert ws.job(job.id).retry_count == 1
    assert len({e.actor for e in ws.history(job.id) if e.to_state == S.RUNNING}) == 2  # two launcher sessions
    assert len(ws.batch_jobs()) >= 2
