"""The pilot: keeps every core of an allocation busy with the campaign's runnable jobs.

Three threads keep the database out of the hot loop:
- the *source* claims runnable jobs in batches of adjacent ids (one atomic statement each) into a buffer, and
  hands stage-in/preprocess work to the transition pool;
- the *writer* applies state changes in batches (one transaction per ~50 ms), heartbeats the session and
  notices jobs a user killed;
- the *main loop* places buffered jobs on free cores and hands them to the spawner (spawn.py: a thread per
  running task starts it and waits for it), whose eventfd tells the loop's epoll when tasks have ended.

    Launcher(ws, Options(job_mode="serial", idle_timeout=5)).run()
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import signal
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from select import EPOLLIN, epoll
from typing import Any

from sluice import environ, states
from sluice.api import Workspace, claims, sessions
from sluice.api.claims import Claimed, Selection
from sluice.api.transitions import write_changes
from sluice.errors import one_line
from sluice.launcher import transitions
from sluice.launcher.latency import prompt_wakeups
from sluice.launcher.mpi import LauncherNotFound, MPILauncher, choose
from sluice.launcher.nodes import Allocation, discover
from sluice.launcher.packing import NodePool, Request
from sluice.launcher.runner import Runner
from sluice.launcher.spawn import Event
from sluice.states import PROCESSABLE, Change, S

log = logging.getLogger("sluice.launcher")


@dataclass
class Options:
    """What `sluice launcher` takes; every field has a sensible default."""

    job_mode: str = "serial"
    workflows: tuple[str, ...] = ()
    tags: tuple[tuple[str, str], ...] = ()
    max_jobs: int | None = None
    max_ranks: int | None = None
    wall_time_min: float | None = None
    idle_timeout: float = 10.0
    consume_all: bool = False
    claim_batch: int = 2000
    buffer_s: float = 4.0
    flush_interval: float = 0.05
    heartbeat_s: float = 10.0
    stale_after_s: float = 60.0
    end_margin_s: float | None = None
    kill_grace_s: float = 10.0
    launch_interval_s: float = 0.0
    max_launches: int | None = None
    workers: int = 2
    status: bool = True
    mpi_launcher: str | None = None
    batch_job_id: int | None = None
    queue: str | None = None
    machine: str | None = None
    loop_slice_us: int = 100  # the CPU slice the main loop asks for (latency.py); 0: the kernel's default


@dataclass
class Summary:
    session_id: int = 0
    started: int = 0
    finished: int = 0
    failed: int = 0
    retried: int = 0
    seconds: float = 0.0
    reason: str = ""
    counts: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        rate = self.started / self.seconds if self.seconds > 0 else 0.0
        return (f"launcher {self.session_id}: {self.started} started, {self.finished} finished, {self.failed} failed, "
                f"{self.retried} to retry in {self.seconds:.1f} s ({rate:.0f} jobs/s); stopped: {self.reason}")


class Writer(threading.Thread):
    """Applies queued state changes in batches; heartbeats; reports jobs killed by users."""

    def __init__(self, la: Launcher) -> None:
        super().__init__(name="sluice-writer", daemon=True)
        self.la = la
        self.q: queue.SimpleQueue[list[Change] | None] = queue.SimpleQueue()
        self.error: BaseException | None = None
        self.writing = False
        self.hurry = threading.Event()

    def idle(self) -> bool:
        """Nothing queued and nothing being written: the database shows every change handed over so far."""
        return not self.writing and self.q.empty()

    def put(self, changes: list[Change]) -> None:
        self.q.put(changes)

    def run(self) -> None:
        la = self.la
        next_beat = next_kill_check = time.monotonic()
        stopping = False
        while not stopping:
            batch: list[Change] = []
            try:
                item = self.q.get(timeout=la.opts.flush_interval)
                if item is None:
                    stopping = True
                else:
                    batch += item
                    # Sleep through the batching window rather than wake on every put: two thread
                    # switches per job were a fifth of the launcher's CPU. stop() cuts the nap short.
                    self.hurry.wait(la.opts.flush_interval)
                    while True:
                        item = self.q.get_nowait()
                        if item is None:
                            stopping = True
                            break
                        batch += item
            except queue.Empty:
                pass
            try:
                if batch:
                    self.writing = True
                    try:
                        la.ws.retry(lambda b=batch: self._write(b), attempts=120)  # type: ignore[misc]
                    finally:
                        self.writing = False
                    if la.drained():  # the last changes are in: let the source see whether work is left
                        la.source.poke()
                now = time.monotonic()
                if now >= next_beat:
                    la.ws.retry(lambda: sessions.heartbeat(la.ws, la.session_id), attempts=120)
                    next_beat = now + la.opts.heartbeat_s
                if now >= next_kill_check and la.running:
                    ids = list(la.running)
                    dead = claims.killed(la.ws, ids)
                    if dead:
                        la.to_kill.put(dead)
                        la.wake()
                    next_kill_check = now + 1.0
            except BaseException as e:  # a database gone for minutes: stop the launcher, jobs are recovered
                self.error = e
                la.stop(f"database error: {one_line(e, 200)}")
                return

    def _write(self, batch: list[Change]) -> None:
        self.la.count(write_changes(self.la.ws, batch, self.la.actor))

    def stop(self) -> None:
        self.q.put(None)
        self.hurry.set()
        self.join()


class Source(threading.Thread):
    """Keeps a buffer of claimed runnable jobs and feeds processable jobs to the transition pool."""

    def __init__(self, la: Launcher) -> None:
        super().__init__(name="sluice-source", daemon=True)
        self.la = la
        self.buffer: deque[Claimed] = deque()
        self.cv = threading.Condition()
        self.stopped = False
        self.idle_since: float | None = None
        self.nothing_left = False
        self.skip: set[int] = set()
        self.next_claim = 0.0
        self.rate = 0.0  # jobs ending per second, measured
        self._mark = (time.monotonic(), 0)

    def target(self) -> int:
        """How many claimed jobs to hold: about `buffer_s` seconds of work at the pace jobs end, so the main loop
        never waits for a claim, yet a launcher of hour-long jobs holds a few, not hundreds that other launchers
        could be running. 4 s and up to 2,000 a claim (fewer write transactions) ran 10,000 no-op jobs a few %
        faster than 1 s and 500 in interleaved runs (bench/README.md)."""
        la = self.la
        return max(2 * la.capacity, min(la.opts.claim_batch, int(self.rate * la.opts.buffer_s)))

    def _measure(self, now: float) -> None:
        t, n = self._mark
        # the pace at which slots free up, not launches: the first launches only fill the empty slots (with
        # hour-long jobs, 2 starts in the first quarter second are no rate at all)
        ended = self.la.ended
        # re-estimate every 0.25 s, or sooner once a window saw a few rounds of jobs (a fast start ramps
        # up in tens of milliseconds instead of claiming a handful at a time for a quarter second)
        if now - t >= 0.25 or (now - t >= 0.02 and ended - n >= 4 * self.la.capacity):
            # a lull (all slots busy with long jobs) lowers the estimate gradually, not at once
            self.rate = max((ended - n) / (now - t), 0.7 * self.rate)
            self._mark = (now, ended)

    def level(self) -> int:
        return len(self.buffer) + len(self.la.pending)

    def want(self) -> int:
        la = self.la
        cap = self.target()
        if la.opts.max_jobs is not None:
            cap = min(cap, la.opts.max_jobs - la.summary.started)
        return max(0, cap - self.level())

    def low(self) -> bool:
        """Time to claim: the buffer is half empty (claims come in full batches of adjacent ids)."""
        return self.level() <= self.target() // 2

    def run(self) -> None:
        la = self.la
        next_recover = time.monotonic() + la.opts.heartbeat_s
        next_processable = 0.0
        while not self.stopped:
            got = 0
            try:
                now = time.monotonic()
                self._measure(now)
                n = self.want()
                if n > 0 and self.low() and not la.stopping and now >= self.next_claim:
                    k = min(n, la.opts.claim_batch)
                    got = la.ws.retry(lambda k=k: self._claim(k), attempts=20)  # type: ignore[misc]
                    # nothing to claim: new work appears at human speed, and an empty write transaction
                    # (the database lock, a commit) per main-loop wake-up would tax every running job
                    self.next_claim = 0.0 if got else now + 0.25
                now = time.monotonic()
                if la.pool_room() > 0 and not la.stopping and now >= next_processable:
                    took = la.ws.retry(lambda: self._claim_processable(la.pool_room()), attempts=20)
                    next_processable = now + (0.0 if took else 0.5)  # an empty write transaction is not free
                    got += took
                if not got and la.drained() and la.writer.idle():
                    self.nothing_left = la.ws.retry(lambda: claims.nothing_left(la.ws, la.selection), attempts=20)
                    if self.nothing_left:
                        la.wake()
                if time.monotonic() >= next_recover:
                    sessions.recover(la.ws, stale_after=la.opts.stale_after_s, actor=la.actor, exclude=la.session_id)
                    next_recover = time.monotonic() + la.opts.heartbeat_s
            except Exception as e:
                log.warning("claiming failed, will retry: %s", one_line(e, 200))
            if got:
                self.idle_since = None
                la.wake()
            elif la.running or la.pending or la.inflight:
                self.idle_since = None  # busy is not idle: the idle timeout counts from when work ran out
            elif self.idle_since is None:
                self.idle_since = time.monotonic()
            with self.cv:
                if not self.stopped:
                    self.cv.wait(0.01 if got else 0.25)

    def _claim(self, n: int) -> int:
        la = self.la
        left = la.time_left_min()
        got = claims.claim(la.ws, la.session_id, la.selection, n, max_wall_min=left)
        fresh = [c for c in got if c.id not in self.skip]
        la.runner.prepare(fresh)
        self.buffer.extend(fresh)
        return len(got)

    def _claim_processable(self, n: int) -> int:
        la = self.la
        got = claims.claim(la.ws, la.session_id, la.selection, n, states=PROCESSABLE)
        for c in got:
            la.submit_processing(c.id, c.state)
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


class Launcher:
    """One launcher session. `run()` returns when the work, the allocation or the patience runs out."""

    def __init__(self, ws: Workspace, opts: Options | None = None, alloc: Allocation | None = None) -> None:
        self.ws = ws
        self.opts = opts or Options()
        if self.opts.job_mode not in ("serial", "mpi"):
            raise ValueError(f"job mode must be serial or mpi, not {self.opts.job_mode!r}")
        self.alloc = alloc or discover(wall_time_min=self.opts.wall_time_min)
        self.pool = NodePool(self.alloc.nodes)
        self.running: dict[int, tuple[Claimed, Any, float]] = {}
        self.pending: deque[Claimed] = deque()
        self.stopping_ids: set[int] = set()
        self.user_killed: set[int] = set()
        self.to_kill: queue.SimpleQueue[list[int]] = queue.SimpleQueue()
        self.summary = Summary()
        self.stop_reason: str | None = None
        self.inflight = 0
        self.ended = 0  # running jobs that ended (exited, or failed to spawn): the claim size follows their pace
        self._lock = threading.Lock()
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)
        nodes = self.alloc.nodes
        self.selection = Selection(
            workflows=tuple(self.opts.workflows), tags=tuple(self.opts.tags),
            max_nodes=len(nodes) if self.opts.job_mode == "mpi" else 1,
            max_cores=max((n.cores for n in nodes), default=1), max_gpus=max((len(n.gpus) for n in nodes), default=0),
            serial_only=self.opts.job_mode == "serial", queue=self.opts.queue or os.environ.get(environ.QUEUE),
            machine=self.opts.machine or ws.config.machine)
        self.capacity = sum(n.cores for n in nodes)
        if self.opts.max_ranks:
            self.capacity = min(self.capacity, self.opts.max_ranks)
        self.session_id = 0
        self.actor = "launcher"
        self.source = Source(self)
        self.writer = Writer(self)
        self.processing = ThreadPoolExecutor(max_workers=self.opts.workers, thread_name_prefix="sluice-transition")

    # ---------------------------------------------------------------- helpers used by the threads
    @property
    def stopping(self) -> bool:
        return self.stop_reason is not None

    def stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        self.wake()

    def wake(self) -> None:
        try:
            os.write(self._w, b"x")
        except BlockingIOError:
            pass

    def margin(self) -> float:
        if self.opts.end_margin_s is not None:
            return self.opts.end_margin_s
        if self.alloc.end_time is None:
            return 0.0
        return min(120.0, max(1.0, 0.1 * (self.alloc.end_time - self.t0)))

    def deadline(self) -> float | None:
        return None if self.alloc.end_time is None else self.alloc.end_time - self.margin()

    def time_left_min(self) -> float | None:
        d = self.deadline()
        return None if d is None else max(0.0, (d - time.time()) / 60)

    def drained(self) -> bool:
        """Nothing claimed is running, waiting to start or in the transition pool."""
        return not (self.running or self.pending or self.source.buffer or self.inflight)

    def pool_room(self) -> int:
        return max(0, self.opts.workers * 4 - self.inflight)

    def count(self, done: list[Change]) -> None:
        s = self.summary
        for c in done:
            if c.to_state == S.JOB_FINISHED:
                s.finished += 1
            elif c.to_state == S.FAILED:
                s.failed += 1
            elif c.to_state == S.RESTART_READY:
                s.retried += 1

    def submit_processing(self, job_id: int, state: str) -> None:
        with self._lock:
            self.inflight += 1
        fut = self.processing.submit(transitions.process, self.ws, job_id, state)
        fut.add_done_callback(functools.partial(self._processed, job_id))

    def _processed(self, job_id: int, fut: Future[list[Change]]) -> None:
        with self._lock:
            self.inflight -= 1
        try:
            changes = fut.result()
        except Exception as e:  # a transient failure (DB, filesystem): give the job back for a later try
            log.warning("job %s: transition failed, will retry: %s", job_id, one_line(e))
            claims.unclaim(self.ws, self.session_id, [job_id])
            return
        if changes:
            self.writer.put(changes)
        self.source.poke()

    # ---------------------------------------------------------------- the main loop
    def run(self) -> Summary:
        self.t0 = time.time()
        mpi = self._mpi()
        self.session_id = sessions.start(self.ws, job_mode=self.opts.job_mode, batch_job_id=self.opts.batch_job_id,
                                         info={"nodes": [n.name for n in self.alloc.nodes],
                                               "end_time": self.alloc.end_time},
                                         stale_after=self.opts.stale_after_s)
        self.actor = f"launcher:{self.session_id}"
        self.summary.session_id = self.session_id
        self.runner = Runner(self.alloc, self.opts.job_mode, self.ws.path, self.ws.config.data_dir, mpi,
                             kill_grace=self.opts.kill_grace_s)
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)} \
            if threading.current_thread() is threading.main_thread() else {}
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

    def _mpi(self) -> MPILauncher | None:
        need = self.opts.job_mode == "mpi" or (self.alloc.kind != "local" and len(self.alloc.nodes) > 1)
        try:
            return choose(self.opts.mpi_launcher or self.alloc.kind)
        except (LauncherNotFound, ValueError) as e:
            if need:
                raise
            log.debug("no MPI launcher: %s", e)
            return None

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
                d = self.deadline()
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
                if self._finished():
                    self.stop("no more work" if self.source.nothing_left
                              else f"idle for {self.opts.idle_timeout:g} s")
                    return
                hint = self.runner.timeout_hint()
                timeout = 0.25 if hint is None else min(hint, 0.25)
                if self.opts.launch_interval_s and self.pending:
                    timeout = min(timeout, self.opts.launch_interval_s)
                for fd, _ in ep.poll(timeout):
                    if fd == self._r:
                        try:
                            os.read(self._r, 4096)
                        except BlockingIOError:
                            pass
                self._handle(self.runner.poll())
                if tty and now - last_status >= 1.0:
                    last_status = now
                    s = self.summary
                    el = max(1e-9, now - self.t0)
                    sys.stderr.write(f"\r\x1b[Krunning {len(self.running)} | done {s.finished} | "
                                     f"failed {s.failed} | retry {s.retried} | {s.started / el:.0f} jobs/s")
                    sys.stderr.flush()
        finally:
            ep.close()

    def _finished(self) -> bool:
        if self.running or self.inflight:
            return False
        if self.opts.max_jobs is not None and self.summary.started >= self.opts.max_jobs:
            return True  # a claim that raced the last start is given back at shutdown
        if self.pending or self.source.buffer:
            return False
        if self.source.nothing_left:
            return True
        idle = self.source.idle_since
        return (not self.opts.consume_all and idle is not None
                and time.monotonic() - idle >= self.opts.idle_timeout)

    def _take_kills(self) -> None:
        while True:
            try:
                ids = self.to_kill.get_nowait()
            except queue.Empty:
                return
            for j in ids:
                if j in self.running:
                    self.user_killed.add(j)
                    self.runner.kill(j)

    def _launch(self, now: float) -> bool:
        """Start what fits on the free cores, in claim order; a job that does not fit now waits at the front."""
        buf, pending = self.source.buffer, self.pending
        while buf and len(pending) < 4 * self.opts.claim_batch:
            pending.append(buf.popleft())
        if self.source.low() and time.monotonic() >= self.source.next_claim:
            self.source.poke()
        if not pending or self.pool.free_cores == 0:  # the common wake-up: nothing can start, no list work
            return False
        started: list[Change] = []
        waiting: list[Claimed] = []
        giveback: list[int] = []
        mode_mpi = self.opts.job_mode == "mpi"
        d = self.deadline()
        limit_procs = self.opts.max_launches if mode_mpi else None
        while pending:
            if (self.opts.max_jobs is not None and self.summary.started >= self.opts.max_jobs) \
                    or self.pool.free_cores == 0 or (limit_procs is not None and len(self.running) >= limit_procs) \
                    or (self.opts.max_ranks is not None and self._ranks() >= self.opts.max_ranks):
                break
            c = pending.popleft()
            req = Request(c.id, c.num_nodes, c.ranks_per_node, c.threads_per_rank, c.gpus_per_rank, c.wall_time_min)
            if d is not None and c.wall_time_min and now + c.wall_time_min * 60 > d:
                giveback.append(c.id)  # cannot finish before the allocation ends: another launcher may
                continue
            if not self.pool.fits_ever(req):
                giveback.append(c.id)
                self.source.skip.add(c.id)
                continue
            p = self.pool.place(req, exclusive=mode_mpi)
            if p is None:
                waiting.append(c)
                if len(waiting) > 64:  # nothing smaller behind it is likely to fit either
                    break
                continue
            self.runner.start(c, p)
            self.running[c.id] = (c, p, now)
            self.summary.started += 1
            started.append(Change(c.id, c.state, S.RUNNING, None, at=now, fields={"session_id": self.session_id}))
            if self.opts.launch_interval_s:
                break
        pending.extendleft(reversed(waiting))
        if started:
            self.writer.put(started)
        if giveback:
            claims.unclaim(self.ws, self.session_id, giveback)
        return bool(started)

    def _ranks(self) -> int:
        return sum(c.ranks_per_node * c.num_nodes for c, _, _ in self.running.values())

    def _handle(self, events: list[Event]) -> None:
        out: list[Change] = []
        for ev in events:
            kind = ev.get("ev")
            if kind not in ("exit", "error"):
                continue
            jid = int(ev["id"])
            entry = self.running.pop(jid, None)
            if entry is None:
                continue
            c, p, _t0 = entry
            self.pool.release(p)
            self.ended += 1
            if jid in self.user_killed:
                self.user_killed.discard(jid)
                continue  # already USER_KILLED in the DB; the session lets go of it at exit
            t = float(ev.get("t") or time.time())
            if kind == "error":
                rc, timed_out, why = 127, False, str(ev.get("msg"))
            elif jid in self.stopping_ids and int(ev.get("rc", -15)) != 0:
                # cut short by our TERM; one that still exited 0 had finished its work and counts as done
                rc, timed_out, why = int(ev.get("rc", -15)), True, f"stopped: {self.stop_reason}"
            else:
                rc, timed_out, why = int(ev["rc"]), bool(ev.get("timed_out")), None
                if timed_out:
                    why = f"exceeded its wall time of {c.wall_time_min:g} min"
            after = states.exit_state(rc, timed_out)
            needs = states.needs_hook(after, postprocess=c.postprocess, stage_out=c.stage_out,
                                      error_handler=c.error_handler, timeout_handler=c.timeout_handler)
            changes, to_pool = states.after_exit(
                jid, rc, timed_out, retry_count=c.retry_count, max_retries=c.max_retries, on_error=c.on_error,
                on_timeout=c.on_timeout, needs_pool=needs and not self.stopping, t=t, why=why)
            out += changes
            if to_pool:
                self.writer.put(out)
                out = []
                self.submit_processing(jid, after)
        if out:
            self.writer.put(out)

    def _shutdown(self) -> None:
        reason = self.stop_reason or "error"
        # Running jobs are stopped first, before waiting for the claiming thread (which may be in the middle of a
        # claim and its mkdirs): after a scheduler's TERM every second counts, and a job left to finish while
        # the launcher waits has run past the moment it was told to stop.
        self.source.stop(wait=False)
        if self.running:
            self.stopping_ids.update(self.running)
            for jid in list(self.running):
                self.runner.kill(jid, signal.SIGTERM)
            end = time.monotonic() + self.opts.kill_grace_s + 2
            while self.running and time.monotonic() < end:
                time.sleep(0.02)
                self._handle(self.runner.poll())
        self.source.join()
        leftovers = [c.id for c in self.pending] + [c.id for c in self.source.buffer]
        self.pending, self.source.buffer = deque(), deque()
        self._handle(self.runner.close(grace=0))
        self.processing.shutdown(wait=True, cancel_futures=True)
        self.writer.stop()
        self.summary.reason = reason
        self.summary.seconds = time.time() - self.t0

        self.ws.retry(lambda: sessions.finish(self.ws, self.session_id, leftovers, self.actor,
                                              reason="launcher {sid} exited"), attempts=20)
        if self.opts.status and sys.stderr.isatty():
            sys.stderr.write("\r\x1b[K")
        os.close(self._r)
        os.close(self._w)
