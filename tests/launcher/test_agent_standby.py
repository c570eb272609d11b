"""Standby tasks on a node agent: queued spawns the agent starts the moment one of its tasks ends.

The launcher's own node hands a core from an ended task to the next one without its loop (spawn.py): 98% of
the real spawn path's starts. These are the same over the agent's pipe (a "standby" spawn, an exit naming
its successor as "next", a recall answered by a "cancelled" event), on the real agent process and on the
simulated agent that benchmarks drive, which must answer as the real one does.
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.launcher.test_agent import SRC

from sluice.launcher.agent import AgentClient, Event
from sluice.launcher.simulate import SimAgent, SimClock


@pytest.fixture
def agent() -> Iterator[AgentClient]:
    os.environ["PYTHONPATH"] = SRC + os.pathsep + os.environ.get("PYTHONPATH", "")
    a = AgentClient(agent_args=["--kill-grace", "0.5"])
    a.start()
    yield a
    a.close()


def events_until(a: AgentClient, done: Callable[[list[Event]], bool], timeout: float = 20.0,
                 clock: SimClock | None = None) -> list[Event]:
    """Every event the agent sends until `done(all so far)`."""
    got: list[Event] = []
    end = time.monotonic() + timeout
    while not done(got) and time.monotonic() < end:
        if clock is not None:
            clock.fire()
            time.sleep(0.005)
        else:
            select.select([a.fileno()], [], [], 0.2)
        got += a.poll_events()
    assert done(got), got
    return got


def exits(evs: list[Event]) -> dict[int, Event]:
    return {int(e["id"]): e for e in evs if e.get("ev") == "exit"}


def test_a_standby_starts_as_the_running_task_ends_and_the_exit_names_it(agent: AgentClient,
                                                                         tmp_path: Path) -> None:
    first, nxt = tmp_path / "first", tmp_path / "next"
    agent.spawn(1, ["sh", "-c", f"sleep 0.3; date +%s.%N > {first}"])
    agent.spawn(2, ["sh", "-c", f"date +%s.%N > {nxt}"], standby=True)
    agent.flush()
    got = exits(events_until(agent, lambda evs: len(exits(evs)) == 2))
    assert got[1]["rc"] == 0 and got[1].get("next") == 2
    assert got[2]["rc"] == 0 and "next" not in got[2]
    assert float(nxt.read_text()) >= float(first.read_text())  # it waited for the first to end


def test_a_recalled_standby_never_runs(agent: AgentClient, tmp_path: Path) -> None:
    agent.spawn(1, ["sleep", "0.5"])
    agent.spawn(2, ["sh", "-c", f"touch {tmp_path / 'ran'}"], standby=True)
    agent.recall(2)
    evs = events_until(agent, lambda evs: 1 in exits(evs))
    assert {"ev": "cancelled", "id": 2, "ok": True} in evs
    assert "next" not in exits(evs)[1]
    time.sleep(0.2)
    assert not (tmp_path / "ran").exists() and 2 not in exits(evs + agent.poll_events())


def test_recalling_a_standby_that_started_says_so_and_it_runs_to_its_end(agent: AgentClient) -> None:
    agent.spawn(1, ["true"])
    agent.spawn(2, ["sleep", "0.3"], standby=True)
    agent.flush()
    evs = events_until(agent, lambda evs: 1 in exits(evs))
    assert exits(evs)[1].get("next") == 2
    agent.recall(2)
    evs = events_until(agent, lambda evs: 2 in exits(evs) and any(e.get("ev") == "cancelled" for e in evs))
    assert {"ev": "cancelled", "id": 2, "ok": False} in evs
    assert exits(evs)[2]["rc"] == 0


def test_the_simulated_agent_answers_as_the_real_one() -> None:
    clock = SimClock()
    a = SimAgent("n0", clock)
    a.spawn(1, ["x"], sim=(0.1, 0))
    a.spawn(2, ["x"], standby=True, sim=(0.1, 3))
    a.spawn(3, ["x"], standby=True, sim=(0.1, 0))
    a.recall(3)
    t0 = time.time()
    evs = events_until(a, lambda evs: len(exits(evs)) == 2, clock=clock)
    got = exits(evs)
    assert got[1].get("next") == 2 and got[2]["rc"] == 3 and "next" not in got[2]
    assert got[2]["t"] - got[1]["t"] == pytest.approx(0.1, abs=0.01)  # it started at its predecessor's end
    assert got[2]["t"] - t0 >= 0.19
    assert {"ev": "cancelled", "id": 3, "ok": True} in evs and 3 not in got
    a.spawn(4, ["x"], standby=True)
    assert a.close() == []  # a standby that never started has nothing to report
