"""The launcher's claiming thread: a buffer of claimed runnable jobs, and work for the transition pool.

It knows the workspace, its session, the selection and the options, and reads the launcher it feeds only
through `Progress` (a few read-only numbers and questions). It hands work over through its `buffer` (a deque:
it appends claimed jobs in claim order, the main loop pops them from the left) and through callbacks:
`prepare` (make the jobs' directories, off the main loop), `process` (a job for the transition pool), `wake`
(new work is there) and `on_fatal` (the disk is full: it stops claiming, and the launcher must stop).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from sluice.api import Workspace, claims, lookups, sessions
from sluice.api.claims import Claimed, Selection
from sluice.errors import one_line
from sluice.launcher.faults import is_full, reason
from sluice.launcher.options import Options
from sluice.states import PROCESSABLE, S

log = logging.getLogger("sluice.launcher")


class Progress(Protocol):
    """What the source reads of the launcher it feeds; it never changes any of it."""

    @property
    def ended(self) -> int:
        """Running jobs that have ended so far (the pace claims follow)."""

    @property
    def run_s(self) -> float:
        """How long tasks run, a moving average (s)."""

    @property
    def started(self) -> int:
        """Jobs started so far (against --max-jobs)."""

    @property
    def stopping(self) -> bool: ...

    def waiting(self) -> int:
        """Claimed jobs taken from the buffer that have not started yet."""

    def busy(self) -> bool:
        """Anything running, waiting to start or in the transition pool."""

    def pool_room(self) -> int:
        """How many more jobs the transition pool takes now."""

    def free_slots(self) -> int:
        """Cores free in the allocation now."""

    def settled(self) -> bool:
        """Nothing claimed is left anywhere, and every change handed over so far is written."""

    def time_left_min(self) -> float | None:
        """Minutes left in the allocation (None: no end)."""


class Source(threading.Thread):
    """Keeps a buffer of claimed runnable jobs and feeds processable jobs to the transition pool."""

    def __init__(self, ws: Workspace, session_id: int, actor: str, selection: Selection, opts: Options,
                 capacity: int, progress: Progress, *, prepare: Callable[[list[Claimed]], None],
                 process: Callable[[int, str], None], wake: Callable[[], None],
                 on_fatal: Callable[[str], None]) -> None:
        super().__init__(name="sluice-source", daemon=True)
        self.ws = ws
        self.session_id = session_id
        self.actor = actor
        self.selection = selection
        self.opts = opts
        self.capacity = capacity
        self.progress = progress
        self.prepare = prepare
        self.process = process
        self.wake = wake
        self.on_fatal = on_fatal
        self.buffer: deque[Claimed] = deque()
        self.urgent: deque[Claimed] = deque()
        """Claimed jobs with a priority or a deadline: they start before everything already waiting."""
        self.cv = threading.Condition()
        self.stopped = False
        self.idle_since: float | None = None
        self.nothing_left = False
        self.came_up_empty = False  # the last claim found nothing to claim
        self.skip: set[int] = set()
        self.next_claim = 0.0
        self.rate = 0.0  # jobs ending per second, measured (starting, until the first end)
        self.known = False  # a job has ended: the rate is of ends
        self._mark = (time.monotonic(), 0)
        self.after: dict[str, int] = {}  # state -> the highest id claimed so far (where the next claim starts)

    def target(self) -> int:
        """How many claimed jobs to hold: enough for the free slots (up to a quarter of the allocation) or for
        `buffer_s` seconds of work at the pace jobs end (up to the whole allocation), whichever is more, plus a
        margin as large as the allocation up to a claim; at least twice the slots of a small allocation.

        So the main loop never waits for a claim and an allocation fills in a few claims, yet a launcher of
        hour-long jobs holds a few, not hundreds that other launchers could be running. Up to the whole
        allocation: 10 s jobs on 65,536 slots end in waves of ~25,000 a second, and a buffer of half of it ran
        dry in each (every claimed job is ~1.5 KB of Python objects: 100 MB then). 4 s and up to 2,000 a claim
        ran 10,000 no-op jobs on 2 cores a few % faster than 1 s and 500 in interleaved runs (bench/README.md)."""
        cap, batch = self.capacity, self.opts.claim_batch
        most = max(batch, cap // 4)
        free = min(self.progress.free_slots(), most)
        if self.known:
            room = max(batch, cap)
        else:  # a wave is at most the allocation (the fill of 2 slots is no pace of hundreds), claimed for once
            room = 0 if free else cap  # it is full: claims ahead during the fill competed with its starts
        ahead = min(int(self.rate * self.opts.buffer_s), room)
        return max(min(2 * cap, most), max(free, ahead) + min(cap, batch))  # a small one: twice its slots

    def _measure(self, now: float) -> None:
        t, n = self._mark
        # the pace at which slots free up; until the first end, the pace of starts: jobs that started together
        # may end together, and the first wave of ends of 10 s jobs on 65,536 slots (~25,000 a second) met a
        # quarter of the allocation claimed, its restarts 83-96% of the slots for 2-3 s
        ended = self.progress.ended
        known = ended > 0
        if known and not self.known:  # the guess from starts held at most a wave of the whole allocation
            self.rate = min(self.rate, self.capacity / self.opts.buffer_s)
            self.known = True
        count = ended if known else self.progress.started
        # re-estimate every 0.25 s, or sooner once a window saw a few rounds of jobs (a fast start ramps
        # up in tens of milliseconds instead of claiming a handful at a time for a quarter second)
        if now - t >= 0.25 or (now - t >= 0.02 and count - n >= 4 * self.capacity):
            # a lull lowers the estimate gradually, not at once: jobs that started together end together, one
            # run time later (10 s jobs on 65,536 slots end ~25,000 a second for 2-3 s, then none for 7 s,
            # and a pace forgotten in the lull met each wave with a fraction of it claimed). Halved every run
            # time, at least 0.5 s and at most 30 s (30 s while no run time is known): after a wave of
            # hour-long jobs, claims held for the next one an hour later would be jobs other launchers could
            # run now
            half = min(30.0, max(0.5, self.progress.run_s)) if known else 30.0
            self.rate = max((count - n) / (now - t), 0.5 ** ((now - t) / half) * self.rate)
            self._mark = (now, count)

    def level(self) -> int:
        return len(self.buffer) + len(self.urgent) + self.progress.waiting()

    def want(self) -> int:
        cap = self.target()
        if self.opts.max_jobs is not None:
            cap = min(cap, self.opts.max_jobs - self.progress.started)
        return max(0, cap - self.level())

    def low(self) -> bool:
        """Time to claim: the buffer is half empty, or short of a full batch (claims come in full batches of
        adjacent ids; a big allocation's buffer fills up between waves of ends, not during them)."""
        t = self.target()
        return self.level() <= max(t // 2, t - self.opts.claim_batch)

    def nudge(self) -> None:
        """From the consumer: wake the thread if the buffer runs low and a claim is due."""
        if self.low() and time.monotonic() >= self.next_claim:
            self.poke()

    def exclude(self, job_id: int) -> None:
        """Never buffer this job again (it can never fit this allocation)."""
        self.skip.add(job_id)

    def run(self) -> None:
        ws, opts, progress = self.ws, self.opts, self.progress
        next_recover = time.monotonic() + opts.heartbeat_s
        next_processable = 0.0
        while not self.stopped:
            got = 0
            try:
                now = time.monotonic()
                self._measure(now)
                n = self.want()
                if n > 0 and self.low() and not progress.stopping and now >= self.next_claim:
                    # what is missing, in claims of at most four batches, again at once while still short: a
                    # claim of all 64,000 a wave of ends wanted took 2.5 s under load, and the loop had nothing
                    # to start until its last row was read (8,000 take ~0.3 s)
                    k = min(n, 4 * opts.claim_batch)
                    got = ws.retry(lambda k=k: self._claim(k), attempts=20)  # type: ignore[misc]
                    # nothing to claim: new work appears at human speed, and an empty write transaction
                    # (the database lock, a commit) per main-loop wake-up would tax every running job
                    self.next_claim = 0.0 if got else now + 0.25
                    self.came_up_empty = not got
                now = time.monotonic()
                if progress.pool_room() > 0 and not progress.stopping and now >= next_processable:
                    took = ws.retry(lambda: self._claim_processable(progress.pool_room()), attempts=20)
                    next_processable = now + (0.0 if took else 0.5)  # an empty write transaction is not free
                    got += took
                if not got and progress.settled():
                    self.nothing_left = ws.retry(lambda: lookups.nothing_left(ws, self.selection), attempts=20)
                    if self.nothing_left:
                        self.wake()
                if time.monotonic() >= next_recover:
                    sessions.recover(ws, stale_after=opts.stale_after_s, actor=self.actor, exclude=self.session_id)
                    next_recover = time.monotonic() + opts.heartbeat_s
            except Exception as e:
                if is_full(e):  # retrying cannot help, and every claim would say so again
                    self.on_fatal(reason(e))
                    return
                log.warning("claiming failed, will retry: %s", one_line(e, 200))
            if got:
                self.idle_since = None
                self.wake()
            elif progress.busy():
                self.idle_since = None  # busy is not idle: the idle timeout counts from when work ran out
            elif self.idle_since is None:
                self.idle_since = time.monotonic()
            with self.cv:
                if not self.stopped and not (got and self.low()):  # still short: claim again at once
                    self.cv.wait(0.01 if got else 0.25)

    def _claim(self, n: int) -> int:
        got = claims.claim(self.ws, self.session_id, self.selection, n, max_wall_min=self.progress.time_left_min(),
                           after=self.after)
        after = self.after
        for c in got:
            if c.id > after.get(c.state, 0):
                after[c.state] = c.id
        fresh = [c for c in got if c.id not in self.skip]
        self.prepare(fresh)  # on a full disk these are never started: they go back when the session ends
        if fresh and (fresh[0].priority or fresh[0].deadline is not None):  # a claim returns the urgent first
            urgent = [c for c in fresh if c.priority or c.deadline is not None]
            with self.cv:
                self.urgent.extend(urgent)
            fresh = fresh[len(urgent):]
        self.buffer.extend(fresh)
        return len(got)

    def _claim_processable(self, n: int) -> int:
        # with `[transfers] where = "service"` the service stages jobs in on the login node: a compute node
        # without network never takes a READY job, only jobs whose data is in place
        states = PROCESSABLE - {S.READY} if self.ws.config.transfers.where == "service" else PROCESSABLE
        if not lookups.available(self.ws, self.selection, states):  # a read: no wait behind the writer
            return 0
        got = claims.claim(self.ws, self.session_id, self.selection, n, states=states)
        for c in got:
            self.process(c.id, c.state)
        return len(got)

    def poke(self) -> None:
        with self.cv:
            self.cv.notify()

    def stop(self, wait: bool = True) -> None:
        with self.cv:
            self.stopped = True
            self.cv.notify()
        if wait:
            self.join()
