"""Simulated execution, for benchmarks and tests only: node agents that "run" a task by a timer.

Why: the control plane (claims, packing, the writer, events, heartbeats, recovery) has to be measured at a
scale this machine cannot run for real (1,024 nodes x 64 cores, a million jobs). A simulated launcher keeps
all of it real and replaces only the processes: each node gets a `SimAgent`, an `AgentClient` whose far end
is a timer instead of an agent process. The launcher encodes every spawn message exactly as for a real agent
(so its cost is counted), and decodes the agent's reports, one JSON line per batch, through the same
`AgentClient.poll_events`; the events then take the same path as real exits (Runner -> Launcher._handle ->
states.after_exit -> the writer). Only the agent's side is cheap here: it is handed the task's duration
instead of decoding the message, and its report lines are formatted by hand.

A task's duration is the job's `data["sim_s"]` if it has one, else `Options.sim_duration_s`; its exit code is
`data["sim_rc"]` (default 0). A wall time shorter than the duration ends it as a timeout would (rc -15,
timed_out); a kill ends it at once with the signal's negative number, as a process killed by it would.

Nothing here is reachable from the CLI: a simulated launcher is made in Python,
`Launcher(ws, Options(simulate=True, sim_nodes=64, sim_cores=64))`, or with `alloc=simulated(64, 64)`.
"""

from __future__ import annotations

import heapq
import signal
import time
from collections.abc import Mapping, Sequence
from typing import Any

from sluice.launcher.agent import AgentClient, Event
from sluice.launcher.mpi import MPICHExec, MPILauncher
from sluice.launcher.nodes import Allocation, Node

__all__ = ["SimAgent", "SimClock", "mpi_builder", "simulated", "task_of"]

KIND = "simulated"


def simulated(nodes: int, cores: int, gpus: int = 0, *, end_time: float | None = None,
              prefix: str = "sim") -> Allocation:
    """An allocation of `nodes` fake nodes with `cores` cores and `gpus` GPUs each (kind "simulated")."""
    width = len(str(max(0, nodes - 1)))
    ids = tuple(str(g) for g in range(gpus))
    return Allocation(KIND, tuple(Node(f"{prefix}{i:0{width}d}", cores, ids) for i in range(nodes)), end_time,
                      None)


def mpi_builder() -> MPILauncher:
    """MPI mode's command lines are still built (a real launcher's cost) but never run: any builder will do."""
    return MPICHExec("mpiexec")


def task_of(data: Any, default_s: float) -> tuple[float, int]:
    """(duration in seconds, exit code) of a simulated job, from its `data` (`sim_s`, `sim_rc`)."""
    if isinstance(data, dict) and data:
        s = data.get("sim_s")
        return (default_s if s is None else float(s)), int(data.get("sim_rc") or 0)
    return default_s, 0


class SimClock:
    """The timers of every simulated node of one launcher: one heap, so the loop's wait is one lookup."""

    __slots__ = ("heap", "seq", "ready")

    def __init__(self) -> None:
        self.heap: list[tuple[float, int, SimAgent, int]] = []  # (end, seq, agent, spawn id)
        self.seq = 0
        self.ready: set[SimAgent] = set()  # agents with a report to read

    def at(self, when: float, agent: SimAgent, sid: int) -> int:
        self.seq += 1
        heapq.heappush(self.heap, (when, self.seq, agent, sid))
        return self.seq

    def timeout_hint(self) -> float | None:
        if self.ready:
            return 0.0
        return max(0.0, self.heap[0][0] - time.time()) if self.heap else None

    def fire(self) -> list[SimAgent]:
        """End every task that is due; the agents that now have reports (each sends one batch)."""
        heap = self.heap
        if heap and heap[0][0] <= (now := time.time()):
            touched = self.ready
            pop = heapq.heappop
            while heap and heap[0][0] <= now:
                end, seq, agent, sid = pop(heap)
                if agent.due(sid, seq, end):
                    touched.add(agent)
        if not self.ready:
            return []
        out = list(self.ready)
        self.ready.clear()
        for a in out:
            a.send_reports()
        return out


