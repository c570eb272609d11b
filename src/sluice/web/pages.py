"""The HTML pages: overview, job table, job, workflows and their graphs, launchers; htmx fragments under /ui/.

Why server-rendered HTML with htmx: no front-end build and no JavaScript framework to keep up, pages that
work with JavaScript off (links and forms), and live parts that are just the same templates re-fetched every
second or two (`hx-trigger="every 1s"`). Jinja2 escapes every value, so job names, messages and log lines
cannot inject markup.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path as FsPath
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from sluice.api import views
from sluice.errors import UserError
from sluice.states import END, State
from sluice.web import svg
from sluice.web.api import Dash
from sluice.web.dashboard import RETRYABLE, Forbidden, NotFound

templates = Jinja2Templates(directory=str(FsPath(__file__).with_name("templates")))
router = APIRouter(include_in_schema=False)
JobId = Annotated[int, Path(ge=1)]
Text = Annotated[str | None, Query(max_length=255)]
Cursor = Annotated[int | None, Query(ge=0)]

GROUPS = [("waiting", ("CREATED", "AWAITING_PARENTS")),
          ("ready", ("READY", "STAGED_IN", "PREPROCESSED", "RESTART_READY")),
          ("running", ("RUNNING",)),
          ("finishing", ("RUN_DONE", "RUN_ERROR", "RUN_TIMEOUT", "POSTPROCESSED")),
          ("done", ("JOB_FINISHED",)),
          ("failed", ("FAILED", "USER_KILLED"))]
"""How the overview groups the fourteen states, in the order a job passes them."""


def ago(ts: float | None) -> str:
    """'12 s ago', '5 min ago': what a person scanning a live table wants."""
    if not ts:
        return "—"
    d = time.time() - float(ts)
    if d < 0:
        return "just now" if d > -5 else "in " + dur(-d)
    return "just now" if d < 1 else dur(d) + " ago"


def dur(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    s = float(seconds)
    if s < 60:
        return f"{s:.0f} s" if s >= 10 else f"{s:.1f} s"
    if s < 3600:
        return f"{s / 60:.0f} min"
    if s < 86400:
        return f"{s // 3600:.0f} h {s % 3600 / 60:.0f} min"
    return f"{s / 86400:.1f} d"


def when(ts: float | None) -> str:
    return datetime.fromtimestamp(float(ts)).strftime("%Y-%m-%d %H:%M:%S") if ts else "—"


def clock(ts: float | None) -> str:
    """The time of day, with the date when it is not today (and milliseconds: fast steps share a second)."""
    if not ts:
        return "—"
    t = datetime.fromtimestamp(float(ts))
    day = "" if t.date() == datetime.now().date() else t.strftime("%Y-%m-%d ")
    return day + t.strftime("%H:%M:%S.") + f"{t.microsecond // 1000:03d}"


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)


templates.env.filters.update(ago=ago, dur=dur, when=when, clock=clock, pretty=pretty,
                             num=lambda n: f"{int(n):,}" if n is not None else "—",
                             label=lambda s: str(s).lower().replace("_", " "),
                             total_of=lambda counts, states: sum(counts.get(s, 0) for s in states))
templates.env.globals.update(STATES=[s.value for s in State], GROUPS=GROUPS, END=[s.value for s in END],
                             RETRYABLE=RETRYABLE)


def page(request: Request, dash: Any, name: str, nav: str, status: int = 200, **ctx: Any) -> HTMLResponse:
    """Render a template with what every page needs (workspace, mode, navigation)."""
    base = {"ws_name": dash.ws.path.name, "ws_path": str(dash.ws.path), "nav": nav,
            "allow_actions": dash.settings.allow_actions, "now": time.time()}
    return templates.TemplateResponse(request, name, {**base, **ctx}, status_code=status)


def _fragment(request: Request) -> bool:
    return request.headers.get("hx-request") == "true" and request.headers.get("hx-boosted") != "true"


@router.get("/", response_class=HTMLResponse)
def overview(request: Request, dash: Dash) -> HTMLResponse:
    return page(request, dash, "index.html", "overview", snap=dash.summary(), workflows=dash.workflows()[:40],
                live=[s for s in views.recent_sessions(dash.ws, 20) if s["ended_at"] is None],
                events=views.recent_events(dash.ws, 15))


@router.get("/ui/summary", response_class=HTMLResponse)
def summary_fragment(request: Request, dash: Dash, workflow: Text = None, bar: bool = False) -> HTMLResponse:
    """The counts by state (`bar`: only the coloured bar and the total, for the workflow list)."""
    return page(request, dash, "_minibar.html" if bar else "_summary.html", "", snap=dash.summary(workflow or None),
                workflow=workflow)


@router.get("/ui/events", response_class=HTMLResponse)
def events_fragment(request: Request, dash: Dash) -> HTMLResponse:
    return page(request, dash, "_events.html", "", events=views.recent_events(dash.ws, 15))


@router.get("/jobs", response_class=HTMLResponse)
def jobs_page(request: Request, dash: Dash, state: Text = None, workflow: Text = None, name: Text = None,
              app: Text = None, after: Cursor = None, before: Cursor = None,
              limit: Annotated[int, Query(ge=1, le=500)] = 50) -> HTMLResponse:
    """The job table: filters, keyset pages (Next = after the last id, Previous = before the first)."""
    filters = {"state": state or "", "workflow": workflow or "", "name": name or "", "app": app or "",
               "limit": limit}
    try:
        pg = dash.page(state=state, workflow=workflow, name=name, app=app, after=after, before=before,
                       limit=limit)
        error = None
    except UserError as e:
        pg, error = views.Page([]), str(e)
    ctx: dict[str, Any] = {"pg": pg, "filters": filters, "error": error, "query": _query(filters),
           "cursor": {"after": after, "before": before}}
    if _fragment(request) and request.headers.get("hx-target") == "jobtable":
        return page(request, dash, "_jobtable.html", "jobs", **ctx)
    return page(request, dash, "jobs.html", "jobs", workflows=dash.workflows(),
                apps=[a.name for a in dash.ws.apps()], status=400 if error else 200, **ctx)


def _query(filters: dict[str, Any]) -> str:
    """The filters as a query string for the pager's links (empty ones and the default limit left out)."""
    return urlencode({k: v for k, v in filters.items() if v not in ("", None) and not (k == "limit" and v == 50)})


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, dash: Dash, job_id: JobId) -> HTMLResponse:
    job = dash.job(job_id)
    return page(request, dash, "job.html", "jobs", job=job, rel=dash.relatives(job_id, 50),
                history=dash.history(job_id), out=dash.log(job, "out"), err=dash.log(job, "err"),
                fields=_fields(job.to_dict()))


