"""Claiming work atomically: one statement per batch, so two launchers never take the same job.

A claim sets `jobs.session_id` (the lock); the state changes only when the job really starts. PostgreSQL and
MariaDB select with FOR UPDATE SKIP LOCKED (concurrent launchers skip each other's rows instead of waiting);
SQLite holds the database write lock for the transaction (BEGIN IMMEDIATE).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, or_, select, update

from sluice.models import apps, jobs
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


_COLUMNS = [jobs.c.id, jobs.c.name, jobs.c.workflow, jobs.c.state, jobs.c.params, jobs.c.args, jobs.c.workdir,
            jobs.c.num_nodes, jobs.c.ranks_per_node, jobs.c.threads_per_rank, jobs.c.gpus_per_rank,
            jobs.c.wall_time_min, jobs.c.environment, jobs.c.retry_count, jobs.c.max_retries, jobs.c.stage_out,
            jobs.c.app_id, apps.c.name.label("app_name"), apps.c.command, apps.c.shell,
            apps.c.environment.label("app_env"), apps.c.postprocess, apps.c.error_handler,
            apps.c.timeout_handler, apps.c.on_error, apps.c.on_timeout]


def _claimed(r: Any) -> Claimed:
    d = dict(r._mapping)
    for k in ("params", "environment", "app_env"):
        d[k] = d[k] or {}
    for k in ("args", "stage_out"):
        d[k] = d[k] or []
    return Claimed(**d)


def claim(conn: Connection, session_id: int, sel: Selection, limit: int, *,
          max_wall_min: float | None = None, states: frozenset[str] = RUNNABLE) -> list[Claimed]:
    """Take up to `limit` unowned jobs in `states` matching `sel`, lowest ids first (adjacent rows are cheap
    to write back). Jobs whose wall time exceeds `max_wall_min` (what is left of the allocation) are left."""
    where = and_(jobs.c.state.in_(sorted(states)), jobs.c.session_id.is_(None), sel.where())
    if max_wall_min is not None:
        where = and_(where, or_(jobs.c.wall_time_min.is_(None), jobs.c.wall_time_min <= max_wall_min))
    q = select(jobs.c.id).where(where).order_by(jobs.c.id).limit(limit)
    if conn.dialect.name != "sqlite":
        q = q.with_for_update(skip_locked=True)
    ids = list(conn.execute(q).scalars())
    if not ids:
        return []
    conn.execute(update(jobs).where(jobs.c.id.in_(ids)).values(session_id=session_id))
    rows = conn.execute(select(*_COLUMNS).join(apps, apps.c.id == jobs.c.app_id).where(jobs.c.id.in_(ids))
                        .order_by(jobs.c.id))
    return [_claimed(r) for r in rows]


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
