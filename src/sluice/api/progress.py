"""Waiting for jobs: `Workspace.wait`, `Workspace.as_completed`, and the snapshots `sluice wait` draws.

Waiting is polling (the database is the only thing every launcher, service and user shares), so each poll is
one cheap query: jobs per state for the filter (one GROUP BY on indexed columns), or the states of the ids still
waited for, 900 at a time. The pause between polls grows with what a poll costs (at least ten times its own
duration), so a wait on a million jobs never keeps the database busy.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from sluice.api.queries import Queries
from sluice.api.records import Job
from sluice.errors import UserError
from sluice.states import END, S, State
from sluice.store import db
from sluice.store.db import CHUNK
from sluice.store.models import jobs as jobs_t

if TYPE_CHECKING:
    from sluice.api.base import WorkspaceBase

BAD_ENDS = frozenset({S.FAILED, S.USER_KILLED})
POLL_SHARE = 0.1
"""A poll may keep the database busy at most this share of the time."""


class WaitTimeout(TimeoutError):
    """The wait ran out of time before every selected job ended; `counts` are the last jobs per state."""

    def __init__(self, counts: dict[str, int], timeout: float) -> None:
        self.counts = counts
        done = sum(n for s, n in counts.items() if s in END)
        super().__init__(f"{sum(counts.values()) - done} of {sum(counts.values())} job(s) not done after {timeout:g} s")


@dataclass(frozen=True)
class Snapshot:
    """Jobs per state at one poll, and the seconds since the wait began."""

    counts: dict[str, int]
    elapsed: float

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def done(self) -> int:
        """Jobs in an end state: JOB_FINISHED, FAILED or USER_KILLED."""
        return sum(n for s, n in self.counts.items() if s in END)

    @property
    def bad(self) -> int:
        """Jobs that FAILED or were USER_KILLED."""
        return sum(n for s, n in self.counts.items() if s in BAD_ENDS)

    @property
    def all_done(self) -> bool:
        return self.done == self.total


def ordered(counts: dict[str, int]) -> dict[str, int]:
    """Counts in the order of the state machine, empty states left out (as Workspace.summary gives them)."""
    return {s.value: counts[s.value] for s in State if counts.get(s.value)}


class Progress(Queries):
    """Waiting for the Workspace's jobs to end."""

    def snapshots(self, *, poll: float = 1.0, timeout: float | None = None, until_done: bool = True,
                  **filters: Any) -> Iterator[Snapshot]:
        """Jobs per state for the filters of `jobs()`, once per poll; stops after the first snapshot in which
        every job ended (unless `until_done` is False); raises WaitTimeout after `timeout` seconds.

        A `state` filter is applied once, at the start: the jobs in those states then are the ones watched
        (they leave those states as they progress), and so is an `ids` filter. Otherwise the filters are
        applied at every poll, so jobs added to a watched workflow meanwhile (spawn_child) are waited for too.
        """
        ids: list[int] | None = None
        if filters.get("ids") is not None:
            given = sorted(set(filters.pop("ids")))
            ids = [j for i in range(0, len(given), CHUNK) for j in self.ids(**filters, ids=given[i : i + CHUNK])]
            filters = {}
        elif filters.get("state") is not None:
            ids, filters = self.ids(**filters), {}
        t0 = time.monotonic()
        deadline = None if timeout is None else t0 + timeout
        while True:
            began = time.monotonic()
            counts = ordered(self.state_counts(ids)) if ids is not None else self.summary(**filters)
            now = time.monotonic()
            snap = Snapshot(counts, now - t0)
            yield snap
            if until_done and snap.all_done:
                return
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise WaitTimeout(counts, float(timeout or 0))
            pause = max(poll, (now - began) / POLL_SHARE)
            time.sleep(min(pause, deadline - now) if deadline is not None else pause)

    def wait(self, *, timeout: float | None = None, poll: float = 1.0, **filters: Any) -> dict[str, int]:
        """Block until every job the filters select has ended (JOB_FINISHED, FAILED, USER_KILLED); return
        the final jobs per state. Raises WaitTimeout (a TimeoutError carrying the counts) after `timeout` s.

            counts = ws.wait(workflow="scan", timeout=3600)
            ok = counts.get("JOB_FINISHED", 0) == sum(counts.values())
        """
        counts: dict[str, int] = {}
        for snap in self.snapshots(poll=poll, timeout=timeout, **filters):
            counts = snap.counts
        return counts

    def as_completed(self, jobs: Iterable[int | str | Job], timeout: float | None = None, *,
                     poll: float = 1.0) -> Iterator[Job]:
        """Yield a snapshot of each job as it reaches an end state (JOB_FINISHED, FAILED, USER_KILLED), in the
        order they ended (those ended already first; ends seen by one poll by their time, then id). Like
        concurrent.futures.as_completed: raises TimeoutError when `timeout` seconds pass with jobs left, and
        UserError if a job is removed while waited for."""
        want = list(dict.fromkeys(self.resolve(j) for j in jobs))
        left = set(want)
        deadline = None if timeout is None else time.monotonic() + timeout
        while left:
            began = time.monotonic()
            states = self._states_since(sorted(left))
            gone = sorted(left - states.keys())
            if gone:
                raise UserError(f"job {gone[0]} was removed while waited for; {len(left) - 1} other(s) left")
            # jobs that ended between two polls come in the order they ended, not in id order
            ended = sorted((j for j, (s, _) in states.items() if s in END), key=lambda j: (states[j][1], j))
            for i in range(0, len(ended), CHUNK):
                part = ended[i : i + CHUNK]
                got = {job.id: job for job in self._jobs_where(jobs_t.c.id.in_(part))}
                for jid in part:
                    job = got.get(jid)
                    if job is not None and job.state in END:  # not re-run since its state was read
                        left.discard(job.id)
                        yield job
            if not left:
                return
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise TimeoutError(f"{len(left)} of {len(want)} job(s) not done after {timeout:g} s")
            pause = max(poll, (now - began) / POLL_SHARE)
            time.sleep(min(pause, deadline - now) if deadline is not None else pause)

    def states_of(self, ids: Sequence[int]) -> dict[int, str]:
        """The state of each of these jobs that exists, read 900 ids a statement."""
        return {j: st for j, (st, _) in self._states_since(ids).items()}

    def _states_since(self, ids: Sequence[int]) -> dict[int, tuple[str, float]]:
        """The state of each of these jobs that exists and when it was entered, read 900 ids a statement."""
        out: dict[int, tuple[str, float]] = {}
        with self.read() as conn:
            for i in range(0, len(ids), CHUNK):
                q = (select(jobs_t.c.id, jobs_t.c.state, jobs_t.c.updated_at)
                     .where(jobs_t.c.id.in_(list(ids[i : i + CHUNK]))))
                out.update((int(r[0]), (str(r[1]), float(r[2]))) for r in conn.execute(q))
        return out

    def state_counts(self, ids: Sequence[int]) -> dict[str, int]:
        """Jobs per state among these ids, counted 900 ids a statement."""
        out: dict[str, int] = {}
        with self.read() as conn:
            for i in range(0, len(ids), CHUNK):
                q = (select(jobs_t.c.state, func.count()).where(jobs_t.c.id.in_(list(ids[i : i + CHUNK])))
                     .group_by(jobs_t.c.state))
                for st, n in conn.execute(q):
                    out[st] = out.get(st, 0) + int(n)
        return out


