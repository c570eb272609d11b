"""A node agent that goes away unasked (its node failed, the OOM killer, a kill -9).

At a thousand nodes one is lost now and then. Its tasks' exits will never come: each ends as an error at
once, so its job is retried by its policy on another node; the node is taken out of the launcher's pool, and
the launcher goes on with the others. It used to stop the whole launcher at the next write to the dead
agent's pipe (BrokenPipeError), and the pipe's end of file woke its loop without end.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import threading
import time
from pathlib import Path

from tests.launcher.test_agent import SRC
from tests.launcher.test_agent_standby import events_until

from sluice.api import Workspace
from sluice.launcher.agent import AgentClient, Event
from sluice.launcher.launcher import Launcher, Options
from sluice.launcher.nodes import Allocation, Node
from sluice.states import S


def errors(evs: list[Event]) -> dict[int, Event]:
    return {int(e["id"]): e for e in evs if e.get("ev") == "error"}


def test_the_tasks_of_an_agent_killed_end_as_errors_and_later_messages_do_not_raise() -> None:
    os.environ["PYTHONPATH"] = SRC + os.pathsep + os.environ.get("PYTHONPATH", "")
    a = AgentClient(agent_args=["--kill-grace", "0.5"])
    a.start()
    a.spawn(1, ["sleep", "2"])
    a.spawn(2, ["sleep", "2"])
    a.spawn(3, ["/bin/true"], standby=True)
    a.flush()
    time.sleep(0.3)
    assert a.proc is not None
    a.proc.kill()  # kill -9 of the agent alone: no exit reported for 1 or 2, and 3 never starts
    got = errors(events_until(a, lambda evs: len(errors(evs)) == 3))
    assert all(e.get("lost") and "never reported" in str(e["msg"]) for e in got.values()), got
    assert a.lost is not None and not a.held
    a.spawn(4, ["/bin/true"])  # nobody there: an error at once, not a broken pipe
    a.flush()
    a.kill(1)
    a.recall(3)
    assert errors(a.poll_events()).keys() == {4}
    a.close(timeout=5)


def _agent(la: Launcher, node: str) -> AgentClient | None:
    runner = getattr(la, "runner", None)  # made by run(), in its thread
    return None if runner is None else runner.agents.get(node)


def _descendants(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout.split()
    kids = [int(p) for p in out]
    return kids + [d for k in kids for d in _descendants(k)]


def test_a_launcher_goes_on_without_a_node_whose_agent_is_killed(sqlite_ws: Workspace, tmp_path: Path) -> None:
    """Two nodes: this one, and "localhost" through a real agent (started by MPICH's mpiexec). The agent is
    killed while its tasks run: they are retried here, every job finishes, nothing more goes to that node, and
    the launcher's loop does not spin on the dead pipe."""
    os.environ["PYTHONPATH"] = SRC + os.pathsep + os.environ.get("PYTHONPATH", "")
    ws = sqlite_ws
    ws.add_app("where", "/bin/sh -c 'echo $SLUICE_JOB_ID >> {log}; sleep 1'")
    log = tmp_path / "ran"
    ids = ws.add_jobs([{"name": f"w{i}", "app": "where", "params": {"log": str(log)}} for i in range(12)])
    alloc = Allocation("pbs", (Node("here", 2), Node("localhost", 2)), None, None)
    la = Launcher(ws, Options(mpi_launcher="mpich", idle_timeout=1, kill_grace_s=0.5, status=False), alloc=alloc)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t = threading.Thread(target=la.run)
    t.start()
    end = time.monotonic() + 30
    while (a := _agent(la, "localhost")) is None or len(a.held) < 2:
        assert time.monotonic() < end, "no task ever ran on the agent"
        time.sleep(0.02)
    assert a.proc is not None
    agent = [p for p in _descendants(a.proc.pid)
             if "sluice.launcher.agent" in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")]
    assert agent, "the agent process was not found"
    for p in agent:
        os.kill(p, signal.SIGKILL)
    t.join(60)
    assert not t.is_alive()
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    assert ws.count(state=S.JOB_FINISHED) == len(ids), ws.summary()
    lost = [j for j in ids if any("never reported" in (e.message or "") for e in ws.history(j))]
    assert len(lost) >= 2, lost  # the two that ran there, retried
    assert la.pool.total_cores == 2 and la.source.capacity == 2 and la.summary.fault is None  # claims for 2
    used = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    assert used < 0.5 * la.summary.seconds + 2, (used, la.summary.seconds)  # a spinning loop uses it all