class SimAgent(AgentClient):
    """One simulated node agent: the launcher's half is AgentClient's own code; the far half is a timer."""

    def __init__(self, node: str, clock: SimClock) -> None:
        super().__init__()
        self.node = node
        self.clock = clock
        self.tasks: dict[int, tuple[int, int, bool]] = {}  # spawn id -> (timer seq, rc, timed out)
        self.reports: list[str] = []  # the agent's report lines not yet "sent"
        self.sent = 0  # bytes the launcher wrote to this agent (what a real one would read)
        self.standby: dict[int, tuple[float | None, tuple[float, int]]] = {}  # spawn id -> (timeout, sim), in order

    def start(self, argv_prefix: Sequence[str] = ()) -> None:
        """No process: the node is a timer."""

    def _write(self, data: bytes | bytearray) -> None:
        self.sent += len(data)

    def spawn(self, id: int, argv: Sequence[str], *, cwd: str | None = None,
              env: Mapping[str, str] | None = None, stdout: str | None = None,
              stderr: str | None = None, shell: bool = False, timeout: float | None = None,
              make_cwd: bool = True, standby: bool = False, sim: tuple[float, int] = (0.0, 0)) -> None:
        """Encode the spawn as for a real agent, then start the timer: `sim` is (duration, exit code). A
        `standby` task's timer starts when the agent's next task ends, as the real agent starts it then."""
        super().spawn(id, argv, cwd=cwd, env=env, stdout=stdout, stderr=stderr, shell=shell, timeout=timeout,
                      standby=standby)
        if standby:
            self.standby[id] = (timeout, sim)
        else:
            self._start(id, timeout, sim, time.time())

    def _start(self, id: int, timeout: float | None, sim: tuple[float, int], at: float) -> None:
        dur, rc = sim
        timed_out = timeout is not None and dur > timeout
        if timed_out:
            dur, rc = float(timeout or 0.0), -signal.SIGTERM
        seq = self.clock.at(at + dur, self, id)
        self.tasks[id] = (seq, rc, timed_out)

    def recall(self, id: int) -> None:
        """Sent as to a real agent; the answer is in the next reports, as the real one's would be."""
        super().recall(id)
        ok = self.standby.pop(id, None) is not None
        self.reports.append(f'{{"ev":"cancelled","id":{int(id)},"ok":{"true" if ok else "false"}}}')
        self.clock.ready.add(self)

    def kill(self, id: int, sig: int = signal.SIGTERM) -> None:
        """A signal ends a simulated task at once, as it would end a process that does not trap it."""
        super().kill(id, sig)
        task = self.tasks.get(id)
        if task is not None:
            self.tasks[id] = (self.clock.at(time.time(), self, id), -int(sig), task[2])

    def due(self, sid: int, seq: int, end: float) -> bool:
        """The timer `seq` of task `sid` went off at `end`: report its exit (False: a stale timer)."""
        task = self.tasks.get(sid)
        if task is None or task[0] != seq:
            return False
        del self.tasks[sid]
        _, rc, timed_out = task
        nxt = ""
        if self.standby:  # the first standby starts in its place, at its end
            nid = next(iter(self.standby))
            self._start(nid, *self.standby.pop(nid), end)
            nxt = f',"next":{nid}'
        self.reports.append(f'{{"ev":"exit","id":{sid},"rc":{rc},"pid":0,"t":{end!r},'
                            f'"timed_out":{"true" if timed_out else "false"}{nxt}}}')
        return True

    def send_reports(self) -> None:
        """The agent's write: every exit since its last one, as one line (agent.py batches the same way)."""
        r = self.reports
        if r:
            self._buf += (r[0] if len(r) == 1 else f"[{','.join(r)}]").encode() + b"\n"
            self.reports = []

    def fileno(self) -> int:
        """No file descriptor: the launcher's wait is bounded by the clock's `timeout_hint` instead."""
        return -1

    def _read(self) -> None:
        """Nothing to read from a pipe: the reports are in the buffer already."""

    def timeout_hint(self) -> float | None:
        return self.clock.timeout_hint()

    @property
    def running(self) -> int:
        return len(self.tasks)

    def report_error(self, id: int, msg: str) -> None:
        """As LocalSpawner.report_error, for the home node (a job that fails before it is spawned)."""
        self._pending.append({"ev": "error", "id": id, "msg": msg})
        self.clock.ready.add(self)

    def close(self, timeout: float | None = None) -> list[Event]:
        """Stop every task (as the agent does on `exit`: at once here) and return their last reports. A standby
        that never started has nothing to stop or report (as LocalSpawner)."""
        self.standby.clear()
        now = time.time()
        for sid in list(self.tasks):
            seq = self.clock.at(now, self, sid)
            _, _, timed_out = self.tasks[sid]
            self.tasks[sid] = (seq, -signal.SIGTERM, timed_out)
            self.due(sid, seq, now)
        self.send_reports()
        return self.poll_events()