# ------------------------------------------------------------------------------ what `sluice report` reads
# Raw driver statements: a report reads millions of event rows, and SQLAlchemy's Row objects would cost more
# than the database does. Every function takes the same selection: `workflows` (None: all) and `since` (epoch
# seconds; None: all time). Events of removed jobs are left out (their sizes and workflows are gone with them).
ERRORS = (S.RUN_ERROR.value, S.RUN_TIMEOUT.value)


def _sel(conn: Any, workflows: Sequence[str] | None, since: float | None, ts: str = "e.timestamp",
         since_col: str | None = None) -> tuple[str, list[Any]]:
    """` AND ...` conditions (and their arguments) for the selection, on jobs `j` and the time column `ts`."""
    sql, args = "", list[Any]()
    if workflows:
        sql += f" AND j.workflow IN ({db.marks(conn, len(workflows))})"
        args += list(workflows)
    if since is not None:
        sql += f" AND {since_col or ts} >= {db.marks(conn, 1)}"
        args.append(since)
    return sql, args


KINDS = {S.RUNNING.value: 1, S.JOB_FINISHED.value: 2, S.FAILED.value: 3, S.RUN_ERROR.value: 4, S.RUN_TIMEOUT.value: 5}
"""The event codes of report_rows: the state entered, plus LEFT_RUNNING for an event out of RUNNING."""
LEFT_RUNNING = 8


