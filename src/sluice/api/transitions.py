"""Writing state changes: `apply()` is the only code that sets `jobs.state`.

Each change is checked against the transition table (sluice.states) and written as the new state plus one
event per step, in the caller's transaction; follow-ups (children released or failed) come in the same one.
The launcher's writer calls this with thousands of changes a second, so the SQL goes to the driver directly.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, and_, exists, select

from sluice.api.claims import hot_write, room, rows_in
from sluice.errors import IllegalTransition, UserError
from sluice.states import WAITING, Change, S, check_path, default_actor, ready_path, spends_retry
from sluice.store import db
from sluice.store.models import apps, job_parents, jobs

if TYPE_CHECKING:
    from sluice.api.base import WorkspaceBase


_PATHS: set[tuple[str | None, tuple[str, ...], str]] = set()
"""(from, via, to) paths already checked: the launcher writes the same few thousands of times a second."""


def _check(c: Change) -> None:
    key = (c.from_state, c.via, c.to_state)
    if key not in _PATHS:
        check_path(c.from_state, c.path())
        _PATHS.add(key)


def apply(conn: Connection, changes: Sequence[Change], actor: str | None = None, *,
          strict: bool = True, lock: bool = True) -> list[Change]:
    """Validate and write changes in the caller's transaction; return the changes that took effect.

    Each job's current state is read (FOR UPDATE on servers) and must equal `from_state`: with strict, a
    mismatch is an IllegalTransition; otherwise that change is skipped (someone else moved the job first, which
    is normal for recovery races). Then follow-ups: children whose parents all finished become READY (and
    fast-forward), children of FAILED or USER_KILLED parents fail with the reason.
    """
    if not changes:
        return []
    actor = actor or default_actor()
    now = time.time()
    for c in changes:
        _check(c)
    current = states_of(conn, sorted({c.job_id for c in changes}), lock=lock)
    done: list[Change] = []
    for c in changes:
        cur = current.get(c.job_id)
        if cur == c.from_state:
            done.append(c)
            current[c.job_id] = c.to_state  # a second change of the same job in one batch chains
        elif strict:
            if cur is None:
                raise UserError(f"job {c.job_id} does not exist")
            raise IllegalTransition(f"job {c.job_id} is {cur}, not {c.from_state}; nothing was changed")
    _write(conn, done, actor, now)
    _follow_ups(conn, done, actor)
    return done


Step = tuple[int, str, tuple[str, ...], str, Any, Any, tuple[float, ...], float, dict[str, Any]]
"""A change as written: (job, from, via, to, message, data, the via steps' times, the last step's time, fields).
Plain tuples: the launcher's writer handles tens of thousands of changes a second, and merging Change
objects was a sixth of its time."""
_SPENDS: dict[tuple[str, tuple[str, ...], str], bool] = {}


def _write(conn: Connection, done: Sequence[Change], actor: str, now: float) -> None:
    """One UPDATE per kind of change. A job changed twice in one batch (started, then finished) is merged
    into one change through the intermediate states (one row write, every step still an event); changes that
    cannot merge go in successive waves, so the later one is written last."""
    merged = _merge(done, now)
    waves: list[dict[tuple[Any, ...], list[int]]] = []
    nth: dict[int, int] = {}
    keys: dict[tuple[Any, ...], tuple[Any, ...]] = {}  # the group key of each shape of change, computed once
    for m in merged:
        jid, frm, via, to, msg, _d, _t, _e, f = m
        k = nth.get(jid, 0)
        nth[jid] = k + 1
        if k == len(waves):
            waves.append(defaultdict(list))
        shape = (frm, via, to, msg, *f.items()) if len(f) < 2 else None
        key = keys.get(shape) if shape is not None else None
        if key is None:
            path = (frm, via, to)
            spends = _SPENDS.get(path)
            if spends is None:
                spends = _SPENDS[path] = spends_retry(Change(jid, frm, to, via=via))
            key = (to, msg, spends, tuple(sorted(f.items())))
            if shape is not None:
                keys[shape] = key
        waves[k][key].append(jid)
    for groups in waves:
        _update(conn, groups, now)
    insert_events(conn, _event_tuples(merged), actor)


def _event_tuples(merged: Sequence[Step]) -> list[tuple[Any, ...]]:
    """(job_id, from, to, timestamp, message, data) per step of each change, in order: what event_rows()
    says, without a dict per row (four rows a job, tens of thousands a second)."""
    rows: list[tuple[Any, ...]] = []
    add = rows.append
    for jid, prev, via, to, msg, data, times, t_end, _f in merged:
        for st, t in zip(via, times, strict=True):
            add((jid, prev, st, t, None, None))
            prev = st
        add((jid, prev, to, t_end, msg, data))
    return rows


def insert_events(conn: Connection, rows: Sequence[tuple[Any, ...]], actor: str) -> None:
    """Event rows (job_id, from, to, timestamp, message, data), in order, all by `actor`.

    On SQLite, runs of rows without message and data go as one INSERT ... SELECT FROM (VALUES ...) of up to
    8,000 rows (240 before SQLite 3.32) binding four values each (the actor once): 3-4x faster than executemany,
    which steps the statement once a row with seven values bound. Rows keep their order, so each job's events
    keep increasing ids."""
    if not rows:
        return
    if conn.dialect.name != "sqlite":
        db.bulk_insert(conn, "events", EVENT_COLUMNS, [
            (j, f, t, ts, actor, m, None if d is None else json.dumps(d)) for j, f, t, ts, m, d in rows])
        return
    plain: list[Any] = []
    n_plain = 0
    most = max(1, (room(conn) - 1) // 4)
    for r in rows:
        if r[4] is None and r[5] is None:
            plain += r[:4]
            n_plain += 1
            if n_plain == most:
                _insert_plain(conn, plain, n_plain, actor)
                plain, n_plain = [], 0
            continue
        if n_plain:
            _insert_plain(conn, plain, n_plain, actor)
            plain, n_plain = [], 0
        db.raw(conn, _RICH_SQL, (r[0], r[1], r[2], r[3], actor, r[4], None if r[5] is None else json.dumps(r[5])),
               fetch=False)
    if n_plain:
        _insert_plain(conn, plain, n_plain, actor)


_RICH_SQL = ("INSERT INTO events (job_id, from_state, to_state, timestamp, actor, message, data) "
             "VALUES (?, ?, ?, ?, ?, ?, ?)")
_PLAIN_SQL: dict[int, str] = {}


def _insert_plain(conn: Connection, values: list[Any], n: int, actor: str) -> None:
    sql = _PLAIN_SQL.get(n)
    if sql is None:
        sql = _PLAIN_SQL[n] = ("INSERT INTO events (job_id, from_state, to_state, timestamp, actor) "
                               "SELECT column1, column2, column3, column4, ? FROM (VALUES "
                               + ", ".join(["(?, ?, ?, ?)"] * n) + ")")
    db.raw(conn, sql, [actor, *values], fetch=False)


def _merge(done: Sequence[Change], now: float) -> list[Step]:
    """Fold a job's change that carries no message or data into the job's next change in the same batch.

    A step without its own time is stamped `now`, the time the whole batch is written with, so a job's events
    never go back in time (a fresh clock read here once put READY -> STAGED_IN after the step that follows it).
    """
    fold = len({c.job_id for c in done}) != len(done)  # one change per job (big user batches): nothing to fold
    last: dict[int, int] = {}
    out: list[Step | None] = []
    for c in done:
        t_end = c.at if c.at is not None else now
        times = c.via_at or (t_end,) * len(c.via)
        jid = c.job_id
        if fold:
            i = last.get(jid)
            p = out[i] if i is not None else None
            last[jid] = len(out)
            if p is not None and p[4] is None and p[5] is None and p[3] == c.from_state:
                out[i] = None  # type: ignore[index]
                out.append((jid, p[1], (*p[2], p[3], *c.via), c.to_state, c.message, c.data, (*p[6], p[7], *times),
                            t_end, {**p[8], **c.fields}))
                continue
        out.append((jid, c.from_state, c.via, c.to_state, c.message, c.data, times, t_end, c.fields))
    return [m for m in out if m is not None] if fold else out  # type: ignore[return-value]


EVENT_COLUMNS = ["job_id", "from_state", "to_state", "timestamp", "actor", "message", "data"]


def _update(conn: Connection, groups: dict[tuple[Any, ...], list[int]], now: float) -> None:
    """Plain SQL through the driver: SQLAlchemy's per-statement compile of IN lists cost more than the write."""
    m = db.marks(conn, 1)
    for (to, msg, retry, fields), gids in groups.items():
        sets = [f"state = {m}", f"state_message = {m}", f"updated_at = {m}"] + [f"{k} = {m}" for k, _ in fields]
        if retry:
            sets.append("retry_count = retry_count + 1")
        args = [to, msg, now, *(v for _, v in fields)]
        db.raw_in(conn, f"UPDATE jobs SET {', '.join(sets)} WHERE id IN", gids, args=args, fetch=False,
                  chunk=room(conn) - len(args))


