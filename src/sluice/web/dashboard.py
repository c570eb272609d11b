"""The dashboard's one object: the workspace, its settings, the shared snapshots, and the two actions.

Why one object: every request of every tab shares one Workspace (one connection pool) and one set of
snapshots, so ten open tabs polling every second still cost one count per interval. The routes (api.py for
JSON, pages.py for HTML) stay thin: they parse parameters and render what this returns.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sluice.api import views
from sluice.errors import UserError
from sluice.states import END, State, parse_state
from sluice.web.cache import Snapshot, Snapshots
from sluice.web.logs import Tail, job_log

if TYPE_CHECKING:
    from sluice.api import Job, Workspace

RETRYABLE = (State.FAILED.value, State.USER_KILLED.value)
"""What the dashboard's retry takes back to RESTART_READY (the CLI's `modify --set state=` can do more)."""


class NotFound(Exception):
    """No such job (or workflow): HTTP 404."""


class Forbidden(Exception):
    """An action while the server was started without --allow-actions: HTTP 403."""


@dataclass
class Settings:
    """How `sluice web` was started."""

    host: str = "127.0.0.1"
    port: int = 8765
    allow_actions: bool = False
    token: str | None = None
    """None: no token is asked for (loopback)."""
    min_interval: float = 0.5
    """The least time between two computations of the same count or graph."""
    graph_max_jobs: int = 150
    """Workflows with more jobs are drawn collapsed by app."""
    log_lines: int = 100


class Dashboard:
    """What the routes ask: counts, pages, jobs, graphs, logs, and the kill and retry actions."""

    def __init__(self, ws: Workspace, settings: Settings | None = None) -> None:
        self.ws = ws
        self.settings = settings or Settings()
        self.snaps = Snapshots(min_interval=self.settings.min_interval, factor=10.0)
        self.graphs = Snapshots(min_interval=max(5.0, self.settings.min_interval), factor=20.0, max_keys=16)

    def summary(self, workflow: str | None = None, max_age: float | None = None) -> Snapshot:
        """Jobs per state (all, or of one workflow), from a snapshot about a second old (older when counting
        takes long; `max_age` asks for one at most that old). The largest state of the last count (at first
        JOB_FINISHED, where campaigns end) is derived from the total (views.state_counts): exact whichever
        state it is, fastest when it is the largest."""
        def compute(old: Snapshot | None) -> dict[str, int]:
            big = max(old.value.items(), key=lambda kv: kv[1])[0] if old is not None and old.value else None
            return views.state_counts(self.ws, workflow=workflow, derive=big or State.JOB_FINISHED.value)

        return self.snaps.get(("summary", workflow), compute, max_age=max_age)

    def warm(self) -> None:
        """Count in the background once at start-up, so the first page opened does not wait for it."""
        threading.Thread(target=self._warm, name="sluice-web-warm", daemon=True).start()

    def _warm(self) -> None:
        try:
            self.summary()
            self.workflows()
        except Exception:  # the first request will say what is wrong
            pass

    def workflows(self) -> list[str]:
        snap = self.snaps.get(("workflows",), lambda _old: views.workflow_names(self.ws))
        return list(snap.value)

    def page(self, *, state: str | None = None, workflow: str | None = None, name: str | None = None,
             app: str | None = None, after: int | None = None, before: int | None = None,
             limit: int = 50) -> views.Page:
        """A page of the job table; `state` may list several, comma-separated (each checked)."""
        states = [parse_state(s).value for s in state.split(",") if s.strip()] if state else None
        if app:
            self.ws.app(app)  # an unknown app is the user's mistake, named with the fix
        return views.page(self.ws, state=states or None, workflow=workflow or None, name=name or None,
                          app=app or None, after=after, before=before, limit=limit)

    def job(self, job_id: int) -> Job:
        job = views.find_job(self.ws, job_id)
        if job is None:
            raise NotFound(f"no job {job_id}; see /api/jobs or `sluice ls`")
        return job

    def relatives(self, job_id: int, limit: int = 100) -> dict[str, Any]:
        self.job(job_id)
        return views.relatives(self.ws, job_id, limit)

    def history(self, job_id: int) -> list[Any]:
        self.job(job_id)
        return self.ws.history(job_id)

    def log(self, job: Job, stream: str, lines: int | None = None) -> Tail:
        return job_log(job.path, job.name, stream, lines or self.settings.log_lines)

    def graph(self, workflow: str) -> Snapshot:
        """The workflow's DAG (whole, or collapsed by app when large), cached: a collapsed graph of a million
        jobs is a GROUP BY over the edges, recomputed at most every 20x its cost."""
        self.check_workflow(workflow)
        return self.graphs.get(("graph", workflow),
                               lambda _old: views.workflow_graph(self.ws, workflow, self.settings.graph_max_jobs))

    def check_workflow(self, workflow: str) -> None:
        """NotFound unless some job belongs to the workflow (one indexed probe)."""
        if workflow not in self.workflows() and not views.page(self.ws, workflow=workflow, limit=1).rows:
            raise NotFound(f"no workflow {workflow!r}; see /api/workflows")

    def _check_actions(self) -> None:
        if not self.settings.allow_actions:
            raise Forbidden("this dashboard is read-only: start it with `sluice web --allow-actions` to kill "
                            "or retry jobs")

    def kill(self, job_id: int) -> list[int]:
        """Mark the job USER_KILLED (its launcher stops the process), as `sluice killjob` does."""
        self._check_actions()
        job = self.job(job_id)
        if job.state in END:
            raise UserError(f"job {job_id} already ended ({job.state}); nothing to kill")
        killed = self.ws.kill(job_id, message="killed from the dashboard")
        self.snaps.clear()
        return killed

    def retry(self, job_id: int) -> Job:
        """A FAILED or USER_KILLED job back to RESTART_READY, for the next launcher to run."""
        self._check_actions()
        job = self.job(job_id)
        if job.state not in RETRYABLE:
            raise UserError(f"job {job_id} is {job.state}; only {' or '.join(RETRYABLE)} jobs can be retried")
        done = self.ws.set_state(job_id, State.RESTART_READY.value, "retried from the dashboard")
        self.snaps.clear()
        return done

    def close(self) -> None:
        self.snaps.close()
        self.graphs.close()
