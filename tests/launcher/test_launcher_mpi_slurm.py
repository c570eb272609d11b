"""The launcher with real MPI (Debian's MPICH) and inside a real Slurm allocation (fake nodes n1..n4 on this host).

Serial mode under Slurm must spread tasks over every node through node agents (one `srun` each, not one per
task); MPI mode must start one `srun`/`mpiexec` per job with the right world size.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.launcher.test_mpi import hello, ranks  # noqa: F401 - fixtures

from sluice.api import Workspace
from sluice.launcher.launcher import Launcher, Options
from sluice.states import S

__all__ = ["hello"]


def test_mpi_mode_two_ranks_local(sqlite_ws: Workspace, hello: Path) -> None:  # noqa: F811
    ws = sqlite_ws
    ws.add_app("hello", str(hello))
    j = ws.add_job("h", "hello", ranks_per_node=2, num_nodes=1)
    s = Launcher(ws, Options(job_mode="mpi", mpi_launcher="mpich", idle_timeout=1, status=False)).run()
    job = ws.job(j.id)
    err = (job.path / "h.err").read_text()
    assert job.state == S.JOB_FINISHED, (s.line(), ws.history(j.id), err)
    got = ranks((job.path / "h.out").read_text())
    assert {(r, n) for r, n, _ in got} == {(0, 2), (1, 2)}, err


def _wait_gone(jobid: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["squeue", "-h", "-j", jobid, "-o", "%T"], capture_output=True, text=True).stdout
        if not out.strip():
            return
        time.sleep(0.5)
    subprocess.run(["scancel", jobid])
    pytest.fail(f"batch job {jobid} still in the queue after {timeout} s")


def _sbatch(ws: Workspace, tmp: Path, launcher_args: str) -> str:
    log = tmp / "slurm-%j.out"
    env = dict(os.environ, SLUICE_WORKSPACE=str(ws.path))
    env.pop("SLUICE_JOB_ID", None)
    res = subprocess.run(["sbatch", "--parsable", "-N", "2", "-w", "n1,n2", "--time=2", "-o", str(log),
                          "--wrap", f"{sys.executable} -m sluice launcher -q {launcher_args}"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 0, res.stderr
    jobid = res.stdout.strip().split(";")[0]
    _wait_gone(jobid, 150)
    return (tmp / f"slurm-{jobid}.out").read_text()


@pytest.mark.slurm
@pytest.mark.slow
def test_serial_mode_in_slurm_allocation_uses_both_nodes(sqlite_ws: Workspace, tmp_path: Path,
                                                         slurm_cluster: None) -> None:  # noqa: F811
    ws = sqlite_ws
    ws.add_app("where", "/bin/sh -c {cmd}")
    ids = ws.add_jobs([{"name": f"w{i}", "app": "where",
                        "params": {"cmd": "echo $SLURMD_NODENAME > node; tr '\\0' ' ' < /proc/$PPID/cmdline > parent;"
                                          " sleep 0.3"}} for i in range(24)])
    out = _sbatch(ws, tmp_path, "--job-mode serial --idle-timeout 2")
    assert ws.count(state=S.JOB_FINISHED) == len(ids), (ws.summary(), out)
    nodes = {(ws.job(j).path / "node").read_text().strip() for j in ids}
    assert nodes == {"n1", "n2"}, out
    for j in ids:  # n1 (the batch step's node) spawns in the launcher; n2 through its node agent
        node, parent = ((ws.job(j).path / f).read_text() for f in ("node", "parent"))
        want = "sluice.launcher.agent" if node.strip() == "n2" else "-m sluice launcher"
        assert want in parent, (node, parent)
    # n2's agent holds standbys: some job there started at the very instant another one there ended
    on_n2 = [j for j in ids if (ws.job(j).path / "node").read_text().strip() == "n2"]
    ends = {e.timestamp for j in on_n2 for e in ws.history(j) if e.to_state == S.RUN_DONE}
    handed = [j for j in on_n2 if next(e.timestamp for e in ws.history(j) if e.to_state == S.RUNNING) in ends]
    assert handed, out
    (sess,) = ws.sessions()
    assert sess["info"]["nodes"] == ["n1", "n2"]
    assert sess["info"]["end_time"] is not None and sess["info"]["end_time"] > sess["started_at"]
    assert sess["ended_at"] is not None


@pytest.mark.slurm
@pytest.mark.slow
def test_mpi_mode_in_slurm_allocation(sqlite_ws: Workspace, tmp_path: Path, hello: Path,  # noqa: F811
                                      slurm_cluster: None) -> None:  # noqa: F811
    ws = sqlite_ws
    ws.add_app("hello", str(hello))
    j = ws.add_job("h", "hello", num_nodes=2, ranks_per_node=1)
    out = _sbatch(ws, tmp_path, "--job-mode mpi --idle-timeout 2")
    job = ws.job(j.id)
    err = (job.path / "h.err").read_text() if (job.path / "h.err").exists() else ""
    assert job.state == S.JOB_FINISHED, (ws.history(j.id), out, err)
    got = ranks((job.path / "h.out").read_text())
    assert got == {(0, 2, "n1"), (1, 2, "n2")}, (out, err)
