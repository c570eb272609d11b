"""Claiming work atomically: one statement per batch, so two launchers never take the same job.

A claim sets `jobs.session_id` (the lock); the state changes only when the job really starts. PostgreSQL and
MariaDB select with FOR UPDATE SKIP LOCKED (concurrent launchers skip each other's rows instead of waiting);
SQLite holds the database write lock for the transaction (BEGIN IMMEDIATE).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, or_, select, update

from sluice import db
from sluice.models import jobs
from sluice.states import RUNNABLE, S


@dataclass(frozen=True)
class Selection:
    """Which jobs this launcher may run: workflows, tags, pins, and what fits the allocation."""

    workflows: tuple[str, ...] = ()
    tags: tuple[tuple[str, str], ...] = ()
    max_nodes: int = 1
    max_cores: int = 1 << 30
    max_gpus: int = 1 << 30
    serial_only: bool = True
    queue: str | None = None
    machine: str | None = None

    def where(self) -> ColumnElement[bool]:
        c = jobs.c
        conds: list[ColumnElement[bool]] = [c.num_nodes <= self.max_nodes,
                                            c.ranks_per_node * c.threads_per_rank <= self.max_cores,
                                            c.gpus_per_rank * c.ranks_per_node <= self.max_gpus]
        if self.serial_only:
            conds.append(c.num_nodes == 1)
        if self.workflows:
            conds.append(c.workflow.in_(self.workflows))
        for k, v in self.tags:
            conds.append(c.tags[k].as_string() == v)
        conds.append(or_(c.queue.is_(None), c.queue == self.queue) if self.queue else c.queue.is_(None))
        conds.append(or_(c.machine.is_(None), c.machine == self.machine) if self.machine else c.machine.is_(None))
        return and_(*conds)


@dataclass
class Claimed:
    """A claimed job with what the runner needs to start it (its app joined in)."""

    id: int
    name: str
    workflow: str
    state: str
    params: dict[str, Any]
    args: list[str]
    workdir: str | None
    num_nodes: int
    ranks_per_node: int
    threads_per_rank: int
    gpus_per_rank: int
    wall_time_min: float | None
    environment: dict[str, str]
    retry_count: int
    max_retries: int
    stage_out: list[Any]
    app_id: int
    app_name: str
    command: str
    shell: bool
    app_env: dict[str, str]
    postprocess: str | None
    error_handler: str | None
    timeout_handler: str | None
    on_error: str
    on_timeout: str
    extra: dict[str, Any] = field(default_factory=dict)


_JOB_COLS = ("id", "name", "workflow", "state", "params", "args", "workdir", "num_nodes", "ranks_per_node",
             "threads_per_rank", "gpus_per_rank", "wall_time_min", "environment", "retry_count", "max_retries",
             "stage_out", "app_id")
_APP_COLS = ("id", "name", "command", "shell", "environment", "postprocess", "error_handler", "timeout_handler",
             "on_error", "on_timeout")
_JSON = {"params": dict, "args": list, "environment": dict, "stage_out": list}


def _json(v: Any, empty: Any) -> Any:
    if v is None:
        return empty()
    return json.loads(v) if isinstance(v, str | bytes) else v  # psycopg decodes JSON itself


def claim(conn: Connection, session_id: int, sel: Selection, limit: int, *,
          max_wall_min: float | None = None, states: frozenset[str] = RUNNABLE) -> list[Claimed]:
    """Take up to `limit` unowned jobs in `states` matching `sel`, lowest ids first (adjacent rows are cheap
    to write back). Jobs whose wall time exceeds `max_wall_min` (what is left of the allocation) are left.
    Rows come back through the driver: per-row ORM-style processing was most of a claim's cost."""
    where = and_(jobs.c.state.in_(sorted(states)), jobs.c.session_id.is_(None), sel.where())
    if max_wall_min is not None:
        where = and_(where, or_(jobs.c.wall_time_min.is_(None), jobs.c.wall_time_min <= max_wall_min))
    q = select(jobs.c.id).where(where).order_by(jobs.c.id).limit(limit)
    if conn.dialect.name != "sqlite":
        q = q.with_for_update(skip_locked=True)
    ids = list(conn.execute(q).scalars())
    if not ids:
        return []
    db.raw_in(conn, f"UPDATE jobs SET session_id = {db.marks(conn, 1)} WHERE id IN", ids, args=[session_id],
              fetch=False)
    rows = db.raw_in(conn, f"SELECT {', '.join(_JOB_COLS)} FROM jobs WHERE id IN", ids, " ORDER BY id")
    app_ids = sorted({r[-1] for r in rows})
    app_rows = db.raw(conn, f"SELECT {', '.join(_APP_COLS)} FROM apps WHERE id IN ({db.marks(conn, len(app_ids))})",
                      app_ids)
    by_app = {a[0]: a for a in app_rows}
    out = []
    for r in rows:
        d = dict(zip(_JOB_COLS, r, strict=True))
        for k, empty in _JSON.items():
            d[k] = _json(d[k], empty)
        a = by_app[d["app_id"]]
        out.append(Claimed(**d, app_name=a[1], command=a[2], shell=bool(a[3]), app_env=_json(a[4], dict),
                           postprocess=a[5], error_handler=a[6], timeout_handler=a[7], on_error=a[8],
                           on_timeout=a[9]))
    return out


def unclaim(conn: Connection, session_id: int, ids: list[int]) -> None:
    """Give back claimed jobs that were never started."""
    for i in range(0, len(ids), 900):
        conn.execute(update(jobs).where(jobs.c.id.in_(ids[i : i + 900]), jobs.c.session_id == session_id,
                                        jobs.c.state != S.RUNNING).values(session_id=None))


def killed(conn: Connection, ids: list[int]) -> list[int]:
    """Which of these (running) jobs a user has killed meanwhile."""
    out: list[int] = []
    for i in range(0, len(ids), 900):
        q = select(jobs.c.id).where(jobs.c.id.in_(ids[i : i + 900]), jobs.c.state == S.USER_KILLED)
        out.extend(conn.execute(q).scalars())
    return out
