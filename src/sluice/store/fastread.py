"""Read-only answers for the commands people type most (`sluice ls`, `ls --summary`) without SQLAlchemy.

Why: importing SQLAlchemy costs ~0.25-0.4 s, more than the query itself takes on a million jobs. For the simple
filters (state, workflow) these functions read the embedded SQLite default through the standard library's sqlite3
(read-only), and PostgreSQL through psycopg directly. Anything else (MariaDB, other filters, a server that does not
answer, a schema that does not match) returns None, and the caller takes the normal path through the API, which
also gives the proper errors.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sluice import config
from sluice.states import State, shown

STATES = tuple(s.value for s in State)
"""The state names in machine order."""

_PG = ("postgresql+psycopg://", "postgresql://")


def connect(workspace: str | None) -> Any | None:
    """A read-only DB-API connection (sqlite3 or psycopg) to the workspace's database with a current schema,
    else None. Either works as a context manager and has `execute`."""
    try:
        cfg = config.load(config.find_workspace(workspace))
    except Exception:
        return None
    url = cfg.db_url
    if url.startswith(_PG):
        return _connect_pg("postgresql://" + url.split("://", 1)[1])
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
    return conn


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


def _where(states: Sequence[str], workflows: Sequence[str], mark: str) -> tuple[str, list[Any]] | None:
    names = [s.strip().upper() for s in states]
    if any(n not in STATES for n in names):
        return None  # let the API name the bad state
    conds, args = [], []
    if names:
        conds.append(f"j.state IN ({','.join([mark] * len(names))})")
        args += names
    if workflows:
        conds.append(f"j.workflow IN ({','.join([mark] * len(workflows))})")
        args += list(workflows)
    return (" WHERE " + " AND ".join(conds) if conds else ""), args


def summary(conn: Any, states: Sequence[str], workflows: Sequence[str]) -> dict[str, int] | None:
    w = _where(states, workflows, _mark(conn))
    if w is None:
        return None
    counts = dict(conn.execute(f"SELECT j.state, count(*) FROM jobs j{w[0]} GROUP BY j.state", w[1]).fetchall())
    return {s: counts[s] for s in STATES if counts.get(s)}


def listing(conn: Any, states: Sequence[str], workflows: Sequence[str], limit: int
            ) -> tuple[list[tuple[Any, ...]], int] | None:
    """(rows of job_id, name, workflow, application, state; total matching), first `limit` by id."""
    w = _where(states, workflows, _mark(conn))
    if w is None:
        return None
    q = (f"SELECT j.id, j.name, j.workflow, a.name, j.state, j.session_id IS NOT NULL FROM jobs j "
         f"JOIN apps a ON a.id = j.app_id{w[0]} ORDER BY j.id" + (f" LIMIT {int(limit) + 1}" if limit else ""))
    rows = [(*r[:4], shown(r[4], bool(r[5]))) for r in conn.execute(q, w[1]).fetchall()]
    total = len(rows)
    if limit and total > limit:
        rows = rows[:limit]
        total = conn.execute(f"SELECT count(*) FROM jobs j{w[0]}", w[1]).fetchone()[0]
    return rows, total
