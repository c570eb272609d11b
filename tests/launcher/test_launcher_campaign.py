"""The local launcher runs a small campaign end to end on SQLite, PostgreSQL and MariaDB.

Real processes, real databases: /bin/true-like apps, Python tasks (sys.executable) that use the API from inside
the job (current_job, spawn_child), a DAG, a postprocess hook, an app that always fails, and a job over its wall
time. Also: a user kill of a RUNNING job, and the allocation's end cutting a job short.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

from sluice.api import Workspace
from sluice.launcher.launcher import Launcher, Options, Summary
from sluice.states import S

PY = sys.executable

INSIDE = """
import os, sluice
j = sluice.current_job()
assert j.id == int(os.environ["SLUICE_JOB_ID"]) and j.state == "RUNNING", (j.id, j.state)
open("inside.txt", "w").write(f"{j.id} {j.name} {os.environ['SLUICE_WORKSPACE']}")
kid = sluice.spawn_child("kid", "true")
print("spawned", kid.id)
print("to stderr", file=__import__("sys").stderr)
"""


def run(ws: Workspace, **kw: object) -> Summary:
    opts: dict[str, object] = {"kill_grace_s": 1.0, "status": False, "heartbeat_s": 1.0}
    opts.update(kw)
    return Launcher(ws, Options(**opts)).run()  # type: ignore[arg-type]


def first(ws: Workspace, job_id: int, to_state: str) -> float:
    return min(e.timestamp for e in ws.history(job_id) if e.to_state == to_state)


def test_campaign_end_to_end(ws: Workspace) -> None:
    ws.add_app("true", "/bin/true")
    ws.add_app("py", f"{PY} -c {{code}}")
    ws.add_app("post", "/bin/true", postprocess="echo post > post_done.txt")
    ws.add_app("fail", "/bin/sh -c 'exit 3'")
    ws.add_app("sleep", "sleep {s}")
    a = ws.add_job("a", "true")
    b = ws.add_job("b", "post", parents=[a])
    c = ws.add_job("c", "py", params={"code": INSIDE}, parents=[a, b])
    f = ws.add_job("f", "fail", max_retries=2)
    t = ws.add_job("t", "sleep", params={"s": 30}, wall_time_min=0.02, max_retries=1)  # 1.2 s

    s = run(ws)
    assert s.reason == "no more work", s.line()

    jobs = {j.name: j for j in ws.jobs()}
    assert set(jobs) == {"a", "b", "c", "f", "t", "kid"}
    for name in ("a", "b", "c", "kid"):
        assert jobs[name].state == S.JOB_FINISHED, (name, ws.history(jobs[name].id))
        assert jobs[name].session_id is None
        d = jobs[name].path
        assert (d / f"{name}.out").is_file() and (d / f"{name}.err").is_file(), sorted(d.iterdir())

    # inside the job: SLUICE_JOB_ID / SLUICE_WORKSPACE, current_job(), spawn_child() (ran in the same launcher)
    cj = jobs["c"]
    assert (cj.path / "inside.txt").read_text() == f"{c.id} c {ws.path}"
    kid = jobs["kid"]
    assert (cj.path / "c.out").read_text() == f"spawned {kid.id}\n"
    assert (cj.path / "c.err").read_text() == "to stderr\n"
    assert [p.id for p in kid.parents] == [c.id] and kid.workflow == cj.workflow
    assert first(ws, kid.id, S.RUNNING) >= first(ws, c.id, S.JOB_FINISHED)

    # DAG: a child starts only after all its parents finished
    assert first(ws, b.id, S.RUNNING) >= first(ws, a.id, S.JOB_FINISHED)
    assert first(ws, c.id, S.RUNNING) >= max(first(ws, a.id, S.JOB_FINISHED), first(ws, b.id, S.JOB_FINISHED))
    assert [e.to_state for e in ws.history(c.id)][:2] == [S.AWAITING_PARENTS, S.READY]

    # postprocess hook ran in the job's directory, on the way RUN_DONE -> POSTPROCESSED -> JOB_FINISHED
    assert (jobs["b"].path / "post_done.txt").read_text() == "post\n"
    assert [e.to_state for e in ws.history(b.id)][-3:] == [S.RUN_DONE, S.POSTPROCESSED, S.JOB_FINISHED]

    # always failing: 1 + max_retries attempts, each exit code in the history, then FAILED
    fj = jobs["f"]
    assert fj.state == S.FAILED and fj.retry_count == 2
    hist = ws.history(f.id)
    assert [e.message for e in hist if e.to_state == S.RUN_ERROR] == ["exit code 3"] * 3
    assert [e.data for e in hist if e.to_state == S.RUN_ERROR] == [{"exit_code": 3}] * 3
    assert sum(e.to_state == S.RUNNING for e in hist) == 3

    # over its wall time: RUN_TIMEOUT, retried once, RUN_TIMEOUT again, FAILED. Both attempts must be cut by
    # their own wall time (regression: the first attempt's TERM->KILL timer used to kill the retry).
    tj = jobs["t"]
    assert tj.state == S.FAILED and tj.retry_count == 1
    path = [(e.from_state, e.to_state) for e in ws.history(t.id)][3:]
    assert path == [(S.PREPROCESSED, S.RUNNING), (S.RUNNING, S.RUN_TIMEOUT), (S.RUN_TIMEOUT, S.RESTART_READY),
                    (S.RESTART_READY, S.RUNNING), (S.RUNNING, S.RUN_TIMEOUT), (S.RUN_TIMEOUT, S.FAILED)]
    assert all("wall time" in (e.message or "") for e in ws.history(t.id) if e.to_state == S.RUN_TIMEOUT)

    assert not ws.jobs(state=S.RUNNING)
    (sess,) = ws.sessions()
    assert sess["ended_at"] is not None


def test_spawned_child_runs_in_a_second_launcher(ws: Workspace) -> None:
    """A child spawned by a job that was the last job of its launcher (max_jobs) runs in the next launcher."""
    ws.add_app("true", "/bin/true")
    ws.add_app("py", f"{PY} -c {{code}}")
    p = ws.add_job("p", "py", params={"code": "import sluice; sluice.spawn_child('kid', 'true')"})
    run(ws, max_jobs=1)
    (kid,) = [j for j in ws.jobs() if j.name == "kid"]
    assert ws.job(p.id).state == S.JOB_FINISHED and kid.state in (S.PREPROCESSED,)
    run(ws)
    assert ws.job(kid.id).state == S.JOB_FINISHED
    assert len(ws.sessions()) == 2


def test_user_kill_of_running_job(ws: Workspace) -> None:
    """ws.kill() of a RUNNING job: the launcher stops the process within a couple of seconds; USER_KILLED stays."""
    ws.add_app("sleep", "/bin/sh -c 'echo started > started.txt; exec sleep 60'")
    j = ws.add_job("long", "sleep")
    marker = ws.job(j.id).path / "started.txt"
    box: dict[str, Summary] = {}
    th = threading.Thread(target=lambda: box.update(s=run(ws, idle_timeout=0.5)))
    th.start()
    try:
        deadline = time.monotonic() + 30
        while not (marker.exists() and ws.job(j.id).state == S.RUNNING):
            assert time.monotonic() < deadline, "job never started"
            time.sleep(0.05)
        t0 = time.monotonic()
        ws.kill(j.id)
    finally:
        th.join(60)
    assert not th.is_alive()
    elapsed = time.monotonic() - t0  # launcher noticed the kill, killed sleep, went idle, exited
    job = ws.job(j.id)
    assert job.state == S.USER_KILLED and job.session_id is None, ws.history(j.id)
    assert [e.to_state for e in ws.history(j.id)][-1] == S.USER_KILLED
    assert box["s"].finished == 0
    assert elapsed < 30, "the launcher did not stop the killed job"  # generous: not a timing test
    assert not _sleepers(ws.job(j.id).path)


def _sleepers(cwd: Path) -> list[int]:
    """pids of processes still running in this directory (the killed job's leftovers)."""
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if Path(p / "cwd").resolve() == cwd.resolve():
                    out.append(int(p.name))
            except OSError:
                pass
    return out


@pytest.mark.parametrize("how", ["options", "env"])
def test_allocation_end_mid_job(sqlite_ws: Workspace, how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A job still running when the allocation ends: RUN_TIMEOUT -> RESTART_READY, nothing left RUNNING, the
    next launcher finishes it. A job whose wall time does not fit before the end is never started."""
    ws = sqlite_ws
    ws.add_app("sh", "/bin/sh -c {cmd}")
    # first attempt sleeps past the end, the retry is quick
    cmd = "if [ -e tried ]; then exit 0; fi; touch tried; exec sleep 30"
    j = ws.add_job("slow", "sh", params={"cmd": cmd})
    big = ws.add_job("big", "sh", params={"cmd": "touch ran"}, wall_time_min=5)  # cannot fit in ~4 s
    kw: dict[str, object] = {"end_margin_s": 0.0, "idle_timeout": 30.0}
    if how == "options":
        kw["wall_time_min"] = 0.07
    else:
        monkeypatch.setenv("SLUICE_ALLOCATION_END", str(time.time() + 4.2))
    s = run(ws, **kw)
    assert s.reason == "allocation ends", s.line()
    job = ws.job(j.id)
    assert job.state == S.RESTART_READY and job.session_id is None and job.retry_count == 1
    path = [e.to_state for e in ws.history(j.id)]
    assert path[-3:] == [S.RUNNING, S.RUN_TIMEOUT, S.RESTART_READY]
    assert not ws.jobs(state=S.RUNNING)
    assert ws.job(big.id).state == S.PREPROCESSED and ws.job(big.id).session_id is None
    assert not (ws.job(big.id).path / "ran").exists()
    assert all(x["ended_at"] is not None for x in ws.sessions())

    monkeypatch.delenv("SLUICE_ALLOCATION_END", raising=False)
    run(ws)
    assert ws.job(j.id).state == S.JOB_FINISHED
    assert ws.job(big.id).state == S.JOB_FINISHED


def test_a_launcher_of_long_jobs_claims_a_few_not_hundreds(sqlite_ws: Workspace) -> None:
    """Claimed-but-waiting jobs are jobs other launchers cannot run: with hour-long jobs a 2-core launcher
    holds a handful beyond the 2 it runs, not a fixed batch of hundreds."""
    from sluice.launcher.nodes import Allocation, Node

    ws = sqlite_ws
    ws.add_app("long", "sleep 60")
    ws.add_jobs([{"name": f"j{i}", "app": "long"} for i in range(100)])
    la = Launcher(ws, Options(idle_timeout=30, kill_grace_s=0.5, status=False),
                  alloc=Allocation("local", (Node("here", 2),), None, None))
    t = threading.Thread(target=la.run)
    t.start()
    try:
        deadline = time.monotonic() + 20
        while ws.count(state=S.RUNNING) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # several claim rounds
        held = sum(1 for j in ws.jobs() if j.session_id == la.session_id)
    finally:
        la.stop("test over")
        t.join(30)
    assert ws.count(state=S.RUNNING) == 0
    assert 2 <= held <= 8, held


@pytest.mark.parametrize("max_jobs", [7, 60])
def test_max_jobs_starts_exactly_that_many_then_gives_the_rest_back(sqlite_ws: Workspace, max_jobs: int) -> None:
    """--max-jobs N: N jobs run, the launcher returns (claims racing the last start included), and every job it
    claimed but did not start is free for the next launcher."""
    ws = sqlite_ws
    ws.add_app("true", "/bin/true")
    ws.add_jobs([{"name": f"j{i}", "app": "true"} for i in range(400)])
    la = Launcher(ws, Options(max_jobs=max_jobs, idle_timeout=30.0, kill_grace_s=1.0, status=False))
    out: list[Summary] = []
    t = threading.Thread(target=lambda: out.append(la.run()), daemon=True)
    t.start()
    t.join(20)
    if t.is_alive():
        la.stop("test gave up")
        t.join(10)
        pytest.fail(f"the launcher did not return after its last job ({la.summary.started} started)")
    assert out[0].started == max_jobs
    assert ws.count(state=S.JOB_FINISHED) == max_jobs
    assert all(j.session_id is None for j in ws.jobs())


def test_a_stop_cuts_running_jobs_short_even_while_a_claim_is_slow(sqlite_ws: Workspace,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The scheduler's TERM (or the allocation's end) stops running jobs at once, not after the claiming thread
    has finished what it was doing (here: making directories on a slow file system for 3 s)."""
    from sluice.launcher.nodes import Allocation, Node
    from sluice.launcher.runner import Runner

    ws = sqlite_ws
    ws.add_app("sh", "/bin/sh -c {cmd}")
    ws.add_jobs([{"name": f"j{i}", "app": "sh", "params": {"cmd": "echo s >> m; sleep 1.5; echo d >> m"}}
                 for i in range(40)])
    prepare, calls, slow = Runner.prepare, [0], threading.Event()

    def slow_second_claim(self: Runner, claimed: list) -> None:  # type: ignore[type-arg]
        calls[0] += 1
        if calls[0] > 1:
            slow.set()
            time.sleep(3)
        prepare(self, claimed)

    monkeypatch.setattr(Runner, "prepare", slow_second_claim)
    la = Launcher(ws, Options(idle_timeout=30, kill_grace_s=1.0, status=False, claim_batch=4),
                  alloc=Allocation("local", (Node("here", 2),), None, None))
    t = threading.Thread(target=la.run)
    t.start()
    try:
        assert slow.wait(20), "no second claim"
        deadline = time.monotonic() + 10
        while ws.count(state=S.RUNNING) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        running = [j.id for j in ws.jobs(state=S.RUNNING)]
        assert len(running) == 2
    finally:
        la.stop("signal SIGTERM")
        t.join(30)
    for j in running:
        assert [e.to_state for e in ws.history(j)][-3:] == [S.RUNNING, S.RUN_TIMEOUT, S.RESTART_READY]
        assert (ws.job(j).path / "m").read_text() == "s\n"  # stopped, never completed
    assert not ws.jobs(state=S.RUNNING)
