"""Reading the campaign: jobs by filter, counts, names and id prefixes, the graph, history and events."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select

from sluice.api import batch
from sluice.api.base import WorkspaceBase
from sluice.api.records import App, Event, Job, app_from_row, job_from_row
from sluice.errors import UserError
from sluice.states import State, parse_state
from sluice.store.db import CHUNK
from sluice.store.models import apps, events, job_parents, jobs, launcher_sessions

_JOB_SELECT = select(*jobs.c, apps.c.name.label("app")).join(apps, apps.c.id == jobs.c.app_id)


class Queries(WorkspaceBase):
    """The read side of the Workspace: jobs, apps, the graph, history and events."""

    def app(self, name: str) -> App:
        with self.read() as conn:
            row = conn.execute(select(apps).where(apps.c.name == name)).first()
        if row is None:
            raise UserError(f"unknown app {name!r}; see `sluice app ls`, or register it with `sluice app add`")
        return app_from_row(row)

    def apps(self) -> list[App]:
        with self.read() as conn:
            return [app_from_row(r) for r in conn.execute(select(apps).order_by(apps.c.name))]

    def job(self, ref: int | str) -> Job:
        jid = self.resolve(ref)
        with self.read() as conn:
            row = conn.execute(_JOB_SELECT.where(jobs.c.id == jid)).first()
        if row is None:
            raise UserError(f"no job {ref}; see `sluice ls`")
        return job_from_row(row, self)

    def jobs(self, *, state: str | Iterable[str] | None = None,
             workflow: str | Iterable[str] | None = None, app: str | None = None,
             tags: Mapping[str, str] | None = None, name: str | None = None, ids: Iterable[int] | None = None,
             session: int | None = None, limit: int | None = None, offset: int = 0, order: str = "id") -> list[Job]:
        """Jobs matching every filter given, ordered by id (or `-id`, `name`, `state`, `updated_at`)."""
        where = self.filter(state=state, workflow=workflow, app=app, tags=tags, name=name, ids=ids,
                            session=session)
        col = order.lstrip("-")
        if col not in jobs.c:
            raise UserError(f"cannot order by {col!r}; use a job field such as id, name, state, updated_at")
        ordering = jobs.c[col].desc() if order.startswith("-") else jobs.c[col]
        q = _JOB_SELECT.where(where).order_by(ordering, jobs.c.id).offset(offset)
        if limit is not None:
            q = q.limit(limit)
        with self.read() as conn:
            return [job_from_row(r, self) for r in conn.execute(q)]

    def filter(self, *, state: str | Iterable[str] | None = None,
               workflow: str | Iterable[str] | None = None, app: str | None = None,
               tags: Mapping[str, str] | None = None, name: str | None = None,
               ids: Iterable[int] | None = None, session: int | None = None) -> ColumnElement[bool]:
        """The WHERE clause shared by ls, rm and every query, so they always select the same jobs."""
        conds: list[ColumnElement[bool]] = []
        if state is not None:
            states = [state] if isinstance(state, str) else list(state)
            conds.append(jobs.c.state.in_([parse_state(s).value for s in states]))
        if workflow is not None:
            wfs = [workflow] if isinstance(workflow, str) else list(workflow)
            conds.append(jobs.c.workflow.in_(wfs))
        if app is not None:
            conds.append(jobs.c.app_id == self.app(app).id)
        if name is not None:
            conds.append(jobs.c.name.like(name.replace("*", "%")) if "*" in name else jobs.c.name == name)
        if ids is not None:
            conds.append(jobs.c.id.in_(list(ids)))
        if session is not None:
            conds.append(jobs.c.session_id == session)
        for k, v in (tags or {}).items():
            conds.append(jobs.c.tags[k].as_string() == str(v))
        return and_(*conds) if conds else and_(True)

    def ids(self, **filters: Any) -> list[int]:
        """Ids of the jobs matching the filters of `jobs()`, without loading the rows."""
        with self.read() as conn:
            return list(conn.execute(select(jobs.c.id).where(self.filter(**filters)).order_by(jobs.c.id)).scalars())

    def workflows(self) -> dict[str, int]:
        """Workflow names with their job counts."""
        q = select(jobs.c.workflow, func.count()).group_by(jobs.c.workflow).order_by(jobs.c.workflow)
        with self.read() as conn:
            return {r[0]: int(r[1]) for r in conn.execute(q)}

    def count(self, **filters: Any) -> int:
        with self.read() as conn:
            return int(conn.execute(select(func.count()).select_from(jobs).where(self.filter(**filters))).scalar()
                       or 0)

    def summary(self, **filters: Any) -> dict[str, int]:
        """Jobs per state, in the order of the state machine; states with no jobs are left out."""
        q = select(jobs.c.state, func.count()).where(self.filter(**filters)).group_by(jobs.c.state)
        with self.read() as conn:
            counts: dict[str, int] = {r[0]: int(r[1]) for r in conn.execute(q)}
        return {s.value: counts[s.value] for s in State if counts.get(s.value)}

    def resolve(self, ref: int | str | Job, workflow: str | None = None) -> int:
        """A job id from an id, a unique prefix of an id's decimal form, or a name (within `workflow`)."""
        if isinstance(ref, Job):
            return ref.id
        if isinstance(ref, int):
            return ref
        s = str(ref).strip()
        with self.read() as conn:
            if s.isdigit():
                if conn.execute(select(jobs.c.id).where(jobs.c.id == int(s))).first():
                    return int(s)
                found = _id_prefix(conn, s)
                kind = "id prefix"
            else:
                wf, _, nm = s.rpartition("/") if "/" in s and workflow is None else (workflow, "", s)
                q = select(jobs.c.id, jobs.c.workflow).where(jobs.c.name == nm)
                if wf:
                    q = q.where(jobs.c.workflow == wf)
                found = [r.id for r in conn.execute(q.limit(11))]
                kind = "name"
        if not found:
            raise UserError(f"no job with {kind} {s!r}; see `sluice ls`")
        if len(found) > 1:
            shown = ", ".join(map(str, found[:10]))
            raise UserError(f"{kind} {s!r} is ambiguous: jobs {shown}; give the full id or WORKFLOW/NAME")
        return found[0]

    def parents(self, job_id: int) -> list[Job]:
        sub = select(job_parents.c.parent_id).where(job_parents.c.child_id == job_id)
        return self._jobs_where(jobs.c.id.in_(sub))

    def children(self, job_id: int) -> list[Job]:
        sub = select(job_parents.c.child_id).where(job_parents.c.parent_id == job_id)
        return self._jobs_where(jobs.c.id.in_(sub))

    def edges(self, ids: Sequence[int]) -> list[tuple[int, int]]:
        """(parent, child) edges touching the given jobs."""
        out: set[tuple[int, int]] = set()
        with self.read() as conn:
            for i in range(0, len(ids), CHUNK):
                chunk = list(ids[i : i + CHUNK])
                q = select(job_parents).where(or_(job_parents.c.parent_id.in_(chunk),
                                                  job_parents.c.child_id.in_(chunk)))
                out.update((r.parent_id, r.child_id) for r in conn.execute(q))
        return sorted(out)

    def _jobs_where(self, cond: ColumnElement[bool]) -> list[Job]:
        with self.read() as conn:
            return [job_from_row(r, self) for r in conn.execute(_JOB_SELECT.where(cond).order_by(jobs.c.id))]

    def history(self, ref: int | str) -> list[Event]:
        jid = self.resolve(ref)
        with self.read() as conn:
            rows = conn.execute(select(events).where(events.c.job_id == jid).order_by(events.c.id))
            return [Event(**dict(r._mapping)) for r in rows]

    def events(self, *, since: float | None = None, to_state: str | None = None) -> list[Event]:
        q = select(events).order_by(events.c.id)
        if since is not None:
            q = q.where(events.c.timestamp >= since)
        if to_state is not None:
            q = q.where(events.c.to_state == parse_state(to_state).value)
        with self.read() as conn:
            return [Event(**dict(r._mapping)) for r in conn.execute(q)]

    def run_events(self, *, workflow: str | None = None) -> list[Event]:
        """The events a report needs, in time order: starts, ends of runs, finishes and failures."""
        q = select(events)
        if workflow is not None:
            q = q.join(jobs, jobs.c.id == events.c.job_id).where(jobs.c.workflow == workflow)
        ends = [State.RUNNING, State.JOB_FINISHED, State.FAILED, State.RUN_ERROR, State.RUN_TIMEOUT]
        q = q.where(events.c.to_state.in_(ends) | (events.c.from_state == State.RUNNING))
        with self.read() as conn:
            rows = conn.execute(q.order_by(events.c.timestamp, events.c.id)).all()
        return [Event(**{k: r._mapping[k] for k in events.c.keys()}) for r in rows]

    def batch_jobs(self, *, active_only: bool = False) -> list[dict[str, Any]]:
        """Launcher batch jobs submitted for this workspace; `active_only`: those not ended (batch.ACTIVE)."""
        return batch.listing(self, active_only=active_only)

    def sessions(self, *, live_only: bool = False) -> list[dict[str, Any]]:
        q = select(launcher_sessions).order_by(launcher_sessions.c.id)
        if live_only:
            q = q.where(launcher_sessions.c.ended_at.is_(None))
        with self.read() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]


def _id_prefix(conn: Any, digits: str) -> list[int]:
    """Ids whose decimal form starts with digits: one range query on the primary key per extra length."""
    top = conn.execute(select(func.max(jobs.c.id))).scalar() or 0
    base, found = int(digits), list[int]()
    for extra in range(1, len(str(top)) - len(digits) + 1):
        lo, hi = base * 10**extra, (base + 1) * 10**extra
        found += conn.execute(select(jobs.c.id).where(jobs.c.id >= lo, jobs.c.id < hi).limit(11)).scalars().all()
        if len(found) > 10:
            break
    return found
