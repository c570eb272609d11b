"""Read-only answers for the commands people type most (`sluice ls`, `ls --summary`) straight from SQLite.

Why: importing SQLAlchemy costs ~0.4 s, more than the query itself takes on a million jobs. For the embedded
SQLite default and the simple filters (state, workflow), these functions use the standard library's sqlite3
on a read-only connection. Anything else (a server database, other filters, a schema that does not match)
returns None, and the caller takes the normal path through the API, which also gives the proper errors.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sluice import config

STATES = ("CREATED", "AWAITING_PARENTS", "READY", "STAGED_IN", "PREPROCESSED", "RUNNING", "RUN_DONE", "RUN_ERROR",
          "RUN_TIMEOUT", "RESTART_READY", "POSTPROCESSED", "JOB_FINISHED", "FAILED", "USER_KILLED")
"""The state names in machine order (a test keeps this equal to sluice.states.State)."""


def connect(workspace: str | None) -> sqlite3.Connection | None:
    """A read-only connection to the workspace's SQLite database with a current schema, else None."""
    try:
        cfg = config.load(config.find_workspace(workspace))
    except Exception:
        return None
    prefix = "sqlite:///"
    if not cfg.db_url.startswith(prefix):
        return None
    path = Path(cfg.db_url[len(prefix):])
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


def _where(states: Sequence[str], workflows: Sequence[str]) -> tuple[str, list[Any]] | None:
    names = [s.strip().upper() for s in states]
    if any(n not in STATES for n in names):
        return None  # let the API name the bad state
    conds, args = [], []
    if names:
        conds.append(f"j.state IN ({','.join('?' * len(names))})")
        args += names
    if workflows:
        conds.append(f"j.workflow IN ({','.join('?' * len(workflows))})")
        args += list(workflows)
    return (" WHERE " + " AND ".join(conds) if conds else ""), args


def summary(conn: sqlite3.Connection, states: Sequence[str], workflows: Sequence[str]) -> dict[str, int] | None:
    w = _where(states, workflows)
    if w is None:
        return None
    counts = dict(conn.execute(f"SELECT j.state, count(*) FROM jobs j{w[0]} GROUP BY j.state", w[1]).fetchall())
    return {s: counts[s] for s in STATES if counts.get(s)}


def listing(conn: sqlite3.Connection, states: Sequence[str], workflows: Sequence[str], limit: int
            ) -> tuple[list[tuple[Any, ...]], int] | None:
    """(rows of job_id, name, workflow, application, state; total matching), first `limit` by id."""
    w = _where(states, workflows)
    if w is None:
        return None
    q = (f"SELECT j.id, j.name, j.workflow, a.name, j.state FROM jobs j JOIN apps a ON a.id = j.app_id{w[0]} "
         "ORDER BY j.id" + (f" LIMIT {int(limit) + 1}" if limit else ""))
    rows = conn.execute(q, w[1]).fetchall()
    total = len(rows)
    if limit and total > limit:
        rows = rows[:limit]
        total = conn.execute(f"SELECT count(*) FROM jobs j{w[0]}", w[1]).fetchone()[0]
    return rows, total
