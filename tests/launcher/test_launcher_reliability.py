"""Launchers as real subprocesses (`python -m sluice launcher`) on SQLite and PostgreSQL: kill -9 and recovery,
four launchers on one workspace, SIGTERM.

Every job is a small shell app that appends "s" to a marker file in its own directory when it starts and "d"
when it completes, so "ran exactly once" is checked from what the jobs did, not from what the DB says.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.conftest import make_workspace

from sluice.api import Workspace
from sluice.states import S

BACKENDS2 = ["sqlite", "postgresql"]
MARK = "echo s >> m; {work}; echo d >> m"


@pytest.fixture(params=BACKENDS2)
def ws2(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    w = make_workspace(request.param, tmp_path / "ws", request)
    monkeypatch.setenv("SLUICE_WORKSPACE", str(w.path))
    return w


def launcher(ws: Workspace, *args: str, cores: int = 8, log: Path | None = None) -> subprocess.Popen[bytes]:
    env = dict(os.environ, SLUICE_WORKSPACE=str(ws.path), SLUICE_CORES_PER_NODE=str(cores))
    env.pop("SLUICE_JOB_ID", None)
    out = open(log or os.devnull, "ab")  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen([sys.executable, "-m", "sluice", "launcher", "-q", "--heartbeat", "0.5",
                                 "--kill-grace", "1", *args], env=env, stdout=out, stderr=out)
    finally:
        out.close()


def add_marked(ws: Workspace, n: int, work: str = "true") -> list[int]:
    ws.add_app("mark", "/bin/sh -c {cmd}")
    return ws.add_jobs([{"name": f"j{i}", "app": "mark", "params": {"cmd": MARK.format(work=work)}}
                        for i in range(n)])


def markers(ws: Workspace) -> dict[int, str]:
    out = {}
    for j in ws.jobs():
        m = j.path / "m"
        out[j.id] = m.read_text().replace("\n", "") if m.exists() else ""
    return out


def wait(p: subprocess.Popen[bytes], timeout: float, log: Path | None = None) -> int:
    try:
        return p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        pytest.fail(f"launcher still running after {timeout} s\n" + (log.read_text()[-3000:] if log else ""))


def wait_for(cond: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def assert_all_finished(ws: Workspace, ids: list[int]) -> None:
    summary = ws.summary()
    assert summary.get(S.JOB_FINISHED, 0) == len(ids), summary
    assert ws.count(state=S.JOB_FINISHED) == len(ids)
    assert not ws.jobs(state=S.RUNNING)
    assert all(j.session_id is None for j in ws.jobs())
    assert all(s["ended_at"] is not None for s in ws.sessions()), ws.sessions()


@pytest.mark.slow
def test_kill_9_then_new_launcher_recovers(ws2: Workspace, tmp_path: Path) -> None:
    """kill -9 of `sluice launcher` mid-campaign, then a new launcher: every job ends JOB_FINISHED, none is
    left RUNNING, and each job's marker shows it completed exactly once. The launcher's worker process dies
    with its parent (PR_SET_PDEATHSIG): jobs it was running are cut short and retried, never left to finish
    unrecorded; a job cut short may have started twice, never finished twice."""
    ws = ws2
    ids = add_marked(ws, 1000, "sleep 0.05")
    log = tmp_path / "l1.log"
    p1 = launcher(ws, "--idle-timeout", "30", cores=16, log=log)
    wait_for(lambda: ws.count(state=S.JOB_FINISHED) >= 200 or p1.poll() is not None, 120, "200 jobs done")
    assert p1.poll() is None, log.read_text()
    os.kill(p1.pid, signal.SIGKILL)
    p1.wait()
    assert ws.count(state=S.JOB_FINISHED) < len(ids)

    log2 = tmp_path / "l2.log"
    p2 = launcher(ws, "--idle-timeout", "2", cores=16, log=log2)
    assert wait(p2, 180, log2) == 0, log2.read_text()
    wait_for(lambda: not ws.sessions(live_only=True), 30, "every session to end")
    assert_all_finished(ws, ids)
    cut = {e.job_id for e in ws.events() if e.to_state == S.RUN_TIMEOUT}
    assert cut, "the kill cut no job short: it came too late to test anything"
    assert all("signal SIGTERM" in (e.message or "") for e in ws.events() if e.to_state == S.RUN_TIMEOUT)

    m = markers(ws)
    assert all(v.count("d") == 1 for v in m.values()), [(j, v) for j, v in m.items() if v.count("d") != 1][:10]
    assert all(v.count("s") <= 2 for v in m.values())
    assert all(m[j] == "sd" for j in ids if j not in cut), [(j, m[j]) for j in ids if j not in cut and m[j] != "sd"]


@pytest.mark.slow
def test_four_launchers_one_workspace(ws2: Workspace, tmp_path: Path) -> None:
    """4 launchers at once on 2,000 jobs: every job runs exactly once, all JOB_FINISHED."""
    ws = ws2
    ids = add_marked(ws, 2000)
    logs = [tmp_path / f"l{i}.log" for i in range(4)]
    procs = [launcher(ws, "--idle-timeout", "3", cores=4, log=lg) for lg in logs]
    for p, lg in zip(procs, logs, strict=True):
        assert wait(p, 240, lg) == 0, lg.read_text()
    assert_all_finished(ws, ids)
    m = markers(ws)
    bad = {j: v for j, v in m.items() if v != "sd"}
    assert not bad, list(bad.items())[:10]
    for j in ids[:50]:
        assert sum(e.to_state == S.RUNNING for e in ws.history(j)) == 1
    by_session = {}
    for e in ws.events(to_state=S.RUNNING):
        by_session[e.actor] = by_session.get(e.actor, 0) + 1
    assert sum(by_session.values()) == len(ids)


def test_sigterm_stops_running_jobs(ws2: Workspace, tmp_path: Path) -> None:
    """SIGTERM: running jobs are stopped and marked RUN_TIMEOUT -> RESTART_READY, the launcher exits 0 and
    its session is ended."""
    ws = ws2
    ids = add_marked(ws, 3, "sleep 60")
    log = tmp_path / "l.log"
    p = launcher(ws, "--idle-timeout", "30", cores=3, log=log)
    wait_for(lambda: all(v == "s" for v in markers(ws).values()) and ws.count(state=S.RUNNING) == 3, 60,
             "3 jobs running")
    p.send_signal(signal.SIGTERM)
    assert wait(p, 30, log) == 0, log.read_text()
    assert "stopped: signal SIGTERM" in log.read_text()
    for j in ids:
        job = ws.job(j)
        assert job.state == S.RESTART_READY and job.session_id is None and job.retry_count == 1
        assert [e.to_state for e in ws.history(j)][-3:] == [S.RUNNING, S.RUN_TIMEOUT, S.RESTART_READY]
    assert all(v == "s" for v in markers(ws).values())  # stopped, never completed
    (sess,) = ws.sessions()
    assert sess["ended_at"] is not None


def test_kill_9_of_the_worker_itself_leaves_no_job_to_finish_twice(sqlite_ws: Workspace, tmp_path: Path) -> None:
    """Even when the launcher's worker process (not its supervisor) is killed outright, the next launcher
    kills the jobs' leftover processes on this host before retrying them."""
    ws = sqlite_ws
    ids = add_marked(ws, 8, "sleep 4")
    p1 = launcher(ws, "--idle-timeout", "30", cores=4, log=tmp_path / "l1.log")
    wait_for(lambda: ws.count(state=S.RUNNING) == 4, 60, "4 jobs running")
    (sess,) = ws.sessions(live_only=True)
    os.kill(sess["pid"], signal.SIGKILL)  # the worker; its tasks are orphaned
    p1.wait(30)
    p2 = launcher(ws, "--idle-timeout", "1", cores=4, log=tmp_path / "l2.log")
    assert wait(p2, 120, tmp_path / "l2.log") == 0
    assert_all_finished(ws, ids)
    time.sleep(4.5)  # an orphan that survived would have written its "d" by now
    m = markers(ws)
    assert all(v.count("d") == 1 for v in m.values()), m
    assert sum(v.count("s") == 2 for v in m.values()) == 4
