"""Jobs pinned to a queue or a machine run only in launchers allowed to run them (a campaign across two
systems sharing one database)."""

from __future__ import annotations

import pytest

from sluice.api import Workspace
from sluice.launcher.launcher import Launcher, Options
from sluice.states import S


def test_launcher_runs_only_jobs_it_may_run(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLUICE_QUEUE", raising=False)
    ws.add_app("t", "/bin/true")
    free = ws.add_job("free", app="t")
    gpu = ws.add_job("gpu", app="t", queue="gpu")
    cooley = ws.add_job("cooley", app="t", machine="cooley")
    Launcher(ws, Options(idle_timeout=0.5, status=False)).run()
    assert [ws.job(j.id).state for j in (free, gpu, cooley)] == [S.JOB_FINISHED, S.PREPROCESSED, S.PREPROCESSED]
    Launcher(ws, Options(idle_timeout=0.5, status=False, queue="gpu")).run()
    assert ws.job(gpu.id).state == S.JOB_FINISHED and ws.job(cooley.id).state == S.PREPROCESSED
    Launcher(ws, Options(idle_timeout=0.5, status=False, machine="cooley")).run()
    assert ws.job(cooley.id).state == S.JOB_FINISHED


def test_multi_node_jobs_wait_for_an_mpi_launcher(sqlite_ws: Workspace) -> None:
    sqlite_ws.add_app("t", "/bin/true")
    big = sqlite_ws.add_job("big", app="t", num_nodes=2)
    s = Launcher(sqlite_ws, Options(idle_timeout=0.5, status=False)).run()
    assert s.started == 0 and sqlite_ws.job(big.id).state == S.PREPROCESSED and sqlite_ws.job(big.id).session_id is None