def _follow_ups(conn: Connection, done: Sequence[Change], actor: str) -> None:
    finished = [c.job_id for c in done if c.to_state == S.JOB_FINISHED]
    dead = [c.job_id for c in done if c.to_state in (S.FAILED, S.USER_KILLED)]
    if finished:
        release_children(conn, finished, actor)
    if dead:
        fail_children(conn, dead, actor)


def states_of(conn: Connection, ids: Sequence[int], *, lock: bool = False) -> dict[int, str]:
    """Current states of these jobs (locked FOR UPDATE on the servers when asked)."""
    if conn.dialect.name == "sqlite":  # in one JSON array a statement (claims.rows_in says why)
        return {int(i): st for i, st in rows_in(conn, "id, state", "jobs", list(ids))}
    tail = " FOR UPDATE" if lock else ""
    return {int(i): st for i, st in db.raw_in(conn, "SELECT id, state FROM jobs WHERE id IN", ids, tail,
                                              chunk=room(conn))}


def children_of(conn: Connection, parent_ids: Sequence[int]) -> list[int]:
    rows = db.raw_in(conn, "SELECT child_id FROM job_parents WHERE parent_id IN", parent_ids, chunk=room(conn))
    return sorted({int(r[0]) for r in rows})


def release_children(conn: Connection, parent_ids: Sequence[int], actor: str) -> list[int]:
    """Children in AWAITING_PARENTS whose parents have all finished move on: READY, and further if they can."""
    kids = children_of(conn, parent_ids)
    if not kids:
        return []
    p = jobs.alias("p")
    unfinished = exists().where(and_(job_parents.c.child_id == jobs.c.id, p.c.id == job_parents.c.parent_id,
                                     p.c.state != S.JOB_FINISHED))
    changes = []
    for i in range(0, len(kids), 900):
        q = (select(jobs.c.id, jobs.c.stage_in, apps.c.preprocess)
             .join(apps, apps.c.id == jobs.c.app_id)
             .where(jobs.c.id.in_(kids[i : i + 900]), jobs.c.state == S.AWAITING_PARENTS, ~unfinished))
        for r in conn.execute(q):
            path = ready_path(bool(r.stage_in), bool(r.preprocess))
            changes.append(Change(r.id, S.AWAITING_PARENTS, path[-1], via=path[:-1]))
    return [c.job_id for c in apply(conn, changes, actor, strict=False)]


