"""The launcher batch jobs sluice submitted (`batch_jobs`), and the work the service sizes them by.

A row is written before the scheduler is asked, so a failed submit is on record (`sluice queue ls`), not lost.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, insert, select, text, update

from sluice.states import RUNNABLE
from sluice.store.models import WORK_SQL, batch_jobs, jobs

if TYPE_CHECKING:
    from sluice.api.base import WorkspaceBase

WAITING = ("submitting", "queued")
"""Not started yet: these count against a queue's `max_queued`."""
ACTIVE = ("submitting", "queued", "running", "unknown")
"""Not ended: `unknown` (the scheduler's answer could not be read) is asked again, never taken as ended."""


def add(ws: WorkspaceBase, *, scheduler: str, num_nodes: int, wall_time_min: float, queue: str | None,
        project: str | None, job_mode: str) -> int:
    """A new row in state `submitting`; its id names the batch job's directory and its job name."""
    with ws.write() as conn:
        return int(conn.execute(insert(batch_jobs).values(
            scheduler=scheduler, native_id=None, queue=queue, project=project, num_nodes=num_nodes,
            wall_time_min=wall_time_min, job_mode=job_mode, state="submitting", message=None, filters=None,
            workdir=None, submitted_at=time.time())).inserted_primary_key[0])  # type: ignore[index]


def get(ws: WorkspaceBase, batch_id: int) -> dict[str, Any] | None:
    with ws.read() as conn:
        row = conn.execute(select(batch_jobs).where(batch_jobs.c.id == batch_id)).first()
    return None if row is None else dict(row._mapping)


def change(ws: WorkspaceBase, updates: Sequence[tuple[int, dict[str, Any]]]) -> None:
    """Set fields of batch jobs (state, native_id, message, times), all in one transaction."""
    if not updates:
        return
    with ws.write() as conn:
        for bid, values in updates:
            conn.execute(update(batch_jobs).where(batch_jobs.c.id == bid).values(**values))


def listing(ws: WorkspaceBase, *, active_only: bool = False, queue: str | None | bool = False,
            submitted_only: bool = False) -> list[dict[str, Any]]:
    """Batch jobs by id; `queue=None` selects those of the scheduler's default queue, a name that queue."""
    q = select(batch_jobs).order_by(batch_jobs.c.id)
    if active_only:
        q = q.where(batch_jobs.c.state.in_(ACTIVE))
    if submitted_only:
        q = q.where(batch_jobs.c.native_id.is_not(None))
    if queue is not False:
        q = q.where(batch_jobs.c.queue.is_(None) if queue is None else batch_jobs.c.queue == queue)
    with ws.read() as conn:
        return [dict(r._mapping) for r in conn.execute(q)]


def work_shapes(ws: WorkspaceBase) -> list[tuple[str | None, int, int, int, int]]:
    """(queue, nodes, ranks per node, threads per rank, count) of the runnable and processable jobs that no
    launcher holds: what the service sizes its batch jobs by. Read from ix_jobs_work alone (named on SQLite,
    whose planner may otherwise walk the table after ANALYZE)."""
    cols = "queue, num_nodes, ranks_per_node, threads_per_rank"
    with ws.read() as conn:
        hint = " INDEXED BY ix_jobs_work" if conn.dialect.name == "sqlite" else ""
        rows = conn.execute(text(f"SELECT {cols}, count(*) FROM jobs{hint} WHERE {WORK_SQL} GROUP BY {cols}"))
        return [(r[0], int(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in rows]


def longest_runnable(ws: WorkspaceBase) -> float | None:
    """The longest wall time (minutes) among runnable jobs no launcher holds."""
    with ws.read() as conn:
        v = conn.execute(select(func.max(jobs.c.wall_time_min))
                         .where(jobs.c.state.in_(sorted(RUNNABLE)), jobs.c.session_id.is_(None))).scalar()
    return None if v is None else float(v)
