"""Standby tasks: a task queued in the spawn engine starts on the thread of the next task to end, in its place.

First the engines (compiled and Python, through LocalSpawner): the hand-over, taking a standby back, its wall
time, its failure to start, closing. Then the launcher: short jobs are handed over without ever running more
tasks than cores, and a standby job a user kills, or one waiting when the launcher stops, never runs.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from tests.launcher.test_agent import collect

from sluice import environ
from sluice.api import Workspace
from sluice.launcher import standby
from sluice.launcher.launcher import Launcher, Options
from sluice.launcher.spawn import LocalSpawner
from sluice.states import S


def test_a_standby_task_starts_the_moment_a_running_task_ends_on_its_thread(tmp_path: Path, engine: str) -> None:
    sp = LocalSpawner(engine=engine)
    sp.spawn(1, ["sleep", "0.4"])
    sp.spawn(2, ["/bin/true"], stdout=str(tmp_path / "2.out"), standby=True)
    time.sleep(0.2)
    assert not (tmp_path / "2.out").exists()  # not started while task 1 runs: its output is opened at start
    got = collect(sp, 2)
    assert got[1]["rc"] == 0 and got[1]["next"] == 2  # 1's end names its successor
    assert got[2]["rc"] == 0 and "next" not in got[2]
    assert got[1]["t"] <= got[2]["t"] < got[1]["t"] + 0.5
    assert sp.threads == 1  # 2 ran on the thread 1 left
    assert sp.running == 0
    sp.close()


def test_a_standby_taken_back_before_it_starts_never_runs(tmp_path: Path, engine: str) -> None:
    sp = LocalSpawner(engine=engine)
    sp.spawn(1, ["sleep", "0.3"])
    sp.spawn(2, ["/bin/true"], stdout=str(tmp_path / "2.out"), standby=True)
    sp.spawn(3, ["/bin/true"], stdout=str(tmp_path / "3.out"), standby=True)
    assert sp.cancel(2) is True
    assert sp.cancel(2) is False and sp.cancel(1) is False  # gone; and 1 is no standby
    got = collect(sp, 2)
    assert got[1]["next"] == 3  # 3 took 1's place, 2 did not
    assert not (tmp_path / "2.out").exists() and (tmp_path / "3.out").exists()
    assert sp.cancel(3) is False  # it has run
    assert sp.running == 0
    sp.close()


def test_a_standby_tasks_wall_time_counts_from_its_start(engine: str) -> None:
    sp = LocalSpawner(kill_grace=0.2, engine=engine)
    sp.spawn(1, ["sleep", "0.6"])
    sp.spawn(2, ["sleep", "10"], timeout=0.4, standby=True)
    got = collect(sp, 2)
    assert got[2]["timed_out"] and got[1]["next"] == 2
    assert got[2]["t"] - got[1]["t"] >= 0.35  # timed from its queueing, it would have been cut at once
    sp.close()


def test_a_standby_that_cannot_start_is_its_error_and_hands_on(tmp_path: Path, engine: str) -> None:
    """Its failure to start is an end like any other: the next standby takes its place."""
    sp = LocalSpawner(engine=engine)
    sp.spawn(1, ["sleep", "0.2"])
    sp.spawn(2, ["/bin/true"], stdout=str(tmp_path / "no" / "dir" / "out"), make_cwd=False, standby=True)
    sp.spawn(3, ["/bin/true"], standby=True)
    got = collect(sp, 3)
    assert got[1]["next"] == 2
    assert got[2]["ev"] == "error" and "no/dir/out" in got[2]["msg"] and got[2]["next"] == 3
    assert got[3]["rc"] == 0
    sp.close()


def test_close_takes_standbys_back_without_running_them(tmp_path: Path, engine: str) -> None:
    sp = LocalSpawner(kill_grace=0.2, engine=engine)
    sp.spawn(1, ["sleep", "100"])
    sp.spawn(2, ["/bin/true"], stdout=str(tmp_path / "2.out"), standby=True)
    events = sp.close(grace=0.2)
    assert [ev["id"] for ev in events if ev["ev"] in ("exit", "error")] == [1]
    assert "next" not in events[-1] and not (tmp_path / "2.out").exists()


# ---------------------------------------------------------------- the launcher

def _intervals(ws: Workspace, ids: list[int]) -> list[tuple[int, int]]:
    out = []
    for i in ids:
        job = ws.job(i)
        a, b = (job.path / f"{job.name}.out").read_text().split()
        out.append((int(a), int(b)))
    return out


def _most_at_once(spans: Sequence[tuple[float, float]]) -> int:
    edges = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans], key=lambda e: (e[0], e[1]))
    most = now = 0
    for _, d in edges:  # an end before a start at the same instant
        now += d
        most = max(most, now)
    return most


def test_short_jobs_are_handed_over_and_never_run_more_at_once_than_cores(sqlite_ws: Workspace, engine: str,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Each job writes the time it started and the time it ended: however starts are handed over, no more
    tasks run at once than the node has cores, and every job runs once (on either spawn engine)."""
    monkeypatch.setenv(environ.SPAWN_ENGINE, engine)
    ws = sqlite_ws
    ws.add_app("stamp", "/bin/sh -c 'date +%s%N; date +%s%N'")
    ids = ws.add_jobs([{"name": f"s{i}", "app": "stamp"} for i in range(300)])
    launcher = Launcher(ws, Options(idle_timeout=0.5, status=False))
    s = launcher.run()
    assert ws.count(state=S.JOB_FINISHED) == 300 and s.started == 300
    assert s.handed_over > 50, s  # most starts went through the engine once the jobs proved short
    assert _most_at_once(_intervals(ws, ids)) <= launcher.pool.total_cores
    assert all(sum(e.to_state == S.RUNNING for e in ws.history(i)) == 1 for i in ids[::15])


