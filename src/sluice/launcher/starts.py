"""The main loop's two halves of a job's run: starting claimed jobs on free slots, and taking their ends back.

A mixin of `Launcher` (launcher.py), apart so that each reads in one sitting. Both run on the main loop's thread
once or twice per job, so the common case (a one-node job without GPUs) takes the short way: cores straight
from the pool's free-slot heaps (packing.py), no request record; every other shape goes through
`NodePool.place`.

Jobs may also wait on a node as standby tasks (standby.py), started by the node's spawner the moment one of its
tasks ends; the end's event names its successor, which takes the core the end gave back.
"""

from __future__ import annotations

import logging
import signal
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from sluice.api.claims import Claimed
from sluice.launcher import standby
from sluice.launcher.options import Options, Summary
from sluice.launcher.packing import NodePool, Placement, Request
from sluice.launcher.spawn import Event
from sluice.states import Change, S

log = logging.getLogger("sluice.launcher")

if TYPE_CHECKING:
    from sluice.launcher import transitions
    from sluice.launcher.runner import Runner
    from sluice.launcher.source import Source
    from sluice.launcher.writer import Writer


class Starts:
    """What `Launcher` gives these methods (set in its __init__ and run)."""

    opts: Options
    pool: NodePool
    runner: Runner
    source: Source
    writer: Writer
    transitions: transitions.Pool
    summary: Summary
    running: dict[int, tuple[Claimed, Any, float]]
    pending: deque[Claimed]
    stopping_ids: set[int]
    user_killed: set[int]
    session_id: int
    deadline: float | None
    stop_reason: str | None
    ended: int
    t0: float
    throttled: bool
    max_unwritten: int
    standbys: standby.Standbys
    quick: float  # moving average of how long this node's tasks ran (s)
    run_s: float  # moving average of how long every task ran (s): how long a pace of ends is remembered

    @property
    def stopping(self) -> bool:
        return self.stop_reason is not None

    def fault(self, reason: str) -> None:
        raise NotImplementedError

    def _unclaim(self, ids: list[int]) -> None:
        raise NotImplementedError

    def _launch(self, now: float) -> bool:
        """Start what fits on the free cores, in claim order; a job that does not fit now waits at the front."""
        buf, pending, sb = self.source.buffer, self.pending, self.standbys
        if sb.queued:
            self._recall_standbys(now)
        if self.source.urgent:  # the most urgent claim first, ahead of all that waits
            with self.source.cv:
                urgent = sorted(self.source.urgent, key=lambda c: (-c.priority, c.deadline or float("inf"), c.id))
                self.source.urgent.clear()
            pending.extendleft(reversed(urgent))
        while buf and len(pending) < 4 * self.opts.claim_batch:
            pending.append(buf.popleft())
        self.source.nudge()
        if not pending or self.pool.free_cores == 0:  # the common wake-up: nothing can start, no list work
            if pending:
                self._stand_by(now)
            elif sb.queued and not buf and self.source.came_up_empty and self.pool.free_cores:  # none left but these
                self._back(sb.recall(sb.oldest(self.pool.free_cores)))
            return False
        if self.writer.backlog() > self.max_unwritten:  # the database is behind: let the writer catch up
            self.throttled = True  # the writer wakes the loop once it has (Launcher._written)
            return False
        started: list[Change] = []
        waiting: list[Claimed] = []
        giveback: list[int] = []
        opts, pool, running, runner = self.opts, self.pool, self.running, self.runner
        mode_mpi = opts.job_mode == "mpi"
        d = self.deadline
        limit_procs = opts.max_launches if mode_mpi else None
        max_jobs, max_ranks = opts.max_jobs, opts.max_ranks
        names = pool.names if not mode_mpi else ()
        run_fields = {"session_id": self.session_id}
        summary = self.summary
        while pending:
            if (max_jobs is not None and summary.started >= max_jobs) or pool.free_cores == 0 \
                    or (limit_procs is not None and len(running) >= limit_procs) \
                    or (max_ranks is not None and self._ranks() >= max_ranks):
                break
            c = pending.popleft()
            if d is not None and c.wall_time_min and now + c.wall_time_min * 60 > d:
                giveback.append(c.id)  # cannot finish before the allocation ends: another launcher may
                continue
            cores, gpus = c.ranks_per_node * c.threads_per_rank, c.gpus_per_rank * c.ranks_per_node
            if not pool.fits_shape(c.num_nodes, cores, gpus):
                giveback.append(c.id)
                self.source.exclude(c.id)
                continue
            p: Placement | None
            if names and c.num_nodes == 1 and not gpus:  # the common case: cores of one node
                i = pool.take_cores(cores)
                if i is None:
                    p = None
                else:
                    p = Placement(c.id, (names[i],), cores, {})
                    if not pool.free_at(i):
                        sb.full(i)
            else:
                p = pool.place(Request(c.id, c.num_nodes, c.ranks_per_node, c.threads_per_rank, c.gpus_per_rank,
                                       c.wall_time_min), exclusive=mode_mpi)
            if p is None:
                waiting.append(c)
                if len(waiting) > 64:  # nothing smaller behind it is likely to fit either
                    break
                continue
            runner.start(c, p)
            running[c.id] = (c, p, now)
            summary.started += 1
            started.append(Change(c.id, c.state, S.RUNNING, None, at=now, fields=run_fields))
            if opts.launch_interval_s:
                break
        pending.extendleft(reversed(waiting))
        if pending and not waiting:
            self._stand_by(now)
        if started:
            self.runner.flush()
            self.writer.put(started)
        if giveback:
            self._unclaim(giveback)
        return bool(started)

    def _stand_by(self, now: float) -> None:
        """Queue the next one-core jobs as standbys on the nodes whose every core is busy (standby.py)."""
        opts = self.opts
        if self.throttled or self.stopping or opts.max_jobs is not None or opts.max_ranks \
                or opts.launch_interval_s:
            return
        if self.writer.backlog() > self.max_unwritten:  # each hand-over is a change: as for the loop's starts
            self.throttled = True
            return
        self.standbys.set_pace(self.run_s if self.ended else now - self.t0)  # none ended: all run this long
        self.standbys.fill(self.pending, now, self.deadline, local_tasks=self.runner.local_tasks(),
                           quick=self.quick, wait_s=self._standby_wait())
        self.runner.flush()  # to the agents now: a turn that starts nothing would hold them to the next start

    def _standby_wait(self) -> float:
        """How long an agent's standby may wait for an end on its node: its tasks all end within a run time
        (no limit while none has ended: the one standby each node holds until then waits for the first)."""
        return max(standby.STANDBY_MAX_WAIT_S, 2 * self.run_s) if self.ended else float("inf")

    def _recall_standbys(self, now: float) -> None:
        """Take back the standbys that waited too long, or all of them for an urgent claim."""
        sb = self.standbys
        if self.source.urgent:
            self.recall_standby()
            return
        stale, home = sb.stale(now, self._standby_wait())
        if stale:
            self._back(sb.recall(stale))
        if home:  # this node's tasks run long now: its starts go through the loop until they are short again
            self.quick = max(self.quick, standby.STANDBY_MAX_WAIT_S)

    def recall_standby(self) -> None:
        """Take back every queued standby; those given back at once go to the front of the queue in order."""
        self._back(self.standbys.recall(list(self.standbys.queued)))

    def _back(self, claims: list[Claimed]) -> None:
        """Standbys taken back, to the front of the queue (a user's kill: they are USER_KILLED already)."""
        if self.user_killed:
            for c in [c for c in claims if c.id in self.user_killed]:
                self.user_killed.discard(c.id)
                claims.remove(c)
        self.pending.extendleft(reversed(claims))

    def _succeed(self, jid: int, t: float) -> Change | None:
        """The standby job `jid` started in the place of a task that ended: the cores it left are its now."""
        entry = self.standbys.left(jid)
        if entry is None:
            return None
        c, i, _ = entry
        p: Placement | None = Placement(c.id, (self.pool.names[i],), 1, {})
        if not self.pool.take_at(i, 1):  # the predecessor's end gave this node a core back: a bug
            log.error("job %s started in a standby's place with no core free on its node", jid)
            p = None  # running, but holding no core: its end gives none back
        elif not self.pool.free_at(i):
            self.standbys.full(i)
        self.running[jid] = (c, p, t)
        self.summary.handed_over += 1
        if self.stopping:  # it started as the launcher stopped: it is stopped with the others
            self.stopping_ids.add(jid)
            self.runner.kill(jid, signal.SIGTERM)
        return self._started(c, t)

    def _started(self, c: Claimed, t: float) -> Change:
        """A job that started outside `_launch` (a standby): counted, and its RUNNING at `t`."""
        self.summary.started += 1
        return Change(c.id, c.state, S.RUNNING, None, at=t, fields={"session_id": self.session_id})

    def _ranks(self) -> int:
        return sum(c.ranks_per_node * c.num_nodes for c, _, _ in self.running.values())

    def _handle(self, events: list[Event]) -> None:
        out: list[Change] = []
        home = self.standbys.home
        home_name = None if home is None else self.pool.names[home]  # whose ends say how short tasks run
        for ev in events:
            kind = ev.get("ev")
            if kind not in ("exit", "error"):
                if kind == "cancelled" and (back := self.standbys.answered(int(ev["id"]), bool(ev.get("ok")))):
                    self._back([back])
                continue
            jid = int(ev["id"])
            te = ev.get("t")
            end = float(te) if te else None  # when the task ended, read once: four uses below
            entry = self.running.pop(jid, None)
            if entry is None and (sb := self.standbys.left(jid)) is not None:
                t = sb[2] if end is None else end  # refused before it could stand by: it started and failed
                entry = (sb[0], None, t)
                out.append(self._started(sb[0], t))
            if entry is not None and (p := entry[1]) is not None:
                self.pool.release(p)
                if home_name is not None and p.nodes[0] == home_name and end is not None:
                    self.quick += 0.1 * (end - entry[2] - self.quick)
            nxt = ev.get("next")
            if nxt is not None and (run := self._succeed(int(nxt), time.time() if end is None else end)):
                out.append(run)  # after the end gave its cores back: the successor takes one of them
            if entry is None:
                continue
            c = entry[0]
            self.ended += 1
            took = 0.0 if end is None else end - entry[2]
            # the first end is the estimate: averaged up from zero, one end in 50 said the tasks ran 50 times
            # shorter than they do, and every standby waiting since the fill was stale
            self.run_s = took if self.ended == 1 else self.run_s + 0.02 * (took - self.run_s)
            if jid in self.user_killed:
                self.user_killed.discard(jid)
                continue  # already USER_KILLED in the DB; the session lets go of it at exit
            changes, to_pool, full = self.runner.outcome(c, ev, self.stop_reason if jid in self.stopping_ids
                                                         else None, pool=not self.stopping)
            if full is not None:
                self.fault(full)
            out += changes
            if to_pool is not None:
                self.writer.put(out)
                out = []
                self.transitions.submit(jid, to_pool)
        if out:
            self.writer.put(out)

