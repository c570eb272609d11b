"""The metascheduler: keeps the batch queue fed with launcher jobs sized to the runnable work.

Each pass: sync our batch jobs' states from the scheduler; recover jobs of launchers that died (stale heartbeat,
or their batch job ended); measure the runnable work per queue; submit launcher batch jobs within the site
policy of sluice.toml (`max_queued` waiting at once, `max_running`, node and wall-time ranges, project); cancel
a waiting batch job whose work vanished. Submit failures are recorded on the batch job (`sluice queue ls`)
and never stop the service (Balsam users found them only in a log).
"""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import math
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sluice import environ
from sluice.api import Workspace, batch, claims, sessions
from sluice.api.batch import ACTIVE, WAITING
from sluice.api.claims import Selection
from sluice.api.transitions import write_changes
from sluice.config import QueuePolicy
from sluice.errors import Fault, UserError, one_line
from sluice.schedulers import BatchRequest, BatchState, Scheduler, SchedulerError, get_scheduler
from sluice.schedulers.base import validate
from sluice.staging import Stager, stage_in_changes
from sluice.states import S

log = logging.getLogger("sluice.service")

DEFAULT_POLICY = QueuePolicy(name="default", max_queued=5, max_running=5, max_nodes=16, min_wall_min=10,
                             max_wall_min=60)


def policies(ws: Workspace) -> list[QueuePolicy]:
    """The configured queues; with none configured, one modest default queue (the scheduler's default)."""
    return list(ws.config.queues.values()) or [DEFAULT_POLICY]


def scheduler_for(ws: Workspace, name: str | None = None) -> Scheduler:
    sched = name or ws.config.scheduler
    opts: dict[str, Any] = {}
    if sched == "local":
        opts["state_dir"] = ws.config.logs_dir / "local-scheduler"
    return get_scheduler(sched, **opts)


def launcher_command(ws: Workspace, job_mode: str, idle_timeout: float = 10.0) -> list[str]:
    return [sys.executable, "-m", "sluice", "launcher", "--job-mode", job_mode, "--idle-timeout", f"{idle_timeout:g}",
            "--quiet"]


def submit(ws: Workspace, sched: Scheduler, *, nodes: int, wall_time_min: float, queue: str | None = None,
           project: str | None = None, job_mode: str = "serial", extra: tuple[str, ...] = (),
           idle_timeout: float = 10.0) -> dict[str, Any]:
    """Submit one launcher batch job; the row is written first, so a failure is recorded, not lost."""
    if nodes < 1:
        raise UserError(f"--nodes must be at least 1, got {nodes}")
    if job_mode not in ("serial", "mpi"):
        raise UserError(f"job mode must be serial or mpi, got {job_mode!r}")
    wall = max(1, math.ceil(wall_time_min))

    def request(bid: int) -> BatchRequest:
        env = {environ.WORKSPACE: str(ws.path), environ.BATCH_ID: str(bid)}
        if queue:
            env[environ.QUEUE] = queue
        return BatchRequest(command=launcher_command(ws, job_mode, idle_timeout), num_nodes=nodes,
                            wall_time_min=wall, workdir=ws.config.logs_dir / "batch" / str(bid), queue=queue,
                            project=project, job_name=f"sluice-{bid}", env=env, extra=list(extra))

    validate(request(0))  # a request no scheduler can honour is the user's mistake: nothing is recorded
    bid = batch.add(ws, scheduler=sched.name, num_nodes=nodes, wall_time_min=wall, queue=queue, project=project,
                    job_mode=job_mode)
    req = request(bid)
    workdir = req.workdir
    try:
        native = sched.submit(req)
        values: dict[str, Any] = {"native_id": native, "state": "queued", "workdir": str(workdir)}
    except (SchedulerError, OSError) as e:
        values = {"state": "submit_failed", "message": one_line(e, 500), "ended_at": time.time(),
                  "workdir": str(workdir)}
    batch.change(ws, [(bid, values)])
    row = batch.get(ws, bid)
    assert row is not None
    return row


def cancel(ws: Workspace, sched: Scheduler, batch_id: int, why: str = "cancelled by user") -> dict[str, Any]:
    row = batch.get(ws, batch_id)
    if row is None:
        raise UserError(f"no batch job {batch_id}; see `sluice queue ls`")
    if row["state"] not in ACTIVE:
        raise UserError(f"batch job {batch_id} already ended ({row['state']})")
    if row["native_id"]:
        sched.cancel(row["native_id"])
    batch.change(ws, [(batch_id, {"state": "cancelled", "message": why, "ended_at": time.time()})])
    got = batch.get(ws, batch_id)
    assert got is not None
    return got


