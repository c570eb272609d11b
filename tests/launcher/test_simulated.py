"""The simulated launcher (launcher/simulate.py): tasks are timers on fake nodes; the database, claims, packing,
the writer, events and recovery are the real ones, so what they do is checked from the events table.

A simulated launcher of 64 nodes x 64 cores runs 20,000 zero-length jobs, each exactly once, on SQLite and
PostgreSQL; failures, timeouts and user kills of simulated tasks take the real paths; a simulated launcher
stopped mid-run (by a stop, or by kill -9 of its process) leaves every job to finish exactly once after.
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
from sqlalchemy import text
from tests.conftest import make_workspace

from sluice.api import Workspace
from sluice.launcher.launcher import Launcher, Options
from sluice.launcher.simulate import simulated, task_of
from sluice.states import S

SRC = str(Path(__file__).resolve().parents[2] / "src")
FULL_PATH = [S.PREPROCESSED, S.RUNNING, S.RUN_DONE, S.POSTPROCESSED, S.JOB_FINISHED]


@pytest.fixture(params=["sqlite", "postgresql"])
def ws2(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    w = make_workspace(request.param, tmp_path / "ws", request)
    monkeypatch.setenv("SLUICE_WORKSPACE", str(w.path))
    return w


def sim_opts(**kw: object) -> Options:
    return Options(simulate=True, status=False, heartbeat_s=0.5, **kw)  # type: ignore[arg-type]


def finished_events(ws: Workspace) -> dict[int, int]:
    """job id -> how many JOB_FINISHED events it has, read from the events table itself."""
    with ws.engine.connect() as c:
        rows = c.execute(text("SELECT job_id, count(*) FROM events WHERE to_state = 'JOB_FINISHED' "
                              "GROUP BY job_id")).all()
    return {int(j): int(n) for j, n in rows}


def assert_exactly_once(ws: Workspace, ids: list[int]) -> None:
    got = finished_events(ws)
    assert set(got) == set(ids), (len(got), len(ids))
    twice = {j: n for j, n in got.items() if n != 1}
    assert not twice, list(twice.items())[:10]
    assert ws.count(state=S.JOB_FINISHED) == len(ids)
    assert ws.count(state=S.RUNNING) == 0
    assert all(s["ended_at"] is not None for s in ws.sessions())


def add(ws: Workspace, n: int, **spec: object) -> list[int]:
    ws.add_app("sim", "/bin/does-not-exist --x {x}")  # never run: a simulated task is a timer
    return ws.add_jobs([{"name": f"j{i}", "app": "sim", "params": {"x": i}, **spec} for i in range(n)])


def test_64_nodes_of_64_cores_run_20000_zero_length_jobs_each_exactly_once(ws2: Workspace) -> None:
    ws = ws2
    ids = add(ws, 20_000)
    s = Launcher(ws, sim_opts(), alloc=simulated(64, 64)).run()
    assert s.started == s.finished == 20_000, s.line()
    assert s.reason == "no more work"
    assert_exactly_once(ws, ids)
    with ws.engine.connect() as c:  # every step of every job is an event, in order, by this launcher
        n_events, actors = c.execute(text("SELECT count(*), count(DISTINCT actor) FROM events "
                                          "WHERE to_state IN ('RUNNING', 'RUN_DONE', 'POSTPROCESSED')")).one()
    assert (n_events, actors) == (3 * 20_000, 1)
    assert [e.to_state for e in ws.history(ids[-1])][-5:] == FULL_PATH
    assert not any(p.is_dir() for p in (ws.path / "data").iterdir())  # a simulated task makes no directory


def test_a_launcher_never_runs_far_ahead_of_its_database(ws2: Workspace) -> None:
    """Zero-length jobs end faster than a writer persists them: starts wait while more than `max_unwritten`
    changes are unwritten (past it, only one round of starts and ends of the whole allocation and of the
    standbys queued on its nodes can be added).
    Unbounded, 20,000 jobs on 64 x 64 slots left 22,000 changes in memory, every one re-run after a kill -9."""
    ws = ws2
    ids = add(ws, 20_000)
    la = Launcher(ws, sim_opts(max_unwritten=1_000), alloc=simulated(64, 64))
    s = la.run()
    assert s.started == s.finished == 20_000, s.line()
    assert 0 < la.writer.peak <= 1_000 + 2 * 64 * (64 + 64), la.writer.peak
    assert la.writer.backlog() == 0
    assert_exactly_once(ws, ids)


def test_simulated_durations_failures_and_timeouts_take_the_real_paths(sqlite_ws: Workspace) -> None:
    """sim_s sets a task's length, sim_rc its exit code; a wall time shorter than sim_s is a timeout."""
    ws = sqlite_ws
    ws.add_app("sim", "run {x}")
    ok = ws.add_jobs([{"name": f"ok{i}", "app": "sim", "params": {"x": i}, "data": {"sim_s": 0.3}}
                      for i in range(8)])
    bad = ws.add_job("bad", app="sim", params={"x": 0}, data={"sim_rc": 3}, max_retries=1)
    slow = ws.add_job("slow", app="sim", params={"x": 0}, data={"sim_s": 30}, wall_time_min=0.005, max_retries=0)
    t0 = time.time()
    s = Launcher(ws, sim_opts(), alloc=simulated(2, 4)).run()
    assert s.finished == 8 and s.failed == 2, s.line()
    assert time.time() - t0 < 20  # the 30 s job was cut at its wall time (0.3 s)
    runs = [(e.to_state, e.timestamp) for e in ws.history(ok[0])]
    assert [st for st, _ in runs][-5:] == FULL_PATH
    started, ended = runs[-4][1], runs[-1][1]
    assert 0.29 <= ended - started < 5  # the exit comes when the timer says
    assert [e.to_state for e in ws.history(bad.id)][-6:] == [S.RUNNING, S.RUN_ERROR, S.RESTART_READY, S.RUNNING,
                                                            S.RUN_ERROR, S.FAILED]
    assert ws.history(bad.id)[-2].data == {"exit_code": 3}
    hist = ws.history(slow.id)
    assert [e.to_state for e in hist][-3:] == [S.RUNNING, S.RUN_TIMEOUT, S.FAILED]
    assert hist[-2].data == {"exit_code": -signal.SIGTERM}
    assert task_of({"sim_s": 2, "sim_rc": 1}, 0.5) == (2.0, 1) and task_of(None, 0.5) == (0.5, 0)


