"""The CLI's quick reads (`ls`, `ls --summary`, `show`, `history`, `queue ls`), without importing SQLAlchemy
(see store/fastread.py): importing it costs more than these commands' queries on a million jobs.

Each returns None when it cannot answer (another backend, another filter, a reference that names no job or
several, a database that does not answer): the caller then takes the Workspace's normal path, which also gives
the proper errors. What they return has the shape the normal path gives (Job.to_dict(), Event fields).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sluice.store import fastread

BATCH_ACTIVE = ("submitting", "queued", "running", "unknown")
"""sluice.api.batch.ACTIVE (which imports SQLAlchemy); tests/cli/test_progress.py keeps them equal."""

Relation = tuple[str, int]
"""("parents", job id) or ("children", job id): only that job's parents or children."""


def job_path(data_dir: Path, workdir: str | None, workflow: str, name: str, job_id: int) -> Path:
    """sluice.api.records.job_path, whose module costs ~10 ms of dataclass building to import; tests keep the
    two equal."""
    if workdir:
        p = Path(workdir)
        return p if p.is_absolute() else data_dir / p
    return data_dir / workflow / f"{name}_{job_id}"


def summary(workspace: str | None, states: Sequence[str], workflows: Sequence[str],
            relation: Relation | None = None) -> dict[str, int] | None:
    """Jobs per state, as Workspace.summary() gives them."""
    conn = fastread.connect(workspace)
    if conn is None:
        return None
    with conn:
        return fastread.summary(conn, states, workflows, relation)


def listing(workspace: str | None, states: Sequence[str], workflows: Sequence[str], limit: int,
            relation: Relation | None = None) -> tuple[list[tuple[Any, ...]], int] | None:
    """The first `limit` jobs (id, name, workflow, app, state) and how many match."""
    conn = fastread.connect(workspace)
    if conn is None:
        return None
    with conn:
        return fastread.listing(conn, states, workflows, limit, relation)


def resolve(workspace: str | None, ref: str) -> int | None:
    """The id of the one job `ref` names (see Queries.resolve)."""
    conn = fastread.connect(workspace)
    if conn is None:
        return None
    with conn:
        return fastread.resolve(conn, ref)


def job_view(workspace: str | None, ref: str, first: int | None) -> dict[str, Any] | None:
    """What `show` prints: {"job": Job.to_dict(), "parents"/"children": (counts by state, the first `first`
    as (id, name, state); all when None), "history": [Event fields]}."""
    got = fastread.open_workspace(workspace)
    if got is None:
        return None
    conn, cfg = got
    with conn:
        jid = fastread.resolve(conn, ref)
        job = None if jid is None else fastread.job(conn, jid)
        if jid is None or job is None:
            return None
        job["path"] = str(job_path(cfg.data_dir, job["workdir"], job["workflow"], job["name"], jid))
        return {"job": job, "parents": fastread.relatives(conn, jid, "parents", first),
                "children": fastread.relatives(conn, jid, "children", first),
                "history": fastread.history(conn, jid)}


def history(workspace: str | None, ref: str) -> list[dict[str, Any]] | None:
    """A job's events, oldest first (Event fields)."""
    conn = fastread.connect(workspace)
    if conn is None:
        return None
    with conn:
        jid = fastread.resolve(conn, ref)
        return None if jid is None else fastread.history(conn, jid)


def batch_jobs(workspace: str | None, active_only: bool) -> list[dict[str, Any]] | None:
    """Workspace.batch_jobs(active_only=...)."""
    conn = fastread.connect(workspace)
    if conn is None:
        return None
    with conn:
        return fastread.batch_jobs(conn, BATCH_ACTIVE if active_only else None)
