"""Launcher sessions: registration, heartbeats, and recovery of the jobs of sessions that died.

A session owns the jobs whose `session_id` it set when it claimed them. If its heartbeat goes stale (or, on the
same host, its process is gone), any launcher or the service recovers them: RUNNING jobs go to RESTART_READY
(spending a retry, or FAILED when none is left), and other jobs it held are simply released.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, and_, insert, or_, select, update

from sluice import environ
from sluice.api.claims import hot_write, unclaim_in
from sluice.api.transitions import apply
from sluice.states import S, after_failure
from sluice.store.models import batch_jobs, jobs, launcher_sessions

if TYPE_CHECKING:
    from sluice.api.base import WorkspaceBase

BATCH_ENDED = ("finished", "failed", "timeout", "cancelled")


def start(ws: WorkspaceBase, *, job_mode: str, batch_job_id: int | None = None, info: dict[str, Any] | None = None,
          stale_after: float = 60.0) -> int:
    """Register this process as a launcher session, and recover the sessions that died before it."""
    now = time.time()
    with ws.write() as conn:
        res = conn.execute(insert(launcher_sessions).values(
            host=socket.gethostname(), pid=os.getpid(), batch_job_id=batch_job_id, job_mode=job_mode,
            started_at=now, heartbeat_at=now, ended_at=None,
            info={**(info or {}), "proc_start": _proc_start(os.getpid())}))
        sid = int(res.inserted_primary_key[0])  # type: ignore[index]
        _recover(conn, stale_after=stale_after, actor=f"launcher:{sid}", exclude=sid, workspace=str(ws.path))
    return sid


def heartbeat(ws: WorkspaceBase, session_id: int) -> None:
    with hot_write(ws) as conn:
        conn.execute(update(launcher_sessions).where(launcher_sessions.c.id == session_id)
                     .values(heartbeat_at=time.time()))


def finish(ws: WorkspaceBase, session_id: int, leftovers: list[int], actor: str, reason: str) -> None:
    """A launcher's last write, in one transaction: claimed jobs never started go back, jobs still held are
    recovered (RUNNING ones as RUN_TIMEOUT, retried within their budget), and the session ends."""
    with ws.write() as conn:
        if leftovers:
            unclaim_in(conn, session_id, leftovers)
        release_jobs(conn, [session_id], actor, reason=reason, to_timeout=True)
        now = time.time()
        conn.execute(update(launcher_sessions).where(launcher_sessions.c.id == session_id)
                     .values(ended_at=now, heartbeat_at=now))


def recover(ws: WorkspaceBase, *, stale_after: float, actor: str, exclude: int | None = None) -> list[int]:
    """End the sessions that died and recover their jobs; the ids of the sessions recovered."""
    with ws.write() as conn:
        return _recover(conn, stale_after=stale_after, actor=actor, exclude=exclude, workspace=str(ws.path))


def recover_ended_batch_jobs(ws: WorkspaceBase, actor: str) -> list[int]:
    """Sessions whose batch job has ended (the scheduler says so) lose their jobs, as if timed out."""
    with ws.write() as conn:
        ended = conn.execute(
            select(launcher_sessions.c.id).join(batch_jobs, batch_jobs.c.id == launcher_sessions.c.batch_job_id)
            .where(launcher_sessions.c.ended_at.is_(None), batch_jobs.c.state.in_(BATCH_ENDED))).scalars().all()
        if ended:
            conn.execute(update(launcher_sessions).where(launcher_sessions.c.id.in_(ended))
                         .values(ended_at=time.time()))
            release_jobs(conn, list(ended), actor, reason="its batch job ended (session {sid})", to_timeout=True)
    return list(ended)


def _proc_start(pid: int) -> str | None:
    """The process start time (clock ticks since boot): with the pid it names one process, even after reuse."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _dead_here(row: Any) -> bool:
    """On this host we need not wait for the heartbeat: the process is gone (or the pid was reused)."""
    if row.host != socket.gethostname():
        return False
    start = (row.info or {}).get("proc_start")
    now_start = _proc_start(row.pid)
    return now_start is None or (start is not None and now_start != start)


def _recover(conn: Connection, *, stale_after: float, actor: str, exclude: int | None = None,
             workspace: str | None = None) -> list[int]:
    """End sessions that died and recover their jobs; returns the ids of the sessions recovered.

    For a session that died on this host, its jobs' leftover processes (each leads its own session, so they
    outlive a launcher killed outright) are killed first, so a retried job never races its old self.
    """
    now = time.time()
    rows = conn.execute(select(launcher_sessions).where(launcher_sessions.c.ended_at.is_(None))).all()
    dead = [r for r in rows if r.id != exclude and (r.heartbeat_at < now - stale_after or _dead_here(r))]
    if not dead:
        return []
    ids = [r.id for r in dead]
    if workspace is not None and any(r.host == socket.gethostname() for r in dead):
        running = conn.execute(select(jobs.c.id).where(jobs.c.session_id.in_(ids), jobs.c.state == S.RUNNING))
        kill_leftovers(workspace, {str(j) for j in running.scalars()})
    conn.execute(update(launcher_sessions).where(launcher_sessions.c.id.in_(ids)).values(ended_at=now))
    release_jobs(conn, ids, actor, reason="launcher session {sid} was lost")
    return ids


def kill_leftovers(workspace: str, job_ids: set[str]) -> int:
    """SIGKILL the process groups of this workspace's jobs `job_ids` still running on this host.

    A process is ours only if it leads its session and its environment names this workspace and one of the
    jobs: pid reuse can never make us kill a stranger.
    """
    if not job_ids:
        return 0
    ws = f"{environ.WORKSPACE}={workspace}".encode()
    job_var = f"{environ.JOB_ID}=".encode()
    n = 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            if int(fields[3]) != int(d):  # field 6 of stat: the session id; a task leads its own
                continue
            with open(f"/proc/{d}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ws not in env:
            continue
        jid = next((e[len(job_var):].decode() for e in env if e.startswith(job_var)), None)
        if jid in job_ids:
            try:
                os.killpg(int(d), signal.SIGKILL)
                n += 1
            except OSError:
                pass
    return n


def release_jobs(conn: Connection, session_ids: list[int], actor: str, *, reason: str,
                 to_timeout: bool = False) -> int:
    """Give back everything the sessions hold: RUNNING jobs are retried (or FAILED when out of retries)."""
    held = conn.execute(select(jobs.c.id, jobs.c.state, jobs.c.session_id, jobs.c.retry_count, jobs.c.max_retries)
                        .where(jobs.c.session_id.in_(session_ids))).all()
    changes = []
    for r in held:
        if r.state == S.RUNNING:
            changes += after_failure(r.id, S.RUNNING, reason.format(sid=r.session_id), retry_count=r.retry_count,
                                     max_retries=r.max_retries, via=S.RUN_TIMEOUT if to_timeout else None)
    apply(conn, changes, actor, strict=False)
    res = conn.execute(update(jobs).where(and_(jobs.c.session_id.in_(session_ids),
                                               or_(jobs.c.state != S.RUNNING, jobs.c.state.is_(None))))
                       .values(session_id=None))
    return len(changes) + int(res.rowcount or 0)
