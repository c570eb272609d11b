"""Starting tasks on this node and hearing when they end: the engine of the launcher's own node and of each
node agent (agent.py wraps it in a pipe protocol for the other nodes).

`LocalSpawner` is the façade: it hands each task to a thread of its own (tasks.py: the thread starts the task
through the fast fork_exec path, waits for it and reports its end), keeps the timers (wall time, TERM->KILL
grace) and turns the threads' reports into events. From a task's own thread the median wait in fork_exec is
~0.1 ms; a single loop that both spawned and reaped sat 0.35-0.45 ms in its vfork wait (the new child queued
behind a running one on the other core). The launcher's loop only hands work over and reads exits, never
waits on a child, and ran 10,000 /bin/true jobs at 0.96 of the spawn ceiling instead of 0.86 in interleaved
pairs (bench/README.md).

Threads are made on demand, one per task running or starting, and reused: a node never holds more than it
ever ran at once. A *standby* task (`spawn(..., standby=True)`) has no thread of its own: it starts on the
thread of the next task to end, the moment that task is reaped, and that end's event names it ("next"). For
tasks of a few ms this takes the loop off the path from one task to the next (see spawnc_core.c).
"""
from __future__ import annotations

import heapq
import os
import select
import signal
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Protocol

from sluice.launcher.cengine import make_engine
from sluice.launcher.tasks import Event, LayeredEnv, Task, ThreadEngine, make_dir

__all__ = ["Event", "LayeredEnv", "LocalSpawner", "Spawner", "make_dir"]


class Spawner(Protocol):
    """What the launcher's runner needs from a spawner, local or remote."""

    def start(self, argv_prefix: Sequence[str] = ()) -> None: ...

    def spawn(self, id: int, argv: Sequence[str], *, cwd: str | None = None,
              env: Mapping[str, str] | None = None, stdout: str | None = None,
              stderr: str | None = None, shell: bool = False, timeout: float | None = None,
              make_cwd: bool = True) -> None: ...

    def kill(self, id: int, sig: int = signal.SIGTERM) -> None: ...

    def poll_events(self) -> list[Event]: ...

    def fileno(self) -> int: ...

    def timeout_hint(self) -> float | None: ...

    def close(self) -> list[Event]: ...


