"""Claiming work atomically: one statement per batch, so two launchers never take the same job.

A claim sets `jobs.session_id` (the lock); the state changes only when the job really starts. PostgreSQL and
MariaDB select with FOR UPDATE SKIP LOCKED (concurrent launchers skip each other's rows instead of waiting);
SQLite holds the database write lock for the transaction (BEGIN IMMEDIATE). These are the launcher's hot
path: rows come back through the driver, since per-row ORM-style processing was most of a claim's cost.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, Connection, and_, func, or_, select, text, update

from sluice.schema import JOB_NAMES, JSON_EMPTY, JSON_FIELDS, URGENT_SQL, JobRow
from sluice.states import END, RUNNABLE, S
from sluice.store import db
from sluice.store.models import jobs

if TYPE_CHECKING:
    from sluice.api.base import WorkspaceBase


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
    any_job: bool = False
    """Every job whatever its size and pins: the service's stage-in on the login node."""

    def where(self) -> ColumnElement[bool]:
        c = jobs.c
        if self.any_job:
            return and_(True)
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


@dataclass(kw_only=True)
class Claimed(JobRow):
    """A claimed job with what the runner needs to start it: its row, and its app joined in."""

    app_name: str
    command: str
    shell: bool = False
    app_env: dict[str, str] = field(default_factory=dict)
    postprocess: str | None = None
    error_handler: str | None = None
    timeout_handler: str | None = None
    on_error: str = "retry"
    on_timeout: str = "retry"
    preamble: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


_APP_COLS = ("id", "name", "command", "shell", "environment", "postprocess", "error_handler", "timeout_handler",
             "on_error", "on_timeout", "preamble", "machines")
_JSON_AT = [(i, n, JSON_EMPTY.get(n)) for i, n in enumerate(JOB_NAMES) if n in JSON_FIELDS]
_APP_AT = JOB_NAMES.index("app_id")


def _json(v: Any, empty: Any) -> Any:
    if v is None:
        return empty() if empty is not None else None
    return json.loads(v) if isinstance(v, str | bytes) else v  # psycopg decodes JSON itself


def claim(ws: WorkspaceBase, session_id: int, sel: Selection, limit: int, *, max_wall_min: float | None = None,
          states: frozenset[str] = RUNNABLE) -> list[Claimed]:
    """Take up to `limit` unowned jobs in `states` matching `sel`: urgent ones first (priority, then the nearest
    deadline), then the lowest ids (adjacent rows are cheap to write back). Jobs whose wall time exceeds
    `max_wall_min` (what is left of the allocation) are left. The result is in that order."""
    where = and_(jobs.c.state.in_(sorted(states)), jobs.c.session_id.is_(None), sel.where())
    if max_wall_min is not None:
        where = and_(where, or_(jobs.c.wall_time_min.is_(None), jobs.c.wall_time_min <= max_wall_min))
    urgent_q = (select(jobs.c.id).where(where, text(f"({URGENT_SQL})"))
                .order_by(jobs.c.priority.desc(), jobs.c.deadline.is_(None), jobs.c.deadline, jobs.c.id).limit(limit))
    with ws.write() as conn:
        lock = conn.dialect.name != "sqlite"
        ids = list(conn.execute(urgent_q.with_for_update(skip_locked=True) if lock else urgent_q).scalars().all())
        _own(conn, session_id, ids)
        if len(ids) < limit:  # then the rest in id order, through the (state, id) index
            q = select(jobs.c.id).where(where).order_by(jobs.c.id).limit(limit - len(ids))
            rest = list(conn.execute(q.with_for_update(skip_locked=True) if lock else q).scalars().all())
            _own(conn, session_id, rest)
            ids += rest
        if not ids:
            return []
        rows = db.raw_in(conn, f"SELECT {', '.join(JOB_NAMES)} FROM jobs WHERE id IN", ids)
        app_ids = sorted({r[_APP_AT] for r in rows})
        app_rows = db.raw(conn, f"SELECT {', '.join(_APP_COLS)} FROM apps WHERE id IN "
                                f"({db.marks(conn, len(app_ids))})", app_ids)
    order = {jid: i for i, jid in enumerate(ids)}
    rows.sort(key=lambda r: order[r[0]])  # the most urgent first, then adjacent ids
    by_app = {a[0]: _app_fields(_on_machine(a, sel.machine)) for a in app_rows}
    out = []
    new = object.__new__
    for r in rows:
        vals = list(r)
        for i, _n, empty in _JSON_AT:
            v = vals[i]
            if v is None or v.__class__ is str:  # psycopg hands JSON over decoded already
                fast = _JSON_FAST.get(v)  # most are {} / [] / null: no decode
                vals[i] = fast() if fast is not None else (json.loads(v) if v is not None else
                                                           (empty() if empty is not None else None))
            elif isinstance(v, bytes):
                vals[i] = json.loads(v)
        d = dict(zip(JOB_NAMES, vals, strict=True))
        d.update(by_app[d["app_id"]])
        d["extra"] = {}
        c = new(Claimed)  # every field is in d: the dataclass __init__ of ~40 keywords cost more than the claim
        c.__dict__ = d
        out.append(c)
    return out