def report_rows(ws: WorkspaceBase, *, workflows: Sequence[str] | None = None, since: float | None = None
                ) -> list[tuple[Any, ...]]:
    """(job_id, code, timestamp, message) of every event of the selection that starts or ends a run, finishes,
    fails or records an error, in the order they were written; `code` is KINDS[to_state] (0 for other states)
    plus LEFT_RUNNING when it leaves RUNNING, and the message is kept for FAILED and the errors only.

    One scan of the events, and small integers instead of state names: a million jobs' runs are millions of
    rows, and each Python string or join would cost as much as the scan. Without a workflow the events of
    removed jobs count too (their work was done)."""
    with ws.read() as conn:
        m = db.marks(conn, 1)
        code = " ".join(f"WHEN {m} THEN {v}" for v in KINDS.values())
        sql = (f"SELECT e.job_id, CASE e.to_state {code} ELSE 0 END + CASE WHEN e.from_state = {m} THEN "
               f"{LEFT_RUNNING} ELSE 0 END, e.timestamp, CASE WHEN e.to_state IN ({db.marks(conn, 3)}) "
               f"THEN e.message END FROM events e WHERE (e.to_state IN ({db.marks(conn, len(KINDS))}) OR "
               f"e.from_state = {m})")
        args: list[Any] = [*KINDS, S.RUNNING.value, S.FAILED.value, *ERRORS, *KINDS, S.RUNNING.value]
        if workflows:
            sql += f" AND e.job_id IN (SELECT id FROM jobs WHERE workflow IN ({db.marks(conn, len(workflows))}))"
            args += list(workflows)
        if since is not None:
            sql += f" AND e.timestamp >= {m}"
            args.append(since)
        return db.raw(conn, sql + " ORDER BY e.id", args)


def job_sizes(ws: WorkspaceBase, *, workflows: Sequence[str] | None = None) -> list[tuple[int, int, int]]:
    """(id, nodes, cores) of the jobs bigger than one core on one node (the rest: 1 and 1)."""
    with ws.read() as conn:
        where, args = _sel(conn, workflows, None)
        rows = db.raw(conn, "SELECT j.id, j.num_nodes, j.num_nodes * j.ranks_per_node * j.threads_per_rank FROM "
                      "jobs j WHERE (j.num_nodes <> 1 OR j.ranks_per_node <> 1 OR j.threads_per_rank <> 1)"
                      f"{where}", args)
    return [(int(a), int(b), int(c)) for a, b, c in rows]


def sample_ids(ws: WorkspaceBase, every: int, *, workflows: Sequence[str] | None = None,
               since: float | None = None, state: str | None = None) -> list[int]:
    """About one in `every` job ids of the selection (by a hash of the id, so a campaign whose failures follow
    its ids, every tenth job say, is sampled fairly), in a state if given; `since`: updated since then."""
    with ws.read() as conn:
        where, args = _sel(conn, workflows, since, since_col="j.updated_at")
        if state is not None:
            where += f" AND j.state = {db.marks(conn, 1)}"
            args.append(state)
        mod = "%" if conn.dialect.paramstyle == "qmark" else "%%"  # the drivers' own placeholders use %
        rows = db.raw(conn, f"SELECT j.id FROM jobs j WHERE (j.id * 48271) {mod} 2147483647 {mod} {int(every)} = 0"
                      f"{where} ORDER BY j.id", args)
    return [int(r[0]) for r in rows]


def histories(ws: WorkspaceBase, ids: Sequence[int]) -> list[tuple[Any, ...]]:
    """(job_id, from_state, to_state, timestamp) of these jobs' events, each job's in order (900 ids a query,
    through the (job_id, id) index)."""
    with ws.read() as conn:
        return db.raw_in(conn, "SELECT job_id, from_state, to_state, timestamp FROM events WHERE job_id IN", ids,
                         " ORDER BY job_id, id")


def job_rows(ws: WorkspaceBase, ids: Sequence[int]) -> list[tuple[Any, ...]]:
    """(id, name, workflow, state, workdir, params as stored) of these jobs; params JSON is the caller's to read."""
    with ws.read() as conn:
        rows = db.raw_in(conn, "SELECT id, name, workflow, state, workdir, params FROM jobs WHERE id IN", ids)
    return [(int(r[0]), r[1], r[2], r[3], r[4], r[5]) for r in rows]


def allocations(ws: WorkspaceBase) -> list[tuple[float, float | None, int]]:
    """(start, end or None while it lasts, nodes) of every allocation launchers had: each batch job that
    started, and each launcher session outside a batch job (its nodes from the session's info)."""
    with ws.read() as conn:
        out = [(float(s), None if e is None else float(e), int(n)) for s, e, n in db.raw(
            conn, "SELECT started_at, ended_at, num_nodes FROM batch_jobs WHERE started_at IS NOT NULL")]
        for s, e, hb, info in db.raw(conn, "SELECT started_at, ended_at, heartbeat_at, info FROM "
                                     "launcher_sessions WHERE batch_job_id IS NULL"):
            nodes = (json.loads(info) if isinstance(info, str) else info or {}).get("nodes") or [None]
            out.append((float(s), float(e if e is not None else hb), len(nodes) if isinstance(nodes, list)
                        else int(nodes)))
    return out
