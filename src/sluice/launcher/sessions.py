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
from typing import Any

from sqlalchemy import Connection, and_, insert, or_, select, update

from sluice.models import jobs, launcher_sessions
from sluice.states import Change, S, apply


def start(conn: Connection, *, job_mode: str, batch_job_id: int | None = None,
          info: dict[str, Any] | None = None) -> int:
    now = time.time()
    res = conn.execute(insert(launcher_sessions).values(
        host=socket.gethostname(), pid=os.getpid(), batch_job_id=batch_job_id, job_mode=job_mode,
        started_at=now, heartbeat_at=now, ended_at=None, info={**(info or {}), "proc_start": _proc_start(os.getpid())}))
    return int(res.inserted_primary_key[0])  # type: ignore[index]


def heartbeat(conn: Connection, session_id: int) -> None:
    conn.execute(update(launcher_sessions).where(launcher_sessions.c.id == session_id)
                 .values(heartbeat_at=time.time()))


def end(conn: Connection, session_id: int) -> None:
    conn.execute(update(launcher_sessions).where(launcher_sessions.c.id == session_id)
                 .values(ended_at=time.time(), heartbeat_at=time.time()))


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


def recover(conn: Connection, *, stale_after: float, actor: str, exclude: int | None = None,
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
    ws = f"SLUICE_WORKSPACE={workspace}".encode()
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
        jid = next((e[len(b"SLUICE_JOB_ID="):].decode() for e in env if e.startswith(b"SLUICE_JOB_ID=")), None)
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
    changes: list[Change] = []
    for r in held:
        if r.state == S.RUNNING:
            changes += retry_or_fail(r.id, r.retry_count, r.max_retries, reason.format(sid=r.session_id),
                                     S.RUN_TIMEOUT if to_timeout else None)
    apply(conn, changes, actor, strict=False)
    res = conn.execute(update(jobs).where(and_(jobs.c.session_id.in_(session_ids),
                                               or_(jobs.c.state != S.RUNNING, jobs.c.state.is_(None))))
                       .values(session_id=None))
    return len(changes) + int(res.rowcount or 0)


def retry_or_fail(job_id: int, retry_count: int, max_retries: int, msg: str, via: str | None,
                  data: Any = None) -> list[Change]:
    """A RUNNING job that was cut short: through `via` (RUN_ERROR / RUN_TIMEOUT), then retried or FAILED.

    Every retry is bounded by max_retries, timeouts included (Balsam retried timeouts forever).
    """
    free = {"session_id": None}
    out: list[Change] = []
    frm: str = S.RUNNING
    if via is not None:
        out.append(Change(job_id, S.RUNNING, via, msg, data=data, fields=free))
        frm = via
    if retry_count < max_retries:
        why = "" if via is not None else f": {msg}"  # straight from RUNNING: say why here (no via event does)
        out.append(Change(job_id, frm, S.RESTART_READY, f"retry {retry_count + 1} of {max_retries}{why}",
                          fields=free))
    else:
        if frm == S.RUNNING:
            out.append(Change(job_id, S.RUNNING, S.RUN_ERROR, msg, data=data, fields=free))
            frm = S.RUN_ERROR
        out.append(Change(job_id, frm, S.FAILED, f"no retries left ({max_retries} allowed): {msg}", fields=free))
    return out
