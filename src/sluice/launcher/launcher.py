"""The pilot: keeps every core of an allocation busy with the campaign's runnable jobs.

Three threads keep the database out of the hot loop, each in its own module and knowing only what it is given:
- the *source* (source.py) claims runnable jobs in batches of adjacent ids (one atomic statement each) into a
  buffer, and hands stage-in/preprocess work to the transition pool;
- the *writer* (writer.py) applies state changes in batches (one transaction per ~50 ms), heartbeats the
  session and notices jobs a user killed;
- the *main loop* (here) places buffered jobs on free cores and hands them to the spawner (spawn.py: a thread
  per running task starts it and waits for it), whose eventfd tells the loop's epoll when tasks have ended.

    Launcher(ws, Options(job_mode="serial", idle_timeout=5)).run()
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import sys
import threading
import time
from collections import deque
from select import EPOLLIN, epoll
from typing import Any

from sluice.api import Workspace, claims, sessions
from sluice.api.claims import Claimed
from sluice.errors import Fault, one_line
from sluice.launcher import transitions
from sluice.launcher.faults import again, is_full, reason
from sluice.launcher.latency import prompt_wakeups, rare_collections
from sluice.launcher.mpi import for_allocation
from sluice.launcher.nodes import Allocation, discover
from sluice.launcher.options import DEFAULT_IDLE_S, Options, Summary, selection
from sluice.launcher.packing import NodePool
from sluice.launcher.runner import Runner
from sluice.launcher.simulate import KIND as SIMULATED
from sluice.launcher.simulate import mpi_builder, simulated
from sluice.launcher.source import Source
from sluice.launcher.standby import Standbys
from sluice.launcher.starts import Starts
from sluice.launcher.writer import Writer
from sluice.states import Change

__all__ = ["Launcher", "Options", "Summary"]

log = logging.getLogger("sluice.launcher")


class Launcher(Starts):
    """One launcher session. `run()` returns when the work, the allocation or the patience runs out."""

    def __init__(self, ws: Workspace, opts: Options | None = None, alloc: Allocation | None = None) -> None:
        self.ws = ws
        self.opts = opts or Options()
        if self.opts.job_mode not in ("serial", "mpi"):
            raise ValueError(f"job mode must be serial or mpi, not {self.opts.job_mode!r}")
        self.alloc = alloc or self._allocation()
        if self.alloc.kind == SIMULATED and not self.opts.simulate:
            raise ValueError("a simulated allocation needs Options(simulate=True): its nodes cannot run processes")
        self.pool = NodePool(self.alloc.nodes)
        self.running: dict[int, tuple[Claimed, Any, float]] = {}
        self.pending: deque[Claimed] = deque()
        self.standbys = Standbys(self.pool, None, home=None, agents=False)  # none until run() knows the nodes
        self.quick = 1.0  # until tasks show they are short, none stands by
        self.run_s = 0.0
        self.stopping_ids: set[int] = set()
        self.user_killed: set[int] = set()
        self.to_kill: queue.SimpleQueue[list[int]] = queue.SimpleQueue()
        self.summary = Summary()
        self.stop_reason: str | None = None
        self.ended = 0  # running jobs that ended (exited, or failed to spawn): the claim size follows their pace
        self._r, self._w = os.pipe()
        self.throttled = False  # starts held back until the writer catches up (Starts._launch)
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)
        self.selection = selection(self.opts, self.alloc, ws.config.machine)
        self.capacity = sum(n.cores for n in self.alloc.nodes)
        if self.opts.max_ranks:
            self.capacity = min(self.capacity, self.opts.max_ranks)
        mu = self.opts.max_unwritten
        self.max_unwritten = max(20_000, 2 * self.capacity) if mu is None else mu
        self.session_id = 0
        self.actor = "launcher"
        self.deadline: float | None = None  # when to stop (the allocation's end less a margin), set by run()
        self.source: Source  # made by run(), once the session exists
        self.writer: Writer
        self.transitions = transitions.Pool(ws, self.opts.workers, on_done=self._processed,
                                            on_error=self._process_failed)

    def _allocation(self) -> Allocation:
        o = self.opts
        if not o.simulate:
            return discover(wall_time_min=o.wall_time_min)
        end = time.time() + o.wall_time_min * 60 if o.wall_time_min else None
        return simulated(o.sim_nodes or 1, o.sim_cores or os.cpu_count() or 1, end_time=end)

    # ---------------------------------------------------------------- what the threads read (source.Progress)
    @property
    def stopping(self) -> bool:
        return self.stop_reason is not None

    @property
    def started(self) -> int:
        return self.summary.started

    def waiting(self) -> int:
        return len(self.pending) + len(self.standbys)

    def busy(self) -> bool:
        return bool(self.running or self.pending or self.standbys or self.transitions.inflight)

    def settled(self) -> bool:
        return self.drained() and self.writer.idle()

    # ---------------------------------------------------------------- what the threads call back
    def _written(self, done: list[Change]) -> None:
        self.summary.count(done)
        if self.throttled and self.writer.backlog() <= self.max_unwritten // 2:
            self.throttled = False
            self.wake()
        if self.drained():  # the last changes are in: let the source see whether work is left
            self.source.poke()

    def _killed(self, ids: list[int]) -> None:
        self.to_kill.put(ids)
        self.wake()

    def _processed(self, changes: list[Change]) -> None:
        if changes:
            self.writer.put(changes)
        self.source.poke()

    def _process_failed(self, job_id: int, e: Exception) -> None:
        if is_full(e):  # the job stays claimed, and goes back when the session ends
            self.fault(reason(e))
            return
        # a transient failure (DB, filesystem): give the job back for a later try
        log.warning("job %s: transition failed, will retry: %s", job_id, one_line(e))
        self._unclaim([job_id])

    def _unclaim(self, ids: list[int]) -> None:
        """Give back claimed jobs now if the database takes it; they go back when the session ends anyway."""
        try:
            claims.unclaim(self.ws, self.session_id, ids)
        except Fault as e:
            if is_full(e):
                self.fault(reason(e))
            else:
                log.warning("cannot give back %d jobs now (%s): they go back when the session ends", len(ids),
                            one_line(e, 200))

    # ---------------------------------------------------------------- helpers
    def stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        self.wake()

    def fault(self, reason: str) -> None:
        """The environment failed (a full disk, a database gone): say so at once, in one line, and stop."""
        if self.summary.fault is None:
            self.summary.fault = reason
            log.warning("launcher %s: %s; stopping (its jobs are kept for the next launcher)", self.session_id,
                        reason)
        self.stop(reason)

    def wake(self) -> None:
        try:
            os.write(self._w, b"x")
        except BlockingIOError:
            pass

    def time_left_min(self) -> float | None:
        d = self.deadline
        return None if d is None else max(0.0, (d - time.time()) / 60)

    def drained(self) -> bool:
        """Nothing claimed is running, waiting to start or in the transition pool."""
        return not (self.running or self.standbys or self.pending or self.source.buffer or self.source.urgent
                    or self.transitions.inflight)

    def pool_room(self) -> int:
        return self.transitions.room()

    def free_slots(self) -> int:
        return self.pool.free_cores

    # ---------------------------------------------------------------- the main loop
    def run(self) -> Summary:
        self.t0 = time.time()
        self.deadline = self.alloc.deadline(self.opts.end_margin_s, self.t0)
        mpi = mpi_builder() if self.opts.simulate else for_allocation(self.alloc, self.opts.job_mode,
                                                                         self.opts.mpi_launcher)
        self.session_id = sessions.start(self.ws, job_mode=self.opts.job_mode, batch_job_id=self.opts.batch_job_id,
                                         info={"nodes": [n.name for n in self.alloc.nodes],
                                               "end_time": self.alloc.end_time},
                                         stale_after=self.opts.stale_after_s)
        self.actor = f"launcher:{self.session_id}"
        self.summary.session_id = self.session_id
        self.runner = Runner(self.alloc, self.opts.job_mode, self.ws.path, self.ws.config.data_dir, mpi,
                             kill_grace=self.opts.kill_grace_s,
                             simulate=self.opts.sim_duration_s if self.opts.simulate else None)
        self.standbys = Standbys(self.pool, self.runner, agents=self.opts.standby and self.runner.agents_stand_by,
                                 home=self.pool.index(self.runner.home) if self.opts.standby
                                 and self.runner.can_stand_by else None)
        self.source = Source(self.ws, self.session_id, self.actor, self.selection, self.opts, self.capacity, self,
                             prepare=self.runner.prepare, process=self.transitions.submit, wake=self.wake,
                             on_fatal=self.fault)
        self.writer = Writer(self.ws, self.session_id, self.actor, flush_interval=self.opts.flush_interval,
                             heartbeat_s=self.opts.heartbeat_s,
                             running_ids=lambda: [*self.running, *self.standbys.ids()],
                             on_written=self._written, on_killed=self._killed, on_fatal=self.fault)
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)} \
            if threading.current_thread() is threading.main_thread() else {}
        with rare_collections():
            self.writer.start()
            self.source.start()
            try:
                with prompt_wakeups(self.opts.loop_slice_us * 1000):
                    self._loop()
            finally:
                self._shutdown()
                for s, h in old.items():
                    signal.signal(s, h)
        return self.summary

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.stop(f"signal {signal.Signals(signum).name}")

    def _loop(self) -> None:
        ep = epoll()  # plain epoll, not selectors: this loop turns once or twice per job
        ep.register(self._r, EPOLLIN)
        registered = {self._r}
        n_agents = -1
        last_status = last_launch = 0.0
        tty = self.opts.status and sys.stderr.isatty()
        try:
            while True:
                now = time.time()
                d = self.deadline
                if d is not None and now >= d:
                    self.stop("allocation ends")
                if self.stopping:
                    return
                if not self.to_kill.empty():
                    self._take_kills()
                if not (self.opts.launch_interval_s and now - last_launch < self.opts.launch_interval_s):
                    if self._launch(now):
                        last_launch = now
                if len(self.runner.agents) != n_agents:  # a node agent started: watch its output too
                    n_agents = len(self.runner.agents)
                    for fd in self.runner.fds():
                        if fd not in registered:
                            ep.register(fd, EPOLLIN)
                            registered.add(fd)
                done = self._finished()
                if done is not None:
                    self.stop(done)
                    return
                hint = self.runner.timeout_hint()
                timeout = 0.25 if hint is None else min(hint, 0.25)
                if self.opts.launch_interval_s and self.pending:
                    timeout = min(timeout, self.opts.launch_interval_s)
                ready = []
                for fd, _ in ep.poll(timeout):
                    if fd == self._r:
                        try:
                            os.read(self._r, 4096)
                        except BlockingIOError:
                            pass
                    else:
                        ready.append(fd)
                events = self.runner.poll(ready)
                if self.runner.lost:  # before their tasks' ends would give its cores back
                    self._lose_nodes(ep, registered)
                self._handle(events)
                if tty and now - last_status >= 1.0:
                    last_status = now
                    sys.stderr.write(f"\r\x1b[K{self.summary.status(len(self.running), now - self.t0)}")
                    sys.stderr.flush()
        finally:
            ep.close()

    def _lose_nodes(self, ep: epoll, registered: set[int]) -> None:
        """Nodes whose agents went away unasked: nothing starts there again, and the launcher goes on with the
        others (their tasks' errors retry the jobs, by their policy, elsewhere)."""
        for node, fd in self.runner.lost:
            i = self.pool.index(node)
            if i is not None and self.pool.total_at(i) and not self.pool.retired(i):
                self.pool.retire(i)
                self.standbys.cores[i] = 0
                self.capacity = self.source.capacity = max(1, self.capacity - self.pool.total_at(i))  # claims
            if fd in registered:
                ep.unregister(fd)  # at its end of file it would be readable for ever
                registered.discard(fd)
            log.warning("launcher %s: lost node %s (its agent exited); going on with %d cores", self.session_id,
                        node, self.pool.total_cores)
        self.runner.lost.clear()

    def _finished(self) -> str | None:
        """Why the launcher is done (None: it is not)."""
        if self.running or self.standbys or self.transitions.inflight:
            return None
        if self.opts.max_jobs is not None and self.summary.started >= self.opts.max_jobs:
            return f"max jobs ({self.opts.max_jobs}) reached"  # a claim that raced the last start is given back
        if self.pending or self.source.buffer or self.source.urgent:
            return None
        patience = self.opts.idle_timeout
        if self.source.nothing_left and (patience is None or self.opts.consume_all):
            return "no more work"
        limit = DEFAULT_IDLE_S if patience is None else patience
        idle = self.source.idle_since
        if not self.opts.consume_all and idle is not None and time.monotonic() - idle >= limit:
            return f"idle for {limit:g} s"
        return None

    def _take_kills(self) -> None:
        while True:
            try:
                ids = self.to_kill.get_nowait()
            except queue.Empty:
                return
            for j in ids:
                if j in self.standbys.queued and self.standbys.recall([j]):  # never started: USER_KILLED already
                    continue
                if j in self.running or j in self.standbys:  # an agent's answer to the recall drops it (_back)
                    self.user_killed.add(j)
                    self.runner.kill(j)

    def _shutdown(self) -> None:
        why = self.stop_reason or "error"
        # Running jobs are stopped first, before waiting for the claiming thread (which may be in the middle of a
        # claim and its mkdirs): after a scheduler's TERM every second counts, and a job left to finish while
        # the launcher waits has run past the moment it was told to stop.
        self.source.stop(wait=False)
        if self.standbys:  # not started: back with the others; one that has started is running by now
            self.recall_standby()
            self._handle(self.runner.poll())
        if self.running or self.standbys:  # a standby an agent has yet to give back may start: it is stopped too
            self.stopping_ids.update(self.running)
            for jid in list(self.running):
                self.runner.kill(jid, signal.SIGTERM)
            end = time.monotonic() + self.opts.kill_grace_s + 2
            while (self.running or self.standbys) and time.monotonic() < end:
                time.sleep(0.02)
                self._handle(self.runner.poll())
        self.source.join()
        leftovers = [c.id for c in (*self.pending, *self.source.buffer, *self.source.urgent)]
        self.pending.clear()
        self.source.buffer.clear()
        self.source.urgent.clear()
        self._handle(self.runner.close(grace=0))
        self.transitions.shutdown()
        self.writer.stop()
        self.summary.reason = why
        try:
            self.ws.retry(lambda: sessions.finish(self.ws, self.session_id, leftovers, self.actor,
                                                  reason="launcher {sid} exited"), attempts=20)
        except Fault as e:  # the next launcher or the service recovers them once the heartbeat is stale
            self.fault(reason(e))
            log.warning("launcher %s: session not closed (%s): its jobs stay with it until they are recovered",
                        self.session_id, again(e))
        self.summary.seconds = time.time() - self.t0
        if self.opts.status and sys.stderr.isatty():
            sys.stderr.write("\r\x1b[K")
        os.close(self._r)
        os.close(self._w)
