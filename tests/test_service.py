"""The service with the local scheduler (real background launchers): fast, on every backend."""

from __future__ import annotations

import time

import pytest

from sluice.api import Workspace
from sluice.config import QueuePolicy
from sluice.errors import UserError
from sluice.schedulers import get_scheduler
from sluice.service import Service, cancel, service_lock, submit
from sluice.states import S


def drive(svc: Service, ws: Workspace, timeout: float = 90.0) -> None:
    """Run passes until every job has ended (what `sluice service` does forever)."""
    end = time.time() + timeout
    while time.time() < end:
        svc.run_once()
        if not set(ws.summary()) - {S.JOB_FINISHED, S.FAILED, S.USER_KILLED}:
            return
        time.sleep(0.5)
    raise AssertionError(f"campaign did not finish: {ws.summary()} {ws.batch_jobs()}")


def local(ws: Workspace) -> Service:
    sched = get_scheduler("local", state_dir=ws.config.logs_dir / "local-scheduler")
    return Service(ws, sched, period=0.5, idle_timeout=1.0)


def test_service_alone_drives_a_small_dag_to_the_end(ws: Workspace) -> None:
    ws.add_app("step", "/bin/sh -c 'echo {x} > out.txt'")
    first = ws.add_jobs([{"name": f"a{i}", "app": "step", "params": {"x": i}} for i in range(6)])
    ws.add_jobs([{"name": f"b{i}", "app": "step", "params": {"x": i}, "parents": [p]} for i, p in enumerate(first)])
    drive(local(ws), ws)
    assert ws.summary() == {"JOB_FINISHED": 12}
    assert all(b["state"] in ("finished", "running", "queued") for b in ws.batch_jobs())
    j = ws.jobs(name="b3")[0]
    assert (j.path / "out.txt").read_text().strip() == "3"


def test_nothing_is_submitted_without_work_and_max_queued_is_respected(sqlite_ws: Workspace) -> None:
    ws = sqlite_ws
    svc = local(ws)
    assert svc.run_once().submitted == []
    ws.add_app("nap", "/bin/sleep 30")
    ws.add_jobs([{"name": f"n{i}", "app": "nap"} for i in range(40)])
    pol = QueuePolicy(name="q", max_queued=2, max_running=0, min_nodes=1, max_nodes=1)
    object.__setattr__(ws.config, "queues", {"q": pol})
    sched = _NeverStarts()
    p = Service(ws, sched, period=0.5).run_once()
    assert len(p.submitted) == 2
    assert Service(ws, sched, period=0.5).run_once().submitted == []  # still 2 waiting: no more


class _NeverStarts:
    """A scheduler whose jobs wait forever: the queue limits are what is tested, not the scheduler."""

    name = "fake"

    def __init__(self) -> None:
        self.n = 0

    def submit(self, req: object) -> str:
        self.n += 1
        return f"w{self.n}"

    def status(self, ids: list[str]) -> dict[str, object]:
        from sluice.schedulers import BatchState, BatchStatus

        return {i: BatchStatus(i, BatchState.QUEUED) for i in ids}

    def cancel(self, native_id: str) -> None:
        pass


def test_submit_failure_is_recorded_and_does_not_stop_the_service(sqlite_ws: Workspace) -> None:
    ws = sqlite_ws
    ws.add_app("t", "/bin/true")
    ws.add_job("t", app="t")

    class Refuses(_NeverStarts):
        def submit(self, req: object) -> str:
            from sluice.schedulers import SchedulerError

            raise SchedulerError("sbatch: error: invalid partition specified: nope")

    p = Service(ws, Refuses()).run_once()  # type: ignore[arg-type]
    assert p.failed and not p.submitted
    (row,) = ws.batch_jobs()
    assert row["state"] == "submit_failed" and "invalid partition" in row["message"]


def test_a_waiting_batch_job_whose_work_vanished_is_cancelled(sqlite_ws: Workspace) -> None:
    ws = sqlite_ws
    ws.add_app("t", "/bin/true")
    j = ws.add_job("t", app="t")
    sched = _NeverStarts()
    svc = Service(ws, sched, vanished_after_s=0.0)  # type: ignore[arg-type]
    assert svc.run_once().submitted
    ws.kill(j.id)
    time.sleep(0.05)
    p = svc.run_once()
    assert p.cancelled and ws.batch_jobs(active_only=True) == []


def test_only_one_service_per_workspace(sqlite_ws: Workspace) -> None:
    with service_lock(sqlite_ws.config.logs_dir):
        with pytest.raises(UserError, match="already runs"):
            with service_lock(sqlite_ws.config.logs_dir):
                pass


def test_queue_submit_and_cancel_by_hand(sqlite_ws: Workspace) -> None:
    ws = sqlite_ws
    sched = get_scheduler("local", state_dir=ws.config.logs_dir / "ls")
    row = submit(ws, sched, nodes=1, wall_time_min=1)
    assert row["state"] == "queued" and row["native_id"]
    assert cancel(ws, sched, row["id"])["state"] == "cancelled"
    with pytest.raises(UserError, match="already ended"):
        cancel(ws, sched, row["id"])
    with pytest.raises(UserError, match="at least 1"):
        submit(ws, sched, nodes=0, wall_time_min=1)


def test_pinned_jobs_only_count_for_their_queue(sqlite_ws: Workspace) -> None:
    ws = sqlite_ws
    ws.add_app("t", "/bin/true")
    ws.add_jobs([{"name": f"a{i}", "app": "t", "queue": "gpu"} for i in range(4)])
    ws.add_jobs([{"name": f"b{i}", "app": "t", "queue": "elsewhere"} for i in range(4)])
    pols = {"cpu": QueuePolicy(name="cpu"), "gpu": QueuePolicy(name="gpu")}
    object.__setattr__(ws.config, "queues", pols)
    svc = Service(ws, _NeverStarts(), cores_per_node=1)  # type: ignore[arg-type]
    p = svc.run_once()
    assert p.work == {"cpu": 0, "gpu": 4}
    assert [b["queue"] for b in ws.batch_jobs()] == ["gpu"]


def test_the_local_scheduler_gets_one_launcher_of_one_node(sqlite_ws: Workspace) -> None:
    """This machine is one node: `service --once` used to start five launchers of 16 "nodes" at once."""
    ws = sqlite_ws
    ws.add_app("nap", "/bin/sleep 30")
    ws.add_jobs([{"name": f"n{i}", "app": "nap"} for i in range(400)])
    svc = local(ws)
    try:
        first = svc.run_once()
        assert len(first.submitted) == 1
        (b,) = ws.batch_jobs()
        assert b["num_nodes"] == 1
        assert svc.run_once().submitted == []  # one launcher at a time, queued or running
    finally:
        for row in ws.batch_jobs(active_only=True):
            cancel(ws, svc.sched, row["id"])


def test_a_batch_request_no_scheduler_can_honour_records_nothing(sqlite_ws: Workspace) -> None:
    ws = sqlite_ws
    with pytest.raises(UserError, match="line break"):
        submit(ws, get_scheduler("slurm"), nodes=1, wall_time_min=10, queue="debug\nrm -rf /")
    assert ws.batch_jobs() == []