def fail_children(conn: Connection, parent_ids: Sequence[int], actor: str) -> None:
    """Children still waiting on a FAILED or USER_KILLED parent will never run: they fail, saying why."""
    kids = children_of(conn, parent_ids)
    if not kids:
        return
    pj = jobs.alias("pj")
    changes = []
    for i in range(0, len(kids), 900):
        q = (select(jobs.c.id, jobs.c.state, pj.c.id.label("pid"), pj.c.state.label("pstate"))
             .join(job_parents, job_parents.c.child_id == jobs.c.id)
             .join(pj, pj.c.id == job_parents.c.parent_id)
             .where(jobs.c.id.in_(kids[i : i + 900]), jobs.c.state.in_(list(WAITING)),
                    pj.c.state.in_([S.FAILED, S.USER_KILLED])))
        seen: set[int] = set()
        for r in conn.execute(q):
            if r.id in seen:
                continue
            seen.add(r.id)
            msg = f"parent {r.pid} ended {r.pstate}"
            if r.state == S.CREATED:
                changes.append(Change(r.id, S.CREATED, S.FAILED, msg, via=(S.AWAITING_PARENTS,)))
            else:
                changes.append(Change(r.id, r.state, S.FAILED, msg))
    apply(conn, changes, actor, strict=False)


def write_changes(ws: WorkspaceBase, changes: Sequence[Change], actor: str) -> list[Change]:
    """The launcher's batched write: apply (non-strict, no row locks: the launcher holds its jobs) in one
    transaction; returns the changes that took effect."""
    with hot_write(ws) as conn:
        return apply(conn, changes, actor, strict=False, lock=False)
