"""Reads for the dashboard (`sluice web`) that the Workspace lacks, each bounded so a million jobs stay cheap.

Why a module of its own: a dashboard asks the same few questions every second from several browsers, so every
answer here touches a bounded number of rows through an index: pages of jobs by keyset (`id > after`, never
OFFSET, never a count of the whole table), workflow names by a loose index scan, a job's neighbours with a
limit, the newest sessions, batch jobs and events. The one unbounded read, a large workflow's graph collapsed
by app, is a GROUP BY that the caller caches. Everything is a read (`ws.read()`): the dashboard never writes
what a launcher needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Select, func, select

from sluice.api.queries import Queries
from sluice.api.records import Job, job_from_row
from sluice.states import State
from sluice.store.db import CHUNK
from sluice.store.models import apps, batch_jobs, events, job_parents, jobs, launcher_sessions

ROW_COLUMNS = ("id", "name", "workflow", "state", "session_id", "retry_count", "max_retries", "num_nodes",
               "updated_at", "state_message")
"""What a row of the job table shows (and /api/jobs returns): enough to scan a campaign, no JSON columns."""
MAX_PAGE = 1000
"""The largest page anyone may ask for: a page is one indexed range read, not an export."""

_ROW = select(*(jobs.c[c] for c in ROW_COLUMNS), apps.c.name.label("app")).join(apps, apps.c.id == jobs.c.app_id)
_FULL = select(*jobs.c, apps.c.name.label("app")).join(apps, apps.c.id == jobs.c.app_id)


@dataclass
class Page:
    """One page of jobs in id order, with the cursors of the pages beside it (None: there is none)."""

    rows: list[dict[str, Any]]
    next_after: int | None = None
    prev_before: int | None = None


def page(ws: Queries, *, state: str | Sequence[str] | None = None, workflow: str | None = None,
         name: str | None = None, app: str | None = None, after: int | None = None, before: int | None = None,
         limit: int = 50) -> Page:
    """Jobs matching the filters (as `ws.jobs` reads them) with id > `after` (or < `before`), `limit` of them.

    Keyset paging: each page is one range read on the primary key or the (state, id) index, as fast on the
    last page of a million jobs as on the first; one extra row says whether a next page exists.
    """
    limit = max(1, min(int(limit), MAX_PAGE))
    where = ws.filter(state=state, workflow=workflow, name=name, app=app)
    if before is not None:
        q = _ROW.where(where, jobs.c.id < before).order_by(jobs.c.id.desc()).limit(limit + 1)
        with ws.read() as conn:
            rows = [dict(r._mapping) for r in conn.execute(q)]
        more = len(rows) > limit
        rows = rows[:limit][::-1]
        return Page(rows, next_after=rows[-1]["id"] if rows else None,
                    prev_before=rows[0]["id"] if more and rows else None)
    q = _ROW.where(where, *([jobs.c.id > after] if after is not None else [])).order_by(jobs.c.id).limit(limit + 1)
    with ws.read() as conn:
        rows = [dict(r._mapping) for r in conn.execute(q)]
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, next_after=rows[-1]["id"] if more else None,
                prev_before=rows[0]["id"] if after is not None and rows else None)


def state_counts(ws: Queries, *, workflow: str | None = None, derive: str | None = None) -> dict[str, int]:
    """Jobs per state, as `ws.summary()` gives them, in one snapshot, faster on SQLite.

    SQLite's GROUP BY decodes and compares every index entry (~0.15-0.25 s for a million jobs), while a
    `count(*)` over one state's range of the (state, id) index only steps through it and `count(*)` of the
    whole table counts b-tree cells page by page. So with no workflow filter, SQLite counts each state by its
    range, and the state named by `derive` (the largest one last time, usually JOB_FINISHED) is the total minus
    the others: exact, since all of it is one read transaction. The servers and filtered counts GROUP BY.
    """
    with ws.read() as conn:
        if workflow is not None or conn.dialect.name != "sqlite":
            where = ws.filter(workflow=workflow)
            got = {str(s): int(n) for s, n in conn.execute(select(jobs.c.state, func.count()).where(where)
                                                           .group_by(jobs.c.state))}
        else:
            one = select(func.count()).select_from(jobs)
            got = {s.value: int(conn.execute(one.where(jobs.c.state == s.value)).scalar() or 0)
                   for s in State if s.value != derive}
            if derive in State.__members__:
                got[str(derive)] = int(conn.execute(one).scalar() or 0) - sum(got.values())
    return {s.value: got[s.value] for s in State if got.get(s.value)}


def find_job(ws: Queries, job_id: int) -> Job | None:
    """The job with this id, or None (a missing job is a 404 to the dashboard, not a user's typo)."""
    with ws.read() as conn:
        row = conn.execute(_FULL.where(jobs.c.id == job_id)).first()
    return None if row is None else job_from_row(row, ws)


def relatives(ws: Queries, job_id: int, limit: int = 100) -> dict[str, Any]:
    """A job's parents and children (the first `limit` of each by id, as table rows) and how many there are:
    a fan-out of 100,000 children must not become a 100,000-row page."""
    out: dict[str, Any] = {}
    for side, mine, theirs in (("parents", job_parents.c.child_id, job_parents.c.parent_id),
                               ("children", job_parents.c.parent_id, job_parents.c.child_id)):
        ids = select(theirs).where(mine == job_id)
        with ws.read() as conn:
            out[side] = [dict(r._mapping) for r in
                         conn.execute(_ROW.where(jobs.c.id.in_(ids)).order_by(jobs.c.id).limit(limit))]
            out[f"n_{side}"] = int(conn.execute(select(func.count()).where(mine == job_id)
                                                .select_from(job_parents)).scalar() or 0)
    return out


def workflow_names(ws: Queries, limit: int = 500) -> list[str]:
    """Distinct workflow names, by a loose index scan: one indexed `workflow > last` probe per name, so a
    million jobs in five workflows cost five probes, not a scan (a DISTINCT or GROUP BY reads every row)."""
    out: list[str] = []
    step = select(jobs.c.workflow).order_by(jobs.c.workflow).limit(1)
    with ws.read() as conn:
        cur = conn.execute(step).scalar()
        while cur is not None and len(out) < limit:
            out.append(str(cur))
            cur = conn.execute(step.where(jobs.c.workflow > cur)).scalar()
    return out


@dataclass
class Graph:
    """A workflow's DAG: jobs and their edges, or (`collapsed`) one node per app with counts by state and
    edges counted between apps. `outside` counts edges to or from jobs of other workflows."""

    workflow: str
    collapsed: bool
    nodes: list[dict[str, Any]] = field(default_factory=list)
    edges: list[dict[str, Any]] = field(default_factory=list)
    outside: int = 0


def workflow_graph(ws: Queries, workflow: str, max_jobs: int = 200) -> Graph:
    """The DAG of a workflow: whole when it has at most `max_jobs` jobs (found by reading max_jobs + 1 ids,
    never by counting the workflow), else collapsed by app."""
    cond = jobs.c.workflow == workflow
    with ws.read() as conn:
        rows = [dict(r._mapping) for r in conn.execute(
            select(jobs.c.id, jobs.c.name, jobs.c.state, apps.c.name.label("app"))
            .join(apps, apps.c.id == jobs.c.app_id).where(cond).order_by(jobs.c.id).limit(max_jobs + 1))]
        if len(rows) <= max_jobs:
            return _whole(conn, workflow, rows)
        return _collapsed(conn, workflow, cond)


def _whole(conn: Any, workflow: str, rows: list[dict[str, Any]]) -> Graph:
    ids = [r["id"] for r in rows]
    mine = set(ids)
    pairs: set[tuple[int, int]] = set()
    for i in range(0, len(ids), CHUNK):
        part = ids[i : i + CHUNK]
        for col in (job_parents.c.child_id, job_parents.c.parent_id):
            pairs.update((p, c) for p, c in conn.execute(select(job_parents.c.parent_id, job_parents.c.child_id)
                                                         .where(col.in_(part))))
    inside = sorted((p, c) for p, c in pairs if p in mine and c in mine)
    return Graph(workflow, False, rows, [{"parent": p, "child": c} for p, c in inside], len(pairs) - len(inside))


def _collapsed(conn: Any, workflow: str, cond: ColumnElement[bool]) -> Graph:
    counts: dict[str, dict[str, int]] = {}
    q: Select[Any] = (select(apps.c.name, jobs.c.state, func.count()).join(apps, apps.c.id == jobs.c.app_id)
                      .where(cond).group_by(apps.c.name, jobs.c.state))
    for app, state, n in conn.execute(q):
        counts.setdefault(str(app), {})[str(state)] = int(n)
    p, c = jobs.alias("p"), jobs.alias("c")
    pa, ca = apps.alias("pa"), apps.alias("ca")
    eq = (select(pa.c.name, ca.c.name, p.c.workflow, c.c.workflow, func.count())
          .select_from(job_parents.join(p, p.c.id == job_parents.c.parent_id)
                       .join(c, c.c.id == job_parents.c.child_id)
                       .join(pa, pa.c.id == p.c.app_id).join(ca, ca.c.id == c.c.app_id))
          .where((p.c.workflow == workflow) | (c.c.workflow == workflow))
          .group_by(pa.c.name, ca.c.name, p.c.workflow, c.c.workflow))
    edges, outside = [], 0
    for pname, cname, pwf, cwf, n in conn.execute(eq):
        if pwf == workflow and cwf == workflow:
            edges.append({"parent": str(pname), "child": str(cname), "count": int(n)})
        else:
            outside += int(n)
    nodes = [{"id": a, "app": a, "counts": cs, "total": sum(cs.values())} for a, cs in sorted(counts.items())]
    return Graph(workflow, True, nodes, sorted(edges, key=lambda e: (e["parent"], e["child"])), outside)


def recent_events(ws: Queries, limit: int = 20, after: int | None = None) -> list[dict[str, Any]]:
    """The newest state changes (with the job's name if it still exists): the dashboard's activity feed."""
    q = (select(events.c.id, events.c.job_id, events.c.from_state, events.c.to_state, events.c.timestamp,
                events.c.actor, events.c.message, jobs.c.name, jobs.c.workflow)
         .select_from(events.outerjoin(jobs, jobs.c.id == events.c.job_id))
         .order_by(events.c.id.desc()).limit(max(1, min(limit, MAX_PAGE))))
    if after is not None:
        q = q.where(events.c.id > after)
    with ws.read() as conn:
        return [dict(r._mapping) for r in conn.execute(q)]


def recent_sessions(ws: Queries, limit: int = 50) -> list[dict[str, Any]]:
    """Launcher sessions, newest first: a campaign of many allocations keeps thousands of ended ones."""
    q = select(launcher_sessions).order_by(launcher_sessions.c.id.desc()).limit(max(1, min(limit, MAX_PAGE)))
    with ws.read() as conn:
        return [dict(r._mapping) for r in conn.execute(q)]


def recent_batch_jobs(ws: Queries, limit: int = 50) -> list[dict[str, Any]]:
    """Batch jobs the service (or `sluice queue submit`) submitted, newest first."""
    q = select(batch_jobs).order_by(batch_jobs.c.id.desc()).limit(max(1, min(limit, MAX_PAGE)))
    with ws.read() as conn:
        return [dict(r._mapping) for r in conn.execute(q)]
