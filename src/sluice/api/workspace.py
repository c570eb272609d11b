"""The Workspace: a campaign's directory and database, and the one door to that database.

    ws = Workspace.open()                       # --workspace, $SLUICE_WORKSPACE, or cwd and its parents
    ws.add_app("sim", "simulate --temp {temp}")
    a = ws.add_job("a", app="sim", params={"temp": 300})
    b = ws.add_job("b", app="sim", params={"temp": 310}, parents=[a])
    ws.jobs(state="READY", workflow="scan")

Its methods come in three parts (apps.py, jobs.py, queries.py); the launcher's and the service's batched
statements are functions of claims.py, sessions.py, transitions.py and batch.py that take the Workspace.
Every bad input raises UserError with one line naming the problem and the fix, before anything is written.
"""

from __future__ import annotations

from typing import Any

from sluice.api.bulk import Bulk
from sluice.api.jobs import current_job_id
from sluice.api.progress import Progress
from sluice.api.records import Job


class Workspace(Bulk, Progress):
    """A campaign: a directory with sluice.toml, data/, logs/, and the job database it names.

    Reads are Queries' (queries.py), app changes Apps' (apps.py), job changes Jobs' (jobs.py), bulk verbs
    Bulk's (bulk.py); opening and transactions are WorkspaceBase's (base.py).
    """


def current_job() -> Job:
    """The job this process runs as, from $SLUICE_JOB_ID and $SLUICE_WORKSPACE (set by the launcher)."""
    return Workspace.open().job(current_job_id())


def spawn_child(name: str, app: str, **spec: Any) -> Job:
    """From inside a running job: add a child of it to the same workspace."""
    return Workspace.open().spawn_child(name, app, **spec)
