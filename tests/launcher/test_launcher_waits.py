"""--idle-timeout means what its help says: seconds with nothing to run, whatever the database holds.

The defect: a launcher with --idle-timeout 60 on a workspace with no unfinished job exited at once ("no more
work"), and so did one whose last job had just ended: it could never wait in its allocation for the next shot.
"""

from __future__ import annotations

import threading
import time

from sluice.api import Workspace
from sluice.launcher.launcher import Launcher, Options
from sluice.states import S


def test_a_launcher_waits_for_the_next_shot_within_its_idle_timeout(sqlite_ws: Workspace) -> None:
    ws = sqlite_ws
    ws.add_app("ana", "/bin/true")
    out: list[object] = []
    la = Launcher(ws, Options(idle_timeout=4.0, status=False))
    t0 = time.monotonic()
    th = threading.Thread(target=lambda: out.append(la.run()), daemon=True)
    th.start()
    time.sleep(1.5)  # nothing in the database at all: it must not have left
    assert th.is_alive()
    (shot,) = ws.add_jobs([{"name": "shot-1", "app": "ana"}])
    end = time.monotonic() + 3
    while ws.job(shot).state != S.JOB_FINISHED and time.monotonic() < end:
        time.sleep(0.02)
    assert ws.job(shot).state == S.JOB_FINISHED
    time.sleep(1.0)  # its last job just ended: still waiting
    assert th.is_alive()
    th.join(10)
    (s,) = out
    assert s.reason == "idle for 4 s" and time.monotonic() - t0 >= 5.5  # type: ignore[attr-defined]


def test_without_an_idle_timeout_it_leaves_when_nothing_is_left(sqlite_ws: Workspace) -> None:
    sqlite_ws.add_app("t", "/bin/true")
    sqlite_ws.add_job("t", app="t")
    t0 = time.monotonic()
    s = Launcher(sqlite_ws, Options(status=False)).run()
    assert s.reason == "no more work" and time.monotonic() - t0 < 5


def test_consume_all_waits_past_the_idle_timeout_until_every_job_ended(sqlite_ws: Workspace) -> None:
    sqlite_ws.add_app("t", "/bin/true")
    s = Launcher(sqlite_ws, Options(status=False, idle_timeout=0.1, consume_all=True)).run()
    assert s.reason == "no more work"


def test_urgent_work_starts_first_and_a_missed_deadline_is_said(sqlite_ws: Workspace) -> None:
    """A shot's analysis (priority, deadline) claimed after 40 queued ensemble jobs starts before them."""
    ws = sqlite_ws
    ws.add_app("nap", "sleep 0.2")
    bulk = ws.add_jobs([{"name": f"e{i}", "app": "nap"} for i in range(40)])
    (shot,) = ws.add_jobs([{"name": "shot", "app": "nap", "priority": 5, "deadline": time.time() + 600}])
    (late,) = ws.add_jobs([{"name": "late", "app": "nap", "deadline": time.time() - 5}])
    from sluice.launcher.nodes import Allocation, Node

    Launcher(ws, Options(status=False), alloc=Allocation("local", (Node("n0", 2),), None, None)).run()
    started = {j: min(e.timestamp for e in ws.history(j) if e.to_state == S.RUNNING) for j in [shot, late, *bulk]}
    order = sorted(started, key=started.__getitem__)
    assert order[:2] == [shot, late]
    assert "missed its deadline by" in (ws.history(late)[-1].message or "")
    assert "missed its deadline" not in (ws.history(shot)[-1].message or "")
    from sluice.states import shown

    assert shown("JOB_FINISHED", False, ws.job(late).deadline, ws.job(late).updated_at) == "JOB_FINISHED (late)"


def test_an_apps_preamble_runs_before_its_command_and_a_machine_override_wins(sqlite_ws: Workspace,
                                                                               tmp_path: object) -> None:
    ws = sqlite_ws
    ws.add_app("env", "/bin/sh -c 'echo $SETUP $SITE > out.txt'", preamble="export SETUP=loaded",
               machines={"polaris": {"preamble": "export SETUP=polaris-module SITE=alcf"}})
    a = ws.add_job("a", app="env")
    Launcher(ws, Options(status=False)).run()
    assert (ws.job(a.id).path / "out.txt").read_text().strip() == "loaded"
    object.__setattr__(ws.config, "machine", "polaris")
    b = ws.add_job("b", app="env", machine="polaris")
    Launcher(ws, Options(status=False, machine="polaris")).run()
    assert (ws.job(b.id).path / "out.txt").read_text().strip() == "polaris-module alcf"
