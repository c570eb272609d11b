"""LocalSpawner's task threads: one per running task and reused, and no signal lost while a task is starting.

The behaviour every spawner shares (exit codes, outputs, timeouts, kills) is tested in test_agent.py.
"""
from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

from tests.launcher.test_agent import alive, collect

from sluice.launcher.spawn import Event, LocalSpawner


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


# ---------------------------------------------------------------- chains
def _started(sp: LocalSpawner, id: int) -> None:
    """Wait for the "started" event of task id (the spawner must have been made with started_events)."""
    end = time.monotonic() + 10
    while time.monotonic() < end:
        sp._wait(0.1)
        for ev in sp.poll_events():
            assert ev["ev"] == "started" and ev["id"] == id, ev
            return
    raise AssertionError(f"task {id} did not start")


def _all_events(sp: LocalSpawner, n_final: int, timeout: float = 10) -> list[Event]:
    """Every event, in order, until n_final exit/error/unstarted events have come."""
    evs: list[Event] = []
    end = time.monotonic() + timeout
    while sum(e["ev"] != "started" for e in evs) < n_final and time.monotonic() < end:
        sp._wait(min(0.1, sp.timeout_hint() or 0.1))
        evs += sp.poll_events()
    return evs


def test_a_chained_task_starts_in_its_predecessors_place_from_the_same_thread(tmp_path: Path) -> None:
    before = _spawn_threads()
    sp = LocalSpawner(started_events=True)
    sp.spawn(1, ["sleep", "0.3"])
    _started(sp, 1)
    out = tmp_path / "succ"
    assert sp.chain(1, 2, ["sh", "-c", "echo $PPID-ran"], cwd=str(tmp_path / "w2"), stdout=str(out))
    assert not sp.chain(1, 3, ["true"])  # one successor per task
    assert not sp.chain(99, 3, ["true"])  # no such task
    assert sp.running == 2
    evs = _all_events(sp, 2)
    assert [(e["ev"], e["id"]) for e in evs] == [("started", 2), ("exit", 1), ("exit", 2)]
    assert evs[1]["rc"] == 0 and evs[2]["rc"] == 0
    assert out.read_text().endswith("-ran\n")
    assert _spawn_threads() - before == 1 and sp.running == 0
    sp.spawn(4, ["true"])  # the thread is free again: no new one
    assert collect(sp, 1)[4]["rc"] == 0
    assert _spawn_threads() - before == 1
    sp.close()


def test_a_chained_task_can_be_taken_back_until_its_turn() -> None:
    sp = LocalSpawner(started_events=True)
    sp.spawn(1, ["sleep", "0.3"])
    _started(sp, 1)
    assert sp.chain(1, 2, ["sleep", "100"])
    assert sp.unchain(2)
    assert not sp.unchain(2) and not sp.unchain(1)
    evs = _all_events(sp, 1)
    assert [(e["ev"], e["id"]) for e in evs] == [("exit", 1)]
    assert sp.running == 0
    sp.close()


def test_a_chained_task_whose_start_by_passed_is_reported_unstarted() -> None:
    sp = LocalSpawner(started_events=True)
    sp.spawn(1, ["sleep", "0.2"])
    _started(sp, 1)
    assert sp.chain(1, 2, ["sleep", "100"], start_by=time.time() + 0.05)
    evs = _all_events(sp, 2)
    assert [(e["ev"], e["id"]) for e in evs] == [("exit", 1), ("unstarted", 2)]
    assert sp.running == 0
    sp.close()


def test_a_chained_tasks_wall_time_counts_from_its_start() -> None:
    sp = LocalSpawner(started_events=True, kill_grace=0.2)
    sp.spawn(1, ["sleep", "1"])
    _started(sp, 1)
    t0 = time.monotonic()
    assert sp.chain(1, 2, ["sleep", "100"], timeout=0.5)
    evs = _all_events(sp, 2)
    last = evs[-1]
    assert last["id"] == 2 and last["timed_out"] and last["rc"] == -signal.SIGTERM
    assert time.monotonic() - t0 >= 1.4  # 1 s of its predecessor, then its own 0.5 s
    sp.close()


def test_a_chained_task_killed_before_its_turn_is_killed_when_it_starts() -> None:
    sp = LocalSpawner(started_events=True, kill_grace=5)
    sp.spawn(1, ["sleep", "0.3"])
    _started(sp, 1)
    assert sp.chain(1, 2, ["sleep", "100"])
    sp.kill(2, signal.SIGTERM)
    t0 = time.monotonic()
    evs = _all_events(sp, 2)
    assert evs[-1]["id"] == 2 and evs[-1]["rc"] == -signal.SIGTERM
    assert time.monotonic() - t0 < 4
    sp.close()


def test_a_chained_task_that_cannot_start_is_its_error_after_the_predecessors_exit() -> None:
    before = _spawn_threads()
    sp = LocalSpawner(started_events=True)
    sp.spawn(1, ["sleep", "0.2"])
    _started(sp, 1)
    assert sp.chain(1, 2, ["/no/such/program"])
    evs = _all_events(sp, 2)
    order = [(e["ev"], e["id"]) for e in evs if e["ev"] != "started"]  # a failed exec has started, then exits 255
    assert order == [("exit", 1), ("error", 2)] and "No such file" in evs[-1]["msg"]
    sp.spawn(3, ["true"])
    assert collect(sp, 1)[3]["rc"] == 0
    assert _spawn_threads() - before == 1 and sp.running == 0
    sp.close()


def test_close_reports_chained_tasks_unstarted() -> None:
    sp = LocalSpawner(started_events=True, kill_grace=0.3)
    sp.spawn(1, ["sleep", "100"])
    _started(sp, 1)
    assert sp.chain(1, 2, ["sleep", "100"])
    evs = sp.close(grace=0.3)
    assert {(e["ev"], e["id"]) for e in evs} == {("unstarted", 2), ("exit", 1)}
    assert sp.running == 0
