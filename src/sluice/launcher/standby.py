"""Standby tasks: jobs queued on a node's spawner ahead of the ends that will free their cores.

A standby is spawned but held by its node's spawner (spawn.py on this node, agent.py on the others, or the
simulated agent): the moment one of that node's tasks ends, the spawner starts the first standby in its place,
and the end's event names it ("next"). The launcher's loop is then off the path from one task to the next; it
only records the hand-over and queues the next standby when it gets round to it.

Two kinds of node stand by:
- this node (LocalSpawner), while its tasks end within a few ms of starting (STANDBY_BELOW_S) and every core is
  busy: up to one standby per task running. The loop's hand-over (~0.27 ms a task, waiting on the GIL and the
  loop's other work) was the real spawn path's ceiling. A standby not started within STANDBY_MAX_WAIT_S means
  tasks run long now: all are taken back, and the loop starts them until tasks are short again.
- a node agent (real or simulated): as many per node as its tasks are expected to end in STANDBY_AHEAD_S, at
  most one per core (until a task has ended, the time since the launcher started bounds their run time from
  below). At 1,024 nodes x 64 cores the loop refills at most ~32-38,000 cores a second, and 10 s jobs that
  started together end in waves of 40-51,000 a second: a freed core waited 150-170 ms on average for its next
  job, 1.5% of the slots' time. With a standby for each task, a wave hands over without the loop. Standbys
  count among the jobs a launcher holds (source.py): a queue of them is no more than it held before.

A standby is taken back (recall) by an urgent claim, a user's kill, the launcher's stop, a core free elsewhere
while no job is left to start, or a wait longer than its node's tasks run. This node's spawner answers at
once; an agent answers by a message, and until then the job is neither queued nor back with the launcher
(`recalled`): its answer says it was taken back, or the end naming it as "next" came first.

Bookkeeping only: `Starts` (starts.py) decides when, and turns hand-overs into state changes.
"""

from __future__ import annotations

from collections import deque
from itertools import islice
from typing import TYPE_CHECKING

from sluice.api.claims import Claimed
from sluice.launcher.packing import NodePool, Placement

if TYPE_CHECKING:
    from sluice.launcher.runner import Runner

STANDBY_BELOW_S = 0.05
"""This node's tasks stand by only while they run shorter than this on average: for longer ones the loop's
hand-over is under 1% of a task's turn, and a standby could wait long for a core."""
STANDBY_MAX_WAIT_S = 0.5
STANDBY_AHEAD_S = 10.0
"""An agent's node holds as many standbys as it has tasks ending in this time."""

Entry = tuple[Claimed, int, float]  # the claim, its node's pool index, when it was queued


