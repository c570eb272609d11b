"""The JSON API under /api/: what the pages show, for scripts. Every route reads through the Dashboard;
the two POSTs act only when the server was started with --allow-actions (403 otherwise).

Errors are one line, `{"error": "..."}`: a bad parameter 422, the user's mistake (an unknown state or app)
400, a missing job 404, the database down 503 (app.py maps them)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request

from sluice.api import views
from sluice.web.dashboard import Dashboard
from sluice.web.models import (
    ActionOut,
    ErrorOut,
    EventOut,
    GraphOut,
    JobPageOut,
    LogOut,
    RelativesOut,
    SummaryOut,
    WorkflowsOut,
)

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "the request names something that is not there (state, app)"},
    404: {"model": ErrorOut, "description": "no such job or workflow"},
    422: {"model": ErrorOut, "description": "a parameter has the wrong type or range"},
}
router = APIRouter(prefix="/api", responses=ERRORS)


def dashboard(request: Request) -> Dashboard:
    dash: Dashboard = request.app.state.dashboard
    return dash


Dash = Annotated[Dashboard, Depends(dashboard)]
JobId = Annotated[int, Path(ge=1, description="the job's id")]
Workflow = Annotated[str | None, Query(max_length=255, description="only this workflow's jobs")]
AppName = Annotated[str | None, Query(max_length=255, description="only the jobs of this app")]
Limit = Annotated[int, Query(ge=1, le=views.MAX_PAGE, description="how many at most")]


@router.get("/summary", response_model=SummaryOut, summary="jobs per state")
def summary(dash: Dash, workflow: Workflow = None,
            max_age: Annotated[float | None, Query(ge=0, description="the oldest counts you accept, seconds "
                                                                     "(default: the shared snapshot)")] = None
            ) -> dict[str, Any]:
    """Jobs per state of the whole campaign or one workflow, from a snapshot shared by every client."""
    snap = dash.summary(workflow or None, max_age)
    return {"counts": snap.value, "total": sum(snap.value.values()), "workflow": workflow or None,
            "as_of": snap.taken_at, "age_s": round(snap.age, 3)}


@router.get("/jobs", response_model=JobPageOut, summary="a page of jobs")
def jobs(dash: Dash,
         state: Annotated[str | None, Query(description="a state, or several comma-separated")] = None,
         workflow: Workflow = None,
         name: Annotated[str | None, Query(max_length=255, description="a name, or a glob: sim1*")] = None,
         app: AppName = None,
         after: Annotated[int | None, Query(ge=0, description="the `next` of the previous page")] = None,
         limit: Limit = 50) -> dict[str, Any]:
    """Jobs matching every filter, in id order, `limit` at a time: follow `next` (keyset paging, as fast on
    the last page of a million jobs as on the first)."""
    page = dash.page(state=state, workflow=workflow, name=name, app=app, after=after, limit=limit)
    return {"jobs": page.rows, "next": page.next_after}


@router.get("/jobs/{job_id}", summary="one job")
def job(dash: Dash, job_id: JobId) -> dict[str, Any]:
    """Every field of the job, and its working directory as `path`."""
    return dash.job(job_id).to_dict()


@router.get("/jobs/{job_id}/history", response_model=list[EventOut], summary="a job's state changes")
def history(dash: Dash, job_id: JobId) -> list[dict[str, Any]]:
    """Every transition of the job, oldest first: from, to, when, who, why."""
    return [asdict(e) for e in dash.history(job_id)]


@router.get("/jobs/{job_id}/relatives", response_model=RelativesOut, summary="a job's parents and children")
def relatives(dash: Dash, job_id: JobId,
              limit: Limit = 100) -> dict[str, Any]:
    """The first `limit` parents and children by id, and how many there are of each."""
    return dash.relatives(job_id, limit)


@router.get("/jobs/{job_id}/log", response_model=LogOut, summary="the tail of a job's stdout or stderr")
def log(dash: Dash, job_id: JobId, stream: Annotated[str, Query(pattern="^(out|err)$")] = "out",
        lines: Annotated[int, Query(ge=1, le=2000)] = 100) -> dict[str, Any]:
    """The last lines of `<name>.out` or `<name>.err` in the job's directory (from its last 256 KiB)."""
    return asdict(dash.log(dash.job(job_id), stream, lines))


@router.get("/workflows", response_model=WorkflowsOut, summary="workflow names")
def workflows(dash: Dash) -> dict[str, Any]:
    return {"workflows": dash.workflows()}


@router.get("/workflows/{workflow}/graph", response_model=GraphOut, summary="a workflow's DAG")
def graph(dash: Dash, workflow: str) -> dict[str, Any]:
    """Jobs and edges of a small workflow; of a large one, one node per app with counts by state."""
    snap = dash.graph(workflow)
    g = snap.value
    return {"workflow": g.workflow, "collapsed": g.collapsed, "nodes": g.nodes, "edges": g.edges,
            "outside": g.outside, "as_of": snap.taken_at}


@router.get("/events", response_model=list[EventOut], summary="the newest state changes")
def events(dash: Dash, limit: Limit = 20) -> list[dict[str, Any]]:
    return views.recent_events(dash.ws, limit)


@router.get("/sessions", summary="launcher sessions, newest first")
def sessions(dash: Dash, limit: Limit = 50) -> list[dict[str, Any]]:
    return views.recent_sessions(dash.ws, limit)


@router.get("/batch-jobs", summary="batch jobs, newest first")
def batch_jobs(dash: Dash, limit: Limit = 50) -> list[dict[str, Any]]:
    return views.recent_batch_jobs(dash.ws, limit)


ACTION_ERRORS: dict[int | str, dict[str, Any]] = {
    403: {"model": ErrorOut, "description": "the server was started without --allow-actions"}}


@router.post("/jobs/{job_id}/kill", response_model=ActionOut, responses=ACTION_ERRORS, summary="kill a job")
def kill(dash: Dash, job_id: JobId) -> dict[str, Any]:
    """Mark the job USER_KILLED (a launcher running it stops the process); its waiting children fail."""
    killed = dash.kill(job_id)
    return {"job": job_id, "state": dash.job(job_id).state, "affected": killed}


@router.post("/jobs/{job_id}/retry", response_model=ActionOut, responses=ACTION_ERRORS, summary="retry a job")
def retry(dash: Dash, job_id: JobId) -> dict[str, Any]:
    """A FAILED or USER_KILLED job back to RESTART_READY, for the next launcher to run."""
    done = dash.retry(job_id)
    return {"job": job_id, "state": done.state, "affected": [job_id]}