_JSON_FAST: dict[str | None, Any] = {"{}": dict, "[]": list, "null": lambda: None}


def _app_fields(a: tuple[Any, ...]) -> dict[str, Any]:
    """The Claimed fields an app row gives (every field of Claimed beyond JobRow's, but `extra`)."""
    return {"app_name": a[1], "command": a[2], "shell": bool(a[3]), "app_env": a[4], "postprocess": a[5],
            "error_handler": a[6], "timeout_handler": a[7], "on_error": a[8], "on_timeout": a[9],
            "preamble": a[10]}


def _on_machine(a: tuple[Any, ...], machine: str | None) -> tuple[Any, ...]:
    """An app row with its override for this machine applied (command, preamble, environment)."""
    row = list(a)
    row[4] = _json(row[4], dict)
    over = (_json(row[11], dict) or {}).get(machine) if machine else None
    if over:
        row[2] = over.get("command") or row[2]
        row[10] = over.get("preamble", row[10])
        row[4] = {**row[4], **(over.get("environment") or {})}
    return tuple(row)


def _own(conn: Connection, session_id: int, ids: list[int]) -> None:
    if ids:
        db.raw_in(conn, f"UPDATE jobs SET session_id = {db.marks(conn, 1)} WHERE id IN", ids, args=[session_id],
                  fetch=False)


def unclaim(ws: WorkspaceBase, session_id: int, ids: list[int]) -> None:
    """Give back claimed jobs that were never started."""
    if ids:
        with ws.write() as conn:
            unclaim_in(conn, session_id, ids)


def unclaim_in(conn: Connection, session_id: int, ids: list[int]) -> None:
    """unclaim() in the caller's transaction."""
    for i in range(0, len(ids), db.CHUNK):
        conn.execute(update(jobs).where(jobs.c.id.in_(ids[i : i + db.CHUNK]), jobs.c.session_id == session_id,
                                        jobs.c.state != S.RUNNING).values(session_id=None))


def killed(ws: WorkspaceBase, ids: list[int]) -> list[int]:
    """Which of these (running) jobs a user has killed meanwhile."""
    if not ids:
        return []
    with ws.read() as conn:
        m = db.marks(conn, 1)
        rows = db.raw_in(conn, f"SELECT id FROM jobs WHERE state = {m} AND id IN", ids, args=[S.USER_KILLED.value])
    return [int(r[0]) for r in rows]


def nothing_left(ws: WorkspaceBase, sel: Selection) -> bool:
    """True when every job this launcher could ever run has ended (so waiting is pointless)."""
    q = select(func.count()).select_from(jobs).where(jobs.c.state.not_in(sorted(END)), sel.where())
    with ws.read() as conn:
        return not conn.execute(q).scalar()