def test_a_user_kill_reaches_a_simulated_task(sqlite_ws: Workspace) -> None:
    ws = sqlite_ws
    ws.add_app("sim", "run")
    job = ws.add_job("long", app="sim", data={"sim_s": 60})
    quick = ws.add_jobs([{"name": f"q{i}", "app": "sim"} for i in range(5)])
    la = Launcher(ws, sim_opts(idle_timeout=0.5), alloc=simulated(1, 2))

    def kill_when_running() -> None:
        deadline = time.monotonic() + 30
        while ws.job(job.id).state != S.RUNNING and time.monotonic() < deadline:
            time.sleep(0.05)
        ws.kill(job.id)

    t = threading.Thread(target=kill_when_running)
    t.start()
    s = la.run()
    t.join()
    assert ws.job(job.id).state == S.USER_KILLED, s.line()
    assert s.seconds < 30
    assert_exactly_once(ws, quick)


def test_a_simulated_allocation_needs_simulate(sqlite_ws: Workspace) -> None:
    with pytest.raises(ValueError, match="simulate=True"):
        Launcher(sqlite_ws, Options(status=False), alloc=simulated(2, 2))
    la = Launcher(sqlite_ws, Options(simulate=True, sim_nodes=3, sim_cores=5, status=False))
    assert [(n.name, n.cores) for n in la.alloc.nodes] == [("sim0", 5), ("sim1", 5), ("sim2", 5)]


