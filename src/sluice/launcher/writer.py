"""The launcher's writer thread: state changes in batches, heartbeats, and jobs that users killed.

It knows the workspace, its session and a handful of callbacks, nothing of the launcher that feeds it: changes
come in through `put` (a queue), and it answers through `on_written` (what took effect), `on_killed` (running
jobs a user killed meanwhile) and `on_fatal` (the disk is full, or the database gone for good: the launcher
must stop). After a fatal fault it writes nothing more until `stop()`, which tries once to write everything
held back; what still cannot be written stays undone, and its jobs stay with the session until the next
launcher or the service recovers them: nothing is lost, nothing marked done that did not finish.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from sluice.api import Workspace, lookups, sessions
from sluice.api.transitions import write_changes
from sluice.launcher.faults import again, reason
from sluice.states import Change

log = logging.getLogger("sluice.launcher")

MAX_BATCH = 5000
"""Changes per transaction at most: a launcher of 65,536 slots queued 50,000 in one 50 ms window, and the one
transaction writing them (2 s on SQLite) held the write lock that the claiming thread waited for."""


class Writer(threading.Thread):
    """Applies queued state changes in batches (one transaction per `flush_interval`); heartbeats the session
    every `heartbeat_s`; once a second asks which of `running_ids()` a user has killed."""

    def __init__(self, ws: Workspace, session_id: int, actor: str, *, flush_interval: float, heartbeat_s: float,
                 running_ids: Callable[[], list[int]], on_written: Callable[[list[Change]], None],
                 on_killed: Callable[[list[int]], None], on_fatal: Callable[[str], None]) -> None:
        super().__init__(name="sluice-writer", daemon=True)
        self.ws = ws
        self.session_id = session_id
        self.actor = actor
        self.flush_interval = flush_interval
        self.heartbeat_s = heartbeat_s
        self.running_ids = running_ids
        self.on_written = on_written
        self.on_killed = on_killed
        self.on_fatal = on_fatal
        self.q: queue.SimpleQueue[list[Change] | None] = queue.SimpleQueue()
        self.error: BaseException | None = None
        self.hurry = threading.Event()
        self.carry: list[Change] = []  # changes taken from the queue, to write in the next transaction
        self._count_lock = threading.Lock()
        self._put_n = 0
        self._written_n = 0  # only this thread adds to it
        self.peak = 0  # the largest backlog seen

    def idle(self) -> bool:
        """The database shows every change handed over so far (counted before it is queued, and as written
        only once its transaction is in: never idle while a batch is in hand)."""
        return self.backlog() == 0

    def put(self, changes: list[Change]) -> None:
        with self._count_lock:  # the main loop and the transition pool both put
            self._put_n += len(changes)
            self.peak = max(self.peak, self._put_n - self._written_n)
        self.q.put(changes)

    def backlog(self) -> int:
        """Changes handed over that the database does not show yet."""
        return self._put_n - self._written_n

    def _take(self, flush: float) -> tuple[list[Change], bool]:
        """The next batch (what was carried over first, at most MAX_BATCH changes), and whether stop() came."""
        batch, self.carry = self.carry, []
        stopping = False
        try:
            if not batch:
                item = self.q.get(timeout=flush)
                if item is None:
                    return batch, True
                batch += item
                # Sleep through the batching window rather than wake on every put: two thread
                # switches per job were a fifth of the launcher's CPU. stop() cuts the nap short.
                self.hurry.wait(flush)
            while len(batch) < MAX_BATCH:
                item = self.q.get_nowait()
                if item is None:
                    stopping = True
                    break
                batch += item
        except queue.Empty:
            pass
        if len(batch) > MAX_BATCH:  # the rest next, in order, in a transaction of its own
            batch, self.carry = batch[:MAX_BATCH], batch[MAX_BATCH:]
        return batch, stopping

    def run(self) -> None:
        ws, flush = self.ws, self.flush_interval
        next_beat = next_kill_check = time.monotonic()
        stopping = False
        while not stopping or self.carry:
            batch, stop = self._take(flush)
            stopping = stopping or stop
            try:
                if batch:
                    done = ws.retry(lambda b=batch: write_changes(ws, b, self.actor),  # type: ignore[misc]
                                    attempts=120)
                    self._written_n += len(batch)
                    batch = []
                    self.on_written(done)
                now = time.monotonic()
                if now >= next_beat:
                    ws.retry(lambda: sessions.heartbeat(ws, self.session_id), attempts=120)
                    next_beat = now + self.heartbeat_s
                if now >= next_kill_check:
                    ids = self.running_ids()
                    if ids:
                        dead = lookups.killed(ws, ids)
                        if dead:
                            self.on_killed(dead)
                        # once a second, or less often when tens of thousands run (their ids are gathered each time)
                        next_kill_check = now + max(1.0, len(ids) / 20_000)
            except BaseException as e:  # a full disk, a database gone for minutes: stop, jobs are recovered
                self.error = e
                self.on_fatal(reason(e))
                batch += self.carry
                self.carry = []
                self._hold(batch, e, more=not stopping)
                return

    def _hold(self, held: list[Change], e: BaseException, *, more: bool) -> None:
        """After a fatal fault: keep what still comes in until stop(), then try once to write it all."""
        if more:
            while (item := self.q.get()) is not None:
                held += item
            if held:
                try:
                    self.on_written(write_changes(self.ws, held, self.actor))
                    return
                except Exception as later:
                    e = later
        if held:
            log.warning("%d state changes not written (%s): their jobs stay with launcher session %s until the "
                        "next launcher or the service recovers them", len(held), again(e), self.session_id)

    def stop(self) -> None:
        self.q.put(None)
        self.hurry.set()
        self.join()
