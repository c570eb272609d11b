"""Read-only answers for the commands people type most (`sluice ls`, `ls --summary`) without SQLAlchemy.

Why: importing SQLAlchemy costs ~0.25-0.4 s, more than the query itself takes on a million jobs. For the simple
filters (state, workflow) these functions read the embedded SQLite default through the standard library's sqlite3
(read-only), and PostgreSQL through psycopg directly. Anything else (MariaDB, other filters, a server that does not
answer, a schema that does not match) returns None, and the caller takes the normal path through the API, which
also gives the proper errors.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sluice import config, schema
from sluice.states import State, shown

STATES = tuple(s.value for s in State)
"""The state names in machine order."""

_PG = ("postgresql+psycopg://", "postgresql://")


def connect(workspace: str | None) -> Any | None:
    """A read-only DB-API connection (sqlite3 or psycopg) to the workspace's database with a current schema,
    else None. Either works as a context manager and has `execute`."""
    got = open_workspace(workspace)
    return None if got is None else got[0]


def open_workspace(workspace: str | None) -> tuple[Any, config.Config] | None:
    """connect(), and the workspace's configuration (where its data directory is)."""
    try:
        cfg = config.load(config.find_workspace(workspace))
    except Exception:
        return None
    url = cfg.db_url
    if url.startswith(_PG):
        conn = _connect_pg("postgresql://" + url.split("://", 1)[1])
        return None if conn is None else (conn, cfg)
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        return None
    path = Path(url[len(prefix):])
    if not path.is_file():
        return None
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60)
        rev = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error:
        return None
    if rev is None or rev[0] != config.SCHEMA_HEAD:
        conn.close()
        return None
    return conn, cfg


def _connect_pg(url: str) -> Any | None:
    try:
        import psycopg
    except ImportError:
        return None
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
    except Exception:
        return None  # the API path connects again and says what is wrong, without the password
    try:
        rev = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except Exception:
        rev = None
    if rev is None or rev[0] != config.SCHEMA_HEAD:
        conn.close()
        return None
    return conn


def _mark(conn: Any) -> str:
    return "?" if isinstance(conn, sqlite3.Connection) else "%s"


def _where(states: Sequence[str], workflows: Sequence[str], mark: str,
           relation: tuple[str, int] | None = None) -> tuple[str, list[Any]] | None:
    """The WHERE clause of the simple filters; `relation` ("parents" or "children", job id) keeps a job's
    parents or children only."""
    names = [s.strip().upper() for s in states]
    if any(n not in STATES for n in names):
        return None  # let the API name the bad state
    conds: list[str] = []
    args: list[Any] = []
    if names:
        conds.append(f"j.state IN ({','.join([mark] * len(names))})")
        args += names
    if workflows:
        conds.append(f"j.workflow IN ({','.join([mark] * len(workflows))})")
        args += list(workflows)
    if relation is not None:
        mine, theirs = ("child_id", "parent_id") if relation[0] == "parents" else ("parent_id", "child_id")
        conds.append(f"j.id IN (SELECT {theirs} FROM job_parents WHERE {mine} = {mark})")
        args.append(relation[1])
    return (" WHERE " + " AND ".join(conds) if conds else ""), args


def summary(conn: Any, states: Sequence[str], workflows: Sequence[str],
            relation: tuple[str, int] | None = None) -> dict[str, int] | None:
    w = _where(states, workflows, _mark(conn), relation)
    if w is None:
        return None
    if isinstance(conn, sqlite3.Connection) and not workflows and relation is None:
        # SQLite counts one state's stretch of the (state, id) index without reading its entries: 14 such
        # counts take half the time of one GROUP BY, which compares every entry's state
        names = [s.strip().upper() for s in states] or STATES
        counts = {s: conn.execute("SELECT count(*) FROM jobs WHERE state = ?", [s]).fetchone()[0] for s in names}
    else:
        counts = dict(conn.execute(f"SELECT j.state, count(*) FROM jobs j{w[0]} GROUP BY j.state", w[1]).fetchall())
    return {s: counts[s] for s in STATES if counts.get(s)}


def listing(conn: Any, states: Sequence[str], workflows: Sequence[str], limit: int,
            relation: tuple[str, int] | None = None) -> tuple[list[tuple[Any, ...]], int] | None:
    """(rows of job_id, name, workflow, application, state; total matching), first `limit` by id."""
    w = _where(states, workflows, _mark(conn), relation)
    if w is None:
        return None
    q = (f"SELECT j.id, j.name, j.workflow, a.name, j.state, j.session_id IS NOT NULL, j.deadline, j.updated_at "
         f"FROM jobs j JOIN apps a ON a.id = j.app_id{w[0]} ORDER BY j.id"
         + (f" LIMIT {int(limit) + 1}" if limit else ""))
    rows = [(*r[:4], shown(r[4], bool(r[5]), r[6], r[7])) for r in conn.execute(q, w[1]).fetchall()]
    total = len(rows)
    if limit and total > limit:
        rows = rows[:limit]
        total = conn.execute(f"SELECT count(*) FROM jobs j{w[0]}", w[1]).fetchone()[0]
    return rows, total


