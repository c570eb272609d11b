"""Steering a campaign in bulk: kill, modify and retry many jobs, each call one transaction.

The CLI's `killjob`, `modify` and `retry` select jobs with the filters of `ls` and call these; a refused
change (a RUNNING job to modify, an illegal state) writes nothing at all.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select, update

from sluice.api import dag, specs
from sluice.api.jobs import Jobs, check_user_state
from sluice.api.transitions import apply, children_of, states_of
from sluice.errors import UserError
from sluice.states import END, Change, S, parse_state, ready_path
from sluice.store.db import CHUNK, retry_conflicts
from sluice.store.models import apps, job_parents, jobs

RETRYABLE = frozenset({S.FAILED.value, S.USER_KILLED.value})


class Bulk(Jobs):
    """The Workspace's bulk verbs."""

    @retry_conflicts
    def kill_jobs(self, ids: Sequence[int], *, recursive: bool = False, message: str = "killed by user") -> list[int]:
        """USER_KILLED for every job of `ids` (and, with recursive, their descendants) not ended yet; children
        waiting on them fail, saying why."""
        with self.write() as conn:
            targets = sorted(set(ids) | (set(dag.descendants(conn, sorted(set(ids)))) if recursive else set()))
            st = states_of(conn, targets, lock=True)
            changes = [Change(j, s, S.USER_KILLED, message) for j, s in st.items() if s not in END]
            apply(conn, changes, self.actor, strict=False)
        return [c.job_id for c in changes]

    @retry_conflicts
    def modify_jobs(self, ids: Sequence[int], **changes: Any) -> int:
        """Set the same fields on many jobs, each value checked as add_jobs checks it; `state` by a legal
        transition. All or nothing: one RUNNING job, or one refused state, and no job changes."""
        bad = sorted(set(changes) - set(specs.MODIFIABLE))
        if bad:
            raise UserError(f"cannot modify {', '.join(bad)}; modifiable fields: {', '.join(specs.MODIFIABLE)}")
        state = changes.pop("state", None)
        ids = sorted(set(ids))
        now = time.time()
        with self.write() as conn:
            st = states_of(conn, ids, lock=True)
            if changes:
                running = [j for j in ids if st.get(j) == S.RUNNING]
                if running:
                    raise UserError(f"{len(running)} of the jobs are RUNNING (e.g. {running[0]}); kill them first, "
                                    "or narrow the filters (e.g. --state FAILED)")
                values: dict[str, Any] = {}
                for job in self.jobs(ids=_one_per_app(conn, ids)):  # the values checked against each app
                    app_row = self._apps_by_name([job.app])
                    merged = {**{k: getattr(job, k) for k in specs.MODIFIABLE if k != "state"}, **changes,
                              "app": job.app}
                    row, _ = specs.job_row(merged, app_row, now)
                    values = {k: row[k] for k in changes}
                for i in range(0, len(ids), CHUNK):
                    conn.execute(update(jobs).where(jobs.c.id.in_(ids[i : i + CHUNK])).values(**values, updated_at=now))
            if state is not None:
                target = parse_state(str(state))
                check_user_state(target, ids[0] if ids else 0)
                apply(conn, [Change(j, st[j], target, f"set to {target} by user") for j in ids], self.actor)
        return len(ids)

    @retry_conflicts
    def retry_jobs(self, ids: Sequence[int]) -> list[int]:
        """FAILED or killed jobs back to runnable with a fresh retry budget (through stage-in and preprocess
        again, or waiting for parents that are not finished), and the descendants that failed because of them
        waiting again. Other jobs are refused by name."""
        ids = sorted(set(ids))
        with self.write() as conn:
            st = states_of(conn, ids, lock=True)
            wrong = [j for j in ids if st.get(j) not in RETRYABLE]
            if wrong:
                raise UserError(f"job {wrong[0]} is {st.get(wrong[0], 'gone')}: only FAILED and USER_KILLED jobs "
                                "are retried (narrow the filters, e.g. --state FAILED)")
            kin = _failed_by_parent(conn, ids)
            every = sorted(set(ids) | set(kin))
            info = _ready_info(conn, every)
            changes = []
            for j in every:
                frm, unfinished, stage_in, preprocess = info[j]
                if unfinished or j in kin:
                    changes.append(Change(j, frm, S.AWAITING_PARENTS, "retried by user", fields={"retry_count": 0}))
                else:
                    path = ready_path(stage_in, preprocess)
                    changes.append(Change(j, frm, path[-1], "retried by user", via=path[:-1],
                                          fields={"retry_count": 0}))
            apply(conn, changes, self.actor)
        return every


def _one_per_app(conn: Any, ids: Sequence[int]) -> list[int]:
    found: dict[int, int] = {}
    for i in range(0, len(ids), CHUNK):
        q = select(jobs.c.app_id, func.min(jobs.c.id)).where(jobs.c.id.in_(list(ids[i : i + CHUNK])))
        for app_id, jid in conn.execute(q.group_by(jobs.c.app_id)):
            found.setdefault(app_id, jid)
    return sorted(found.values())


def _failed_by_parent(conn: Any, roots: Sequence[int]) -> list[int]:
    """Descendants that failed because an ancestor ended badly (their message says "parent ...")."""
    out: list[int] = []
    frontier = list(roots)
    seen = set(roots)
    while frontier:
        kids = [k for k in children_of(conn, frontier) if k not in seen]
        seen.update(kids)
        if not kids:
            break
        rows = conn.execute(select(jobs.c.id, jobs.c.state, jobs.c.state_message).where(jobs.c.id.in_(kids))).all()
        frontier = [r.id for r in rows if r.state == S.FAILED and (r.state_message or "").startswith("parent ")]
        out += frontier
    return out


def _ready_info(conn: Any, ids: Sequence[int]) -> dict[int, tuple[str, bool, bool, bool]]:
    """(state, has an unfinished parent, has stage-in, app has preprocess) per job."""
    out: dict[int, tuple[str, bool, bool, bool]] = {}
    p = jobs.alias("p")
    for i in range(0, len(ids), CHUNK):
        part = list(ids[i : i + CHUNK])
        waiting = set(conn.execute(select(job_parents.c.child_id).join(p, p.c.id == job_parents.c.parent_id)
                                   .where(job_parents.c.child_id.in_(part), p.c.state != S.JOB_FINISHED)).scalars())
        q = select(jobs.c.id, jobs.c.state, jobs.c.stage_in, apps.c.preprocess).join(apps).where(jobs.c.id.in_(part))
        for r in conn.execute(q):
            out[r.id] = (r.state, r.id in waiting, bool(r.stage_in), bool(r.preprocess))
    return out