def test_mpi_mode_on_simulated_nodes_never_shares_a_node(sqlite_ws: Workspace) -> None:
    """16 nodes, 4-node jobs of 0.3 s: never more than 4 at once, and all run."""
    ws = sqlite_ws
    ws.add_app("mpi", "app")
    ids = ws.add_jobs([{"name": f"m{i}", "app": "mpi", "num_nodes": 4, "data": {"sim_s": 0.3}} for i in range(10)]
                      + [{"name": f"s{i}", "app": "mpi", "num_nodes": 1, "data": {"sim_s": 0.3}} for i in range(6)])
    s = Launcher(ws, sim_opts(job_mode="mpi"), alloc=simulated(16, 8)).run()
    assert s.finished == 16, s.line()
    spans = []
    for j in ids:
        h = {e.to_state: e.timestamp for e in ws.history(j)}
        spans.append((h[S.RUNNING], h[S.RUN_DONE], ws.job(j).num_nodes))
    busiest = max(sum(n for a, b, n in spans if a <= t < b) for t, _, _ in spans)
    assert busiest <= 16
    assert_exactly_once(ws, ids)


def test_a_stopped_simulated_launcher_leaves_every_job_to_finish_exactly_once(ws2: Workspace) -> None:
    """stop() mid-run (as SIGTERM or the allocation's end do): running timers are cut short, RUN_TIMEOUT and
    retried; a second simulated launcher finishes the rest."""
    ws = ws2
    ids = add(ws, 3000, data={"sim_s": 0.5}, max_retries=5)
    la = Launcher(ws, sim_opts(), alloc=simulated(8, 32))

    def stop_midway() -> None:
        deadline = time.monotonic() + 60
        while ws.count(state=S.JOB_FINISHED) < 600 and time.monotonic() < deadline:
            time.sleep(0.02)
        la.stop("test stop")

    t = threading.Thread(target=stop_midway)
    t.start()
    s1 = la.run()
    t.join()
    assert s1.reason == "test stop" and s1.finished < len(ids), s1.line()
    cut = [e for e in ws.events(to_state=S.RUN_TIMEOUT)]
    assert cut and all("stopped: test stop" in (e.message or "") for e in cut), (s1.line(), ws.summary())
    s2 = Launcher(ws, sim_opts(), alloc=simulated(8, 32)).run()
    assert s1.finished + s2.finished == len(ids), (s1.line(), s2.line())
    assert_exactly_once(ws, ids)


KILLED = """
import sys
sys.path.insert(0, {src!r})
from sluice.api import Workspace
from sluice.launcher.launcher import Launcher, Options
from sluice.launcher.simulate import simulated
ws = Workspace.open(sys.argv[1])
Launcher(ws, Options(simulate=True, status=False, heartbeat_s=0.5), alloc=simulated(8, 16)).run()
"""


def test_kill_9_of_a_simulated_launcher_then_another_recovers(ws2: Workspace) -> None:
    """kill -9 of a simulated launcher's process mid-run: the next launcher finds its session dead (same host,
    pid gone), retries its RUNNING jobs, and every job finishes exactly once."""
    ws = ws2
    ids = add(ws, 4000, data={"sim_s": 0.2}, max_retries=5)
    env = dict(os.environ, SLUICE_WORKSPACE=str(ws.path))
    p = subprocess.Popen([sys.executable, "-c", KILLED.format(src=SRC), str(ws.path)], env=env)
    deadline = time.monotonic() + 120
    while ws.count(state=S.JOB_FINISHED) < 500 and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert p.poll() is None, "the simulated launcher ended before it could be killed"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    held, before = ws.count(state=S.RUNNING), ws.count(state=S.JOB_FINISHED)
    assert held > 0 and before < len(ids)
    s = Launcher(ws, sim_opts(), alloc=simulated(8, 16)).run()
    assert s.finished == len(ids) - before, s.line()
    assert_exactly_once(ws, ids)
    lost = [e for e in ws.events(to_state=S.RESTART_READY) if "was lost" in (e.message or "")]
    assert len(lost) == held
