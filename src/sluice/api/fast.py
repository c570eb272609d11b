"""The CLI's quick reads (`sluice ls`, `ls --summary`), without importing SQLAlchemy (see store/fastread.py).

Each returns None when it cannot answer (another backend, another filter, a database that does not answer):
the caller then takes the Workspace's normal path, which also gives the proper errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sluice.store import fastread


def summary(workspace: str | None, states: Sequence[str], workflows: Sequence[str]) -> dict[str, int] | None:
    """Jobs per state, as Workspace.summary() gives them."""
    conn = fastread.connect(workspace)
    if conn is None:
        return None
    with conn:
        return fastread.summary(conn, states, workflows)


def listing(workspace: str | None, states: Sequence[str], workflows: Sequence[str], limit: int
            ) -> tuple[list[tuple[Any, ...]], int] | None:
    """The first `limit` jobs (id, name, workflow, app, state) and how many match."""
    conn = fastread.connect(workspace)
    if conn is None:
        return None
    with conn:
        return fastread.listing(conn, states, workflows, limit)