def test_long_jobs_are_started_by_the_loop_not_handed_over(sqlite_ws: Workspace) -> None:
    ws = sqlite_ws
    ws.add_app("nap", "sleep 0.15")
    ws.add_jobs([{"name": f"n{i}", "app": "nap"} for i in range(8)])
    s = Launcher(ws, Options(idle_timeout=0.5, status=False)).run()
    assert ws.count(state=S.JOB_FINISHED) == 8 and s.handed_over == 0, s


def _standing_by(launcher: Launcher, job_id: int, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while job_id not in launcher.standbys.queued:
        assert time.monotonic() < end, "the job never stood by"
        time.sleep(0.01)


def _long_then_short(ws: Workspace, cores: int) -> tuple[list[int], int]:
    ws.add_app("nap", "sleep 3")
    ws.add_app("stamp", "/bin/sh -c 'date +%s%N; date +%s%N'")
    longs = ws.add_jobs([{"name": f"l{i}", "app": "nap"} for i in range(cores)])
    short = ws.add_jobs([{"name": "s", "app": "stamp"}])[0]
    return longs, short


def test_a_standby_job_a_user_kills_never_runs(sqlite_ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(standby, "STANDBY_MAX_WAIT_S", 30.0)
    ws = sqlite_ws
    launcher = Launcher(ws, Options(idle_timeout=0.5, status=False))
    launcher.quick = 0.0  # as if short jobs had run: the next one-core job stands by behind the long ones
    longs, short = _long_then_short(ws, launcher.pool.total_cores)
    t = threading.Thread(target=launcher.run)
    t.start()
    _standing_by(launcher, short)
    ws.kill(short)
    t.join(30)
    assert not t.is_alive()
    assert ws.job(short).state == S.USER_KILLED and not (ws.job(short).path / "s.out").exists()
    assert all(ws.job(i).state == S.JOB_FINISHED for i in longs)
    assert launcher.summary.handed_over == 0


def test_a_standby_job_waiting_when_the_launcher_stops_goes_back_unrun(sqlite_ws: Workspace,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(standby, "STANDBY_MAX_WAIT_S", 30.0)
    ws = sqlite_ws
    launcher = Launcher(ws, Options(idle_timeout=0.5, kill_grace_s=1.0, status=False))
    launcher.quick = 0.0
    _longs, short = _long_then_short(ws, launcher.pool.total_cores)
    t = threading.Thread(target=launcher.run)
    t.start()
    _standing_by(launcher, short)
    launcher.stop("test stop")
    t.join(30)
    assert not t.is_alive()
    job = ws.job(short)
    assert job.state in (S.READY, S.STAGED_IN, S.PREPROCESSED) and job.session_id is None, job
    assert not (job.path / "s.out").exists()
    assert S.RUNNING not in {e.to_state for e in ws.history(short)}


def test_an_urgent_job_claimed_while_others_stand_by_starts_before_them(sqlite_ws: Workspace,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A shot's analysis claimed while a queued job stands by must not wait behind it: the standby goes back
    behind the shot."""
    monkeypatch.setattr(standby, "STANDBY_MAX_WAIT_S", 30.0)
    ws = sqlite_ws
    launcher = Launcher(ws, Options(idle_timeout=0.5, status=False))
    launcher.quick = 0.0
    _longs, short = _long_then_short(ws, launcher.pool.total_cores)
    t = threading.Thread(target=launcher.run)
    t.start()
    _standing_by(launcher, short)
    (shot,) = ws.add_jobs([{"name": "shot", "app": "stamp", "priority": 5, "deadline": time.time() + 600}])
    t.join(30)
    assert not t.is_alive()
    # started in this order (in one turn of the loop if the long tasks ended together: the same time)
    began = {j: next((e.timestamp, e.id) for e in ws.history(j) if e.to_state == S.RUNNING) for j in (short, shot)}
    assert began[shot] < began[short], began
    assert ws.count(state=S.JOB_FINISHED) == launcher.pool.total_cores + 2


def test_no_more_standbys_than_tasks_whose_end_would_start_them(sqlite_ws: Workspace,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """One task holding every core ends once: one standby, not one per core (the rest would wait it out)."""
    monkeypatch.setattr(standby, "STANDBY_MAX_WAIT_S", 30.0)
    ws = sqlite_ws
    launcher = Launcher(ws, Options(idle_timeout=0.5, status=False))
    launcher.quick = 0.0
    cores = launcher.pool.total_cores
    ws.add_app("nap", "sleep 1.5")
    ws.add_app("stamp", "/bin/sh -c 'date +%s%N; date +%s%N'")
    ws.add_jobs([{"name": "wide", "app": "nap", "threads_per_rank": cores}])
    ws.add_jobs([{"name": f"s{i}", "app": "stamp"} for i in range(cores + 1)])
    t = threading.Thread(target=launcher.run)
    t.start()
    end = time.monotonic() + 10
    while not launcher.standbys.queued and time.monotonic() < end:
        time.sleep(0.01)
    time.sleep(0.3)
    waiting = len(launcher.standbys.queued)
    t.join(30)
    assert waiting == 1
    assert ws.count(state=S.JOB_FINISHED) == cores + 2


def test_a_local_allocation_of_several_nodes_never_runs_more_at_once_than_its_cores(sqlite_ws: Workspace) -> None:
    """On a "local" allocation every node's tasks start from this process, so an end on one node cannot hand
    its core to a standby of another: no standbys there, and never more tasks at once than cores."""
    from sluice.launcher.nodes import Allocation, Node

    ws = sqlite_ws
    ws.add_app("stamp", "/bin/sh -c 'date +%s%N; date +%s%N'")
    ids = ws.add_jobs([{"name": f"s{i}", "app": "stamp"} for i in range(200)])
    alloc = Allocation("local", (Node("n0", 1), Node("n1", 1)), None, None)
    launcher = Launcher(ws, Options(idle_timeout=0.5, status=False), alloc=alloc)
    s = launcher.run()
    assert ws.count(state=S.JOB_FINISHED) == 200 and s.handed_over == 0, s
    assert _most_at_once(_intervals(ws, ids)) <= 2