# ------------------------------------------------------------------ show, history, queue ls, relatives
_JOB_KINDS = {c.name: c.kind for c in schema.JOB_COLUMNS}
_BATCH_JSON = ("filters",)


def _decoded(conn: Any, value: Any, kind: str) -> Any:
    """A column's value as SQLAlchemy gives it: JSON text decoded on SQLite (psycopg decodes it itself),
    0/1 as booleans."""
    if kind == "json" and isinstance(conn, sqlite3.Connection) and isinstance(value, str):
        return json.loads(value)
    if kind == "bool" and value is not None:
        return bool(value)
    return value


def resolve(conn: Any, ref: str) -> int | None:
    """The job id `ref` names (an id, a unique id prefix, a name or WORKFLOW/NAME), as Queries.resolve finds it;
    None when it names no job or several (the API path then says which)."""
    m, s = _mark(conn), ref.strip()
    if s.isdigit():
        if conn.execute(f"SELECT id FROM jobs WHERE id = {m}", [int(s)]).fetchone():
            return int(s)
        top = conn.execute("SELECT max(id) FROM jobs").fetchone()[0] or 0
        found: list[int] = []
        for extra in range(1, len(str(top)) - len(s) + 1):
            lo, hi = int(s) * 10**extra, (int(s) + 1) * 10**extra
            found += [r[0] for r in conn.execute(f"SELECT id FROM jobs WHERE id >= {m} AND id < {m} LIMIT 2",
                                                 [lo, hi]).fetchall()]
            if len(found) > 1:
                return None
    else:
        wf, _, name = s.rpartition("/")
        q, args = f"SELECT id FROM jobs WHERE name = {m}", [name]
        if wf:
            q, args = q + f" AND workflow = {m}", [name, wf]
        found = [r[0] for r in conn.execute(q + " LIMIT 2", args).fetchall()]
    return found[0] if len(found) == 1 else None


def job(conn: Any, job_id: int) -> dict[str, Any] | None:
    """Every field of one job, decoded as the API's Job has them, and `app` (its app's name)."""
    names = list(_JOB_KINDS)
    row = conn.execute(f"SELECT {', '.join('j.' + n for n in names)}, a.name FROM jobs j JOIN apps a "
                       f"ON a.id = j.app_id WHERE j.id = {_mark(conn)}", [job_id]).fetchone()
    if row is None:
        return None
    d = {n: _decoded(conn, v, _JOB_KINDS[n]) for n, v in zip(names, row, strict=False)}
    for k, make in schema.JSON_EMPTY.items():
        if d.get(k) is None:
            d[k] = make()
    d["app"] = row[-1]
    return d


def relatives(conn: Any, job_id: int, side: str, first: int | None
              ) -> tuple[dict[str, int], list[tuple[Any, ...]]]:
    """A job's parents (side "parents") or children: how many per state, and the first `first` of them (all:
    None) by id as (id, name, state)."""
    mine, theirs = ("child_id", "parent_id") if side == "parents" else ("parent_id", "child_id")
    sub = f"j.id IN (SELECT {theirs} FROM job_parents WHERE {mine} = {_mark(conn)})"
    counts = dict(conn.execute(f"SELECT j.state, count(*) FROM jobs j WHERE {sub} GROUP BY j.state",
                               [job_id]).fetchall())
    rows = conn.execute(f"SELECT j.id, j.name, j.state FROM jobs j WHERE {sub} ORDER BY j.id"
                        + ("" if first is None else f" LIMIT {int(first)}"),
                        [job_id]).fetchall()
    return {s: counts[s] for s in STATES if counts.get(s)}, [tuple(r) for r in rows]


EVENT_FIELDS = ("id", "job_id", "from_state", "to_state", "timestamp", "actor", "message", "data")


def history(conn: Any, job_id: int) -> list[dict[str, Any]]:
    """A job's events, oldest first, as dicts of the API's Event fields."""
    rows = conn.execute(f"SELECT {', '.join(EVENT_FIELDS)} FROM events WHERE job_id = {_mark(conn)} ORDER BY id",
                        [job_id]).fetchall()
    return [{**dict(zip(EVENT_FIELDS, r, strict=True)), "data": _decoded(conn, r[-1], "json")} for r in rows]


BATCH_FIELDS = ("id", "scheduler", "native_id", "queue", "project", "num_nodes", "wall_time_min", "job_mode",
                "state", "message", "filters", "workdir", "submitted_at", "started_at", "ended_at")


def batch_jobs(conn: Any, states: Sequence[str] | None) -> list[dict[str, Any]]:
    """The launcher batch jobs by id (only those in `states` when given), as dicts of their columns."""
    q, args = f"SELECT {', '.join(BATCH_FIELDS)} FROM batch_jobs", list(states or ())
    if states:
        q += f" WHERE state IN ({','.join([_mark(conn)] * len(args))})"
    out = []
    for r in conn.execute(q + " ORDER BY id", args).fetchall():
        d = dict(zip(BATCH_FIELDS, r, strict=True))
        for k in _BATCH_JSON:
            d[k] = _decoded(conn, d[k], "json")
        out.append(d)
    return out