def _fields(d: dict[str, Any]) -> list[tuple[str, Any, bool]]:
    """(name, value, is_json) for the job page's field list, the empty ones left out."""
    skip = {"id", "name", "state", "app", "app_id", "workflow"}
    return [(k, pretty(v) if isinstance(v, dict | list) else v, isinstance(v, dict | list))
            for k, v in d.items() if k not in skip and v not in (None, "", {}, [])]


@router.post("/ui/jobs/{job_id}/{action}", response_class=HTMLResponse)
def job_action(request: Request, dash: Dash, job_id: JobId, action: str) -> Response:
    """The job page's Kill and Retry buttons: the action, then a reload of the page (or the one-line error)."""
    try:
        if action == "kill":
            dash.kill(job_id)
        elif action == "retry":
            dash.retry(job_id)
        else:
            raise NotFound(f"no action {action!r}; the actions are kill and retry")
    except (UserError, Forbidden, NotFound) as e:
        return HTMLResponse(f'<span class="err">{Markup.escape(str(e))}</span>', status_code=200)
    return HTMLResponse("", headers={"HX-Refresh": "true"})


@router.get("/workflows", response_class=HTMLResponse)
def workflows_page(request: Request, dash: Dash) -> HTMLResponse:
    return page(request, dash, "workflows.html", "workflows", workflows=dash.workflows())


@router.get("/workflows/{workflow}", response_class=HTMLResponse)
def workflow_page(request: Request, dash: Dash, workflow: str) -> HTMLResponse:
    dash.check_workflow(workflow)  # 404 for an unknown one; the graph comes in its own request
    return page(request, dash, "workflow.html", "workflows", workflow=workflow, snap=dash.summary(workflow))


@router.get("/ui/workflows/{workflow}/graph", response_class=HTMLResponse)
def graph_fragment(request: Request, dash: Dash, workflow: str) -> HTMLResponse:
    snap = dash.graph(workflow)
    return page(request, dash, "_graph.html", "", graph=snap.value, svg=Markup(svg.render(snap.value)),
                as_of=snap.taken_at, workflow=workflow, limit=dash.settings.graph_max_jobs)


@router.get("/launchers", response_class=HTMLResponse)
def launchers_page(request: Request, dash: Dash) -> HTMLResponse:
    return page(request, dash, "launchers.html", "launchers", sessions=views.recent_sessions(dash.ws, 50),
                batch=views.recent_batch_jobs(dash.ws, 50), stale_after=60.0)


@router.get("/docs", response_class=HTMLResponse)
def api_docs(request: Request, dash: Dash) -> HTMLResponse:
    """The JSON API, described from its own OpenAPI schema. Not Swagger UI: that loads its code from a CDN,
    and the login nodes this runs on often have no way out to the internet."""
    routes = []
    for path, ops in request.app.openapi()["paths"].items():
        for method, op in ops.items():
            params = [{"name": q["name"], "where": q["in"], "required": q.get("required", False),
                       "type": _type(q.get("schema", {})),
                       "doc": q.get("description") or q.get("schema", {}).get("description", "")}
                      for q in op.get("parameters", [])]
            routes.append({"method": method.upper(), "path": path, "summary": op.get("summary", ""),
                           "doc": op.get("description", ""), "params": params,
                           "codes": sorted(op.get("responses", {}))})
    return page(request, dash, "api.html", "api", routes=routes)


def _type(schema: dict[str, Any]) -> str:
    """A parameter's type in a few words: `integer >= 1 <= 1000`, `string (out|err)`, optional ones `or null`."""
    alts = schema.get("anyOf") or [schema]
    words = []
    for alt in alts:
        t = str(alt.get("type", "any"))
        for key, sign in (("minimum", ">="), ("maximum", "<="), ("exclusiveMinimum", ">")):
            if key in alt:
                t += f" {sign} {alt[key]}"
        if "pattern" in alt:
            t += f" matching {alt['pattern']}"
        if "maxLength" in alt:
            t += f", up to {alt['maxLength']} characters"
        words.append(t)
    return " or ".join(words)


def error_page(request: Request, dash: Any, status: int, message: str) -> HTMLResponse:
    if _fragment(request):
        return HTMLResponse(f'<div class="err">{Markup.escape(message)}</div>', status_code=status)
    return page(request, dash, "error.html", "", status=status, status_code=status, message=message)