@dataclass
class Pass:
    """What one pass did, for logs and tests."""

    synced: int = 0
    recovered_sessions: list[int] = field(default_factory=list)
    submitted: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    cancelled: list[int] = field(default_factory=list)
    work: dict[str, int] = field(default_factory=dict)
    staged: int = 0
    stage_failed: int = 0
    seconds: float = 0.0


class Service:
    """`Service(ws).run_once()` is one pass; `run()` loops until SIGTERM/SIGINT."""

    def __init__(self, ws: Workspace, sched: Scheduler | None = None, *, period: float | None = None,
                 stale_after_s: float = 60.0, vanished_after_s: float = 600.0, idle_timeout: float = 10.0,
                 cores_per_node: int | None = None) -> None:
        self.ws = ws
        self.sched = sched or scheduler_for(ws)
        self.period = period if period is not None else ws.config.service_period
        self.stale_after_s = stale_after_s
        self.vanished_after_s = vanished_after_s
        self.idle_timeout = idle_timeout
        self.cores_per_node = cores_per_node or int(ws.config.launcher.get("cores_per_node", os.cpu_count() or 1))
        self.stop_reason: str | None = None

    # ---------------------------------------------------------------- the pass
    def run_once(self) -> Pass:
        t0 = time.time()
        p = Pass()
        p.synced = self._sync()
        p.recovered_sessions = self._recover()
        if self.ws.config.transfers.where == "service":
            p.staged, p.stage_failed = self._stage_in()
        work = self._work()
        p.work = {q.name: n for q, n in work.items()}
        for pol, need in work.items():
            self._feed(pol, need, p)
        p.seconds = time.time() - t0
        return p

    def _sync(self) -> int:
        rows = batch.listing(self.ws, active_only=True, submitted_only=True)
        if not rows:
            return 0
        statuses = self.sched.status([r["native_id"] for r in rows])
        now = time.time()
        updates = []
        for r in rows:
            st = statuses.get(r["native_id"])
            if st is None or st.state == BatchState.UNKNOWN:
                continue
            values: dict[str, Any] = {"state": st.state.value}
            if st.message:
                values["message"] = st.message[:500]
            if st.state == BatchState.RUNNING and r["started_at"] is None:
                values["started_at"] = now
            if st.state.is_terminal:
                values["ended_at"] = now
            if values["state"] != r["state"] or "message" in values:
                updates.append((r["id"], values))
        batch.change(self.ws, updates)
        return len(rows)

    def _recover(self) -> list[int]:
        """Sessions with a stale heartbeat, and sessions whose batch job has ended, lose their jobs."""
        dead = sessions.recover(self.ws, stale_after=self.stale_after_s, actor="service")
        return dead + sessions.recover_ended_batch_jobs(self.ws, "service")

    def _stage_in(self, batch_size: int = 500) -> tuple[int, int]:
        """`[transfers] where = "service"`: stage jobs in here, on the login node, so that launchers on compute
        nodes without network claim only jobs whose data is in place. Held by a session of the service's own,
        so a service killed mid-transfer leaves them to be recovered like a launcher's."""
        staged = failed = 0
        stager = Stager(self.ws.config.transfers)
        while True:
            sid = sessions.start(self.ws, job_mode="service", stale_after=self.stale_after_s)
            actor = f"service:{sid}"
            got: list[Any] = []
            try:
                got = claims.claim(self.ws, sid, Selection(any_job=True), batch_size, states=frozenset({S.READY}))
                if got:
                    jobs = self.ws.jobs(ids=[c.id for c in got])
                    outcomes = stager.stage_in(jobs, lambda j: self.ws.parents(j.id))
                    plain = {c.id for c in got if not self.ws.app(c.app_name).preprocess}
                    changes = stage_in_changes(outcomes, plain.__contains__)
                    write_changes(self.ws, changes, actor)
                    failed += sum(1 for o in outcomes if o.error)
                    staged += sum(1 for o in outcomes if not o.error)
            finally:
                sessions.finish(self.ws, sid, [c.id for c in got], actor, reason="service session {sid} ended")
            if len(got) < batch_size:
                return staged, failed

    def _work(self) -> dict[QueuePolicy, int]:
        """Nodes wanted per queue: runnable (and processable) jobs not yet held by a launcher."""
        pols = self.policies()
        names = {p.name for p in pols}
        need: dict[QueuePolicy, float] = {p: 0.0 for p in pols}
        first = pols[0]
        for queue, nodes, rpn, tpr, n in batch.work_shapes(self.ws):
            if queue is not None and queue not in names:
                continue  # pinned to a queue this site policy does not feed
            pol = first if queue is None else next(p for p in pols if p.name == queue)
            if pol.job_mode == "serial":
                if nodes != 1:
                    continue
                per_node = max(1, self.cores_per_node // max(1, rpn * tpr))
                need[pol] += n / per_node
            else:
                need[pol] += n * nodes
        return {p: math.ceil(v) for p, v in need.items()}

    def policies(self) -> list[QueuePolicy]:
        """The queues fed. The local scheduler runs launchers on this machine, which is one node: one launcher
        of one node at a time, whatever the queues say."""
        pols = policies(self.ws)
        if self.sched.name != "local":
            return pols
        return [dataclasses.replace(p, max_queued=1, max_running=0, min_nodes=1, max_nodes=1) for p in pols[:1]]

    def _feed(self, pol: QueuePolicy, need: int, p: Pass) -> None:
        if self.sched.name == "local":  # one machine: one launcher, whichever queue it was for
            mine = batch.listing(self.ws, active_only=True)
        else:
            mine = batch.listing(self.ws, active_only=True, queue=_queue_name(pol))
        waiting = [b for b in mine if b["state"] in WAITING]
        running = [b for b in mine if b["state"] not in WAITING]
        supply = sum(b["num_nodes"] for b in mine)
        now = time.time()
        if need == 0:
            for b in waiting:  # the work vanished while it waited: give the slot back
                if b["native_id"] and now - (b["submitted_at"] or now) > self.vanished_after_s:
                    try:
                        cancel(self.ws, self.sched, b["id"], "no work left for it")
                        p.cancelled.append(b["id"])
                    except (SchedulerError, UserError) as e:
                        log.warning("batch job %s: cancel failed: %s", b["id"], one_line(e))
            return
        short = need - supply
        n_wait, n_run = len(waiting), len(running)
        while short > 0 and n_wait < pol.max_queued and n_wait + n_run < pol.max_queued + pol.max_running:
            nodes = max(pol.min_nodes, min(pol.max_nodes, short))
            wall = self._wall(pol)
            row = submit(self.ws, self.sched, nodes=nodes, wall_time_min=wall, queue=_queue_name(pol),
                         project=pol.project, job_mode=pol.job_mode, extra=pol.extra, idle_timeout=self.idle_timeout)
            if row["state"] == "submit_failed":
                p.failed.append(row["id"])
                log.warning("submit to %s failed: %s", pol.name, row["message"])
                return  # the same request would fail again this pass; the failure is on record
            p.submitted.append(row["id"])
            short -= nodes
            n_wait += 1

    def _wall(self, pol: QueuePolicy) -> float:
        """Long enough for the longest runnable job (plus a pad), within the queue's range."""
        longest = batch.longest_runnable(self.ws)
        want = (longest or pol.min_wall_min) + 5
        return float(max(pol.min_wall_min, min(pol.max_wall_min, want)))

    # ---------------------------------------------------------------- the loop
    def run(self, *, once: bool = False) -> None:
        with service_lock(self.ws.config.logs_dir):
            if once:
                self._log(self.run_once())
                return
            old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
            try:
                while self.stop_reason is None:
                    t0 = time.monotonic()
                    try:
                        self._log(self.run_once())
                    except UserError:
                        raise
                    except Exception as e:  # a database or scheduler hiccup: log it, try next pass
                        if isinstance(e, Fault) and not e.transient:
                            raise  # a full disk: retrying cannot help
                        log.warning("pass failed, will retry: %s", one_line(e))
                    left = self.period - (time.monotonic() - t0)
                    end = time.monotonic() + max(0.0, left)
                    while self.stop_reason is None and time.monotonic() < end:
                        time.sleep(min(0.2, max(0.0, end - time.monotonic())))
            finally:
                for s, h in old.items():
                    signal.signal(s, h)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.stop_reason = signal.Signals(signum).name

    def _log(self, p: Pass) -> None:
        log.info("pass: work %s, submitted %s, failed %s, cancelled %s, recovered sessions %s (%.2f s)",
                 p.work, p.submitted, p.failed, p.cancelled, p.recovered_sessions, p.seconds)


def _queue_name(pol: QueuePolicy) -> str | None:
    return None if pol is DEFAULT_POLICY else pol.name


@contextmanager
def service_lock(logs_dir: Path) -> Iterator[IO[str]]:
    """One service per workspace: an flock the kernel drops when the process dies, even by kill -9."""
    logs_dir.mkdir(parents=True, exist_ok=True)
    f = open(logs_dir / "service.lock", "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise UserError(f"a sluice service already runs for this workspace ({holder}); stop it first") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {socket.gethostname()}")
    f.flush()
    try:
        yield f
    finally:
        f.close()
