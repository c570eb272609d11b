"""LocalSpawner's task threads: one per running task and reused, and no signal lost while a task is starting.

The behaviour every spawner shares (exit codes, outputs, timeouts, kills) is tested in test_agent.py.
"""
from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest
from tests.launcher.test_agent import alive, collect

from sluice.launcher.spawn import LocalSpawner


def _spawn_threads() -> int:
    return sum(t.name.startswith("sluice-spawn-") for t in threading.enumerate())


def test_one_thread_per_running_task_and_reused(tmp_path: Path) -> None:
    before = _spawn_threads()
    sp = LocalSpawner()
    for i in range(3):  # three at once: three threads
        sp.spawn(i, ["sleep", "0.3"])
    assert sp.running == 3
    assert _spawn_threads() - before == 3
    assert all(ev["rc"] == 0 for ev in collect(sp, 3).values())
    for i in range(3, 40):  # one at a time afterwards: the same threads serve them
        sp.spawn(i, ["/bin/true"], cwd=str(tmp_path / str(i)), stdout=str(tmp_path / str(i) / "out"))
        assert collect(sp, 1)[i]["rc"] == 0
    assert _spawn_threads() - before == 3
    assert sp.running == 0
    sp.close()
    assert _spawn_threads() == before


def test_a_kill_sent_while_the_task_is_starting_reaches_it() -> None:
    """The kill usually arrives before the task thread has a pid: it must be delivered once there is one."""
    sp = LocalSpawner(kill_grace=5)
    for i in range(20):
        sp.spawn(i, ["sleep", "100"])
        sp.kill(i, signal.SIGTERM)
    t = time.monotonic()
    got = collect(sp, 20, timeout=10)
    assert {ev["rc"] for ev in got.values()} == {-signal.SIGTERM}
    assert time.monotonic() - t < 5  # TERM did it, not the KILL after the grace
    sp.close()


def test_a_wall_time_of_zero_times_out_a_task_still_starting() -> None:
    sp = LocalSpawner(kill_grace=0.2)
    sp.spawn(1, ["sleep", "100"], timeout=0.0)
    got = collect(sp, 1)
    assert got[1]["timed_out"] and got[1]["rc"] == -signal.SIGTERM
    sp.close()


def test_close_right_after_many_spawns_leaves_nothing_running() -> None:
    before = _spawn_threads()
    sp = LocalSpawner(kill_grace=0.2)
    for i in range(30):
        sp.spawn(i, ["sleep", "100"])
    events = sp.close(grace=0.2)
    exits = {ev["id"]: ev for ev in events if ev["ev"] == "exit"}
    assert sorted(exits) == list(range(30))
    assert all(ev["rc"] in (-signal.SIGTERM, -signal.SIGKILL) for ev in exits.values())
    assert not any(alive(ev["pid"]) for ev in exits.values())
    assert sp.running == 0 and _spawn_threads() == before


def test_an_executable_that_cannot_run_is_the_tasks_error(tmp_path: Path) -> None:
    script = tmp_path / "noexec.sh"
    script.write_text("#!/bin/sh\necho hi\n")  # not executable
    sp = LocalSpawner()
    sp.spawn(1, [str(script)])
    sp.spawn(2, ["/no/such/program"])
    got = collect(sp, 2)
    assert got[1]["ev"] == "error" and "Permission denied" in got[1]["msg"]
    assert got[2]["ev"] == "error" and "No such file" in got[2]["msg"]
    sp.close()


def test_no_thread_left_is_the_tasks_error_not_the_callers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Out of threads (a user's process limit): the task fails with a reason, the caller goes on."""
    sp = LocalSpawner()
    sp.spawn(1, ["sleep", "0.2"])

    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    sp.spawn(2, ["true"])
    monkeypatch.undo()
    got = collect(sp, 2)
    assert got[1]["ev"] == "exit" and got[1]["rc"] == 0
    assert got[2]["ev"] == "error" and "can't start new thread" in got[2]["msg"]
    assert sp.running == 0
    sp.close()
