"""Changing the campaign: adding jobs and dependencies, killing, modifying, re-running and removing jobs.

Every method checks everything before it writes, and writes in one transaction: a refused call changes nothing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, or_, select, update

from sluice import environ
from sluice.api import dag, specs
from sluice.api.apps import Apps
from sluice.api.insert import insert_jobs
from sluice.api.records import Job
from sluice.api.transitions import apply, children_of, fail_children, release_children, states_of
from sluice.errors import UserError
from sluice.states import END, LAUNCHER_ONLY, Change, S, check_path, parse_state
from sluice.store import db
from sluice.store.models import apps, job_parents, jobs

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from sluice.api.queries import Queries

_id = specs.job_id_of


class Jobs(Apps):
    """The write side of the Workspace, for jobs and their edges."""

    def add_job(self, name: str, app: str, *, parents: Iterable[int | Job] = (), **spec: Any) -> Job:
        """Add one job; see add_jobs for the fields. Parents are job ids or Job objects."""
        (job_id,) = self.add_jobs([{"name": name, "app": app, "parents": list(parents), **spec}])
        return self.job(job_id)

    def add_jobs(self, specs_: Iterable[Mapping[str, Any]]) -> list[int]:
        """Add many jobs in one transaction and return their ids, in order.

        Fields: name, app, workflow, params, args, workdir, num_nodes, ranks_per_node, threads_per_rank,
        gpus_per_rank, wall_time_min, environment, tags, data, max_retries, stage_in, stage_out, queue,
        machine, parents. All are checked before anything is written.
        """
        given = list(specs_)
        if not given:
            return []
        app_rows = self._apps_by_name({s.get("app", "") for s in given})
        now = time.time()
        rows, parent_lists = [], []
        for s in given:
            row, parents = specs.job_row(s, app_rows, now)
            rows.append(row)
            parent_lists.append(parents)
        return self._insert(rows, parent_lists, app_rows, now)

    @db.retry_conflicts
    def _insert(self, rows: list[dict[str, Any]], parent_lists: list[list[int]], app_rows: dict[str, dict[str, Any]],
                now: float) -> list[int]:
        """add_jobs' one transaction (run again whole if the server broke a deadlock with it)."""
        all_parents = sorted({p for ps in parent_lists for p in ps})
        with self.write() as conn:
            pstate = states_of(conn, all_parents, lock=True)
            missing = [p for p in all_parents if p not in pstate]
            if missing:
                raise UserError(f"parent job {missing[0]} does not exist; see `sluice ls`")
            ids = insert_jobs(conn, rows, parent_lists, pstate, app_rows, now, self.actor)
            dead = [p for p in all_parents if pstate[p] in (S.FAILED, S.USER_KILLED)]
            if dead:
                fail_children(conn, dead, self.actor)
        return ids

    def _apps_by_name(self, names: Iterable[str]) -> dict[str, dict[str, Any]]:
        names = set(names)
        with self.read() as conn:
            found = {r.name: dict(r._mapping) for r in conn.execute(select(apps).where(apps.c.name.in_(names)))}
        for n in sorted(names):
            if n not in found:
                raise UserError(
                    f"unknown app {n!r}; see `sluice app ls`, or register it with `sluice app add`"
                    if n else "a job needs an app (--app NAME)"
                )
        return found

    def add_dependency(self, parent: int | Job, child: int | Job) -> None:
        """child waits for parent. Self-dependencies and cycles are refused."""
        self.add_dependencies([(parent, child)])

    def add_dependencies(self, edges: Iterable[tuple[int | Job, int | Job]]) -> None:
        """Add many edges at once; the DAG is checked for cycles before anything is written."""
        pairs = [(_id(p), _id(c)) for p, c in edges]
        for p, c in pairs:
            if p == c:
                raise UserError(f"job {p} cannot depend on itself")
        if pairs:
            self._link(pairs)

    @db.retry_conflicts
    def _link(self, pairs: list[tuple[int, int]]) -> None:
        """add_dependencies' one transaction (run again whole if the server broke a deadlock with it)."""
        with self.write() as conn:
            nodes = sorted({x for e in pairs for x in e})
            st = states_of(conn, nodes, lock=True)
            for x in nodes:
                if x not in st:
                    raise UserError(f"job {x} does not exist; see `sluice ls`")
            dag.check_acyclic(conn, pairs)
            existing = dag.existing_edges(conn, pairs)
            new = [e for e in dict.fromkeys(pairs) if e not in existing]
            db.bulk_insert(conn, "job_parents", ["parent_id", "child_id"], new)  # raw executemany/COPY
            waiting = sorted({c for p, c in new if st[p] != S.JOB_FINISHED})
            dag.hold_children(conn, waiting, st, self.actor)
            dead = sorted({p for p, c in new if st[p] in (S.FAILED, S.USER_KILLED)})
            if dead:
                fail_children(conn, dead, self.actor)

    def spawn_child(self, name: str, app: str, *, parent: int | Job | None = None, **spec: Any) -> Job:
        """Add a job that depends on `parent` (default: the job this code runs in)."""
        if parent is None:
            parent = current_job_id()
        spec.setdefault("workflow", self.job(_id(parent)).workflow)
        return self.add_job(name, app, parents=[parent], **spec)

    @db.retry_conflicts
    def kill(self, ref: int | str | Job, *, recursive: bool = False,
             message: str = "killed by user") -> list[int]:
        """Mark a job USER_KILLED (a launcher running it stops the process); with recursive, its descendants
        too. Without it, children that still wait on it fail, saying why. Returns the ids killed."""
        root = ref.id if isinstance(ref, Job) else self.resolve(ref)
        with self.write() as conn:
            targets = [root] + (dag.descendants(conn, [root]) if recursive else [])
            st = states_of(conn, targets, lock=True)
            changes = [Change(j, st[j], S.USER_KILLED, message) for j in targets if st[j] not in END]
            if not changes and not recursive:
                raise UserError(f"job {root} already ended ({st[root]}); nothing to kill")
            apply(conn, changes, self.actor, strict=False)
        return [c.job_id for c in changes]

    @db.retry_conflicts
    def set_state(self, ref: int | str, state: str, message: str | None = None, *,
                  by_launcher: bool = False) -> Job:
        """Move a job to `state` through one legal transition (what `sluice modify --set state=` does).

        States that record a launcher's work (RUNNING, RUN_DONE, ...) are refused unless `by_launcher`: tools
        and tests that replay runs say so; a user who set RUNNING would leave the job waiting for no launcher.
        """
        jid = self.resolve(ref)
        with self.write() as conn:
            _set_state(self, conn, jid, state, message, by_launcher)
        return self.job(jid)

    MODIFIABLE = specs.MODIFIABLE

    @db.retry_conflicts
    def modify(self, ref: int | str | Job, **changes: Any) -> Job:
        """Change fields of a job; values are validated as in add_job, `state` only by a legal transition."""
        jid = ref.id if isinstance(ref, Job) else self.resolve(ref)
        bad = sorted(set(changes) - set(specs.MODIFIABLE))
        if bad:
            raise UserError(f"cannot modify {', '.join(bad)}; modifiable fields: {', '.join(specs.MODIFIABLE)}")
        state = changes.pop("state", None)
        values: dict[str, Any] = {}
        if changes:
            job = self.job(jid)
            if job.state == S.RUNNING:
                raise UserError(f"job {jid} is RUNNING; kill it first (`sluice killjob {jid}`) to change it")
            app_row = self._apps_by_name([job.app])
            merged = {**{k: getattr(job, k) for k in specs.MODIFIABLE if k != "state"}, **changes, "app": job.app}
            row, _ = specs.job_row(merged, app_row, time.time())
            values = {k: row[k] for k in changes}
        with self.write() as conn:  # fields and state together: a refused state change writes nothing
            if values:
                conn.execute(update(jobs).where(jobs.c.id == jid).values(**values, updated_at=time.time()))
            if state is not None:
                _set_state(self, conn, jid, str(state), None, False)
        return self.job(jid)

    @db.retry_conflicts
    def remove(self, ids: Sequence[int], *, force: bool = False) -> int:
        """Delete jobs (their events stay as provenance). RUNNING jobs are refused unless force."""
        ids = sorted(set(ids))
        with self.write() as conn:
            st = states_of(conn, ids, lock=True)
            running = [j for j in ids if st.get(j) == S.RUNNING]
            if running and not force:
                raise UserError(
                    f"{len(running)} job(s) are RUNNING (e.g. {running[0]}); kill them first with "
                    f"`sluice killjob`, or pass --force"
                )
            kids = [k for k in children_of(conn, ids) if k not in st]
            for i in range(0, len(ids), db.CHUNK):
                chunk = ids[i : i + db.CHUNK]
                conn.execute(delete(job_parents).where(or_(job_parents.c.parent_id.in_(chunk),
                                                           job_parents.c.child_id.in_(chunk))))
                conn.execute(delete(jobs).where(jobs.c.id.in_(chunk)))
            if kids:  # children no longer wait on what was removed
                dag.release(conn, kids, self.actor)
        return len(st)


def _set_state(ws: Queries, conn: Connection, jid: int, state: str, message: str | None,
               by_launcher: bool) -> None:
    target = parse_state(state)
    if not by_launcher:
        check_user_state(target, jid)
    cur = states_of(conn, [jid], lock=True)[jid]
    check_path(cur, (target,))
    apply(conn, [Change(jid, cur, target, message or f"set to {target} by user")], ws.actor)
    if target == S.JOB_FINISHED:
        release_children(conn, [jid], ws.actor)


def check_user_state(target: str, jid: int) -> None:
    """States that record a launcher's work are not a user's to set: nothing would move the job on."""
    if target in LAUNCHER_ONLY:
        raise UserError(f"only a launcher sets {target}: it records a run's progress; to run job {jid} "
                        "(again), set state=RESTART_READY (or `sluice retry`) and start a launcher")


def current_job_id() -> int:
    v = os.environ.get(environ.JOB_ID)
    if not v:
        raise UserError(f"not inside a sluice job (${environ.JOB_ID} is not set); pass parent= explicitly")
    return int(v)