class Standbys:
    """The standby jobs of one launcher, by node."""

    def __init__(self, pool: NodePool, runner: Runner | None, *, home: int | None, agents: bool) -> None:
        """`home`: the pool index of this node where its own spawner takes standbys (None: it does not);
        `agents`: whether the other nodes' agents do."""
        self.pool, self.runner, self.home = pool, runner, home
        n = len(pool.names)
        self.cores = [pool.total_at(i) if agents and i != home else 0 for i in range(n)]  # 0: no agent's
        self.share = 0.0  # of an agent's cores that may have a standby (at least one): set_pace
        self.queued: dict[int, Entry] = {}  # job -> entry: waiting on their nodes, oldest first
        self.recalled: dict[int, Entry] = {}  # asked back from an agent, its answer not in yet
        self.at = [0] * n  # per node: standbys queued or recalled
        self.short: deque[int] = deque()  # agents' nodes with every core busy that may take more standbys
        self._listed = bytearray(n)
        self.taken_back = 0  # recalls so far (each is a message to an agent, and the job's turn again)

    def __len__(self) -> int:
        return len(self.queued) + len(self.recalled)

    def __contains__(self, job_id: int) -> bool:
        return job_id in self.queued or job_id in self.recalled

    def ids(self) -> list[int]:
        return [*self.queued, *self.recalled]

    def set_pace(self, run_s: float) -> None:
        """How long tasks run (s, at least): an agent's node takes a standby for each of its tasks expected to
        end within STANDBY_AHEAD_S."""
        self.share = min(1.0, STANDBY_AHEAD_S / max(run_s, 1e-6))

    def depth(self, i: int) -> int:
        """How many standbys node `i` may hold (0: it is no agent's)."""
        cores = self.cores[i]
        return max(1, int(cores * self.share)) if cores else 0

    def full(self, i: int) -> None:
        """Node `i`'s cores are all busy now: an agent's node is due its standbys."""
        if self.at[i] < self.depth(i) and not self._listed[i]:
            self._listed[i] = 1
            self.short.append(i)

    def fill(self, pending: deque[Claimed], now: float, deadline: float | None, *, local_tasks: int,
             quick: float, wait_s: float) -> None:
        """Queue the jobs at the front of `pending` as standbys, while they are one-core jobs: on this node, one
        per task running (while tasks are short); on the agents' busy nodes, up to their depth. `wait_s`: how
        long a standby may wait for its start (a job that could not finish before `deadline` after waiting
        that long is left for the loop)."""
        pool, at = self.pool, self.at
        home = self.home
        if home is not None and quick < STANDBY_BELOW_S and not pool.free_at(home):
            waiting = at[home]  # each end takes one: no more than there are tasks to end
            room = min(pool.total_at(home), local_tasks - waiting) - waiting
            while room > 0 and pending and self._take(pending, home, now, deadline, STANDBY_MAX_WAIT_S):
                room -= 1
        short, depth = self.short, self.depth
        while short and pending:
            i = short[0]
            if pool.free_at(i):  # the loop starts jobs there itself; the node is listed again once full
                short.popleft()
                self._listed[i] = 0
                continue
            while at[i] < depth(i):
                if not pending or not self._take(pending, i, now, deadline, wait_s):
                    return
            short.popleft()
            self._listed[i] = 0

    def _take(self, pending: deque[Claimed], i: int, now: float, deadline: float | None, wait_s: float) -> bool:
        """Queue pending[0] on node `i` (False: it is not a one-core job that may wait there)."""
        c = pending[0]
        if c.num_nodes != 1 or c.ranks_per_node * c.threads_per_rank != 1 or c.gpus_per_rank \
                or (deadline is not None and c.wall_time_min and now + wait_s + c.wall_time_min * 60 > deadline):
            return False  # the loop's own way for it, in its turn
        pending.popleft()
        assert self.runner is not None  # none can stand by without one
        self.runner.start(c, Placement(c.id, (self.pool.names[i],), 1, {}), standby=True)
        self.queued[c.id] = (c, i, now)
        self.at[i] += 1
        return True

    def left(self, job_id: int) -> Entry | None:
        """The standby `job_id` is off its node's queue: it started in the place of a task that ended, or its
        spawner refused it (None: no standby of ours)."""
        entry = self.queued.pop(job_id, None) or self.recalled.pop(job_id, None)
        if entry is not None:
            self.at[entry[1]] -= 1
        return entry

    def recall(self, job_ids: list[int]) -> list[Claimed]:
        """Take these queued standbys back: those this node's spawner gave back at once, in order. An agent's
        answer comes later (`answered`); one that had started is handed over as usual."""
        back: list[Claimed] = []
        for jid in job_ids:
            entry = self.queued.pop(jid, None)
            if entry is None:
                continue
            self.taken_back += 1
            assert self.runner is not None
            taken = self.runner.cancel(jid)
            if taken:
                self.at[entry[1]] -= 1
                back.append(entry[0])
            else:  # asked (an agent), or it started: its hand-over is on its way
                self.recalled[jid] = entry
        return back

    def oldest(self, n: int) -> list[int]:
        """The `n` standbys queued longest."""
        return list(islice(self.queued, n))

    def stale(self, now: float, wait_s: float) -> tuple[list[int], bool]:
        """The standbys that waited too long, oldest first (this node's: STANDBY_MAX_WAIT_S; an agent's:
        `wait_s`), and whether one of them is this node's."""
        out: list[int] = []
        home_stale = False
        for jid, (_c, i, t) in self.queued.items():
            if now - t <= (STANDBY_MAX_WAIT_S if i == self.home else wait_s):
                break
            out.append(jid)
            home_stale = home_stale or i == self.home
        return out, home_stale

    def answered(self, job_id: int, ok: bool) -> Claimed | None:
        """An agent's answer to a recall: the job, if it was taken back (else it started, and was handed over
        before this answer came)."""
        entry = self.recalled.pop(job_id, None) if ok else None
        if entry is None:
            return None
        self.at[entry[1]] -= 1
        return entry[0]
