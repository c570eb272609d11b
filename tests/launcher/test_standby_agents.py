"""Standbys on node agents, driven by the launcher (simulated agents: every node's spawner is one).

Jobs wait on a busy node's agent and start the moment one of its tasks ends, without the launcher's loop; they
must never run more tasks at once than cores, must each run once, and must come back when they should not
wait: a user's kill, the launcher's stop, an urgent claim, or a core free elsewhere with nothing left to start.
"""

from __future__ import annotations

import logging
import threading
import time

import pytest
from sqlalchemy import text
from tests.launcher.test_simulated import add, assert_exactly_once, sim_opts
from tests.launcher.test_standby import _most_at_once

from sluice.api import Workspace
from sluice.launcher.launcher import Launcher
from sluice.launcher.simulate import simulated
from sluice.states import S


def spans(ws: Workspace) -> dict[int, list[tuple[float, float | None]]]:
    """job id -> its runs (start, end) from the events."""
    with ws.engine.connect() as c:
        rows = c.execute(text("SELECT job_id, to_state, timestamp FROM events WHERE to_state IN "
                              "('RUNNING', 'RUN_DONE', 'RUN_ERROR', 'RUN_TIMEOUT') ORDER BY job_id, id")).all()
    out: dict[int, list[tuple[float, float | None]]] = {}
    for jid, st, ts in rows:
        runs = out.setdefault(int(jid), [])
        if st == "RUNNING":
            runs.append((float(ts), None))
        else:
            runs[-1] = (runs[-1][0], float(ts))
    return out


def start(la: Launcher) -> threading.Thread:
    t = threading.Thread(target=la.run)
    t.start()
    return t