class LocalSpawner:
    """Spawn tasks from this process, each from a thread that then waits for it: the fastest path.

    The caller registers `fileno` in its selector, waits at most `timeout_hint` seconds, then calls
    `poll_events` (cheap when nothing happened). Spawn errors are reported as events, never raised, so one
    bad job cannot stop the loop. Only the thread that calls `spawn` may call the other methods.
    """

    def __init__(self, *, kill_grace: float = 5.0, started_events: bool = False, engine: str | None = None) -> None:
        self.kill_grace = kill_grace
        self.started_events = started_events
        self._efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        try:
            self._engine = make_engine(self._efd, self._devnull, started_events, engine)
        except BaseException:
            os.close(self._efd)
            os.close(self._devnull)
            raise
        self._by_id: dict[int, Task] = {}
        self._pending: list[Event] = []  # events made by the caller's thread
        self._timers: list[tuple[float, int, int, int]] = []  # (when, seq, id, signal)
        self._standby: dict[int, float | None] = {}  # standby task id -> its wall time, timed from its start
        self._seq = 0
        self._closed = False

    @property
    def engine(self) -> str:
        """Which engine starts the tasks: "c" (compiled) or "python"."""
        return "python" if isinstance(self._engine, ThreadEngine) else "c"

    @property
    def threads(self) -> int:
        """Task threads made so far (one per task that ran at the same time as others)."""
        return self._engine.threads

    def start(self, argv_prefix: Sequence[str] = ()) -> None:
        """Nothing to start: the launcher is its own agent."""

    @property
    def running(self) -> int:
        return len(self._by_id)

    def fileno(self) -> int:
        """Readable when a task has ended or failed to start (an eventfd the task threads write)."""
        return self._efd

    def spawn(self, id: int, argv: Sequence[str], *, cwd: str | None = None,
              env: Mapping[str, str] | None = None, stdout: str | None = None,
              stderr: str | None = None, shell: bool = False, timeout: float | None = None,
              make_cwd: bool = True, standby: bool = False) -> None:
        """Start one task; its exit (or an error) shows up in `poll_events`. `make_cwd=False`: the caller
        made the directory already (the launcher does so off its hot loop). `standby`: start it when the
        next task ends (the caller must have one running), in that task's place; `cancel` takes it back."""
        args = ["/bin/sh", "-c", " ".join(argv)] if shell else list(argv)
        task = Task(id)
        self._by_id[id] = task
        self._engine.start(task, args, cwd or None, os.environ if env is None else env, stdout, stderr,
                           make_cwd and bool(cwd), standby)
        if standby:
            self._standby[id] = timeout
        elif timeout is not None:
            self._timer(time.monotonic() + timeout, id, -signal.SIGTERM)

    def cancel(self, id: int) -> bool:
        """Take back a standby task that has not started: True, and it never will; False: it has started
        (its predecessor's end, naming it, is in the next `poll_events`), or it is no standby."""
        task = self._by_id.get(id)
        if task is None or id not in self._standby or not self._engine.cancel(task):
            return False
        del self._by_id[id], self._standby[id]
        return True

    def report_error(self, id: int, msg: str) -> None:
        """Queue an error event for ``id`` (a job that failed before it could be spawned)."""
        self._pending.append({"ev": "error", "id": id, "msg": msg})

    # ---------------------------------------------------------------- signals and timers
    def _signal(self, task: Task, sig: int) -> None:
        self._engine.signal(task, sig)

    def _timer(self, when: float, id: int, sig: int) -> None:
        """sig < 0 marks a timeout (so the exit event says timed_out)."""
        self._seq += 1
        heapq.heappush(self._timers, (when, self._seq, id, sig))

    def kill(self, id: int, sig: int = signal.SIGTERM) -> None:
        """Signal the task's whole process group; a TERM is followed by KILL after the grace."""
        task = self._by_id.get(id)
        if task is None:
            return
        self._signal(task, sig)
        if sig == signal.SIGTERM:
            self._timer(time.monotonic() + self.kill_grace, id, signal.SIGKILL)

    def timeout_hint(self) -> float | None:
        """Seconds the caller may block before calling `poll_events` again (None: no limit)."""
        if self._pending:
            return 0.0
        if not self._timers:
            return None
        return max(0.0, self._timers[0][0] - time.monotonic())

    def _fire_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, id, sig = heapq.heappop(self._timers)
            task = self._by_id.get(id)
            if task is None:
                continue
            if sig < 0:  # wall time exceeded
                task.timed_out = True
                self.kill(id, -sig)
            else:
                self._signal(task, sig)

    # ---------------------------------------------------------------- events
    def poll_events(self) -> list[Event]:
        """Events since the last call, without blocking."""
        if self._timers:
            self._fire_timers()
        events, self._pending = self._pending, []
        try:
            os.eventfd_read(self._efd)
        except BlockingIOError:
            pass
        by_id, standby = self._by_id, self._standby
        for task, ev in self._engine.drain():
            if ev["ev"] != "started" and by_id.get(task.id) is task:
                del by_id[task.id]
            if standby:
                nxt = ev.get("next")
                if nxt is not None and (nxt := int(nxt)) in standby:  # it started: its wall time runs
                    timeout = standby.pop(nxt)
                    if timeout is not None:
                        self._timer(time.monotonic() + timeout, nxt, -signal.SIGTERM)
                if ev["ev"] == "error" and task.id in standby:  # refused before it could stand by
                    del standby[task.id]
            events.append(ev)
        return events

    def events(self) -> Iterator[Event]:
        return iter(self.poll_events())

    def _wait(self, timeout: float) -> None:
        select.select([self._efd], [], [], timeout)

    def close(self, grace: float | None = None) -> list[Event]:
        """TERM every task group, KILL what is left after ``grace``; return the final events. Standby tasks
        that have not started are taken back, without an event: the caller takes them back first."""
        if self._closed:
            return self.poll_events()
        grace = self.kill_grace if grace is None else grace
        events = self.poll_events()
        for id in list(self._standby):  # never started: nothing to stop, nothing to report
            self.cancel(id)
        for task in list(self._by_id.values()):
            self._signal(task, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while self._by_id and (left := deadline - time.monotonic()) > 0:
            self._wait(left)
            events += self.poll_events()
        for task in list(self._by_id.values()):
            self._signal(task, signal.SIGKILL)
        while self._by_id:
            self._wait(1.0)
            events += self.poll_events()
        self._timers.clear()
        self._closed = True
        self._engine.close()
        os.close(self._efd)
        os.close(self._devnull)
        return events