def wait_for(cond: object, what: str, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < end, what
        time.sleep(0.005)


def test_jobs_that_end_together_hand_over_on_their_agents_and_never_overrun_a_core(
        sqlite_ws: Workspace, caplog: pytest.LogCaptureFixture) -> None:
    """Waves of ends (0.4 s jobs started together on 8 x 4 slots): once the nodes are full, the next jobs wait on
    them and start as tasks end, each exactly once, never more at once than the 32 cores."""
    ws = sqlite_ws
    ids = add(ws, 400, data={"sim_s": 0.4})
    la = Launcher(ws, sim_opts(), alloc=simulated(8, 4))
    with caplog.at_level(logging.ERROR, logger="sluice.launcher"):
        s = la.run()
    assert s.started == s.finished == 400, s.line()
    assert s.handed_over >= 300, s  # all but the first wave or so started on their agents
    assert not [r for r in caplog.records if "standby" in r.getMessage()]  # no hand-over without a core
    runs = spans(ws)
    assert all(len(r) == 1 for r in runs.values())
    assert _most_at_once([(a, b) for a, b in (r[0] for r in runs.values()) if b is not None]) <= 32
    assert_exactly_once(ws, ids)


def test_standbys_wait_as_long_as_their_nodes_tasks_run_from_the_first_end_on(sqlite_ws: Workspace) -> None:
    """Standbys queued as the nodes filled wait for the tasks to end, however few have ended so far. The run
    time was a moving average starting from zero: the first end (0.8 s) made it 16 ms, every standby waiting
    since the fill was then stale, and all of them were taken back (in a 10 s bench, mid-wave)."""
    ws = sqlite_ws
    ids = add(ws, 1, data={"sim_s": 0.8})
    ids += ws.add_jobs([{"name": f"k{i}", "app": "sim", "params": {"x": 10 + i}, "data": {"sim_s": 1.2}}
                        for i in range(7)])  # three fill the nodes with the first; four stand by
    la = Launcher(ws, sim_opts(idle_timeout=0.5), alloc=simulated(2, 2))
    s = la.run()
    assert s.finished == 8 and s.handed_over == 4, s
    assert la.standbys.taken_back == 0
    assert_exactly_once(ws, ids)


def _one_standing_by(ws: Workspace, long_s: float = 4.0,
                     **opts: object) -> tuple[Launcher, threading.Thread, list[int], int]:
    """A launcher on 2 x 2 simulated slots running four jobs of `long_s`, and a short job standing by behind
    them on one of its nodes: (launcher, its thread, the long jobs, the short one)."""
    longs = add(ws, 4, data={"sim_s": long_s})
    (short,) = ws.add_jobs([{"name": "short", "app": "sim", "params": {"x": -1}, "data": {"sim_s": 0.05}}])
    la = Launcher(ws, sim_opts(idle_timeout=0.5, **opts), alloc=simulated(2, 2))
    t = start(la)
    wait_for(lambda: short in la.standbys.queued, "the job never stood by")
    return la, t, longs, short


def test_a_standby_is_sent_to_its_agent_at_once_not_with_the_next_start(sqlite_ws: Workspace) -> None:
    """Spawns are held for one write per agent per turn; a standby queued in a turn that started nothing was
    held until some later start, and a real agent's next end found nothing to hand over to."""
    ws = sqlite_ws
    add(ws, 4, data={"sim_s": 2.0})
    la = Launcher(ws, sim_opts(idle_timeout=0.5), alloc=simulated(2, 2))
    t = start(la)
    wait_for(lambda: len(la.running) == 4, "the nodes never filled")
    (short,) = ws.add_jobs([{"name": "short", "app": "sim", "params": {"x": -1}, "data": {"sim_s": 0.05}}])
    wait_for(lambda: short in la.standbys.queued, "the job never stood by")  # in a turn that started nothing
    time.sleep(0.2)
    node = la.pool.names[la.standbys.queued[short][1]]
    agent = la.runner.agents.get(node, la.runner.local)
    held = bytes(agent._out)
    t.join(30)
    assert not held, held
    assert la.summary.handed_over == 1


def test_a_job_a_user_kills_while_it_stands_by_on_an_agent_never_runs(sqlite_ws: Workspace) -> None:
    ws = sqlite_ws
    la, t, longs, short = _one_standing_by(ws, 1.5)
    ws.kill(short)
    t.join(30)
    assert not t.is_alive()
    assert ws.job(short).state == S.USER_KILLED
    assert S.RUNNING not in {e.to_state for e in ws.history(short)}
    assert all(ws.job(i).state == S.JOB_FINISHED for i in longs)
    assert la.summary.handed_over == 0 and not la.user_killed


def test_a_job_standing_by_on_an_agent_when_the_launcher_stops_goes_back_unrun(sqlite_ws: Workspace) -> None:
    ws = sqlite_ws
    la, t, longs, short = _one_standing_by(ws, kill_grace_s=0.5)
    la.stop("test stop")
    t.join(30)
    assert not t.is_alive()
    job = ws.job(short)
    assert job.state in (S.READY, S.STAGED_IN, S.PREPROCESSED) and job.session_id is None, job
    assert S.RUNNING not in {e.to_state for e in ws.history(short)}
    assert all(S.RUNNING in {e.to_state for e in ws.history(i)} for i in longs)
    assert ws.count(state=S.RUNNING) == 0 and not la.standbys


def test_an_urgent_job_goes_ahead_of_jobs_standing_by_on_agents(sqlite_ws: Workspace) -> None:
    """A shot's analysis claimed while jobs wait on the agents starts at the first free core; they wait after."""
    ws = sqlite_ws
    la, t, _longs, short = _one_standing_by(ws, 1.0)
    (shot,) = ws.add_jobs([{"name": "shot", "app": "sim", "params": {"x": -2}, "data": {"sim_s": 0.05},
                            "priority": 5, "deadline": time.time() + 600}])
    t.join(30)
    assert not t.is_alive()
    # started in this order (in one turn of the loop if the long tasks ended together: the same time)
    began = {j: next((e.timestamp, e.id) for e in ws.history(j) if e.to_state == S.RUNNING) for j in (short, shot)}
    assert began[shot] < began[short], began
    assert ws.count(state=S.JOB_FINISHED) == 6


def test_a_job_standing_by_behind_a_long_task_moves_to_a_core_that_frees_up(sqlite_ws: Workspace) -> None:
    """Two one-core nodes: a 6 s task on the first, a 0.3 s one on the second, and the next job queued behind
    the long one. When the short one ends and nothing else is left to claim, that job is taken back from the
    first node and starts on the second instead of waiting out the long task."""
    ws = sqlite_ws
    (long,) = add(ws, 1, data={"sim_s": 6.0})
    ws.add_jobs([{"name": "q", "app": "sim", "params": {"x": -3}, "data": {"sim_s": 0.3}}])
    (nxt,) = ws.add_jobs([{"name": "n", "app": "sim", "params": {"x": -4}, "data": {"sim_s": 0.05}}])
    la = Launcher(ws, sim_opts(idle_timeout=0.5), alloc=simulated(2, 1))
    t0 = time.time()
    t = start(la)
    wait_for(lambda: nxt in la.standbys.queued, "the job never stood by")
    behind, on = la.pool.names[la.standbys.queued[nxt][1]], la.running[long][1].nodes[0]
    t.join(30)
    assert not t.is_alive()
    assert behind == on  # it did stand by behind the long task
    began = next(e.timestamp for e in ws.history(nxt) if e.to_state == S.RUNNING)
    assert began - t0 < 3.0, began - t0  # not after the long task's end
    assert ws.count(state=S.JOB_FINISHED) == 3 and la.summary.handed_over == 0


def test_standbys_on_agents_are_part_of_what_a_launcher_holds_not_more(sqlite_ws: Workspace) -> None:
    """Long jobs on 4 x 4 simulated slots: a standby for every running task, and yet no more jobs claimed than
    without them (16 running, and twice the 16 slots waiting: in the buffer or on the nodes). Claimed jobs are
    jobs other launchers cannot run."""
    ws = sqlite_ws
    add(ws, 300, data={"sim_s": 60.0})
    la = Launcher(ws, sim_opts(idle_timeout=30, kill_grace_s=0.5), alloc=simulated(4, 4))
    t = start(la)
    try:
        wait_for(lambda: len(la.standbys.queued) == 16, "the nodes never took a standby per task")
        time.sleep(1.0)  # several claim rounds
        held = sum(1 for j in ws.jobs() if j.session_id == la.session_id)
    finally:
        la.stop("test over")
        t.join(30)
    assert 16 + 16 <= held <= 16 + 2 * 16, held
    assert ws.count(state=S.RUNNING) == 0
